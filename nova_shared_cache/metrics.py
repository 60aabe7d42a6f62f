"""The audit's findings as Prometheus metrics (text exposition format).

``nova-shared-cache audit --format prometheus`` writes these; with
``--output FILE`` the file is replaced atomically, so that node_exporter's
textfile collector (``--collector.textfile.directory``) never reads half a
file. Every RBD disk of the host's domains gets one sample of each
per-disk gauge (0 or 1; ``disk_findings`` counts), so that an alert can
tell "fixed" from "gone";
the host-level gauges say whether the audit itself ran, when, and how
long it took. An audit that could not run at all still writes the
host-level gauges, with ``nova_shared_cache_audit_success 0``, so that an
old file never keeps saying "all well".
"""

import time

from nova_shared_cache import atomicfile

PREFIX = 'nova_shared_cache_'

#: name: (help, what a disk's report dict gives)
DISK_GAUGES = {
    'disk_shared': (
        '1 if the RBD disk is shared: another domain of this host, a '
        'client on another host, or a live fix records it',
        lambda d: d['shared']),
    'disk_running': (
        '1 if the disk\'s domain is running',
        lambda d: d['running']),
    'disk_caching': (
        '1 if a shared disk is cached (by QEMU, the live XML or the '
        'definition): its VMs may read stale data or hide their writes',
        lambda d: _has(d, 'caching')),
    'disk_not_shareable': (
        '1 if a shared disk\'s definition lacks <shareable/>',
        lambda d: _has(d, 'not-shareable')),
    'disk_live_differs': (
        '1 if QEMU runs a shared disk otherwise than its definition says '
        '(fix --live or a cold start changes it)',
        lambda d: _has(d, 'live-differs')),
    'disk_features': (
        '1 if a shared disk\'s image has single-client features on '
        '(exclusive-lock, object-map, fast-diff, journaling)',
        lambda d: _has(d, 'features')),
    'disk_findings': (
        'the number of findings of the disk (audit\'s FINDINGS column)',
        lambda d: len(d['findings'])),
}


def _has(disk, code):
    return any(f['code'] == code for f in disk['findings'])


def _escape(value):
    return (str(value).replace('\\', '\\\\').replace('"', '\\"')
            .replace('\n', '\\n'))


def _labels(labels):
    if not labels:
        return ''
    return '{%s}' % ','.join('%s="%s"' % (key, _escape(value))
                             for key, value in labels)


def _number(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Text:

    def __init__(self):
        self.lines = []

    def gauge(self, name, help_text, samples):
        """``samples``: (labels as (key, value) pairs, value) pairs."""
        self.lines.append('# HELP %s%s %s' % (PREFIX, name,
                                              help_text.replace('\n', ' ')))
        self.lines.append('# TYPE %s%s gauge' % (PREFIX, name))
        for labels, value in samples:
            self.lines.append('%s%s%s %s' % (PREFIX, name, _labels(labels),
                                             _number(value)))

    def text(self):
        return '\n'.join(self.lines) + '\n'


def _disk_labels(disk):
    return (('domain', disk['domain']), ('uuid', disk['uuid']),
            ('disk', disk['target'] or ''), ('image', disk['image']))


def _run_gauges(text, success, exit_code, when):
    text.gauge('audit_success', '1 if the audit ran and every domain and '
               'image could be read (no errors)', [((), success)])
    text.gauge('audit_exit_code', "the audit's exit status (0 ok, 1 "
               "findings, 2 errors or could not run)", [((), exit_code)])
    text.gauge('audit_timestamp_seconds', 'when the audit ended (Unix '
               'time)', [((), round(when, 3))])


def render(report, guard, exit_code, now=None):
    """The metrics of an audit: ``report`` is its JSON document's dict."""
    text = _Text()
    _run_gauges(text, not report['errors'], exit_code,
                time.time() if now is None else now)
    disks = report['disks']
    text.gauge('audit_duration_seconds', 'how long the scan took',
               [((), report['seconds'])])
    text.gauge('audit_domains', 'libvirt domains looked at',
               [((), report['domains'])])
    text.gauge('audit_disks', 'RBD disks of those domains',
               [((), len(disks))])
    text.gauge('audit_shared_disks', 'RBD disks that are shared',
               [((), sum(1 for d in disks if d['shared']))])
    text.gauge('audit_findings', 'findings of all disks',
               [((), report['findings'])])
    text.gauge('audit_errors', 'domains or images the audit could not read',
               [((), len(report['errors']))])
    text.gauge('audit_warnings', 'what made the audit less sure than usual '
               '(see its table or JSON output)',
               [((), len(report['warnings']))])
    errors = {}
    for e in report['errors']:
        labels = tuple((k, v) for k, v in sorted(e.items()) if k != 'error')
        errors[labels] = errors.get(labels, 0) + 1
    text.gauge('audit_error', 'errors of a domain or image the audit could '
               'not read (see its table or JSON output for why)',
               list(errors.items()))
    text.gauge('guard_credentials_usable', "1 if nova-compute's Ceph-side "
               "guard finds credentials it can use on this host",
               [((('source', guard.get('source', '')),
                  ('user', guard.get('user') or '')),
                 bool(guard.get('usable')))])
    for name, (help_text, value) in DISK_GAUGES.items():
        text.gauge(name, help_text,
                   [(_disk_labels(d), value(d)) for d in disks])
    text.gauge('finding', '1 per finding of a disk, by code and where it '
               'was seen',
               [(_disk_labels(d) + (('code', f['code']),
                                    ('where', f['where'])), 1)
                for d in disks for f in d['findings']])
    return text.text()


def render_failure(error_type, exit_code, now=None):
    """The metrics of an audit that could not run (``error_type``: why)."""
    text = _Text()
    _run_gauges(text, False, exit_code, time.time() if now is None else now)
    text.gauge('audit_failed', '1: the audit could not run at all (the '
               'command\'s standard error says why)',
               [((('error_type', error_type),), 1)])
    return text.text()


def write_atomically(path, data):
    """Replace ``path`` with ``data`` in one step.

    The textfile collector must never read half a file.
    """
    atomicfile.replace(path, data, 0o644)
