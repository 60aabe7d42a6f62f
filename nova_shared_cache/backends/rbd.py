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
from nova_shared_cache import cephops
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache import policy

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class ImageState:
    """What the guard saw of one image."""

    features: list
    watchers: list


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
        pool, image = cephops.parse_image_spec(spec)
        who = {'volume_id': policy.volume_id(connection_info),
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

    @staticmethod
    def _inspect(cluster, pool, image, watchers):
        _, rbd_mod = cephclient.bindings()
        with cephops.open_image(cluster, pool, image) as img:
            return ImageState(
                features=cephops.single_client_features(img.features(),
                                                        rbd_mod),
                watchers=(cephops.other_watchers(cluster, img)
                          if watchers else []))

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
        try:
            with cephops.open_image(cluster, pool, image,
                                    read_only=False) as img:
                present = cephops.single_client_features(img.features(),
                                                         rbd_mod)
                todo = [n for n in names if n in present]
                if todo:
                    try:
                        img.update_features(
                            cephops.feature_mask(todo, rbd_mod), False)
                    except rbd_mod.InvalidArgument as err:
                        # Another compute cleared some of them first, or
                        # Ceph refuses (then they are still set, below).
                        raced = err
                left = cephops.single_client_features(img.features(),
                                                      rbd_mod)
        except rbd_mod.PermissionError as err:
            # Opening for writing or changing the features.
            raise self._no_write_cap(who, user, pool) from err
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
        if not state.watchers:
            return
        clients = ', '.join('%s at %s' % (w['client'], w['address'])
                            for w in state.watchers)
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
