"""Cost of the extension on the disk-XML path, against stock Nova.

Times ``_get_volume_config`` followed by ``_set_cache_mode`` (what every
attach, boot and migration does for each volume disk) for one RBD volume,
with ``LibvirtSharedCacheDriver`` and with Nova's own ``LibvirtDriver``, on
identical inputs, in one process, under Nova's fake libvirt. The two
drivers alternate round by round (in ABBA order) so that drift of the
machine hits both; the figure is the ratio extension / stock per pair of
rounds, its median with a bootstrap 95 % interval, and a verdict against
the target.

Three cases: a multiattach volume with ``cache_mode = none`` (the default:
Nova already made the disk shareable with cache none, the policy checks
and changes nothing; target 1.05), the same with ``directsync`` (the
policy changes the cache and logs one INFO line per disk, into a log file
as nova-compute would; no target), and a volume that is not multiattach
(the extension must not touch it; target 1.01).

Wall-clock time of a pure-Python path this short moves with the machine;
``--callgrind N`` also counts the CPU instructions of N calls of each
driver under valgrind's callgrind (minus the same process making no
call), which is the same from run to run::

    python benchmarks/xml_path.py [--rounds 200] [--calls 500] \\
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
SHARED = {
    'driver_volume_type': 'rbd', 'serial': VOLUME_ID, 'multiattach': True,
    'data': {'name': 'volumes/volume-%s' % VOLUME_ID,
             'hosts': ['127.0.0.1'], 'ports': ['3300'],
             'cluster_name': 'ceph', 'auth_enabled': True,
             'auth_username': 'cinder', 'secret_type': 'ceph',
             'secret_uuid': '5b6a4c1e-0d7e-4f7e-8c1d-2a9b3c4d5e6f',
             'volume_id': VOLUME_ID, 'discard': True},
}
NOT_SHARED = dict(SHARED, multiattach=False)

#: name: (cache_mode, connection_info, target ratio or None)
CASES = {
    'shared, cache_mode none': ('none', SHARED, 1.05),
    'shared, cache_mode directsync': ('directsync', SHARED, None),
    'not multiattach': ('none', NOT_SHARED, 1.01),
}
#: The cases callgrind counts.
COUNTED = ('shared, cache_mode none', 'not multiattach')


def settle():
    """Move everything made so far out of the garbage collector's view.

    A full collection scans Nova's whole heap; whether one falls into the
    measured calls or not would move a count by tens of thousands of
    instructions per call. Frozen, the heap made before is not scanned and
    the collections that remain are those the calls' own garbage causes.
    """
    gc.collect()
    gc.freeze()


def per_call_us(build, calls):
    gc.collect()
    started = time.perf_counter()
    for _ in range(calls):
        build()
    return (time.perf_counter() - started) / calls * 1e6


def measure(case, rounds, calls):
    cache_mode, connection_info, target = CASES[case]
    novaenv.set_shared_cache(cache_mode=cache_mode)
    inst = novaenv.instance()
    stock = novaenv.volume_xml_path(novaenv.stock_driver(), inst,
                                    connection_info)
    ours = novaenv.volume_xml_path(novaenv.extension_driver(), inst,
                                   connection_info)
    stock_xml, ours_xml = stock().to_xml(), ours().to_xml()
    for build in (stock, ours):     # warm up both
        per_call_us(build, calls)
    settle()
    times = {'stock': [], 'extension': []}
    ratios = []
    for n in range(rounds):
        # ABBA: each driver goes first in half of the rounds.
        order = [('stock', stock), ('extension', ours)]
        if n % 2:
            order.reverse()
        done = {name: per_call_us(build, calls) for name, build in order}
        for name, value in done.items():
            times[name].append(value)
        ratios.append(done['extension'] / done['stock'])
    return {'stock_us': benchlib.summary(times['stock']),
            'extension_us': benchlib.summary(times['extension']),
            'ratio': benchlib.ratio_summary(ratios, target),
            'added_us': statistics.median(times['extension'])
            - statistics.median(times['stock']),
            'stock_xml': stock_xml, 'extension_xml': ours_xml}


def count_child(variant, case, calls):
    """The process callgrind counts: set up, then ``calls`` disk configs."""
    cache_mode, connection_info, _ = CASES[case]
    with novaenv.fake_libvirt(cache_mode=cache_mode):
        make = {'stock': novaenv.stock_driver,
                'extension': novaenv.extension_driver}[variant]
        build = novaenv.volume_xml_path(make(), novaenv.instance(),
                                        connection_info)
        build()
        settle()
        for _ in range(calls):
            build()


def count_once(case, calls, seed):
    """(stock, extension) instructions per call in one set of processes."""
    runs = [(variant, count) for variant in ('stock', 'extension')
            for count in (0, calls)]
    procs = {}
    for variant, count in runs:
        procs[variant, count] = subprocess.Popen(
            ['valgrind', '--tool=callgrind', '--callgrind-out-file=/dev/null',
             sys.executable, __file__, '--count-child', variant, case,
             str(count)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONHASHSEED=str(seed)))
    totals = {}
    for name, proc in procs.items():
        _, err = proc.communicate()
        found = re.search(r'Collected : (\d+)', err)
        if proc.returncode or not found:
            raise SystemExit('callgrind run %s %s failed: %s'
                             % (name + (err[-2000:],)))
        totals[name] = int(found.group(1))
    return ((totals['stock', calls] - totals['stock', 0]) / calls,
            (totals['extension', calls] - totals['extension', 0]) / calls)


def instructions(case, calls, repeats=1):
    """CPU instructions per call of each driver, counted by callgrind.

    The count of the same calls moves from one set of processes to the
    next (random ids hashed into dicts, memory layout): ``repeats`` sets,
    each with its own hash seed, give the median and an interval of the
    per-set ratios.
    """
    counted = [count_once(case, calls, seed) for seed in range(repeats)]
    stock = statistics.median(c[0] for c in counted)
    ours = statistics.median(c[1] for c in counted)
    target = CASES[case][2]
    result = {'calls': calls, 'repeats': repeats, 'stock': stock,
              'extension': ours, 'ratio': ours / stock, 'target': target,
              'added_per_set': [c[1] - c[0] for c in counted]}
    if repeats > 1:
        result['ratios'] = benchlib.ratio_summary(
            [c[1] / c[0] for c in counted], target)
        result['ratio'] = result['ratios']['median']
        if target is not None:
            result['verdict'] = result['ratios']['verdict']
    elif target is not None:
        result['verdict'] = 'met' if ours / stock <= target else 'missed'
    return result


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=200,
                        help='rounds of each driver per case (default 200)')
    parser.add_argument('--calls', type=int, default=500,
                        help='disk configs per round (default 500)')
    parser.add_argument('--callgrind', type=int, default=0, metavar='N',
                        help='also count instructions of N calls each')
    parser.add_argument('--callgrind-repeats', type=int, default=1,
                        metavar='K', help='count K times, each in new '
                        'processes with its own hash seed (default 1)')
    parser.add_argument('--count-child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_child:
        count_child(args.count_child[0], args.count_child[1],
                    int(args.count_child[2]))
        return
    results = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        log_file = os.path.join(tmp, 'compute.log')
        with novaenv.fake_libvirt(log_file):
            for case in CASES:
                results[case] = measure(case, args.rounds, args.calls)
        with open(log_file) as f:
            results['log_lines'] = sum(1 for line in f
                                       if 'Shared disk enforced' in line)
    results['seconds'] = time.monotonic() - started
    rows = []
    for case in CASES:
        r = results[case]
        rows.append([case,
                     benchlib.fmt(r['stock_us'], 1),
                     benchlib.fmt(r['extension_us'], 1),
                     '%+.1f' % r['added_us'],
                     benchlib.fmt_ci(r['ratio']),
                     '%.2f' % r['ratio']['target']
                     if 'target' in r['ratio'] else '-',
                     r['ratio'].get('verdict', '-')])
    text = benchlib.table(
        ['RBD volume disk', 'stock Nova (us/call)', 'extension (us/call)',
         'added (us)', 'ratio extension/stock [95% CI]', 'target',
         'verdict'], rows)
    text += ('\n\n%d rounds x %d calls per driver and case (ABBA order), '
             '%.0f s; times: median (min-max) over rounds; ratio: median of '
             'the per-round ratios [bootstrap %d%% interval].'
             % (args.rounds, args.calls, results['seconds'],
                benchlib.CONFIDENCE * 100))
    if args.callgrind:
        results['instructions'] = {}
        rows = []
        for case in COUNTED:
            counted = results['instructions'][case] = instructions(
                case, args.callgrind, args.callgrind_repeats)
            rows.append([case, '%.0f' % counted['stock'],
                         '%.0f' % counted['extension'],
                         '%+.0f' % (counted['extension'] - counted['stock']),
                         benchlib.fmt_ci(counted['ratios'], 4)
                         if 'ratios' in counted
                         else '%.4f' % counted['ratio'],
                         '%.2f' % counted['target'], counted['verdict']])
        text += '\n\n' + benchlib.table(
            ['instructions per call (callgrind, %d calls%s)' % (
                args.callgrind, ', median of %d sets of processes'
                % args.callgrind_repeats if args.callgrind_repeats > 1
                else ''),
             'stock Nova', 'extension', 'added', 'ratio', 'target',
             'verdict'], rows)
    benchlib.finish(args, 'xml_path', results, text)


if __name__ == '__main__':
    main()
