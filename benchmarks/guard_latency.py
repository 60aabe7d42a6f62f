"""Time the Ceph-side guard adds to an attach, on the real cluster.

Times the driver's connect step of an attach (``_connect_volume``, where
the guard runs before Nova connects the volume) with stock Nova's
``LibvirtDriver`` and with ``LibvirtSharedCacheDriver``, on the same
Cinder-made volume of the embedded cluster, under Nova's fake libvirt (the
connect step of an RBD volume does not call libvirt). The extension runs
two checks:

- a multiattach volume: its features read from the image's header object
  (the single-client feature check; two requests, the image not opened);
- a volume that is not multiattach, newly attached: the image opened
  read-only and its watchers listed (``sharing_guard``).

Both use the process's cached Ceph connection; the three variants
alternate trial by trial and the added time is the difference of the
medians. The first attach of a process also connects to the cluster: the
cold figure repeats that with a fresh connection each time. Run as root
with the embedded stack up (``tools/stack up``), in a venv with
nova-shared-cache and the system Ceph bindings (the tox ``bench`` env)::

    python benchmarks/guard_latency.py [--trials 15] [--calls 40] [--cold 10]
"""

import statistics
import time
import uuid

import benchlib
from nova_shared_cache_lab import ceph
import novaenv


def per_call_ms(function, calls):
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1000


#: Added to an attach's connect step with a cached connection (ms).
TARGET_MS = 5.0


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--trials', type=int, default=15)
    parser.add_argument('--calls', type=int, default=40)
    parser.add_argument('--cold', type=int, default=10)
    args = parser.parse_args()
    cluster = ceph.Cluster()
    if not cluster.is_up():
        raise SystemExit('the embedded Ceph is not up: tools/stack up')
    volume_id = str(uuid.uuid4())
    spec = cluster.create_multiattach_volume(volume_id)
    shared = cluster.connection_info(volume_id, 'unused')
    plain = cluster.connection_info(volume_id, 'unused', multiattach=False)
    try:
        with novaenv.fake_libvirt(ceph_conf=cluster.client_conf):
            inst = novaenv.instance()
            stock = novaenv.stock_driver()
            ours = novaenv.extension_driver()
            guard = ours._shared_backends[0]
            variants = {
                'stock': novaenv.connect_path(stock, inst, shared),
                'multiattach': novaenv.connect_path(ours, inst, shared),
                'not multiattach': novaenv.connect_path(ours, inst, plain),
            }
            cold = []
            for _ in range(args.cold):
                guard._registry.close_all()
                cold.append(per_call_ms(variants['multiattach'], 1))
            for function in variants.values():     # warm up
                per_call_ms(function, args.calls)
            times = {name: [] for name in variants}
            names = list(variants)
            for trial in range(args.trials):
                for name in names[trial % 3:] + names[:trial % 3]:
                    times[name].append(per_call_ms(variants[name],
                                                   args.calls))
            guard._registry.close_all()
    finally:
        cluster.remove_image(spec)
    base = statistics.median(times['stock'])
    results = {name: benchlib.summary(values)
               for name, values in times.items()}
    results['cold'] = benchlib.summary(cold)
    for name in ('multiattach', 'not multiattach'):
        results[name]['added_ms'] = results[name]['median'] - base
        # The time added in each trial (the variants share the trial),
        # its median with an interval, against the target.
        results[name]['added'] = benchlib.ratio_summary(
            [ours - stock for ours, stock in zip(times[name],
                                                 times['stock'])], TARGET_MS)
    results['cold']['added_ms'] = results['cold']['median'] - base
    rows = [['stock Nova (no check)', benchlib.fmt(results['stock']), '-',
             '-']]
    rows += [['extension, %s volume, cached connection' % name,
              benchlib.fmt(results[name]),
              benchlib.fmt_ci(results[name]['added'], 2),
              results[name]['added']['verdict']]
             for name in ('multiattach', 'not multiattach')]
    rows.append(['extension, first attach (connects to Ceph)',
                 benchlib.fmt(results['cold']),
                 '%+.2f' % results['cold']['added_ms'], '-'])
    text = benchlib.table(['connect step of an attach', 'ms per attach',
                           'added (ms) [95% CI]',
                           'verdict (< %g ms)' % TARGET_MS], rows)
    text += ('\n\n%d trials x %d attaches for the cached rows, %d cold '
             'connections; median (min-max); added: median of the per-trial '
             'differences [bootstrap 95%% interval].'
             % (args.trials, args.calls, args.cold))
    benchlib.finish(args, 'guard_latency', results, text)


if __name__ == '__main__':
    main()
