"""The extension in both of Nova's concurrency modes.

Nova 30-33 computes run under eventlet; Nova 34's nova-compute runs native
threads by default and then forbids importing eventlet at all. The unit
suite itself runs under Nova's test base (eventlet): the ordering tests
below are driven by events, so they hold for greenthreads and real threads
alike, and tests/functional/test_ceph_threads.py runs them again in the
functional envs' mode: native threads in tox -e functional-nova34-threading
(where tests/functional/test_threading.py runs the driver concurrently).
"""

import importlib.metadata
import os
import subprocess
import sys
import textwrap
import threading

import fixtures
import testtools

from nova_shared_cache import cephclient
from nova_shared_cache import exception
from tests.unit import base

NOVA_MAJOR = int(importlib.metadata.version('nova').split('.')[0])
TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class _HeldEvent:
    """An Event whose waiters, once it is set, wait for ``go`` as well.

    It holds a caller of a connect attempt between the leader's publishing
    and its own use of the connection, where another thread may run.
    """

    def __init__(self, waiting, go):
        self._event = threading.Event()
        self._waiting = waiting
        self._go = go

    def set(self):
        self._event.set()

    def is_set(self):
        return self._event.is_set()

    def wait(self, timeout=None):
        self._waiting.set()
        self._event.wait(timeout)
        self._go.wait(10)
        return self._event.is_set()


class ConnectAttemptTest(base.TestCase):
    """Callers that waited for a connect attempt own a call on its result."""

    def setUp(self):
        super().setUp()
        # Ceph calls in the calling thread (no eventlet tpool): the order
        # is set by the events below only.
        self.useFixture(fixtures.MonkeyPatch(
            'nova_shared_cache.cephclient._offload',
            lambda function, *args: function(*args)))
        self.client = cephclient.CephClient(
            base.sc_driver.CONF.shared_cache.ceph_conf, 'cinder', 3)
        self.connect_gate = threading.Event()
        self.follower_waiting = threading.Event()
        self.follower_go = threading.Event()
        real_connect = self.client._connect

        def gated_connect():
            self.connect_gate.wait(10)
            return real_connect()

        self.client._connect = gated_connect
        waiting, go = self.follower_waiting, self.follower_go

        class Attempt(cephclient._Connecting):
            def __init__(self):
                super().__init__()
                self.done = _HeldEvent(waiting, go)

        self.useFixture(fixtures.MonkeyPatch(
            'nova_shared_cache.cephclient._Connecting', Attempt))
        self.shutdowns = []
        self.results = {}
        self.threads = []

    def start(self, name, function):
        def run():
            try:
                self.results[name] = self.client.call(name, function)
            except Exception as err:
                self.results[name] = err
        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self):
        for thread in self.threads:
            thread.join(10)
            self.assertFalse(thread.is_alive())

    def count_shutdowns(self, connection):
        real = connection.cluster.shutdown
        connection.cluster.shutdown = lambda: (self.shutdowns.append(1),
                                               real())

    def test_connection_is_not_shut_down_under_a_waiting_caller(self):
        leader_running, leader_go = threading.Event(), threading.Event()

        def leader(cluster):
            leader_running.set()
            leader_go.wait(10)
            return 'leader'

        def follower(cluster):
            return 'follower, shut down before: %s' % bool(self.shutdowns)

        self.start('leader', leader)
        self.start('follower', follower)
        self.assertTrue(self.follower_waiting.wait(10))
        self.connect_gate.set()
        self.assertTrue(leader_running.wait(10))
        connection = self.client._connection
        self.count_shutdowns(connection)
        # The connection breaks (another call failed on it, or close()):
        # retired while the leader runs and the follower has yet to.
        self.client.close()
        leader_go.set()
        self.threads[0].join(10)
        self.assertEqual('leader', self.results['leader'])
        self.follower_go.set()
        self.join()
        self.assertEqual('follower, shut down before: False',
                         self.results['follower'])
        # Shut down once, after its last call.
        self.assertEqual([1], self.shutdowns)
        self.assertEqual(0, connection.calls)

    def test_a_caller_that_gave_up_waiting_is_not_counted(self):
        self.client.timeout = 0     # the follower gives up at once
        self.follower_go.set()
        leader_running, leader_go = threading.Event(), threading.Event()

        def leader(cluster):
            leader_running.set()
            leader_go.wait(10)
            return 'leader'

        self.start('leader', leader)
        self.start('follower', lambda cluster: 'follower')
        self.assertTrue(self.follower_waiting.wait(10))
        self.threads[1].join(10)
        self.assertIsInstance(self.results['follower'], exception.CephError)
        self.assertIn('no answer within 0s', str(self.results['follower']))
        self.connect_gate.set()
        self.assertTrue(leader_running.wait(10))
        connection = self.client._connection
        self.assertEqual(1, connection.calls)
        self.count_shutdowns(connection)
        self.client.close()
        leader_go.set()
        self.join()
        self.assertEqual('leader', self.results['leader'])
        self.assertEqual([1], self.shutdowns)


class NoEventletTest(base.TestCase):
    """Nova 34's compute forbids importing eventlet in threading mode."""

    @testtools.skipUnless(
        NOVA_MAJOR >= 34, 'Nova 30-33 have no native threading mode: their '
        'computes always run eventlet, and their own libvirt driver imports '
        'it')
    def test_every_module_imports_and_calls_ceph_without_eventlet(self):
        # A fresh interpreter started as nova-compute starts on Nova 34
        # (monkey_patch.patch(backend='threading'), no override): eventlet
        # is poisoned.
        code = textwrap.dedent('''
            import importlib, os, pkgutil, sys
            os.environ.pop('OS_NOVA_DISABLE_EVENTLET_PATCHING', None)
            sys.argv = [sys.argv[0]]
            from nova import monkey_patch
            monkey_patch.patch(backend='threading')
            try:
                import eventlet  # noqa
            except ImportError:
                pass
            else:
                raise SystemExit('the poison did not work')
            import nova_shared_cache
            names = [m.name for m in pkgutil.walk_packages(
                nova_shared_cache.__path__, 'nova_shared_cache.')]
            for name in names:
                importlib.import_module(name)
            importlib.import_module('nova.virt.shared_cache')
            from nova_shared_cache import cephclient
            assert cephclient._offload(lambda a: a + 1, 41) == 42
            assert 'eventlet' not in sys.modules, 'eventlet imported'
            print('imported', len(names))
        ''')
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
        env.pop('OS_NOVA_DISABLE_EVENTLET_PATCHING', None)
        proc = subprocess.run([sys.executable, '-c', code], cwd=TOP, env=env,
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(0, proc.returncode, proc.stderr[-3000:])
        self.assertIn('imported', proc.stdout)
        self.assertGreater(int(proc.stdout.split()[-1]), 10)
