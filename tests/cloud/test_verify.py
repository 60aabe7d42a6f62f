"""``nova-shared-cache verify`` against the real cloud, as an operator runs it.

The probe image comes from ``nova-shared-cache build-probe-image --upload``
(Debian's packages, built here). ``verify`` then runs as the cloud's demo
member, with only clouds.yaml: no host access, no network on the servers.

- With the extension, and with stock Nova's driver (which forces
  ``cache='none'`` on multiattach disks itself), it reports coherent, exit 0.
- The control makes the hazard on purpose, by a host-side step: nova-compute
  runs the lab's test-only driver that drops Nova's shareable rule
  (``tools/cloud up --hazard``) under ``disk_cachemodes =
  network=writeback``, and the client ceph.conf asks librbd to cache
  (``clientconf.WRITEBACK``). ``verify`` must then see stale reads and exit 1.
- An interrupt in the middle (SIGINT once the servers exist) still deletes
  everything the run made.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nova_shared_cache.verify import guest
from nova_shared_cache.verify import runner
from nova_shared_cache_lab import clientconf
from nova_shared_cache_lab import cloud as cloud_mod

from tests.cloud import conftest

#: A caching default for network disks, as in test_shared_volume (whose
#: last case leaves the cloud on stock Nova with these options: the order
#: below restarts nova-compute twice, not five times).
CACHING = conftest.CACHING
PROBES = 10
COMMAND = [sys.executable, '-m', 'nova_shared_cache.cmd.manage']


def probe_image_path():
    return os.path.join(os.environ.get('NSC_GUEST_CACHE', os.path.expanduser(
        '~/.cache/nova-shared-cache/guest')), 'probe', 'probe.raw')


def run_command(cloud, *args, timeout=1500):
    proc = subprocess.run(COMMAND + list(args), capture_output=True,
                          text=True, env=cloud.env, timeout=timeout)
    doc = json.loads(proc.stdout) if '--json' in args else None
    return proc, doc


@pytest.fixture(scope='module')
def probe_image(cloud):
    path = probe_image_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    proc, doc = run_command(
        cloud, 'build-probe-image', '--output', path, '--upload', '--public',
        '--os-cloud', cloud_mod.ADMIN_CLOUD, '--json', timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert doc['image']['name'] == runner.DEFAULT_IMAGE
    shown = cloud.openstack('image', 'show', doc['image']['id'])
    assert shown['properties'][runner.IMAGE_PROPERTY] == str(guest.PROTOCOL)
    return doc['image']['id']


def verify(cloud, volume_type, *extra):
    return run_command(cloud, 'verify', '--os-cloud', cloud_mod.CLOUD_NAME,
                       '--volume-type', volume_type, '--probes', str(PROBES),
                       '--json', *extra)


def assert_nothing_left(cloud, doc):
    assert doc['cleanup']['left'] == []
    name = doc['name']
    assert not [s for s in cloud.openstack('server', 'list', '--name', name)]
    assert not [v for v in cloud.openstack('volume', 'list', '--name', name)]
    assert not [g for g in cloud.openstack('server', 'group', 'list')
                if g['Name'] == name]


def assert_schema(doc):
    for key in ('schema', 'result', 'exit_code', 'meaning', 'nonce', 'name',
                'probes', 'directions', 'servers', 'same_host', 'volume',
                'timings_s', 'cleanup', 'problems', 'error'):
        assert key in doc, key
    assert doc['schema'] == runner.SCHEMA
    assert sorted(doc['directions']) == ['A->B', 'B->A']
    for row in doc['directions'].values():
        assert row['probes'] == PROBES // 2
    assert [s['role'] for s in doc['servers']] == ['A', 'B']


@pytest.mark.parametrize('driver', ['stock', 'extension'])
def test_verify_is_coherent(cloud, volume_type, probe_image, driver):
    cloud.configure(driver, CACHING)
    proc, doc = verify(cloud, volume_type)
    assert proc.returncode == 0, (doc, proc.stderr[-3000:])
    assert_schema(doc)
    assert doc['result'] == 'coherent' and doc['error'] is None
    assert doc['probes']['fresh'] == PROBES
    assert doc['probes']['stale'] == doc['probes']['other'] == 0
    for row in doc['directions'].values():
        assert row['fresh'] == PROBES // 2 and row['median_ms'] is not None
    assert_nothing_left(cloud, doc)


def test_interrupted_verify_leaves_nothing(cloud, volume_type, probe_image):
    """SIGINT once both servers exist: everything is still deleted."""
    cloud.configure('extension', CACHING)
    proc = subprocess.Popen(
        COMMAND + ['verify', '--os-cloud', cloud_mod.CLOUD_NAME,
                   '--volume-type', volume_type, '--probes', str(PROBES),
                   '--json'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=cloud.env)
    seen = []
    deadline = time.monotonic() + 600
    try:
        for line in proc.stderr:
            seen.append(line)
            if 'attaching' in line:
                break
            assert time.monotonic() < deadline, ''.join(seen)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, ''.join(seen) + err
    doc = json.loads(out)
    assert doc['result'] == 'error'
    assert 'interrupted' in doc['error']
    # Both servers and the volume were made, and all of them are gone.
    assert {r['type'] for r in doc['cleanup']['deleted']} >= {
        'server', 'volume'}
    assert len([r for r in doc['cleanup']['deleted']
                if r['type'] == 'server']) == 2
    assert_nothing_left(cloud, doc)


def test_verify_sees_the_hazard(cloud, volume_type, probe_image):
    """The control: the probe can fail, and then it says stale, exit 1."""
    # The next test that needs another driver configures it; a cloud kept
    # after the session goes back to the extension (conftest).
    cloud.configure('hazard', CACHING)
    with clientconf.client_options(clientconf.WRITEBACK):
        proc, doc = verify(cloud, volume_type)
    assert proc.returncode == 1, (doc, proc.stderr[-3000:])
    assert_schema(doc)
    assert doc['result'] == doc['meaning'] == 'stale'
    # Every probe completed: a caching reader shows up as stale reads,
    # not as a protocol that stalls.
    for row in doc['directions'].values():
        assert row['stale'] == PROBES // 2, row
        assert row['timeout'] == row['missing'] == 0, row
    assert_nothing_left(cloud, doc)
