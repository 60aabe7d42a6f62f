"""Options: validation at driver start, and the generated sample."""

import filecmp
import os
import tempfile

from nova.virt import driver as virt_driver
from nova.virt import fake
from oslo_config import fixture as config_fixture
from oslo_config import generator

from nova_shared_cache import conf as sc_conf
from nova_shared_cache import driver as sc_driver
from nova_shared_cache import exception
from tests.unit import base

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


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

    def test_empty_backend_list(self):
        self._raw(enabled_backends='')
        err = self.assertRaises(exception.ConfigError, self.make_driver)
        self.assertIn('[shared_cache] enabled_backends', str(err))

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
        self.assertEqual(sc_conf.Settings('directsync', ('rbd',)), settings)

    def test_defaults(self):
        self.assertEqual(sc_conf.Settings('none', ('rbd',)),
                         sc_conf.load(sc_driver.CONF))


class ListOptsTest(base.TestCase):

    def test_list_opts_returns_copies(self):
        [(group, opts)] = sc_conf.list_opts()
        self.assertEqual('shared_cache', group.name)
        self.assertEqual(['cache_mode', 'enabled_backends'],
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
