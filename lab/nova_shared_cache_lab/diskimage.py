"""The tiny guest as a raw disk image that SeaBIOS boots, for Glance/Cinder.

Nova boots a Glance image as the root disk and Cinder copies it raw onto a
volume for boot from volume; neither knows the guest's kernel and
initramfs (``guest.build()``) unless they sit on a disk with a boot loader.
This module puts them on one (with the product's builder,
``nova_shared_cache.verify.image``): an MBR (syslinux's ``mbr.bin``) with one
active FAT16 partition at 1 MiB holding the kernel, the initramfs,
``syslinux.cfg`` and syslinux's loader. It is made from a plain file with
``mkfs.fat --offset``, ``mcopy -i FILE@@OFFSET`` and the mtools-based
``syslinux --offset --install``: no loop device, no mount, no root needed.

The image is built on demand next to ``guest.build()``'s output and never
committed; a stamp beside it records the sha256 of the kernel and
initramfs and the command line, and a change in any of them rebuilds it.
The guest runs from its initramfs and never mounts the disk, so the same
image works as the instance's root disk (``/dev/vda``) and copied onto a
volume of any size.
"""

import contextlib
import fcntl
import json
import math
import os

from nova_shared_cache import exception
# The layout and the builder are the product's (verify's probe image is
# made the same way); the lab keeps its own cache and stamp.
from nova_shared_cache.verify import image as product_image

from nova_shared_cache_lab import common
from nova_shared_cache_lab import guest

IMAGE_NAME = 'disk.img'
#: Bump when the layout changes: a cached image of another format is rebuilt.
FORMAT = 1


def image_path():
    return os.path.join(guest.cache_dir(), IMAGE_NAME)


def _stamp_path(path):
    return path + '.json'


def fingerprint(kernel, initrd, cmdline):
    """What the image is built from; a different one means rebuild."""
    return {'format': FORMAT, 'cmdline': cmdline,
            'kernel_sha256': product_image.file_digest(kernel, 'sha256'),
            'initrd_sha256': product_image.file_digest(initrd, 'sha256')}


def is_current(path, wanted):
    """The image at ``path`` exists and was built from ``wanted``."""
    if not os.path.exists(path):
        return False
    try:
        with open(_stamp_path(path)) as f:
            return json.load(f) == wanted
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(path):
    # Two processes building at once would each write a whole image; the
    # lock makes the second one find the first one's result.
    with open(path + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(force=False, cmdline=guest.CMDLINE):
    """Return the path of the raw disk image, building it if needed."""
    kernel, initrd = guest.build()
    path = image_path()
    wanted = fingerprint(kernel, initrd, cmdline)
    if not force and is_current(path, wanted):
        return path
    with _locked(path):
        if not force and is_current(path, wanted):
            return path
        _build(path, kernel, initrd, cmdline)
        with open(_stamp_path(path) + '.tmp', 'w') as f:
            json.dump(wanted, f, indent=1, sort_keys=True)
        os.replace(_stamp_path(path) + '.tmp', _stamp_path(path))
    return path


def _build(path, kernel, initrd, cmdline):
    common.progress('building the guest disk image %s' % path)
    try:
        product_image.write_disk_image(path, kernel, initrd, cmdline)
    except exception.ProbeImageError as error:
        raise common.StackError(reason=str(error)) from None


def glance_properties(image_size=None):
    """What an image of this guest needs in Glance, for Nova's libvirt driver.

    One flat dict, as Glance's v2 API takes it on image create: the image
    attributes (``disk_format``, ``container_format``, ``min_disk`` in GiB,
    ``min_ram`` in MiB) and the properties Nova reads.

    - ``hw_disk_bus=virtio``: the initramfs has virtio-blk only (no IDE,
      SATA or SCSI driver), and the tests find volumes as ``/dev/vdX``.
    - ``hw_firmware_type=bios``: SeaBIOS boots syslinux; there is no EFI
      loader on the disk.
    - No serial-console property: with ``[serial_console] enabled = false``
      Nova's libvirt driver (``_create_consoles_qemu_kvm``) gives every
      qemu/kvm guest one ``<serial type='pty'>`` with a virtlogd log, which
      the guest's ``console=ttyS0`` uses and ``libvirtconsole`` opens.
      ``hw_serial_port_count`` counts only with serial_console enabled, and
      then the ports are TCP, which ``virDomain.openConsole`` cannot open.
    - No ``os_command_line``: Nova passes it only with ``kernel_id`` (direct
      kernel boot); here ``syslinux.cfg`` on the disk carries it.

    ``image_size``: bytes of the raw image (default: 1 GiB's worth, what
    the guest always fits in); ``min_disk`` is that in GiB, rounded up, so
    a flavor's root disk and a boot volume are large enough.
    """
    size = product_image.GIB if image_size is None else image_size
    return {
        'disk_format': 'raw',
        'container_format': 'bare',
        'min_disk': max(1, math.ceil(size / product_image.GIB)),
        'min_ram': 128,
        'hw_disk_bus': 'virtio',
        'hw_firmware_type': 'bios',
        'hw_vif_model': 'virtio',
        'hw_qemu_guest_agent': 'no',
        'os_type': 'linux',
    }
