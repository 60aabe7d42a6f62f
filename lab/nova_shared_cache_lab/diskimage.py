"""The tiny guest as a raw disk image that SeaBIOS boots, for Glance/Cinder.

Nova boots a Glance image as the root disk and Cinder copies it raw onto a
volume for boot from volume; neither knows the guest's kernel and
initramfs (``guest.build()``) unless they sit on a disk with a boot loader.
This module puts them on one: an MBR (syslinux's ``mbr.bin``) with one
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
import hashlib
import json
import math
import os
import struct
import tempfile

from nova_shared_cache_lab import common
from nova_shared_cache_lab import guest

IMAGE_NAME = 'disk.img'
#: Bump when the layout changes: a cached image of another format is rebuilt.
FORMAT = 1
DEB_PACKAGES = 'syslinux syslinux-common mtools dosfstools'
MBR_CODE = '/usr/lib/syslinux/mbr/mbr.bin'
SECTOR = 512
MIB = 1 << 20
GIB = 1 << 30
#: The partition starts at 1 MiB, as partitioning tools place it.
PART_START_SECTOR = MIB // SECTOR
#: FAT16 with 2 KiB clusters and less needs this much to be FAT16 at all.
MIN_FS_MIB = 16
#: FAT16, LBA addressed.
PART_TYPE_FAT16_LBA = 0x0e
#: Fixed ids keep the image the same from build to build.
DISK_SIGNATURE = 0x4e534331
VOLUME_ID = '4e534331'
VOLUME_LABEL = 'NSCGUEST'
KERNEL_FILE = 'vmlinuz'
INITRD_FILE = 'initrd.img'


def image_path():
    return os.path.join(guest.cache_dir(), IMAGE_NAME)


def _stamp_path(path):
    return path + '.json'


def image_size_mib(payload_bytes):
    """Whole MiB for a disk holding ``payload_bytes`` of files.

    FAT's tables, directories and cluster slack take well under 10%; 4 MiB
    more is room for syslinux's loader and a larger kernel.
    """
    fs_mib = math.ceil((payload_bytes * 1.1 + 4 * MIB) / MIB)
    return PART_START_SECTOR * SECTOR // MIB + max(fs_mib, MIN_FS_MIB)


def mbr(boot_code, total_sectors, start_sector=PART_START_SECTOR):
    """The first sector: boot code, disk signature, one active partition.

    CHS fields hold the "use LBA" marker (cylinder 1023, head 254, sector
    63) that every BIOS-era tool writes for a partition it cannot express
    in CHS; syslinux's MBR code reads by LBA.
    """
    if len(boot_code) > 440:
        raise ValueError('boot code of %d bytes does not fit in 440'
                         % len(boot_code))
    if total_sectors <= start_sector:
        raise ValueError('a disk of %d sectors has no room after sector %d'
                         % (total_sectors, start_sector))
    chs_lba = b'\xfe\xff\xff'
    entry = struct.pack('<B3sB3sII', 0x80, chs_lba, PART_TYPE_FAT16_LBA,
                        chs_lba, start_sector, total_sectors - start_sector)
    return (boot_code.ljust(440, b'\0')
            + struct.pack('<IH', DISK_SIGNATURE, 0)
            + entry + b'\0' * 48 + b'\x55\xaa')


def syslinux_cfg(cmdline):
    """Boot the one entry at once, with no prompt and no menu."""
    if '\n' in cmdline:
        raise ValueError('a kernel command line is one line')
    return ('DEFAULT nsc\nPROMPT 0\nTIMEOUT 0\n'
            'LABEL nsc\n  LINUX /%s\n  INITRD /%s\n  APPEND %s\n'
            % (KERNEL_FILE, INITRD_FILE, cmdline))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(MIB), b''):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(kernel, initrd, cmdline):
    """What the image is built from; a different one means rebuild."""
    return {'format': FORMAT, 'cmdline': cmdline,
            'kernel_sha256': _sha256(kernel),
            'initrd_sha256': _sha256(initrd)}


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
    common.require_commands('mkfs.fat', 'mcopy', 'syslinux',
                            package_hint=DEB_PACKAGES)
    if not os.path.exists(MBR_CODE):
        raise common.StackError(reason="%s is missing (Debian package "
                                       "syslinux-common)" % MBR_CODE)
    with open(MBR_CODE, 'rb') as f:
        boot_code = f.read()
    size_mib = image_size_mib(os.path.getsize(kernel)
                              + os.path.getsize(initrd))
    common.progress('building the guest disk image %s (%d MiB)'
                    % (path, size_mib))
    offset = PART_START_SECTOR * SECTOR
    # mtools refuses an image whose geometry looks odd to it; the FAT it
    # writes is checked by syslinux and by the boot itself.
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    with tempfile.TemporaryDirectory(prefix='nsc-disk-',
                                     dir=os.path.dirname(path)) as work:
        tmp = os.path.join(work, IMAGE_NAME)
        with open(tmp, 'wb') as f:
            f.truncate(size_mib * MIB)
            f.write(mbr(boot_code, size_mib * MIB // SECTOR))
        fs_kib = (size_mib * MIB - offset) // 1024
        common.run(['mkfs.fat', '-F', '16', '-n', VOLUME_LABEL,
                    '-i', VOLUME_ID, '--offset', str(PART_START_SECTOR),
                    tmp, str(fs_kib)], env=env)
        cfg = os.path.join(work, 'syslinux.cfg')
        with open(cfg, 'w') as f:
            f.write(syslinux_cfg(cmdline))
        target = '%s@@%d' % (tmp, offset)
        for source, name in ((kernel, KERNEL_FILE), (initrd, INITRD_FILE),
                             (cfg, 'syslinux.cfg')):
            common.run(['mcopy', '-o', '-m', '-i', target, source,
                        '::/' + name], timeout=120, env=env)
        common.run(['syslinux', '--offset', str(offset), '--install', tmp],
                   timeout=120, env=env)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


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
    size = GIB if image_size is None else image_size
    return {
        'disk_format': 'raw',
        'container_format': 'bare',
        'min_disk': max(1, math.ceil(size / GIB)),
        'min_ram': 128,
        'hw_disk_bus': 'virtio',
        'hw_firmware_type': 'bios',
        'hw_vif_model': 'virtio',
        'hw_qemu_guest_agent': 'no',
        'os_type': 'linux',
    }
