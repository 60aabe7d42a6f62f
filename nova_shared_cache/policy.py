"""What a shared disk must look like. Pure functions: no I/O, no Nova calls.

A disk is *shared* when its volume is attached to several instances at once
(Nova marks such a connection_info ``multiattach: True``) and an enabled
backend owns the volume. Such a disk must be:

- ``<shareable/>``, so libvirt does not lock it to one domain and tells QEMU
  other writers exist;
- in a cache mode that bypasses every client-side cache (``none`` or
  ``directsync``: QEMU then opens librbd with ``rbd_cache=false``);
- raw: a format layer such as qcow2 caches its own metadata in each QEMU
  process and cannot be written by two of them;
- ``io='native'`` only with an O_DIRECT cache mode. Both modes this policy
  produces are O_DIRECT, so the io Nova chose is kept.
"""

from typing import Iterable, NamedTuple, Optional

from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception

DIRECT_IO_CACHE_MODES = frozenset(sc_conf.CACHE_MODES)

#: The LibvirtConfigGuestDisk attributes the policy may change.
ENFORCED_ATTRS = ('shareable', 'driver_cache', 'driver_format')


# NamedTuples, not dataclasses: both are made on every volume disk Nova
# configures, and a tuple is several times cheaper to create.
class SharedDisk(NamedTuple):
    """A disk the policy applies to, and who it belongs to."""

    backend: str
    volume_id: Optional[str]
    volume: str


class Change(NamedTuple):
    """One attribute of a ``LibvirtConfigGuestDisk`` that must change."""

    attr: str
    old: object
    new: object


def volume_id(connection_info):
    """The Cinder volume id, wherever this connection_info keeps it."""
    data = connection_info.get('data') or {}
    return connection_info.get('serial') or data.get('volume_id')


def is_multiattach(connection_info):
    # Anything but a dict (None, a test's sentinel) is not a shared volume.
    return (isinstance(connection_info, dict)
            and connection_info.get('multiattach') is True)


def find_backend(connection_info, backends: Iterable):
    """The first enabled backend that owns this volume, or None."""
    if not connection_info:
        return None
    return next((b for b in backends if b.owns(connection_info)), None)


def classify(connection_info, backends: Iterable) -> Optional[SharedDisk]:
    """Return a SharedDisk if this volume is shared and a backend owns it."""
    # On every multiattach volume disk Nova configures: plain loops and a
    # positional tuple (benchmarks/xml_path.py).
    if not is_multiattach(connection_info):
        return None
    for backend in backends:
        if backend.owns(connection_info):
            return SharedDisk(backend.name, volume_id(connection_info),
                              backend.describe(connection_info))
    return None


def plan(disk, cache_mode, shared: SharedDisk) -> list:
    """The changes that make ``disk`` a safe shared disk (maybe none).

    Raises SharedDiskError when the disk cannot be shared safely at all;
    nothing has been changed then.
    """
    if cache_mode not in DIRECT_IO_CACHE_MODES:
        raise ValueError("cache_mode must be one of %s, not %r"
                         % (', '.join(sc_conf.CACHE_MODES), cache_mode))
    fmt = getattr(disk, 'driver_format', None)
    if fmt not in (None, 'raw'):
        raise exception.SharedDiskError(
            volume_id=shared.volume_id, backend=shared.backend,
            volume=shared.volume,
            reason="its format is %r; only raw disks can be written by "
                   "several instances, a format layer caches metadata in "
                   "each QEMU process" % fmt)
    shareable = getattr(disk, 'shareable', None)
    cache = getattr(disk, 'driver_cache', None)
    if shareable is True and cache == cache_mode and fmt == 'raw':
        return []       # what Nova makes of a multiattach RBD disk
    return [Change(attr, old, new)
            for attr, old, new in zip(ENFORCED_ATTRS,
                                      (shareable, cache, fmt),
                                      (True, cache_mode, 'raw'))
            if old != new]


def apply(disk, changes):
    for change in changes:
        setattr(disk, change.attr, change.new)
