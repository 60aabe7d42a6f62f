"""``nova-shared-cache audit`` of real running QEMU guests, QMP and Ceph asked.

Run as root with the embedded stack up (``tools/stack up``; ``run.py``
brings it up), in the tox ``bench`` env's Python::

    python benchmarks/audit_running.py [--sizes 2 4 10 20 40 80 120]
        [--trials 5] [--workers 1 8] [--memory-mib 16]

Starts persistent TCG domains on the embedded libvirtd, each with one RBD
disk; domains come in pairs sharing one RBD image (Cinder's multiattach
features), half of the pairs as Nova makes a multiattach disk
(``<shareable/>``, cache none), half caching without ``<shareable/>``
(three findings per disk: QEMU caches, the definition caches, not
shareable). The guests boot no OS: QEMU runs (libvirt state running, the
disk opened by librbd as a client of the image, the monitor answering
QMP) while SeaBIOS finds nothing to boot and idles, so the two cores stay
with Ceph and the audit. Domains are added size by size; at each size, after
one warm-up run that is not counted, the whole command runs as an operator
runs it (``nova-shared-cache --config-file F audit --json``: every running
domain's QEMU asked for its block nodes, Ceph asked for every image's
features and watchers), ``--trials`` times for every ``--workers`` value,
the values interleaved trial by trial. A least-squares line through every
trial of a ``--workers`` value is extrapolated to ``--extrapolate``
domains, with a bootstrap interval (trials resampled) and a verdict against
``--target`` seconds. Every domain and image is removed at the end.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import benchlib
from nova_shared_cache_lab import ceph as ceph_cluster
from nova_shared_cache_lab import compute as compute_harness
from nova_shared_cache_lab import stack as embedded_stack
from nova_shared_cache_lab import virt

#: Names start like the stack's own (``tools/stack down`` removes them);
#: the 0xa0d1xxxx range keeps clear of the harness' instance ids.
NAME = compute_harness.DOMAIN_PREFIX + 'a0d1%04x'

DOMAIN = """<domain type='qemu'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>%(memory)d</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='%(cache)s' discard='unmap'/>
      <auth username='%(user)s'>
        <secret type='ceph' uuid='%(secret)s'/>
      </auth>
      <source protocol='rbd' name='%(image)s'>
        <host name='127.0.0.1' port='%(port)s'/>
      </source>
      <target dev='vdb' bus='virtio'/>%(shareable)s
      <serial>%(volume)s</serial>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def command():
    script = os.path.join(os.path.dirname(sys.executable),
                          'nova-shared-cache')
    if os.path.exists(script):
        return [script]
    return [sys.executable, '-m', 'nova_shared_cache.cmd.manage']


def caching_pair(pair):
    """Pairs 0, 2, 4... cache without <shareable/> (the findings)."""
    return pair % 2 == 0


def expected_findings(count):
    """Findings of ``count`` domains: three per disk of a caching pair.

    QEMU caches, the definition caches, the definition lacks <shareable/>.
    """
    pairs = count // 2
    return sum(2 * 3 for p in range(pairs) if caching_pair(p))


class Fleet:
    """The benchmark's domains and images on the embedded stack."""

    def __init__(self, stack, memory_mib):
        import libvirt
        self.stack = stack
        self.memory = memory_mib
        self.connection = libvirt.open(virt.URI)
        self.domains = []
        self.images = []
        self.start_s = []

    def others(self):
        return sorted(d.name() for d in self.connection.listAllDomains()
                      if d not in self.domains)

    def grow(self, count):
        """Add domains (a new image per pair) until there are ``count``."""
        while len(self.domains) < count:
            n = len(self.domains)
            pair = n // 2
            if n % 2 == 0:
                volume = str(uuid.uuid4())
                self.images.append((volume, self.stack.ceph
                                    .create_multiattach_volume(volume, 16)))
            volume, image = self.images[pair]
            caching = caching_pair(pair)
            xml = DOMAIN % {
                'name': NAME % n, 'uuid': uuid.uuid4(),
                'memory': self.memory,
                'cache': 'writeback' if caching else 'none',
                'user': ceph_cluster.CLIENT,
                'secret': self.stack.secret_uuid, 'image': image,
                'port': self.stack.ceph.port, 'volume': volume,
                'shareable': '' if caching else '\n      <shareable/>'}
            started = time.perf_counter()
            domain = self.connection.defineXML(xml)
            self.domains.append(domain)
            domain.create()
            self.start_s.append(time.perf_counter() - started)

    def qemu_rss_mib(self):
        """Summed resident memory of the domains' QEMU processes."""
        total = 0
        for domain in self.domains:
            pid_file = '/run/libvirt/qemu/%s.pid' % domain.name()
            try:
                with open(pid_file) as f:
                    pid = int(f.read().strip())
                with open('/proc/%d/status' % pid) as f:
                    for line in f:
                        if line.startswith('VmRSS:'):
                            total += int(line.split()[1])
            except (OSError, ValueError):
                continue
        return total / 1024

    def remove(self):
        import libvirt
        for domain in self.domains:
            for step in (domain.destroy, domain.undefine):
                try:
                    step()
                except libvirt.libvirtError:
                    pass
        self.domains = []
        for _, image in self.images:
            self.stack.ceph.remove_image(image)
        self.images = []
        self.connection.close()


def run_audit(conf_file, workers):
    argv = command() + ['--config-file', conf_file, 'audit', '--json']
    if workers is not None:
        argv += ['--workers', str(workers)]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=600)
    wall = time.perf_counter() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    if proc.returncode not in (0, 1) or not isinstance(report, dict):
        raise SystemExit('audit failed (exit %d): %s %s' % (
            proc.returncode, proc.stdout.strip()[-2000:],
            proc.stderr.strip()[-2000:]))
    return wall, report


def check(report, count):
    """What this audit asked, and that it saw the whole fleet."""
    disks = report['disks']
    seen = {
        'domains': report['domains'],
        'running': len({d['domain'] for d in disks if d['running']}),
        'disks': len(disks),
        # QEMU answered query-named-block-nodes for every disk.
        'qmp_answered': sum(d['qemu'] is not None for d in disks),
        # Ceph answered for every disk (features is None when not asked).
        'ceph_answered': sum(d['features'] is not None for d in disks),
        'images': len({d['image'] for d in disks}),
        'findings': report['findings'], 'errors': len(report['errors'])}
    wanted = {'domains': count, 'running': count, 'disks': count,
              'qmp_answered': count, 'ceph_answered': count,
              'images': count // 2, 'findings': expected_findings(count),
              'errors': 0}
    if seen != wanted:
        raise SystemExit('the audit of %d domains saw %s, expected %s '
                         '(errors: %s)' % (count, seen, wanted,
                                           report['errors'][:3]))
    return seen


def extrapolation(points, at, target):
    """The fitted line's value at ``at``, its interval and a verdict.

    The interval resamples the trials (bootstrap); the verdict is against
    ``target`` seconds.
    """
    def predict(sample):
        slope, intercept, _ = benchlib.fit(sample)
        return intercept + slope * at
    slope, intercept, r2 = benchlib.fit(points)
    low, high = benchlib.interval(points, stat=predict)
    return {'slope_s': slope, 'intercept_s': intercept, 'r2': r2,
            'at': at, 'value_s': intercept + slope * at, 'low_s': low,
            'high_s': high, 'confidence': benchlib.CONFIDENCE,
            'target_s': target,
            'verdict': benchlib.verdict(low, high, target)}


def growth(points):
    """Exponent b of time ~ a * n^b (log-log least squares), interval.

    b <= 1: no faster than linear. Includes the fixed cost (process
    start, Ceph connection), which pulls b below 1 at small sizes.
    """
    import math

    def exponent(sample):
        return benchlib.fit([(math.log(x), math.log(y)) for x, y in sample])[0]
    low, high = benchlib.interval(points, stat=exponent)
    return {'exponent': exponent(points), 'low': low, 'high': high,
            'verdict': benchlib.verdict(low, high, 1.0)}


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[2, 4, 10, 20, 40, 80, 120],
                        help='running domains at each step (even numbers, '
                             'ascending)')
    parser.add_argument('--trials', type=int, default=5)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 8],
                        help="audit --workers values to compare; 0: the "
                             "command's default (no --workers option)")
    parser.add_argument('--memory-mib', type=int, default=16)
    parser.add_argument('--extrapolate', type=int, default=1000)
    parser.add_argument('--target', type=float, default=5.0,
                        help='seconds at --extrapolate domains')
    args = parser.parse_args()
    if any(s < 2 or s % 2 for s in args.sizes) or \
            args.sizes != sorted(set(args.sizes)):
        parser.error('--sizes must be even numbers >= 2, ascending')
    stack = embedded_stack.Stack()
    stack.secret_uuid = stack.libvirt.secret_uuid()
    if not stack.secret_uuid:
        sys.exit('the embedded stack is not up: tools/stack up')
    workers = [w or None for w in args.workers]
    labels = {w: 'workers %s' % (w or 'default') for w in workers}
    fleet = Fleet(stack, args.memory_mib)
    others = fleet.others()
    if others:
        sys.exit('libvirtd already runs domains %s: the audit would count '
                 'them; remove them first' % ', '.join(others[:5]))
    results = {'sizes': {}, 'workers': [w or 0 for w in workers]}
    walls = {w: [] for w in workers}
    scans = {w: [] for w in workers}
    started_all = time.monotonic()
    try:
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as conf:
            conf.write('[shared_cache]\nceph_conf = %s\n[libvirt]\n'
                       'connection_uri = %s\nrbd_user = %s\n' % (
                           stack.ceph.client_conf, virt.URI,
                           ceph_cluster.CLIENT))
            conf.flush()
            for count in args.sizes:
                grown = time.perf_counter()
                fleet.grow(count)
                grow_s = time.perf_counter() - grown
                run_audit(conf.name, workers[-1])      # warm-up, not counted
                per = {w: {'wall': [], 'scan': []} for w in workers}
                for _ in range(args.trials):
                    for w in workers:
                        wall, report = run_audit(conf.name, w)
                        seen = check(report, count)
                        per[w]['wall'].append(wall)
                        per[w]['scan'].append(report['seconds'])
                entry = dict(seen, grow_s=round(grow_s, 2),
                             qemu_rss_mib=round(fleet.qemu_rss_mib()),
                             by_workers={})
                for w in workers:
                    walls[w] += [(count, x) for x in per[w]['wall']]
                    scans[w] += [(count, x) for x in per[w]['scan']]
                    entry['by_workers'][str(w or 0)] = {
                        'wall_s': benchlib.summary(per[w]['wall']),
                        'scan_s': benchlib.summary(per[w]['scan']),
                        'wall_samples_s': per[w]['wall'],
                        'scan_samples_s': per[w]['scan']}
                if len(workers) > 1:
                    first, last = per[workers[0]], per[workers[-1]]
                    entry['speedup'] = benchlib.ratio_of_medians(
                        first['wall'], last['wall'])
                results['sizes'][str(count)] = entry
                print('%d domains: %s' % (count, ', '.join(
                    '%s %.3f s' % (labels[w],
                                   statistics.median(per[w]['wall']))
                    for w in workers)), file=sys.stderr, flush=True)
    finally:
        results['start_s'] = (benchlib.summary(fleet.start_s)
                              if fleet.start_s else None)
        fleet.remove()
    results['seconds'] = round(time.monotonic() - started_all, 1)
    results['fits'] = {}
    for w in workers:
        results['fits'][str(w or 0)] = {
            'wall': extrapolation(walls[w], args.extrapolate, args.target),
            'scan': extrapolation(scans[w], args.extrapolate, args.target),
            'growth': growth(scans[w])}

    headers = ['running domains', 'RBD images', 'findings']
    for w in workers:
        headers += ['audit, %s (s)' % labels[w]]
    if len(workers) > 1:
        headers += ['speed-up (%s / %s)' % (labels[workers[0]],
                                            labels[workers[-1]])]
    rows = []
    for count in args.sizes:
        r = results['sizes'][str(count)]
        row = [count, r['images'], r['findings']]
        row += [benchlib.fmt(r['by_workers'][str(w or 0)]['wall_s'], 3)
                for w in workers]
        if len(workers) > 1:
            row.append(benchlib.fmt_ci(r['speedup'], 2))
        rows.append(row)
    text = benchlib.table(headers, rows)
    for w in workers:
        f = results['fits'][str(w or 0)]
        wall, scan, grow = f['wall'], f['scan'], f['growth']
        text += (
            '\n\n%s: command %.2f ms/domain + %.3f s (r^2 %.4f), at %d '
            'domains %.2f s [%.2f, %.2f] (%d%%): %s against %g s. Scan '
            'alone %.2f ms/domain + %.3f s; growth exponent %.2f [%.2f, '
            '%.2f] (1 = linear).' % (
                labels[w], wall['slope_s'] * 1000, wall['intercept_s'],
                wall['r2'], args.extrapolate, wall['value_s'],
                wall['low_s'], wall['high_s'], benchlib.CONFIDENCE * 100,
                wall['verdict'], args.target, scan['slope_s'] * 1000,
                scan['intercept_s'], grow['exponent'], grow['low'],
                grow['high']))
    text += ('\n\n%d trials per size and workers value, median (min-max); '
             'speed-up: ratio of medians [%d%% bootstrap interval]. '
             'Whole run %.0f s.' % (args.trials, benchlib.CONFIDENCE * 100,
                                    results['seconds']))
    benchlib.finish(args, 'audit_running', results, text)


if __name__ == '__main__':
    main()
