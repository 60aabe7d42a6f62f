"""A tiny guest: Debian's cloud kernel and a busybox initramfs.

Built on demand into a cache directory (``NSC_GUEST_CACHE``, default
``~/.cache/nova-shared-cache/guest``) and never committed: the kernel comes
from Debian's ``linux-image-cloud-amd64`` package, busybox from
``busybox-static``. The guest's init loads the virtio modules and then reads
shell commands from the serial console, one per line, without echo (busybox's
interactive shell sends a cursor query that stalls a scripted console).
"""

import glob
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile

from nova_shared_cache_lab import common

KERNEL_PACKAGE = 'linux-image-cloud-amd64'
MODULES = ('virtio_ring', 'virtio', 'virtio_pci_modern_dev',
           'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk',
           # The ACPI power button as an input device, read by busybox's
           # acpid: a clean shutdown (Nova's stop, shelve, resize) powers
           # the guest off at once instead of waiting out shutdown_timeout.
           'button', 'evdev')
READY = 'NSC-GUEST-READY'
# The kernel prints to the same console; keep it quiet.
CMDLINE = 'console=ttyS0 quiet loglevel=1 panic=-1'

_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/printk
for m in {modules}; do insmod /lib/modules/$m.ko; done
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\\nexec poweroff -f\\n' > /etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /tmp/acpid.log
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty -echo
echo {ready}
while read -r line; do eval "$line"; done
echo "console loop ended"
"""


def cache_dir():
    return os.environ.get('NSC_GUEST_CACHE', os.path.expanduser(
        '~/.cache/nova-shared-cache/guest'))


def _versioned_kernel():
    depends = common.run(['apt-cache', 'depends', KERNEL_PACKAGE],
                         check=False).stdout
    return [line.split(':', 1)[1].strip() for line in depends.splitlines()
            if line.strip().startswith('Depends:') and 'linux-image-' in line]


def _kernel_deb(workdir):
    """Download the versioned kernel package the meta-package points at."""
    common.require_commands('apt-get', 'apt-cache', 'dpkg',
                            package_hint='apt dpkg')
    versioned = _versioned_kernel()
    if not versioned and os.geteuid() == 0:
        common.progress('apt-get update (package lists are missing)')
        common.run(['apt-get', 'update', '-qq'], timeout=600, check=False)
        versioned = _versioned_kernel()
    if not versioned:
        raise common.StackError(
            reason="apt-cache knows no %s; run apt-get update"
                   % KERNEL_PACKAGE)
    package = versioned[0]
    proc = subprocess.run(['apt-get', 'download', package], cwd=workdir,
                          capture_output=True, text=True, timeout=600)
    debs = glob.glob(os.path.join(workdir, '%s_*.deb' % package))
    if proc.returncode != 0 or not debs:
        raise common.StackError(reason="apt-get download %s failed: %s"
                                % (package, proc.stderr.strip()[-500:]))
    return package, debs[0]


def build(force=False):
    """Return (kernel, initramfs) paths, building them if needed."""
    out = cache_dir()
    kernel = os.path.join(out, 'vmlinuz')
    initrd = os.path.join(out, 'initramfs.img')
    stamp = initrd + '.recipe'
    if (not force and os.path.exists(kernel) and os.path.exists(initrd)
            and _read(stamp) == recipe()):
        return kernel, initrd
    busybox = shutil.which('busybox')
    if busybox is None or not _is_static(busybox):
        raise common.StackError(reason="busybox (static) is missing: "
                                       "apt-get install busybox-static")
    common.require_commands('cpio', package_hint='cpio')
    common.progress('building the guest kernel and initramfs in %s' % out)
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='nsc-guest-') as work:
        package, deb = _kernel_deb(work)
        tree = os.path.join(work, 'x')
        common.run(['dpkg', '-x', deb, tree], timeout=300)
        vmlinuz = glob.glob(os.path.join(tree, 'boot', 'vmlinuz-*'))[0]
        root = os.path.join(work, 'initramfs')
        for sub in ('bin', 'lib/modules', 'proc', 'sys', 'dev', 'tmp'):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        shutil.copy(busybox, os.path.join(root, 'bin', 'busybox'))
        for module in MODULES:
            found = glob.glob(os.path.join(
                tree, 'lib', 'modules', '*', 'kernel', '**',
                module + '.ko'), recursive=True)
            if not found:
                raise common.StackError(reason="module %s not in %s"
                                        % (module, package))
            shutil.copy(found[0], os.path.join(root, 'lib', 'modules'))
        init = os.path.join(root, 'init')
        with open(init, 'w') as f:
            f.write(_INIT.format(modules=' '.join(MODULES), ready=READY))
        os.chmod(init, 0o755)
        files = subprocess.run(['find', '.'], cwd=root, capture_output=True,
                               check=True).stdout
        archive = subprocess.run(['cpio', '-o', '-H', 'newc', '--quiet'],
                                 cwd=root, input=files, capture_output=True,
                                 check=True).stdout
        with gzip.open(initrd + '.tmp', 'wb') as f:
            f.write(archive)
        shutil.copy(vmlinuz, kernel + '.tmp')
    os.replace(kernel + '.tmp', kernel)
    os.replace(initrd + '.tmp', initrd)
    for path in (kernel, initrd):
        os.chmod(path, 0o644)
    with open(stamp + '.tmp', 'w') as f:
        f.write(recipe())
    os.replace(stamp + '.tmp', stamp)
    return kernel, initrd


def recipe():
    """What the initramfs is made of: a change rebuilds a cached one."""
    return hashlib.sha256(('%s\n%s' % (' '.join(MODULES), _INIT)).encode(
        'utf-8')).hexdigest()


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _is_static(path):
    # A dynamically linked binary names its program interpreter early on.
    with open(path, 'rb') as f:
        return b'ld-linux' not in f.read(4096)
