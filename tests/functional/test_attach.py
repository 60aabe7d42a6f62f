"""POST /servers/{id}/os-volume_attachments (openstack server add volume)."""

from tests.functional import base


class AttachSharedVolumeTest(base.SharedCacheFunctionalTest):

    def _attach_to_two_servers(self):
        self.start_compute()
        servers = [self._create_server(networks='none') for _ in range(2)]
        for server in servers:
            self._attach_volume(server, self.cinder.MULTIATTACH_VOL)
        return self.disks_sent('volumes/volume-shared')

    def test_two_servers_get_shareable_directsync(self):
        self.flags(disk_cachemodes=['network=writeback'], group='libvirt')
        self.flags(cache_mode='directsync', group='shared_cache')
        disks = self._attach_to_two_servers()
        self.assertEqual(2, len(disks))
        for disk in disks:
            self.assertIsNotNone(disk.find('shareable'))
            self.assertEqual('directsync', disk.find('driver').get('cache'))

    def test_two_servers_get_shareable_none(self):
        self.flags(disk_cachemodes=['network=writeback'], group='libvirt')
        disks = self._attach_to_two_servers()
        self.assertEqual(2, len(disks))
        for disk in disks:
            self.assertIsNotNone(disk.find('shareable'))
            self.assertEqual('none', disk.find('driver').get('cache'))


class StockNovaAttachTest(base.SharedCacheFunctionalTest):
    """The same request without the extension: no directsync."""

    EXTENSION = False

    def test_stock_nova_ignores_cache_mode(self):
        self.flags(cache_mode='directsync', group='shared_cache')
        self.start_compute()
        servers = [self._create_server(networks='none') for _ in range(2)]
        for server in servers:
            self._attach_volume(server, self.cinder.MULTIATTACH_VOL)
        disks = self.disks_sent('volumes/volume-shared')
        self.assertEqual(2, len(disks))
        self.assertEqual(['none', 'none'],
                         [d.find('driver').get('cache') for d in disks])
