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
from nova_shared_cache.libvirt import domxml
from nova_shared_cache import policy

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
sc_conf.register_opts(CONF)

# NOTE: the policy decides each volume disk right after Nova's
# _get_volume_config built it, from that call's connection_info. Nova's
# second pass over every disk (_get_guest_storage_config calls
# _set_cache_mode again) gives a <shareable/> disk cache 'none': with
# cache_mode directsync the disks the policy made shared are remembered
# (_shared_disks) and set back. The instance, which Nova 34 no longer
# passes to _get_volume_config, is only needed for the log line: the entry
# points that know it set it in a context variable (per thread and per
# greenthread, so concurrent operations on one compute cannot see each
# other's; Nova 34's pool threads keep their context from task to task, so
# every value is reset where it was set, on errors too:
# tests/functional/test_threading.py).
_INSTANCE_UUID = contextvars.ContextVar('nova_shared_cache_instance_uuid',
                                        default=None)
# True inside the operations that attach a volume to an instance anew
# (attach, swap, spawn); False for reconnects of an existing attachment.
_NEW_ATTACHMENT = contextvars.ContextVar('nova_shared_cache_new_attachment',
                                         default=False)
# Inside swap_volume: the SharedDisk of the volume swapped in, if shared.
_SWAPPED_IN = contextvars.ContextVar('nova_shared_cache_swapped_in',
                                     default=None)

# Nova's class as imported: the startup check inspects it, whatever later
# rebinds the module's name (tests/nova_peer puts this class there).
_NOVA_DRIVER = libvirt_driver.LibvirtDriver

# Nova 30-33 call _get_volume_config(instance, connection_info, disk_info),
# Nova 34 _get_volume_config(connection_info, disk_info).
_VOLUME_CONFIG_PARAMS = compat.positional_parameters(
    libvirt_driver.LibvirtDriver._get_volume_config)
_VOLUME_CONFIG_HAS_INSTANCE = 'instance' in _VOLUME_CONFIG_PARAMS


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
        compat.check(_NOVA_DRIVER, compat.nova_version())
        self._shared_settings = sc_conf.load(CONF)
        self._shared_cache_mode = self._shared_settings.cache_mode
        self._shared_backends = backends.load(
            self._shared_settings.enabled_backends, CONF)
        # Shared disk configs built from a volume, mapped to what the policy
        # found, for Nova's second pass, which sets 'none' on them: needed
        # only when that is not the policy's mode.
        self._shared_disks = (None if self._shared_cache_mode == 'none'
                              else weakref.WeakKeyDictionary())
        super().__init__(virtapi, read_only)
        for backend in self._shared_backends:
            backend.bind_host(self._host)
        settings = self._shared_settings
        if not settings.enabled_backends:
            LOG.warning("nova-shared-cache: no backend is enabled "
                        "([shared_cache] enabled_backends is empty); the "
                        "driver behaves exactly as Nova's LibvirtDriver")
        LOG.info("nova-shared-cache enabled: cache_mode=%(mode)s, "
                 "backends=%(backends)s",
                 {'mode': settings.cache_mode,
                  'backends': ','.join(settings.enabled_backends) or '-'})

    def init_host(self, host):
        super().init_host(host)
        self._report_shared_backends()

    def _report_shared_backends(self):
        """Each backend says once what its checks can do on this host."""
        for backend in self._shared_backends:
            try:
                backend.report_at_start()
            except Exception as err:
                LOG.warning("nova-shared-cache: backend %(backend)s could "
                            "not tell whether its checks can run: "
                            "%(type)s: %(err)s",
                            {'backend': backend.name,
                             'type': type(err).__name__, 'err': err})

    # -- the XML path -----------------------------------------------------

    # Explicit parameters and calls through Nova's class rather than
    # super(): this runs for every volume disk Nova configures, and a disk
    # that is not multiattach must cost next to nothing
    # (benchmarks/xml_path.py). _NOVA_DRIVER is the direct base class.
    if _VOLUME_CONFIG_HAS_INSTANCE:
        def _get_volume_config(self, instance, connection_info, disk_info):
            conf = _NOVA_DRIVER._get_volume_config(self, instance,
                                                   connection_info, disk_info)
            if (isinstance(connection_info, dict)
                    and connection_info.get('multiattach') is True):
                self._decide(conf, connection_info, instance)
            return conf
    else:
        def _get_volume_config(self, connection_info, disk_info):
            conf = _NOVA_DRIVER._get_volume_config(self, connection_info,
                                                   disk_info)
            if (isinstance(connection_info, dict)
                    and connection_info.get('multiattach') is True):
                self._decide(conf, connection_info)
            return conf

    def _decide(self, conf, connection_info, instance=None):
        """Apply the policy to a multiattach volume's disk Nova built."""
        if (self._shared_disks is None
                and getattr(conf, 'shareable', None) is True
                and getattr(conf, 'driver_cache', None)
                == self._shared_cache_mode
                and getattr(conf, 'driver_format', None) == 'raw'):
            # What Nova makes of a multiattach RBD disk, and already the
            # policy's disk (policy.plan would change nothing, whichever
            # backend owns it): nothing to decide, nothing to remember.
            return
        shared = policy.classify(connection_info, self._shared_backends)
        if shared is None:
            return
        if self._shared_disks is not None:
            self._shared_disks[conf] = shared
        novas_cache = conf.driver_cache
        changes = self._enforce(conf, shared)
        if changes:
            LOG.info(
                "Shared disk enforced for instance %(instance)s: volume "
                "%(volume_id)s (backend %(backend)s, %(volume)s), cache "
                "%(old)s -> %(new)s%(more)s",
                {'instance': (getattr(instance, 'uuid', None)
                              or _INSTANCE_UUID.get() or 'unknown'),
                 'volume_id': shared.volume_id,
                 'backend': shared.backend,
                 'volume': shared.volume,
                 'old': novas_cache,
                 'new': conf.driver_cache,
                 'more': ''.join('; %s %s -> %s' % (c.attr, c.old, c.new)
                                 for c in changes
                                 if c.attr != 'driver_cache')})

    def _set_cache_mode(self, conf):
        _NOVA_DRIVER._set_cache_mode(self, conf)
        # Nova's second pass over every disk (_get_guest_storage_config)
        # resets the cache: a <shareable/> disk gets 'none', which is
        # already the policy's mode unless it is directsync. Only disks
        # the policy decided are changed back, without a second log line.
        if (getattr(conf, 'shareable', False)
                and conf.driver_cache != self._shared_cache_mode
                and self._shared_disks is not None):
            shared = self._shared_disks.get(conf)
            if shared is not None:
                self._enforce(conf, shared)

    def _enforce(self, conf, shared):
        """Apply the policy to one shared disk; return what it changed."""
        changes = policy.plan(conf, self._shared_cache_mode, shared)
        if changes:
            policy.apply(conf, changes)
        return changes

    # -- the connect-time hook --------------------------------------------

    def _connect_volume(self, context, connection_info, instance,
                        *args, **kwargs):
        backend = policy.find_backend(connection_info, self._shared_backends)
        if backend is not None:
            new_attachment = _NEW_ATTACHMENT.get()
            with _instance_scope(instance):
                try:
                    backend.on_connect(context, connection_info, instance,
                                       shared=policy.is_multiattach(
                                           connection_info),
                                       new_attachment=new_attachment)
                except Exception as err:
                    # A backend may refuse a new attachment; what already
                    # runs is reconnected whatever the backend says.
                    if new_attachment:
                        raise
                    LOG.warning(
                        "nova-shared-cache: backend %(backend)s failed on "
                        "the reconnect of volume %(volume)s to instance "
                        "%(instance)s (%(type)s: %(err)s); reconnecting it "
                        "as stock Nova would",
                        {'backend': backend.name,
                         'volume': policy.volume_id(connection_info),
                         'instance': getattr(instance, 'uuid', None),
                         'type': type(err).__name__, 'err': err})
        return super()._connect_volume(context, connection_info, instance,
                                       *args, **kwargs)

    # -- entry points that know the instance (for the log line) -----------

    # NOTE: Nova's own tests (test_public_api_signatures) require the
    # public methods to keep the base class's signatures.
    def attach_volume(self, context, connection_info, instance, mountpoint,
                      disk_bus=None, device_type=None, encryption=None):
        with _instance_scope(instance), _scope(_NEW_ATTACHMENT, True):
            return super().attach_volume(
                context, connection_info, instance, mountpoint,
                disk_bus=disk_bus, device_type=device_type,
                encryption=encryption)

    def swap_volume(self, context, old_connection_info, new_connection_info,
                    instance, mountpoint, resize_to):
        swapped_in = policy.classify(new_connection_info,
                                     self._shared_backends)
        with _instance_scope(instance), _scope(_NEW_ATTACHMENT, True), \
                _scope(_SWAPPED_IN, swapped_in):
            return super().swap_volume(context, old_connection_info,
                                       new_connection_info, instance,
                                       mountpoint, resize_to)

    def _create_guest(self, context, xml, *args, **kwargs):
        instance = args[0] if args else kwargs.get('instance')
        with _instance_scope(instance):
            xml = self._shared_xml(xml)
        return super()._create_guest(context, xml, *args, **kwargs)

    def _shared_xml(self, xml):
        """Nova's XML, with its shared RBD disks made safe if they cache.

        Nova builds most XML itself (through _set_cache_mode), but some
        starts reuse an old live XML: unrescue starts the XML saved at
        rescue. After a live switch (``fix --live``, the swap repair) that
        XML still has the old cache mode, and the libvirt hook would refuse
        the start. A caching RBD disk that is ``<shareable/>`` or recorded
        as switched is corrected here, exactly as the hook would; any other
        XML is returned as it is.
        """
        if not isinstance(xml, str) or not (domxml.METADATA_NS in xml
                                            or '<shareable' in xml):
            return xml
        try:
            doc = domxml.parse(xml)
            changed = domxml.fix_shared_disks(
                doc, self._shared_settings.cache_mode)
            if not changed:
                return xml
            fixed = domxml.to_text(doc)
        except Exception as err:
            LOG.warning("nova-shared-cache could not read the domain XML "
                        "of instance %(instance)s to check its shared "
                        "disks (%(type)s: %(err)s); starting it as Nova "
                        "wrote it", {'instance': _INSTANCE_UUID.get(),
                                     'type': type(err).__name__,
                                     'err': err})
            return xml
        LOG.info("nova-shared-cache corrected the shared disk(s) of the XML "
                 "Nova starts for instance %(instance)s: %(changes)s",
                 {'instance': _INSTANCE_UUID.get() or 'unknown',
                  'changes': '; '.join('%s: %s' % (d.target, ', '.join(c))
                                       for d, c in changed)})
        return fixed

    def _swap_volume(self, guest, disk_dev, conf, resize_to, *args,
                     **kwargs):
        super()._swap_volume(guest, disk_dev, conf, resize_to, *args,
                             **kwargs)
        shared = _SWAPPED_IN.get()
        if shared is None:
            return
        # NOTE: libvirt's block copy keeps the old disk's cache mode and
        # <shareable/> (only the source and format come from the new
        # disk's XML), and Nova then saves the live XML as the definition:
        # a caching disk swapped to a shared volume would go on caching.
        self._after_swap(guest, disk_dev, shared)

    def _after_swap(self, guest, disk_dev, shared):
        from nova_shared_cache.libvirt import livefix
        who = {'instance': _INSTANCE_UUID.get() or 'unknown',
               'volume_id': shared.volume_id, 'volume': shared.volume,
               'disk': disk_dev, 'mode': self._shared_settings.cache_mode}
        try:
            domain = getattr(guest, '_domain', guest)
            # Nova's libvirt module (its fake one in Nova's tests).
            report = livefix.after_block_copy(
                domain, disk_dev, who['mode'],
                libvirt_mod=libvirt_driver.libvirt)
        except Exception as err:
            report = {'state': 'error',
                      'error': '%s: %s' % (type(err).__name__, err)}
        if report['state'] in ('unchanged', 'not-an-rbd-disk'):
            return
        if report['state'] == 'fixed':
            LOG.info("Swapped-in shared volume %(volume_id)s (%(volume)s) "
                     "of instance %(instance)s: disk %(disk)s switched to "
                     "cache='%(mode)s' and <shareable/> after the block copy "
                     "(libvirt keeps the old disk's cache mode)", who)
            return
        LOG.warning(
            "Swapped-in shared volume %(volume_id)s (%(volume)s) of instance "
            "%(instance)s: disk %(disk)s keeps the old disk's cache mode "
            "after the block copy and could not be switched (%(state)s: "
            "%(error)s); it caches until it is repaired: run "
            "'nova-shared-cache fix --live --domain %(domain)s' on this "
            "host, or hard reboot the instance",
            dict(who, state=report['state'],
                 error=report.get('error') or report.get('live', {}).get(
                     'error') or 'see above',
                 domain=self._domain_name(guest)))

    @staticmethod
    def _domain_name(guest):
        try:
            return guest.name
        except Exception:
            return '<domain>'

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        with _instance_scope(instance), _scope(_NEW_ATTACHMENT, True):
            return super().spawn(
                context, instance, image_meta, injected_files,
                admin_password, allocations, network_info=network_info,
                block_device_info=block_device_info, power_on=power_on,
                accel_info=accel_info)

    def _get_guest_storage_config(self, context, instance, *args, **kwargs):
        with _instance_scope(instance):
            return super()._get_guest_storage_config(context, instance,
                                                     *args, **kwargs)

    def _live_migration_operation(self, context, instance, *args, **kwargs):
        with _instance_scope(instance):
            return super()._live_migration_operation(context, instance,
                                                     *args, **kwargs)
