"""The soak's plan and report (pure; run with the unit tests' venv:
``.tox/py3/bin/python -m pytest -q tests/soak/test_report.py``).
"""

import json
import random

import pytest

from tests.soak import faults
from tests.soak import report

VOLUME = '0b9f0c36-5b0e-4a3c-9d53-1f0e2a7c9e11'
GOOD = ('Attach of volume %s (image volumes/volume-%s) to instance x refused '
        'by nova-shared-cache: the Ceph-side check could not run: no answer '
        'within 3s. [shared_cache] rbd_feature_policy = enforce refuses new '
        'attachments it cannot check; fix the cause, or set it to warn to '
        'attach unchecked' % (VOLUME, VOLUME))


def judge(message=GOOD, policy='enforce', fault='mon_freeze', active=True,
          new=True):
    return report.judge_refusal(message, VOLUME, policy, fault, active, new,
                                faults.CEPH_FAULTS)


def test_refusal_acceptable_only_for_a_new_attachment_under_enforce():
    assert judge() is None
    assert judge(fault='osd_restart') is None
    assert 'reconnect' in judge(new=False)
    assert 'policy warn' in judge(policy='warn')


def test_refusal_needs_a_ceph_fault_in_effect():
    assert 'not faulted' in judge(fault='libvirtd_restart')
    assert 'not faulted' in judge(fault='none')
    assert 'not in effect' in judge(active=False)


def test_refusal_message_must_name_volume_and_remedy():
    assert 'does not name volume' in judge(message=GOOD.replace(VOLUME, 'v'))
    assert 'remedy' in judge(message=GOOD.replace('set it to warn', 'no'))


def test_fault_window():
    fault = faults.Fault(soak=None, rng=random.Random(1))
    assert not fault.active_between(0, 10)
    fault.started, fault.stopped = 5.0, 8.0
    assert fault.active_between(0, 5.5)
    assert fault.active_between(7, 9)
    assert not fault.active_between(8.5, 9)
    assert not fault.active_between(0, 4.9)


def test_plan_is_seeded_and_alternates_policy():
    def plans(seed):
        rng = random.Random(seed)
        return [report.plan_cycle(rng, n) for n in range(1, 41)]
    assert plans(7) == plans(7)
    assert plans(7) != plans(8)
    got = plans(7)
    assert [p['policy'] for p in got[:4]] == ['enforce', 'warn'] * 2
    assert {p['step'] for p in got} == set(report.STEPS)
    assert {p['fault'] for p in got} == set(report.FAULTS)
    assert set(report.FAULTS) == set(faults.KINDS)


def test_summary_counts_and_file(tmp_path):
    path = tmp_path / 'r.json'
    rep = report.Report(str(path), 1, 3, {})
    rep.add_cycle({'cycle': 1, 'step': 'hard_reboot', 'fault': 'none',
                   'policy': 'enforce', 'outcome': 'rebooted',
                   'failures': [], 'timings': {'step': 10.0}})
    rep.add_cycle({'cycle': 2, 'step': 'hard_reboot', 'fault': 'mon_freeze',
                   'policy': 'warn', 'outcome': None,
                   'failures': [{'check': 'running', 'message': 'm'}],
                   'timings': {'step': 20.0}})
    assert rep.summary_line() == '1 passed, 1 failed'
    rep.write()
    doc = json.loads(path.read_text())
    summary = doc['summary']
    assert summary['faults_injected'] == {'mon_freeze': 1, 'none': 1}
    assert summary['steps'] == {'hard_reboot': {'passed': 1, 'failed': 1}}
    assert summary['outcomes'] == {'error': 1, 'rebooted': 1}
    assert summary['timings_s']['step'] == {'n': 2, 'median': 15.0,
                                            'max': 20.0, 'total': 30.0}
    assert summary['failures'] == [{'check': 'running', 'message': 'm',
                                    'cycle': 2, 'step': 'hard_reboot',
                                    'fault': 'mon_freeze', 'policy': 'warn'}]


def test_abort_and_teardown_errors_count_as_failed(tmp_path):
    rep = report.Report(str(tmp_path / 'r.json'), 1, 3, {})
    assert rep.summary_line() == '0 passed, 0 failed'
    rep.doc['aborted'] = 'Abort: a VM could not be recovered'
    assert rep.summary_line() == '0 passed, 1 failed'
    rep.doc['teardown_errors'].append('stack down: boom')
    assert rep.summary_line() == '0 passed, 2 failed'


def test_plan_narrowed_to_given_steps_and_faults():
    rng = random.Random(3)
    got = [report.plan_cycle(rng, n, ['hard_reboot'],
                             ['mon_freeze', 'none']) for n in range(1, 30)]
    assert {p['step'] for p in got} == {'hard_reboot'}
    assert {p['fault'] for p in got} == {'mon_freeze', 'none'}
    with pytest.raises(ValueError):
        report.plan_cycle(rng, 1, ['reboot'])
