"""The startup check of Nova internals the driver overrides."""

import configparser
import pathlib
from unittest import mock

from nova.virt.libvirt import driver as libvirt_driver

from nova_shared_cache import compat
from nova_shared_cache import exception
from tests import compat as test_compat
from tests.unit import base


def _without(name):
    return type('LibvirtDriver', (), {
        n: getattr(libvirt_driver.LibvirtDriver, n)
        for n in compat.REQUIRED_METHODS if n != name})


class CompatCheckTest(base.TestCase):

    def test_installed_nova_passes(self):
        compat.check(libvirt_driver.LibvirtDriver, compat.nova_version())

    def test_every_supported_release_number_passes(self):
        for major in compat.SUPPORTED_NOVA:
            compat.check(libvirt_driver.LibvirtDriver, '%d.1.0' % major)

    def test_missing_method_named(self):
        for name in compat.REQUIRED_METHODS:
            with self.subTest(method=name):
                err = self.assertRaises(exception.UnsupportedNova,
                                        compat.check, _without(name),
                                        '34.0.0')
                self.assertIn('LibvirtDriver.%s does not exist' % name,
                              str(err))
                self.assertIn('Nova 34.0.0', str(err))

    def test_changed_signature_named(self):
        fake = _without('_set_cache_mode')
        fake._set_cache_mode = lambda self, disk_config: None
        err = self.assertRaises(exception.UnsupportedNova, compat.check,
                                fake, '33.0.1')
        self.assertIn('_set_cache_mode(self, disk_config)', str(err))
        self.assertIn('(self, conf)', str(err))
        self.assertIn('Nova 33.0.1', str(err))

    def test_untested_release_refused(self):
        for version in ('29.4.0', '35.0.0', '2026.2', 'unknown'):
            with self.subTest(version=version):
                err = self.assertRaises(exception.UnsupportedNova,
                                        compat.check,
                                        libvirt_driver.LibvirtDriver, version)
                self.assertIn('Nova %s' % version, str(err))
                self.assertIn('supported: Nova 30 to 34', str(err))

    def test_driver_refuses_to_start_before_nova_initialises(self):
        with mock.patch.object(compat, 'nova_version',
                               return_value='29.0.0'), \
                mock.patch.object(libvirt_driver.LibvirtDriver,
                                  '__init__') as nova_init:
            err = self.assertRaises(exception.UnsupportedNova,
                                    self.make_driver)
        self.assertIn('Nova 29.0.0', str(err))
        nova_init.assert_not_called()


class ArgumentTest(base.TestCase):

    def test_argument_by_position_and_keyword(self):
        params = ('instance', 'connection_info', 'disk_info')
        self.assertEqual('ci', compat.argument(
            params, 'connection_info', ('inst', 'ci', 'di'), {}))
        self.assertEqual('ci', compat.argument(
            params, 'connection_info', ('inst',), {'connection_info': 'ci'}))
        self.assertIsNone(compat.argument(
            ('connection_info', 'disk_info'), 'instance', ('ci', 'di'), {}))

    def test_both_volume_config_signatures_accepted(self):
        for params in ('self, connection_info, disk_info',
                       'self, instance, connection_info, disk_info'):
            with self.subTest(params=params):
                fake = _without('_get_volume_config')
                exec('def f(%s): pass' % params, globals(), ns := {})
                fake._get_volume_config = ns['f']
                compat.check(fake, '33.0.0')


class SupportedRangeStatedTest(base.TestCase):
    """setup.cfg, tox.ini and the README state the range compat enforces."""

    TOP = pathlib.Path(test_compat.source_tree())

    def test_setup_cfg_extra_matches(self):
        cfg = configparser.ConfigParser()
        cfg.read(self.TOP / 'setup.cfg')
        spec = cfg['extras']['nova'].strip()
        self.assertEqual('nova>=%d.0.0,<%d' % (compat.SUPPORTED_NOVA[0],
                                               compat.SUPPORTED_NOVA[-1] + 1),
                         spec)

    def test_every_release_has_unit_and_functional_envs(self):
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.read(self.TOP / 'tox.ini')
        deps = '\n'.join(cfg[s].get('deps', '') for s in cfg.sections())
        self.assertIn('functional-nova{%s}' % ','.join(
            str(m) for m in compat.SUPPORTED_NOVA), cfg['tox']['envlist'])
        for major in compat.SUPPORTED_NOVA:
            with self.subTest(nova=major):
                self.assertRegex(deps, r'\bnova==%d\.\d+\.\d+' % major)
                self.assertIn('nova%d: openstack-placement==' % major, deps)

    def test_readme_states_range(self):
        readme = (self.TOP / 'README.md').read_text()
        self.assertIn('Nova %d (2024.2) to %d (2026.2)' % (
            compat.SUPPORTED_NOVA[0], compat.SUPPORTED_NOVA[-1]), readme)
