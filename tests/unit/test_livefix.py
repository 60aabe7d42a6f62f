"""The live cache switch's sequence and every way out of it, on a fake QEMU.

The fake keeps QEMU's block graph (which node each format node sits on)
and the VM's run state, so the tests can assert what QEMU would be left
with; the real sequence is exercised in tests/integration/test_repair.py.
"""

import copy
import unittest

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


def node(name, drv, direct=False):
    return {'node-name': name, 'drv': drv, 'ro': False,
            'detect_zeroes': 'off',
            'cache': {'direct': direct, 'writeback': True,
                      'no-flush': False}}


class FakeQemu:
    """Just enough QMP and libvirt domain for the switch."""

    def __init__(self, state=RUNNING):
        self.nodes = {'libvirt-2-format': node('libvirt-2-format', 'raw'),
                      'libvirt-2-storage': node('libvirt-2-storage', 'rbd')}
        self.child = {'libvirt-2-format': 'libvirt-2-storage'}
        self.secrets = {'libvirt-2-storage-auth-secret0'}
        self.jobs = []
        self.run_state = state
        self.calls = []
        self.fail = {}          # (command, n-th call) or command -> reason
        self.resume_failures = 0
        self.counts = {}

    # -- QMP -------------------------------------------------------------
    name = 'instance-1'

    def __call__(self, command, **args):
        self.counts[command] = self.counts.get(command, 0) + 1
        self.calls.append((command, args, self.run_state))
        for key in (command, (command, self.counts[command])):
            if key in self.fail:
                raise qmp.QmpError(self.name, command, self.fail[key])
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
        assert name not in self.nodes, name
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
        assert name not in self.child.values(), '%s is in use' % name
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

    def suspend(self):
        self.calls.append(('suspend', {}, self.run_state))
        self.run_state = PAUSED

    def resume(self):
        self.calls.append(('resume', {}, self.run_state))
        if self.resume_failures:
            self.resume_failures -= 1
            raise RuntimeError('cannot resume')
        self.run_state = RUNNING

    # -- what the tests look at -------------------------------------------
    def storage_of_disk(self):
        return self.child['libvirt-2-format']

    def commands(self):
        return [c for c, _, _ in self.calls
                if not c.startswith('query') and c != 'qom-list']


class SwitchTest(unittest.TestCase):

    def setUp(self):
        self.disk = domxml.rbd_disks(domxml.parse(DISK_XML))[0]
        self.qemu = FakeQemu()

    def switch(self):
        ticks = iter(range(1000))
        return livefix.Switch(self.qemu, self.disk, monitor=self.qemu,
                              clock=lambda: next(ticks) / 100.0).run()

    def test_sequence_keeps_libvirt_node_names(self):
        result = self.switch()
        self.assertEqual('switched', result.state)
        self.assertEqual(
            ['blockdev-add', 'suspend', 'blockdev-reopen', 'blockdev-del',
             'resume', 'blockdev-add', 'blockdev-reopen', 'blockdev-del'],
            self.qemu.commands())
        # The reopen and the deletion of the caching node ran paused.
        paused = [c for c, _, state in self.qemu.calls if state == PAUSED]
        self.assertEqual(['blockdev-reopen', 'blockdev-del', 'resume'],
                         paused)
        self.assertEqual('libvirt-2-storage', self.qemu.storage_of_disk())
        self.assertEqual({'libvirt-2-format', 'libvirt-2-storage'},
                         set(self.qemu.nodes))
        self.assertTrue(self.qemu.nodes['libvirt-2-storage']['cache'][
            'direct'])
        self.assertEqual(RUNNING, self.qemu.run_state)
        self.assertGreater(result.pause_ms, 0)
        self.assertEqual({'direct': False, 'writeback': True,
                          'no_flush': False}, result.before)
        self.assertTrue(result.after['direct'])

    def test_new_node_options(self):
        self.switch()
        add = [a for c, a, _ in self.qemu.calls if c == 'blockdev-add'][0]
        self.assertEqual({
            'driver': 'rbd', 'node-name': 'nsc-2-storage',
            'pool': 'volumes', 'image': 'volume-1',
            'server': [{'host': '127.0.0.1', 'port': '3300'}],
            'user': 'cinder', 'auth-client-required': ['cephx', 'none'],
            'key-secret': 'libvirt-2-storage-auth-secret0',
            'auto-read-only': True, 'read-only': False, 'discard': 'unmap',
            'cache': {'direct': True, 'no-flush': False}}, add)

    def test_new_node_cannot_open_changes_nothing(self):
        self.qemu.fail['blockdev-add'] = "error opening image"
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('error opening image', str(ctx.exception))
        self.assertEqual(['blockdev-add'], self.qemu.commands())
        self.assertEqual(RUNNING, self.qemu.run_state)

    def test_reopen_fails_rolls_back_and_resumes(self):
        self.qemu.fail['blockdev-reopen'] = 'reopen refused'
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('rolled back, the disk is unchanged: ', str(
            ctx.exception))
        self.assertIn('reopen refused', str(ctx.exception))
        self.assertEqual(RUNNING, self.qemu.run_state)
        self.assertEqual('libvirt-2-storage', self.qemu.storage_of_disk())
        self.assertNotIn('nsc-2-storage', self.qemu.nodes)

    def test_old_node_cannot_go_moves_back_while_paused(self):
        self.qemu.fail['blockdev-del'] = 'node is busy'
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('rolled back', str(ctx.exception))
        self.assertEqual('libvirt-2-storage', self.qemu.storage_of_disk())
        self.assertFalse(self.qemu.nodes['libvirt-2-format']['cache'][
            'direct'])
        # Moved back before the VM ran again.
        reopen_back = [s for c, a, s in self.qemu.calls
                       if c == 'blockdev-reopen'][-1]
        self.assertEqual(PAUSED, reopen_back)
        self.assertEqual(RUNNING, self.qemu.run_state)

    def test_rollback_failure_says_where_the_disk_is(self):
        self.qemu.fail['blockdev-del'] = 'node is busy'
        self.qemu.fail[('blockdev-reopen', 2)] = 'no way back'
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        message = str(ctx.exception)
        self.assertIn('runs uncached on node nsc-2-storage', message)
        self.assertNotIn('unchanged', message)
        self.assertEqual(RUNNING, self.qemu.run_state)

    def test_resume_is_retried(self):
        self.qemu.resume_failures = 2
        self.assertEqual('switched', self.switch().state)
        self.assertEqual(RUNNING, self.qemu.run_state)

    def test_resume_failure_is_reported_loudly(self):
        self.qemu.resume_failures = livefix.RESUME_ATTEMPTS
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('THE VM COULD NOT BE RESUMED', str(ctx.exception))

    def test_a_paused_vm_stays_paused(self):
        self.qemu.run_state = PAUSED
        self.assertEqual('switched', self.switch().state)
        self.assertNotIn('suspend', self.qemu.commands())
        self.assertNotIn('resume', self.qemu.commands())
        self.assertEqual(PAUSED, self.qemu.run_state)

    def test_stage_two_failure_leaves_it_uncached_and_says_so(self):
        self.qemu.fail[('blockdev-add', 2)] = 'monitor went away'
        with self.assertRaises(exception.LiveSwitchError) as ctx:
            self.switch()
        self.assertIn('runs uncached (node nsc-2-storage)', str(
            ctx.exception))
        self.assertEqual('nsc-2-storage', self.qemu.storage_of_disk())
        # A second run finishes the job, without pausing again.
        del self.qemu.fail[('blockdev-add', 2)]
        self.qemu.calls = []
        self.assertEqual('completed', self.switch().state)
        self.assertNotIn('suspend', self.qemu.commands())
        self.assertEqual('libvirt-2-storage', self.qemu.storage_of_disk())
        self.assertNotIn('nsc-2-storage', self.qemu.nodes)

    def test_already_direct(self):
        self.qemu.nodes['libvirt-2-storage']['cache']['direct'] = True
        self.assertEqual('already-direct', self.switch().state)
        self.assertEqual([], self.qemu.commands())

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
