"""Bring the whole embedded stack up and down: Ceph, libvirt, the secret."""

import os
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
