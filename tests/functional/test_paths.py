"""Operations that regenerate a server's whole domain XML."""

from tests.functional import base


class RegeneratedXmlTest(base.SharedCacheFunctionalTest):

    def setUp(self):
        super().setUp()
        self.flags(disk_cachemodes=['network=writeback'], group='libvirt')
        self.flags(cache_mode='directsync', group='shared_cache')
        self.start_compute()
        self.servers = [self._create_server(networks='none')
                        for _ in range(2)]
        for server in self.servers:
            self._attach_volume(server, self.cinder.MULTIATTACH_VOL)

    def assert_new_xml_is_shared(self, operation):
        del self.sent_xml[:]
        operation(self.servers[0])
        disks = self.disks_sent('volumes/volume-shared')
        self.assertTrue(disks, 'no XML with the shared disk was sent')
        for disk in disks:
            self.assertIsNotNone(disk.find('shareable'))
            self.assertEqual('directsync', disk.find('driver').get('cache'))

    def test_hard_reboot(self):
        self.assert_new_xml_is_shared(
            lambda server: self._reboot_server(server, hard=True))

    def test_stop_start(self):
        def stop_start(server):
            self._stop_server(server)
            self._start_server(server)
            self._wait_for_state_change(server, 'ACTIVE')
        self.assert_new_xml_is_shared(stop_start)
