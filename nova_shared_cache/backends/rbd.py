"""Ceph RBD volumes (Cinder's RBD driver, ``driver_volume_type = rbd``).

At connect time, on the compute, before Nova touches the domain, the real
image is looked at with the compute's own Ceph credentials:

- a shared (multiattach) volume must not have single-client features
  (exclusive-lock, object-map, fast-diff, journaling):
  ``[shared_cache] rbd_feature_policy`` clears them, refuses the attach or
  warns;
- a volume that is *not* multiattach must not already be open by another
  client when it is newly attached to an instance:
  ``[shared_cache] sharing_guard`` refuses, warns or does not look.
"""

import dataclasses

from oslo_log import log as logging

from nova_shared_cache.backends import base
from nova_shared_cache import cephclient
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception

LOG = logging.getLogger(__name__)

#: Feature name (as ``rbd info`` prints it) -> attribute of the rbd module.
SINGLE_CLIENT_FEATURES = (
    ('exclusive-lock', 'RBD_FEATURE_EXCLUSIVE_LOCK'),
    ('object-map', 'RBD_FEATURE_OBJECT_MAP'),
    ('fast-diff', 'RBD_FEATURE_FAST_DIFF'),
    ('journaling', 'RBD_FEATURE_JOURNALING'),
)


def single_client_features(features, rbd_mod):
    """Names of the single-client features set in a feature bit mask."""
    return [name for name, attr in SINGLE_CLIENT_FEATURES
            if features & getattr(rbd_mod, attr)]


def feature_mask(names, rbd_mod):
    mask = 0
    for name, attr in SINGLE_CLIENT_FEATURES:
        if name in names:
            mask |= getattr(rbd_mod, attr)
    return mask


def parse_image_spec(spec):
    """'pool/image' -> ('pool', 'image'); a clear error for anything else."""
    parts = str(spec or '').split('/')
    if len(parts) != 2 or not all(parts):
        raise exception.CephError(
            what='find the RBD image of the volume',
            reason="connection_info data 'name' is %r, expected "
                   "'pool/image'" % (spec,))
    return parts[0], parts[1]


@dataclasses.dataclass
class ImageState:
    """What the guard saw of one image."""

    features: list
    watchers: list
    own_id: object


class RbdBackend(base.SharedVolumeBackend):
    """Ceph RBD volumes and their Ceph-side guard."""

    def __init__(self, conf, registry=None):
        super().__init__(conf)
        self._settings = None
        self._registry = registry or cephclient.REGISTRY

    @property
    def settings(self):
        # Read when first needed: owns() and describe() need no options.
        # The driver has validated [shared_cache] before loading backends.
        if self._settings is None:
            self._settings = sc_conf.load(self.conf)
        return self._settings

    def owns(self, connection_info):
        return connection_info.get('driver_volume_type') == 'rbd'

    def describe(self, connection_info):
        # data['name'] is "pool/image"; never include auth data here.
        data = connection_info.get('data') or {}
        return str(data.get('name') or super().describe(connection_info))

    # -- credentials ------------------------------------------------------

    def ceph_user(self, connection_info):
        """The Ceph user for the checks, chosen the way Nova chooses it."""
        if self.settings.ceph_user:
            return self.settings.ceph_user
        data = connection_info.get('data') or {}
        if data.get('auth_username'):
            return data['auth_username']
        try:
            libvirt_user = self.conf.libvirt.rbd_user
        except Exception:
            libvirt_user = None
        return libvirt_user or 'admin'

    @staticmethod
    def mon_host(connection_info):
        """The volume's monitors as librados' mon_host, or None.

        Cinder puts the monitors of the volume's cluster into
        connection_info; QEMU uses them, and so does the guard, so that a
        volume of another cluster than ceph_conf's is checked where it is.
        """
        data = connection_info.get('data') or {}
        hosts = data.get('hosts') or []
        ports = data.get('ports') or []
        if not hosts or len(ports) not in (0, len(hosts)):
            return None
        addresses = []
        for index, host in enumerate(hosts):
            host = str(host)
            if ':' in host and not host.startswith('['):
                host = '[%s]' % host        # IPv6
            port = ports[index] if ports else None
            addresses.append('%s:%s' % (host, port) if port else host)
        return ','.join(addresses)

    def client(self, connection_info):
        return self._registry.get(self.settings.ceph_conf,
                                  self.ceph_user(connection_info),
                                  self.settings.ceph_timeout,
                                  mon_host=self.mon_host(connection_info))

    # -- the connect-time guard ---------------------------------------------

    def on_connect(self, context, connection_info, instance, shared,
                   new_attachment=False):
        settings = self.settings
        check_watchers = (not shared and new_attachment
                          and settings.sharing_guard != 'off')
        if not shared and not check_watchers:
            return
        spec = (connection_info.get('data') or {}).get('name')
        pool, image = parse_image_spec(spec)
        who = {'volume_id': (connection_info.get('serial')
                             or (connection_info.get('data') or {}).get(
                                 'volume_id')),
               'volume': spec,
               'instance': getattr(instance, 'uuid', None) or 'unknown'}
        client = self.client(connection_info)
        state = client.call(
            'inspect RBD image %s' % spec,
            lambda cluster: self._inspect(cluster, pool, image,
                                          check_watchers))
        if shared and state.features:
            self._single_client_features(client, pool, image, state, who)
        if check_watchers:
            self._foreign_watchers(state, who)

    def _inspect(self, cluster, pool, image, watchers):
        _, rbd_mod = cephclient.bindings()
        ioctx = cluster.open_ioctx(pool)
        try:
            img = rbd_mod.Image(ioctx, image, read_only=True)
            try:
                features = single_client_features(img.features(), rbd_mod)
                found = ([dict(w) for w in img.watchers_list()]
                         if watchers else [])
            finally:
                img.close()
        finally:
            ioctx.close()
        return ImageState(features=features, watchers=found,
                          own_id=cluster.get_instance_id())

    def _single_client_features(self, client, pool, image, state, who):
        policy = self.settings.rbd_feature_policy
        names = ', '.join(state.features)
        if policy == 'warn':
            LOG.warning(
                "Shared volume %(volume_id)s (image %(volume)s, instance "
                "%(instance)s) has single-client RBD features %(names)s; "
                "attaching anyway ([shared_cache] rbd_feature_policy = "
                "warn). The sharing clients will pass the exclusive lock "
                "back and forth on every write.", dict(who, names=names))
            return
        if policy == 'refuse':
            raise exception.AttachRefused(
                reason="the image has single-client features %s, which a "
                       "disk written by several instances must not have "
                       "([shared_cache] rbd_feature_policy = refuse; clear "
                       "them with 'rbd feature disable %s %s')"
                       % (names, who['volume'], ' '.join(state.features)),
                **who)
        raced = client.call(
            'clear RBD features of %s' % who['volume'],
            lambda cluster: self._clear(cluster, pool, image, state.features,
                                        who, client.user))
        LOG.info("Cleared single-client RBD features %(names)s of image "
                 "%(volume)s (volume %(volume_id)s, instance %(instance)s) "
                 "before attaching it as a shared disk%(raced)s",
                 dict(who, names=names,
                      raced=' (another client cleared some first)'
                      if raced else ''))

    def _clear(self, cluster, pool, image, names, who, user):
        """Disable ``names`` on the image; safe when another compute races.

        Runs in librados' thread (no logging here). Returns True when
        update_features was refused because another client had already
        disabled a feature; raises unless no single-client feature is
        left at the end.
        """
        _, rbd_mod = cephclient.bindings()
        raced = None
        ioctx = cluster.open_ioctx(pool)
        try:
            try:
                img = rbd_mod.Image(ioctx, image)
            except rbd_mod.PermissionError as err:
                raise self._no_write_cap(who, user, pool) from err
            try:
                present = single_client_features(img.features(), rbd_mod)
                todo = [n for n in names if n in present]
                if todo:
                    try:
                        img.update_features(feature_mask(todo, rbd_mod),
                                            False)
                    except rbd_mod.InvalidArgument as err:
                        # Another compute cleared some of them first, or
                        # Ceph refuses (then they are still set, below).
                        raced = err
                    except rbd_mod.PermissionError as err:
                        raise self._no_write_cap(who, user, pool) from err
                left = single_client_features(img.features(), rbd_mod)
            finally:
                img.close()
        finally:
            ioctx.close()
        if left:
            raise exception.AttachRefused(
                reason="single-client features %s are still set after "
                       "clearing them%s" % (
                           ', '.join(left),
                           ' (Ceph said: %s)' % raced if raced else ''),
                **who)
        return raced is not None

    @staticmethod
    def _no_write_cap(who, user, pool):
        return exception.AttachRefused(
            reason="Ceph user client.%s may not change the image's features "
                   "(rbd_feature_policy = enforce needs write access: "
                   "'osd profile rbd pool=%s' in its caps); grant it, or set "
                   "[shared_cache] rbd_feature_policy to refuse or warn"
                   % (user, pool), **who)

    def _foreign_watchers(self, state, who):
        others = [w for w in state.watchers
                  if str(w.get('id')) != str(state.own_id)]
        if not others:
            return
        clients = ', '.join('client.%s at %s' % (w.get('id'), w.get('addr'))
                            for w in others)
        if self.settings.sharing_guard == 'refuse':
            raise exception.AttachRefused(
                reason="the volume is not multiattach but its image is "
                       "already open by %s; two instances writing it would "
                       "corrupt it ([shared_cache] sharing_guard = refuse)"
                       % clients, **who)
        LOG.warning(
            "Volume %(volume_id)s (image %(volume)s) is not multiattach but "
            "is already open by %(clients)s; attaching it to instance "
            "%(instance)s anyway ([shared_cache] sharing_guard = warn)",
            dict(who, clients=clients))
