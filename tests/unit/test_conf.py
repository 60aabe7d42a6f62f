"""Options: validation at driver start, and the generated sample."""

import filecmp
import os
import tempfile

from nova.virt import driver as virt_driver
from nova.virt import fake
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_config import generator

from nova_shared_cache import conf as sc_conf
from nova_shared_cache import driver as sc_driver
from nova_shared_cache import exception
from tests import compat as test_compat
from tests.unit import base

REPO = test_compat.source_tree()


class OptionValidationTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.cfg = self.useFixture(config_fixture.Config(sc_driver.CONF))

    def _raw(self, **values):
        # As if read from nova.conf: oslo.config checks choices only when
        # the value is read, which is what must happen at driver start.
        self.cfg.load_raw_values(group='shared_cache', **values)

    def test_invalid_cache_mode_stops_the_driver(self):
        self._raw(cache_mode='writeback')
        with self.assertRaises(exception.ConfigError) as ctx:
            self.make_driver()
        message = str(ctx.exception)
        self.assertIn('[shared_cache] cache_mode', message)
        self.assertIn('writeback', message)

    def test_invalid_value_stops_nova_compute_loading(self):
        # The error must come out of Nova's own loader as itself, not as
        # "is not of type ComputeDriver" (what a ValueError would become).
        self._raw(cache_mode='unsafe')
        self.flags(compute_driver='shared_cache.LibvirtSharedCacheDriver')
        err = self.assertRaises(exception.ConfigError,
                                virt_driver.load_compute_driver,
                                fake.FakeVirtAPI())
        self.assertIn('cache_mode', str(err))

    def _assert_refused(self, option, value, says=None):
        self._raw(**{option: value})
        err = self.assertRaises(exception.ConfigError, self.make_driver)
        self.assertIn('[shared_cache] %s' % option, str(err))
        self.assertIn(says or value, str(err))

    def test_invalid_rbd_feature_policy(self):
        self._assert_refused('rbd_feature_policy', 'fix')

    def test_invalid_sharing_guard(self):
        self._assert_refused('sharing_guard', 'deny')

    def test_invalid_hook_mode(self):
        self._assert_refused('hook_mode', 'block')

    def test_ceph_timeout_below_one(self):
        self._assert_refused('ceph_timeout', '0',
                             says='greater than or equal to 1')

    def test_ceph_timeout_not_a_number(self):
        self._assert_refused('ceph_timeout', 'soon')

    def test_empty_backend_list_is_stock_nova_with_a_warning(self):
        self._raw(enabled_backends='')
        drv = self.make_driver()
        self.assertEqual([], drv._shared_backends)
        self.assertIn('no backend is enabled', self.stdlog.logger.output)

    def test_rbd_feature_policy_off_is_valid(self):
        self._raw(rbd_feature_policy='off')
        self.assertEqual('off',
                         sc_conf.load(sc_driver.CONF).rbd_feature_policy)

    def test_empty_backend_name(self):
        self._raw(enabled_backends='rbd,,nfs')
        err = self.assertRaises(exception.ConfigError, self.make_driver)
        self.assertIn('enabled_backends', str(err))

    def test_duplicate_backend(self):
        self._raw(enabled_backends='rbd, rbd')
        err = self.assertRaises(exception.ConfigError, self.make_driver)
        self.assertIn('named twice', str(err))

    def test_unknown_backend(self):
        self._raw(enabled_backends='rbd,nfs')
        err = self.assertRaises(exception.BackendLoadError, self.make_driver)
        self.assertIn("'nfs'", str(err))
        self.assertIn('enabled_backends', str(err))

    def test_valid_values(self):
        self._raw(cache_mode='directsync', enabled_backends=' rbd ')
        settings = sc_conf.load(sc_driver.CONF)
        self.assertEqual('directsync', settings.cache_mode)
        self.assertEqual(('rbd',), settings.enabled_backends)

    def test_defaults(self):
        sc_driver.CONF.clear_override('ceph_conf', group='shared_cache')
        self.assertEqual(
            sc_conf.Settings('none', ('rbd',), rbd_feature_policy='enforce',
                             sharing_guard='refuse',
                             ceph_conf='/etc/ceph/ceph.conf', ceph_user=None,
                             ceph_timeout=10, hook_mode='fix'),
            sc_conf.load(sc_driver.CONF))


class ListOptsTest(base.TestCase):

    def test_list_opts_returns_copies(self):
        [(group, opts)] = sc_conf.list_opts()
        self.assertEqual('shared_cache', group.name)
        self.assertEqual(['cache_mode', 'enabled_backends',
                          'rbd_feature_policy', 'sharing_guard',
                          'ignored_watchers', 'hook_mode',
                          'ceph_conf', 'ceph_user', 'ceph_timeout'],
                         [o.name for o in opts])
        for copy, orig in zip(opts, sc_conf.shared_cache_opts):
            self.assertIsNot(copy, orig)
            self.assertTrue(copy.help.strip())

    def test_sample_config_is_current(self):
        gen_conf = os.path.join(REPO, 'etc',
                                'nova-shared-cache-config-generator.conf')
        sample = os.path.join(REPO, 'etc', 'nova-shared-cache.conf.sample')
        with tempfile.TemporaryDirectory() as tmp:
            fresh = os.path.join(tmp, 'sample')
            generator.main(['--config-file', gen_conf,
                            '--output-file', fresh])
            self.assertTrue(
                filecmp.cmp(sample, fresh, shallow=False),
                'etc/nova-shared-cache.conf.sample is stale: run '
                '"tox -e genconfig" and commit the result')


class RegistrationTest(base.TestCase):

    def test_two_config_objects_do_not_share_overrides(self):
        # The operator tools and tests build their own ConfigOpts next to
        # Nova's CONF; an override in one must not show in another.
        first, second = cfg.ConfigOpts(), cfg.ConfigOpts()
        for conf in (first, second):
            sc_conf.register_opts(conf)
            conf([], default_config_files=[])
        first.set_override('ceph_user', 'guardro', 'shared_cache')
        self.assertEqual('guardro', first.shared_cache.ceph_user)
        self.assertIsNone(second.shared_cache.ceph_user)
        self.assertIsNone(sc_driver.CONF.shared_cache.ceph_user)
