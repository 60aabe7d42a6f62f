"""Added attach latency of the RBD backend's Ceph-side guard.

Run as root with the embedded stack up (``tools/stack up``), in a venv that
has nova-shared-cache and the system Ceph bindings (the tox ``integration``
env has both)::

    python benchmarks/guard_latency.py [--runs 200]

Times ``RbdBackend.on_connect`` (what the driver adds before Nova connects a
volume) on a Cinder-made multiattach image: the first call (connecting to
the cluster) and then the repeated calls on the cached connection; and the
sharing-guard check of a non-multiattach volume (watchers listed).
"""

import argparse
import statistics
import time
import uuid

from oslo_config import cfg

from nova_shared_cache.backends import rbd
from nova_shared_cache import cephclient
from nova_shared_cache import conf as sc_conf
from nova_shared_cache.embedded import ceph


def backend(cluster):
    conf = cfg.ConfigOpts()
    sc_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('ceph_conf', cluster.client_conf, 'shared_cache')
    return rbd.RbdBackend(conf, registry=cephclient.Registry())


def timed(function, runs):
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def row(name, samples):
    samples = sorted(samples)
    p90 = samples[int(len(samples) * 0.9) - 1] if len(samples) > 1 else \
        samples[0]
    return '| %s | %d | %.2f | %.2f | %.2f | %.2f |' % (
        name, len(samples), statistics.median(samples), p90, samples[0],
        samples[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--runs', type=int, default=200)
    args = parser.parse_args()
    cluster = ceph.Cluster()
    volume_id = str(uuid.uuid4())
    cluster.create_multiattach_volume(volume_id)
    shared = cluster.connection_info(volume_id, 'unused')
    plain = cluster.connection_info(volume_id, 'unused', multiattach=False)
    try:
        guard = backend(cluster)
        cold = timed(lambda: guard.on_connect(None, shared, None, shared=True,
                                              new_attachment=True), 1)
        warm = timed(lambda: guard.on_connect(None, shared, None, shared=True,
                                              new_attachment=True), args.runs)
        watchers = timed(lambda: guard.on_connect(
            None, plain, None, shared=False, new_attachment=True), args.runs)
    finally:
        cluster.remove_image('%s/volume-%s' % (ceph.POOL, volume_id))
    print('| guard call (ms) | runs | median | p90 | min | max |')
    print('| --- | --- | --- | --- | --- | --- |')
    print(row('first attach (connects)', cold))
    print(row('shared volume, cached connection', warm))
    print(row('non-multiattach, watchers checked', watchers))


if __name__ == '__main__':
    main()
