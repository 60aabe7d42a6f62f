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
from nova_shared_cache import cephauth
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
    ignored: list = dataclasses.field(default_factory=list)
    names_error: str = ''


class RbdBackend(base.SharedVolumeBackend):
    """Ceph RBD volumes and their Ceph-side guard."""

    def __init__(self, conf, registry=None):
        super().__init__(conf)
        self._settings = None
        self._host = None
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

    def bind_host(self, host):
        self._host = host

    def _libvirt_connection(self):
        host = getattr(self, '_host', None)
        if host is None:
            raise exception.GuardUnavailable(
                reason='no libvirt connection to read secrets from')
        return host.get_connection()

    def _libvirt_opt(self, name):
        try:
            return getattr(self.conf.libvirt, name)
        except Exception:
            return None

    def ceph_user(self, connection_info):
        """The Ceph user for the checks, chosen the way Nova chooses it.

        None when nothing names one: never a silent ``client.admin``.
        """
        if self.settings.ceph_user:
            return self.settings.ceph_user
        data = connection_info.get('data') or {}
        if data.get('auth_username'):
            return data['auth_username']
        return self._libvirt_opt('rbd_user') or None

    def secret_uuid(self, connection_info):
        data = connection_info.get('data') or {}
        return data.get('secret_uuid') or self._libvirt_opt('rbd_secret_uuid')

    @staticmethod
    def cluster_name(connection_info):
        """The volume's Ceph cluster (Cinder's ``rbd_cluster_name``)."""
        data = connection_info.get('data') or {}
        name = data.get('cluster_name') or cephauth.DEFAULT_CLUSTER
        if not cephauth.valid_cluster_name(str(name)):
            raise exception.CephError(
                what='find the Ceph cluster of the volume',
                reason="connection_info data 'cluster_name' is %r, not a "
                       "Ceph cluster name (letters, digits, - and _)" % name)
        return str(name)

    def credentials(self, connection_info):
        """cephauth.Credentials for the volume's checks, in its cluster."""
        cluster = self.cluster_name(connection_info)
        return cephauth.resolve(
            cephauth.cluster_conf(self.settings.ceph_conf, cluster),
            self.ceph_user(connection_info),
            secret_uuid=self.secret_uuid(connection_info),
            libvirt_connection=self._libvirt_connection,
            mon_host=self.mon_host(connection_info), cluster=cluster)

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

    def client(self, connection_info, credentials=None):
        credentials = credentials or self.credentials(connection_info)
        if not credentials.usable:
            raise exception.GuardUnavailable(reason='%s (%s)' % (
                credentials.detail, cephauth.remedy(
                    credentials.user, cephauth.cluster_conf(
                        self.settings.ceph_conf, credentials.cluster),
                    self.secret_uuid(connection_info))))
        return self._registry.for_credentials(
            credentials, self.settings.ceph_timeout,
            mon_host=self.mon_host(connection_info))

    def report_at_start(self):
        """Say once whether the guard can check images, and if not, why."""
        settings = self.settings
        if (settings.rbd_feature_policy == 'off'
                and settings.sharing_guard == 'off'):
            LOG.info("nova-shared-cache: the Ceph-side checks are off "
                     "(rbd_feature_policy = off, sharing_guard = off)")
            return
        user = settings.ceph_user or self._libvirt_opt('rbd_user')
        secret_uuid = self._libvirt_opt('rbd_secret_uuid')
        if not user:
            # The usual Cinder deployment: each volume's connection_info
            # names its user (auth_username) and secret, so there is
            # nothing to check before the first attach, and nothing wrong.
            LOG.info("nova-shared-cache: no default Ceph user is set "
                     "([shared_cache] ceph_user, [libvirt] rbd_user), so "
                     "the Ceph-side checks of each RBD volume use the user "
                     "and libvirt secret its connection_info names, with a "
                     "keyring found through %(conf)s or the key of that "
                     "secret; a volume whose credentials cannot be found is "
                     "reported when it is attached", {
                         'conf': settings.ceph_conf})
            return
        credentials = cephauth.resolve(
            settings.ceph_conf, user, secret_uuid=secret_uuid,
            libvirt_connection=self._libvirt_connection,
            volume_monitors=True)
        if credentials.usable:
            LOG.info("nova-shared-cache: the Ceph-side checks of RBD volumes "
                     "use %(detail)s (volumes naming another user or secret "
                     "are checked with theirs)",
                     {'detail': credentials.detail})
            return
        strict = [name for name, value in (
            ('rbd_feature_policy', settings.rbd_feature_policy),
            ('sharing_guard', settings.sharing_guard))
            if value in ('enforce', 'refuse')]
        LOG.warning(
            "nova-shared-cache cannot check RBD images with the configured "
            "credentials: %(detail)s. To enable the checks, %(remedy)s. "
            "Until then %(effect)s",
            {'detail': credentials.detail,
             'remedy': cephauth.remedy(user, settings.ceph_conf,
                                       secret_uuid),
             'effect': ('new attachments of volumes the checks apply to are '
                        'refused ([shared_cache] %s); reconnects of existing '
                        'attachments go on unchecked' % ', '.join(strict))
             if strict else 'volumes are attached unchecked, as stock Nova '
                            'would'})

    # -- the connect-time guard ---------------------------------------------

    def on_connect(self, context, connection_info, instance, shared,
                   new_attachment=False):
        settings = self.settings
        check_features = shared and settings.rbd_feature_policy != 'off'
        check_watchers = (not shared and new_attachment
                          and settings.sharing_guard != 'off')
        if not (check_features or check_watchers):
            return
        spec = (connection_info.get('data') or {}).get('name')
        who = {'volume_id': policy.volume_id(connection_info),
               'volume': spec,
               'instance': getattr(instance, 'uuid', None) or 'unknown'}
        # NOTE: only a new attachment under a policy that refuses may be
        # refused; a reconnect (reboot, power on, migration, resize,
        # unshelve, evacuate) of what already runs never fails here.
        strict = [name for name, on, value in (
            ('rbd_feature_policy', check_features,
             settings.rbd_feature_policy),
            ('sharing_guard', check_watchers, settings.sharing_guard))
            if on and value in ('enforce', 'refuse')] if new_attachment else []
        try:
            ref = cephops.parse_image_spec(spec)
            client = self.client(connection_info)
            state = client.call(
                'inspect RBD image %s as client.%s' % (spec, client.user),
                lambda cluster: self._inspect(cluster, ref, check_watchers))
            if check_features and state.features:
                self._single_client_features(client, ref, state,
                                             who, new_attachment)
            if check_watchers:
                self._foreign_watchers(state, who, client.user)
        except exception.AttachRefused:
            raise
        except Exception as err:
            reason = str(err) if isinstance(
                err, exception.SharedCacheError) else 'unexpected %s: %s' % (
                    type(err).__name__, err)
            if strict:
                raise exception.AttachRefused(
                    reason="[shared_cache] %s refuses new attachments it "
                           "cannot check, and the Ceph-side check could not "
                           "run (%s); fix the cause, or set it to warn to "
                           "attach unchecked" % (' and '.join(
                               '%s = %s' % (n, getattr(settings, n))
                               for n in strict), reason),
                    **who) from err
            LOG.warning(
                "Volume %(volume_id)s (image %(volume)s) of instance "
                "%(instance)s was not checked by nova-shared-cache "
                "(%(reason)s). Going on as stock Nova would (%(why)s).",
                dict(who, reason=reason,
                     why='new attachment, policy warn' if new_attachment
                     else 'reconnect of an existing attachment'))

    def _inspect(self, cluster, ref, watchers):
        _, rbd_mod = cephclient.bindings()
        # The features alone (a shared disk) come from the header object;
        # the watchers need the image open.
        features = None if watchers else cephops.header_features(cluster,
                                                                 ref)
        others = []
        if features is None:
            with cephops.open_image(cluster, ref.pool, ref.image,
                                    namespace=ref.namespace) as img:
                features = img.features()
                if watchers:
                    others = cephops.other_watchers(cluster, img)
        state = ImageState(
            features=cephops.single_client_features(features, rbd_mod),
            watchers=others)
        patterns = self.settings.ignored_watchers
        if state.watchers and patterns:
            # Only when there is someone to name: the common case (nobody
            # else has the image open) costs no monitor command.
            state.names_error = '; '.join(cephops.watcher_names(
                cluster, state.watchers))
            state.ignored = [w for w in state.watchers
                             if cephops.ignored(w, patterns)]
            state.watchers = [w for w in state.watchers
                              if w not in state.ignored]
        return state

    def _single_client_features(self, client, ref, state, who,
                                new_attachment=True):
        policy = self.settings.rbd_feature_policy
        names = ', '.join(state.features)
        if policy == 'warn' or (policy == 'refuse' and not new_attachment):
            LOG.warning(
                "Shared volume %(volume_id)s (image %(volume)s, instance "
                "%(instance)s) has single-client RBD features %(names)s; "
                "attaching anyway ([shared_cache] rbd_feature_policy = "
                "%(policy)s%(reconnect)s). The sharing clients will pass "
                "the exclusive lock back and forth on every write.",
                dict(who, names=names, policy=policy,
                     reconnect='' if new_attachment else
                     ', a reconnect is never refused'))
            return
        if policy == 'refuse':
            raise exception.AttachRefused(
                reason="[shared_cache] rbd_feature_policy = refuse: the "
                       "image has single-client features %s, which a disk "
                       "written by several instances must not have; clear "
                       "them with 'rbd feature disable %s %s'"
                       % (names, who['volume'], ' '.join(state.features)),
                **who)
        try:
            raced = client.call(
                'clear RBD features of %s' % who['volume'],
                lambda cluster: self._clear(cluster, ref, state.features,
                                            who, client.user))
        except exception.SharedCacheError as err:
            if new_attachment:
                raise
            LOG.warning("Single-client RBD features %(names)s of image "
                        "%(volume)s (volume %(volume_id)s, instance "
                        "%(instance)s) could not be cleared: %(err)s; "
                        "reconnecting anyway",
                        dict(who, names=names, err=err))
            return
        LOG.info("Cleared single-client RBD features %(names)s of image "
                 "%(volume)s (volume %(volume_id)s, instance %(instance)s) "
                 "before attaching it as a shared disk%(raced)s",
                 dict(who, names=names,
                      raced=' (another client cleared some first)'
                      if raced else ''))

    def _clear(self, cluster, ref, names, who, user):
        """Disable ``names`` on the image; safe when another compute races.

        Runs in librados' thread (no logging here). Returns True when
        update_features was refused because another client had already
        disabled a feature; raises unless no single-client feature is
        left at the end.
        """
        _, rbd_mod = cephclient.bindings()
        raced = None
        try:
            with cephops.open_image(cluster, ref.pool, ref.image,
                                    read_only=False,
                                    namespace=ref.namespace) as img:
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
            raise self._no_write_cap(who, user, ref) from err
        if left:
            raise exception.AttachRefused(
                reason="[shared_cache] rbd_feature_policy = enforce: "
                       "single-client features %s are still set after "
                       "clearing them%s" % (
                           ', '.join(left),
                           ' (Ceph said: %s)' % raced if raced else ''),
                **who)
        return raced is not None

    @staticmethod
    def _no_write_cap(who, user, ref):
        return exception.AttachRefused(
            reason="[shared_cache] rbd_feature_policy = enforce needs write "
                   "access, and Ceph user client.%s may not change the "
                   "image's features; grant it ('osd profile rbd pool=%s%s' "
                   "in its caps), or set rbd_feature_policy to refuse or "
                   "warn" % (user, ref.pool, ' namespace=%s' % ref.namespace
                             if ref.namespace else ''), **who)

    def _foreign_watchers(self, state, who, user):
        for watcher in state.ignored:
            LOG.info("Volume %(volume_id)s (image %(volume)s): not counting "
                     "%(client)s at %(address)s (%(name)s%(module)s, "
                     "[shared_cache] ignored_watchers)",
                     dict(who, client=watcher['client'],
                          address=watcher['address'], name=watcher['name'],
                          module=', module %s' % watcher['module']
                          if watcher.get('module') else ''))
        if not state.watchers:
            return
        clients = ', '.join('%s at %s%s' % (
            w['client'], w['address'],
            ' (%s)' % w['name'] if w.get('name') else '')
            for w in state.watchers)
        if state.names_error:
            clients += (
                " (its Ceph name is unknown, so [shared_cache] "
                "ignored_watchers could not apply: %s%s)" % (
                    state.names_error, cephops.names_hint(
                        [state.names_error], 'client.%s' % user)))
        if self.settings.sharing_guard == 'refuse':
            raise exception.AttachRefused(
                reason="[shared_cache] sharing_guard = refuse: the volume "
                       "is not multiattach but its image is already open by "
                       "%s; two instances writing it would corrupt it"
                       % clients, **who)
        LOG.warning(
            "Volume %(volume_id)s (image %(volume)s) is not multiattach but "
            "is already open by %(clients)s; attaching it to instance "
            "%(instance)s anyway ([shared_cache] sharing_guard = warn)",
            dict(who, clients=clients))
