"""Reading RBD disks out of domain XML, and the one change fix makes."""

import tempfile
import unittest

from lxml import etree

from nova_shared_cache.libvirt import domxml

XML = """<domain type='kvm'><name>d</name><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='/var/lib/nova/instances/x/disk'/><target dev='vda'/></disk>
<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='writeback' io='threads'/>
  <auth username='cinder'><secret type='ceph' uuid='s-1'/></auth>
  <source protocol='rbd' name='volumes/ns/volume-1@snap' index='3'>
    <host name='10.0.0.1' port='6789'/><host name='fd00::2'/>
    <config file='/etc/ceph/other.conf'/>
  </source>
  <target dev='vdb' bus='virtio'/><serial>vol-1</serial><readonly/>
</disk>
<disk type='network' device='cdrom'>
  <source protocol='rbd' name='images/iso'/><target dev='hdc'/></disk>
<disk type='network' device='disk'>
  <source protocol='iscsi' name='iqn/1'/><target dev='vdc'/></disk>
<disk type='network' device='disk'>
  <source protocol='rbd' name='volumes/volume-2'/><target dev='vdd'/>
  <shareable/></disk>
</devices></domain>"""


class RbdDisksTest(unittest.TestCase):

    def setUp(self):
        self.disks = domxml.rbd_disks(domxml.parse(XML))

    def test_only_rbd_disks(self):
        self.assertEqual(['vdb', 'vdd'], [d.target for d in self.disks])

    def test_fields(self):
        d = self.disks[0]
        self.assertEqual('volumes/ns/volume-1@snap', d.spec)
        self.assertEqual(('volumes', 'ns', 'volume-1', 'snap'),
                         (d.pool, d.namespace, d.image, d.snapshot))
        # The namespace is part of the image's name; the snapshot is not.
        self.assertEqual('volumes/ns/volume-1', d.image_spec)
        self.assertEqual('10.0.0.1:6789,[fd00::2]', d.mon_host)
        self.assertEqual(('cinder', 's-1', 'writeback', 'threads', '3',
                          'vol-1', '/etc/ceph/other.conf'),
                         (d.user, d.secret_uuid, d.cache, d.io, d.index,
                          d.serial, d.config_file))
        self.assertTrue(d.readonly)
        self.assertFalse(d.shareable)
        self.assertTrue(d.caches)
        e = self.disks[1]
        self.assertTrue(e.shareable)
        self.assertIsNone(e.cache)
        self.assertTrue(e.caches)       # QEMU's default is writeback
        self.assertIsNone(e.user)
        self.assertIsNone(e.mon_host)

    def test_status_document(self):
        status = '<domstatus state="running">%s</domstatus>' % XML
        self.assertEqual(2, len(domxml.rbd_disks(domxml.parse(status))))

    def test_caches(self):
        for mode in (None, 'default', 'writeback', 'writethrough', 'unsafe'):
            self.assertIs(True, domxml.caches(mode), mode)
        for mode in ('none', 'directsync'):
            self.assertIs(False, domxml.caches(mode), mode)
        self.assertIsNone(domxml.caches('bogus'))

    def test_entities_are_not_resolved(self):
        with tempfile.NamedTemporaryFile('w', suffix='.txt') as f:
            f.write('SECRET-CONTENT')
            f.flush()
            doc = domxml.parse('<!DOCTYPE d [<!ENTITY e SYSTEM "file://%s">]>'
                               '<domain>&e;</domain>' % f.name)
        self.assertNotIn('SECRET-CONTENT', etree.tostring(doc).decode())


class RecordTest(unittest.TestCase):

    def test_record_merges_and_reads_back(self):
        disks = domxml.rbd_disks(domxml.parse(XML))
        text = domxml.record_disk(None, disks[0], 'none')
        text = domxml.record_disk(text, disks[1], 'directsync')
        text = domxml.record_disk(text, disks[0], 'none')   # no duplicate
        root = domxml.parse(text)
        self.assertEqual(domxml.METADATA_ROOT, root.tag)
        self.assertEqual(2, len(root))
        recorded = domxml.recorded_disks(root)
        self.assertEqual({(disks[0].key, 'vdb'): 'none',
                          (disks[1].key, 'vdd'): 'directsync'}, recorded)
        self.assertEqual('volumes/ns/volume-1@snap', disks[0].key)
        self.assertEqual('none', domxml.recorded_mode(recorded, disks[0]))

    def test_a_record_applies_to_its_image_on_its_target(self):
        disk = domxml.rbd_disks(domxml.parse(XML))[1]
        recorded = domxml.recorded_disks(domxml.parse(
            domxml.record_disk(None, disk, 'none')))
        moved = domxml.RbdDisk(**dict(
            {f.name: getattr(disk, f.name)
             for f in domxml.dataclasses.fields(disk)}, target='vdc'))
        self.assertIsNone(domxml.recorded_mode(recorded, moved))
        # An entry without a target (or a cache mode) still applies.
        recorded = domxml.recorded_disks(domxml.parse(
            "<shared-disks><disk image='%s'/></shared-disks>" % disk.key))
        self.assertEqual('none', domxml.recorded_mode(recorded, moved))

    def test_read_from_a_domain_and_ignores_others(self):
        doc = domxml.parse(
            "<domain><metadata><x:shared-disks xmlns:x='urn:other'>"
            "<disk image='p/a'/></x:shared-disks>"
            "<nsc:shared-disks xmlns:nsc='%s'><disk image='p/b' cache='none'"
            " target='vdb'/><!-- c --></nsc:shared-disks></metadata>"
            "</domain>" % domxml.METADATA_NS)
        self.assertEqual({('p/b', 'vdb'): 'none'},
                         domxml.recorded_disks(doc))
        self.assertEqual({}, domxml.recorded_disks(domxml.parse(
            '<domain/>')))

    def test_odd_names_are_not_read_as_another_image(self):
        disk = domxml.rbd_disks(domxml.parse(XML))[0]
        for name, spec in (('p/a/b/img@s', 'p/a/b/img'), ('img', 'img')):
            disk.spec = name
            self.assertEqual(spec, disk.image_spec)


class FixDiskTest(unittest.TestCase):

    def test_changes_only_cache_and_shareable(self):
        doc = domxml.parse(XML)
        disk = domxml.rbd_disks(doc)[0]
        before = etree.tostring(disk.element)
        self.assertEqual(['cache writeback -> none', '<shareable/> added'],
                         domxml.fix_disk(disk.element, 'none'))
        after = disk.element
        self.assertEqual('none', after.find('driver').get('cache'))
        self.assertEqual('threads', after.find('driver').get('io'))
        after.find('driver').set('cache', 'writeback')
        after.remove(after.find('shareable'))
        self.assertEqual(etree.tostring(etree.fromstring(before),
                                        method='c14n'),
                         etree.tostring(after, method='c14n'))

    def test_idempotent(self):
        disk = domxml.rbd_disks(domxml.parse(XML))[0].element
        domxml.fix_disk(disk, 'directsync')
        self.assertEqual([], domxml.fix_disk(disk, 'directsync'))

    def test_adds_a_driver_element(self):
        disk = domxml.rbd_disks(domxml.parse(XML))[1].element
        self.assertEqual(['cache default -> none'],
                         domxml.fix_disk(disk, 'none'))
        self.assertEqual({'name': 'qemu', 'cache': 'none'},
                         dict(disk.find('driver').attrib))
