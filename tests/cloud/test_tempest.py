"""Tempest 47's volume-attach and multiattach tests against the real cloud.

With nova-compute on the extension and on stock Nova's driver, the same
selection (``tempestrun.SELECTION``: the whole ``test_attach_volume``
module and Cinder's multiattach retype) must pass, every skip must be one
the include list names with its reason, and the extension's run must have
gone through the extension: the nova-compute that served the whole run
loaded ``shared_cache.LibvirtSharedCacheDriver`` and said so.

Counts and durations per driver go to ``<cloud root>/tempest/results.json``.
The small tests at the end check the result bookkeeping on a subunit stream
made here, without the cloud.
"""

import datetime
import io
import json

import pytest

from nova_shared_cache_lab import cloud as cloud_mod
from nova_shared_cache_lab import tempestrun

DRIVER_CLASS = {'extension': 'shared_cache.LibvirtSharedCacheDriver',
                'stock': 'libvirt.LibvirtDriver'}
EXTENSION_STARTED = 'nova-shared-cache enabled: '


def _expected(kind):
    return [e.test for e in tempestrun.SELECTION if e.expect == kind]


@pytest.mark.parametrize('driver', ['extension', 'stock'])
def test_tempest_volume_attach(cloud, guest_image, volume_type, driver):
    cloud.configure(driver, {})
    lab = cloud_mod.Cloud()
    image, flavor, flavor_alt = tempestrun.find_resources(
        lab, volume_type=volume_type)
    assert image == guest_image
    workspace = tempestrun.Workspace(lab, driver)
    workspace.write(tempestrun.tempest_conf(
        lab, image, flavor, flavor_alt, volume_type, workspace=workspace))

    result = workspace.run()

    tempestrun.record(tempestrun.results_path(lab), result)
    print('\ntempest (%s): %s in %.0f s; nova-compute: %s' % (
        driver, json.dumps(result.counts), result.duration,
        json.dumps({k: v for k, v in result.compute.items()
                    if k != 'extension_lines'})))
    for line in result.compute['extension_lines']:
        print('  nova-compute: %s' % line[:300])
    assert result.problems() == [], '\n'.join(
        result.problems() + ['see %s and %s' % (workspace.log_path,
                                                workspace.root)])
    assert result.counts == {'passed': len(_expected(tempestrun.RUN)),
                             'skipped': len(_expected(tempestrun.SKIP)),
                             'failed': 0, 'not_run': 0}
    for test in _expected(tempestrun.SKIP):
        assert 'hw_scsi_model' in result.tests[test].reason, result.tests[test]

    # One nova-compute, on the driver asked for, served the whole run.
    compute = result.compute
    assert not compute['restarted'], compute
    assert compute['pid_after'], compute
    assert compute['driver'] == DRIVER_CLASS[driver], compute
    started = tempestrun.ComputeLog(lab).current_section()
    if driver == 'extension':
        assert EXTENSION_STARTED in started
        assert not [line for line in compute['first_errors']
                    if 'nova_shared_cache' in line], compute['first_errors']
    else:
        assert EXTENSION_STARTED not in started


# -- the bookkeeping, on a stream made here --------------------------------

def _stream(outcomes):
    """A subunit v2 stream: ``{test id: (status, reason)}``."""
    import subunit
    buf = io.BytesIO()
    out = subunit.StreamResultToBytes(buf)
    t0 = datetime.datetime(2026, 7, 1, tzinfo=datetime.timezone.utc)
    for test_id, (status, reason) in outcomes.items():
        out.status(test_id=test_id, test_status='inprogress', timestamp=t0)
        if reason:
            out.status(test_id=test_id, file_name='reason',
                       file_bytes=reason.encode(), mime_type='text/plain',
                       eof=True)
        out.status(test_id=test_id, test_status=status,
                   timestamp=t0 + datetime.timedelta(seconds=3))
    return buf.getvalue()


def _all_as_expected():
    outcomes = {}
    for entry in tempestrun.SELECTION:
        test_id = entry.test + '[id-0000,slow]'
        if entry.expect == tempestrun.RUN:
            outcomes[test_id] = ('success', '')
        elif entry.expect == tempestrun.SKIP:
            outcomes[test_id] = ('skip', 'hw_scsi_model=virtio-scsi not set')
    return outcomes


def _result(outcomes, rc=0):
    return tempestrun.Result('t', tempestrun.parse_subunit(_stream(outcomes)),
                             1.0, rc, {})


def test_result_all_as_expected():
    result = _result(_all_as_expected())
    assert result.problems() == []
    assert result.counts == {'passed': 9, 'skipped': 2, 'failed': 0,
                             'not_run': 0}
    some = tempestrun.SELECTION[0].test
    assert result.tests[some] == tempestrun.Outcome('success', '', 3.0)


def test_result_failure_skip_and_missing_are_problems():
    outcomes = _all_as_expected()
    ids = list(outcomes)
    outcomes[ids[0]] = ('fail', '')
    outcomes[ids[1]] = ('skip', 'Volume multi-attach is not available.')
    del outcomes[ids[2]]
    outcomes['setUpClass (tempest.api.x.Y)'] = ('fail', '')
    result = _result(outcomes, rc=1)
    problems = result.problems()
    assert len(problems) == 4, problems
    assert any('skipped unexpectedly: Volume multi-attach' in p
               for p in problems)
    assert any(p.endswith('did not run') for p in problems)
    assert result.counts == {'passed': 6, 'skipped': 3, 'failed': 2,
                             'not_run': 1}


def test_include_list_selects_exactly_each_test():
    import re
    lines = [line.split('#')[0].strip()
             for line in tempestrun.include_list().splitlines()]
    regexes = [re.compile(line) for line in lines if line]
    wanted = [e.test for e in tempestrun.SELECTION
              if e.expect != tempestrun.EXCLUDED]
    assert len(regexes) == len(wanted)
    for test in wanted:
        hits = [r for r in regexes if r.search(test + '[id-1]')]
        assert len(hits) == 1, test
    # A longer name that starts with a selected one is not selected.
    prefix = (tempestrun._ATTACH + 'AttachVolumeMultiAttachTest.'
              'test_boot_from_multiattach_volume')
    assert [r for r in regexes if r.search(prefix + '_direct_lun[id-1]')] \
        != [r for r in regexes if r.search(prefix + '[id-1]')]
    for entry in tempestrun.SELECTION:
        if entry.expect != tempestrun.RUN:
            assert entry.reason and entry.reason in tempestrun.include_list()
