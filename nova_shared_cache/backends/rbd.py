"""Ceph RBD volumes (Cinder's RBD driver, ``driver_volume_type = rbd``)."""

from nova_shared_cache.backends import base


class RbdBackend(base.SharedVolumeBackend):
    """Identifies Ceph RBD volumes.

    The Ceph-side guard (image features, foreign watchers, fencing) will use
    the ``on_connect`` hook; for now the hook is the base class's no-op.
    """

    def owns(self, connection_info):
        return connection_info.get('driver_volume_type') == 'rbd'

    def describe(self, connection_info):
        # data['name'] is "pool/image"; never include auth data here.
        data = connection_info.get('data') or {}
        return str(data.get('name') or super().describe(connection_info))
