"""The guard never makes a host worse than stock Nova, on real parts.

Two real VMs share a volume through the extension (Nova's driver code on the
real libvirtd, real Ceph). The monitor is frozen (SIGSTOP) past
``ceph_timeout``: what already runs (hard reboot, stop/start) and new
attachments under ``warn`` go on; under ``enforce`` a new attachment is
refused within the bound and the domain is untouched. Then a compute with no
keyring and no ceph.conf: with a non-private libvirt secret the guard still
works; with a private one it says so and only ``enforce`` refuses. Last, the
shared Ceph connection under concurrent calls while Ceph is frozen.
"""

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import fixtures
from lxml import etree
import pytest

from nova_shared_cache import cephclient
from nova_shared_cache import exception
from nova_shared_cache_lab import ceph as embedded_ceph
from nova_shared_cache_lab import probe
from tests.integration.helpers import boot_pair
from tests.integration.helpers import shutdown

TIMEOUT = 3
#: How long past ceph_timeout the monitor stays frozen.
FROZEN = TIMEOUT + 3
SINGLE_CLIENT = {'exclusive-lock', 'object-map', 'fast-diff', 'journaling'}


@pytest.fixture
def logs():
    with fixtures.FakeLogger(level=20) as logger:
        yield logger


def _options(compute, **options):
    import nova.conf
    # The harness sets [shared_cache] ceph_conf when it makes a driver:
    # the options go on top, before the backend first reads them.
    compute.switch_driver(extension=True, cache_mode='none')
    for name, value in options.items():
        nova.conf.CONF.set_override(name, value, 'shared_cache')
    for backend in compute.driver._shared_backends:
        backend._settings = None
    cephclient.REGISTRY.close_all()     # the next check connects anew


def _clear(compute, *names):
    import nova.conf
    for name in names:
        nova.conf.CONF.clear_override(name, 'shared_cache')
    compute.switch_driver(extension=True, cache_mode='none')
    cephclient.REGISTRY.close_all()


def _signal(cluster, sig, kinds=('mon',)):
    for name, pid in cluster.daemons().items():
        if name.startswith(kinds):
            os.kill(pid, sig)


class Frozen:
    """Ceph daemons stopped now, continued after ``seconds`` (or on exit)."""

    def __init__(self, cluster, seconds, kinds=('mon',)):
        self.cluster, self.seconds, self.kinds = cluster, seconds, kinds
        self.timer = None

    def __enter__(self):
        _signal(self.cluster, signal.SIGSTOP, self.kinds)
        self.started = time.monotonic()
        self.timer = threading.Timer(self.seconds, self.thaw)
        self.timer.start()
        return self

    def thaw(self):
        _signal(self.cluster, signal.SIGCONT, self.kinds)

    def __exit__(self, *exc):
        self.timer.cancel()
        self.thaw()


def _disk(compute, instance, serial):
    xml = compute.disk_xml(instance, serial)
    assert xml is not None, 'volume %s is not attached' % serial
    return etree.fromstring(xml)


def _exclusive_lock_volume(stack):
    volume_id = str(uuid.uuid4())
    spec = '%s/volume-%s' % (embedded_ceph.POOL, volume_id)
    stack.ceph.rbd('create', '--size', '64', '--image-feature',
                   'layering,exclusive-lock,object-map,fast-diff', spec)
    return spec, stack.ceph.connection_info(volume_id, stack.secret_uuid)


def _features(stack, spec):
    return set(stack.ceph.image_info(spec)['features'])


@pytest.fixture(scope='module')
def pair(stack, compute):
    compute.switch_driver(extension=True, cache_mode='none')
    volume_id, ci = stack.new_volume()
    vms = boot_pair(compute, ci)
    yield volume_id, ci, vms
    shutdown(compute, vms)


# -- Ceph frozen: what runs goes on -----------------------------------------

def test_frozen_monitor_never_blocks_what_runs(stack, compute, pair, logs):
    volume_id, ci, vms = pair
    (vm_a, con_a, _), (vm_b, con_b, dev_b) = vms
    con_a.close()
    _options(compute, ceph_timeout=TIMEOUT, rbd_feature_policy='warn',
             sharing_guard='warn')
    try:
        # Hard reboot: Nova reconnects every volume of the instance.
        with Frozen(stack.ceph, FROZEN):
            compute.hard_reboot(vm_a)
        assert 'reconnect of an existing attachment' in logs.output
        assert compute.domain(vm_a).is_active()
        # Stop/start: power on is a hard reboot in the libvirt driver.
        with compute._no_db(vm_a):
            compute.driver.power_off(vm_a)
        cephclient.REGISTRY.close_all()
        with Frozen(stack.ceph, FROZEN):
            with compute._no_db(vm_a):
                compute.driver.power_on(
                    compute.context, vm_a, [],
                    block_device_info=compute.block_device_info(vm_a))
        # Opened at once: the guest announces itself once, when it boots.
        con_a = compute.console(vm_a)
        assert compute.domain(vm_a).is_active()
        disk = _disk(compute, vm_a, volume_id)
        assert disk.find('shareable') is not None
        assert disk.find('driver').get('cache') == 'none'
        # A second, new attachment under warn.
        volume2, ci2 = stack.new_volume()
        cephclient.REGISTRY.close_all()
        with Frozen(stack.ceph, FROZEN):
            compute.attach(vm_b, ci2, mountpoint='/dev/vdc')
        assert ('was not checked by nova-shared-cache' in logs.output
                and 'new attachment, policy warn' in logs.output)
        probe.find_disk(con_b, volume2)
        compute.detach(vm_b, ci2, mountpoint='/dev/vdc')
        # The rebooted VM and the other one still share the volume.
        con_a.wait_ready()
        dev_a = probe.find_disk(con_a, volume_id)
        vms[0] = (vm_a, con_a, dev_a)
        probe.write_blocks(con_a, dev_a, [700, 701], 'AFTERREBOOT')
        seen = probe.read_blocks(con_b, dev_b, [700, 701])
        assert len(seen) == 2 and all(
            v.startswith('AFTERREBOOT') for v in seen.values()), seen
    finally:
        _clear(compute, 'ceph_timeout', 'rbd_feature_policy',
               'sharing_guard')


def test_enforce_refuses_a_new_attach_within_the_bound(stack, compute, pair):
    _, _, vms = pair
    vm_b = vms[1][0]
    _options(compute, ceph_timeout=TIMEOUT)
    try:
        volume2, ci2 = stack.new_volume()
        before = compute.domain(vm_b).get_xml_desc()
        with Frozen(stack.ceph, 60):
            started = time.monotonic()
            with pytest.raises(exception.AttachRefused) as err:
                compute.attach(vm_b, ci2, mountpoint='/dev/vdc')
            elapsed = time.monotonic() - started
        assert elapsed < TIMEOUT + 3, elapsed
        message = str(err.value)
        assert volume2 in message
        assert 'no answer within %ds' % TIMEOUT in message
        assert 'rbd_feature_policy = enforce refuses new attachments' in (
            message)
        assert 'set it to warn' in message
        assert compute.domain(vm_b).get_xml_desc() == before
    finally:
        _clear(compute, 'ceph_timeout')


# -- no keyring on the compute ----------------------------------------------

@pytest.fixture
def no_keyring(stack, compute):
    """The guard's ceph.conf (and so every keyring) does not exist.

    nova.conf names the user and the secret as deployment tools write
    them (``[libvirt] rbd_user``, ``rbd_secret_uuid``).
    """
    import nova.conf
    nova.conf.CONF.set_override('rbd_user', embedded_ceph.CLIENT, 'libvirt')
    nova.conf.CONF.set_override('rbd_secret_uuid', stack.secret_uuid,
                                'libvirt')
    _options(compute, ceph_conf='/nonexistent/ceph.conf')
    yield
    stack.set_secret(private=True)
    for name in ('rbd_user', 'rbd_secret_uuid'):
        nova.conf.CONF.clear_override(name, 'libvirt')
    _clear(compute, 'ceph_conf', 'rbd_feature_policy')


def test_non_private_secret_is_enough(stack, compute, pair, no_keyring,
                                      logs):
    vm_b = pair[2][1][0]
    stack.set_secret(private=False)
    compute.driver._report_shared_backends()
    assert 'key of libvirt secret %s' % stack.secret_uuid in logs.output
    spec, ci = _exclusive_lock_volume(stack)
    compute.attach(vm_b, ci, mountpoint='/dev/vdc')
    try:
        assert _features(stack, spec) & SINGLE_CLIENT == set()
        assert 'Cleared single-client RBD features' in logs.output
    finally:
        compute.detach(vm_b, ci, mountpoint='/dev/vdc')
    key = stack.ceph.client_key(embedded_ceph.CLIENT)
    assert key not in logs.output


def test_private_secret_and_no_keyring(stack, compute, pair, no_keyring,
                                       logs):
    vm_b = pair[2][1][0]
    stack.set_secret(private=True)
    compute.driver._report_shared_backends()
    assert 'cannot check RBD images' in logs.output
    assert ("define libvirt secret %s with private='no'"
            % stack.secret_uuid) in logs.output
    spec, ci = _exclusive_lock_volume(stack)
    before = compute.domain(vm_b).get_xml_desc()
    with pytest.raises(exception.AttachRefused) as err:
        compute.attach(vm_b, ci, mountpoint='/dev/vdc')
    assert ci['serial'] in str(err.value)
    assert "is private (private='yes')" in str(err.value)
    assert compute.domain(vm_b).get_xml_desc() == before
    for policy in ('warn', 'off'):
        _options(compute, rbd_feature_policy=policy)
        compute.attach(vm_b, ci, mountpoint='/dev/vdc')
        compute.detach(vm_b, ci, mountpoint='/dev/vdc')
    # Nothing could clear them: the features are as they were.
    assert _features(stack, spec) >= {'exclusive-lock', 'object-map'}


# -- the shared connection under concurrent calls -----------------------------

CONCURRENT = textwrap.dedent(r'''
    import json, sys, threading, time
    from nova_shared_cache import cephclient, cephops
    conffile, user, spec, mode = sys.argv[1:5]
    pool, image = spec.split('/')
    client = cephclient.CephClient(conffile, user, int(sys.argv[5]))

    def inspect(cluster):
        with cephops.open_image(cluster, pool, image) as img:
            return sorted(w['address'] for w in
                          cephops.other_watchers(cluster, img))

    if mode == 'osd':
        client.call('warm up', inspect)    # a connection exists
    print('ready', flush=True)
    sys.stdin.readline()                   # the test freezes Ceph
    results = []

    def one(delay):
        time.sleep(delay)
        started = time.monotonic()
        try:
            client.call('inspect %s' % spec, inspect)
            outcome = 'ok'
        except cephclient.exception.CephError as err:
            outcome = 'error: %s' % err
        results.append((round(time.monotonic() - started, 2), outcome))

    threads = [threading.Thread(target=one, args=(i * 0.4,))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(results), flush=True)
    sys.stdin.readline()                   # the test thaws Ceph
    deadline = time.monotonic() + 60
    while True:
        try:
            client.call('after', inspect)
            break
        except cephclient.exception.CephError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    print('after: ok in-flight=%d' % client.calls_in_flight, flush=True)
''')


@pytest.mark.parametrize('frozen', ['osd', 'mon'])
def test_concurrent_calls_against_frozen_ceph(stack, frozen):
    """Calls in flight while a failed one retires the connection.

    ``osd``: a connection exists; six staggered calls all time out and the
    first failure retires the connection while the others still run inside
    librados: it must be shut down only after the last one (a shutdown under
    them is a use-after-free; the process would crash or hang).
    ``mon``: no connection yet; the six calls wait for one connect attempt
    each bounded by the timeout, not for one after another.
    """
    import json
    spec = stack.ceph.create_multiattach_volume(str(uuid.uuid4()))
    proc = subprocess.Popen(
        [sys.executable, '-c', CONCURRENT, stack.ceph.client_conf,
         embedded_ceph.CLIENT, spec, frozen, str(TIMEOUT)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    kinds = ('osd',) if frozen == 'osd' else ('mon',)
    try:
        assert proc.stdout.readline().strip() == 'ready'
        _signal(stack.ceph, signal.SIGSTOP, kinds)
        try:
            proc.stdin.write('go\n')
            proc.stdin.flush()
            # Bounded: with the connection shut down under calls still in
            # librados, the calls never came back (seen: > 2 minutes).
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else ''
        finally:
            _signal(stack.ceph, signal.SIGCONT, kinds)
        assert line, 'the calls did not come back within 60 s'
        proc.stdin.write('thawed\n')
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, line, err[-2000:])
    results = json.loads(line)
    assert len(results) == 6
    for elapsed, outcome in results:
        assert outcome.startswith('error:'), outcome
        assert 'ceph_timeout' in outcome, outcome
        # Each bounded by the timeout (plus librados' tick), whatever the
        # others do.
        assert elapsed < TIMEOUT * 2 + 4, results
    assert 'after: ok in-flight=0' in out
