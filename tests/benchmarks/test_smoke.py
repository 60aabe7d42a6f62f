"""Every benchmark once, with tiny parameters, on the real stack.

Not a measurement: the figures of a smoke run mean nothing. These tests
keep the benchmark scripts working (``benchmarks/run.py --smoke``) and check
that each one measured what it says it measures.
"""

import json
import os
import subprocess
import sys

import pytest

from nova_shared_cache_lab import stack as embedded_stack

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RUN = os.path.join(TOP, 'benchmarks', 'run.py')


@pytest.fixture(scope='module')
def stack():
    s = embedded_stack.Stack().up()
    yield s
    s.down()


def smoke(name, tmp_path):
    plots = tmp_path / 'plots'
    proc = subprocess.run(
        [sys.executable, RUN, '--smoke', '--only', name, '--out',
         str(tmp_path), '--plots', str(plots)],
        capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / ('%s.json' % name)) as f:
        data = json.load(f)
    png = plots / ('%s.png' % name)
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert data['machine']['cores'] == os.cpu_count()
    # The table is printed: its header and at least one row.
    assert '| --- |' in proc.stdout
    return data['results']


def test_xml_path(tmp_path):
    r = smoke('xml_path', tmp_path)
    none = r['shared, cache_mode none']
    directsync = r['shared, cache_mode directsync']
    plain = r['not multiattach']
    # With cache_mode none the policy changes nothing: same XML as stock;
    # a volume that is not multiattach is never touched.
    assert none['stock_xml'] == none['extension_xml']
    assert 'cache="none"' in none['stock_xml']
    assert plain['stock_xml'] == plain['extension_xml']
    assert '<shareable/>' not in plain['stock_xml']
    assert 'cache="directsync"' in directsync['extension_xml']
    assert 'cache="directsync"' not in directsync['stock_xml']
    for case, target in ((none, 1.05), (directsync, None), (plain, 1.01)):
        assert case['ratio']['n'] == 2
        assert case['ratio']['low'] <= case['ratio']['median']
        assert case['ratio']['median'] <= case['ratio']['high']
        assert case['ratio'].get('target') == target
        assert case['stock_us']['median'] > 0
        assert case['extension_us']['median'] > 0
    assert none['ratio']['verdict'] in ('met', 'missed', 'cannot tell')
    # One INFO line per disk the policy changed (directsync only).
    assert r['log_lines'] > 0


def test_guard_latency(stack, tmp_path):
    r = smoke('guard_latency', tmp_path)
    for name in ('stock', 'multiattach', 'not multiattach', 'cold'):
        assert r[name]['median'] > 0, name
    # Opening the image costs more than not looking at all, and a new
    # Ceph connection more than a cached one.
    assert r['multiattach']['added_ms'] > 0
    for name in ('multiattach', 'not multiattach'):
        added = r[name]['added']
        assert added['low'] <= added['median'] <= added['high']
        assert added['target'] == 5.0
        assert added['verdict'] in ('met', 'missed', 'cannot tell')
    assert r['cold']['median'] > r['multiattach']['median']


def test_fio_datapath(stack, tmp_path):
    r = smoke('fio_datapath', tmp_path)
    seen = {(c['rw'], c['layout'], c['mode']) for c in r['configurations']}
    assert len(seen) == 10
    for c in r['configurations']:
        assert c['iops']['median'] > 0, c
        assert c['errors'] == 0, c
        # Sharing one image is judged against two separate images.
        judged = (c['layout'], c['mode']) == ('shared', 'none')
        assert ('verdict' in c['vs_separate']) == judged, c
    assert 'exclusive-lock' in r['features']['locked']
    assert 'exclusive-lock' not in r['features']['shared']
    assert 'exclusive-lock' not in r['features']['separate']


def test_live_switch(stack, tmp_path):
    r = smoke('live_switch', tmp_path)
    # One switch of each of the two guests.
    assert r['pause_ms']['n'] == 2
    assert r['pause_ms']['verdict'] in ('met', 'missed', 'cannot tell')
    assert 0 < r['pause_ms']['median'] <= r['switch_ms']['median']
    assert r['domains'] >= 2


def test_audit_scaling(tmp_path):
    r = smoke('audit_scaling', tmp_path)
    # Pairs 1, 3, 5... cache without <shareable/>: each of their disks
    # has three findings (definition and live XML cache, not shareable).
    assert r['sizes']['10']['disks'] == 20
    assert r['sizes']['10']['findings'] == 4 * 3
    assert r['sizes']['100']['findings'] == 50 * 3
    assert r['scan_fit']['slope_s'] > 0


def test_audit_running(stack, tmp_path):
    r = smoke('audit_running', tmp_path)
    assert r['workers'] == [1, 8]
    for size in (2, 6):
        s = r['sizes'][str(size)]
        # Every domain was running and asked: QEMU answered QMP and Ceph
        # the image status for every disk, pairs share an image.
        assert s['domains'] == s['running'] == s['disks'] == size
        assert s['qmp_answered'] == s['ceph_answered'] == size
        assert s['images'] == size // 2
        assert s['errors'] == 0
        for workers in ('1', '8'):
            assert s['by_workers'][workers]['wall_s']['n'] == 2
            assert s['by_workers'][workers]['scan_s']['median'] > 0
    # Pairs 0, 2... cache without <shareable/>: three findings per disk.
    assert r['sizes']['2']['findings'] == 2 * 3
    assert r['sizes']['6']['findings'] == 4 * 3
    for workers in ('1', '8'):
        line = r['fits'][workers]['wall']
        assert line['at'] == 1000
        assert line['low_s'] <= line['value_s'] <= line['high_s']
        assert line['verdict'] in ('met', 'missed', 'cannot tell')


def test_memory(stack, tmp_path):
    r = smoke('memory', tmp_path)
    assert r['stock']['peak']['median'] > 50
    assert r['extension']['peak']['median'] > 50
    # The Ceph bindings and the guard's connection are not free.
    assert r['added_mib']['attached'] > 0
    added = r['added_ci']['attached']
    assert added['low'] <= added['median'] <= added['high']
