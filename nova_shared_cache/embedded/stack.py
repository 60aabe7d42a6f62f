"""Bring the whole embedded stack up and down: Ceph, libvirt, the secret."""

import os
import sys
import uuid

from nova_shared_cache.embedded import ceph
from nova_shared_cache.embedded import clientconf
from nova_shared_cache.embedded import common
from nova_shared_cache.embedded import compute as compute_harness
from nova_shared_cache.embedded import guest
from nova_shared_cache.embedded import virt


class Stack:

    def __init__(self, root=None):
        self.root = root or common.root_dir()
        self.ceph = ceph.Cluster(self.root)
        self.libvirt = virt.Libvirt(self.root)
        self.secret_uuid = None

    def up(self):
        if os.geteuid() != 0:
            raise common.StackError(reason="run as root (libvirtd, Ceph "
                                           "daemons, /etc/ceph/ceph.conf)")
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        guest.build()
        clientconf.remove_stale()
        self.ceph.up()
        self.ceph.write_client_conf()
        self.libvirt.up()
        key_file = self.ceph.write_key_file()
        try:
            self.secret_uuid = self.libvirt.ensure_secret(key_file)
        finally:
            os.unlink(key_file)
        return self

    def down(self):
        self.libvirt.down(compute_harness.DOMAIN_PREFIX)
        self.ceph.down()
        clientconf.remove_stale()

    def new_volume(self, multiattach=True, size_mb=64):
        """A Cinder-style multiattach RBD volume and its connection_info."""
        volume_id = str(uuid.uuid4())
        self.ceph.create_multiattach_volume(volume_id, size_mb)
        return volume_id, self.ceph.connection_info(
            volume_id, self.secret_uuid, multiattach=multiattach)


def main(argv=None):
    """``tools/stack up|down|status``: the embedded stack on its own."""
    import argparse
    parser = argparse.ArgumentParser(prog='tools/stack')
    parser.add_argument('action', choices=('up', 'down', 'status'))
    args = parser.parse_args(argv)
    stack = Stack()
    try:
        if args.action == 'up':
            stack.up()
            common.progress('stack up under %s (secret %s); '
                            '"tools/stack down" removes it'
                            % (stack.root, stack.secret_uuid))
        elif args.action == 'down':
            stack.down()
            common.progress('stack down')
        else:
            ceph_up, virt_up = stack.ceph.is_up(), stack.libvirt.is_up()
            state = {True: 'up', False: 'down'}
            print('ceph: %s\nlibvirtd: %s' % (state[ceph_up], state[virt_up]))
            return 0 if ceph_up and virt_up else 1
    except common.StackError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
