"""``nova-shared-cache``: the operator's view of shared disks.

Reads nova.conf like nova-manage (``--config-file``, ``--config-dir``,
default ``/etc/nova/nova.conf``): ``[shared_cache] ceph_conf``,
``ceph_user`` and ``ceph_timeout`` say how to reach Ceph, ``[libvirt]
connection_uri`` where the local domains are.

Exit status: 0 done (audit: nothing found), 1 audit findings, 2 error.
"""

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys

from lxml import etree
from oslo_config import cfg

from nova_shared_cache import audit
from nova_shared_cache import cephauth
from nova_shared_cache import cephclient
from nova_shared_cache import cephops
from nova_shared_cache import cmd
from nova_shared_cache.cmd import verify as verify_cmd
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache import hookinstall
from nova_shared_cache import hostnet
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import livefix
from nova_shared_cache.libvirt import qmp
from nova_shared_cache import metrics

DEFAULT_CONFIG = '/etc/nova/nova.conf'
OK, FINDINGS, ERROR = 0, 1, 2
MEANINGS = {OK: 'ok', FINDINGS: 'findings', ERROR: 'error'}
HOOKS_DIR = '/etc/libvirt/hooks'
HOOK_NAME = '50-nova-shared-cache'
#: How long opening the libvirt connection may take.
LIBVIRT_TIMEOUT = 30
#: How long a fence lasts unless --expire says otherwise (Ceph's default).
DEFAULT_EXPIRE = 3600
#: audit --format
FORMATS = ('table', 'json', 'prometheus')

# The two [libvirt] options read here, declared under Nova's names so the
# same nova.conf works without importing Nova.
_libvirt_opts = [
    cfg.StrOpt('connection_uri', default=''),
    cfg.StrOpt('rbd_user'),
    cfg.StrOpt('rbd_secret_uuid'),
]


def _add_workers(parser):
    parser.add_argument(
        '--workers', metavar='N', default=audit.WORKERS,
        type=cmd.whole_number('--workers', 1, audit.MAX_WORKERS),
        help="QEMU monitors and Ceph images asked at a time while "
             "scanning (default %(default)s; 1: one after the other). "
             "Each question keeps its own time limit, and the report is "
             "the same whatever N")


def _add_parsers(subparsers):
    status = subparsers.add_parser(
        'status', help='features, size and clients of an RBD image')
    status.add_argument('image', metavar='POOL/IMAGE',
                        help='the image, as POOL/IMAGE or '
                             'POOL/NAMESPACE/IMAGE')
    status.add_argument('--json', action='store_true', help=cmd.JSON_HELP)
    status.add_argument('--ceph-user', metavar='USER',
                        help='instead of [shared_cache] ceph_user')

    fence = subparsers.add_parser(
        'fence', help='blocklist a client of an RBD image in Ceph')
    fence.add_argument('image', metavar='POOL/IMAGE',
                       help='the image whose client to fence')
    fence.add_argument('--client', required=True, metavar='ADDR',
                       help='the client address as status shows it')
    fence.add_argument('--expire', default=DEFAULT_EXPIRE,
                       type=cmd.whole_number('--expire', 1,
                                             unit=' of seconds'),
                       metavar='SECONDS',
                       help='how long the blocklist entry lasts (default '
                            '%(default)s)')
    fence.add_argument('--undo', action='store_true',
                       help='remove the client from the blocklist')
    fence.add_argument('--force', action='store_true',
                       help="fence a client of this host's own domains")
    fence.add_argument('--json', action='store_true', help=cmd.JSON_HELP)
    fence.add_argument('--ceph-user', metavar='USER',
                       help="instead of [shared_cache] ceph_user (Ceph's "
                            "'profile rbd' may add blocklist entries but "
                            "not remove them: --undo needs more)")

    audit = subparsers.add_parser(
        'audit', help="every RBD disk of this host's libvirt domains: "
                      "cache mode, QEMU's cache state, sharing, features")
    audit.add_argument('--json', action='store_true',
                       help='the same as --format json')
    audit.add_argument('--format', choices=FORMATS, default=None,
                       help='table (default), json, or prometheus: the '
                            "findings as metrics for node_exporter's "
                            'textfile collector')
    audit.add_argument('--output', metavar='FILE',
                       help='with --format prometheus: replace FILE '
                            'atomically (a .prom file in the textfile '
                            "collector's directory) instead of writing "
                            'to standard output; written also when the '
                            'audit cannot run')
    audit.add_argument('--domain', action='append', metavar='NAME',
                       help='only this domain (repeatable)')
    audit.add_argument('--no-ceph', action='store_true',
                       help='do not ask Ceph (no features, no clients on '
                            'other hosts)')
    audit.add_argument('--ceph-user', metavar='USER',
                       help='instead of [shared_cache] ceph_user')
    _add_workers(audit)

    fix = subparsers.add_parser(
        'fix', help='repair the shared RBD disks audit reports')
    fix.add_argument('--config', action='store_true',
                     help="rewrite the persistent definitions (cache and "
                          "<shareable/>; effective at the next cold start)")
    fix.add_argument('--live', action='store_true',
                     help='switch running disks to direct I/O without '
                          'restarting the VMs (also fixes the definitions)')
    fix.add_argument('--domain', action='append', metavar='NAME',
                     help='only this domain (repeatable)')
    fix.add_argument('--dry-run', action='store_true',
                     help='say what would be done, change nothing')
    fix.add_argument('--json', action='store_true', help=cmd.JSON_HELP)
    fix.add_argument('--no-ceph', action='store_true',
                     help='do not ask Ceph which images are shared')
    fix.add_argument('--ceph-user', metavar='USER',
                     help='instead of [shared_cache] ceph_user')
    _add_workers(fix)

    install = subparsers.add_parser(
        'install-hook', help="install libvirt's qemu hook "
                             "(nova-shared-cache-libvirt-hook)")
    install.add_argument('--hooks-dir', default=HOOKS_DIR,
                         help='default: %(default)s')
    install.add_argument('--uninstall', action='store_true',
                         help='remove the hook instead')
    install.add_argument('--reload', action='store_true',
                         help='make libvirtd (or virtqemud) read its hooks '
                              'again (SIGHUP); else they are read at its '
                              'next start')
    verify_cmd.add_parsers(subparsers)


class _ConfigOpts(cfg.ConfigOpts):
    """oslo.config's ConfigOpts without argparse's prefix matching.

    argparse looks at every argument with the top-level parser first, and
    with prefix matching ``fix --config`` would be an ambiguous abbreviation
    of ``--config-file``/``--config-dir``.
    """

    def _pre_setup(self, *args, **kwargs):
        result = super()._pre_setup(*args, **kwargs)
        self._oparser.allow_abbrev = False
        return result


def make_conf(argv):
    conf = _ConfigOpts()
    sc_conf.register_opts(conf)
    conf.register_opts(_libvirt_opts, group='libvirt')
    conf.register_cli_opt(cfg.SubCommandOpt(
        'command', title='commands', handler=_add_parsers))
    default_files = ([DEFAULT_CONFIG] if os.path.exists(DEFAULT_CONFIG)
                     else [])
    conf(argv, project='nova', prog='nova-shared-cache',
         default_config_files=default_files)
    return conf


def ceph_user(conf):
    """(user, where it was named) for status and fence.

    Never a silent ``client.admin``: with no user named anywhere the
    command stops and says where to name one.
    """
    settings = sc_conf.load(conf)
    for user, where in ((conf.command.ceph_user, '--ceph-user'),
                        (settings.ceph_user, '[shared_cache] ceph_user'),
                        (conf.libvirt.rbd_user, '[libvirt] rbd_user')):
        if user:
            return user, where
    raise exception.UsageError(
        reason='no Ceph user is named: pass --ceph-user (for example '
               '--ceph-user admin), or set [shared_cache] ceph_user or '
               '[libvirt] rbd_user in nova.conf; client.admin is never '
               'assumed')


def ceph_client(conf):
    settings = sc_conf.load(conf)
    user, _ = ceph_user(conf)
    return cephclient.REGISTRY.get(settings.ceph_conf, user,
                                   settings.ceph_timeout)


def guard_credentials(conf, connection=None):
    """What nova-compute's guard can use on this host (cephauth), no key.

    ``connection``: an open libvirt connection to read a non-private
    secret with; without one, a libvirt connection is opened only when no
    keyring is found.
    """
    settings = sc_conf.load(conf)
    user = settings.ceph_user or conf.libvirt.rbd_user

    def libvirt_connection():
        return connection if connection is not None else open_libvirt(conf)
    try:
        credentials = cephauth.resolve(
            settings.ceph_conf, user,
            secret_uuid=conf.libvirt.rbd_secret_uuid,
            libvirt_connection=libvirt_connection, volume_monitors=True)
    except Exception as err:        # a report, never a reason to fail
        return {'source': cephauth.NONE, 'user': user,
                'ceph_conf': settings.ceph_conf, 'usable': False,
                'detail': 'cannot tell: %s' % err}
    report = credentials.report()
    report['usable'] = bool(credentials.usable)
    if not credentials.usable:
        report['remedy'] = cephauth.remedy(user, settings.ceph_conf,
                                           conf.libvirt.rbd_secret_uuid)
    return report


def _guard_text(guard):
    if guard['source'] == cephauth.NONE:
        return ('the checks cannot run: %s (%s)'
                % (guard['detail'], guard.get('remedy', '')))
    return guard['detail']


# -- local libvirt domains --------------------------------------------------

def _libvirt_module():
    try:
        import libvirt
    except ImportError as err:
        raise exception.LibvirtError(
            what='load the libvirt Python bindings',
            reason="%s (install Debian's python3-libvirt and make it "
                   "visible to this Python environment, or the PyPI "
                   "package libvirt-python: pip install "
                   "'nova-shared-cache[libvirt]')" % err)
    return libvirt


def _libvirt_uri(conf):
    return conf.libvirt.connection_uri or 'qemu:///system'


def local_domains_using(conf, spec):
    """Names of the local libvirt domains with an RBD disk on ``spec``.

    Raises LibvirtError when libvirt cannot be asked.
    """
    libvirt = _libvirt_module()
    connection = open_libvirt(conf, read_only=True)
    try:
        names = []
        for domain in connection.listAllDomains():
            try:
                doc = etree.fromstring(domain.XMLDesc(0))
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue    # gone since the listing
                raise
            # A snapshot of the image (pool/image@snap) is another
            # client of it too.
            if any(disk.image_spec == spec
                   for disk in domxml.rbd_disks(doc)):
                names.append(domain.name())
        return sorted(names)
    except libvirt.libvirtError as err:
        raise exception.LibvirtError(
            what='list the domains at %s' % _libvirt_uri(conf),
            reason=err.get_error_message())
    finally:
        connection.close()


# -- commands -----------------------------------------------------------------

def cmd_status(conf, out):
    spec = conf.command.image
    # Before Ceph: a status that cannot tell this host's clients from the
    # others' would call this host's VMs "another host" (check_input has
    # already checked the spec).
    local = hostnet.local_addresses()
    client = ceph_client(conf)
    status = client.call('read the status of %s' % spec,
                         lambda cluster: cephops.image_status(
                             cluster, spec, names=True))
    patterns = sc_conf.load(conf).ignored_watchers
    for watcher in status['watchers']:
        watcher['ignored'] = cephops.ignored(watcher, patterns)
    try:
        domains, domains_error = local_domains_using(conf, spec), None
    except exception.LibvirtError as err:
        domains, domains_error = None, str(err)
    for watcher in status['watchers']:
        is_local = hostnet.is_local(watcher['address'], local)
        watcher['local'] = is_local
        # Ceph does not say which process a client is (its address nonce
        # is random); the candidates are the local domains using the image,
        # and a single local client with a single such domain is that one.
        watcher['local_domains'] = (domains or []) if is_local else []
        watcher['domain'] = None
    local_watchers = [w for w in status['watchers'] if w['local']]
    if len(local_watchers) == 1 and domains and len(domains) == 1:
        local_watchers[0]['domain'] = domains[0]
    status['local_domains'] = domains
    if domains_error:
        status['local_domains_error'] = domains_error
    status['guard'] = guard_credentials(conf)
    user, where = ceph_user(conf)
    status['ceph_user'] = {'user': user, 'from': where}
    if conf.command.json:
        out.write(json.dumps(status, indent=2, sort_keys=True) + '\n')
        return OK
    out.write('image:     %s\n' % status['image'])
    out.write('size:      %d bytes\n' % status['size'])
    out.write('features:  %s\n' % (', '.join(status['features']) or '-'))
    if status['single_client_features']:
        out.write('WARNING:   single-client features %s\n'
                  % ', '.join(status['single_client_features']))
    if domains_error:
        out.write('WARNING:   local domains unknown: %s\n' % domains_error)
    out.write('read as:   client.%s (%s)\n' % (user, where))
    out.write('guard:     %s\n' % _guard_text(status['guard']))
    out.write('clients:   %d\n' % len(status['watchers']))
    for w in status['watchers']:
        if not w['local']:
            where = 'another host'
        elif w['domain']:
            where = 'this host: %s' % w['domain']
        else:
            where = 'this host (%s)' % (', '.join(w['local_domains'])
                                        or 'no local domain uses it')
        name = w.get('name') or '?'
        if w.get('module'):
            name += ' (%s)' % w['module']
        if w.get('ignored'):
            name += ', ignored'
        out.write('  %-40s %-16s %-28s %s\n' % (w['address'], w['client'],
                                                name, where))
    if status.get('names_error'):
        out.write('names:     not all known (%s)\n' % status['names_error'])
    return OK


def cmd_fence(conf, out):
    spec = conf.command.image
    address = conf.command.client
    if conf.command.undo:
        client = ceph_client(conf)
        entry = client.call(
            'unfence %s' % address,
            lambda c: cephops.blocklist_rm(c, address, client.user))
        if entry is not None:
            raise exception.CephError(
                what='unfence client %s' % address,
                reason='it is still in the OSD blocklist (until %s)'
                       % entry.get('until'))
        result = {'image': spec, 'client': address, 'fenced': False,
                  'entry': None}
    else:
        # Read before Ceph is asked: unreadable addresses stop the command
        # unless --force says that a local client may be fenced anyway.
        local = None if conf.command.force else hostnet.local_addresses()
        client = ceph_client(conf)
        status = client.call('read the status of %s' % spec,
                             lambda c: cephops.image_status(c, spec))
        watchers = sorted(w['address'] for w in status['watchers'])
        same = [w for w in watchers if hostnet.same_client(w, address)]
        if not same:
            raise exception.CephError(
                what='fence client %s' % address,
                reason='it is not a client of %s (its clients: %s)' % (
                    spec, ', '.join(watchers) or 'none'))
        address = same[0]   # as Ceph spells it
        if local is not None and hostnet.is_local(address, local):
            try:
                domains = ', '.join(local_domains_using(conf, spec)
                                    or ['none found'])
            except exception.LibvirtError as err:
                domains = 'unknown: %s' % err
            raise exception.CephError(
                what='fence client %s' % address,
                reason="it is a client on this host (%s), presumably one of "
                       "its own running domains (%s); pass --force to fence "
                       "it anyway" % (hostnet.address_host(address),
                                      domains))
        entry = client.call(
            'fence %s' % address,
            lambda c: cephops.blocklist_add(c, address, conf.command.expire,
                                            client.user))
        result = {'image': spec, 'client': address, 'fenced': True,
                  'entry': entry}
    user, where = ceph_user(conf)
    result['ceph_user'] = {'user': user, 'from': where}
    if conf.command.json:
        out.write(json.dumps(result, indent=2, sort_keys=True) + '\n')
    elif result['fenced']:
        out.write('fenced %s (client of %s) until %s\n' % (
            address, spec, (result['entry'] or {}).get('until', '?')))
    else:
        out.write('%s is not fenced\n' % address)
    return OK


def open_libvirt(conf, read_only=False):
    """A libvirt connection (read-write: QMP needs one), a bounded wait."""
    libvirt = _libvirt_module()
    uri = _libvirt_uri(conf)
    opener = libvirt.openReadOnly if read_only else libvirt.open
    try:
        return qmp.bounded(opener, uri, timeout=LIBVIRT_TIMEOUT,
                           what='libvirt-open')
    except qmp.CallTimeout:
        reason = 'no answer within %ss' % LIBVIRT_TIMEOUT
    except libvirt.libvirtError as err:
        reason = err.get_error_message()
    raise exception.LibvirtError(what='connect to libvirt at %s' % uri,
                                 reason=reason)


def auditor(conf, connection, qmp_connection=None):
    settings = sc_conf.load(conf)
    if conf.command.ceph_user:
        settings = dataclasses.replace(settings,
                                       ceph_user=conf.command.ceph_user)
    return settings, audit.Auditor(connection, settings,
                                   libvirt_user=conf.libvirt.rbd_user,
                                   ceph=not conf.command.no_ceph,
                                   workers=conf.command.workers,
                                   qmp_connection=qmp_connection)


def open_qmp_connection(conf):
    """(the audit's second connection, for its QMP queries, or None; why not)

    None when it cannot be opened: the QMP queries then share the first
    connection, and the report says so (see audit.Auditor).
    """
    try:
        return open_libvirt(conf), None
    except exception.LibvirtError as err:
        return None, audit.qmp_shares_warning(
            'could not open a second libvirt connection: %s' % err)


def close_all(*connections):
    for connection in connections:
        if connection is not None:
            try:
                connection.close()
            except Exception:   # closing: nothing left to do about it
                pass


def _qemu_text(qemu):
    if qemu is None:
        return '-'
    return 'direct' if qemu['direct'] else 'rbd cache on'


def cmd_audit(conf, out):
    connection = open_libvirt(conf)
    qmp_connection, warning = open_qmp_connection(conf)
    try:
        _, auditor_ = auditor(conf, connection, qmp_connection)
        report = auditor_.scan(conf.command.domain)
        if warning:
            report.warnings.append(warning)
        guard = guard_credentials(conf, connection)
    finally:
        close_all(qmp_connection, connection)
    if audit_format(conf.command) == 'json':
        data = report.report()
        data['guard'] = guard
        out.write(json.dumps(data, indent=2, sort_keys=True) + '\n')
        return report.exit_code
    if audit_format(conf.command) == 'prometheus':
        _write_metrics(conf.command, out, metrics.render(
            report.report(), guard, report.exit_code))
        return report.exit_code
    rows = [('DOMAIN', 'STATE', 'DISK', 'IMAGE', 'DEFINED', 'QEMU',
             'SHARED', 'FINDINGS')]
    for d in report.disks:
        rows.append((d.domain, 'running' if d.running else 'shut off',
                     d.target or '?', d.image, d.cache or 'default',
                     _qemu_text(d.qemu), 'yes' if d.shared else 'no',
                     ', '.join('%s(%s)' % (f['code'], f['where'])
                               for f in d.findings) or '-'))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out.write('  '.join(c.ljust(w) for c, w in zip(r, widths))
                  + '  ' + r[-1] + '\n')
    for d in report.disks:
        for f in d.findings:
            out.write('%s %s: %s: %s\n'
                      % (d.domain, d.target, f['code'], f['detail']))
    for e in report.errors:
        out.write('ERROR %s\n' % ' '.join(
            '%s=%s' % item for item in sorted(e.items())))
    for w in report.warnings:
        out.write('WARNING %s\n' % w)
    out.write("guard: %s\n" % _guard_text(guard))
    out.write('%d domains, %d RBD disks, %d shared, %d findings, %d errors '
              '(%.2fs)\n' % (report.domains, len(report.disks),
                             sum(d.shared for d in report.disks),
                             report.findings, len(report.errors),
                             report.seconds))
    return report.exit_code


def audit_format(command):
    """table, json or prometheus (--json is --format json)."""
    if command.json:
        return 'json'
    return command.format or 'table'


def _write_metrics(command, out, text):
    if command.output:
        metrics.write_atomically(command.output, text)
    else:
        out.write(text)


def _audit_failed(conf, out, err, error_type):
    """audit --format prometheus that could not run: still metrics."""
    try:
        _write_metrics(conf.command, out,
                       metrics.render_failure(error_type, ERROR))
    except OSError as error:
        err.write('nova-shared-cache: cannot write %s: %s\n'
                  % (conf.command.output, error))


def cmd_fix(conf, out):
    if not (conf.command.config or conf.command.live):
        raise exception.UsageError(
            reason='fix needs --config, --live or both')
    connection = open_libvirt(conf)
    qmp_connection, warning = open_qmp_connection(conf)
    try:
        settings, auditor_ = auditor(conf, connection, qmp_connection)
        report = auditor_.scan(conf.command.domain)
        if warning:
            report.warnings.append(warning)
        results, interrupted = _fix(conf, settings, report)
    finally:
        close_all(qmp_connection, connection)
    errors = report.errors + [r for r in results if r['state'] in FIX_FAILED]
    if conf.command.json:
        out.write(json.dumps({'results': results, 'errors': report.errors,
                              'warnings': report.warnings,
                              'interrupted': interrupted},
                             indent=2, sort_keys=True) + '\n')
    else:
        for r in results:
            out.write('%s %s: %s\n' % (r['domain'], r['disk'],
                                       _fix_text(r)))
        for e in report.errors:
            out.write('ERROR %s\n' % ' '.join(
                '%s=%s' % item for item in sorted(e.items())))
        for w in report.warnings:
            out.write('WARNING %s\n' % w)
        if interrupted:
            out.write('STOPPED by %s: the disks after the last one shown '
                      'were not looked at\n' % interrupted)
        elif not results:
            out.write('nothing to fix\n')
    return ERROR if errors or interrupted else OK


# Results of fix that leave something to do (exit status 2).
FIX_FAILED = ('error', 'not-switched', 'rolled-back', 'partial')


def _fix(conf, settings, report):
    """The results, and the signal that stopped a live switch (or None).

    A signal during a live switch stops it at its next safe point (see
    livefix) and no further disk is looked at.
    """
    results = []
    cache_mode = settings.cache_mode
    leftovers = {}
    for row in report.disks:
        live = conf.command.live and audit.needs_live_fix(row)
        findings = row.findings
        if conf.command.live and not live and _has_leftover(
                row, leftovers, report.warnings):
            # An earlier fix --live stopped half-way: finish it.
            live = True
            findings = findings + [{
                'code': 'leftover', 'where': 'qemu',
                'detail': 'node %s left by an earlier fix --live'
                          % (livefix.TEMP_NODE % row.live.index)}]
        config = (conf.command.config or conf.command.live) and (
            audit.needs_config_fix(row))
        if not (live or config):
            continue
        base = {'domain': row.domain, 'disk': row.target,
                'image': row.image}
        if conf.command.dry_run:
            results.append(dict(base, action='live' if live else 'config',
                                state='would fix', findings=findings))
            continue
        try:
            if live:
                results.append(audit.fix_live(row, cache_mode))
            else:
                results.append(audit.fix_config(row, cache_mode))
        except exception.SharedCacheError as err:
            results.append(dict(base, action='live' if live else 'config',
                                state='error', error=str(err)))
        if results[-1].get('interrupted'):
            return results, results[-1]['interrupted']
    return results, None


def _has_leftover(row, cache, warnings):
    """Whether QEMU has a temporary node of this disk (nsc-N-storage).

    A QEMU that cannot be asked is a warning (once per domain): a switch
    an earlier fix --live left half-way is then not seen this time.
    """
    if not (row.running and row.live is not None and row.live.index):
        return False
    if row.domain not in cache:
        try:
            cache[row.domain] = livefix.temp_nodes(row.handle)
        except Exception as err:
            cache[row.domain] = {}
            warnings.append(
                '%s: could not ask QEMU for nodes an earlier fix --live may '
                'have left (%s); its disks were not checked for a switch '
                'left half-way: run fix --live again once QEMU answers'
                % (row.domain, getattr(err, 'reason', None) or err))
    return row.live.index in cache[row.domain]


def _fix_text(r):
    if r['state'] == 'error':
        return 'ERROR: %s' % r['error']
    if r['state'] == 'would fix':
        return 'would fix (%s): %s' % (r['action'], ', '.join(
            '%s(%s)' % (f['code'], f['where']) for f in r['findings']))
    if r['action'] == 'config':
        return 'definition %s%s' % (r['state'], (
            ' (%s)' % '; '.join(r['changes'])) if r.get('changes') else
            ' (%s)' % r['detail'] if r.get('detail') else '')
    config = r['config']
    definition = 'definition %s%s' % (config['state'], (
        ' (%s)' % '; '.join(config['changes'])) if config.get('changes') else
        ' (%s)' % config['detail'] if config.get('detail') else '')
    if r['state'] == 'not-switched':
        return 'live NOT SWITCHED: %s; %s' % (r['error'], definition)
    parts = ['live %s%s (VM paused %.1f ms, %.0f ms in all; VM %s)' % (
        r['state'] if r['state'] in livefix.OK_STATES
        else r['state'].upper(),
        ', INTERRUPTED by %s' % r['interrupted'] if r.get('interrupted')
        else '', r['pause_ms'], r['total_ms'], r.get('vm') or 'unknown')]
    if r.get('error'):
        parts.append(r['error'])
    parts.extend('LEFT: %s' % left for left in r.get('leftover') or [])
    if r.get('remedy'):
        parts.append('TO CLEAN UP: %s' % r['remedy'])
    parts.append(definition)
    return '; '.join(parts)


def cmd_install_hook(conf, out):
    hooks_dir = conf.command.hooks_dir
    if conf.command.uninstall:
        path = hookinstall.hook_path(hooks_dir, HOOK_NAME)
        if hookinstall.uninstall(hooks_dir, HOOK_NAME):
            out.write('removed %s\n' % path)
        else:
            out.write('%s is not installed\n' % path)
    else:
        out.write('installed %s\n' % hookinstall.install_checked(
            hooks_dir, HOOK_NAME, sys.executable, conf.config_file or [],
            config_dirs=_config_dirs(conf)))
    if conf.command.reload:
        signalled = _reload_libvirt()
        out.write('asked %s to read its hooks again\n' % (
            ', '.join(signalled) or 'no running libvirtd/virtqemud'))
    else:
        out.write('libvirtd reads hooks when it starts or reloads '
                  '(systemctl reload libvirtd, or --reload)\n')
    return OK


def _config_dirs(conf):
    """The --config-dir directories, in order (a list in newer oslo)."""
    dirs = conf.config_dir or []
    return [dirs] if isinstance(dirs, str) else list(dirs)


def _reload_libvirt():
    import signal
    signalled = []
    for daemon in ('libvirtd', 'virtqemud'):
        found = subprocess.run(['pgrep', '-x', daemon], capture_output=True,
                               text=True, check=False).stdout.split()
        for pid in found:
            os.kill(int(pid), signal.SIGHUP)
            signalled.append('%s (pid %s)' % (daemon, pid))
    return signalled


COMMANDS = {'status': cmd_status, 'fence': cmd_fence, 'audit': cmd_audit,
            'fix': cmd_fix, 'install-hook': cmd_install_hook,
            **verify_cmd.COMMANDS}

#: What an operator can do when this host's addresses cannot be read.
_ADDRESS_REMEDY = {
    'audit': '; or pass --no-ceph to audit without asking Ceph (sharing is '
             'then judged by <shareable/> and the local domains only)',
    'fix': '; or pass --no-ceph to fix what <shareable/> and the local '
           'domains show',
    'fence': "; --force fences without this check (make sure the client is "
             "not one of this host's domains)",
}


def _check_ceph_user(user):
    if user is None:
        return
    if not user or any(c.isspace() or not c.isprintable() for c in user):
        raise exception.UsageError(
            reason='--ceph-user %r is not a Ceph user id' % user)
    if user.startswith('client.'):
        raise exception.UsageError(
            reason="--ceph-user takes the id without 'client.' (for %s: "
                   "--ceph-user %s)" % (user, user[len('client.'):]))


def check_input(conf):
    """Check the command line and nova.conf before any connection."""
    command = conf.command
    name = command.name
    if name in verify_cmd.COMMANDS:
        verify_cmd.check_input(command)
    if name in ('status', 'fence'):
        try:
            cephops.parse_image_spec(command.image, source='POOL/IMAGE',
                                     what='use the image argument')
        except exception.CephError as err:
            raise exception.UsageError(reason=str(err)) from None
    if name == 'fence':
        hostnet.parse_client_address(command.client)
    if name in ('status', 'fence', 'audit', 'fix'):
        _check_ceph_user(command.ceph_user)
        sc_conf.load(conf)
    if name in ('status', 'fence'):
        ceph_user(conf)
    if name == 'audit':
        if command.json and command.format not in (None, 'json'):
            raise exception.UsageError(
                reason='--json and --format %s: give one of them'
                       % command.format)
        if command.output is not None:
            if audit_format(command) != 'prometheus':
                raise exception.UsageError(
                    reason='--output is for --format prometheus (the '
                           'textfile collector); redirect the %s output '
                           'instead' % audit_format(command))
            directory = os.path.dirname(os.path.abspath(command.output))
            if not command.output.strip() or os.path.isdir(command.output):
                raise exception.UsageError(
                    reason='--output %r is not a file name'
                           % command.output)
            if not os.path.isdir(directory):
                raise exception.UsageError(
                    reason='--output %s: directory %s does not exist'
                           % (command.output, directory))
    if name in ('audit', 'fix'):
        for domain in command.domain or []:
            if not domain.strip():
                raise exception.UsageError(
                    reason='--domain needs a domain name, not %r' % domain)
        if not command.no_ceph:
            hostnet.local_addresses()


class _ParseExit(Exception):
    """argparse ended the parsing (usage error or --help)."""

    def __init__(self, code, stdout, stderr):
        super().__init__(code)
        self.code, self.stdout, self.stderr = code, stdout, stderr


def _parse_args(argv, err):
    captured_out, captured_err = io.StringIO(), io.StringIO()
    exited = None
    try:
        with contextlib.redirect_stdout(captured_out), \
                contextlib.redirect_stderr(captured_err):
            return make_conf(argv)
    except SystemExit as done:
        exited = OK if done.code is None else done.code
        if not isinstance(exited, int):
            captured_err.write('%s\n' % exited)
            exited = ERROR
    finally:
        if exited is None:
            # Whatever else oslo.config printed (a deprecation warning...).
            err.write(captured_out.getvalue() + captured_err.getvalue())
    raise _ParseExit(exited, captured_out.getvalue(),
                     captured_err.getvalue())


def _asks_json(argv):
    """--json or audit's --format json: one JSON document, come what may."""
    for i, arg in enumerate(argv):
        if arg == '--json' or arg == '--format=json' or (
                arg == '--format' and argv[i + 1:i + 2] == ['json']):
            return True
    return False


def _as_metrics(conf, error):
    """Whether a failed command still owes metrics.

    audit --format prometheus that got past its usage checks.
    """
    return (conf is not None and conf.command.name == 'audit'
            and audit_format(conf.command) == 'prometheus'
            and not isinstance(error, exception.UsageError))


def _document(doc, code):
    doc.setdefault('exit_code', code)
    doc.setdefault('meaning', MEANINGS.get(code, 'error'))
    return json.dumps(doc, indent=2, sort_keys=True) + '\n'


def _error_document(message, error_type, command, code=ERROR, **extra):
    return _document(dict(extra, error=message, error_type=error_type,
                          command=command), code)


def main(argv=None, out=None, err=None):
    """Run one command; its exit status.

    With --json, stdout gets exactly one JSON document whatever happens
    (errors too: {"error": ..., "exit_code": 2, "meaning": "error"}).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _asks_json(argv)
    # With --json a failing command's partial output is dropped, so that
    # one document comes out.
    sink = io.StringIO() if as_json else out
    command = conf = None
    try:
        conf = _parse_args(argv, err)
        command = conf.command.name
        check_input(conf)
        code = COMMANDS[command](conf, sink)
    except _ParseExit as done:
        err.write(done.stderr)
        if done.code == OK:     # --help
            out.write(_document({'help': done.stdout}, OK) if as_json
                      else done.stdout)
        elif as_json:
            lines = done.stderr.strip().splitlines() or ['usage error']
            out.write(_error_document(
                lines[-1].split(' error: ', 1)[-1], 'UsageError', None,
                code=done.code, usage='\n'.join(lines[:-1])))
        return done.code
    except (exception.SharedCacheError, cfg.Error,
            KeyboardInterrupt) as error:
        message = str(error) or type(error).__name__
        if isinstance(error, hostnet.AddressError):
            message += _ADDRESS_REMEDY.get(command, '')
        elif isinstance(error, KeyboardInterrupt):
            message = 'interrupted'
        err.write('nova-shared-cache: %s\n' % message)
        if as_json:
            out.write(_error_document(message, type(error).__name__,
                                      command))
        elif _as_metrics(conf, error):
            _audit_failed(conf, out, err, type(error).__name__)
        return ERROR
    except Exception as error:  # never a traceback and exit 1 ("findings")
        message = 'unexpected %s: %s' % (type(error).__name__, error)
        err.write('nova-shared-cache: %s\n' % message)
        if as_json:
            out.write(_error_document(message, type(error).__name__,
                                      command))
        elif _as_metrics(conf, error):
            _audit_failed(conf, out, err, type(error).__name__)
        return ERROR
    finally:
        cephclient.REGISTRY.close_all()
    if as_json:
        try:
            doc = json.loads(sink.getvalue())
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            message = 'the %s command printed no JSON document' % command
            err.write('nova-shared-cache: %s\n' % message)
            out.write(_error_document(message, 'UnexpectedOutput', command))
            return ERROR
        out.write(_document(doc, code))
    return code


if __name__ == '__main__':
    sys.exit(main())
