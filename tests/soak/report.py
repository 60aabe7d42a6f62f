"""The soak's plan (seeded) and its report (pure: no system access)."""

import collections
import json
import os
import statistics
import tempfile

#: What a cycle does, and how often.
STEPS = {'attach_detach': 35, 'hard_reboot': 30, 'live_switch': 35}
#: Which fault it gets, and how often ('none' is the control).
FAULTS = {'none': 12, 'mon_freeze': 24, 'osd_restart': 22,
          'libvirtd_restart': 21, 'hook_pkg_removed': 21}


def weighted(rng, table):
    names = sorted(table)
    return rng.choices(names, weights=[table[n] for n in names])[0]


def plan_cycle(rng, number, steps=None, faults=None):
    """Step, fault and guard policy of cycle ``number`` (1-based).

    Odd cycles run the guard strict (rbd_feature_policy = enforce,
    sharing_guard = refuse), even ones lenient (warn/warn). ``steps`` and
    ``faults`` narrow the tables (to reproduce a failure).
    """
    return {'step': weighted(rng, _only(STEPS, steps)),
            'fault': weighted(rng, _only(FAULTS, faults)),
            'policy': 'enforce' if number % 2 else 'warn'}


def _only(table, names):
    if not names:
        return table
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError('unknown: %s (choose from %s)' % (
            ', '.join(sorted(unknown)), ', '.join(sorted(table))))
    return {name: table[name] for name in names}


def judge_refusal(message, volume_id, policy, fault_kind, fault_active,
                  new_attachment, ceph_faults):
    """None if this refusal is acceptable, else why it is not.

    Acceptable only for a new attachment under enforce/refuse while a Ceph
    fault was in effect, with a message naming the volume and the remedy.
    """
    problems = []
    if not new_attachment:
        problems.append('a reconnect was refused')
    if policy != 'enforce':
        problems.append('refused under policy %s' % policy)
    if fault_kind not in ceph_faults or not fault_active:
        problems.append('refused while Ceph was not faulted (fault %s%s)' % (
            fault_kind, '' if fault_kind not in ceph_faults else
            ', not in effect during the attach'))
    if volume_id not in message:
        problems.append('the message does not name volume %s' % volume_id)
    if 'set it to warn' not in message:
        problems.append('the message does not give the remedy '
                        '("set it to warn")')
    return '; '.join(problems) or None


def _stats(values):
    if not values:
        return None
    return {'n': len(values), 'median': round(statistics.median(values), 2),
            'max': round(max(values), 2), 'total': round(sum(values), 1)}


class Report:

    def __init__(self, path, seed, minutes, settings):
        self.path = path
        self.doc = {'seed': seed, 'minutes': minutes, 'settings': settings,
                    'started': None, 'finished': None, 'interrupted': None,
                    'aborted': None, 'setup_s': None, 'teardown_s': None,
                    'teardown_errors': [], 'cycles': []}

    def add_cycle(self, record):
        self.doc['cycles'].append(record)

    def summary(self):
        cycles = self.doc['cycles']
        passed = sum(1 for c in cycles if not c['failures'])
        # A run that could not go on, or a teardown that left something
        # behind, counts as one failed step more.
        failed = len(cycles) - passed + bool(self.doc['aborted']) + bool(
            self.doc['teardown_errors'])
        faults = collections.Counter(c['fault'] for c in cycles)
        steps = collections.defaultdict(lambda: {'passed': 0, 'failed': 0})
        outcomes = collections.Counter()
        by_step_fault = collections.defaultdict(collections.Counter)
        timings = collections.defaultdict(list)
        failures = []
        for c in cycles:
            ok = not c['failures']
            steps[c['step']]['passed' if ok else 'failed'] += 1
            outcomes[c.get('outcome') or 'error'] += 1
            by_step_fault['%s+%s' % (c['step'], c['fault'])][
                'passed' if ok else 'failed'] += 1
            for name, value in (c.get('timings') or {}).items():
                timings[name].append(value)
            for f in c['failures']:
                failures.append(dict(
                    f, cycle=c['cycle'], step=c['step'], fault=c['fault'],
                    policy=c['policy']))
        return {
            'cycles': len(cycles), 'passed': passed, 'failed': failed,
            'faults_injected': dict(sorted(faults.items())),
            'steps': {k: dict(v) for k, v in sorted(steps.items())},
            'outcomes': dict(sorted(outcomes.items())),
            'step_fault': {k: dict(v)
                           for k, v in sorted(by_step_fault.items())},
            'timings_s': {k: _stats(v) for k, v in sorted(timings.items())},
            'failures': failures,
        }

    def summary_line(self):
        s = self.summary()
        return '%d passed, %d failed' % (s['passed'], s['failed'])

    def write(self):
        doc = dict(self.doc, summary=self.summary())
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.soak-report.', dir=directory)
        with os.fdopen(fd, 'w') as f:
            json.dump(doc, f, indent=2, sort_keys=True, default=str)
            f.write('\n')
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)
        return doc
