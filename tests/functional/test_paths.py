"""Operations on one compute that write a server's disk XML again."""

import datetime
import os

import nova.conf
from oslo_utils.fixture import uuidsentinel as uuids

from tests.functional import base

CONF = nova.conf.CONF


class RegeneratedXmlTest(base.SharedCacheFunctionalTest):

    def setUp(self):
        super().setUp()
        self.start_compute()
        self.servers = [self._create_server(networks='none')
                        for _ in range(2)]
        for server in self.servers:
            self.attach(server, self.cinder.SHARED_VOL)
        self.server = self.servers[0]
        self.forget_sent()

    def assert_shared_xml_sent(self):
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL))
        self.assert_root_disks_untouched()

    def test_hard_reboot(self):
        self._reboot_server(self.server, hard=True)
        self.assert_shared_xml_sent()

    def test_stop_start(self):
        self._stop_server(self.server)
        self._start_server(self.server)
        self._wait_for_state_change(self.server, 'ACTIVE')
        self.assert_shared_xml_sent()

    def test_shelve_offload_unshelve(self):
        self.flags(shelved_offload_time=0)
        self._shelve_server(self.server, 'SHELVED_OFFLOADED')
        self.forget_sent()
        self._unshelve_server(self.server)
        self.assert_shared_xml_sent()

    def _prepare_rescue(self):
        # Rescue saves the domain XML into the instance directory, which
        # the functional base never creates (image creation is stubbed).
        os.makedirs(os.path.join(CONF.instances_path, self.server['id']),
                    exist_ok=True)

    def test_stable_device_rescue_and_unrescue(self):
        self._prepare_rescue()
        # An image asking for a stable device rescue keeps every disk,
        # volumes included, in the rescue domain.
        rescue_image = self._create_rescue_image()
        self.rescue(self.server, rescue_image)
        self.assert_shared_xml_sent()

        # Unrescue restores the XML libvirt reported before the rescue.
        self.forget_sent()
        self.unrescue(self.server)
        self.assert_shared_xml_sent()

    def test_legacy_rescue_unrescue(self):
        # A legacy rescue domain has no volumes at all; unrescue must bring
        # the shared disk back as it was.
        self._prepare_rescue()
        self.rescue(self.server)
        self.assertEqual([], self.disks_sent(self.cinder.SHARED_VOL))
        self.unrescue(self.server)
        self.assert_shared_xml_sent()

    def _create_rescue_image(self):
        image = {
            'id': uuids.nsc_stable_rescue_image,
            'name': 'stable-rescue',
            'created_at': datetime.datetime(2026, 1, 1),
            'updated_at': datetime.datetime(2026, 1, 1),
            'deleted_at': None,
            'deleted': False,
            'status': 'active',
            'is_public': True,
            'container_format': 'bare',
            'disk_format': 'raw',
            'size': 1024,
            'min_ram': 0,
            'min_disk': 0,
            'protected': False,
            'visibility': 'public',
            'properties': {'hw_rescue_device': 'disk',
                           'hw_rescue_bus': 'virtio'},
        }
        return self.glance.create(None, image)['id']


class BootFromSharedVolumeTest(base.SharedCacheFunctionalTest):

    def test_boot_from_multiattach_volume(self):
        self.start_compute()
        server = self.boot_from_volume(self.cinder.SHARED_BOOT_VOL)
        root = self.disks_sent(self.cinder.SHARED_BOOT_VOL)
        self.assert_shared(root)
        for disk in root:
            self.assertEqual('vda', disk.find('target').get('dev'))

        # A second server shares the same volume as a data disk.
        other = self._create_server(networks='none')
        self.forget_sent()
        self.attach(other, self.cinder.SHARED_BOOT_VOL)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_BOOT_VOL),
                           count=1)

        self.forget_sent()
        self._reboot_server(server, hard=True)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_BOOT_VOL))


class SwapSharedVolumeTest(base.SharedCacheFunctionalTest):
    """Cinder migrates a multiattach volume and has Nova swap to the copy.

    Nova refuses to swap a multiattach volume attached to more than one
    server, so the volume is attached to one server here.
    """

    def test_swap_to_multiattach_volume(self):
        self.start_compute()
        server = self._create_server(networks='none')
        self.attach(server, self.cinder.MIGRATING_SHARED_VOL)
        self.forget_sent()

        self.api.put_server_volume(server['id'],
                                   self.cinder.MIGRATING_SHARED_VOL,
                                   self.cinder.SHARED_VOL_2)
        self._wait_for_volume_attach(server['id'], self.cinder.SHARED_VOL_2)
        # The block copy destination libvirt is given is the shared disk.
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL_2))
