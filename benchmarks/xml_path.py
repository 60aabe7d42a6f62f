"""Cost of the extension on the disk-XML path, against stock Nova.

Times ``_get_volume_config`` followed by ``_set_cache_mode`` (what every
attach, boot and migration does for each volume disk) for one RBD
multiattach volume, with ``LibvirtSharedCacheDriver`` and with Nova's own
``LibvirtDriver``, on identical inputs, in one process, under Nova's fake
libvirt. The two drivers alternate trial by trial so that drift of the
machine hits both; the figure is the ratio extension / stock per trial.

Two configurations: ``cache_mode = none`` (the default: Nova already made
the disk shareable with cache none, the policy checks and changes nothing)
and ``directsync`` (the policy changes the cache and logs one INFO line per
disk, into a log file as nova-compute would).

Wall-clock time of a pure-Python path this short moves with the machine;
``--callgrind N`` also counts the CPU instructions of N calls of each
driver under valgrind's callgrind (minus the same process making no
call), which is the same from run to run::

    python benchmarks/xml_path.py [--trials 15] [--calls 2000] \\
        [--callgrind 3000]
"""

import argparse
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
import novaenv

VOLUME_ID = '0b5e1f5a-9d1e-4c55-8a84-5b8f4e2d7c10'
CONNECTION_INFO = {
    'driver_volume_type': 'rbd', 'serial': VOLUME_ID, 'multiattach': True,
    'data': {'name': 'volumes/volume-%s' % VOLUME_ID,
             'hosts': ['127.0.0.1'], 'ports': ['3300'],
             'cluster_name': 'ceph', 'auth_enabled': True,
             'auth_username': 'cinder', 'secret_type': 'ceph',
             'secret_uuid': '5b6a4c1e-0d7e-4f7e-8c1d-2a9b3c4d5e6f',
             'volume_id': VOLUME_ID, 'discard': True},
}


def per_call_us(build, calls):
    gc.collect()
    started = time.perf_counter()
    for _ in range(calls):
        build()
    return (time.perf_counter() - started) / calls * 1e6


def measure(cache_mode, trials, calls):
    novaenv.set_shared_cache(cache_mode=cache_mode)
    inst = novaenv.instance()
    stock = novaenv.volume_xml_path(novaenv.stock_driver(), inst,
                                    CONNECTION_INFO)
    ours = novaenv.volume_xml_path(novaenv.extension_driver(), inst,
                                   CONNECTION_INFO)
    stock_xml, ours_xml = stock().to_xml(), ours().to_xml()
    for build in (stock, ours):     # warm up both
        per_call_us(build, calls)
    times = {'stock': [], 'extension': []}
    ratios = []
    for trial in range(trials):
        order = [('stock', stock), ('extension', ours)]
        if trial % 2:
            order.reverse()
        done = {name: per_call_us(build, calls) for name, build in order}
        for name, value in done.items():
            times[name].append(value)
        ratios.append(done['extension'] / done['stock'])
    return {'stock_us': benchlib.summary(times['stock']),
            'extension_us': benchlib.summary(times['extension']),
            'ratio': benchlib.summary(ratios),
            'added_us': statistics.median(times['extension'])
            - statistics.median(times['stock']),
            'stock_xml': stock_xml, 'extension_xml': ours_xml}


def count_child(variant, calls):
    """The process callgrind counts: set up, then ``calls`` disk configs."""
    with novaenv.fake_libvirt():
        make = {'stock': novaenv.stock_driver,
                'extension': novaenv.extension_driver}[variant]
        build = novaenv.volume_xml_path(make(), novaenv.instance(),
                                        CONNECTION_INFO)
        build()
        for _ in range(calls):
            build()


def instructions(calls):
    """CPU instructions per call of each driver, counted by callgrind."""
    runs = [(variant, count) for variant in ('stock', 'extension')
            for count in (0, calls)]
    procs = {}
    for variant, count in runs:
        procs[variant, count] = subprocess.Popen(
            ['valgrind', '--tool=callgrind', '--callgrind-out-file=/dev/null',
             sys.executable, __file__, '--count-child', variant, str(count)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONHASHSEED='0'))
    totals = {}
    for name, proc in procs.items():
        _, err = proc.communicate()
        found = re.search(r'Collected : (\d+)', err)
        if proc.returncode or not found:
            raise SystemExit('callgrind run %s %s failed: %s'
                             % (name + (err[-2000:],)))
        totals[name] = int(found.group(1))
    stock = (totals['stock', calls] - totals['stock', 0]) / calls
    ours = (totals['extension', calls] - totals['extension', 0]) / calls
    return {'calls': calls, 'stock': stock, 'extension': ours,
            'ratio': ours / stock}


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--trials', type=int, default=15)
    parser.add_argument('--calls', type=int, default=2000)
    parser.add_argument('--callgrind', type=int, default=0, metavar='N',
                        help='also count instructions of N calls each')
    parser.add_argument('--count-child', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_child:
        count_child(args.count_child[0], int(args.count_child[1]))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        log_file = os.path.join(tmp, 'compute.log')
        with novaenv.fake_libvirt(log_file):
            for mode in ('none', 'directsync'):
                results[mode] = measure(mode, args.trials, args.calls)
        with open(log_file) as f:
            results['log_lines'] = sum(1 for line in f
                                       if 'Shared disk enforced' in line)
    rows = []
    for mode in ('none', 'directsync'):
        r = results[mode]
        rows.append(['cache_mode = %s' % mode,
                     benchlib.fmt(r['stock_us'], 1),
                     benchlib.fmt(r['extension_us'], 1),
                     '%+.1f' % r['added_us'],
                     benchlib.fmt(r['ratio'], 3)])
    text = benchlib.table(
        ['RBD multiattach disk', 'stock Nova (us/call)',
         'extension (us/call)', 'added (us)',
         'ratio extension/stock'], rows)
    text += ('\n\n%d trials x %d calls each; median (min-max) over trials.'
             % (args.trials, args.calls))
    if args.callgrind:
        counted = results['instructions'] = instructions(args.callgrind)
        text += ('\n\nInstructions per call (callgrind, cache_mode none, '
                 '%d calls): stock %.0f, extension %.0f, ratio %.3f.' % (
                     counted['calls'], counted['stock'],
                     counted['extension'], counted['ratio']))
    benchlib.finish(args, 'xml_path', results, text)


if __name__ == '__main__':
    main()
