"""Nova's libvirt driver (the extension or stock) against the real libvirtd.

This is a harness, not a nova-compute: it configures Nova's global CONF for
``virt_type = qemu`` on ``qemu:///system``, builds Nova ``Instance`` objects
the way the compute manager hands them to the driver, and calls the driver's
own methods. Nothing here writes disk XML: Nova generates every domain and
every disk. The two calls that would write to Nova's database
(``instance.save`` and the device-metadata rebuild after an attach) are
replaced by no-ops, because there is no database.
"""

import contextlib
import os
import shutil
import sys
import uuid

from nova_shared_cache_lab import ceph as ceph_cluster
from nova_shared_cache_lab import common
from nova_shared_cache_lab import console as guest_console
from nova_shared_cache_lab import guest as guest_image

INSTANCE_NAME_TEMPLATE = 'instance-%08x'
DOMAIN_PREFIX = 'instance-'
# Instance ids of the stack start here so that they do not look like a
# real cloud's first instances (names instance-7a5e0001 ...).
FIRST_ID = 0x7a5e0001
# Glance ids Nova records for the guest; nothing is downloaded: the kernel,
# initramfs and root disk files are placed in the instance directory.
IMAGE_ID = '7a5e0000-0000-4000-8000-000000000001'
KERNEL_ID = '7a5e0000-0000-4000-8000-000000000002'
RAMDISK_ID = '7a5e0000-0000-4000-8000-000000000003'


class BDM(dict):
    """A block device mapping as the driver sees it; ``save`` is a no-op."""

    def save(self):
        pass


def exit_process(status):
    """Leave the process even though Nova's libvirt threads still run.

    Nova's libvirt event threads run forever (``Host.cleanup`` does not stop
    them, see its TODO) and futurist joins its workers at interpreter exit,
    so a harness process would never end. Call this last, after every
    report has been written; it returns only when no such thread runs.
    """
    import threading
    if any(t is not threading.main_thread() and t.is_alive()
           for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


class VolumeAPI:
    """Answers the one Cinder question the driver asks on disconnect.

    For a multiattach volume Nova asks Cinder for the volume's attachments
    and keeps the host connection while another local instance uses it.
    """

    def __init__(self, compute):
        self.compute = compute

    def get(self, context, volume_id, microversion=None):
        attachments = {uuid: {'attachment_id': None, 'mountpoint': mp}
                       for uuid, vols in self.compute.volumes.items()
                       for vid, (ci, mp) in vols.items() if vid == volume_id}
        return {'id': volume_id, 'attachments': attachments,
                'multiattach': True}


class Compute:

    def __init__(self, root=None, extension=True, cache_mode='none',
                 disk_cachemodes=(), host='nsc-compute'):
        self.root = os.path.join(root or common.root_dir(), 'nova')
        self.extension = extension
        self.host = host
        self.instances = {}
        self.volumes = {}   # instance uuid -> {volume_id: (ci, mountpoint)}
        self._configure(cache_mode, disk_cachemodes)
        self.driver = self._make_driver()
        # Nova's libvirt event loop (device-removed events end a detach);
        # it must exist before the first connection is opened.
        self.driver._host.initialize()
        self._next_id = self._first_free_id()
        from nova import context as nova_context
        self.context = nova_context.get_admin_context()

    # -- configuration -------------------------------------------------------

    def _configure(self, cache_mode, disk_cachemodes):
        import nova.conf
        from nova import objects
        objects.register_all()
        conf = nova.conf.CONF
        if not conf._args:
            conf([], project='nova', default_config_files=[])
        # nova-compute registers these at start (nova/cmd/compute.py).
        import nova.conf.neutron
        nova.conf.neutron.register_dynamic_opts(conf)
        os.makedirs(os.path.join(self.root, 'instances'), exist_ok=True)
        os.chmod(self.root, 0o755)
        overrides = {
            None: dict(
                compute_driver='shared_cache.LibvirtSharedCacheDriver'
                if self.extension else 'libvirt.LibvirtDriver',
                instances_path=os.path.join(self.root, 'instances'),
                state_path=self.root,
                host=self.host,
                instance_name_template=INSTANCE_NAME_TEMPLATE,
                use_cow_images=False),
            'libvirt': dict(
                virt_type='qemu', connection_uri='qemu:///system',
                images_type='raw', cpu_mode='none',
                hw_machine_type=['x86_64=pc'],
                disk_cachemodes=list(disk_cachemodes),
                device_detach_timeout=10, device_detach_attempts=3),
            'vnc': dict(enabled=False),
            'spice': dict(enabled=False),
            'serial_console': dict(enabled=False),
        }
        if self.extension:
            from nova_shared_cache import driver as sc_driver  # noqa: F401
            overrides['shared_cache'] = dict(
                cache_mode=cache_mode,
                ceph_conf=ceph_cluster.Cluster(
                    os.path.dirname(self.root)).client_conf)
        for group, values in overrides.items():
            for name, value in values.items():
                conf.set_override(name, value, group=group)

    def _make_driver(self, host=None):
        from nova.virt import driver as virt_driver
        from nova.virt import fake
        driver = virt_driver.load_compute_driver(fake.FakeVirtAPI())
        if host is not None:
            driver._host = host
        # Reports the host's state to the service record in the database.
        driver._set_host_enabled = lambda *args, **kwargs: None
        driver._volume_api = VolumeAPI(self)
        return driver

    def switch_driver(self, extension, cache_mode='none', disk_cachemodes=()):
        """Replace the driver (extension or stock Nova), keeping the host.

        Nova's libvirt event loop can be registered once per process, so the
        new driver reuses the initialised Host of the first one. Instances
        and their volumes stay as they are.
        """
        self.extension = extension
        self._configure(cache_mode, disk_cachemodes)
        self.driver = self._make_driver(host=self.driver._host)

    def _first_free_id(self):
        """Never reuse the name of a domain libvirt still has."""
        used = [FIRST_ID - 1]
        for dom in self.driver._host.get_connection().listAllDomains():
            name = dom.name()
            if name.startswith(DOMAIN_PREFIX):
                try:
                    used.append(int(name[len(DOMAIN_PREFIX):], 16))
                except ValueError:
                    pass
        return max(max(used) + 1, FIRST_ID)

    # -- instances -----------------------------------------------------------

    def new_instance(self, memory_mb=128):
        from nova import objects
        instance_id, self._next_id = self._next_id, self._next_id + 1
        flavor = objects.Flavor(
            id=1, flavorid='nsc.tiny', name='nsc.tiny', memory_mb=memory_mb,
            vcpus=1, root_gb=0, ephemeral_gb=0, swap=0, extra_specs={},
            rxtx_factor=1.0, vcpu_weight=None, is_public=True)
        instance = objects.Instance(
            context=None, id=instance_id, uuid=str(uuid.uuid4()),
            host=self.host, node=self.host, launched_on=self.host,
            project_id='nsc-project', user_id='nsc-user',
            display_name='nsc-vm-%x' % instance_id, hostname='nsc-vm',
            flavor=flavor, old_flavor=None, new_flavor=None,
            image_ref=IMAGE_ID, kernel_id=KERNEL_ID,
            ramdisk_id=RAMDISK_ID, root_device_name='/dev/vda',
            os_type=None, vm_mode=None, config_drive='',
            numa_topology=None, pci_requests=None, pci_devices=None,
            resources=None, trusted_certs=None, vcpu_model=None,
            ephemeral_key_uuid=None, device_metadata=None,
            key_data=None, user_data=None, info_cache=None,
            metadata={}, migration_context=None,
            system_metadata={
                'image_os_command_line': guest_image.CMDLINE,
                'image_hw_disk_bus': 'virtio',
                'image_disk_format': 'raw',
                'image_container_format': 'bare',
                'image_min_ram': '0', 'image_min_disk': '0',
            },
            memory_mb=memory_mb, vcpus=1, root_gb=0, ephemeral_gb=0,
            power_state=0, vm_state='active', task_state=None)
        # Everything else the driver might read is set, to None where Nova
        # allows it: an orphaned Instance cannot lazy-load from a database.
        for name, field in instance.fields.items():
            if not instance.obj_attr_is_set(name) and field.nullable:
                setattr(instance, name, None)
        instance.obj_reset_changes()
        return instance

    def _instance_dir(self, instance):
        return os.path.join(self.root, 'instances', instance.uuid)

    def _prepare_files(self, instance):
        kernel, initrd = guest_image.build()
        inst_dir = self._instance_dir(instance)
        os.makedirs(inst_dir, exist_ok=True)
        os.chmod(inst_dir, 0o755)
        shutil.copy(kernel, os.path.join(inst_dir, 'kernel'))
        shutil.copy(initrd, os.path.join(inst_dir, 'ramdisk'))
        # The root disk Nova expects; the guest runs from its initramfs.
        with open(os.path.join(inst_dir, 'disk'), 'wb') as f:
            f.truncate(1 << 20)

    def block_device_info(self, instance):
        mappings = []
        for volume_id, (ci, mountpoint) in self.volumes.get(
                instance.uuid, {}).items():
            mappings.append(BDM(
                connection_info=ci, mount_device=mountpoint,
                delete_on_termination=False, boot_index=None,
                disk_bus='virtio', device_type='disk', guest_format=None,
                volume_id=volume_id, attachment_id=None))
        return {'root_device_name': '/dev/vda', 'ephemerals': [],
                'swap': None, 'block_device_mapping': mappings}

    def boot(self, instance):
        """Nova's spawn path minus image download and networking."""
        from nova.virt.libvirt import blockinfo
        self._prepare_files(instance)
        bdi = self.block_device_info(instance)
        disk_info = blockinfo.get_disk_info(
            'qemu', instance, instance.image_meta, bdi)
        with self._no_db(instance):
            xml = self.driver._get_guest_xml(
                self.context, instance, [], disk_info, instance.image_meta,
                block_device_info=bdi)
            self.driver._create_guest_with_network(
                self.context, xml, instance, [], bdi,
                vifs_already_plugged=True)
        self.instances[instance.uuid] = instance
        return instance

    def hard_reboot(self, instance):
        with self._no_db(instance):
            self.driver.reboot(self.context, instance, [], 'HARD',
                               block_device_info=self.block_device_info(
                                   instance))

    def attach(self, instance, connection_info, mountpoint='/dev/vdb'):
        with self._no_db(instance):
            self.driver.attach_volume(self.context, connection_info,
                                      instance, mountpoint)
        self.volumes.setdefault(instance.uuid, {})[
            connection_info['serial']] = (connection_info, mountpoint)

    def detach(self, instance, connection_info, mountpoint='/dev/vdb'):
        with self._no_db(instance):
            self.driver.detach_volume(self.context, connection_info,
                                      instance, mountpoint)
        self.volumes.get(instance.uuid, {}).pop(connection_info['serial'],
                                                None)

    def swap(self, instance, old_ci, new_ci, mountpoint='/dev/vdb'):
        """Nova's swap_volume (what a Cinder migration of the volume asks)."""
        with self._no_db(instance):
            self.driver.swap_volume(self.context, old_ci, new_ci, instance,
                                    mountpoint, None)
        volumes = self.volumes.setdefault(instance.uuid, {})
        volumes.pop(old_ci['serial'], None)
        volumes[new_ci['serial']] = (new_ci, mountpoint)

    def destroy(self, instance):
        with self._no_db(instance):
            self.driver.destroy(self.context, instance, [],
                                block_device_info=self.block_device_info(
                                    instance), destroy_disks=True)
        self.instances.pop(instance.uuid, None)

    @contextlib.contextmanager
    def _no_db(self, instance):
        from unittest import mock

        from nova import objects
        with mock.patch.object(type(instance), 'save', autospec=True), \
                mock.patch.object(self.driver, '_build_device_metadata',
                                  return_value=None), \
                mock.patch.object(objects.InstanceList, 'get_uuids_by_host',
                                  side_effect=lambda *a, **k: list(
                                      self.instances)):
            yield

    def close(self):
        self.driver._host.cleanup()

    # -- looking at the result ----------------------------------------------

    def domain(self, instance):
        return self.driver._host.get_guest(instance)

    def disk_xml(self, instance, serial):
        """The <disk> libvirt reports for a volume (live XML)."""
        from lxml import etree
        doc = etree.fromstring(self.domain(instance).get_xml_desc())
        for disk in doc.findall('./devices/disk'):
            if disk.findtext('serial') == serial:
                return etree.tostring(disk, encoding='unicode')
        return None

    def console(self, instance):
        from lxml import etree
        doc = etree.fromstring(self.domain(instance).get_xml_desc())
        path = doc.find("./devices/serial[@type='pty']/source").get('path')
        return guest_console.Console(path)
