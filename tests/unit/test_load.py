"""nova-compute loads the extension; the install owns only its own files."""

import importlib.metadata
import pathlib

from nova.virt import driver as virt_driver
from nova.virt import fake

from nova_shared_cache import driver as sc_driver
from tests.unit import base


class LoadComputeDriverTest(base.TestCase):

    def test_compute_driver_option_loads_the_extension(self):
        self.flags(compute_driver='shared_cache.LibvirtSharedCacheDriver')
        drv = virt_driver.load_compute_driver(fake.FakeVirtAPI())
        self.assertIsInstance(drv, sc_driver.LibvirtSharedCacheDriver)
        self.assertEqual(['rbd'], [b.name for b in drv._shared_backends])
        self.assertIn('nova-shared-cache enabled: cache_mode=none, '
                      'backends=rbd', self.stdlog.logger.output)


class InstalledFilesTest(base.TestCase):
    """pip uninstall removes what RECORD lists: it must be ours alone."""

    def test_only_the_shim_is_installed_under_nova(self):
        ours = importlib.metadata.distribution('nova-shared-cache')
        under_nova = sorted(str(f) for f in ours.files
                            if f.parts[0] == 'nova')
        self.assertEqual(['nova/virt/shared_cache/__init__.py'],
                         [f for f in under_nova if f.endswith('.py')])

    def test_no_file_shared_with_nova(self):
        def paths(name):
            dist = importlib.metadata.distribution(name)
            return {pathlib.Path(dist.locate_file(f)).resolve()
                    for f in dist.files}

        self.assertEqual(set(), paths('nova-shared-cache') & paths('nova'))
