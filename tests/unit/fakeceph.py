"""Stand-ins for the ``rados`` and ``rbd`` bindings, for unit tests only.

They keep the shape of the real bindings the guard uses (class names,
exceptions, feature bits, ``watchers_list`` dicts) over a tiny in-memory
cluster. The real bindings are exercised by tests/integration against a
real cluster.
"""

import itertools
import json
import os
import struct
import types

import fixtures

from nova_shared_cache import cephclient

LAYERING = 1
EXCLUSIVE_LOCK = 4
OBJECT_MAP = 8
FAST_DIFF = 16
DEEP_FLATTEN = 32
JOURNALING = 64
#: What Cinder leaves on a volume of a multiattach type.
CINDER_MULTIATTACH = LAYERING | DEEP_FLATTEN
#: Ceph's default for a new image.
DEFAULT_FEATURES = (LAYERING | EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF
                    | DEEP_FLATTEN)


def _errors(prefix):
    base = type('Error', (Exception,), {'__module__': prefix})
    names = ('TimedOut', 'ObjectNotFound', 'PermissionError', 'Timeout',
             'ImageNotFound', 'InvalidArgument', 'ReadOnlyImage')
    return base, {n: type(n, (base,), {'__module__': prefix}) for n in names}


def _conf_value(conffile, name, option):
    """``option`` for entity ``name`` in a ceph.conf, or None."""
    if not conffile:
        return None
    try:
        with open(conffile) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found, section = {}, None
    for line in lines:
        line = line.strip()
        if line.startswith('['):
            section = line.strip('[]')
        elif '=' in line:
            key, value = (p.strip() for p in line.split('=', 1))
            found[(section, key.replace(' ', '_'))] = value
    for section in (name, 'client', 'global'):
        if (section, option) in found:
            return found[(section, option)]
    return None


class FakeCluster:
    """Images, clients and failures of one fake cluster."""

    def __init__(self):
        self.images = {}
        self.down = False
        self.blocklist = {}
        self.read_only_users = set()
        #: Monitor sessions {global id: entity name}, the active mgr's
        #: module clients ({'name', 'addrvec'}), mon commands denied.
        self.sessions = {}
        self.mgr_clients = []
        self.denied = set()
        self.calls = []
        #: (librados' cluster name, conffile) of each connect
        self.clusters = []
        self.connects = 0
        self._ids = itertools.count(4100)
        self._image_ids = itertools.count(0x5eed0)
        self.rados = self._rados_module()
        self.rbd = self._rbd_module()

    def add_image(self, spec, features=CINDER_MULTIATTACH, watchers=(),
                  header=True):
        """``header=False``: no format-2 objects (as a format-1 image)."""
        self.images[spec] = {'features': features,
                             'watchers': [dict(w) for w in watchers],
                             'id': '%x' % next(self._image_ids),
                             'header': header}

    def objects(self, pool, namespace):
        """{object name: (data, omap)} of a pool's namespace.

        The format-2 objects of its images: rbd_id.<name>, rbd_header.<id>.
        """
        found = {}
        for spec, image in self.images.items():
            ref = spec.split('/')
            ns = ref[1] if len(ref) == 3 else ''
            if ref[0] != pool or ns != namespace or not image['header']:
                continue
            iid = image['id'].encode()
            found['rbd_id.' + ref[-1]] = (
                struct.pack('<I', len(iid)) + iid, {})
            found['rbd_header.' + image['id']] = (b'', {
                'features': struct.pack('<Q', image['features'])})
        return found

    def features(self, spec):
        return self.images[spec]['features']

    # -- rados ----------------------------------------------------------

    def _rados_module(self):
        cluster = self
        Error, errors = _errors('rados')

        class Ioctx:
            def __init__(self, pool):
                self.pool = pool
                self.namespace = ''
                self.closed = False

            def set_namespace(self, namespace):
                self.namespace = namespace

            def _object(self, name):
                if cluster.down:
                    raise errors['TimedOut']('timed out')
                found = cluster.objects(self.pool, self.namespace).get(name)
                if found is None:
                    raise errors['ObjectNotFound'](
                        '[errno 2] RADOS object not found (%s)' % name)
                return found

            def read(self, name, length=8192, offset=0):
                cluster.calls.append(('read', self.pool, self.namespace,
                                      name))
                return self._object(name)[0][offset:offset + length]

            def get_omap_vals_by_keys(self, op, keys):
                # As the binding: the iterator yields after the operate.
                op.pending.append(keys)
                return op.results, 0

            def operate_read_op(self, op, name):
                cluster.calls.append(('omap', self.pool, self.namespace,
                                      name))
                omap = self._object(name)[1]
                for keys in op.pending:
                    op.results.extend((k, omap[k]) for k in keys
                                      if k in omap)

            def close(self):
                self.closed = True

        class ReadOpCtx:
            def __init__(self):
                self.pending, self.results = [], []

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class Rados:
            def __init__(self, conffile=None, rados_id=None, conf=None,
                         clustername=None):
                self.conffile = conffile
                self.user = rados_id
                self.clustername = clustername or 'ceph'
                self.conf = dict(conf or {})
                self.instance_id = None

            def conf_get(self, option):
                """librados' option as the conffile sets it, expanded."""
                name = 'client.%s' % self.user
                if option in self.conf:
                    return self.conf[option]
                value = _conf_value(self.conffile, name, option)
                if value is None:
                    value = {'keyring': '/etc/ceph/$cluster.$name.keyring,'
                                        '/etc/ceph/$cluster.keyring,'
                                        '/etc/ceph/keyring,'
                                        '/etc/ceph/keyring.bin,'}.get(
                                            option, '')
                return value.replace('$cluster', self.clustername).replace(
                    '$name', name)

            def connect(self, timeout=0):
                cluster.calls.append(('connect', self.user, self.conf))
                cluster.clusters.append((self.clustername, self.conffile))
                if cluster.down:
                    raise errors['TimedOut']('error connecting to the '
                                             'cluster')
                cluster.connects += 1
                self.instance_id = next(cluster._ids)

            def shutdown(self):
                cluster.calls.append(('shutdown', self.user))

            def open_ioctx(self, pool):
                if cluster.down:
                    raise errors['TimedOut']('timed out')
                return Ioctx(pool)

            def get_instance_id(self):
                return self.instance_id

            def mon_command(self, command, inbuf, timeout=0, target=None):
                cmd = json.loads(command)
                cluster.calls.append(('mon_command', cmd))
                if cluster.down:
                    raise errors['TimedOut']('timed out')
                if cmd['prefix'] in cluster.denied:
                    return -13, b'', 'access denied'
                if cmd['prefix'] == 'mon dump':
                    mons = {'mons': [{'name': 'a'}]}
                    return 0, json.dumps(mons).encode(), ''
                if cmd['prefix'] == 'sessions':
                    if target != 'a':
                        return -22, b'', 'unrecognized command'
                    sessions = [{'global_id': gid, 'entity_name': name}
                                for gid, name in cluster.sessions.items()]
                    return 0, json.dumps(sessions).encode(), ''
                if cmd['prefix'] == 'mgr dump':
                    return 0, json.dumps({
                        'active_name': 'x',
                        'active_clients': cluster.mgr_clients}).encode(), ''
                if cmd['prefix'] == 'osd blocklist ls':
                    return 0, json.dumps(
                        [{'addr': a, 'until': u}
                         for a, u in cluster.blocklist.items()]).encode(), ''
                if cmd.get('blocklistop') == 'add':
                    cluster.blocklist[cmd['addr']] = (
                        '2026-11-25T12:00:00.000000+0000')
                    return 0, b'', 'blocklisting %s' % cmd['addr']
                if cmd.get('blocklistop') == 'rm':
                    cluster.blocklist.pop(cmd['addr'], None)
                    return 0, b'', 'un-blocklisting %s' % cmd['addr']
                return -22, b'', 'unknown command'

        return types.SimpleNamespace(Rados=Rados, Error=Error, Ioctx=Ioctx,
                                     ReadOpCtx=ReadOpCtx, **errors)

    # -- rbd ------------------------------------------------------------

    def _rbd_module(self):
        cluster = self
        Error, errors = _errors('rbd')

        class Image:
            def __init__(self, ioctx, name, read_only=False):
                self.spec = '/'.join(p for p in (ioctx.pool, ioctx.namespace,
                                                 name) if p)
                self.read_only = read_only
                if cluster.down:
                    raise errors['Timeout']('timed out')
                if self.spec not in cluster.images:
                    raise errors['ImageNotFound']('no image %s' % self.spec)
                cluster.calls.append(('open', self.spec, read_only))

            def features(self):
                return cluster.images[self.spec]['features']

            def size(self):
                return 64 << 20

            def update_features(self, mask, enabled):
                cluster.calls.append(('update_features', self.spec, mask,
                                      enabled))
                if self.read_only:
                    raise errors['ReadOnlyImage']('read-only')
                if cluster.read_only_users:
                    raise errors['PermissionError']('Operation not '
                                                    'permitted')
                image = cluster.images[self.spec]
                if not enabled and not image['features'] & mask:
                    raise errors['InvalidArgument']('already disabled')
                if enabled:
                    image['features'] |= mask
                else:
                    image['features'] &= ~mask

            def watchers_list(self):
                return iter(cluster.images[self.spec]['watchers'])

            def close(self):
                pass

        return types.SimpleNamespace(
            Image=Image, Error=Error,
            RBD_FEATURE_LAYERING=LAYERING,
            RBD_FEATURE_EXCLUSIVE_LOCK=EXCLUSIVE_LOCK,
            RBD_FEATURE_OBJECT_MAP=OBJECT_MAP,
            RBD_FEATURE_FAST_DIFF=FAST_DIFF,
            RBD_FEATURE_DEEP_FLATTEN=DEEP_FLATTEN,
            RBD_FEATURE_JOURNALING=JOURNALING,
            **errors)


def write_keyring(directory, user):
    """A keyring file for client.<user> as ceph writes one (fake key)."""
    path = os.path.join(directory, 'ceph.client.%s.keyring' % user)
    with open(path, 'w') as f:
        f.write('[client.%s]\n\tkey = AQBfakefakefakefakefakefakefakefake==\n'
                % user)
    return path


class FakeCephFixture(fixtures.Fixture):
    """Put a FakeCluster behind nova_shared_cache.cephclient."""

    def __init__(self, ceph_conf):
        super().__init__()
        self.ceph_conf = ceph_conf

    def _setUp(self):
        self.cluster = FakeCluster()
        self.useFixture(fixtures.MonkeyPatch(
            'nova_shared_cache.cephclient.rados', self.cluster.rados))
        self.useFixture(fixtures.MonkeyPatch(
            'nova_shared_cache.cephclient.rbd', self.cluster.rbd))
        self.addCleanup(cephclient.REGISTRY.close_all)
