"""A tiny guest: Debian's cloud kernel and a busybox initramfs.

Built on demand into a cache directory (``NSC_GUEST_CACHE``, default
``~/.cache/nova-shared-cache/guest``) and never committed: the kernel comes
from Debian's ``linux-image-cloud-amd64`` package, busybox from
``busybox-static``. The guest's init loads the virtio modules and then reads
shell commands from the serial console, one per line, without echo (busybox's
interactive shell sends a cursor query that stalls a scripted console).
"""

import hashlib
import os
import shutil
import tempfile

from nova_shared_cache import exception
# The kernel download, module lookup and initramfs writer are the
# product's (verify's probe image is made the same way).
from nova_shared_cache.verify import image as product_image
from nova_shared_cache_lab import common

KERNEL_PACKAGE = product_image.KERNEL_PACKAGE
#: Loaded in this order, each after what it needs (module_closure).
MODULES = ('virtio_pci', 'virtio_blk',
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
for m in /lib/modules/*.ko; do insmod $m; done
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


def _kernel_tree(workdir):
    """Download and unpack the cloud kernel: (package, tree)."""
    if product_image.versioned_kernel() is None and os.geteuid() == 0:
        common.progress('apt-get update (package lists are missing)')
        common.run(['apt-get', 'update', '-qq'], timeout=600, check=False)
    return product_image.kernel_tree(workdir)


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
    if busybox is None or not product_image.is_static(busybox):
        raise common.StackError(reason="busybox (static) is missing: "
                                       "apt-get install busybox-static")
    common.progress('building the guest kernel and initramfs in %s' % out)
    os.makedirs(out, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix='nsc-guest-') as work:
            package, tree = _kernel_tree(work)
            modules = product_image.module_closure(tree, MODULES)
            product_image.write_initramfs(
                initrd + '.tmp', busybox, modules,
                _INIT.format(ready=READY))
            shutil.copy(product_image.vmlinuz(tree), kernel + '.tmp')
    except exception.ProbeImageError as error:
        raise common.StackError(reason=str(error)) from None
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
