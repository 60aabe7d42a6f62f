"""LibvirtSharedCacheDriver: Nova's libvirt driver with coherent shared disks.

Load it with
``[DEFAULT] compute_driver = shared_cache.LibvirtSharedCacheDriver``.

Every path that writes a volume's disk XML goes through
``LibvirtDriver._set_cache_mode``: attach, swap, boot, hard reboot, rescue,
resize and cold migration (all through ``_get_guest_storage_config``) and the
destination XML of a live migration (``_get_volume_config`` handed to
``migration.get_updated_guest_xml``). The override lets Nova decide first and
then applies ``policy`` to the disks of shared volumes; every other disk keeps
Nova's decision untouched, ``[libvirt] disk_cachemodes`` included.
"""

import contextlib
import contextvars
import weakref

import nova.conf
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

from nova_shared_cache import backends
from nova_shared_cache import compat
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import policy

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
sc_conf.register_opts(CONF)

# NOTE: _set_cache_mode(conf) is not given the volume it configures, nor the
# instance. Both are carried in context variables, set around the Nova calls
# that have them; contextvars are per thread and per greenthread, so
# concurrent attaches on one compute cannot see each other's values.
_CONNECTION_INFO = contextvars.ContextVar('nova_shared_cache_connection_info',
                                          default=None)
_INSTANCE_UUID = contextvars.ContextVar('nova_shared_cache_instance_uuid',
                                        default=None)
# True inside the operations that attach a volume to an instance anew
# (attach, swap, spawn); False for reconnects of an existing attachment.
_NEW_ATTACHMENT = contextvars.ContextVar('nova_shared_cache_new_attachment',
                                         default=False)

# Nova 30-33 call _get_volume_config(instance, connection_info, disk_info),
# Nova 34 _get_volume_config(connection_info, disk_info).
_VOLUME_CONFIG_PARAMS = compat.positional_parameters(
    libvirt_driver.LibvirtDriver._get_volume_config)


@contextlib.contextmanager
def _scope(var, value):
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def _instance_scope(instance):
    return _scope(_INSTANCE_UUID, getattr(instance, 'uuid', None))


class LibvirtSharedCacheDriver(libvirt_driver.LibvirtDriver):

    def __init__(self, virtapi, read_only=False):
        # Everything that can refuse to start runs before Nova's driver
        # initialises, so a bad setting changes nothing.
        compat.check(libvirt_driver.LibvirtDriver, compat.nova_version())
        self._shared_settings = sc_conf.load(CONF)
        self._shared_backends = backends.load(
            self._shared_settings.enabled_backends, CONF)
        # Disk configs built from a volume, mapped to its connection_info:
        # _get_guest_storage_config calls _set_cache_mode a second time on
        # each volume disk, outside _get_volume_config.
        self._volume_disks = weakref.WeakKeyDictionary()
        super().__init__(virtapi, read_only)
        settings = self._shared_settings
        LOG.info("nova-shared-cache enabled: cache_mode=%(mode)s, "
                 "backends=%(backends)s",
                 {'mode': settings.cache_mode,
                  'backends': ','.join(settings.enabled_backends)})

    # -- the XML path -----------------------------------------------------

    def _get_volume_config(self, *args, **kwargs):
        connection_info = compat.argument(
            _VOLUME_CONFIG_PARAMS, 'connection_info', args, kwargs)
        instance = compat.argument(
            _VOLUME_CONFIG_PARAMS, 'instance', args, kwargs)
        with contextlib.ExitStack() as stack:
            stack.enter_context(_scope(_CONNECTION_INFO, connection_info))
            if instance is not None:
                stack.enter_context(_instance_scope(instance))
            return super()._get_volume_config(*args, **kwargs)

    def _set_cache_mode(self, conf):
        on_entry = self._snapshot(conf)
        super()._set_cache_mode(conf)

        connection_info = _CONNECTION_INFO.get()
        if connection_info is not None:
            self._volume_disks[conf] = connection_info
        else:
            connection_info = self._volume_disks.get(conf)
        shared = policy.classify(connection_info, self._shared_backends)
        if shared is None:
            return

        novas_choice = self._snapshot(conf)
        changes = policy.plan(conf, self._shared_settings.cache_mode, shared)
        policy.apply(conf, changes)
        # A disk seen again (the second pass in _get_guest_storage_config)
        # was already enforced and logged; Nova just reset it in between.
        if changes and self._snapshot(conf) != on_entry:
            LOG.info(
                "Shared disk enforced for instance %(instance)s: volume "
                "%(volume_id)s (backend %(backend)s, %(volume)s), cache "
                "%(old)s -> %(new)s%(more)s",
                {'instance': _INSTANCE_UUID.get() or 'unknown',
                 'volume_id': shared.volume_id,
                 'backend': shared.backend,
                 'volume': shared.volume,
                 'old': novas_choice['driver_cache'],
                 'new': conf.driver_cache,
                 'more': ''.join('; %s %s -> %s' % (c.attr, c.old, c.new)
                                 for c in changes
                                 if c.attr != 'driver_cache')})

    @staticmethod
    def _snapshot(conf):
        return {attr: getattr(conf, attr, None)
                for attr in policy.ENFORCED_ATTRS}

    # -- the connect-time hook --------------------------------------------

    def _connect_volume(self, context, connection_info, instance,
                        *args, **kwargs):
        backend = policy.find_backend(connection_info, self._shared_backends)
        if backend is not None:
            with _instance_scope(instance):
                backend.on_connect(context, connection_info, instance,
                                   shared=policy.is_multiattach(
                                       connection_info),
                                   new_attachment=_NEW_ATTACHMENT.get())
        return super()._connect_volume(context, connection_info, instance,
                                       *args, **kwargs)

    # -- entry points that know the instance (for the log line) -----------

    def attach_volume(self, context, connection_info, instance,
                      *args, **kwargs):
        with _instance_scope(instance), _scope(_NEW_ATTACHMENT, True):
            return super().attach_volume(context, connection_info, instance,
                                         *args, **kwargs)

    def swap_volume(self, context, old_connection_info, new_connection_info,
                    instance, *args, **kwargs):
        with _instance_scope(instance), _scope(_NEW_ATTACHMENT, True):
            return super().swap_volume(context, old_connection_info,
                                       new_connection_info, instance,
                                       *args, **kwargs)

    def spawn(self, context, instance, *args, **kwargs):
        with _instance_scope(instance), _scope(_NEW_ATTACHMENT, True):
            return super().spawn(context, instance, *args, **kwargs)

    def _get_guest_storage_config(self, context, instance, *args, **kwargs):
        with _instance_scope(instance):
            return super()._get_guest_storage_config(context, instance,
                                                     *args, **kwargs)

    def _live_migration_operation(self, context, instance, *args, **kwargs):
        with _instance_scope(instance):
            return super()._live_migration_operation(context, instance,
                                                     *args, **kwargs)
