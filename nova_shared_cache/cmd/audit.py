"""``nova-shared-cache audit``: every RBD disk of this host's domains, as
a table, a JSON document or Prometheus metrics."""

import json
import os

from nova_shared_cache.cmd import common
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache import metrics

NAMES = ('audit',)
#: audit --format
FORMATS = ('table', 'json', 'prometheus')


def add_parser(subparsers):
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
    common.add_workers(audit)


def check_input(conf):
    command = conf.command
    common.check_ceph_user(command.ceph_user)
    sc_conf.load(conf)
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
                reason='--output %r is not a file name' % command.output)
        if not os.path.isdir(directory):
            raise exception.UsageError(
                reason='--output %s: directory %s does not exist'
                       % (command.output, directory))
    common.check_domains(command)


def _qemu_text(qemu):
    if qemu is None:
        return '-'
    return 'direct' if qemu['direct'] else 'rbd cache on'


def run(conf, out):
    with common.scanned(conf) as (_, report, connection):
        guard = common.guard_credentials(conf, connection)
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
    out.write("guard: %s\n" % common.guard_text(guard))
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


def metrics_output(argv):
    """audit --format prometheus's --output from the command line alone.

    For an audit whose nova.conf could not be read: the file ('' for
    standard output), or None when the command line asks for no metrics.
    """
    if 'audit' not in argv:
        return None
    fmt = output = None
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg == '--format':
            fmt = following
        elif arg.startswith('--format='):
            fmt = arg.split('=', 1)[1]
        elif arg == '--output':
            output = following
        elif arg.startswith('--output='):
            output = arg.split('=', 1)[1]
    if fmt != 'prometheus' or '--json' in argv:
        return None
    return output or ''


def failed(output, out, err, error_type):
    """audit --format prometheus that could not run: still metrics.

    ``output``: the --output file, or '' for standard output.
    """
    text = metrics.render_failure(error_type, common.ERROR)
    try:
        if output:
            metrics.write_atomically(output, text)
        else:
            out.write(text)
    except OSError as error:
        err.write('nova-shared-cache: cannot write %s: %s\n'
                  % (output, error))
