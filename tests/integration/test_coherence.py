"""Two real VMs, one RBD volume, attached through the extension.

Real Ceph (mon, mgr, memstore OSD), real libvirtd and QEMU (TCG) guests, and
Nova's own libvirt driver code generating every domain and disk XML. The
guests do all disk I/O with O_DIRECT, so a stale read can only come from a
cache below the guest.
"""

from lxml import etree
import pytest

from nova_shared_cache_lab import probe
from tests.integration.helpers import boot_pair
from tests.integration.helpers import shutdown

# Every test runs with a client ceph.conf that asks librbd to cache
# (writeback, no writethrough phase): only the cache mode in the disk XML
# decides whether a VM caches.
pytestmark = pytest.mark.usefixtures('hostile_client_conf')


def driver_of(disk_xml):
    return etree.fromstring(disk_xml).find('driver')


@pytest.fixture(scope='module')
def shared(stack, compute):
    compute.switch_driver(extension=True, cache_mode='none',
                          disk_cachemodes=['network=writeback'])
    volume_id, ci = stack.new_volume()
    vms = boot_pair(compute, ci)
    yield volume_id, ci, vms
    shutdown(compute, vms)


def test_libvirt_reports_shareable_and_cache_none(compute, shared):
    volume_id, _, vms = shared
    for instance, _, _ in vms:
        xml = compute.disk_xml(instance, volume_id)
        assert xml is not None
        doc = etree.fromstring(xml)
        assert doc.find('shareable') is not None
        assert doc.find('driver').get('cache') == 'none'


def test_writes_cross_both_ways(shared):
    _, _, vms = shared
    (_, con_a, dev_a), (_, con_b, dev_b) = vms
    blocks = list(range(600, 640))
    probe.write_blocks(con_a, dev_a, blocks[:20], 'FROMA')
    probe.write_blocks(con_b, dev_b, blocks[20:], 'FROMB')
    seen_by_b = probe.read_blocks(con_b, dev_b, blocks[:20])
    seen_by_a = probe.read_blocks(con_a, dev_a, blocks[20:])
    assert seen_by_b == {b: 'FROMA-%d' % b for b in blocks[:20]}
    assert seen_by_a == {b: 'FROMB-%d' % b for b in blocks[20:]}


def test_probe_loop_has_no_stale_reads(shared):
    _, _, vms = shared
    result = probe.cross_vm([(c, d) for _, c, d in vms], rounds=8,
                            blocks_per_round=25)
    print('\nextension, cache none:', result)
    assert result.checks >= 200
    assert result.stale == 0
    assert result.other == 0
    assert result.fresh == result.checks


def test_hard_reboot_regenerates_xml_and_stays_coherent(compute, shared):
    volume_id, _, vms = shared
    instance_b, con_b, _ = vms[1]
    con_b.close()
    compute.hard_reboot(instance_b)
    con_b = compute.console(instance_b)
    con_b.wait_ready()
    dev_b = probe.find_disk(con_b, volume_id)
    vms[1] = (instance_b, con_b, dev_b)
    doc = etree.fromstring(compute.disk_xml(instance_b, volume_id))
    assert doc.find('shareable') is not None
    assert doc.find('driver').get('cache') == 'none'
    result = probe.cross_vm([(c, d) for _, c, d in vms], rounds=2,
                            blocks_per_round=20, first_block=1000)
    assert result.stale == 0 and result.fresh == result.checks == 40


def test_detach_leaves_the_other_vm_its_data(compute, shared):
    volume_id, ci, vms = shared
    (inst_a, con_a, dev_a), (inst_b, con_b, dev_b) = vms
    blocks = list(range(2000, 2010))
    probe.write_blocks(con_a, dev_a, blocks, 'KEEP')
    compute.detach(inst_a, ci)
    assert compute.disk_xml(inst_a, volume_id) is None
    assert probe.read_blocks(con_b, dev_b, blocks) == {
        b: 'KEEP-%d' % b for b in blocks}
    probe.write_blocks(con_b, dev_b, blocks, 'AFTER')
    assert probe.read_blocks(con_b, dev_b, blocks) == {
        b: 'AFTER-%d' % b for b in blocks}
    # Attach again so the module fixture tears down a consistent pair.
    compute.attach(inst_a, ci)
    vms[0] = (inst_a, con_a, probe.find_disk(con_a, volume_id))


def test_directsync(stack, compute):
    compute.switch_driver(extension=True, cache_mode='directsync')
    volume_id, ci = stack.new_volume()
    vms = boot_pair(compute, ci)
    try:
        for instance, _, _ in vms:
            doc = etree.fromstring(compute.disk_xml(instance, volume_id))
            assert doc.find('shareable') is not None
            assert doc.find('driver').get('cache') == 'directsync'
        result = probe.cross_vm([(c, d) for _, c, d in vms], rounds=2,
                                blocks_per_round=25)
        assert result.stale == 0 and result.fresh == result.checks == 50
    finally:
        shutdown(compute, vms)


def test_control_caching_disk_reads_stale_data(stack, compute):
    """The same two VMs without the extension's disk: the test can fail.

    Stock Nova with ``disk_cachemodes = network=writeback`` and a volume
    that is not marked multiattach (the attach every VM got before Nova
    knew about multiattach, or a volume shared by accident) gives each VM a
    caching librbd client.
    """
    compute.switch_driver(extension=False,
                          disk_cachemodes=['network=writeback'])
    volume_id, ci = stack.new_volume(multiattach=False)
    vms = boot_pair(compute, ci)
    try:
        for instance, _, _ in vms:
            doc = etree.fromstring(compute.disk_xml(instance, volume_id))
            assert doc.find('shareable') is None
            assert doc.find('driver').get('cache') == 'writeback'
        result = probe.cross_vm([(c, d) for _, c, d in vms], rounds=8,
                                blocks_per_round=25)
        print('\ncontrol, stock Nova writeback:', result)
        assert result.stale > 0
    finally:
        shutdown(compute, vms)
