"""Loading backends with stevedore, and the RBD backend's identification."""

import os
import sys

import fixtures
from stevedore import extension
from stevedore import named

from nova_shared_cache import backends
from nova_shared_cache.backends import base as backend_base
from nova_shared_cache.backends import rbd
from nova_shared_cache import exception
from tests.unit import base


class LoadTest(base.TestCase):

    def test_rbd_is_installed_and_loads(self):
        [backend] = backends.load(['rbd'], object())
        self.assertIsInstance(backend, rbd.RbdBackend)
        self.assertEqual('rbd', backend.name)

    def _install_entry_point(self, name, target):
        # A real (if tiny) installed distribution, so that stevedore walks
        # its normal loading path and hits the import error itself.
        tmp = self.useFixture(fixtures.TempDir()).path
        dist = os.path.join(tmp, 'broken_backend-1.0.dist-info')
        os.mkdir(dist)
        with open(os.path.join(dist, 'METADATA'), 'w') as f:
            f.write('Metadata-Version: 2.1\nName: broken-backend\n'
                    'Version: 1.0\n')
        with open(os.path.join(dist, 'entry_points.txt'), 'w') as f:
            f.write('[%s]\n%s = %s\n' % (backends.NAMESPACE, name, target))
        sys.path.insert(0, tmp)
        self.addCleanup(sys.path.remove, tmp)
        # stevedore keeps the entry points of a namespace for the process.
        self.useFixture(fixtures.MockPatchObject(
            extension.ExtensionManager, 'ENTRY_POINT_CACHE', {}))

    def test_broken_backend_stops_loading(self):
        self._install_entry_point('broken', 'no_such_module_xyz:Backend')
        err = self.assertRaises(exception.BackendLoadError, backends.load,
                                ['rbd', 'broken'], object())
        message = str(err)
        self.assertIn("'broken'", message)
        self.assertIn('no_such_module_xyz', message)

    def test_missing_backend(self):
        err = self.assertRaises(exception.BackendLoadError, backends.load,
                                ['rbd', 'gluster'], object())
        self.assertIn("'gluster'", str(err))
        self.assertIn('no such entry point', str(err))

    def test_plugin_of_wrong_type(self):
        manager = named.NamedExtensionManager.make_test_instance(
            [extension.Extension('odd', None, object, object())])
        err = self.assertRaises(exception.BackendLoadError, backends.load,
                                ['odd'], object(), manager=manager)
        self.assertIn("'odd'", str(err))
        self.assertIn('not a SharedVolumeBackend', str(err))

    def test_order_follows_names(self):
        class Other(backend_base.SharedVolumeBackend):
            def owns(self, connection_info):
                return True

        manager = named.NamedExtensionManager.make_test_instance(
            [extension.Extension('other', None, Other, Other(None)),
             extension.Extension('rbd', None, rbd.RbdBackend,
                                 rbd.RbdBackend(None))])
        names = [b.name for b in backends.load(['other', 'rbd'], None,
                                               manager=manager)]
        self.assertEqual(['other', 'rbd'], names)


class RbdBackendTest(base.TestCase):

    def test_owns_rbd_only(self):
        backend = rbd.RbdBackend(None)
        self.assertTrue(backend.owns(base.connection_info()))
        self.assertTrue(backend.owns(base.connection_info(multiattach=False)))
        self.assertFalse(backend.owns(
            base.connection_info(base.ISCSI_CONNECTION_INFO)))
        self.assertFalse(backend.owns({'driver_volume_type': 'RBD '}))

    def test_describe_is_pool_and_image_without_secrets(self):
        text = rbd.RbdBackend(None).describe(base.connection_info())
        self.assertEqual('volumes/volume-%s' % base.VOLUME_ID, text)

    def test_base_hook_is_harmless(self):
        class Plain(backend_base.SharedVolumeBackend):
            def owns(self, connection_info):
                return True
        self.assertIsNone(Plain(None).on_connect(
            None, base.connection_info(), None, shared=True))
