"""Nova's in-process functional stack with the extension as compute driver.

Real API, conductor, scheduler, placement and compute code from the nova
wheel, fake libvirt, Nova's Cinder fixture. Three things are added here:

- ``SharedVolumesCinder``: Nova's Cinder fixture with a few more volumes
  (multiattach RBD volumes, a bootable one, a multiattach iSCSI one, a
  plain RBD one) and RBD connection_info for the RBD ones.
- ``FaithfulDisks``: Nova's fake libvirt re-renders each ``<disk>`` from a
  few parsed fields when it reports a domain's XML, dropping
  ``<shareable/>``, ``cache`` and ``<serial>``. Real libvirt reports what
  it was given; Nova relies on that on paths that reuse the reported XML
  (unrescue restores it, live migration edits it by volume serial). This
  makes the fake report every disk as it was defined or attached.
- Every disk XML Nova sends to libvirt (define, create, attach, detach,
  block copy, the live migration destination XML) is recorded in
  ``sent_xml``: that is what the assertions read.

``NSC_FUNCTIONAL_STOCK=1`` runs every test with stock Nova's driver on
every compute: the run that shows which tests need the extension.
"""

import copy
import os

import fixtures
from lxml import etree
from nova.tests import fixtures as nova_fixtures
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.libvirt import base as libvirt_base
from oslo_utils.fixture import uuidsentinel as uuids

from nova_shared_cache import driver as sc_driver  # noqa: F401 (options)
from tests import compat
from tests.unit import fakeceph

EXTENSION_DRIVER = 'shared_cache.LibvirtSharedCacheDriver'
STOCK_DRIVER = 'libvirt.LibvirtDriver'
STOCK_RUN = os.environ.get('NSC_FUNCTIONAL_STOCK') == '1'


def rbd_connection_info(volume_id):
    return {
        'driver_volume_type': 'rbd',
        'data': {
            'name': 'volumes/volume-%s' % volume_id,
            'hosts': ['127.0.0.1'],
            'ports': ['3300'],
            'auth_enabled': True,
            'auth_username': 'cinder',
            'secret_type': 'ceph',
            'secret_uuid': 'c9b1bd6c-7c6f-4f0e-a8b1-8d0e0c0a0b0c',
            'discard': True,
        },
    }


def rbd_name(volume_id):
    return 'volumes/volume-%s' % volume_id


class SharedVolumesCinder(nova_fixtures.CinderFixture):
    """Nova's Cinder fixture with the volumes these tests share."""

    SHARED_VOL = nova_fixtures.CinderFixture.MULTIATTACH_VOL
    SHARED_VOL_2 = uuids.nsc_shared_rbd_2
    SHARED_BOOT_VOL = uuids.nsc_shared_rbd_boot
    SHARED_ISCSI_VOL = uuids.nsc_shared_iscsi
    PLAIN_RBD_VOL = uuids.nsc_plain_rbd
    #: A multiattach volume Cinder is migrating to another pool or backend
    #: (swap volume is called by Cinder only, for a migrating volume).
    MIGRATING_SHARED_VOL = uuids.nsc_migrating_shared_rbd

    SHARED = frozenset([SHARED_VOL, SHARED_VOL_2, SHARED_BOOT_VOL,
                        SHARED_ISCSI_VOL, MIGRATING_SHARED_VOL])
    BOOT_IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6'

    def __init__(self, test, *args, **kwargs):
        super().__init__(test, *args, **kwargs)
        infos = copy.deepcopy(self.VOLUME_CONNECTION_INFO)
        for vol in (self.SHARED_VOL, self.SHARED_VOL_2, self.SHARED_BOOT_VOL,
                    self.PLAIN_RBD_VOL, self.MIGRATING_SHARED_VOL):
            infos[vol] = rbd_connection_info(vol)
        infos[self.SHARED_ISCSI_VOL] = {
            'driver_volume_type': 'iscsi',
            'data': {'target_lun': '7'},
        }
        self.VOLUME_CONNECTION_INFO = infos

    def _is_multiattach(self, volume_id):
        return (volume_id in self.SHARED
                or super()._is_multiattach(volume_id))

    def fake_get(self, context, volume_id, *args, **kwargs):
        volume = super().fake_get(context, volume_id, *args, **kwargs)
        if volume_id == self.SHARED_BOOT_VOL:
            volume['bootable'] = True
            volume['volume_image_metadata'] = {'image_id': self.BOOT_IMAGE}
        if (volume_id == self.MIGRATING_SHARED_VOL
                and volume.get('attach_status') == 'attached'):
            volume['migration_status'] = 'migrating'
        return volume

    def fake_attachment_update(self, context, attachment_id, connector,
                               mountpoint=None):
        # Nova's fixture lets only MULTIATTACH_VOL have two connected
        # attachments; every multiattach volume here may.
        volume_id, attachment, attachments = self._find_attachment(
            attachment_id)
        if not self._is_multiattach(volume_id):
            connected = [a['id'] for a in attachments.values()
                         if a['connector'] is not None]
            if connected:
                raise AssertionError(
                    'volume %s is not multiattach and already connected '
                    '(attachment %s)' % (volume_id, connected[0]))
        if mountpoint:
            connector['device'] = mountpoint
        attachment['connector'] = connector
        return {'id': attachment_id,
                'connection_info': self._find_connection_info(
                    volume_id, attachment_id)}


class FaithfulDisks(fixtures.Fixture):
    """Fake libvirt reports each <disk> exactly as it was sent to it."""

    def _setUp(self):
        parse = fakelibvirt._parse_disk_info

        def parse_and_keep(element):
            info = parse(element)
            info['_sent_xml'] = etree.tostring(element)
            return info

        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt._parse_disk_info', parse_and_keep))

        describe = fakelibvirt.Domain.XMLDesc

        def describe_faithfully(domain, flags):
            doc = etree.fromstring(describe(domain, flags))
            sent = {d.get('target_dev'): d['_sent_xml']
                    for d in domain._def['devices']['disks']
                    if d.get('_sent_xml')}
            for reported in doc.findall('./devices/disk'):
                target = reported.find('target')
                dev = target.get('dev') if target is not None else None
                if dev not in sent:
                    continue
                disk = etree.fromstring(sent[dev])
                # What libvirt adds on its own stays.
                for tag in ('alias', 'address'):
                    if disk.find(tag) is None and \
                            reported.find(tag) is not None:
                        disk.append(reported.find(tag))
                reported.getparent().replace(reported, disk)
            return etree.tostring(doc, encoding='unicode')

        self.useFixture(fixtures.MockPatchObject(
            fakelibvirt.Domain, 'XMLDesc', describe_faithfully))


class SharedCacheFunctionalTest(compat.KeepTestMethodMixin,
                                libvirt_base.ServersTestBase):
    microversion = 'latest'
    ADMIN_API = True
    #: False runs the same stack with stock Nova's driver.
    EXTENSION = True
    #: [shared_cache] cache_mode for the test; directsync is what only the
    #: extension produces (stock Nova makes every shareable disk 'none').
    CACHE_MODE = 'directsync'
    #: [libvirt] disk_cachemodes: caching everywhere it is allowed.
    DISK_CACHEMODES = ['file=writeback', 'network=writeback',
                       'block=writeback']

    def setUp(self):
        paste = os.environ.get('NSC_API_PASTE')
        if not paste or not os.path.exists(paste):
            raise RuntimeError('NSC_API_PASTE must name Nova\'s api-paste.ini '
                               '(the nova wheel installs it as '
                               '<venv>/etc/nova/api-paste.ini)')
        self.flags(api_paste_config=paste, group='wsgi')
        self._host_extension = {}
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.CinderFixture', SharedVolumesCinder))
        super().setUp()
        self.useFixture(FaithfulDisks())
        # The Ceph-side guard runs on every RBD connect; the fake cluster
        # holds each RBD volume's image as Cinder makes it.
        # The compute has a keyring for the volumes' user, as
        # devstack-plugin-ceph and most deployment tools give it.
        ceph_dir = self.useFixture(fixtures.TempDir()).path
        ceph_conf = os.path.join(ceph_dir, 'ceph.conf')
        with open(ceph_conf, 'w') as f:
            f.write('[global]\nmon host = 127.0.0.1\n'
                    'keyring = %s/ceph.$name.keyring\n' % ceph_dir)
        for user in ('cinder', 'nova', 'admin'):
            fakeceph.write_keyring(ceph_dir, user)
        self.flags(ceph_conf=ceph_conf, group='shared_cache')
        self.ceph = self.useFixture(
            fakeceph.FakeCephFixture(ceph_conf)).cluster
        for volume_id, info in self.cinder.VOLUME_CONNECTION_INFO.items():
            if info['driver_volume_type'] == 'rbd':
                self.ceph.add_image(info['data']['name'])
        self.flags(disk_cachemodes=self.DISK_CACHEMODES, group='libvirt')
        self.flags(cache_mode=self.CACHE_MODE, group='shared_cache')
        self.sent_xml = []
        for name in ('attachDeviceFlags', 'detachDeviceFlags'):
            self._capture(fakelibvirt.Domain, name)
        self._capture(fakelibvirt.Domain, 'blockCopy', position=1)
        for name in ('defineXML', 'createXML'):
            self._capture(fakelibvirt.Connection, name)

    # -- computes ----------------------------------------------------------

    def _setup_compute_service(self):
        self.flags(compute_driver=self._driver_name(None))

    def _driver_name(self, extension):
        if STOCK_RUN:
            return STOCK_DRIVER
        if extension is None:
            extension = self.EXTENSION
        return EXTENSION_DRIVER if extension else STOCK_DRIVER

    def start_compute(self, hostname='compute1', *args, extension=None,
                      **kwargs):
        """Start a compute; ``extension`` overrides the class default.

        A restart (``restart_compute_service``) keeps the host's choice.
        """
        if extension is None:
            extension = self._host_extension.get(hostname, self.EXTENSION)
        self._host_extension[hostname] = extension
        self.flags(compute_driver=self._driver_name(extension))
        return super().start_compute(hostname, *args, **kwargs)

    def upgrade_compute(self, hostname):
        """Restart a stock compute with the extension, its domains kept."""
        self._host_extension[hostname] = True
        return self.restart_compute_service(hostname)

    # -- what was sent to libvirt ------------------------------------------

    def _capture(self, cls, name, position=0):
        real = getattr(cls, name)

        def capture(obj, *args, **kwargs):
            self.sent_xml.append(args[position])
            return real(obj, *args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(cls, name, capture))

    def forget_sent(self):
        del self.sent_xml[:]

    def disks_sent(self, volume_id=None, source_name=None):
        """Every <disk> of this volume (or source name) sent to libvirt."""
        name = source_name or rbd_name(volume_id)
        return [disk for disk in self.all_disks_sent()
                if self._source_name(disk) == name]

    def all_disks_sent(self):
        found = []
        for xml in self.sent_xml:
            doc = etree.fromstring(xml)
            found.extend([doc] if doc.tag == 'disk'
                         else doc.findall('./devices/disk'))
        return found

    @staticmethod
    def _source_name(disk):
        source = disk.find('source')
        if source is None:
            return None
        return source.get('name') or source.get('file') or source.get('dev')

    # -- assertions --------------------------------------------------------

    def assert_shared(self, disks, cache_mode=None, count=None):
        """Each disk is <shareable/> with the configured cache, raw."""
        cache_mode = cache_mode or self.CACHE_MODE
        self.assertTrue(disks, 'no XML with the shared disk was sent')
        if count is not None:
            self.assertEqual(count, len(disks))
        for disk in disks:
            text = etree.tostring(disk, encoding='unicode')
            self.assertIsNotNone(disk.find('shareable'), text)
            driver = disk.find('driver')
            self.assertEqual(cache_mode, driver.get('cache'), text)
            self.assertEqual('raw', driver.get('type'), text)

    def assert_not_shared(self, disks, cache_mode='writeback'):
        """Nova's choice from [libvirt] disk_cachemodes, not shareable."""
        self.assertTrue(disks, 'no XML with this disk was sent')
        for disk in disks:
            text = etree.tostring(disk, encoding='unicode')
            self.assertIsNone(disk.find('shareable'), text)
            self.assertEqual(cache_mode, disk.find('driver').get('cache'),
                             text)

    def assert_root_disks_untouched(self):
        """Image-backed root disks keep disk_cachemodes' file=writeback."""
        roots = [disk for disk in self.all_disks_sent()
                 if disk.get('type') == 'file' and disk.get('device') == 'disk'
                 and (self._source_name(disk) or '').endswith('/disk')]
        self.assert_not_shared(roots)

    # -- helpers -----------------------------------------------------------

    # Nova's helper mixin grew over the supported releases; the few helpers
    # missing from the oldest ones are written here, on the REST API.

    def attach(self, server, volume_id):
        self.api.post_server_volume(
            server['id'], {'volumeAttachment': {'volumeId': volume_id}})
        self._wait_for_volume_attach(server['id'], volume_id)

    def rescue(self, server, image_id=None):
        body = {'adminPass': 'rescue-password'}
        if image_id:
            body['rescue_image_ref'] = image_id
        self.api.post_server_action(server['id'], {'rescue': body})
        return self._wait_for_state_change(server, 'RESCUE')

    def unrescue(self, server):
        self.api.post_server_action(server['id'], {'unrescue': None})
        return self._wait_for_state_change(server, 'ACTIVE')

    def detach(self, server, volume_id):
        self.api.delete_server_volume(server['id'], volume_id)
        self._wait_for_volume_detach(server['id'], volume_id)

    def boot_from_volume(self, volume_id, host=None):
        request = self._build_server(networks='none', host=host)
        request.pop('imageRef')
        request['block_device_mapping_v2'] = [{
            'boot_index': 0, 'uuid': volume_id,
            'source_type': 'volume', 'destination_type': 'volume'}]
        server = self.api.post_server({'server': request})
        return self._wait_for_state_change(server, 'ACTIVE')

    def host_of(self, server):
        return self.api.get_server(server['id'])['OS-EXT-SRV-ATTR:host']
