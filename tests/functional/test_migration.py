"""Moving a server with a shared disk to a second compute."""

from unittest import mock

from tests.functional import base

# The functional base stubs image creation; Nova's own functional tests stub
# the disk copy of a cold migration the same way.
MIGRATE_DISKS = ('nova.virt.libvirt.driver.LibvirtDriver'
                 '.migrate_disk_and_power_off')


class MoveSharedServerTest(base.SharedCacheFunctionalTest):

    def setUp(self):
        super().setUp()
        self.start_compute('host1')
        self.start_compute('host2')
        self.server = self._create_server(networks='none', host='host1')
        self.other = self._create_server(networks='none', host='host1')
        for server in (self.server, self.other):
            self.attach(server, self.cinder.SHARED_VOL)
        self.forget_sent()

    def assert_moved_with_shared_disk(self):
        self.assertEqual('host2', self.host_of(self.server))
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL))
        self.assert_root_disks_untouched()

    def test_resize_to_second_compute(self):
        flavor = self._create_flavor(memory_mb=1024, vcpu=2, disk=20)
        with mock.patch(MIGRATE_DISKS, return_value='{}'):
            self.server = self._resize_server(self.server, flavor)
        self.assert_moved_with_shared_disk()
        self._confirm_resize(self.server)
        self.assertEqual('ACTIVE', self.api.get_server(
            self.server['id'])['status'])

    def test_cold_migrate_to_second_compute(self):
        with mock.patch(MIGRATE_DISKS, return_value='{}'):
            self.server = self._migrate_server(self.server, host='host2')
        self.assert_moved_with_shared_disk()
        self._confirm_resize(self.server)

    def test_resize_revert_back_to_first_compute(self):
        flavor = self._create_flavor(memory_mb=1024, vcpu=2, disk=20)
        with mock.patch(MIGRATE_DISKS, return_value='{}'):
            self.server = self._resize_server(self.server, flavor)
            self.forget_sent()
            self._revert_resize(self.server)
        self.assertEqual('host1', self.host_of(self.server))
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL))


class LiveMigrateSharedServerTest(base.SharedCacheFunctionalTest):
    """Live migration applies the extension to servers attached before it.

    Servers attached before the extension was installed on their compute
    (cache none, Nova's choice) get the configured mode on the destination
    of a live migration: the source's driver writes the destination XML.
    """

    def setUp(self):
        super().setUp()
        self.start_compute('host1', extension=False)
        self.start_compute('host2')
        self.server = self._create_server(networks='none', host='host1')
        other = self._create_server(networks='none', host='host1')
        for server in (self.server, other):
            self.attach(server, self.cinder.SHARED_VOL)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL),
                           cache_mode='none', count=2)
        self.upgrade_compute('host1')
        self.forget_sent()
        self.migrate_xml = []
        self.useFixture(base.fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate))

    def _migrate(self, domain, destination, params, flags):
        # What the source sends: the domain XML as the destination must
        # define it, built by the source's driver.
        self.migrate_xml.append(params['destination_xml'])
        self.computes['host2'].driver._host.get_connection().createXML(
            params['destination_xml'], 0)
        source = self.computes['host1'].driver._host.get_connection()
        source.lookupByUUIDString(self.server['id']).complete_job()

    def test_live_migration_destination_xml(self):
        self._live_migrate(self.server, 'completed')
        self.assertEqual('host2', self.host_of(self.server))
        self.assertEqual(1, len(self.migrate_xml))
        self.sent_xml[:] = self.migrate_xml
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=1)
        self.assert_root_disks_untouched()


class MixedFleetTest(base.SharedCacheFunctionalTest):
    """During an upgrade one compute runs the extension and one does not.

    Each compute's disks follow its own driver: a shared disk is always
    <shareable/> and uncached (stock Nova's 'none' or the configured
    'directsync'), so the two servers stay coherent with each other, and
    moving a server to the upgraded compute applies the extension.
    """

    def setUp(self):
        super().setUp()
        self.start_compute('upgraded', extension=True)
        self.start_compute('stock', extension=False)
        self.on_upgraded = self._create_server(networks='none',
                                               host='upgraded')
        self.on_stock = self._create_server(networks='none', host='stock')

    def test_each_compute_applies_its_own_driver(self):
        self.attach(self.on_upgraded, self.cinder.SHARED_VOL)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=1)

        self.forget_sent()
        self.attach(self.on_stock, self.cinder.SHARED_VOL)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL),
                           cache_mode='none', count=1)

    def test_cold_migrate_from_stock_to_upgraded_compute(self):
        for server in (self.on_upgraded, self.on_stock):
            self.attach(server, self.cinder.SHARED_VOL)
        self.forget_sent()
        with mock.patch(MIGRATE_DISKS, return_value='{}'):
            server = self._migrate_server(self.on_stock, host='upgraded')
        self.assertEqual('upgraded', self.host_of(server))
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL))
        self._confirm_resize(server)
