"""A test-only Nova compute driver that recreates the shared-disk hazard.

``compute_driver = nsc_lab_hazard.UnsharedCachingDriver`` is stock Nova's
libvirt driver with one rule dropped: a multiattach volume's disk is not
made ``<shareable/>``, so Nova's own "shareable means cache='none'" never
applies and ``[libvirt] disk_cachemodes`` (e.g. ``network=writeback``)
decides its cache. With a client ceph.conf whose librbd cache holds data
(``rbd cache policy = writeback``), two servers sharing a volume then read
stale data: the control of the project's coherence checks on the lab cloud
(``tools/cloud up --hazard``). Never install this on a real compute: it
exists to show that the checks can fail.
"""

from nova.virt.libvirt import driver as libvirt_driver


class UnsharedCachingDriver(libvirt_driver.LibvirtDriver):

    def _get_volume_config(self, connection_info, disk_info):
        vol_driver = self._get_volume_driver(connection_info)
        conf = vol_driver.get_config(connection_info, disk_info)
        # The one difference from Nova: a multiattach disk stays unshared.
        conf.shareable = False
        self._set_cache_mode(conf)
        return conf
