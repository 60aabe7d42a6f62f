"""The real devstack job's summary page, from a recorded run's phases."""

import json
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import realjob  # noqa: E402
import report  # noqa: E402

PHASES = {
    'job': {'commit': 'abc123', 'started': 1_800_000_000.0,
            'ended': 1_800_003_600.0, 'ok': True},
    'prepare': {'ok': True, 'seconds': 61, 'constraint_bumps': [
        'keystoneauth1 5.15.0 -> 5.18.1 (nova==34.0.0 needs >=5.16.0)']},
    'stack': {'ok': True, 'seconds': 1500},
    'check': {'ok': True, 'seconds': 240, 'result': {
        'compute_driver_loaded': 'shared_cache.LibvirtSharedCacheDriver',
        'domains': {'instance-00000001': [
            {'name': 'volumes/volume-1', 'shareable': True, 'cache': 'none',
             'target': 'vdb'}]},
        'audit': {'exit': 0, 'domains': 2, 'shared_rows': 2, 'findings': 0,
                  'errors': [], 'warnings': []},
        'directsync': {'domains': {'instance-00000003': [
            {'name': 'volumes/volume-2', 'shareable': True,
             'cache': 'directsync', 'target': 'vdb'}]}}}},
    'tempest': {'ok': True, 'seconds': 1800, 'result': {
        'passed': 9, 'skipped': 2, 'failed': 0, 'not_run': 0,
        'duration_s': 1700.0}},
    'unstack': {'ok': True, 'seconds': 90, 'left_by_devstack': ['apache2']},
}


def test_summary_names_every_figure(tmp_path):
    logs = tmp_path / 'logs'
    logs.mkdir()
    (logs / 'stack.sh.log').write_text(
        '=========================\nDevStack Component Timing\n'
        ' (times are in seconds)  \n=========================\n'
        'wait_for_service      12\npip_install          400\n'
        '-------------------------\nUnaccounted time     300\n'
        '=========================\nTotal runtime        712\n')
    job = types.SimpleNamespace(logs=str(logs), phases=lambda: PHASES)
    path = tmp_path / 'devstack-run.md'
    report.write_summary(job, str(path))
    text = path.read_text()
    assert '| commit | `abc123` |' in text
    assert '| whole job | 60 min |' in text
    for phase in realjob.PHASES:
        assert '| %s | %s |' % (phase, PHASES[phase]['seconds']) in text
    assert '| pip_install | 400 |' in text
    assert '| Total runtime | 712 |' in text
    assert ('| none | instance-00000001 | `volumes/volume-1` (vdb) | yes | '
            'none |') in text
    assert ('| directsync | instance-00000003 | `volumes/volume-2` (vdb) | '
            'yes | directsync |') in text
    assert '9 passed, 2 skipped (expected), 0 failed, 0 not run' in text
    assert 'exit 0, 2 domains, 2 shared disks of the volume, 0 findings' \
        in text
    assert 'keystoneauth1 5.15.0 -> 5.18.1' in text
    assert 'apache2' in text
    assert json.dumps(PHASES)  # the record is plain JSON
