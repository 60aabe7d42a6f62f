"""``nova-shared-cache fix --config|--live``: repair the shared RBD disks
that audit reports, in the definitions and (live) in QEMU."""

import json

from nova_shared_cache import audit
from nova_shared_cache import cmd
from nova_shared_cache.cmd import common
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache.libvirt import livefix

NAMES = ('fix',)
#: The keys of fix --json's document (besides exit_code and meaning).
JSON_KEYS = {
    'results': 'one entry per disk looked at: domain, disk, image, action '
               '(config or live), state (fixed, unchanged, skipped, switched, '
               'completed, already-direct, rolled-back, partial, '
               'not-switched, error, would fix), and what the action '
               'reports (changes, detail, error; for live: pause_ms, '
               'total_ms, vm, leftover, remedy, interrupted, recorded, '
               'config)',
    'errors': "the scan's errors (a domain or image it could not read)",
    'warnings': 'what made the scan less sure than usual, with the remedy',
    'interrupted': 'the signal that stopped a live switch, else null',
}
# Results of fix that leave something to do (exit status 2).
FIX_FAILED = ('error', 'not-switched', 'rolled-back', 'partial')


def add_parser(subparsers):
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
    common.add_workers(fix)


def check_input(conf):
    common.check_ceph_user(conf.command.ceph_user)
    sc_conf.load(conf)
    common.check_domains(conf.command)


def run(conf, out):
    if not (conf.command.config or conf.command.live):
        raise exception.UsageError(
            reason='fix needs --config, --live or both')
    with common.scanned(conf) as (settings, report, _):
        results, interrupted = _fix(conf, settings, report)
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
    return common.ERROR if errors or interrupted else common.OK


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
