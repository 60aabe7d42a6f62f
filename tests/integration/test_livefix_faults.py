"""fix --live interrupted and hung, on real VMs, QEMU, libvirt and Ceph.

Two TCG guests share one RBD image in writeback (stock Nova with
``disk_cachemodes = network=writeback``, a volume not marked multiattach,
a client ceph.conf asking librbd to cache). The faults come at named
points of the switch through livefix's test hook
(NOVA_SHARED_CACHE_LIVEFIX_TEST_HOOK), not through timing: a SIGTERM to
this process (``fix`` runs in-process), and a SIGSTOP of the QEMU process
or of the Ceph OSD, continued by a timer after the QMP timeout.

After each: the VM runs (libvirt's state), the guest still reads and writes
the shared disk, and the report says what happened (exit status, state,
what is left and how to clean it).
"""

import io
import json
import os
import signal
import time

import pytest

from nova_shared_cache.cmd import manage
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import livefix
from nova_shared_cache.libvirt import qmp
from nova_shared_cache_lab import probe
from tests.integration.helpers import boot_pair
from tests.integration.helpers import shutdown

pytestmark = pytest.mark.usefixtures('hostile_client_conf')

QMP_TIMEOUT = 2.0


@pytest.fixture(scope='module')
def pair(stack, compute):
    compute.switch_driver(extension=False,
                          disk_cachemodes=['network=writeback'])
    volume_id, ci = stack.new_volume(multiattach=False)
    vms = boot_pair(compute, ci)
    yield volume_id, ci, vms
    shutdown(compute, vms)


@pytest.fixture
def short_bounds(monkeypatch):
    monkeypatch.setattr(livefix, 'QMP_TIMEOUT', QMP_TIMEOUT)
    monkeypatch.setattr(livefix, 'CLOSE_DEADLINE', 1.0)


def continue_later(request, pid):
    """A finalizer that continues ``pid`` whatever happens."""
    def cont():
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    request.addfinalizer(cont)


def fix_live(nova_conf, name, hook=None, monkeypatch=None):
    if hook:
        monkeypatch.setenv(livefix.HOOK_ENV, hook)
    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = manage.main(['--config-file', nova_conf, 'fix', '--live',
                            '--json', '--domain', name], out, err)
    finally:
        if hook:
            monkeypatch.delenv(livefix.HOOK_ENV)
    # The switch gave the process its signal handlers back.
    assert handlers == {s: signal.getsignal(s) for s in handlers}
    report = json.loads(out.getvalue())
    lives = [r for r in report['results'] if r['action'] == 'live']
    assert len(lives) == 1, report
    return code, report, lives[0]


def disk_of(compute, instance, volume_id):
    dom = compute.domain(instance)._domain
    disk = [d for d in domxml.rbd_disks(domxml.parse(dom.XMLDesc(0)))
            if d.serial == volume_id][0]
    return dom, disk


def nodes_of(dom, disk):
    """QEMU's nodes of the disk: {name: cache.direct}."""
    nodes = qmp.Monitor(dom).block_nodes()
    names = qmp.node_names(disk) + (livefix.TEMP_NODE % disk.index,)
    return {n: nodes[n]['cache']['direct'] for n in names if n in nodes}


def qemu_pid(name):
    wanted = ('guest=%s' % name).encode()
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if any(a == wanted or a.startswith(wanted + b',') for a in argv):
            return int(pid)
    raise AssertionError('no QEMU process for %s' % name)


def process_state(pid):
    with open('/proc/%d/stat' % pid) as f:
        return f.read().rsplit(')', 1)[1].split()[0]


def assert_vm_alive(dom, con, dev, block):
    import libvirt
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    probe.write_blocks(con, dev, [block], 'ALIVE')
    assert probe.read_blocks(con, dev, [block]) == {
        block: 'ALIVE-%d' % block}


def test_1_sigterm_while_paused_rolls_back(compute, pair, nova_conf,
                                           monkeypatch):
    volume_id, _, vms = pair
    instance, con, dev = vms[0]
    dom, disk = disk_of(compute, instance, volume_id)
    fmt, storage = qmp.node_names(disk)
    assert nodes_of(dom, disk) == {fmt: False, storage: False}

    code, report, r = fix_live(nova_conf, dom.name(), 'paused:signal:TERM',
                               monkeypatch)
    assert code == 2
    assert report['interrupted'] == 'SIGTERM'
    assert r['state'] == 'rolled-back', r
    assert r['interrupted'] == 'SIGTERM'
    assert r['error'].startswith(
        'stopped by SIGTERM: rolled back, the disk is unchanged'), r
    assert r['leftover'] == [] and r['vm'] == 'running', r
    assert r['config']['state'] == 'skipped'
    # QEMU: as before, and no temporary node (no stray librbd client).
    assert nodes_of(dom, disk) == {fmt: False, storage: False}
    assert_vm_alive(dom, con, dev, 4100)


def test_2_sigterm_after_the_move_then_a_second_run(compute, pair, nova_conf,
                                                    monkeypatch):
    volume_id, _, vms = pair
    instance, con, dev = vms[0]
    dom, disk = disk_of(compute, instance, volume_id)
    fmt, storage = qmp.node_names(disk)
    temp = livefix.TEMP_NODE % disk.index

    code, report, r = fix_live(nova_conf, dom.name(), 'moved:signal:TERM',
                               monkeypatch)
    assert code == 2
    assert r['state'] == 'partial' and r['interrupted'] == 'SIGTERM', r
    assert r['vm'] == 'running'
    assert any('runs uncached on node %s' % temp in left
               for left in r['leftover']), r
    assert 'fix --live --domain %s again' % dom.name() in r['remedy']
    # The disk moved, the caching client is gone, libvirt's name not back.
    assert nodes_of(dom, disk) == {fmt: True, temp: True}
    assert_vm_alive(dom, con, dev, 4101)

    # The audit sees no librbd node under libvirt's name; fix --live
    # finds the leftover and finishes without a pause.
    code, report, r = fix_live(nova_conf, dom.name())
    assert code == 0, report
    assert r['state'] == 'completed' and r['pause_ms'] == 0, r
    assert r['config']['state'] == 'fixed'
    assert nodes_of(dom, disk) == {fmt: True, storage: True}
    assert_vm_alive(dom, con, dev, 4102)


def test_3_qemu_hangs_while_paused(request, compute, pair, nova_conf,
                                   monkeypatch, short_bounds):
    volume_id, _, vms = pair
    instance, con, dev = vms[1]
    dom, disk = disk_of(compute, instance, volume_id)
    fmt, storage = qmp.node_names(disk)
    assert nodes_of(dom, disk) == {fmt: False, storage: False}
    pid = qemu_pid(dom.name())
    continue_later(request, pid)

    # QEMU stops right after the pause: the reopen gets no answer within
    # the QMP timeout; QEMU continues 3 s later and runs it.
    hold = QMP_TIMEOUT + 3
    code, report, r = fix_live(nova_conf, dom.name(),
                               'paused:stop:%d:%g' % (pid, hold),
                               monkeypatch)
    assert r['vm'] == 'running', r
    assert code == 0, r
    assert r['state'] == 'switched', r
    assert any('no answer within %g s' % QMP_TIMEOUT in note
               for note in r['notes']), r
    assert r['pause_ms'] >= QMP_TIMEOUT * 1000, r
    assert nodes_of(dom, disk) == {fmt: True, storage: True}
    assert_vm_alive(dom, con, dev, 4103)


def test_4_osd_stops_while_the_old_node_closes(request, stack, compute, pair,
                                               nova_conf, monkeypatch,
                                               short_bounds):
    volume_id, ci, vms = pair
    instance, con, _ = vms[0]
    # Attach again through stock Nova: cached again.
    compute.detach(instance, ci)
    compute.attach(instance, ci)
    dev = probe.find_disk(con, volume_id)
    vms[0] = (instance, con, dev)
    dom, disk = disk_of(compute, instance, volume_id)
    fmt, storage = qmp.node_names(disk)
    temp = livefix.TEMP_NODE % disk.index
    assert nodes_of(dom, disk) == {fmt: False, storage: False}
    osd = stack.ceph.daemons()['osd.0']
    continue_later(request, osd)

    # The OSD stops once the VM has resumed: the old node's rbd_close
    # waits for it, the deletion gets no answer, stage 2 must not run.
    hold = QMP_TIMEOUT + 1.0 + 4
    code, report, r = fix_live(nova_conf, dom.name(),
                               'resumed:stop:%d:%g' % (osd, hold),
                               monkeypatch)
    assert code == 2, r
    assert r['state'] == 'partial', r
    assert r['vm'] == 'running', r
    # The close did not hold the VM paused.
    assert r['pause_ms'] < QMP_TIMEOUT * 1000, r
    left = ' '.join(r['leftover'])
    assert ('node %s is perhaps still open: an extra librbd client with '
            'its cache on' % storage) in left, r
    assert 'runs uncached on node %s' % temp in left, r
    assert 'blockdev-del' in r['remedy'] and 'again' in r['remedy'], r

    # The OSD continues, QEMU finishes the close; a second run completes.
    deadline = time.monotonic() + 60
    while process_state(osd) == 'T':
        assert time.monotonic() < deadline, 'the OSD was not continued'
        time.sleep(0.2)
    code, report, r = fix_live(nova_conf, dom.name())
    assert code == 0, report
    assert r['state'] == 'completed', r
    assert nodes_of(dom, disk) == {fmt: True, storage: True}
    assert_vm_alive(dom, con, dev, 4104)
