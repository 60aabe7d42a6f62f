"""The RBD backend's Ceph-side guard against the real embedded cluster.

The backend runs exactly as in nova-compute (real ``rados``/``rbd``
bindings, the compute's ceph.conf with client.cinder's keyring only); each
test gets its own connection registry so connection reuse and failures do
not leak between tests.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import fixtures
from oslo_config import cfg
import pytest

from nova_shared_cache.backends import rbd as rbd_backend
from nova_shared_cache import cephclient
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache_lab import ceph as embedded_ceph
from nova_shared_cache_lab import probe

POOL = embedded_ceph.POOL
SINGLE_CLIENT = {'exclusive-lock', 'object-map', 'fast-diff', 'journaling'}


class Instance:
    uuid = '7d5b0b8e-3f0e-4a53-9d1b-1b1d7c2f0a11'


@pytest.fixture
def cluster(stack):
    return stack.ceph


@pytest.fixture
def logs():
    with fixtures.FakeLogger(level=10) as logger:
        yield logger


def make_backend(cluster, **options):
    conf = cfg.ConfigOpts()
    sc_conf.register_opts(conf)
    conf([], project='nova-shared-cache-tests', default_config_files=[])
    conf.set_override('ceph_conf', cluster.client_conf, 'shared_cache')
    for name, value in options.items():
        conf.set_override(name, value, 'shared_cache')
    # Its own registry: connections do not leak between tests.
    return rbd_backend.RbdBackend(conf, registry=cephclient.Registry())


def new_image(cluster, features=None, multiattach=True):
    """An image with Ceph's default features, or Cinder's multiattach set."""
    volume_id = str(uuid.uuid4())
    if features is None and multiattach:
        spec = cluster.create_multiattach_volume(volume_id)
    else:
        spec = '%s/volume-%s' % (POOL, volume_id)
        args = ['create', '--size', '64', spec]
        if features:
            args += ['--image-feature', ','.join(features)]
        cluster.rbd(*args)
    info = cluster.connection_info(volume_id, 'unused-secret-uuid',
                                   multiattach=multiattach)
    return spec, info


def features(cluster, spec):
    return set(cluster.image_info(spec)['features'])


def connect(backend, info, shared=True, new_attachment=True):
    backend.on_connect(None, info, Instance(), shared=shared,
                       new_attachment=new_attachment)


# -- single-client features of a shared volume -----------------------------

def test_cinder_made_multiattach_image_passes_untouched(cluster, logs):
    spec, info = new_image(cluster)
    before = features(cluster, spec)
    assert not before & SINGLE_CLIENT
    connect(make_backend(cluster), info)
    assert features(cluster, spec) == before
    assert 'Cleared' not in logs.output


@pytest.mark.parametrize('policy', ['enforce', 'refuse', 'warn'])
def test_exclusive_lock_image_under_each_policy(cluster, logs, policy):
    spec, info = new_image(cluster, features=[
        'layering', 'exclusive-lock', 'object-map', 'fast-diff'])
    backend = make_backend(cluster, rbd_feature_policy=policy)
    if policy == 'refuse':
        with pytest.raises(exception.AttachRefused) as err:
            connect(backend, info)
        message = str(err.value)
        assert spec in message and info['serial'] in message
        assert 'exclusive-lock, object-map, fast-diff' in message
        assert features(cluster, spec) >= {'exclusive-lock', 'object-map'}
        return
    connect(backend, info)
    left = features(cluster, spec) & SINGLE_CLIENT
    if policy == 'enforce':
        assert left == set()
        assert ('Cleared single-client RBD features exclusive-lock, '
                'object-map, fast-diff of image %s' % spec) in logs.output
    else:
        assert left == {'exclusive-lock', 'object-map', 'fast-diff'}
        assert 'has single-client RBD features' in logs.output


RACER = r'''
import json, sys
from oslo_config import cfg
from nova_shared_cache.backends import rbd
from nova_shared_cache import cephclient
from nova_shared_cache import conf as sc_conf
conf = cfg.ConfigOpts()
sc_conf.register_opts(conf)
conf([], default_config_files=[])
conf.set_override('ceph_conf', sys.argv[1], 'shared_cache')
info = json.loads(sys.argv[2])
backend = rbd.RbdBackend(conf, registry=cephclient.Registry())
backend.client(info).call('connect', lambda cluster: None)
print('ready', flush=True)
sys.stdin.readline()
backend.on_connect(None, info, None, shared=True, new_attachment=True)
print('attached', flush=True)
'''


def test_two_computes_race_to_clear_features(cluster):
    spec, info = new_image(cluster, features=[
        'layering', 'exclusive-lock', 'object-map', 'fast-diff',
        'journaling'])
    # Two computes are two processes, each with its own connection.
    computes = [subprocess.Popen(
        [sys.executable, '-c', RACER, cluster.client_conf, json.dumps(info)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in computes:
        assert proc.stdout.readline().strip() == 'ready'
    for proc in computes:       # go, as close together as possible
        proc.stdin.write('\n')
        proc.stdin.flush()
    results = [proc.communicate(timeout=60) for proc in computes]
    for proc, (out, err) in zip(computes, results):
        assert proc.returncode == 0, err
        assert out.strip() == 'attached'
    assert features(cluster, spec) & SINGLE_CLIENT == set()


def test_read_only_user_under_enforce_names_the_cap(cluster):
    cluster.add_user('guardro', 'profile rbd-read-only pool=%s' % POOL)
    cluster.write_client_conf(users=(embedded_ceph.CLIENT, 'guardro'))
    spec, info = new_image(cluster, features=['layering', 'exclusive-lock'])
    backend = make_backend(cluster, ceph_user='guardro')
    with pytest.raises(exception.AttachRefused) as err:
        connect(backend, info)
    assert 'client.guardro may not change' in str(err.value)
    assert "'osd profile rbd pool=%s'" % POOL in str(err.value)
    assert 'exclusive-lock' in features(cluster, spec)


# -- another client on a volume that is not multiattach --------------------

HOLDER = r'''
import sys, rados, rbd
cluster = rados.Rados(conffile=sys.argv[1], rados_id=sys.argv[2])
cluster.connect()
ioctx = cluster.open_ioctx(sys.argv[3])
if sys.argv[5]:
    ioctx.set_namespace(sys.argv[5])
image = rbd.Image(ioctx, sys.argv[4], read_only=sys.argv[6] == 'ro')
print(cluster.get_instance_id(), flush=True)
sys.stdin.read()
image.close(); ioctx.close(); cluster.shutdown()
'''


@pytest.fixture
def holder(cluster):
    """Open an image in another process (another librbd client)."""
    procs = []

    def hold(spec, user=embedded_ceph.CLIENT, read_only=False):
        pool, *namespace, image = spec.split('/')
        proc = subprocess.Popen(
            ['/usr/bin/python3', '-c', HOLDER, cluster.client_conf,
             user, pool, image, ''.join(namespace),
             'ro' if read_only else 'rw'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc.stdout.readline().strip()

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(30)


@pytest.mark.parametrize('guard', ['refuse', 'warn', 'off'])
def test_image_open_elsewhere_under_each_guard(cluster, holder, logs, guard):
    spec, info = new_image(cluster, multiattach=False)
    other = holder(spec)
    backend = make_backend(cluster, sharing_guard=guard)
    if guard == 'refuse':
        with pytest.raises(exception.AttachRefused) as err:
            connect(backend, info, shared=False)
        assert 'client.%s at ' % other in str(err.value)
        assert spec in str(err.value)
        return
    connect(backend, info, shared=False)
    if guard == 'warn':
        assert 'already open by client.%s' % other in logs.output
    else:
        assert 'already open' not in logs.output


def test_service_watchers_named_through_the_monitors(cluster, holder, logs):
    mirror = 'rbd-mirror.nsc'
    cluster.add_user(mirror, 'profile rbd pool=%s' % POOL)
    cluster.ceph('auth', 'get-or-create', 'client.guardsvc', 'mon',
                 'profile rbd, allow command sessions, '
                 'allow command "mgr dump"',
                 'osd', 'profile rbd pool=%s' % POOL)
    cluster.write_client_conf(users=(embedded_ceph.CLIENT, mirror,
                                     'guardsvc'))
    spec, info = new_image(cluster, multiattach=False)
    # A read-only open (rbd export-diff, a backup reader) holds no watch.
    holder(spec, read_only=True)
    connect(make_backend(cluster), info, shared=False)
    mirror_id = holder(spec, user=mirror)
    # client.cinder ('profile rbd') may not ask the monitors who that is:
    # it is counted, and the message says which caps would name it.
    with pytest.raises(exception.AttachRefused) as err:
        connect(make_backend(cluster), info, shared=False)
    assert 'client.%s at ' % mirror_id in str(err.value)
    assert "'sessions' on mon.a: access denied" in str(err.value)
    assert 'allow command sessions' in str(err.value)
    # A checking user with those caps names it, and the default
    # ignored_watchers lets it pass.
    connect(make_backend(cluster, ceph_user='guardsvc'), info, shared=False)
    assert 'not counting client.%s' % mirror_id in logs.output
    assert '(client.%s, [shared_cache] ignored_watchers)' % mirror \
        in logs.output
    # Any other client is still counted, now by name.
    other = holder(spec)
    with pytest.raises(exception.AttachRefused) as err:
        connect(make_backend(cluster, ceph_user='guardsvc'), info,
                shared=False)
    assert 'client.%s at ' % other in str(err.value)
    assert '(client.%s)' % embedded_ceph.CLIENT in str(err.value)
    assert 'client.%s at ' % mirror_id not in str(err.value)


def test_unshared_image_nobody_has_open_passes(cluster):
    spec, info = new_image(cluster, multiattach=False)
    connect(make_backend(cluster), info, shared=False)


def test_reconnect_of_an_attachment_ignores_other_clients(cluster, holder):
    spec, info = new_image(cluster, multiattach=False)
    holder(spec)
    connect(make_backend(cluster), info, shared=False, new_attachment=False)


# -- RBD namespaces -----------------------------------------------------------

def namespaced_image(cluster, namespace, features, volume_id=None):
    """pool/namespace/volume-ID, and its connection_info."""
    volume_id = volume_id or str(uuid.uuid4())
    spec = '%s/%s/volume-%s' % (POOL, namespace, volume_id)
    cluster.rbd('create', '--size', '64', '--image-feature',
                ','.join(features), spec)
    info = cluster.connection_info(volume_id, 'unused-secret-uuid')
    info['data']['name'] = spec
    return spec, info


def test_images_in_an_rbd_namespace(cluster, holder, logs, nova_conf):
    namespace = 'tenant-%s' % uuid.uuid4().hex[:8]
    cluster.rbd('namespace', 'create', '--pool', POOL, '--namespace',
                namespace)
    single = ['layering', 'exclusive-lock', 'object-map', 'fast-diff']
    spec, info = namespaced_image(cluster, namespace, single)
    # The same image name in the pool's default namespace: another image.
    twin = '%s/%s' % (POOL, spec.split('/')[-1])
    cluster.rbd('create', '--size', '64', '--image-feature',
                ','.join(single), twin)
    connect(make_backend(cluster), info)
    assert features(cluster, spec) & SINGLE_CLIENT == set()
    assert features(cluster, twin) >= {'exclusive-lock', 'object-map'}
    assert ('Cleared single-client RBD features exclusive-lock, '
            'object-map, fast-diff of image %s' % spec) in logs.output
    # The sharing guard sees the clients of the namespaced image.
    spec2, info2 = namespaced_image(cluster, namespace, ['layering'])
    info2['multiattach'] = False
    other = holder(spec2)
    with pytest.raises(exception.AttachRefused) as err:
        connect(make_backend(cluster), info2, shared=False)
    assert 'already open by client.%s at ' % other in str(err.value)
    # And so does the operator's status, as the user nova.conf names.
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'nova-shared-cache'),
         '--config-file', nova_conf, 'status', spec2, '--json'],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads(proc.stdout)
    assert status['image'] == spec2
    assert ['client.%s' % other] == [w['client'] for w in status['watchers']]
    assert status['ceph_user'] == {'user': embedded_ceph.CLIENT,
                                   'from': '[libvirt] rbd_user'}


def test_header_features_are_librbds(cluster):
    """The guard's two-read path gives the bits librbd gives, everywhere."""
    from nova_shared_cache import cephops
    namespace = 'hdr-%s' % uuid.uuid4().hex[:8]
    cluster.rbd('namespace', 'create', '--pool', POOL, '--namespace',
                namespace)
    sets = (['layering'], ['layering', 'exclusive-lock'],
            ['layering', 'exclusive-lock', 'object-map', 'fast-diff',
             'deep-flatten'],
            ['layering', 'exclusive-lock', 'journaling'])
    specs = [new_image(cluster, features=f, multiattach=False)[0]
             for f in sets]
    specs += [namespaced_image(cluster, namespace, f)[0] for f in sets[1:3]]
    specs.append(new_image(cluster)[0])     # as Cinder makes a multiattach
    parent = specs[2]
    cluster.rbd('snap', 'create', parent + '@base')
    cluster.rbd('snap', 'protect', parent + '@base')
    clone = '%s/clone-%s' % (POOL, uuid.uuid4().hex[:8])
    cluster.rbd('clone', parent + '@base', clone)
    specs.append(clone)
    info = new_image(cluster)[1]
    client = make_backend(cluster).client(info)

    def both(ceph, ref):
        with cephops.open_image(ceph, ref.pool, ref.image,
                                namespace=ref.namespace) as image:
            return cephops.header_features(ceph, ref), image.features()

    for spec in specs:
        ref = cephops.parse_image_spec(spec)
        fast, librbd = client.call('features of %s' % spec,
                                   lambda ceph: both(ceph, ref))
        assert fast == librbd, (spec, fast, librbd)
    # No such image: None (the guard then opens it, and librbd says why).
    ref = cephops.parse_image_spec('%s/volume-%s' % (POOL, uuid.uuid4()))
    assert client.call('features', lambda ceph: cephops.header_features(
        ceph, ref)) is None


# -- several Ceph clusters ---------------------------------------------------

@pytest.fixture(scope='module')
def second_cluster(stack):
    """Another embedded cluster on its own port: cluster 'backup'.

    The compute knows it as Ceph's tools would: backup.conf and
    backup.client.cinder.keyring next to the first cluster's ceph.conf.
    """
    other = embedded_ceph.Cluster(root=os.path.join(stack.root, 'second'),
                                  port=stack.ceph.port + 10)
    other.up(store_bytes=512 << 20)
    directory = os.path.dirname(stack.ceph.client_conf)
    keyring = os.path.join(directory, 'backup.client.%s.keyring'
                           % embedded_ceph.CLIENT)
    other.ceph('auth', 'get', 'client.%s' % embedded_ceph.CLIENT,
               '-o', keyring)
    os.chmod(keyring, 0o600)
    conf = os.path.join(directory, 'backup.conf')
    with open(conf, 'w') as f:
        f.write('[global]\nmon host = v2:127.0.0.1:%d\n'
                'keyring = %s/$cluster.$name.keyring\n'
                % (other.port, directory))
    yield other
    for path in (conf, keyring):
        os.unlink(path)
    other.down()


def test_volumes_of_two_clusters_each_checked_in_their_own(
        cluster, second_cluster, logs):
    single = ['layering', 'exclusive-lock', 'object-map', 'fast-diff']
    backend = make_backend(cluster)
    specs = {}
    for name, where in (('backup', second_cluster), ('ceph', cluster)):
        volume_id = str(uuid.uuid4())
        spec = '%s/volume-%s' % (POOL, volume_id)
        where.rbd('create', '--size', '64', '--image-feature',
                  ','.join(single), spec)
        info = where.connection_info(volume_id, 'unused-secret-uuid')
        info['data']['cluster_name'] = name
        specs[name] = (where, spec)
        # One backend, one ceph_conf (the first cluster's): the volume's
        # cluster_name picks backup.conf and backup.client.cinder.keyring.
        connect(backend, info)
    for name, (where, spec) in specs.items():
        assert features(where, spec) & SINGLE_CLIENT == set(), name
    # Each cluster has its own image of that name: nothing crossed over.
    assert second_cluster.rbd('info', specs['ceph'][1],
                              check=False).returncode != 0
    assert 'not checked' not in logs.output


# -- Ceph unreachable ---------------------------------------------------------

def _signal_daemons(cluster, sig, kinds=('mon', 'osd')):
    for name, pid in cluster.daemons().items():
        if name.startswith(kinds):
            os.kill(pid, sig)


def test_monitor_stopped_fails_a_new_connection_within_ceph_timeout(
        cluster):
    spec, info = new_image(cluster)
    cached = make_backend(cluster, ceph_timeout=3)
    connect(cached, info)
    _signal_daemons(cluster, signal.SIGSTOP, kinds=('mon',))
    try:
        # A compute that has to connect now cannot: bounded, clear error.
        started = time.monotonic()
        with pytest.raises(exception.AttachRefused) as err:
            connect(make_backend(cluster, ceph_timeout=3), info)
        elapsed = time.monotonic() - started
        # One already connected reads the image from the OSDs, which are
        # up: it may go on, but never past the bound.
        started = time.monotonic()
        try:
            connect(cached, info)
        except exception.AttachRefused:
            pass
        elapsed_cached = time.monotonic() - started
    finally:
        _signal_daemons(cluster, signal.SIGCONT, kinds=('mon',))
    assert elapsed < 3 + 5, elapsed
    assert elapsed_cached < 3 + 5, elapsed_cached
    assert 'no answer within 3s' in str(err.value)


def test_cluster_unreachable_fails_within_ceph_timeout(cluster):
    spec, info = new_image(cluster)
    backend = make_backend(cluster, ceph_timeout=3)
    connect(backend, info)      # a connection exists and is reused
    # SIGSTOP: the daemons keep their sockets but never answer, like a
    # cluster behind a dead network.
    _signal_daemons(cluster, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(exception.AttachRefused) as err:
            connect(backend, info)
        elapsed = time.monotonic() - started
        fresh = make_backend(cluster, ceph_timeout=3)
        started = time.monotonic()
        with pytest.raises(exception.AttachRefused) as err_fresh:
            connect(fresh, info)
        elapsed_fresh = time.monotonic() - started
    finally:
        _signal_daemons(cluster, signal.SIGCONT)
    assert elapsed < 3 + 5, elapsed
    assert elapsed_fresh < 3 + 5, elapsed_fresh
    assert 'ceph_timeout' in str(err.value)
    assert 'ceph_timeout' in str(err_fresh.value)
    # Back up: the next attach connects again and passes.
    deadline = time.monotonic() + 60
    while True:
        try:
            connect(backend, info)
            break
        except exception.AttachRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# -- secrets ---------------------------------------------------------------

def test_no_key_in_logs_errors_or_files(cluster, logs, holder):
    keys = [cluster.client_key(embedded_ceph.CLIENT)]
    spec, info = new_image(cluster, features=['layering', 'exclusive-lock'])
    connect(make_backend(cluster), info)
    spec2, info2 = new_image(cluster, multiattach=False)
    holder(spec2)
    with pytest.raises(exception.AttachRefused) as err:
        connect(make_backend(cluster), info2, shared=False)
    for key in keys:
        assert key not in logs.output
        assert key not in str(err.value)
    # No temporary file with a key was left behind by the guard.
    leftovers = [name for name in os.listdir('/tmp')
                 if name.startswith(('nsc-key-', 'tmp'))
                 and _file_contains(os.path.join('/tmp', name), keys)]
    assert leftovers == []


def _file_contains(path, needles):
    try:
        with open(path, errors='replace') as f:
            text = f.read(1 << 16)
    except OSError:
        return False
    return any(n in text for n in needles)


def test_guard_uses_the_system_ceph_bindings():
    # The bindings the guard uses are the system's, linked into the venv.
    out = subprocess.run([sys.executable, '-c',
                          'import os, rbd, json; '
                          'print(json.dumps(os.path.realpath(rbd.__file__)))'],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout).startswith('/usr/lib/python3/')


# -- through Nova's attach path, on a running VM -----------------------------

@pytest.fixture
def vm(stack, compute):
    compute.switch_driver(extension=True, cache_mode='none')
    instance = compute.boot(compute.new_instance())
    console = compute.console(instance)
    console.wait_ready()
    yield instance, console
    console.close()
    compute.destroy(instance)


def _exclusive_lock_volume(stack):
    volume_id = str(uuid.uuid4())
    spec = '%s/volume-%s' % (POOL, volume_id)
    stack.ceph.rbd('create', '--size', '64', '--image-feature',
                   'layering,exclusive-lock,object-map,fast-diff', spec)
    return spec, stack.ceph.connection_info(volume_id, stack.secret_uuid)


def test_nova_attach_clears_features_then_the_guest_sees_the_disk(
        stack, compute, vm):
    instance, console = vm
    spec, ci = _exclusive_lock_volume(stack)
    compute.attach(instance, ci)
    assert features(stack.ceph, spec) & SINGLE_CLIENT == set()
    probe.find_disk(console, ci['serial'])
    compute.detach(instance, ci)


def test_nova_attach_refused_leaves_the_domain_untouched(stack, compute, vm):
    import nova.conf
    instance, _ = vm
    spec, ci = _exclusive_lock_volume(stack)
    nova.conf.CONF.set_override('rbd_feature_policy', 'refuse',
                                'shared_cache')
    try:
        compute.switch_driver(extension=True, cache_mode='none')
        before = compute.domain(instance).get_xml_desc()
        with pytest.raises(exception.AttachRefused) as err:
            compute.attach(instance, ci)
        assert spec in str(err.value)
        assert compute.domain(instance).get_xml_desc() == before
        assert compute.disk_xml(instance, ci['serial']) is None
        assert 'exclusive-lock' in features(stack.ceph, spec)
    finally:
        nova.conf.CONF.clear_override('rbd_feature_policy', 'shared_cache')
        compute.switch_driver(extension=True, cache_mode='none')
