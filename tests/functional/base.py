"""Nova's in-process functional stack with the extension as compute driver.

Real API, conductor, scheduler, placement and compute code from the nova
wheel, fake libvirt, Nova's Cinder fixture. Nova's fake libvirt drops
``<shareable/>`` and ``cache`` when it reports a domain's XML, so the XML
Nova sends to libvirt is captured on the way in.
"""

import copy
import os

import fixtures
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.libvirt import base as libvirt_base

from nova_shared_cache import driver as sc_driver  # noqa: F401 (options)
from tests import compat

RBD_CONNECTION_INFO = {
    'driver_volume_type': 'rbd',
    'data': {
        'name': 'volumes/volume-shared',
        'hosts': ['127.0.0.1'],
        'ports': ['3300'],
        'auth_enabled': True,
        'auth_username': 'cinder',
        'secret_type': 'ceph',
        'secret_uuid': 'c9b1bd6c-7c6f-4f0e-a8b1-8d0e0c0a0b0c',
        'discard': True,
    },
}


class SharedCacheFunctionalTest(compat.KeepTestMethodMixin,
                                libvirt_base.ServersTestBase):
    microversion = 'latest'
    ADMIN_API = True
    #: False runs the same stack with stock Nova's driver.
    EXTENSION = True

    def setUp(self):
        paste = os.environ.get('NSC_API_PASTE')
        if not paste or not os.path.exists(paste):
            raise RuntimeError('NSC_API_PASTE must name Nova\'s api-paste.ini '
                               '(tox -e functional fetches it)')
        self.flags(api_paste_config=paste, group='wsgi')
        super().setUp()
        self.sent_xml = []
        for name in ('attachDeviceFlags',):
            self._capture(fakelibvirt.Domain, name)
        self._capture(fakelibvirt.Connection, 'defineXML')
        infos = copy.deepcopy(self.cinder.VOLUME_CONNECTION_INFO)
        infos[self.cinder.MULTIATTACH_VOL] = copy.deepcopy(
            RBD_CONNECTION_INFO)
        self.cinder.VOLUME_CONNECTION_INFO = infos

    def _capture(self, cls, name):
        real = getattr(cls, name)

        def capture(obj, xml, *args, **kwargs):
            self.sent_xml.append(xml)
            return real(obj, xml, *args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(cls, name, capture))

    def _setup_compute_service(self):
        self.flags(compute_driver='shared_cache.LibvirtSharedCacheDriver'
                   if self.EXTENSION else 'libvirt.LibvirtDriver')

    def disks_sent(self, source_name):
        """Every <disk> with this source name in the XML sent to libvirt."""
        found = []
        for xml in self.sent_xml:
            doc = etree.fromstring(xml)
            disks = [doc] if doc.tag == 'disk' else doc.findall(
                './devices/disk')
            for disk in disks:
                source = disk.find('source')
                if source is not None and source.get('name') == source_name:
                    found.append(disk)
        return found
