"""RBD disks in libvirt domain XML: what they say, and the one fix.

Pure functions on lxml trees; no libvirt calls. The audit, ``fix`` and the
libvirt hook share them, so the three agree on what a caching disk is.
"""

import dataclasses
from typing import Optional

from lxml import etree

#: What QEMU makes of each libvirt cache mode, as ``query-named-block-nodes``
#: reports it: (cache.direct, cache.writeback, cache.no-flush). No cache
#: attribute means QEMU's default, writeback. QEMU's rbd driver turns
#: librbd's cache on exactly when cache.direct is false.
QEMU_CACHE = {
    None: (False, True, False),
    'default': (False, True, False),
    'writeback': (False, True, False),
    'writethrough': (False, False, False),
    'unsafe': (False, True, True),
    'none': (True, True, False),
    'directsync': (True, False, False),
}

#: Namespace of this project's libvirt domain metadata. ``fix --live``
#: records there which disks it switched: libvirt's live XML still shows
#: their old cache mode (it cannot be told), and the record travels with
#: the domain (live migration, save images, managed save) for the hook.
METADATA_NS = 'urn:x-nova-shared-cache:shared-disks:1'
METADATA_PREFIX = 'nsc'
METADATA_ROOT = 'shared-disks'

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True,
                          remove_blank_text=False, huge_tree=False)


def parse(text):
    """An lxml tree of a domain (or libvirt status) XML document."""
    if isinstance(text, str):
        text = text.encode('utf-8')
    return etree.fromstring(text, _PARSER)


def caches(mode):
    """True if the mode gives librbd a cache, False if not, None: unknown."""
    if mode not in QEMU_CACHE:
        return None
    return not QEMU_CACHE[mode][0]


@dataclasses.dataclass
class RbdDisk:
    """One ``<disk type='network'><source protocol='rbd'>`` of a domain."""

    element: object = dataclasses.field(repr=False, compare=False)
    target: Optional[str]
    spec: str                   # pool[/namespace]/image[@snap], libvirt's
    hosts: list                 # [(host, port or None)]
    user: Optional[str]
    secret_uuid: Optional[str]
    cache: Optional[str]
    io: Optional[str]
    discard: Optional[str]
    shareable: bool
    readonly: bool
    serial: Optional[str]
    index: Optional[str]        # <source index> (live XML: QEMU node names)
    config_file: Optional[str]
    #: <source><snapshot name=...>: libvirt's way to name an RBD snapshot
    #: (it passes a name's '@' on to QEMU as part of the image name).
    snapshot_name: Optional[str] = None

    @property
    def caches(self):
        return caches(self.cache)

    @property
    def pool(self):
        return self.spec.split('/', 1)[0]

    @property
    def image(self):
        # pool/image or pool/namespace/image, optionally @snapshot
        return self.spec.split('/')[-1].split('@', 1)[0]

    @property
    def namespace(self):
        parts = self.spec.split('/')
        return parts[1] if len(parts) == 3 else None

    @property
    def snapshot(self):
        if self.snapshot_name:
            return self.snapshot_name
        return self.spec.split('@', 1)[1] if '@' in self.spec else None

    @property
    def key(self):
        """What two disks must share to share data: image and snapshot."""
        snapshot = self.snapshot
        return self.image_spec + ('@%s' % snapshot if snapshot else '')

    @property
    def writes(self):
        """Can this disk change the image? (not read-only, not a snapshot)"""
        return not (self.readonly or self.snapshot)

    @property
    def image_spec(self):
        """pool[/namespace]/image for Ceph calls (the snapshot left out).

        A name of another shape is passed on as it is (without the
        snapshot), so that the Ceph call fails naming it rather than read
        another image.
        """
        if len(self.spec.split('/')) not in (2, 3):
            return self.spec.split('@', 1)[0]
        return '/'.join(p for p in (self.pool, self.namespace, self.image)
                        if p)

    @property
    def mon_host(self):
        """librados' mon_host for the disk's monitors, or None."""
        addresses = []
        for host, port in self.hosts:
            if ':' in host and not host.startswith('['):
                host = '[%s]' % host        # IPv6
            addresses.append('%s:%s' % (host, port) if port else host)
        return ','.join(addresses) or None


def rbd_disks(doc):
    """Every RBD disk of a ``<domain>`` (or libvirt ``<domstatus>``)."""
    domain = doc if doc.tag == 'domain' else doc.find('domain')
    if domain is None:
        return []
    disks = []
    for disk in domain.findall('./devices/disk'):
        source = disk.find('source')
        if (disk.get('type') != 'network' or source is None
                or source.get('protocol') != 'rbd'
                or disk.get('device', 'disk') not in ('disk', 'lun')
                or not source.get('name')):
            continue
        driver = disk.find('driver')
        driver = driver if driver is not None else etree.Element('driver')
        auth = disk.find('auth')
        secret = auth.find('secret') if auth is not None else None
        target = disk.find('target')
        config = source.find('config')
        snapshot = source.find('snapshot')
        disks.append(RbdDisk(
            element=disk,
            target=target.get('dev') if target is not None else None,
            spec=source.get('name'),
            hosts=[(h.get('name'), h.get('port'))
                   for h in source.findall('host') if h.get('name')],
            user=auth.get('username') if auth is not None else None,
            secret_uuid=secret.get('uuid') if secret is not None else None,
            cache=driver.get('cache'),
            io=driver.get('io'),
            discard=driver.get('discard'),
            shareable=disk.find('shareable') is not None,
            readonly=disk.find('readonly') is not None,
            serial=disk.findtext('serial'),
            index=source.get('index'),
            config_file=config.get('file') if config is not None else None,
            snapshot_name=(snapshot.get('name') if snapshot is not None
                           else None)))
    return disks


def sharing_hazard(disk, others_write, others_read=False):
    """Why a caching ``disk`` is a shared-cache hazard, or None.

    ``others_write``: another domain writes the same image (same spec);
    ``others_read``: another domain only reads it. A cache only goes stale
    when somebody writes: a snapshot never changes, and an image that every
    user opens read-only is shared safely whatever the cache mode.
    """
    if disk.snapshot:
        return None
    if disk.shareable:
        return '<shareable/>'
    if others_write or (others_read and disk.writes):
        return 'used by other domains'
    return None


def recorded_disks(doc):
    """{(image key, target): cache mode} that ``fix --live`` recorded.

    ``doc``: a domain, libvirt status or the metadata element itself (as
    ``virDomainGetMetadata`` returns it). An entry without a target (None)
    applies to the image on any target; one without a cache mode says
    ``none``. Anything unreadable: nothing.
    """
    if doc is None:
        return {}
    if etree.QName(doc).localname == METADATA_ROOT:
        roots = [doc]
    else:
        domain = doc if doc.tag == 'domain' else doc.find('domain')
        if domain is None:
            return {}
        roots = domain.findall('./metadata/{%s}%s' % (METADATA_NS,
                                                      METADATA_ROOT))
    found = {}
    for root in roots:
        for disk in root:
            if (isinstance(disk.tag, str)
                    and etree.QName(disk).localname == 'disk'
                    and disk.get('image')):
                found[(disk.get('image'), disk.get('target') or None)] = (
                    disk.get('cache') or 'none')
    return found


def recorded_mode(recorded, disk):
    """The cache mode recorded for ``disk`` (image and target), or None."""
    return recorded.get((disk.key, disk.target),
                        recorded.get((disk.key, None)))


def record_disk(current, disk, cache_mode):
    """The metadata text with ``disk`` recorded as switched to cache_mode.

    ``current``: what libvirt holds now (text, or None). Other disks'
    entries are kept, one per image and target; the root has no namespace,
    libvirt adds it.
    """
    entries = recorded_disks(parse(current)) if current else {}
    entries[(disk.key, disk.target)] = cache_mode
    root = etree.Element(METADATA_ROOT)
    for (image, target), mode in sorted(
            entries.items(), key=lambda e: (e[0][0], e[0][1] or '')):
        element = etree.SubElement(root, 'disk', image=image)
        if target:
            element.set('target', target)
        element.set('cache', mode)
    return etree.tostring(root, encoding='unicode')


def fix_shared_disks(doc, cache_mode):
    """Fix, in place, the caching RBD disks ``doc`` itself calls shared.

    That is ``<shareable/>``, or recorded by ``fix --live``. Returns
    [(disk, changes)] for the disks changed.
    """
    recorded = recorded_disks(doc)
    changed = []
    for disk in rbd_disks(doc):
        if not disk.caches or disk.snapshot:
            continue
        if disk.shareable or recorded_mode(recorded, disk):
            changes = fix_disk(disk.element, cache_mode)
            if changes:
                changed.append((disk, changes))
    return changed


def fix_disk(element, cache_mode):
    """Make one ``<disk>`` element a safe shared disk, in place.

    Only the ``cache`` attribute of ``<driver>`` and ``<shareable/>`` change;
    returns what changed, as text (empty: nothing to do).
    """
    changes = []
    driver = element.find('driver')
    if driver is None:
        driver = etree.Element('driver', name='qemu')
        element.insert(0, driver)
    old = driver.get('cache')
    if old != cache_mode:
        driver.set('cache', cache_mode)
        changes.append("cache %s -> %s" % (old or 'default', cache_mode))
    if element.find('shareable') is None:
        # libvirt re-formats what it stores; placement and spacing are free.
        etree.SubElement(element, 'shareable')
        changes.append('<shareable/> added')
    return changes


def to_text(element):
    return etree.tostring(element, encoding='unicode')
