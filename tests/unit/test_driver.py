"""The driver on Nova's real LibvirtDriver code, with fake libvirt."""

from unittest import mock

from lxml import etree
from nova.compute import power_state
from nova import context as nova_context
from nova import objects
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import migration
from nova.virt.libvirt.volume import net as volume_net

from nova_shared_cache import driver as sc_driver
from nova_shared_cache import exception
from tests.unit import base


def disk_xml(drv, info):
    return base.volume_config(drv, info).to_xml()


def driver_elem(xml):
    return etree.fromstring(xml).find('driver')


class SharedDiskXmlTest(base.TestCase):

    def test_rbd_multiattach_is_shareable_with_cache_none(self):
        xml = disk_xml(self.make_driver(), base.connection_info())
        doc = etree.fromstring(xml)
        self.assertIsNotNone(doc.find('shareable'))
        self.assertEqual('none', doc.find('driver').get('cache'))
        self.assertEqual('raw', doc.find('driver').get('type'))

    def test_directsync(self):
        self.shared_cache_flags(cache_mode='directsync')
        doc = etree.fromstring(disk_xml(self.make_driver(),
                                        base.connection_info()))
        self.assertIsNotNone(doc.find('shareable'))
        self.assertEqual('directsync', doc.find('driver').get('cache'))

    def test_disk_cachemodes_writeback_only_for_non_shared(self):
        self.flags(disk_cachemodes=['network=writeback'], group='libvirt')
        self.shared_cache_flags(cache_mode='directsync')
        drv = self.make_driver()
        single = base.connection_info(multiattach=False)
        self.assertEqual('writeback',
                         driver_elem(disk_xml(drv, single)).get('cache'))
        self.assertEqual(
            'directsync',
            driver_elem(disk_xml(drv, base.connection_info())).get('cache'))

    def test_enforced_even_when_nova_does_not_mark_the_disk_shareable(self):
        # Defence in depth: the extension must not rely on Nova's own
        # multiattach handling (a volume driver that forgets shareable, a
        # Nova that changes its rule). Simulate it and compare with stock.
        self.flags(disk_cachemodes=['network=writeback'], group='libvirt')
        real_get_config = volume_net.LibvirtNetVolumeDriver.get_config

        def forgetful_get_config(vol_driver, connection_info, disk_info):
            conf = real_get_config(vol_driver, connection_info, disk_info)
            conf.shareable = False
            return conf

        self.stub_out(
            'nova.virt.libvirt.volume.net.LibvirtNetVolumeDriver.get_config',
            forgetful_get_config)
        info = base.connection_info()

        stock = etree.fromstring(disk_xml(self.make_stock_driver(), info))
        self.assertIsNone(stock.find('shareable'))
        self.assertEqual('writeback', stock.find('driver').get('cache'))

        ours = etree.fromstring(disk_xml(self.make_driver(), info))
        self.assertIsNotNone(ours.find('shareable'))
        self.assertEqual('none', ours.find('driver').get('cache'))

    def test_iscsi_multiattach_left_as_nova_makes_it(self):
        self.shared_cache_flags(cache_mode='directsync',
                                enabled_backends=['rbd'])
        info = base.connection_info(base.ISCSI_CONNECTION_INFO)
        ours = disk_xml(self.make_driver(), info)
        self.assertEqual(disk_xml(self.make_stock_driver(), info), ours)
        self.assertEqual('none', driver_elem(ours).get('cache'))

    def test_non_shared_disks_byte_identical_to_stock(self):
        volumes = {
            'rbd single': base.connection_info(multiattach=False),
            'rbd no multiattach key': {
                k: v for k, v in base.connection_info().items()
                if k != 'multiattach'},
            'rbd multiattach as string': base.connection_info(
                multiattach='True'),
            'iscsi single': base.connection_info(base.ISCSI_CONNECTION_INFO,
                                                 multiattach=False),
            'iscsi multiattach': base.connection_info(
                base.ISCSI_CONNECTION_INFO),
        }
        cachemodes = ([], ['network=writeback'],
                      ['network=unsafe', 'block=writethrough'],
                      ['file=directsync', 'block=writeback'])
        for modes in cachemodes:
            for mode in ('none', 'directsync'):
                self.flags(disk_cachemodes=modes, group='libvirt')
                self.shared_cache_flags(cache_mode=mode)
                ours, stock = self.make_driver(), self.make_stock_driver()
                for name, info in volumes.items():
                    with self.subTest(volume=name, disk_cachemodes=modes,
                                      cache_mode=mode):
                        self.assertEqual(disk_xml(stock, info),
                                         disk_xml(ours, info))
                for disk in self._local_disks():
                    with self.subTest(local=disk.source_type,
                                      disk_cachemodes=modes, cache_mode=mode):
                        mine = self._local_disks()[
                            self._local_disks_index(disk)]
                        stock._set_cache_mode(disk)
                        ours._set_cache_mode(mine)
                        self.assertEqual(disk.to_xml(), mine.to_xml())

    @staticmethod
    def _local_disks():
        disks = []
        for source_type, io in (('file', None), ('block', 'native'),
                                ('network', None)):
            disk = vconfig.LibvirtConfigGuestDisk()
            disk.source_type = source_type
            disk.source_device = 'disk'
            disk.driver_name = 'qemu'
            disk.driver_format = 'qcow2' if source_type == 'file' else 'raw'
            disk.driver_io = io
            disk.target_dev = 'vda'
            disk.target_bus = 'virtio'
            if source_type == 'network':
                disk.source_protocol = 'rbd'
                disk.source_name = 'vms/instance_disk'
            else:
                disk.source_path = '/var/lib/nova/instances/x/disk'
            disks.append(disk)
        return disks

    @staticmethod
    def _local_disks_index(disk):
        return ('file', 'block', 'network').index(disk.source_type)

    def test_names_are_escaped(self):
        name = 'volumes/v\'"<>&-ünïcødé-卷'
        info = base.connection_info(data={'name': name})
        xml = disk_xml(self.make_driver(), info)
        doc = etree.fromstring(xml)
        self.assertEqual(name, doc.find('source').get('name'))
        self.assertIsNotNone(doc.find('shareable'))
        self.assertNotIn('<>', xml)
        self.assertIn('&lt;&gt;&amp;', xml)

    def test_non_raw_shared_disk_refused(self):
        # Nova's volume drivers make every volume raw today; a driver that
        # passed a format layer through must not get a shared qcow2 disk.
        real_get_config = volume_net.LibvirtNetVolumeDriver.get_config

        def qcow2_get_config(vol_driver, connection_info, disk_info):
            conf = real_get_config(vol_driver, connection_info, disk_info)
            conf.driver_format = 'qcow2'
            return conf

        self.stub_out(
            'nova.virt.libvirt.volume.net.LibvirtNetVolumeDriver.get_config',
            qcow2_get_config)
        info = base.connection_info()
        err = self.assertRaises(exception.SharedDiskError,
                                base.volume_config, self.make_driver(), info)
        self.assertIn(base.VOLUME_ID, str(err))
        self.assertIn('volumes/volume-%s' % base.VOLUME_ID, str(err))
        self.assertIn("'qcow2'", str(err))

    def test_second_pass_keeps_policy_and_logs_once(self):
        # _get_guest_storage_config (boot, hard reboot, rescue, resize) calls
        # _set_cache_mode again on every volume disk after _get_volume_config.
        self.shared_cache_flags(cache_mode='directsync')
        drv = self.make_driver()
        conf = base.volume_config(drv, base.connection_info())
        drv._set_cache_mode(conf)
        self.assertEqual('directsync', conf.driver_cache)
        self.assertTrue(conf.shareable)
        self.assertEqual(
            1, self.stdlog.logger.output.count('Shared disk enforced'))

    def test_live_migration_destination_xml(self):
        # The source host regenerates the volume XML for the destination
        # with the destination's connection_info; a source domain with a
        # caching shared disk must come out fixed.
        self.shared_cache_flags(cache_mode='directsync')
        drv = self.make_driver()
        info = base.connection_info()
        source = base.volume_config(drv, info)
        source.driver_cache = 'writeback'
        source.shareable = False
        domain = etree.fromstring(
            '<domain><devices>%s</devices></domain>' % source.to_xml())
        bdm = objects.LibvirtLiveMigrateBDMInfo(
            serial=base.VOLUME_ID, bus='virtio', dev='vdb', type='disk')
        bdm.connection_info = info
        migrate_data = objects.LibvirtLiveMigrateData(bdms=[bdm])
        instance = base.make_instance()

        out = migration._update_volume_xml(domain, migrate_data, instance,
                                           drv._get_volume_config)
        disk = out.find('./devices/disk')
        self.assertEqual('directsync', disk.find('driver').get('cache'))
        self.assertIsNotNone(disk.find('shareable'))


class AttachPathTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.context = nova_context.get_admin_context()
        self.instance = base.make_instance()

    def _attach(self, drv, info):
        guest = mock.Mock()
        guest.get_power_state.return_value = power_state.RUNNING
        with mock.patch.object(drv._host, 'get_guest', return_value=guest), \
                mock.patch.object(drv, '_build_device_metadata',
                                  return_value=None), \
                mock.patch.object(self.instance, 'save'):
            drv.attach_volume(self.context, info, self.instance, '/dev/vdb')
        conf = guest.attach_device.call_args.args[0]
        self.assertEqual({'persistent': True, 'live': True},
                         guest.attach_device.call_args.kwargs)
        return etree.fromstring(conf.to_xml())

    def test_attach_volume_enforces_and_logs(self):
        self.shared_cache_flags(cache_mode='directsync')
        doc = self._attach(self.make_driver(), base.connection_info())
        self.assertEqual('directsync', doc.find('driver').get('cache'))
        self.assertIsNotNone(doc.find('shareable'))

        lines = [line for line in self.stdlog.logger.output.splitlines()
                 if 'Shared disk enforced' in line]
        self.assertEqual(1, len(lines), lines)
        line = lines[0]
        self.assertIn('INFO', line)
        self.assertIn(self.instance.uuid, line)
        self.assertIn(base.VOLUME_ID, line)
        self.assertIn('backend rbd', line)
        self.assertIn('cache none -> directsync', line)

    def test_no_secret_in_logs(self):
        self.flags(debug=True)
        self.shared_cache_flags(cache_mode='directsync')
        self._attach(self.make_driver(), base.connection_info())
        output = self.stdlog.logger.output
        self.assertIn('Shared disk enforced', output)
        self.assertNotIn(base.KEYRING_SECRET, output)

    def test_nothing_logged_when_nova_already_compliant(self):
        doc = self._attach(self.make_driver(), base.connection_info())
        self.assertEqual('none', doc.find('driver').get('cache'))
        self.assertNotIn('Shared disk enforced', self.stdlog.logger.output)

    def test_backend_hook_runs_before_nova_connects(self):
        drv = self.make_driver()
        calls = []
        rbd = drv._shared_backends[0]
        vol_driver = mock.Mock()
        with mock.patch.object(rbd, 'on_connect',
                               side_effect=lambda *a, **kw: calls.append(
                                   ('hook', kw['shared']))), \
                mock.patch.object(drv, '_get_volume_driver',
                                  return_value=vol_driver):
            vol_driver.connect_volume.side_effect = (
                lambda *a: calls.append(('nova', None)))
            drv._connect_volume(self.context, base.connection_info(),
                                self.instance)
            drv._connect_volume(self.context,
                                base.connection_info(multiattach=False),
                                self.instance)
            drv._connect_volume(
                self.context, base.connection_info(base.ISCSI_CONNECTION_INFO),
                self.instance)
        self.assertEqual([('hook', True), ('nova', None),
                          ('hook', False), ('nova', None),
                          ('nova', None)], calls)

    def test_backend_hook_refusal_stops_the_connect(self):
        drv = self.make_driver()
        vol_driver = mock.Mock()
        with mock.patch.object(drv._shared_backends[0], 'on_connect',
                               side_effect=RuntimeError('refused')), \
                mock.patch.object(drv, '_get_volume_driver',
                                  return_value=vol_driver):
            with sc_driver._scope(sc_driver._NEW_ATTACHMENT, True):
                self.assertRaises(RuntimeError, drv._connect_volume,
                                  self.context, base.connection_info(),
                                  self.instance)
        vol_driver.connect_volume.assert_not_called()

    def test_backend_failure_never_stops_a_reconnect(self):
        drv = self.make_driver()
        vol_driver = mock.Mock()
        with mock.patch.object(drv._shared_backends[0], 'on_connect',
                               side_effect=RuntimeError('broken')), \
                mock.patch.object(drv, '_get_volume_driver',
                                  return_value=vol_driver):
            drv._connect_volume(self.context, base.connection_info(),
                                self.instance)
        vol_driver.connect_volume.assert_called_once()
        self.assertIn('reconnecting it as stock Nova would',
                      self.stdlog.logger.output)


class StartXmlTest(base.TestCase):
    """_create_guest corrects the shared disks of an old live XML.

    (What unrescue starts.) Everything else is passed on as it is.
    """

    RECORDED = (
        "<domain type='kvm'><name>instance-1</name><devices>"
        "<disk type='network' device='disk'>"
        "<driver name='qemu' type='raw' cache='writeback'/>"
        "<source protocol='rbd' name='volumes/v1'/>"
        "<target dev='vdb' bus='virtio'/></disk>"
        "<disk type='network' device='disk'>"
        "<driver name='qemu' type='raw' cache='writeback'/>"
        "<source protocol='rbd' name='volumes/v2'/>"
        "<target dev='vdc' bus='virtio'/></disk></devices>"
        "<metadata><nsc:shared-disks xmlns:nsc='%s'>"
        "<disk image='volumes/v1' target='vdb' cache='none'/>"
        "</nsc:shared-disks></metadata></domain>")

    def test_recorded_disk_corrected_others_untouched(self):
        from nova_shared_cache.libvirt import domxml
        drv = self.make_driver()
        xml = self.RECORDED % domxml.METADATA_NS
        fixed = drv._shared_xml(xml)
        disks = {d.target: d for d in domxml.rbd_disks(domxml.parse(fixed))}
        self.assertEqual(('none', True),
                         (disks['vdb'].cache, disks['vdb'].shareable))
        self.assertEqual(('writeback', False),
                         (disks['vdc'].cache, disks['vdc'].shareable))
        self.assertIn('corrected the shared disk(s)',
                      self.stdlog.logger.output)

    def test_other_xml_is_the_same_string(self):
        drv = self.make_driver()
        plain = self.RECORDED.split('<metadata>')[0] + '</domain>'
        self.assertIs(plain, drv._shared_xml(plain))
        broken = '<domain><shareable/>'
        self.assertIs(broken, drv._shared_xml(broken))
        self.assertIn('could not read the domain XML',
                      self.stdlog.logger.output)

    def test_create_guest_starts_the_corrected_xml(self):
        from nova_shared_cache.libvirt import domxml
        drv = self.make_driver()
        seen = []
        with mock.patch.object(sc_driver.libvirt_driver.LibvirtDriver,
                               '_create_guest',
                               side_effect=lambda ctx, xml, *a, **k:
                               seen.append(xml)):
            drv._create_guest(None, self.RECORDED % domxml.METADATA_NS,
                              base.make_instance())
        (disk, _) = domxml.rbd_disks(domxml.parse(seen[0]))
        self.assertEqual('none', disk.cache)


class AfterSwapTest(base.TestCase):
    """The repair after the block copy never fails the swap."""

    def shared(self):
        from nova_shared_cache import policy
        return policy.SharedDisk(backend='rbd', volume_id='vol-1',
                                 volume='volumes/volume-1')

    def test_a_failed_repair_warns_with_the_remedy_and_never_raises(self):
        from nova_shared_cache.libvirt import livefix
        drv = self.make_driver()
        guest = mock.Mock()
        guest.name = 'instance-00000001'
        for outcome in (RuntimeError('QEMU went away'),
                        {'state': 'rolled-back',
                         'live': {'error': 'pause the VM: no answer'}},
                        {'state': 'not-switched', 'error': 'a block job'}):
            with mock.patch.object(livefix, 'after_block_copy',
                                   side_effect=[outcome]):
                drv._after_swap(guest, 'vdb', self.shared())
        log = self.stdlog.logger.output
        self.assertEqual(3, log.count('could not be switched'))
        self.assertIn('error: RuntimeError: QEMU went away', log)
        self.assertIn('rolled-back: pause the VM: no answer', log)
        self.assertIn('not-switched: a block job', log)
        self.assertIn("'nova-shared-cache fix --live --domain "
                      "instance-00000001'", log)

    def test_an_unchanged_disk_is_silent_and_a_fixed_one_logged(self):
        from nova_shared_cache.libvirt import livefix
        drv = self.make_driver()
        with mock.patch.object(livefix, 'after_block_copy',
                               side_effect=[{'state': 'unchanged'},
                                            {'state': 'fixed'}]):
            drv._after_swap(mock.Mock(), 'vdb', self.shared())
            self.assertNotIn('Swapped-in', self.stdlog.logger.output)
            drv._after_swap(mock.Mock(), 'vdb', self.shared())
        self.assertIn("disk vdb switched to cache='none'",
                      self.stdlog.logger.output)


class DecideOnceTest(base.TestCase):
    """The policy decides where Nova builds the disk, once per disk."""

    def test_cache_none_needs_no_memory_and_nova_second_pass_keeps_it(self):
        drv = self.make_driver()
        self.assertIsNone(drv._shared_disks)
        conf = base.volume_config(drv, base.connection_info())
        drv._set_cache_mode(conf)       # _get_guest_storage_config's pass
        self.assertEqual('none', conf.driver_cache)
        self.assertTrue(conf.shareable)

    def test_directsync_remembers_only_shared_disks(self):
        self.shared_cache_flags(cache_mode='directsync')
        drv = self.make_driver()
        shared = base.volume_config(drv, base.connection_info())
        plain = base.volume_config(drv, base.connection_info(
            multiattach=False))
        self.assertIn(shared, drv._shared_disks)
        self.assertNotIn(plain, drv._shared_disks)

    def test_swap_marks_a_shared_volume_swapped_in(self):
        seen = []

        def novas_swap(drv, context, old, new, instance, mountpoint,
                       resize_to):
            seen.append(sc_driver._SWAPPED_IN.get())

        drv = self.make_driver()
        with mock.patch.object(sc_driver._NOVA_DRIVER, 'swap_volume',
                               novas_swap):
            for new in (base.connection_info(),
                        base.connection_info(multiattach=False),
                        base.connection_info(base.ISCSI_CONNECTION_INFO),
                        mock.sentinel.not_a_dict, None):
                drv.swap_volume(None, {}, new, base.make_instance(),
                                '/dev/vdb', 0)
        self.assertEqual(base.VOLUME_ID, seen[0].volume_id)
        self.assertEqual([None] * 4, seen[1:])
        self.assertIsNone(sc_driver._SWAPPED_IN.get())

    def test_the_repair_runs_after_the_copy_of_a_shared_volume_only(self):
        drv = self.make_driver()
        shared = mock.sentinel.shared
        with mock.patch.object(sc_driver._NOVA_DRIVER, '_swap_volume'), \
                mock.patch.object(drv, '_after_swap') as after:
            drv._swap_volume(mock.sentinel.guest, 'vdb', None, 0)
            after.assert_not_called()
            token = sc_driver._SWAPPED_IN.set(shared)
            try:
                drv._swap_volume(mock.sentinel.guest, 'vdb', None, 0)
            finally:
                sc_driver._SWAPPED_IN.reset(token)
        after.assert_called_once_with(mock.sentinel.guest, 'vdb', shared)
