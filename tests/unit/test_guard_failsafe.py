"""The guard never blocks what runs; credentials without a keyring.

On the fake cluster; the same rules are shown on the real cluster in
tests/integration/test_guard_failsafe.py.
"""

import base64
import os
import threading
from unittest import mock

import fixtures

from nova_shared_cache.backends import rbd
from nova_shared_cache import cephauth
from nova_shared_cache import cephclient
from nova_shared_cache import driver as sc_driver
from nova_shared_cache import exception
from tests.unit import base
from tests.unit import fakeceph

SPEC = base.RBD_CONNECTION_INFO['data']['name']
KEY = base64.b64encode(b'0123456789abcdef0123456789').decode()


class FakeSecret:
    def __init__(self, private, value=b'0123456789abcdef0123456789'):
        self.private = private
        self._value = value

    def XMLDesc(self, flags=0):
        return ("<secret ephemeral='no' private='%s'><uuid>%s</uuid>"
                "</secret>" % ('yes' if self.private else 'no',
                               base.SECRET_UUID))

    def value(self, flags=0):
        if self.private:
            raise RuntimeError('secret is private')
        return self._value


class FakeConnection:
    def __init__(self, secrets):
        self.secrets = secrets
        self.lookups = []

    def secretLookupByUUIDString(self, uuid):
        self.lookups.append(uuid)
        if uuid not in self.secrets:
            raise RuntimeError('Secret not found: no secret with matching '
                               'uuid %s' % uuid)
        return self.secrets[uuid]


class FailSafeTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.instance = base.make_instance()
        self.connection = FakeConnection({})

    def backend(self):
        backend = rbd.RbdBackend(sc_driver.CONF)
        backend.bind_host(mock.Mock(get_connection=lambda: self.connection))
        return backend

    def connect(self, shared=True, new_attachment=True, info=None):
        info = info or base.connection_info(multiattach=shared)
        self.backend().on_connect(None, info, self.instance, shared=shared,
                                  new_attachment=new_attachment)

    def log(self):
        return self.stdlog.logger.output

    def no_keyring(self):
        for name in os.listdir(self.ceph_dir):
            if name.endswith('.keyring'):
                os.unlink(os.path.join(self.ceph_dir, name))

    # -- Ceph down ----------------------------------------------------------

    def test_reconnect_never_fails_when_ceph_is_down(self):
        # Hard reboot, power on, host boot, migration, resize, unshelve.
        self.ceph.down = True
        for policy in ('enforce', 'refuse', 'warn'):
            self.flags(rbd_feature_policy=policy, group='shared_cache')
            self.connect(new_attachment=False)
        self.assertIn('reconnect of an existing attachment', self.log())
        self.assertIn(base.VOLUME_ID, self.log())

    def test_warn_never_blocks_a_new_attachment(self):
        self.flags(rbd_feature_policy='warn', sharing_guard='warn',
                   group='shared_cache')
        self.ceph.down = True
        self.connect()
        self.connect(shared=False)
        self.assertIn('Going on as stock Nova would (new attachment, policy '
                      'warn)', self.log())

    def test_sharing_guard_refuse_refuses_unchecked_new_attachment(self):
        self.flags(rbd_feature_policy='warn', group='shared_cache')
        self.ceph.down = True
        self.connect()              # shared: only the feature policy
        err = self.assertRefused(self.connect, shared=False)
        self.assertIn('sharing_guard = refuse', str(err))

    def test_off_does_not_touch_ceph(self):
        self.flags(rbd_feature_policy='off', group='shared_cache')
        self.ceph.down = True
        self.connect()
        self.assertEqual([], self.ceph.calls)

    def test_refuse_does_not_refuse_a_reconnect(self):
        self.flags(rbd_feature_policy='refuse', group='shared_cache')
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        self.connect(new_attachment=False)
        self.assertIn('a reconnect is never refused', self.log())
        self.assertRefused(self.connect)

    def test_enforce_without_write_caps_does_not_fail_a_reconnect(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        self.ceph.read_only_users.add('cinder')
        self.connect(new_attachment=False)
        self.assertIn('could not be cleared', self.log())
        self.assertRefused(self.connect)

    # -- credentials ------------------------------------------------------

    def test_keyring_first(self):
        creds = self.backend().credentials(base.connection_info())
        self.assertEqual(cephauth.KEYRING, creds.source)
        self.assertEqual([], self.connection.lookups)

    def test_ceph_conf_is_parsed_again_only_when_it_changes(self):
        made = []
        real = self.ceph.rados.Rados

        def counting(*args, **kwargs):
            made.append(kwargs.get('conffile'))
            return real(*args, **kwargs)
        conf = os.path.join(self.ceph_dir, 'ceph.conf')
        with mock.patch.object(self.ceph.rados, 'Rados', counting):
            for _ in range(3):
                creds = self.backend().credentials(base.connection_info())
                self.assertEqual(cephauth.KEYRING, creds.source)
            self.assertEqual([conf], made)
            # The operator points the keyring elsewhere: read again, and
            # the new path decides.
            elsewhere = self.useFixture(fixtures.TempDir()).path
            with open(conf, 'w') as f:
                # (A new size: file times may not tick within a test.)
                f.write('# keyrings moved\n[global]\nmon host = 127.0.0.1\n'
                        'keyring = %s/ceph.$name.keyring\n' % elsewhere)
            creds = self.backend().credentials(base.connection_info())
            self.assertEqual([conf, conf], made)
            self.assertNotEqual(cephauth.KEYRING, creds.source)

    def test_no_keyring_uses_a_non_private_libvirt_secret(self):
        self.no_keyring()
        self.connection.secrets[base.SECRET_UUID] = FakeSecret(False)
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        self.connect()
        self.assertEqual(fakeceph.CINDER_MULTIATTACH,
                         self.ceph.features(SPEC))
        [(_, user, options)] = [c for c in self.ceph.calls
                                if c[0] == 'connect']
        self.assertEqual('cinder', user)
        self.assertEqual(KEY, options['key'])
        self.assertNotIn(KEY, self.log())

    def test_no_ceph_conf_at_all_uses_the_secret_and_the_volumes_mons(self):
        self.flags(ceph_conf='/nonexistent/ceph.conf', group='shared_cache')
        self.connection.secrets[base.SECRET_UUID] = FakeSecret(False)
        self.connect()
        [(_, _, options)] = [c for c in self.ceph.calls
                             if c[0] == 'connect']
        self.assertEqual('127.0.0.1:3300', options['mon_host'])

    def test_private_secret_and_no_keyring(self):
        self.no_keyring()
        self.connection.secrets[base.SECRET_UUID] = FakeSecret(True)
        err = self.assertRefused(self.connect)
        self.assertIn("is private (private='yes')", str(err))
        self.assertIn("define libvirt secret %s with private='no'"
                      % base.SECRET_UUID, str(err))
        self.assertIn(base.VOLUME_ID, str(err))
        self.assertEqual([], [c for c in self.ceph.calls
                              if c[0] == 'connect'])
        for policy in ('warn', 'off'):
            self.flags(rbd_feature_policy=policy, group='shared_cache')
            self.connect()
        self.connect(new_attachment=False)

    def test_never_a_silent_admin(self):
        info = base.connection_info()
        del info['data']['auth_username']
        self.flags(rbd_user=None, group='libvirt')
        err = self.assertRefused(self.connect, info=info)
        self.assertIn('no Ceph user is known', str(err))
        self.assertEqual([], [c for c in self.ceph.calls
                              if c[0] == 'connect'])

    def test_report_at_start(self):
        self.flags(rbd_user='cinder', rbd_secret_uuid=base.SECRET_UUID,
                   group='libvirt')
        self.backend().report_at_start()
        self.assertIn('use client.cinder, key from', self.log())
        self.no_keyring()
        self.connection.secrets[base.SECRET_UUID] = FakeSecret(True)
        self.backend().report_at_start()
        self.assertIn('cannot check RBD images', self.log())
        self.assertIn('new attachments of volumes the checks apply to are '
                      'refused ([shared_cache] rbd_feature_policy, '
                      'sharing_guard)', self.log())
        self.connection.secrets[base.SECRET_UUID] = FakeSecret(False)
        self.backend().report_at_start()
        self.assertIn('key of libvirt secret %s' % base.SECRET_UUID,
                      self.log())

    def test_report_at_start_without_a_default_user(self):
        # Cinder's volumes name their own user: no warning at start.
        self.flags(rbd_user=None, rbd_secret_uuid=None, group='libvirt')
        self.backend().report_at_start()
        self.assertIn('no default Ceph user is set', self.log())
        self.assertIn('use the user and libvirt secret its connection_info '
                      'names', self.log())
        self.assertNotIn('WARNING [nova_shared_cache', self.log())
        self.assertNotIn('cannot check', self.log())

    def test_report_at_start_without_any_ceph_conf(self):
        # Monitors come from each volume: a readable secret is enough.
        self.flags(rbd_user='cinder', rbd_secret_uuid=base.SECRET_UUID,
                   group='libvirt')
        self.flags(ceph_conf='/nonexistent/ceph.conf', group='shared_cache')
        self.connection.secrets[base.SECRET_UUID] = FakeSecret(False)
        self.backend().report_at_start()
        self.assertIn("key of libvirt secret %s (monitors from each "
                      "volume's connection_info)" % base.SECRET_UUID,
                      self.log())
        self.assertNotIn('cannot check', self.log())

    def test_report_at_start_never_stops_the_driver(self):
        drv = self.make_driver()
        with mock.patch.object(drv._shared_backends[0], 'report_at_start',
                               side_effect=RuntimeError('boom')):
            drv._report_shared_backends()
        self.assertIn('could not tell whether its checks can run',
                      self.log())


class InFlightTest(base.TestCase):
    """A broken connection is shut down only after its last call."""

    def setUp(self):
        super().setUp()
        # Nova's test base monkey patches threading: the calls run in the
        # calling (green) thread here, so the Events below are all green.
        self.useFixture(fixtures.MonkeyPatch(
            'nova_shared_cache.cephclient._offload',
            lambda function, *args: function(*args)))

    def test_shutdown_waits_for_calls_in_flight(self):
        client = cephclient.CephClient(
            self.flags_ceph_conf(), 'cinder', 3)
        started, release = threading.Event(), threading.Event()
        shutdowns = []
        results = {}

        def slow(cluster):
            started.set()
            release.wait(5)
            return 'slow done, shut down: %s' % bool(shutdowns)

        def failing(cluster):
            raise self.ceph.rados.TimedOut('timed out')

        worker = threading.Thread(
            target=lambda: results.setdefault('slow', client.call('slow',
                                                                  slow)))
        worker.start()
        started.wait(5)
        connection = client._connection
        real_shutdown = connection.cluster.shutdown
        connection.cluster.shutdown = lambda: (shutdowns.append(1),
                                               real_shutdown())
        self.assertRaises(exception.CephError, client.call, 'fail', failing)
        # Retired: the next call gets a new connection; the old one is
        # still in use by the slow call and not shut down.
        self.assertFalse(client.connected)
        self.assertEqual([], shutdowns)
        release.set()
        worker.join(5)
        self.assertEqual('slow done, shut down: False', results['slow'])
        self.assertEqual([1], shutdowns)

    def test_concurrent_callers_share_one_connect_attempt(self):
        client = cephclient.CephClient(self.flags_ceph_conf(), 'cinder', 3)
        gate = threading.Event()
        real_connect = client._connect
        attempts = []

        def slow_connect():
            attempts.append(1)
            gate.wait(5)
            return real_connect()

        client._connect = slow_connect
        out = []
        threads = [threading.Thread(target=lambda: out.append(
            client.call('x', lambda cluster: 'ok'))) for _ in range(4)]
        for t in threads:
            t.start()
        gate.set()
        for t in threads:
            t.join(5)
        self.assertEqual(['ok'] * 4, out)
        self.assertEqual([1], attempts)

    def flags_ceph_conf(self):
        return sc_driver.CONF.shared_cache.ceph_conf


class StartUpTest(base.TestCase):

    def test_init_host_reports_once_what_the_guard_can_do(self):
        drv = self.make_driver()
        # Nova's own init_host needs a database on Nova 30-33; only what
        # the override adds after it is looked at here.
        with mock.patch.object(drv._shared_backends[0],
                               'report_at_start') as report, \
                mock.patch('nova.virt.libvirt.driver.LibvirtDriver.'
                           'init_host') as novas:
            drv.init_host('compute-1')
        novas.assert_called_once_with('compute-1')
        report.assert_called_once_with()
