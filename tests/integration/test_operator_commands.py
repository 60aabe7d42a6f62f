"""nova-shared-cache status and fence on two real VMs sharing a volume.

The commands run as an operator runs them: the installed console script,
a nova.conf naming the compute's ceph.conf, the real cluster and libvirtd.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nova_shared_cache import cephops
from nova_shared_cache_lab import ceph as embedded_ceph
from nova_shared_cache_lab import probe
from tests.integration.helpers import shutdown

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'nova-shared-cache')


@pytest.fixture(scope='module')
def pair(stack, compute, tmp_path_factory):
    """Two VMs sharing a volume, and each VM's Ceph client address."""
    compute.switch_driver(extension=True, cache_mode='none')
    volume_id, ci = stack.new_volume()
    spec = ci['data']['name']
    nova_conf = tmp_path_factory.mktemp('etc') / 'nova.conf'
    nova_conf.write_text(
        '[libvirt]\nconnection_uri = qemu:///system\n'
        '[shared_cache]\nceph_conf = %s\nceph_user = %s\nceph_timeout = 10\n'
        % (stack.ceph.client_conf, embedded_ceph.CLIENT))
    vms, addresses, seen = [], [], set()
    for _ in range(2):
        instance = compute.boot(compute.new_instance())
        console = compute.console(instance)
        console.wait_ready()
        compute.attach(instance, ci)
        vms.append([instance, console, probe.find_disk(console, volume_id)])
        # The client that appeared with this attach is this VM's QEMU.
        now = {w['address'] for w in status(str(nova_conf), spec)['watchers']}
        [new] = now - seen
        addresses.append(new)
        seen = now
    yield spec, volume_id, str(nova_conf), vms, addresses
    shutdown(compute, vms)


def cli(nova_conf, *args, check=True):
    proc = subprocess.run([SCRIPT, '--config-file', nova_conf] + list(args),
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def status(nova_conf, spec):
    return json.loads(cli(nova_conf, 'status', spec, '--json').stdout)


def domain_names(compute, vms):
    return sorted(compute.domain(instance).name for instance, _, _ in vms)


def test_status_lists_both_qemu_clients(pair, compute):
    spec, _, nova_conf, vms, addresses = pair
    result = status(nova_conf, spec)
    assert result['image'] == spec
    assert result['single_client_features'] == []
    assert sorted(w['address'] for w in result['watchers']) == sorted(
        addresses)
    names = domain_names(compute, vms)
    for watcher in result['watchers']:
        assert watcher['local'] is True
        assert watcher['local_domains'] == names
        assert watcher['domain'] is None    # two candidates: not guessed
        assert watcher['client'].startswith('client.')
    human = cli(nova_conf, 'status', spec).stdout
    assert 'clients:   2' in human


def test_fence_stops_one_vm_the_other_keeps_writing(pair, compute, stack):
    spec, volume_id, nova_conf, vms, addresses = pair
    (inst_a, con_a, dev_a), (_, con_b, dev_b) = vms
    client_a = addresses[0]

    refused = cli(nova_conf, 'fence', spec, '--client', client_a,
                  check=False)
    assert refused.returncode == 2
    assert '--force' in refused.stderr
    assert client_a not in {e['address'] for e in blocklist(stack)}

    result = json.loads(cli(nova_conf, 'fence', spec, '--client', client_a,
                            '--force', '--expire', '600', '--json').stdout)
    assert result['fenced'] is True
    assert result['entry']['address'] == client_a
    assert result['entry']['until']
    assert client_a in {e['address'] for e in blocklist(stack)}

    # VM A can no longer write the shared disk; VM B goes on.
    a_write = con_a.run('dd if=/dev/zero of=%s bs=4096 seek=900 count=1 '
                        'oflag=direct 2>&1; echo rc=$?' % dev_a,
                        check=False, timeout=120)
    assert 'rc=0' not in a_write, a_write
    probe.write_blocks(con_b, dev_b, [901], 'B-ALIVE')
    assert probe.read_blocks(con_b, dev_b, [901]) == {901: 'B-ALIVE-901'}

    # client.cinder ('profile rbd') may fence but not unfence.
    denied = cli(nova_conf, 'fence', spec, '--client', client_a, '--undo',
                 check=False)
    assert denied.returncode == 2
    assert 'access denied' in denied.stderr
    assert '--ceph-user admin' in denied.stderr
    stack.ceph.write_client_conf(users=(embedded_ceph.CLIENT, 'admin'))
    undone = json.loads(cli(nova_conf, 'fence', spec, '--client', client_a,
                            '--undo', '--ceph-user', 'admin',
                            '--json').stdout)
    assert undone['fenced'] is False
    assert client_a not in {e['address'] for e in blocklist(stack)}
    # A blocklisted librados client stays dead; the VM writes again once
    # its disk is opened anew (a hard reboot through Nova).
    compute.hard_reboot(inst_a)
    con_a.close()
    con_a = compute.console(inst_a)
    con_a.wait_ready()
    dev_a = probe.find_disk(con_a, volume_id)
    vms[0][1:] = [con_a, dev_a]
    probe.write_blocks(con_a, dev_a, [902], 'A-BACK')
    assert probe.read_blocks(con_b, dev_b, [902]) == {902: 'A-BACK-902'}


def blocklist(stack):
    out = stack.ceph.ceph('osd', 'blocklist', 'ls', '--format',
                          'json').stdout
    return [{'address': e['addr']} for e in cephops._json_arrays(out)]


def test_no_key_in_command_output(pair, stack):
    spec, _, nova_conf, _, _ = pair
    key = stack.ceph.client_key(embedded_ceph.CLIENT)
    for args in (('status', spec), ('status', spec, '--json'),
                 ('fence', spec, '--client', '10.9.9.9:0/1')):
        proc = cli(nova_conf, *args, check=False)
        assert key not in proc.stdout
        assert key not in proc.stderr


# -- bad input and a frozen monitor ------------------------------------------

#: Long enough that a command starting up never comes near it.
TIMEOUT = 8


@pytest.fixture(scope='module')
def frozen_mon_conf(stack, tmp_path_factory):
    """A nova.conf for the real cluster, with ceph_timeout = TIMEOUT."""
    nova_conf = tmp_path_factory.mktemp('etc-frozen') / 'nova.conf'
    nova_conf.write_text(
        '[shared_cache]\nceph_conf = %s\nceph_user = %s\nceph_timeout = %d\n'
        % (stack.ceph.client_conf, embedded_ceph.CLIENT, TIMEOUT))
    return str(nova_conf)


def _signal_mons(stack, sig):
    for name, pid in stack.ceph.daemons().items():
        if name.startswith('mon'):
            os.kill(pid, sig)


def test_bad_input_is_one_json_error_at_once_while_ceph_hangs(
        stack, frozen_mon_conf):
    bad = (('status', 'volumes', '--json'),
           ('fence', 'volumes/x', '--client', '10.0.0.7', '--undo',
            '--json'),
           ('fence', 'volumes/x', '--json'),
           ('status', 'volumes/x', '--ceph-user', 'client.admin', '--json'))
    runs = []
    _signal_mons(stack, signal.SIGSTOP)
    try:
        for args in bad + (('status', 'volumes/nonexistent', '--json'),):
            started = time.monotonic()
            proc = cli(frozen_mon_conf, *args, check=False)
            runs.append((args, proc, time.monotonic() - started))
    finally:
        _signal_mons(stack, signal.SIGCONT)
    for args, proc, elapsed in runs:
        assert proc.returncode == 2, (args, proc.stderr)
        doc = json.loads(proc.stdout)      # exactly one document
        assert (doc['exit_code'], doc['meaning']) == (2, 'error'), doc
        assert doc['error'] in proc.stderr
        if args in bad:
            # Checked before connecting: no wait for the frozen monitor.
            assert elapsed < TIMEOUT, (args, elapsed)
    # A well-formed spec reaches the frozen monitor: a bounded wait, and
    # still one JSON document.
    args, proc, elapsed = runs[-1]
    assert TIMEOUT <= elapsed < TIMEOUT + 10, elapsed
    assert 'no answer within %ds' % TIMEOUT in json.loads(
        proc.stdout)['error']
