"""Bring the whole embedded stack up and down: Ceph, libvirt, the secret."""

import os
import sys
import uuid

from nova_shared_cache_lab import ceph
from nova_shared_cache_lab import clientconf
from nova_shared_cache_lab import common
from nova_shared_cache_lab import compute as compute_harness
from nova_shared_cache_lab import guest
from nova_shared_cache_lab import virt


class Stack:

    def __init__(self, root=None):
        self.root = root or common.root_dir()
        self.ceph = ceph.Cluster(self.root)
        self.libvirt = virt.Libvirt(self.root)
        self.secret_uuid = None

    def up(self, guest_image=True, secret_uuid=None, secret_private=True):
        if os.geteuid() != 0:
            raise common.StackError(reason="run as root (libvirtd, Ceph "
                                           "daemons, /etc/ceph/ceph.conf)")
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        if guest_image:
            guest.build()
        clientconf.remove_stale()
        self.ceph.up()
        self.ceph.write_client_conf()
        self.libvirt.up()
        self.set_secret(secret_uuid, private=secret_private)
        return self

    def set_secret(self, secret_uuid=None, private=True):
        """(Re)define the libvirt ceph secret, private or not."""
        key_file = self.ceph.write_key_file()
        try:
            self.secret_uuid = self.libvirt.ensure_secret(
                key_file, secret_uuid or self.secret_uuid, private=private)
        finally:
            os.unlink(key_file)
        return self.secret_uuid

    def down(self, domains=True):
        # Outside the test harness (devstack) the domains are Nova's own.
        self.libvirt.down(compute_harness.DOMAIN_PREFIX if domains else None)
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
    parser.add_argument('action', choices=('up', 'down', 'status', 'info'))
    parser.add_argument('--no-guest-image', action='store_true',
                        help='up: do not build the test guest')
    parser.add_argument('--secret-uuid',
                        help='up: the uuid of the libvirt ceph secret')
    parser.add_argument('--secret-private', choices=('yes', 'no'),
                        default='yes',
                        help="up: libvirt's private flag of the secret "
                             "('no' lets nova-shared-cache's guard read the "
                             "key, as devstack-plugin-ceph defines it)")
    parser.add_argument('--keep-domains', action='store_true',
                        help="down: leave libvirt's domains alone")
    args = parser.parse_args(argv)
    stack = Stack()
    try:
        if args.action == 'up':
            stack.up(guest_image=not args.no_guest_image,
                     secret_uuid=args.secret_uuid,
                     secret_private=args.secret_private == 'yes')
            common.progress('stack up under %s (secret %s); '
                            '"tools/stack down" removes it'
                            % (stack.root, stack.secret_uuid))
        elif args.action == 'down':
            stack.down(domains=not args.keep_domains)
            common.progress('stack down')
        elif args.action == 'info':
            # What a deployment tool (devstack) configures Cinder and Nova
            # with; no key.
            print('client_conf=%s\npool=%s\nuser=%s\nsecret_uuid=%s\n'
                  'mon_host=127.0.0.1:%s' % (
                      stack.ceph.client_conf, ceph.POOL, ceph.CLIENT,
                      stack.libvirt.secret_uuid() or '', stack.ceph.port))
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
