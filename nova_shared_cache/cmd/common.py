"""What the subcommands of ``nova-shared-cache`` share.

Exit statuses, the connections to libvirt and Ceph (each bounded), the
Ceph user a command reads as, and what nova-compute's guard can use on
this host."""

import contextlib
import dataclasses

from lxml import etree
from oslo_config import cfg

from nova_shared_cache import audit
from nova_shared_cache import cephauth
from nova_shared_cache import cephclient
from nova_shared_cache import cephops
from nova_shared_cache import cmd
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache import hostnet
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import qmp

OK, FINDINGS, ERROR = 0, 1, 2
MEANINGS = {OK: 'ok', FINDINGS: 'findings', ERROR: 'error'}
#: How long opening the libvirt connection may take.
LIBVIRT_TIMEOUT = 30

# The two [libvirt] options read here, declared under Nova's names so the
# same nova.conf works without importing Nova.
LIBVIRT_OPTS = [
    cfg.StrOpt('connection_uri', default=''),
    cfg.StrOpt('rbd_user'),
    cfg.StrOpt('rbd_secret_uuid'),
]


def add_workers(parser):
    parser.add_argument(
        '--workers', metavar='N', default=audit.WORKERS,
        type=cmd.whole_number('--workers', 1, audit.MAX_WORKERS),
        help="QEMU monitors and Ceph images asked at a time while "
             "scanning (default %(default)s; 1: one after the other). "
             "Each question keeps its own time limit, and the report is "
             "the same whatever N")


def check_ceph_user(user):
    if user is None:
        return
    if not user or any(c.isspace() or not c.isprintable() for c in user):
        raise exception.UsageError(
            reason='--ceph-user %r is not a Ceph user id' % user)
    if user.startswith('client.'):
        raise exception.UsageError(
            reason="--ceph-user takes the id without 'client.' (for %s: "
                   "--ceph-user %s)" % (user, user[len('client.'):]))


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


def guard_text(guard):
    if guard['source'] == cephauth.NONE:
        return ('the checks cannot run: %s (%s)'
                % (guard['detail'], guard.get('remedy', '')))
    return guard['detail']


def libvirt_module():
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


def libvirt_uri(conf):
    return conf.libvirt.connection_uri or 'qemu:///system'


def local_domains_using(conf, spec):
    """Names of the local libvirt domains with an RBD disk on ``spec``.

    Raises LibvirtError when libvirt cannot be asked.
    """
    libvirt = libvirt_module()
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
            what='list the domains at %s' % libvirt_uri(conf),
            reason=err.get_error_message())
    finally:
        connection.close()


def open_libvirt(conf, read_only=False):
    """A libvirt connection (read-write: QMP needs one), a bounded wait."""
    libvirt = libvirt_module()
    uri = libvirt_uri(conf)
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


@contextlib.contextmanager
def scanned(conf):
    """Scan: (settings, report, connection), open until the block ends.

    The QMP queries go over a second connection of their own (see
    open_qmp_connection); the report says when they could not.
    """
    connection = open_libvirt(conf)
    qmp_connection, warning = open_qmp_connection(conf)
    try:
        settings, auditor_ = auditor(conf, connection, qmp_connection)
        report = auditor_.scan(conf.command.domain)
        if warning:
            report.warnings.append(warning)
        yield settings, report, connection
    finally:
        close_all(qmp_connection, connection)


def close_all(*connections):
    for connection in connections:
        if connection is not None:
            try:
                connection.close()
            except Exception:   # closing: nothing left to do about it
                pass


def check_image_argument(command):
    """status's and fence's POOL/IMAGE, checked before anything connects."""
    try:
        cephops.parse_image_spec(command.image, source='POOL/IMAGE',
                                 what='use the image argument')
    except exception.CephError as err:
        raise exception.UsageError(reason=str(err)) from None


def check_domains(command):
    """audit's and fix's --domain, and this host's addresses.

    The addresses are read before anything connects, unless --no-ceph.
    """
    for domain in command.domain or []:
        if not domain.strip():
            raise exception.UsageError(
                reason='--domain needs a domain name, not %r' % domain)
    if not command.no_ceph:
        hostnet.local_addresses()
