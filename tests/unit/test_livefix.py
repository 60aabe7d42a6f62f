"""The live cache switch's sequence and every way out of it, on a fake QEMU.

The fake keeps QEMU's block graph (which node each format node sits on)
and the VM's run state, so the tests can assert what QEMU would be left
with; the real sequence, a real signal and a real hang are exercised in
tests/integration/test_repair.py and test_livefix_faults.py.
"""

import copy
import json
import os
import signal
import subprocess
import threading
import time
import types
import unittest
from unittest import mock

from nova_shared_cache import audit
from nova_shared_cache.cmd import fix as fix_cmd
from nova_shared_cache import exception
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import livefix
from nova_shared_cache.libvirt import qmp

DISK_XML = """<domain><devices>
<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='writeback' discard='unmap'/>
  <auth username='cinder'><secret type='ceph' uuid='u'/></auth>
  <source protocol='rbd' name='volumes/volume-1' index='2'>
    <host name='127.0.0.1' port='3300'/>
  </source>
  <target dev='vdb' bus='virtio'/>
</disk></devices></domain>"""

RUNNING, PAUSED = 1, 3
OLD, TEMP = 'libvirt-2-storage', 'nsc-2-storage'


def node(name, drv, direct=False):
    return {'node-name': name, 'drv': drv, 'ro': False,
            'detect_zeroes': 'off',
            'cache': {'direct': direct, 'writeback': True,
                      'no-flush': False}}


class FakeCall:
    """What a timed-out qmp.Monitor call leaves: maybe answered later."""

    def __init__(self, reply=None):
        self.reply = reply

    @property
    def done(self):
        return self.reply is not None

    def wait(self, timeout):
        return self.done

    def result(self):
        return json.dumps(self.reply)


class FakeQemu:
    """Just enough QMP and libvirt domain for the switch.

    Like libvirt, it runs one job at a time (``lock``): a resume waits for
    a suspend still under way.
    """

    def __init__(self, state=RUNNING):
        self.nodes = {'libvirt-2-format': node('libvirt-2-format', 'raw'),
                      OLD: node(OLD, 'rbd')}
        self.child = {'libvirt-2-format': OLD}
        self.secrets = {'libvirt-2-storage-auth-secret0'}
        self.jobs = []
        self.libvirt_job = None         # (type, operation) of jobInfo
        self.run_state = state
        self.calls = []
        self.fail = {}          # (command, n-th call) or command -> reason
        self.timeout = {}       # same keys -> 'before' | 'after' | 'late'
        self.busy = {}          # command -> how many times not sent
        self.before = {}        # same keys -> callable run first
        self.resume_failures = 0
        self.suspend_seconds = 0
        self.counts = {}
        self.lock = threading.Lock()

    # -- QMP -------------------------------------------------------------
    name = 'instance-1'

    def __call__(self, command, **args):
        self.counts[command] = self.counts.get(command, 0) + 1
        keys = (command, (command, self.counts[command]))
        self.calls.append((command, args, self.run_state))
        for key in keys:
            if key in self.before:
                self.before[key]()
        if self.busy.get(command):
            # qmp.Monitor found the process's commands at their limit.
            self.busy[command] -= 1
            raise qmp.QmpBusy(self.name, command, 1, 0.5)
        for key in keys:
            if key in self.fail:
                raise qmp.QmpError(self.name, command, self.fail[key])
            if key in self.timeout:
                how = self.timeout[key]
                reply = None
                if how != 'before':
                    result = self._run(command, args)
                    if how == 'late':
                        reply = {'return': result or {}}
                raise qmp.QmpTimeout(self.name, command, 0.5,
                                     FakeCall(reply))
        return self._run(command, args)

    def _run(self, command, args):
        with self.lock:
            return getattr(self, command.replace('-', '_'))(**args)

    def query_named_block_nodes(self, flat):
        return copy.deepcopy(list(self.nodes.values()))

    def qom_list(self, path):
        return [{'name': n} for n in self.secrets]

    def query_block(self):
        return [{'device': '', 'qdev': '/machine/peripheral/x',
                 'inserted': {'node-name': 'libvirt-2-format'}}]

    def query_block_jobs(self):
        return self.jobs

    def blockdev_add(self, **options):
        name = options['node-name']
        if name in self.nodes:
            raise qmp.QmpError(self.name, 'blockdev-add',
                               "Duplicate nodes with node-name='%s'" % name)
        assert options['key-secret'] in self.secrets
        self.nodes[name] = node(name, 'rbd',
                                direct=options['cache']['direct'])

    def blockdev_reopen(self, options):
        (opts,) = options
        assert opts['file'] in self.nodes, opts['file']
        self.child[opts['node-name']] = opts['file']
        self.nodes[opts['node-name']]['cache']['direct'] = \
            opts['cache']['direct']

    def blockdev_del(self, **args):
        name = args['node-name']
        if name not in self.nodes:
            raise qmp.QmpError(self.name, 'blockdev-del',
                               "Failed to find node with node-name='%s'"
                               % name)
        if name in self.child.values():
            raise qmp.QmpError(self.name, 'blockdev-del',
                               'Block device %s is in use' % name)
        del self.nodes[name]

    def block_nodes(self):
        nodes = self('query-named-block-nodes', flat=True)
        return {n['node-name']: n for n in nodes}

    def devices(self):
        return self('query-block')

    def block_jobs(self):
        return self('query-block-jobs')

    def objects(self):
        return {o['name'] for o in self('qom-list', path='/objects')}

    # -- libvirt domain ----------------------------------------------------
    def state(self):
        return [self.run_state, 0]

    def jobInfo(self):
        job = self.libvirt_job
        return [job[0] if job else 0] + [0] * 11

    def jobStats(self):
        job = self.libvirt_job
        return {'type': job[0], 'operation': job[1]} if job else {'type': 0}

    def suspend(self):
        with self.lock:
            self.calls.append(('suspend', {}, self.run_state))
            for key in ('suspend', ('suspend', 1)):
                if key in self.before:
                    self.before[key]()
            time.sleep(self.suspend_seconds)
            self.run_state = PAUSED

    def resume(self):
        with self.lock:
            self.calls.append(('resume', {}, self.run_state))
            if self.resume_failures:
                self.resume_failures -= 1
                raise RuntimeError('cannot resume')
            self.run_state = RUNNING

    # -- what the tests look at -------------------------------------------
    def storage_of_disk(self):
        return self.child['libvirt-2-format']

    def commands(self):
        return [c if c != 'blockdev-del' else 'del ' + a['node-name']
                for c, a, _ in self.calls
                if not c.startswith('query') and c != 'qom-list']


def self_signal(name):
    return lambda: os.kill(os.getpid(), getattr(signal, name))


class SwitchTest(unittest.TestCase):

    def setUp(self):
        self.disk = domxml.rbd_disks(domxml.parse(DISK_XML))[0]
        self.qemu = FakeQemu()

    def switch(self, **kwargs):
        ticks = iter(range(1000))
        kwargs.setdefault('qmp_timeout', 2.0)
        kwargs.setdefault('resume_deadline', 2.0)
        kwargs.setdefault('close_deadline', 0.2)
        return livefix.Switch(self.qemu, self.disk, monitor=self.qemu,
                              clock=lambda: next(ticks) / 100.0,
                              **kwargs).run()

    def assert_clean_switch(self, result, state='switched'):
        self.assertEqual(state, result.state, result)
        self.assertTrue(result.ok, result)
        self.assertEqual(OLD, self.qemu.storage_of_disk())
        self.assertEqual({'libvirt-2-format', OLD}, set(self.qemu.nodes))
        self.assertTrue(self.qemu.nodes[OLD]['cache']['direct'])
        self.assertEqual(RUNNING, self.qemu.run_state)

    def assert_unchanged(self):
        self.assertEqual(OLD, self.qemu.storage_of_disk())
        self.assertEqual({'libvirt-2-format', OLD}, set(self.qemu.nodes))
        self.assertFalse(self.qemu.nodes[OLD]['cache']['direct'])
        self.assertEqual(RUNNING, self.qemu.run_state)

    # -- the sequence --------------------------------------------------------

    def test_sequence_keeps_libvirt_node_names(self):
        result = self.switch()
        self.assert_clean_switch(result)
        self.assertEqual(
            ['blockdev-add', 'suspend', 'blockdev-reopen', 'resume',
             'del ' + OLD, 'blockdev-add', 'blockdev-reopen', 'del ' + TEMP],
            self.qemu.commands())
        # Only the reopen runs paused; the caching node (a synchronous
        # rbd_close) is deleted after the resume.
        paused = [c for c, _, state in self.qemu.calls if state == PAUSED]
        self.assertEqual(['blockdev-reopen', 'resume'], paused)
        self.assertGreater(result.pause_ms, 0)
        self.assertEqual({'direct': False, 'writeback': True,
                          'no_flush': False}, result.before)
        self.assertTrue(result.after['direct'])
        self.assertEqual('running', result.vm)
        self.assertIsNone(result.interrupted)
        self.assertEqual([], result.leftover)

    def test_stage_two_waits_for_the_old_node_to_be_gone(self):
        # The old node's deletion does not answer in time, then does: the
        # node under libvirt's name is added only after that answer.
        self.qemu.timeout[('blockdev-del', 1)] = 'late'
        result = self.switch()
        self.assert_clean_switch(result)
        self.assertIn('blockdev-del of %s answered late' % OLD,
                      ' '.join(result.notes))

    def test_old_node_never_closes_no_stage_two(self):
        self.qemu.timeout[('blockdev-del', 1)] = 'before'
        result = self.switch()
        self.assertEqual('partial', result.state)
        self.assertEqual(1, self.qemu.counts['blockdev-add'])
        self.assertEqual(TEMP, self.qemu.storage_of_disk())
        self.assertEqual(RUNNING, self.qemu.run_state)
        left = ' '.join(result.leftover)
        self.assertIn('node %s is perhaps still open: an extra librbd '
                      'client with its cache on of image volumes/volume-1'
                      % OLD, left)
        self.assertIn('runs uncached on node %s' % TEMP, left)
        self.assertIn('fix --live --domain instance-1 again',
                      result.remedy)
        self.assertIn('virsh qemu-monitor-command instance-1 \'{"arguments"'
                      ': {"node-name": "%s"}, "execute": "blockdev-del"}\''
                      % OLD, result.remedy)

    def test_new_node_options(self):
        self.switch()
        add = [a for c, a, _ in self.qemu.calls if c == 'blockdev-add'][0]
        self.assertEqual({
            'driver': 'rbd', 'node-name': TEMP,
            'pool': 'volumes', 'image': 'volume-1',
            'server': [{'host': '127.0.0.1', 'port': '3300'}],
            'user': 'cinder', 'auth-client-required': ['cephx', 'none'],
            'key-secret': 'libvirt-2-storage-auth-secret0',
            'auto-read-only': True, 'read-only': False, 'discard': 'unmap',
            'cache': {'direct': True, 'no-flush': False}}, add)

    # -- failures --------------------------------------------------------

    def test_new_node_cannot_open_changes_nothing(self):
        self.qemu.fail['blockdev-add'] = "error opening image"
        result = self.switch()
        self.assertEqual('not-switched', result.state)
        self.assertIn('error opening image', result.error)
        self.assertEqual(['blockdev-add'], self.qemu.commands())
        self.assert_unchanged()

    def test_reopen_fails_rolls_back_and_resumes(self):
        self.qemu.fail['blockdev-reopen'] = 'reopen refused'
        result = self.switch()
        self.assertEqual('rolled-back', result.state)
        self.assertIn('rolled back, the disk is unchanged', result.error)
        self.assertIn('reopen refused', result.error)
        self.assertEqual([], result.leftover)
        self.assertEqual(['blockdev-add', 'suspend', 'blockdev-reopen',
                          'resume', 'del ' + TEMP], self.qemu.commands())
        self.assert_unchanged()
        self.assertEqual('running', result.vm)

    def test_partial_rollback_is_reported_and_cleaned_by_a_second_run(self):
        self.qemu.fail['blockdev-reopen'] = 'reopen refused'
        self.qemu.fail[('blockdev-del', 1)] = 'node is busy'
        result = self.switch()
        self.assertEqual('partial', result.state)
        self.assertNotIn('rolled back', result.error)
        self.assertIn('the disk is unchanged', result.error)
        self.assertIn('new node %s could not be deleted' % TEMP,
                      result.error)
        self.assertEqual(
            ['node %s is perhaps still open: an extra librbd client of '
             'image volumes/volume-1 (a watcher the sharing guard counts '
             'as another client)' % TEMP], result.leftover)
        self.assertIn('"node-name": "%s"' % TEMP, result.remedy)
        self.assertEqual(OLD, self.qemu.storage_of_disk())
        self.assertIn(TEMP, self.qemu.nodes)
        self.assertEqual(RUNNING, self.qemu.run_state)
        # A second run deletes the stray node and switches.
        del self.qemu.fail['blockdev-reopen']
        self.qemu.calls = []
        result = self.switch()
        self.assert_clean_switch(result)
        self.assertEqual('del ' + TEMP, self.qemu.commands()[0])
        self.assertIn('deleted node %s, left unused' % TEMP,
                      ' '.join(result.notes))

    def test_old_node_cannot_go_a_second_run_finishes(self):
        self.qemu.fail[('blockdev-del', 1)] = 'node is busy'
        result = self.switch()
        self.assertEqual('partial', result.state)
        self.assertEqual(TEMP, self.qemu.storage_of_disk())
        self.assertIn(OLD, self.qemu.nodes)
        self.assertIn('with its cache on', result.leftover[0])
        self.assertEqual(RUNNING, self.qemu.run_state)
        # The second run: the temporary node is in use (QEMU refuses), the
        # old one is not: it goes, then stage 2, without a pause.
        self.qemu.calls = []
        result = self.switch()
        self.assert_clean_switch(result, 'completed')
        self.assertEqual(['del ' + TEMP, 'del ' + OLD, 'blockdev-add',
                          'blockdev-reopen', 'del ' + TEMP],
                         self.qemu.commands())

    def test_both_nodes_in_use_is_refused(self):
        self.qemu.nodes[TEMP] = node(TEMP, 'rbd', direct=True)
        self.qemu.child['other'] = TEMP
        with self.assertRaises(livefix.NotSwitched) as ctx:
            self.switch()
        self.assertIn('neither can be deleted', str(ctx.exception))

    def test_resume_is_retried(self):
        self.qemu.resume_failures = 2
        self.assert_clean_switch(self.switch())

    def test_resume_failure_is_reported_loudly(self):
        self.qemu.resume_failures = 1000
        result = self.switch(resume_deadline=0.5)
        self.assertEqual('partial', result.state)
        self.assertIn('THE VM IS STILL PAUSED', result.leftover[0])
        self.assertIn('cannot resume', result.leftover[0])
        self.assertTrue(result.remedy.startswith('virsh resume instance-1'))
        self.assertEqual('paused', result.vm)
        self.assertGreater(self.qemu.commands().count('resume'), 1)

    def test_a_suspend_that_times_out_is_still_resumed(self):
        # The suspend answers after the call's bound: the switch rolls
        # back and the resume (queued after it, as in libvirt) runs.
        self.qemu.suspend_seconds = 0.6
        result = self.switch(qmp_timeout=0.2)
        self.assertEqual('rolled-back', result.state)
        self.assertIn('pause the VM: no answer within 0.2 s', result.error)
        self.assert_unchanged()
        self.assertEqual('running', result.vm)

    def test_a_paused_vm_stays_paused(self):
        self.qemu.run_state = PAUSED
        self.assertEqual('switched', self.switch().state)
        self.assertNotIn('suspend', self.qemu.commands())
        self.assertNotIn('resume', self.qemu.commands())
        self.assertEqual(PAUSED, self.qemu.run_state)

    def test_a_paused_vm_stays_paused_on_a_signal(self):
        self.qemu.run_state = PAUSED
        self.qemu.before['blockdev-reopen'] = self_signal('SIGTERM')
        result = self.switch()
        self.assertEqual('SIGTERM', result.interrupted)
        self.assertNotIn('resume', self.qemu.commands())
        self.assertEqual(PAUSED, self.qemu.run_state)
        self.assertEqual('paused', result.vm)

    def test_stage_two_failure_leaves_it_uncached_and_says_so(self):
        self.qemu.fail[('blockdev-add', 2)] = 'monitor went away'
        result = self.switch()
        self.assertEqual('partial', result.state)
        self.assertIn('runs uncached on node %s' % TEMP, result.leftover[0])
        self.assertEqual(TEMP, self.qemu.storage_of_disk())
        # A second run finishes the job, without pausing again.
        del self.qemu.fail[('blockdev-add', 2)]
        self.qemu.calls = []
        self.assert_clean_switch(self.switch(), 'completed')
        self.assertNotIn('suspend', self.qemu.commands())

    def test_already_direct(self):
        self.qemu.nodes[OLD]['cache']['direct'] = True
        self.assertEqual('already-direct', self.switch().state)
        self.assertEqual([], self.qemu.commands())

    # -- QMP timeouts --------------------------------------------------------

    def test_reopen_timeout_not_run_rolls_back(self):
        self.qemu.timeout['blockdev-reopen'] = 'before'
        result = self.switch()
        self.assertEqual('rolled-back', result.state)
        self.assertIn('no answer within 0.5 s; whether it took effect is '
                      'unknown', result.error)
        self.assert_unchanged()

    def test_reopen_timeout_that_ran_goes_forward(self):
        self.qemu.timeout[('blockdev-reopen', 1)] = 'after'
        result = self.switch()
        self.assert_clean_switch(result)
        self.assertIn('the disk moved although', ' '.join(result.notes))

    def test_stage_two_reopen_timeout_then_a_second_run(self):
        self.qemu.timeout[('blockdev-reopen', 2)] = 'before'
        result = self.switch()
        self.assertEqual('partial', result.state)
        self.assertIn('QEMU did not say', result.leftover[0])
        self.assertEqual(RUNNING, self.qemu.run_state)
        self.qemu.timeout.clear()
        self.qemu.calls = []
        self.assert_clean_switch(self.switch(), 'completed')
        self.assertEqual(['del ' + TEMP, 'del ' + OLD, 'blockdev-add',
                          'blockdev-reopen', 'del ' + TEMP],
                         self.qemu.commands())

    def test_reopen_timeout_and_qemu_silent_is_partial(self):
        self.qemu.timeout['blockdev-reopen'] = 'before'
        self.qemu.timeout[('query-named-block-nodes', 2)] = 'before'
        result = self.switch()
        self.assertEqual('partial', result.state)
        self.assertIn('QEMU did not say whether the disk moved',
                      result.error)
        self.assertEqual(2, len(result.leftover))
        self.assertEqual(RUNNING, self.qemu.run_state)

    def test_add_timeout_cleans_up(self):
        self.qemu.timeout['blockdev-add'] = 'after'
        result = self.switch()
        self.assertEqual('rolled-back', result.state)
        self.assert_unchanged()
        self.assertNotIn('suspend', self.qemu.commands())

    def test_a_clean_up_not_sent_at_first_is_sent_once_a_slot_frees(self):
        # Inside nova-compute one QMP command at a time: the timed-out add
        # holds the slot, so the first tries of the delete are not sent.
        self.qemu.timeout['blockdev-add'] = 'after'
        self.qemu.busy['blockdev-del'] = 2
        result = self.switch()
        self.assertEqual('rolled-back', result.state, result)
        self.assert_unchanged()
        self.assertEqual(0, self.qemu.busy['blockdev-del'])
        # Tried three times (twice not sent), then deleted.
        self.assertEqual(['blockdev-add'] + ['del ' + TEMP] * 3,
                         self.qemu.commands()[-4:])

    def test_a_leftover_delete_not_sent_is_refused_to_try_again(self):
        self.qemu.nodes[TEMP] = node(TEMP, 'rbd', direct=True)
        self.qemu.busy['blockdev-del'] = 1
        with self.assertRaises(livefix.NotSwitched) as ctx:
            self.switch()
        self.assertIn('not sent', str(ctx.exception))
        self.assertIn('run it again once QEMU answers', str(ctx.exception))
        self.assertNotIn('cold restart', str(ctx.exception))

    # -- libvirt jobs ------------------------------------------------------

    def test_libvirt_job_is_not_switched(self):
        self.qemu.libvirt_job = (2, 5)          # unbounded, migration out
        with self.assertRaises(livefix.NotSwitched) as ctx:
            self.switch()
        self.assertIn('libvirt runs a migration job on it; not switched',
                      str(ctx.exception))
        self.assertEqual([], self.qemu.commands())

    def test_libvirt_job_started_during_the_switch_rolls_back(self):
        def start_job():
            self.qemu.libvirt_job = (1, 2)      # a save
        self.qemu.before['suspend'] = start_job
        result = self.switch()
        self.assertEqual('rolled-back', result.state)
        self.assertIn('libvirt started a save job', result.error)
        self.assertNotIn('blockdev-reopen', self.qemu.commands())
        self.assert_unchanged()

    def test_refuses_during_a_block_job(self):
        self.qemu.jobs = [{'device': 'libvirt-2-format', 'type': 'mirror'}]
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('block job mirror', str(ctx.exception))
        self.assertEqual([], self.qemu.commands())

    def test_refuses_without_libvirt_secret(self):
        self.qemu.secrets.clear()
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('libvirt-2-storage-auth-secret0', str(ctx.exception))

    def test_refuses_without_node_index(self):
        self.disk.index = None
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('<source index>', str(ctx.exception))


class SignalTest(unittest.TestCase):
    """A real signal to this process at each step of the switch."""

    def setUp(self):
        self.disk = domxml.rbd_disks(domxml.parse(DISK_XML))[0]
        self.qemu = FakeQemu()
        self.handlers = {s: signal.getsignal(s) for s in
                         (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def tearDown(self):
        # The switch put the old handlers back.
        self.assertEqual(self.handlers, {s: signal.getsignal(s)
                                         for s in self.handlers})

    def switch(self, at, name='SIGTERM'):
        self.qemu.before[at] = self_signal(name)
        result = livefix.Switch(self.qemu, self.disk, monitor=self.qemu,
                                qmp_timeout=2.0, close_deadline=0.2).run()
        self.assertEqual(name, result.interrupted)
        self.assertFalse(result.ok)
        self.assertEqual(RUNNING, self.qemu.run_state)
        self.assertEqual('running', result.vm)
        return result

    def assert_rolled_back(self, result):
        self.assertEqual('rolled-back', result.state, result)
        self.assertIn('stopped by %s: rolled back, the disk is unchanged'
                      % result.interrupted, result.error)
        self.assertEqual(OLD, self.qemu.storage_of_disk())
        self.assertEqual({'libvirt-2-format', OLD}, set(self.qemu.nodes))
        self.assertNotIn('blockdev-reopen', self.qemu.commands())

    def assert_left_on_temp_node(self, result):
        self.assertEqual('partial', result.state, result)
        self.assertEqual(TEMP, self.qemu.storage_of_disk())
        # The caching node went; nothing else was done.
        self.assertEqual({'libvirt-2-format', TEMP}, set(self.qemu.nodes))
        self.assertEqual('del ' + OLD, self.qemu.commands()[-1])
        self.assertIn('runs uncached on node %s' % TEMP, result.leftover[0])
        self.assertIn('again', result.remedy)

    def test_during_preflight(self):
        result = self.switch(('query-block', 1))
        self.assertEqual('not-switched', result.state)
        self.assertEqual([], self.qemu.commands())

    def test_while_the_new_node_opens(self):
        self.assert_rolled_back(self.switch('blockdev-add', 'SIGINT'))
        self.assertNotIn('suspend', self.qemu.commands())

    def test_while_pausing(self):
        result = self.switch('suspend', 'SIGHUP')
        self.assert_rolled_back(result)
        self.assertEqual(['blockdev-add', 'suspend', 'resume',
                          'del ' + TEMP], self.qemu.commands())

    def test_during_the_reopen(self):
        # The reopen was under way: the disk has moved, the VM resumes,
        # the caching client goes and the switch stops there.
        result = self.switch('blockdev-reopen')
        self.assert_left_on_temp_node(result)

    def test_while_the_old_node_closes(self):
        self.assert_left_on_temp_node(self.switch(('blockdev-del', 1)))

    def test_in_stage_two_it_is_finished(self):
        result = self.switch(('blockdev-add', 2))
        self.assertEqual('switched', result.state)
        self.assertIn('stopped by SIGTERM: the switch had finished',
                      result.error)
        self.assertEqual(OLD, self.qemu.storage_of_disk())
        self.assertEqual({'libvirt-2-format', OLD}, set(self.qemu.nodes))

    def test_a_second_run_finishes(self):
        self.switch('blockdev-reopen')
        self.qemu.before.clear()
        self.qemu.calls = []
        result = livefix.Switch(self.qemu, self.disk,
                                monitor=self.qemu).run()
        self.assertEqual('completed', result.state)
        self.assertNotIn('suspend', self.qemu.commands())
        self.assertEqual(OLD, self.qemu.storage_of_disk())


class MonitorTimeoutTest(unittest.TestCase):

    def test_a_silent_qemu_times_out(self):
        release = threading.Event()
        domain = mock.Mock()
        domain.name.return_value = 'instance-1'

        def send(text):
            release.wait(5)
            return '{"return": {}}'
        monitor = qmp.Monitor(domain, timeout=0.2, send=send)
        started = time.monotonic()
        with self.assertRaises(qmp.QmpTimeout) as ctx:
            monitor('blockdev-del', **{'node-name': 'x'})
        self.assertLess(time.monotonic() - started, 2)
        self.assertIn('no answer within 0.2 s; whether it took effect is '
                      'unknown', str(ctx.exception))
        self.assertIn('blockdev-del', str(ctx.exception))
        release.set()
        self.assertTrue(ctx.exception.call.wait(2))
        self.assertEqual('{"return": {}}', ctx.exception.call.result())

    def test_answers_and_errors(self):
        domain = mock.Mock()
        domain.name.return_value = 'd'
        sent = []

        def send(text):
            sent.append(json.loads(text))
            return '{"error": {"desc": "nope"}}'
        with self.assertRaises(qmp.QmpError) as ctx:
            qmp.Monitor(domain, send=send)('x', a=1)
        self.assertEqual('nope', ctx.exception.reason)
        self.assertEqual([{'execute': 'x', 'arguments': {'a': 1}}], sent)


class HookTest(unittest.TestCase):

    def test_signal(self):
        with livefix.Interrupts() as interrupts:
            livefix.run_test_hook('paused', {livefix.HOOK_ENV:
                                             'moved:signal:INT,'
                                             'paused:signal:HUP'})
        self.assertEqual('SIGHUP', interrupts.received)

    def test_stop_and_continue(self):
        child = subprocess.Popen(['sleep', '30'])
        self.addCleanup(child.kill)

        def state():
            with open('/proc/%d/stat' % child.pid) as f:
                return f.read().split(')')[1].split()[0]
        livefix.run_test_hook('paused', {
            livefix.HOOK_ENV: 'paused:stop:%d:1' % child.pid})
        states = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states.append(state())
            if states[-1] != 'T' and 'T' in states:
                break
            time.sleep(0.05)
        self.assertIn('T', states)          # stopped...
        self.assertNotEqual('T', states[-1])    # ... and continued

    def test_no_handlers_where_python_refuses_them(self):
        # Outside the main thread signal.signal raises ValueError.
        with mock.patch.object(livefix.signal, 'signal',
                               side_effect=ValueError('main thread only')):
            with livefix.Interrupts() as interrupts:
                self.assertEqual({}, interrupts._old)
        self.assertIsNone(interrupts.received)


class ReportTest(unittest.TestCase):
    """fix --live's result dicts, text and exit status."""

    def row(self, persistent=True):
        return types.SimpleNamespace(
            domain='instance-1', target='vdb', image='volumes/volume-1',
            handle=mock.Mock(), live=mock.Mock(), persistent=persistent,
            findings=[{'code': 'caching', 'where': 'qemu'}], running=True)

    def result(self, **kwargs):
        base = dict(domain='instance-1', disk='vdb',
                    image='volumes/volume-1', state='switched',
                    pause_ms=12.0, total_ms=80.0, vm='running')
        return livefix.SwitchResult(**dict(base, **kwargs))

    def test_definition_fixed_only_after_a_clean_switch(self):
        with mock.patch.object(livefix, 'switch',
                               return_value=self.result()), \
                mock.patch.object(audit, 'fix_config',
                                  return_value={'state': 'fixed'}) as fix, \
                mock.patch.object(audit, 'record_live_fix',
                                  return_value={'live': 'recorded'}) as rec:
            done = audit.fix_live(self.row(), 'none')
        self.assertEqual('fixed', done['config']['state'])
        self.assertEqual({'live': 'recorded'}, done['recorded'])
        fix.assert_called_once()
        rec.assert_called_once()
        partial = self.result(state='partial', leftover=['x'],
                              interrupted='SIGTERM')
        with mock.patch.object(livefix, 'switch', return_value=partial), \
                mock.patch.object(audit, 'fix_config') as fix, \
                mock.patch.object(audit, 'record_live_fix') as rec:
            done = audit.fix_live(self.row(), 'none')
        fix.assert_not_called()
        rec.assert_not_called()
        self.assertEqual({'state': 'skipped',
                          'detail': 'interrupted by SIGTERM'},
                         done['config'])

    def test_not_switched(self):
        refused = livefix.NotSwitched(domain='instance-1', disk='vdb',
                                      reason='libvirt runs a migration job')
        with mock.patch.object(livefix, 'switch', side_effect=refused):
            done = audit.fix_live(self.row(), 'none')
        self.assertEqual('not-switched', done['state'])
        self.assertIn('NOT SWITCHED: Live cache switch of disk vdb of '
                      'domain instance-1 failed: libvirt runs a migration',
                      fix_cmd._fix_text(done))

    def test_text_of_a_partial_interrupted_switch(self):
        done = dict(livefix.dataclasses.asdict(self.result(
            state='partial', interrupted='SIGTERM',
            error='stopped by SIGTERM: it moved',
            leftover=['node nsc-2-storage is perhaps still open'],
            remedy='run fix --live again')), action='live',
            config={'state': 'skipped', 'detail': 'interrupted by SIGTERM'})
        text = fix_cmd._fix_text(done)
        self.assertEqual(
            'live PARTIAL, INTERRUPTED by SIGTERM (VM paused 12.0 ms, 80 ms '
            'in all; VM running); stopped by SIGTERM: it moved; LEFT: node '
            'nsc-2-storage is perhaps still open; TO CLEAN UP: run fix '
            '--live again; definition skipped (interrupted by SIGTERM)',
            text)

    def test_fix_stops_after_an_interrupted_switch(self):
        conf = types.SimpleNamespace(command=types.SimpleNamespace(
            live=True, config=False, dry_run=False))
        report = types.SimpleNamespace(disks=[self.row(), self.row()],
                                       warnings=[])
        settings = types.SimpleNamespace(cache_mode='none')
        done = {'state': 'rolled-back', 'interrupted': 'SIGINT'}
        with mock.patch.object(audit, 'fix_live',
                               return_value=done) as fix_live:
            results, interrupted = fix_cmd._fix(conf, settings, report)
        self.assertEqual('SIGINT', interrupted)
        self.assertEqual([done], results)
        fix_live.assert_called_once()

    def test_a_leftover_node_is_a_reason_to_run(self):
        row = self.row()
        row.findings = []
        row.live.index = '2'
        conf = types.SimpleNamespace(command=types.SimpleNamespace(
            live=True, config=False, dry_run=True))
        report = types.SimpleNamespace(disks=[row], warnings=[])
        with mock.patch.object(livefix, 'temp_nodes',
                               return_value={'2': TEMP}):
            results, _ = fix_cmd._fix(conf, types.SimpleNamespace(
                cache_mode='none'), report)
        self.assertEqual('live', results[0]['action'])
        self.assertEqual('leftover', results[0]['findings'][0]['code'])
        self.assertEqual([], report.warnings)

    def test_a_qemu_not_asked_for_leftovers_is_a_warning(self):
        # Two disks of one domain whose QEMU does not take the question:
        # one warning naming the domain, the reason and the remedy; no
        # action, and QEMU is asked once.
        rows = [self.row(), self.row()]
        for index, row in enumerate(rows):
            row.findings = []
            row.live.index = str(index)
        conf = types.SimpleNamespace(command=types.SimpleNamespace(
            live=True, config=False, dry_run=True))
        report = types.SimpleNamespace(disks=rows, warnings=[])
        busy = qmp.QmpBusy('instance-1', 'query-named-block-nodes', 3, 2.0)
        with mock.patch.object(livefix, 'temp_nodes',
                               side_effect=busy) as asked:
            results, _ = fix_cmd._fix(conf, types.SimpleNamespace(
                cache_mode='none'), report)
        self.assertEqual([], results)
        asked.assert_called_once()
        self.assertEqual(1, len(report.warnings))
        self.assertIn('instance-1: could not ask QEMU', report.warnings[0])
        self.assertIn(busy.reason, report.warnings[0])
        self.assertIn('run fix --live again once QEMU answers',
                      report.warnings[0])

    def test_temp_nodes_raises_what_qemu_asking_raised(self):
        with mock.patch.object(qmp, 'Monitor') as monitor:
            monitor.return_value.block_nodes.side_effect = qmp.QmpTimeout(
                'instance-1', 'query-named-block-nodes', 2.0)
            self.assertRaises(qmp.QmpTimeout, livefix.temp_nodes,
                              mock.Mock())
            monitor.return_value.block_nodes.side_effect = None
            monitor.return_value.block_nodes.return_value = [
                'libvirt-2-format', TEMP, 'nsc-x']
            self.assertEqual({'2': TEMP}, livefix.temp_nodes(mock.Mock()))


class FormatOptionsTest(unittest.TestCase):

    def test_reports_options_back(self):
        fmt = node('libvirt-2-format', 'raw')
        fmt['ro'] = True
        fmt['detect_zeroes'] = 'unmap'
        self.assertEqual(
            {'driver': 'raw', 'node-name': 'libvirt-2-format',
             'read-only': True, 'file': 'n',
             'cache': {'direct': True, 'no-flush': False},
             'detect-zeroes': 'unmap'},
            livefix.format_options(fmt, 'n', direct=True))
