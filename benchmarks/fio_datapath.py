"""What sharing costs on the data path: fio's rbd engine, two clients.

Two fio jobs are two librbd clients, as two VMs' QEMU processes are. They
run 4k random writes, then 4k random reads, iodepth 16 each, with the
librbd settings QEMU gives a disk in each cache mode (QEMU sets
``rbd_cache`` from the disk's cache mode; fio's rbd engine reads it from
the ceph.conf named by ``CEPH_CONF``):

- ``none`` (what the extension makes shared disks): ``rbd_cache = false``;
- ``directsync``: ``rbd_cache = false`` and a flush after every write
  (fio ``fsync=1``), as QEMU emulates write-through for this mode;
- ``writeback`` (unsafe when shared): ``rbd_cache = true`` with
  ``rbd_cache_policy = writeback``.

Layouts, all with cache none: (a) one shared image with the single-client
features cleared (a Cinder multiattach volume), (b) one shared image with
exclusive-lock, object-map and fast-diff left on, (c) two separate images,
one per client (the ceiling). The cache modes run on layout (a); its
``none`` row is layout (a) itself. Every configuration runs once per
trial, in a different order each trial; aggregate IOPS and the p99
completion latency (both clients merged) are reported as median
(min-max) over trials, and the ratios against (c) and ``none`` are taken
within each trial.

On a 2-core machine the OSD and both clients share the CPU: compare the
ratios, not the absolute IOPS. Run as root with the embedded stack up::

    python benchmarks/fio_datapath.py [--trials 5] [--runtime 10]
"""

import json
import os
import random
import shutil
import subprocess
import tempfile

import benchlib
from nova_shared_cache_lab import ceph

PREFIX = 'nsc-bench-fio'
LAYOUTS = ('shared', 'locked', 'separate')
LAYOUT_NAMES = {
    'shared': '(a) shared image, single-client features cleared',
    'locked': '(b) shared image, exclusive-lock on',
    'separate': '(c) two separate images (ceiling)',
}
MODES = ('none', 'directsync', 'writeback')
CACHE_CONF = {
    'none': 'rbd cache = false\n',
    'directsync': 'rbd cache = false\n',
    'writeback': ('rbd cache = true\nrbd cache policy = writeback\n'
                  'rbd cache writethrough until flush = false\n'),
}
RW = ('randwrite', 'randread')


class Images:
    """The benchmark's images, created on the embedded cluster."""

    def __init__(self, cluster, size_mb):
        self.cluster = cluster
        self.size_mb = size_mb
        # Cinder's names for volumes 'nsc-bench-fio-shared' ...
        self.names = {
            'shared': ['volume-%s-shared' % PREFIX] * 2,
            'locked': ['volume-%s-locked' % PREFIX] * 2,
            'separate': ['volume-%s-sep0' % PREFIX,
                         'volume-%s-sep1' % PREFIX],
        }

    def all(self):
        return sorted({n for names in self.names.values() for n in names})

    def create(self):
        self.remove()
        for name in self.all():
            if name == self.names['locked'][0]:
                # The cluster's default features, exclusive-lock included.
                self.cluster.rbd('create', '--size', str(self.size_mb),
                                 '%s/%s' % (ceph.POOL, name))
            else:
                self.cluster.create_multiattach_volume(
                    name[len('volume-'):], self.size_mb)

    def features(self, layout):
        spec = '%s/%s' % (ceph.POOL, self.names[layout][0])
        return self.cluster.image_info(spec)['features']

    def remove(self):
        for name in self.all():
            self.cluster.remove_image('%s/%s' % (ceph.POOL, name))


class Fio:

    def __init__(self, cluster, workdir, runtime, iodepth, block_size):
        self.workdir = workdir
        self.runtime = runtime
        self.iodepth = iodepth
        self.block_size = block_size
        with open(cluster.client_conf) as f:
            base = f.read()
        self.confs = {}
        for mode, extra in CACHE_CONF.items():
            path = os.path.join(workdir, 'ceph-%s.conf' % mode)
            with open(path, 'w') as f:
                f.write('%s\n[client]\n%s' % (base, extra))
            self.confs[mode] = path

    def job(self, images, rw, mode, prefill=False):
        lines = ['[global]', 'ioengine=rbd', 'clientname=%s' % ceph.CLIENT,
                 'pool=%s' % ceph.POOL, 'group_reporting=1']
        if prefill:
            lines += ['rw=write', 'bs=4m', 'iodepth=4']
        else:
            lines += ['rw=%s' % rw, 'bs=%s' % self.block_size,
                      'iodepth=%d' % self.iodepth, 'time_based=1',
                      'runtime=%d' % self.runtime, 'ramp_time=1',
                      'norandommap=1', 'randrepeat=0']
            if mode == 'directsync' and rw == 'randwrite':
                lines.append('fsync=1')
        for n, name in enumerate(images):
            lines += ['', '[client%d]' % n, 'rbdname=%s' % name]
        return '\n'.join(lines) + '\n'

    def run(self, images, rw, mode, prefill=False):
        job_file = os.path.join(self.workdir, 'job.fio')
        with open(job_file, 'w') as f:
            f.write(self.job(images, rw, mode, prefill))
        env = dict(os.environ, CEPH_CONF=self.confs[mode])
        proc = subprocess.run(
            ['fio', '--output-format=json', job_file], env=env,
            capture_output=True, text=True, check=False,
            timeout=self.runtime * 10 + 300)
        if proc.returncode:
            raise SystemExit('fio failed (%d): %s' % (
                proc.returncode, (proc.stderr or proc.stdout).strip()[-2000:]))
        # fio may print engine warnings before the JSON document.
        out = proc.stdout
        data = json.loads(out[out.index('{'):])
        stats = data['jobs'][0]['write' if 'write' in rw else 'read']
        percentiles = stats['clat_ns'].get('percentile') or {}
        return {'iops': stats['iops'],
                'p99_ms': percentiles.get('99.000000', 0) / 1e6,
                'errors': data['jobs'][0].get('error', 0)}


#: A shared image (features cleared) against two separate images.
TARGET = 0.95


def configurations():
    for rw in RW:
        for layout in LAYOUTS:
            yield rw, layout, 'none'
        for mode in MODES[1:]:
            yield rw, 'shared', mode


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--trials', type=int, default=15,
                        help='rounds of every configuration (default 15)')
    parser.add_argument('--runtime', type=int, default=10,
                        help='seconds of each fio run')
    parser.add_argument('--iodepth', type=int, default=16)
    parser.add_argument('--block-size', default='4k')
    parser.add_argument('--size-mb', type=int, default=256)
    args = parser.parse_args()
    if not shutil.which('fio'):
        raise SystemExit('fio is not installed (Debian package fio)')
    cluster = ceph.Cluster()
    if not cluster.is_up():
        raise SystemExit('the embedded Ceph is not up: tools/stack up')
    images = Images(cluster, args.size_mb)
    samples = {c: [] for c in configurations()}
    ratios = {}
    with tempfile.TemporaryDirectory() as workdir:
        fio = Fio(cluster, workdir, args.runtime, args.iodepth,
                  args.block_size)
        images.create()
        try:
            features = {layout: images.features(layout)
                        for layout in LAYOUTS}
            for name in images.all():       # reads must hit written data
                fio.run([name], 'write', 'none', prefill=True)
            order = list(samples)
            shuffle = random.Random(7)
            for _ in range(args.trials):
                shuffle.shuffle(order)
                done = {(rw, layout, mode): fio.run(images.names[layout],
                                                    rw, mode)
                        for rw, layout, mode in order}
                for c, result in done.items():
                    samples[c].append(result)
                for rw in RW:
                    ceiling = done[(rw, 'separate', 'none')]['iops']
                    none = done[(rw, 'shared', 'none')]['iops']
                    for c in samples:
                        if c[0] != rw:
                            continue
                        ratios.setdefault(c, {'vs_separate': [],
                                              'vs_none': []})
                        ratios[c]['vs_separate'].append(
                            done[c]['iops'] / ceiling)
                        ratios[c]['vs_none'].append(done[c]['iops'] / none)
        finally:
            images.remove()
    results = {'features': features, 'configurations': []}
    rows = []
    for c, runs in samples.items():
        rw, layout, mode = c
        entry = {
            'rw': rw, 'layout': layout, 'mode': mode,
            'iops': benchlib.summary([r['iops'] for r in runs]),
            'p99_ms': benchlib.summary([r['p99_ms'] for r in runs]),
            # Sharing one image (features cleared, cache none) against
            # the ceiling of two images: target >= 0.95 of the IOPS.
            'vs_separate': benchlib.ratio_summary(
                ratios[c]['vs_separate'],
                TARGET if (layout, mode) == ('shared', 'none') else None,
                lower_is_better=False),
            'vs_none': benchlib.ratio_summary(ratios[c]['vs_none']),
            'errors': sum(r['errors'] for r in runs)}
        results['configurations'].append(entry)
        rows.append([rw, LAYOUT_NAMES[layout], mode,
                     benchlib.fmt(entry['iops'], 0),
                     benchlib.fmt(entry['p99_ms'], 2),
                     benchlib.fmt_ci(entry['vs_separate']),
                     entry['vs_separate'].get('verdict', '-'),
                     benchlib.fmt_ci(entry['vs_none'])])
    text = benchlib.table(
        ['I/O', 'layout', 'cache', 'IOPS, both clients', 'p99 latency (ms)',
         'ratio to (c) [95% CI]', 'verdict (>= %.2f)' % TARGET,
         'ratio to none [95% CI]'], rows)
    text += ('\n\n%d trials of %d s, %s, iodepth %d per client; IOPS and '
             'latency: median (min-max) over trials; ratios: median of the '
             'per-trial ratios [bootstrap 95%% interval]. Features: %s.' % (
                 args.trials, args.runtime, args.block_size, args.iodepth,
                 '; '.join('%s: %s' % (k, ','.join(v))
                           for k, v in features.items())))
    benchlib.finish(args, 'fio_datapath', results, text)


if __name__ == '__main__':
    main()
