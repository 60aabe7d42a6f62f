"""The guest as a bootable raw disk image, driven through libvirt's console.

What Nova and Cinder will do with the Glance image, on the real stack: a
TCG domain boots the image through SeaBIOS and syslinux (no direct kernel
boot), once copied raw onto an RBD volume (boot from volume) and once as a
local file (an image-backed root disk). Its console is Nova's kind, a
``<serial type='pty'>`` with a virtlogd log, reached only through
``virDomain.openConsole``.
"""

import os
import shutil
import time
import uuid

import libvirt
import pytest

from nova_shared_cache_lab import common
from nova_shared_cache_lab import diskimage
from nova_shared_cache_lab import guest
from nova_shared_cache_lab import libvirtconsole
from nova_shared_cache_lab import probe

BOOT_TIMEOUT = 120

_DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <devices>
    {disk}
    <serial type='pty'>
      <log file='{log}' append='off'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
"""

_RBD_DISK = """<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source protocol='rbd' name='{name}'>
    <host name='127.0.0.1' port='{port}'/>
  </source>
  <auth username='cinder'><secret type='ceph' uuid='{secret}'/></auth>
  <target dev='{dev}' bus='virtio'/>
  <serial>{serial}</serial>
</disk>"""

_FILE_DISK = """<disk type='file' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source file='{path}'/>
  <target dev='vda' bus='virtio'/>
</disk>"""


@pytest.fixture(scope='module')
def image(stack):
    started = time.monotonic()
    path = diskimage.build()
    print('disk image %s: %d bytes, built or found in %.2fs'
          % (path, os.path.getsize(path), time.monotonic() - started))
    return path


@pytest.fixture
def workdir(stack):
    # QEMU runs as another user: the stack root is open to it, /tmp's
    # pytest directories are not.
    path = os.path.join(stack.root, 'diskimage-test', uuid.uuid4().hex[:8])
    os.makedirs(path)
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def conn(stack):
    c = libvirt.open(libvirtconsole.URI)
    yield c
    c.close()


@pytest.fixture
def domains(conn):
    """Define and start domains; every one is destroyed and undefined."""
    made = []

    def start(name, disk, log, paused=False):
        dom = conn.defineXML(_DOMAIN.format(name=name, disk=disk, log=log))
        made.append(dom)
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
        return dom
    yield start
    for dom in made:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        dom.undefine()


@pytest.fixture
def volumes(stack):
    made = []

    def new(spec):
        made.append(spec)
        return spec
    yield new
    for spec in made:
        stack.ceph.remove_image(spec)


def _rbd_disk(stack, volume_id, dev):
    return _RBD_DISK.format(name='volumes/volume-%s' % volume_id,
                            port=stack.ceph.port, secret=stack.secret_uuid,
                            dev=dev, serial=volume_id)


def _name():
    return 'instance-nscdisk-%s' % uuid.uuid4().hex[:8]


def test_boot_from_volume_and_find_a_hotplugged_disk(stack, image, conn,
                                                     domains, volumes,
                                                     workdir):
    # As Cinder's RBD driver makes a bootable volume: the image imported
    # raw, then grown to the volume's size.
    boot_id = str(uuid.uuid4())
    spec = volumes('volumes/volume-%s' % boot_id)
    stack.ceph.rbd('import', '--no-progress', image, spec, timeout=120)
    stack.ceph.rbd('resize', '--no-progress', '--size', '1024', spec)
    name = _name()
    dom = domains(name, _rbd_disk(stack, boot_id, 'vda'),
                  os.path.join(workdir, 'console.log'), paused=True)
    # Opened while the guest is paused: nothing it prints is lost.
    with libvirtconsole.LibvirtConsole(dom) as console:
        started = time.monotonic()
        dom.resume()
        console.wait_ready(timeout=BOOT_TIMEOUT, probe_interval=None)
        print('READY %.1fs after start (TCG, boot from an RBD volume)'
              % (time.monotonic() - started))
        cmdline = console.run('cat /proc/cmdline')
        # syslinux, not a direct kernel boot, started this kernel.
        assert 'BOOT_IMAGE=/vmlinuz' in cmdline
        assert guest.CMDLINE in cmdline
        assert console.run('cat /sys/block/vda/serial').strip() == \
            boot_id[:20]

        volume_id, ci = stack.new_volume()
        volumes(ci['data']['name'])
        dom.attachDeviceFlags(_rbd_disk(stack, volume_id, 'vdb'),
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
        assert probe.find_disk(console, volume_id) == '/dev/vdb'
        assert probe.find_disk(console, boot_id) == '/dev/vda'
        # The probe's O_DIRECT I/O through this console, on that disk.
        probe.write_blocks(console, '/dev/vdb', [3, 4], 'DISKIMG')
        assert probe.read_blocks(console, '/dev/vdb', [3, 4, 5]) == {
            3: 'DISKIMG-3', 4: 'DISKIMG-4', 5: '<zeros>'}
        with pytest.raises(common.StackError, match='exited 3'):
            console.run('sh -c "exit 3"')
    # What the guest printed is in virtlogd's log too, as with Nova.
    with open(os.path.join(workdir, 'console.log'), errors='replace') as f:
        assert guest.READY in f.read()


def test_local_root_disk_console_opened_after_ready(stack, image, domains,
                                                    workdir):
    root = os.path.join(workdir, 'disk')
    shutil.copy(image, root)
    log = os.path.join(workdir, 'console.log')
    name = _name()
    dom = domains(name, _FILE_DISK.format(path=root), log)
    started = time.monotonic()

    def printed_ready():
        try:
            with open(log, errors='replace') as f:
                return guest.READY in f.read()
        except OSError:
            return False
    while not printed_ready():
        assert time.monotonic() - started < BOOT_TIMEOUT, \
            'no READY in %s' % log
        time.sleep(0.5)
    print('READY %.1fs after start (TCG, local root disk; virtlogd log)'
          % (time.monotonic() - started))
    # Nobody had the pty open when the guest printed READY: QEMU dropped it.
    with libvirtconsole.LibvirtConsole.open(name) as console:
        with pytest.raises(common.StackError, match='NSC-GUEST-READY'):
            console.wait_ready(timeout=3, probe_interval=None)
    # A new console asks the guest for it, and then drives the shell.
    with libvirtconsole.LibvirtConsole.open(name) as console:
        console.wait_ready(timeout=60, probe_interval=2)
        assert console.run('echo $((6 * 7))').strip() == '42'
        assert console.run('ls /sys/block').split() == ['vda']
        # One console at a time: a second one is refused without force.
        with pytest.raises(common.StackError, match='cannot open the console'):
            libvirtconsole.LibvirtConsole.open(name)
    # What Nova's stop, shelve and resize do first: the ACPI power button.
    # The guest powers off by itself rather than waiting to be destroyed.
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    pressed = time.monotonic()
    while dom.info()[0] != libvirt.VIR_DOMAIN_SHUTOFF:
        assert time.monotonic() - pressed < 60, \
            'the guest ignored the ACPI power button'
        time.sleep(0.2)
    print('powered off %.1fs after the ACPI power button'
          % (time.monotonic() - pressed))
