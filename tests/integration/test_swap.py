"""swap_volume on the real libvirtd: libvirt's block copy and the extension.

Nova swaps a volume (what a Cinder migration of an attached volume asks)
with ``virDomainBlockCopy`` to the new disk's XML and a pivot, then saves the
live XML as the definition. libvirt takes only the new source and format
from that XML: the old disk's cache mode and ``<shareable/>`` stay, in QEMU
and in the saved definition. A caching disk swapped to a multiattach volume
would go on caching; the extension switches it after the pivot.
"""

import pytest

from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import qmp

pytestmark = pytest.mark.usefixtures('hostile_client_conf')


def vdb(xml):
    (disk,) = [d for d in domxml.rbd_disks(domxml.parse(xml))
               if d.target == 'vdb']
    return disk


@pytest.mark.parametrize('extension', [True, False],
                         ids=['extension', 'stock'])
def test_a_caching_disk_swapped_to_a_shared_volume(stack, compute,
                                                   extension):
    import libvirt
    compute.switch_driver(extension=extension, cache_mode='none',
                          disk_cachemodes=['network=writeback'])
    _, old_ci = stack.new_volume(multiattach=False)
    new_id, new_ci = stack.new_volume(multiattach=True)
    instance = compute.boot(compute.new_instance())
    console = compute.console(instance)
    try:
        console.wait_ready()
        compute.attach(instance, old_ci)
        dom = compute.domain(instance)._domain
        before = vdb(dom.XMLDesc(0))
        # A disk that is not shared: exactly what Nova makes, caching.
        assert (before.cache, before.shareable) == ('writeback', False)
        assert qmp.live_cache(qmp.Monitor(dom).block_nodes(),
                              before)['direct'] is False

        compute.swap(instance, old_ci, new_ci)

        live = vdb(dom.XMLDesc(0))
        assert live.spec == new_ci['data']['name']      # it did swap
        direct = qmp.live_cache(qmp.Monitor(dom).block_nodes(),
                                live)['direct']
        config = vdb(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if not extension:
            # What libvirt does by itself: the old disk's cache mode stays,
            # live and in the definition Nova saves.
            assert (direct, live.cache, live.shareable) == (
                False, 'writeback', False)
            assert (config.cache, config.shareable) == ('writeback', False)
            assert 'shared-disks' not in dom.XMLDesc(0)
            return
        assert direct is True, 'the swapped-in shared disk still caches'
        assert (config.cache, config.shareable) == ('none', True)
        recorded = domxml.recorded_disks(domxml.parse(dom.XMLDesc(0)))
        assert recorded == {(live.key, 'vdb'): 'none'}
        assert console.run('echo alive').strip() == 'alive'
    finally:
        console.close()
        compute.destroy(instance)
        compute.switch_driver(extension=True, cache_mode='none')
