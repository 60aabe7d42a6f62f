"""Memory the extension adds to a compute process: import and one attach.

Each sample is a fresh Python process that imports Nova's libvirt driver
(under Nova's fake libvirt), makes a driver and does the two driver steps
of attaching one multiattach volume of the embedded cluster: the connect
step (where the extension's guard opens the image through its Ceph
connection) and the disk XML. The stock process uses Nova's
``LibvirtDriver``, the extension's ``LibvirtSharedCacheDriver``; the rest
is identical. Reported: resident memory after the imports, after the
attach, and the peak (``ru_maxrss``), median over processes run in
alternation. Run as root with the embedded stack up::

    python benchmarks/memory.py [--processes 5]
"""

import argparse
import json
import resource
import subprocess
import sys
import uuid

import benchlib
from nova_shared_cache_lab import ceph


def rss_mib():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def child(variant, conf, volume_id):
    """One compute-like process; prints its figures as JSON."""
    import novaenv
    if variant == 'extension':
        from nova_shared_cache import driver  # noqa: F401
    imported = rss_mib()
    cluster = ceph.Cluster()
    info = cluster.connection_info(volume_id, 'unused')
    extension = variant == 'extension'
    options = {'ceph_conf': conf} if extension else {}
    with novaenv.fake_libvirt(**options):
        drv = (novaenv.extension_driver() if extension
               else novaenv.stock_driver())
        inst = novaenv.instance()
        novaenv.connect_path(drv, inst, info)()
        xml = novaenv.volume_xml_path(drv, inst, info)().to_xml()
        attached = rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'imported': imported, 'attached': attached,
                      'peak': peak, 'shareable': '<shareable/>' in xml}))


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--processes', type=int, default=5)
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    cluster = ceph.Cluster()
    if not cluster.is_up():
        raise SystemExit('the embedded Ceph is not up: tools/stack up')
    volume_id = str(uuid.uuid4())
    spec = cluster.create_multiattach_volume(volume_id)
    samples = {'stock': [], 'extension': []}
    try:
        for n in range(args.processes):
            order = ['stock', 'extension'][::1 if n % 2 else -1]
            for variant in order:
                proc = subprocess.run(
                    [sys.executable, __file__, '--child', variant,
                     cluster.client_conf, volume_id],
                    capture_output=True, text=True, check=False)
                if proc.returncode:
                    raise SystemExit('%s process failed: %s' % (
                        variant, proc.stderr.strip()[-2000:]))
                samples[variant].append(
                    json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        cluster.remove_image(spec)
    results = {}
    for variant, runs in samples.items():
        results[variant] = {stage: benchlib.summary([r[stage] for r in runs])
                            for stage in ('imported', 'attached', 'peak')}
    results['added_mib'] = {
        stage: results['extension'][stage]['median']
        - results['stock'][stage]['median']
        for stage in ('imported', 'attached', 'peak')}
    # Processes are independent: the difference of the medians with a
    # bootstrap interval (no target is set for memory).
    results['added_ci'] = {
        stage: benchlib.difference_of_medians(
            [r[stage] for r in samples['extension']],
            [r[stage] for r in samples['stock']])
        for stage in ('imported', 'attached', 'peak')}
    rows = []
    for stage, label in (('imported', 'after the imports'),
                         ('attached', 'after one attach'),
                         ('peak', 'peak (ru_maxrss)')):
        rows.append([label, benchlib.fmt(results['stock'][stage], 1),
                     benchlib.fmt(results['extension'][stage], 1),
                     benchlib.fmt_ci(results['added_ci'][stage], 1)])
    text = benchlib.table(['resident memory (MiB)', 'stock Nova',
                           'extension', 'added [95% CI]'], rows)
    text += ('\n\n%d processes each, median (min-max).' % args.processes)
    benchlib.finish(args, 'memory', results, text)


if __name__ == '__main__':
    main()
