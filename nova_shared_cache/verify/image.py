"""A tiny bootable guest made from Debian packages.

The kernel is Debian's ``linux-image-cloud-amd64`` (its versioned package),
the userland ``busybox-static``; both are fetched with ``apt-get download``
and unpacked with ``dpkg -x``, so nothing is installed on the building
host. The initramfs holds busybox, the kernel modules asked for (with what
they depend on, from the kernel's ``modules.dep``) and an ``/init``.

The disk image is what SeaBIOS boots, for Glance and Cinder: an MBR
(syslinux's ``mbr.bin``) and one active FAT16 partition at 1 MiB holding the
kernel, the initramfs, ``syslinux.cfg`` and syslinux's loader. It is made
from a plain file with ``mkfs.fat --offset``, ``mcopy -i FILE@@OFFSET`` and
the mtools-based ``syslinux --offset --install``: no loop device, no mount,
no root needed. The guest runs from its initramfs and never mounts that
disk, so the image boots as a root disk or copied onto a volume.
"""

import glob
import gzip
import hashlib
import lzma
import math
import os
import shutil
import struct
import subprocess
import tempfile

from nova_shared_cache import exception
from nova_shared_cache.verify import guest

KERNEL_PACKAGE = 'linux-image-cloud-amd64'
BUSYBOX_PACKAGE = 'busybox-static'
DISK_TOOLS_PACKAGES = 'syslinux syslinux-common mtools dosfstools'
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


def _fail(reason):
    raise exception.ProbeImageError(reason=reason)


def run(argv, timeout=300, env=None, cwd=None):
    """Run a build step; its stdout, or ProbeImageError naming the step."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=cwd)
    except FileNotFoundError:
        _fail('%s is not installed' % argv[0])
    except subprocess.TimeoutExpired:
        _fail('%s did not finish in %d s' % (' '.join(argv), timeout))
    if proc.returncode != 0:
        _fail('%s failed (exit %d): %s' % (
            ' '.join(argv), proc.returncode,
            (proc.stderr or proc.stdout).strip()[-500:]))
    return proc.stdout


def require_commands(*names, packages):
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        _fail('%s not found; install the Debian packages: apt-get install %s'
              % (', '.join(missing), packages))


# -- Debian packages -------------------------------------------------------

def versioned_kernel():
    """The versioned kernel package the cloud meta-package depends on."""
    require_commands('apt-cache', 'apt-get', 'dpkg',
                     packages='apt dpkg')
    depends = subprocess.run(['apt-cache', 'depends', KERNEL_PACKAGE],
                             capture_output=True, text=True).stdout
    for line in depends.splitlines():
        line = line.strip()
        if line.startswith('Depends:') and 'linux-image-' in line:
            return line.split(':', 1)[1].strip()
    return None


def download(package, workdir):
    """``apt-get download`` one package into ``workdir``; the .deb path."""
    run(['apt-get', 'download', package], timeout=600, cwd=workdir)
    debs = glob.glob(os.path.join(workdir, '%s_*.deb' % package))
    if not debs:
        _fail('apt-get download %s left no .deb' % package)
    return debs[0]


def unpack(deb, tree):
    run(['dpkg', '-x', deb, tree])
    return tree


def kernel_tree(workdir):
    """Download and unpack the cloud kernel: (package, tree)."""
    package = versioned_kernel()
    if package is None:
        _fail('apt-cache knows no %s (run apt-get update; on a Debian or '
              'Ubuntu host with the Debian archive configured)'
              % KERNEL_PACKAGE)
    tree = unpack(download(package, workdir), os.path.join(workdir, 'k'))
    return package, tree


def vmlinuz(tree):
    found = sorted(glob.glob(os.path.join(tree, 'boot', 'vmlinuz-*')))
    if not found:
        _fail('the kernel package has no /boot/vmlinuz-*')
    return found[-1]


def busybox_from_deb(workdir):
    tree = unpack(download(BUSYBOX_PACKAGE, workdir),
                  os.path.join(workdir, 'bb'))
    for candidate in ('bin/busybox', 'usr/bin/busybox'):
        path = os.path.join(tree, candidate)
        if os.path.exists(path):
            return path
    _fail('%s has no busybox binary' % BUSYBOX_PACKAGE)


def is_static(path):
    # A dynamically linked binary names its program interpreter early on.
    with open(path, 'rb') as f:
        return b'ld-linux' not in f.read(4096)


# -- kernel modules --------------------------------------------------------

def _module_name(path):
    base = os.path.basename(path)
    for suffix in ('.ko.xz', '.ko'):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
    return base.replace('-', '_')


def _depends(path):
    """The ``depends=`` of a module's .modinfo section (names)."""
    opener = lzma.open if path.endswith('.xz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    for field in data.split(b'\0'):
        if field.startswith(b'depends='):
            names = field[len(b'depends='):].decode('ascii', 'replace')
            return [n.replace('-', '_') for n in names.split(',') if n]
    return []


def module_closure(tree, names):
    """Module files for ``names`` and what they need, dependencies first.

    The package has no ``modules.dep`` (depmod writes it on install), so
    each module's own ``depends=`` (its .modinfo) is read; a module built
    into the kernel (``modules.builtin``) needs no file and is left out.
    Unknown names are an error that names them.
    """
    dirs = glob.glob(os.path.join(tree, 'lib', 'modules', '*'))
    if len(dirs) != 1:
        _fail('expected one module directory in the kernel package, found '
              '%d' % len(dirs))
    root = dirs[0]
    files = {}
    for path in glob.glob(os.path.join(root, 'kernel', '**', '*.ko*'),
                          recursive=True):
        files[_module_name(path)] = path
    builtin = set()
    try:
        with open(os.path.join(root, 'modules.builtin')) as f:
            builtin = {_module_name(line.strip()) for line in f}
    except FileNotFoundError:
        pass
    ordered, seen = [], set()

    def visit(name):
        name = name.replace('-', '_')
        if name in seen:
            return
        seen.add(name)
        if name not in files:
            if name in builtin:
                return
            _fail('kernel module %s is not in %s' % (
                name, os.path.basename(root)))
        for need in _depends(files[name]):
            visit(need)
        ordered.append(files[name])
    for name in names:
        visit(name)
    return ordered


def write_initramfs(path, busybox, modules, init, files=None):
    """A gzip'd newc cpio with busybox, ``modules`` (in load order) and init.

    The init finds the modules as ``/lib/modules/NN-name.ko``: the order
    of the file names is the load order. ``files``: {path in the image:
    text} of more executable scripts.
    """
    require_commands('cpio', packages='cpio')
    with tempfile.TemporaryDirectory(prefix='nsc-initramfs-') as root:
        for sub in ('bin', 'lib/modules', 'proc', 'sys', 'dev', 'tmp'):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        shutil.copy(busybox, os.path.join(root, 'bin', 'busybox'))
        os.chmod(os.path.join(root, 'bin', 'busybox'), 0o755)
        for n, module in enumerate(modules):
            target = os.path.join(root, 'lib', 'modules', '%02d-%s.ko' % (
                n, _module_name(module)))
            if module.endswith('.xz'):
                with lzma.open(module) as src, open(target, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copy(module, target)
        for name, text in dict(files or {}, init=init).items():
            target = os.path.join(root, name.lstrip('/'))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, 'w') as f:
                f.write(text)
            os.chmod(target, 0o755)
        listing = subprocess.run(['find', '.'], cwd=root, capture_output=True,
                                 check=True).stdout
        archive = subprocess.run(['cpio', '-o', '-H', 'newc', '--quiet'],
                                 cwd=root, input=listing, capture_output=True,
                                 check=True).stdout
    with gzip.open(path, 'wb') as f:
        f.write(archive)


# -- the disk image --------------------------------------------------------

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


def file_digest(path, algorithm):
    """The hex digest of a file.

    ``sha256`` for the build stamps; ``sha512`` is Glance's
    ``os_hash_value``.
    """
    digest = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(MIB), b''):
            digest.update(chunk)
    return digest.hexdigest()


def write_disk_image(path, kernel, initrd, cmdline):
    """Write the bootable raw image to ``path`` (replaced atomically)."""
    require_commands('mkfs.fat', 'mcopy', 'syslinux',
                     packages=DISK_TOOLS_PACKAGES)
    if not os.path.exists(MBR_CODE):
        _fail('%s is missing (Debian package syslinux-common)' % MBR_CODE)
    with open(MBR_CODE, 'rb') as f:
        boot_code = f.read()
    size_mib = image_size_mib(os.path.getsize(kernel)
                              + os.path.getsize(initrd))
    offset = PART_START_SECTOR * SECTOR
    # mtools refuses an image whose geometry looks odd to it; the FAT it
    # writes is checked by syslinux and by the boot itself.
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(prefix='nsc-disk-',
                                     dir=directory) as work:
        tmp = os.path.join(work, 'disk.img')
        with open(tmp, 'wb') as f:
            f.truncate(size_mib * MIB)
            f.write(mbr(boot_code, size_mib * MIB // SECTOR))
        fs_kib = (size_mib * MIB - offset) // 1024
        run(['mkfs.fat', '-F', '16', '-n', VOLUME_LABEL, '-i', VOLUME_ID,
             '--offset', str(PART_START_SECTOR), tmp, str(fs_kib)], env=env)
        cfg = os.path.join(work, 'syslinux.cfg')
        with open(cfg, 'w') as f:
            f.write(syslinux_cfg(cmdline))
        target = '%s@@%d' % (tmp, offset)
        for source, name in ((kernel, KERNEL_FILE), (initrd, INITRD_FILE),
                             (cfg, 'syslinux.cfg')):
            run(['mcopy', '-o', '-m', '-i', target, source, '::/' + name],
                timeout=120, env=env)
        run(['syslinux', '--offset', str(offset), '--install', tmp],
            timeout=120, env=env)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return size_mib


# -- the probe image -------------------------------------------------------

#: Bump when the image's layout changes: a stamped image is rebuilt.
FORMAT = 1


def probe_recipe(kernel_package):
    """What a probe image is made of; another recipe means rebuild."""
    text = '\n'.join([str(FORMAT), kernel_package or '', guest.CMDLINE,
                      ' '.join(guest.MODULES), guest.INIT, guest.PROBE])
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _stamp(path):
    return path + '.recipe'


def build_probe_image(path, force=False, progress=None):
    """Build the probe image at ``path``; (path, built, size in bytes).

    An image whose stamp (``PATH.recipe``) matches the current recipe and
    kernel package is kept unless ``force``.
    """
    progress = progress or (lambda text: None)
    package = versioned_kernel()
    if package is None:
        _fail('apt-cache knows no %s (run apt-get update; the build needs '
              'a Debian or Ubuntu host with the Debian archive configured)'
              % KERNEL_PACKAGE)
    recipe = probe_recipe(package)
    try:
        with open(_stamp(path)) as f:
            current = f.read().strip() == recipe
    except OSError:
        current = False
    if current and not force and os.path.exists(path):
        return path, False, os.path.getsize(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='nsc-probe-',
                                     dir=directory) as work:
        progress('downloading %s and %s' % (package, BUSYBOX_PACKAGE))
        tree = unpack(download(package, work), os.path.join(work, 'k'))
        busybox = busybox_from_deb(work)
        if not is_static(busybox):
            _fail('the busybox in %s is not static' % BUSYBOX_PACKAGE)
        modules = module_closure(tree, guest.MODULES)
        progress('initramfs: busybox, %d kernel modules, the probe'
                 % len(modules))
        initrd = os.path.join(work, INITRD_FILE)
        write_initramfs(initrd, busybox, modules, guest.INIT,
                        files={'bin/nsc-probe': guest.PROBE})
        progress('disk image %s' % path)
        write_disk_image(path, vmlinuz(tree), initrd, guest.CMDLINE)
    with open(_stamp(path) + '.tmp', 'w') as f:
        f.write(recipe + '\n')
    os.replace(_stamp(path) + '.tmp', _stamp(path))
    return path, True, os.path.getsize(path)


def glance_properties():
    """What the probe image needs in Glance, for Nova's libvirt driver.

    virtio disks (the initramfs has no other disk driver), BIOS boot
    (syslinux), a config drive on every server booted from it
    (``img_config_drive=mandatory``: the probe reads its user data there),
    and the protocol it speaks (``verify`` checks it).
    """
    return {
        'hw_disk_bus': 'virtio',
        'hw_firmware_type': 'bios',
        # The config drive is a CD-ROM on IDE with i440fx ('pc', Nova's
        # x86 default) and on SATA with q35, whose AHCI driver Debian's
        # cloud kernel lacks: ask for 'pc' whatever the cloud's default.
        'hw_machine_type': 'pc',
        'hw_qemu_guest_agent': 'no',
        'img_config_drive': 'mandatory',
        'os_type': 'linux',
        'nova_shared_cache_probe': str(guest.PROTOCOL),
    }
