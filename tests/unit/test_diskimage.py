"""The disk image builder's own logic: layout, config, cache, Glance side."""

import json
import os
import struct
from unittest import mock

import pytest

from nova_shared_cache.verify import image
from nova_shared_cache_lab import diskimage
from nova_shared_cache_lab import guest

MIB = 1 << 20
GIB = 1 << 30


def test_image_size_fits_the_payload_after_the_gap():
    # Today's guest: a 14 MB kernel and a 1 MB initramfs.
    assert image.image_size_mib(15_288_272) == 22
    # A tiny payload still gets a FAT16-sized partition after 1 MiB.
    assert image.image_size_mib(0) == 1 + image.MIN_FS_MIB
    big = 100 * MIB
    assert (image.image_size_mib(big) - 1) * MIB >= big * 1.1


def test_mbr_has_one_active_fat_partition_after_1mib():
    code = b'\xfa' * 300
    total = 22 * MIB // 512
    sector = image.mbr(code, total)
    assert len(sector) == 512
    assert sector[:300] == code and sector[300:440] == b'\0' * 140
    assert sector[510:] == b'\x55\xaa'
    boot, ptype, start, count = struct.unpack(
        '<B3xB3xII', sector[446:462])
    assert (boot, ptype, start, count) == (0x80, 0x0e, 2048, total - 2048)
    # The other three entries are empty.
    assert sector[462:510] == b'\0' * 48


def test_mbr_refuses_what_does_not_fit():
    with pytest.raises(ValueError):
        image.mbr(b'x' * 441, 1 << 20)
    with pytest.raises(ValueError):
        image.mbr(b'', 2048)


def test_syslinux_cfg_boots_the_guest_with_its_command_line():
    cfg = image.syslinux_cfg(guest.CMDLINE)
    lines = [line.strip() for line in cfg.splitlines()]
    assert 'PROMPT 0' in lines and 'TIMEOUT 0' in lines
    assert 'DEFAULT nsc' in lines and 'LABEL nsc' in lines
    assert 'LINUX /vmlinuz' in lines and 'INITRD /initrd.img' in lines
    assert 'APPEND %s' % guest.CMDLINE in lines
    assert 'console=ttyS0' in guest.CMDLINE
    with pytest.raises(ValueError):
        image.syslinux_cfg('console=ttyS0\nAPPEND evil')


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A guest cache with a fake kernel and initramfs; _build stubbed."""
    monkeypatch.setenv('NSC_GUEST_CACHE', str(tmp_path))
    kernel, initrd = tmp_path / 'vmlinuz', tmp_path / 'initramfs.img'
    kernel.write_bytes(b'kernel-1')
    initrd.write_bytes(b'initrd-1')
    builds = []

    def fake_build(path, k, i, cmdline):
        builds.append(cmdline)
        with open(path, 'w') as f:
            f.write('image %d' % len(builds))
    with mock.patch.object(guest, 'build',
                           return_value=(str(kernel), str(initrd))), \
            mock.patch.object(diskimage, '_build', side_effect=fake_build):
        yield kernel, initrd, builds


def test_build_is_cached_until_kernel_initramfs_or_cmdline_change(cache):
    kernel, initrd, builds = cache
    path = diskimage.build()
    assert path == diskimage.image_path()
    assert diskimage.build() == path and len(builds) == 1
    kernel.write_bytes(b'kernel-2')
    diskimage.build()
    assert len(builds) == 2
    initrd.write_bytes(b'initrd-2')
    diskimage.build()
    diskimage.build()
    assert len(builds) == 3
    diskimage.build(cmdline='console=ttyS0')
    assert builds[-1] == 'console=ttyS0' and len(builds) == 4
    diskimage.build(cmdline='console=ttyS0', force=True)
    assert len(builds) == 5


def test_build_again_when_the_image_or_its_stamp_is_gone_or_bad(cache):
    kernel, initrd, builds = cache
    path = diskimage.build()
    stamp = path + '.json'
    with open(stamp) as f:
        recorded = json.load(f)
    assert recorded['format'] == diskimage.FORMAT
    assert recorded['cmdline'] == guest.CMDLINE
    with open(stamp, 'w') as f:
        f.write('{not json')
    diskimage.build()
    assert len(builds) == 2
    os.unlink(path)
    diskimage.build()
    assert len(builds) == 3
    with open(stamp, 'w') as f:
        json.dump(dict(recorded, format=diskimage.FORMAT - 1), f)
    diskimage.build()
    assert len(builds) == 4


def test_glance_properties():
    props = diskimage.glance_properties(22 * MIB)
    assert props['disk_format'] == 'raw'
    assert props['container_format'] == 'bare'
    assert props['min_disk'] == 1
    assert props['hw_disk_bus'] == 'virtio'
    assert props['hw_firmware_type'] == 'bios'
    # Direct kernel boot properties would bypass the disk's boot loader.
    for key in ('kernel_id', 'ramdisk_id', 'os_command_line',
                'hw_serial_port_count'):
        assert key not in props
    assert diskimage.glance_properties(GIB)['min_disk'] == 1
    assert diskimage.glance_properties(GIB + 1)['min_disk'] == 2
    assert diskimage.glance_properties()['min_disk'] == 1
