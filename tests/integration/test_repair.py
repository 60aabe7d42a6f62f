"""Repairing a running host: audit, fix --live, fix --config.

Two real VMs share one RBD image in writeback (stock Nova with
``disk_cachemodes = network=writeback`` and a volume that is not marked
multiattach, under a client ceph.conf asking librbd to cache): the
situation an operator finds on a host the extension was installed on late.
"""

import io
import json
import time

from lxml import etree
import pytest

from nova_shared_cache.cmd import manage
from nova_shared_cache.libvirt import livefix
from nova_shared_cache.libvirt import qmp
from nova_shared_cache_lab import probe
from tests.integration.helpers import boot_pair
from tests.integration.helpers import shutdown

pytestmark = pytest.mark.usefixtures('hostile_client_conf')

WRITER_BLOCKS = list(range(3000, 3300))


def run(nova_conf, *args):
    out, err = io.StringIO(), io.StringIO()
    code = manage.main(['--config-file', nova_conf] + list(args), out, err)
    return code, out.getvalue(), err.getvalue()


def audit(nova_conf, *domains):
    args = ['audit', '--json']
    for name in domains:
        args += ['--domain', name]
    code, out, err = run(nova_conf, *args)
    assert err == ''
    return code, json.loads(out)


@pytest.fixture(scope='module')
def caching_pair(stack, compute):
    compute.switch_driver(extension=False,
                          disk_cachemodes=['network=writeback'])
    volume_id, ci = stack.new_volume(multiattach=False)
    vms = boot_pair(compute, ci)
    yield volume_id, ci, vms
    shutdown(compute, vms)


def names(compute, vms):
    return [compute.domain(inst)._domain.name() for inst, _, _ in vms]


def rows_for(report, volume_id):
    return {d['domain']: d for d in report['disks']
            if d['image'].endswith(volume_id)}


def storage_node(compute, instance, volume_id):
    dom = compute.domain(instance)._domain
    disk = [d for d in domxml_disks(dom) if d.serial == volume_id][0]
    return qmp.live_cache(qmp.Monitor(dom).block_nodes(), disk), disk


def domxml_disks(dom):
    from nova_shared_cache.libvirt import domxml
    return domxml.rbd_disks(domxml.parse(dom.XMLDesc(0)))


def test_1_audit_reports_both_vms(compute, caching_pair, nova_conf):
    volume_id, _, vms = caching_pair
    code, report = audit(nova_conf)
    assert code == 1
    rows = rows_for(report, volume_id)
    assert sorted(rows) == sorted(names(compute, vms))
    for name, row in rows.items():
        assert row['shared'] is True
        assert any(s.startswith('local domains:') for s in row['shared_by'])
        assert row['cache'] == 'writeback'
        assert row['qemu'] == {'direct': False, 'writeback': True,
                               'no_flush': False}
        codes = {(f['code'], f['where']) for f in row['findings']}
        assert codes == {('caching', 'qemu'), ('caching', 'definition'),
                         ('not-shareable', 'definition')}, name
    # The human table names both domains and ends with the summary.
    code, out, _ = run(nova_conf, 'audit')
    assert code == 1
    for name in rows:
        assert name in out
    assert 'rbd cache on' in out
    assert out.splitlines()[-1].startswith(
        '%d domains, ' % report['domains'])


def _start_writer(console, dev):
    console.run('rm -f /tmp/wlast /tmp/wdone /tmp/wfail')
    console.run(
        '(for b in %s; do yes "LOOP-$b" | head -c 4096 > /tmp/w; '
        'dd if=/tmp/w of=%s bs=4096 seek=$b count=1 oflag=direct '
        'conv=notrunc 2>/dev/null || echo $b >> /tmp/wfail; '
        'echo $b > /tmp/wlast; done; echo done > /tmp/wdone) '
        '</dev/null >/dev/null 2>&1 & true'
        % (' '.join(map(str, WRITER_BLOCKS)), dev))


def _writer_progress(console):
    out = console.run('cat /tmp/wlast 2>/dev/null; cat /tmp/wdone '
                      '2>/dev/null; true').split()
    return out


def test_2_fix_live_with_a_writer_running(compute, caching_pair, nova_conf):
    volume_id, _, vms = caching_pair
    pairs = [(c, d) for _, c, d in vms]
    before = probe.cross_vm(pairs, rounds=4, blocks_per_round=20)
    assert before.stale > 0, before     # the hazard is really there

    (_, con_a, dev_a), (_, con_b, dev_b) = vms
    _start_writer(con_a, dev_a)
    probe_deadline = time.monotonic() + 60
    while not _writer_progress(con_a):
        assert time.monotonic() < probe_deadline, 'writer did not start'
        time.sleep(0.2)
    code, out, err = run(nova_conf, 'fix', '--live', '--json')
    during = _writer_progress(con_a)
    assert code == 0, (out, err)
    results = json.loads(out)['results']
    switched = {r['domain']: r for r in results if r['action'] == 'live'}
    assert sorted(switched) == sorted(names(compute, vms))
    for r in switched.values():
        assert r['state'] == 'switched'
        assert r['before']['direct'] is False
        assert r['after']['direct'] is True
        assert 0 < r['pause_ms'] < 5000
        assert r['config']['state'] == 'fixed'
    # The switch happened while the guest was writing.
    assert 'done' not in during, 'writer finished before the switch'

    deadline = time.monotonic() + 300
    while 'done' not in _writer_progress(con_a):
        assert time.monotonic() < deadline, 'writer loop did not finish'
        time.sleep(1)
    assert con_a.run('cat /tmp/wfail 2>/dev/null; true').strip() == '', \
        'guest I/O errors during the switch'
    expected = {b: 'LOOP-%d' % b for b in WRITER_BLOCKS}
    assert probe.read_blocks(con_a, dev_a, WRITER_BLOCKS) == expected
    assert probe.read_blocks(con_b, dev_b, WRITER_BLOCKS) == expected

    after = probe.cross_vm(pairs, rounds=4, blocks_per_round=20,
                           first_block=200)
    assert after.stale == 0 and after.fresh == after.checks == 80, after

    code, report = audit(nova_conf)
    rows = rows_for(report, volume_id)
    for row in rows.values():
        assert row['qemu']['direct'] is True
        assert row['findings'] == [], row
        assert row['cache'] == 'none' and row['shareable'] is True
    assert code == 0, report


def test_3_detach_and_attach_after_the_switch(compute, caching_pair):
    volume_id, ci, vms = caching_pair
    instance, con, dev = vms[0]
    cache, disk = storage_node(compute, instance, volume_id)
    assert cache['direct'] is True
    fmt, storage = qmp.node_names(disk)
    compute.detach(instance, ci)
    assert compute.disk_xml(instance, volume_id) is None
    nodes = qmp.Monitor(compute.domain(instance)._domain).block_nodes()
    left = [n for n in nodes if n in (fmt, storage)
            or n == livefix.TEMP_NODE % disk.index]
    assert left == [], 'detach left nodes behind: %s' % left
    compute.attach(instance, ci)
    dev = probe.find_disk(con, volume_id)
    vms[0] = (instance, con, dev)
    assert probe.read_blocks(con, dev, WRITER_BLOCKS[:5]) == {
        b: 'LOOP-%d' % b for b in WRITER_BLOCKS[:5]}


def test_4_failure_mid_switch_rolls_back(compute, caching_pair, nova_conf,
                                         monkeypatch):
    import libvirt
    volume_id, _, vms = caching_pair
    instance, con, dev = vms[0]
    # The re-attach went through stock Nova again: cached.
    cache, disk = storage_node(compute, instance, volume_id)
    assert cache['direct'] is False
    name = compute.domain(instance)._domain.name()

    # 1. The new node cannot open (no such image): nothing changes.
    real_storage = livefix.storage_options
    monkeypatch.setattr(livefix, 'storage_options', lambda d, n, s: dict(
        real_storage(d, n, s), image='no-such-image'))
    code, out, _ = run(nova_conf, 'fix', '--live', '--json',
                       '--domain', name)
    assert code == 2
    result = json.loads(out)['results'][0]
    assert result['state'] == 'not-switched'
    assert 'no-such-image' in result['error'] or 'No such file' in \
        result['error'], result
    assert result['leftover'] == [] and result['vm'] == 'running', result
    monkeypatch.undo()

    # 2. The reopen fails while the VM is paused: rolled back, resumed.
    real_format = livefix.format_options
    monkeypatch.setattr(
        livefix, 'format_options',
        lambda node, file_node, direct: dict(
            real_format(node, file_node, direct),
            file='nsc-missing-node' if file_node.startswith('nsc-')
            else file_node))
    code, out, _ = run(nova_conf, 'fix', '--live', '--json',
                       '--domain', name)
    monkeypatch.undo()
    assert code == 2
    result = json.loads(out)['results'][0]
    assert result['state'] == 'rolled-back', result
    assert 'rolled back, the disk is unchanged' in result['error'], result
    assert result['leftover'] == [] and result['vm'] == 'running', result
    dom = compute.domain(instance)._domain
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    nodes = qmp.Monitor(dom).block_nodes()
    assert livefix.TEMP_NODE % disk.index not in nodes
    assert qmp.live_cache(nodes, disk)['direct'] is False
    # The guest still reads and writes its disk.
    probe.write_blocks(con, dev, [4000], 'ALIVE')
    assert probe.read_blocks(con, dev, [4000]) == {4000: 'ALIVE-4000'}

    # And a clean run afterwards switches it.
    code, out, _ = run(nova_conf, 'fix', '--live', '--json',
                       '--domain', name)
    assert code == 0, out
    assert storage_node(compute, instance, volume_id)[0]['direct'] is True


def _canonical_without(doc, serial):
    """The definition with the fixed disk's cache and shareable removed."""
    for disk in doc.findall('./devices/disk'):
        if disk.findtext('serial') == serial:
            disk.find('driver').attrib.pop('cache', None)
            for shareable in disk.findall('shareable'):
                disk.remove(shareable)
    return etree.tostring(doc, method='c14n')


def test_5_fix_config_then_cold_restart(stack, compute, nova_conf):
    import libvirt
    compute.switch_driver(extension=False,
                          disk_cachemodes=['network=writeback'])
    volume_id, ci = stack.new_volume(multiattach=False)
    vms = boot_pair(compute, ci)
    try:
        instance = vms[0][0]
        dom = compute.domain(instance)._domain
        name = dom.name()
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE
        before = dom.XMLDesc(flags)
        code, out, err = run(nova_conf, 'fix', '--config', '--json',
                             '--domain', name)
        assert code == 0, (out, err)
        (result,) = json.loads(out)['results']
        assert result['state'] == 'fixed'
        assert result['changes'] == ['cache writeback -> none',
                                     '<shareable/> added']
        after = dom.XMLDesc(flags)
        fixed = etree.fromstring(after)
        disk = [d for d in fixed.findall('./devices/disk')
                if d.findtext('serial') == volume_id][0]
        assert disk.find('driver').get('cache') == 'none'
        assert disk.find('shareable') is not None
        # Nothing else in the definition changed.
        assert _canonical_without(etree.fromstring(before), volume_id) == \
            _canonical_without(fixed, volume_id)
        # The running QEMU still caches until a cold restart.
        code, report = audit(nova_conf, name)
        (row,) = rows_for(report, volume_id).values()
        assert {(f['code'], f['where']) for f in row['findings']} == {
            ('caching', 'qemu'), ('live-differs', 'qemu')}
        vms[0][1].close()
        dom.destroy()
        dom.create()
        live = etree.fromstring(dom.XMLDesc(0))
        disk = [d for d in live.findall('./devices/disk')
                if d.findtext('serial') == volume_id][0]
        assert disk.find('driver').get('cache') == 'none'
        assert disk.find('shareable') is not None
        code, report = audit(nova_conf, name)
        (row,) = rows_for(report, volume_id).values()
        assert row['qemu']['direct'] is True and row['findings'] == []
        vms[0] = (instance, compute.console(instance), None)
    finally:
        shutdown(compute, vms)
