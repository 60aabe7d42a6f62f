"""The client ceph.conf QEMU's librbd reads (``/etc/ceph/ceph.conf``).

libvirt gives QEMU the monitors and the key in the disk XML, but librbd
still reads the default configuration file for everything else, such as its
cache policy. The coherence control experiment needs a hostile one.
"""

import contextlib
import os

PATH = os.environ.get('NSC_CLIENT_CEPH_CONF', '/etc/ceph/ceph.conf')

#: What makes a caching librbd client hold data: writeback policy, and no
#: writethrough phase before the first flush.
WRITEBACK = {'rbd cache policy': 'writeback',
             'rbd cache writethrough until flush': 'false'}


MARKER = '# written by nova-shared-cache tests; restored after\n'


def remove_stale():
    """Remove a client ceph.conf a killed run left behind (ours only)."""
    try:
        with open(PATH) as f:
            if f.readline() == MARKER:
                os.unlink(PATH)
    except OSError:
        pass


@contextlib.contextmanager
def client_options(options):
    """Write ``[client]`` options to the client ceph.conf, restore after."""
    try:
        with open(PATH) as f:
            saved = f.read()
    except FileNotFoundError:
        saved = None
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    with open(PATH + '.nsc-tmp', 'w') as f:
        f.write(MARKER + '[client]\n')
        for key, value in options.items():
            f.write('%s = %s\n' % (key, value))
    os.chmod(PATH + '.nsc-tmp', 0o644)
    os.replace(PATH + '.nsc-tmp', PATH)
    try:
        yield
    finally:
        if saved is None:
            os.unlink(PATH)
        else:
            with open(PATH, 'w') as f:
                f.write(saved)
