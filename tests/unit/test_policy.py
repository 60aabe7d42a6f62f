"""The pure policy, on Nova's config objects."""

from nova.virt.libvirt import config as vconfig

from nova_shared_cache.backends import rbd
from nova_shared_cache import exception
from nova_shared_cache import policy
from tests.unit import base


def rbd_backend():
    backend = rbd.RbdBackend(None)
    backend.name = 'rbd'
    return backend


def disk(cache='writeback', shareable=False, fmt='raw', io=None):
    conf = vconfig.LibvirtConfigGuestDisk()
    conf.driver_cache = cache
    conf.shareable = shareable
    conf.driver_format = fmt
    conf.driver_io = io
    return conf


class ClassifyTest(base.TestCase):

    def test_rbd_multiattach_is_shared(self):
        shared = policy.classify(base.connection_info(), [rbd_backend()])
        self.assertEqual(policy.SharedDisk(
            backend='rbd', volume_id=base.VOLUME_ID,
            volume='volumes/volume-%s' % base.VOLUME_ID), shared)

    def test_not_shared(self):
        backends = [rbd_backend()]
        for info in (None, {},
                     base.connection_info(multiattach=False),
                     base.connection_info(multiattach='True'),
                     base.connection_info(base.ISCSI_CONNECTION_INFO)):
            with self.subTest(info=info):
                self.assertIsNone(policy.classify(info, backends))

    def test_no_backend_enabled(self):
        self.assertIsNone(policy.classify(base.connection_info(), []))

    def test_volume_id_from_data_when_no_serial(self):
        info = base.connection_info()
        del info['serial']
        self.assertEqual(base.VOLUME_ID, policy.volume_id(info))


class PlanTest(base.TestCase):

    shared = policy.SharedDisk('rbd', base.VOLUME_ID, 'volumes/v')

    def test_caching_disk_planned(self):
        conf = disk(cache='writeback', shareable=False, fmt=None)
        changes = policy.plan(conf, 'directsync', self.shared)
        self.assertEqual(
            [policy.Change('shareable', False, True),
             policy.Change('driver_cache', 'writeback', 'directsync'),
             policy.Change('driver_format', None, 'raw')], changes)
        self.assertEqual('writeback', conf.driver_cache, 'plan is pure')
        policy.apply(conf, changes)
        self.assertEqual((True, 'directsync', 'raw'),
                         (conf.shareable, conf.driver_cache,
                          conf.driver_format))

    def test_compliant_disk_needs_nothing(self):
        for mode in ('none', 'directsync'):
            conf = disk(cache=mode, shareable=True, io='native')
            self.assertEqual([], policy.plan(conf, mode, self.shared))
            self.assertEqual('native', conf.driver_io)

    def test_non_raw_refused(self):
        err = self.assertRaises(exception.SharedDiskError, policy.plan,
                                disk(fmt='qcow2'), 'none', self.shared)
        self.assertIn(base.VOLUME_ID, str(err))
        self.assertIn('volumes/v', str(err))

    def test_unsafe_mode_rejected(self):
        for mode in ('writeback', 'writethrough', 'unsafe', None):
            with self.subTest(mode=mode):
                self.assertRaises(ValueError, policy.plan, disk(), mode,
                                  self.shared)
