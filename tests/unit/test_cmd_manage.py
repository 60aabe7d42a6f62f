"""nova-shared-cache status / fence, on the fake cluster."""

import io
import json
import os
from unittest import mock

from nova_shared_cache.cmd import manage
from nova_shared_cache import hostnet
from tests.unit import base
from tests.unit import fakeceph

SPEC = base.RBD_CONNECTION_INFO['data']['name']
REMOTE = {'addr': '10.0.0.7:0/2041893277', 'id': 9001, 'cookie': 1}
LOCAL = {'addr': '127.0.0.1:0/1733355', 'id': 9002, 'cookie': 2}


class ManageTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.nova_conf = os.path.join(os.path.dirname(
            self.ceph_conf_path()), 'nova.conf')
        with open(self.nova_conf, 'w') as f:
            f.write('[shared_cache]\nceph_conf = %s\nceph_user = cinder\n'
                    'ceph_timeout = 4\n' % self.ceph_conf_path())
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES,
                            watchers=[REMOTE, LOCAL])
        self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.cmd.manage.local_domains_using',
            return_value=['instance-00000001']))

    def ceph_conf_path(self):
        return base.sc_driver.CONF.shared_cache.ceph_conf

    def run_cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        rc = manage.main(['--config-file', self.nova_conf] + list(args),
                         out=out, err=err)
        return rc, out.getvalue(), err.getvalue()

    def test_status_json(self):
        rc, out, err = self.run_cli('status', SPEC, '--json')
        self.assertEqual((0, ''), (rc, err))
        status = json.loads(out)
        self.assertEqual(SPEC, status['image'])
        self.assertEqual(64 << 20, status['size'])
        self.assertEqual(['exclusive-lock', 'object-map', 'fast-diff'],
                         status['single_client_features'])
        self.assertIn('layering', status['features'])
        by_address = {w['address']: w for w in status['watchers']}
        self.assertEqual({REMOTE['addr'], LOCAL['addr']}, set(by_address))
        self.assertFalse(by_address[REMOTE['addr']]['local'])
        self.assertEqual(['instance-00000001'],
                         by_address[LOCAL['addr']]['local_domains'])
        self.assertEqual('client.9001', by_address[REMOTE['addr']]['client'])
        # One local client, one local domain using the image: matched.
        self.assertEqual('instance-00000001',
                         by_address[LOCAL['addr']]['domain'])
        self.assertIsNone(by_address[REMOTE['addr']]['domain'])
        # The connection used the options from nova.conf.
        [connect] = [c for c in self.ceph.calls if c[0] == 'connect']
        self.assertEqual('cinder', connect[1])
        self.assertEqual('4', connect[2]['rados_osd_op_timeout'])

    def test_status_human(self):
        rc, out, _ = self.run_cli('status', SPEC)
        self.assertEqual(0, rc)
        self.assertIn('WARNING:   single-client features exclusive-lock',
                      out)
        self.assertIn('another host', out)
        self.assertIn('this host: instance-00000001', out)

    def test_fence_and_undo_a_remote_client(self):
        rc, out, err = self.run_cli('fence', SPEC, '--client',
                                    REMOTE['addr'], '--json')
        self.assertEqual((0, ''), (rc, err))
        result = json.loads(out)
        self.assertTrue(result['fenced'])
        self.assertEqual(REMOTE['addr'], result['entry']['address'])
        self.assertIn(REMOTE['addr'], self.ceph.blocklist)
        [add] = [c[1] for c in self.ceph.calls if c[0] == 'mon_command'
                 and c[1].get('blocklistop') == 'add']
        self.assertEqual(float(manage.DEFAULT_EXPIRE), add['expire'])

        rc, out, _ = self.run_cli('fence', SPEC, '--client', REMOTE['addr'],
                                  '--undo')
        self.assertEqual(0, rc)
        self.assertIn('is not fenced', out)
        self.assertEqual({}, self.ceph.blocklist)

    def test_fence_refuses_this_hosts_client_without_force(self):
        rc, _, err = self.run_cli('fence', SPEC, '--client', LOCAL['addr'])
        self.assertEqual(2, rc)
        self.assertIn('client on this host', err)
        self.assertIn('--force', err)
        self.assertEqual({}, self.ceph.blocklist)
        rc, _, _ = self.run_cli('fence', SPEC, '--client', LOCAL['addr'],
                                '--force')
        self.assertEqual(0, rc)
        self.assertIn(LOCAL['addr'], self.ceph.blocklist)

    def test_fence_refuses_a_client_of_another_image(self):
        rc, _, err = self.run_cli('fence', SPEC, '--client',
                                  '10.9.9.9:0/1')
        self.assertEqual(2, rc)
        self.assertIn('is not a client of %s' % SPEC, err)
        self.assertEqual({}, self.ceph.blocklist)

    def test_fence_requires_a_client(self):
        with mock.patch('sys.stderr', new_callable=io.StringIO) as stderr:
            self.assertRaises(SystemExit, self.run_cli, 'fence', SPEC)
        self.assertIn('--client', stderr.getvalue())

    def test_cluster_down_is_exit_2_with_reason(self):
        self.ceph.down = True
        rc, out, err = self.run_cli('status', SPEC)
        self.assertEqual((2, ''), (rc, out))
        self.assertIn('no answer within 4s', err)

    def test_bad_option_named(self):
        with open(self.nova_conf, 'a') as f:
            f.write('rbd_feature_policy = sometimes\n')
        rc, _, err = self.run_cli('status', SPEC)
        self.assertEqual(2, rc)
        self.assertIn('[shared_cache] rbd_feature_policy', err)

    def test_undo_without_mon_caps_explains(self):
        self.ceph.blocklist[REMOTE['addr']] = 'x'
        real = self.ceph.rados.Rados.mon_command

        def denied(rados_self, command, inbuf):
            if json.loads(command).get('blocklistop') == 'rm':
                return -13, b'', 'access denied'
            return real(rados_self, command, inbuf)

        with mock.patch.object(self.ceph.rados.Rados, 'mon_command', denied):
            rc, _, err = self.run_cli('fence', SPEC, '--client',
                                      REMOTE['addr'], '--undo')
        self.assertEqual(2, rc)
        self.assertIn('monitor caps of client.cinder', err)
        self.assertIn('--ceph-user admin', err)
        rc, _, _ = self.run_cli('fence', SPEC, '--client', REMOTE['addr'],
                                '--undo', '--ceph-user', 'admin')
        self.assertEqual(0, rc)
        self.assertIn('admin', [c[1] for c in self.ceph.calls
                                if c[0] == 'connect'])
        self.assertEqual({}, self.ceph.blocklist)

    def test_expire_must_be_positive(self):
        for value in ('0', '-5', 'soon'):
            with mock.patch('sys.stderr', new_callable=io.StringIO) as stderr:
                self.assertRaises(SystemExit, self.run_cli, 'fence', SPEC,
                                  '--client', REMOTE['addr'], '--expire',
                                  value)
            self.assertIn('--expire must be', stderr.getvalue())
        self.assertEqual({}, self.ceph.blocklist)

    def test_undo_that_leaves_the_entry_is_an_error(self):
        self.ceph.blocklist[REMOTE['addr']] = 'later'
        real = self.ceph.rados.Rados.mon_command

        def ignore_rm(rados_self, command, inbuf):
            if json.loads(command).get('blocklistop') == 'rm':
                return 0, b'', ''
            return real(rados_self, command, inbuf)

        with mock.patch.object(self.ceph.rados.Rados, 'mon_command',
                               ignore_rm):
            rc, out, err = self.run_cli('fence', SPEC, '--client',
                                        REMOTE['addr'], '--undo')
        self.assertEqual((2, ''), (rc, out))
        self.assertIn('still in the OSD blocklist', err)

    def test_unexpected_error_is_exit_2_without_traceback(self):
        with mock.patch('nova_shared_cache.cephops.image_status',
                        side_effect=KeyError('addr')):
            rc, out, err = self.run_cli('status', SPEC)
        self.assertEqual(2, rc)
        self.assertIn('unexpected KeyError', err)
        self.assertNotIn('Traceback', err)

    def test_address_host(self):
        self.assertEqual('10.0.0.7', str(hostnet.address_host(
            '10.0.0.7:0/2041893277')))
        self.assertEqual('10.0.0.7', str(hostnet.address_host(
            'v2:10.0.0.7:0/1')))
        self.assertEqual('fd00::7', str(hostnet.address_host(
            '[fd00::7]:0/1')))
        self.assertIsNone(hostnet.address_host('nonsense'))


class BlocklistParsingTest(base.TestCase):

    def test_ceph16_prints_two_arrays(self):
        from nova_shared_cache import cephops
        out = (b'[{"addr":"10.1.1.1:0/123","until":"2026-11-25T03:45:08"}]'
               b'[]')
        self.assertEqual([{'addr': '10.1.1.1:0/123',
                           'until': '2026-11-25T03:45:08'}],
                         cephops._json_arrays(out))
        self.assertEqual([], cephops._json_arrays(b''))
        self.assertEqual([{'a': 1}, {'b': 2}],
                         cephops._json_arrays('[{"a": 1}]\n[{"b": 2}]\n'))
