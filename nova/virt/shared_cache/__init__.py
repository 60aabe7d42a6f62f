# Nova loads "nova.virt." + [DEFAULT] compute_driver; this shim lets nova.conf
# say compute_driver = shared_cache.LibvirtSharedCacheDriver.
from nova_shared_cache.driver import LibvirtSharedCacheDriver  # noqa: F401
