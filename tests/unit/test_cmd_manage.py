"""nova-shared-cache status / fence, on the fake cluster.

This host's addresses are given (hostnet.local_addresses is mocked); how
they are read is tested in test_hostnet.py.
"""

import io
import ipaddress
import json
import os
from unittest import mock

from nova_shared_cache.cmd import common
from nova_shared_cache.cmd import fence as fence_cmd
from nova_shared_cache.cmd import manage
from nova_shared_cache.cmd import status as status_cmd
from nova_shared_cache import exception
from nova_shared_cache import hostnet
from tests.unit import base
from tests.unit import fakeceph

SPEC = base.RBD_CONNECTION_INFO['data']['name']
REMOTE = {'addr': '10.0.0.7:0/2041893277', 'id': 9001, 'cookie': 1}
LOCAL = {'addr': '192.0.2.10:0/1733355', 'id': 9002, 'cookie': 2}
HOST_ADDRESSES = frozenset({ipaddress.ip_address('192.0.2.10')})


class CliCase(base.TestCase):
    """A nova.conf for the fake cluster; this host's address is given."""

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
            'nova_shared_cache.cmd.common.local_domains_using',
            return_value=['instance-00000001']))
        self.addresses = self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.hostnet.local_addresses',
            return_value=HOST_ADDRESSES)).mock

    def ceph_conf_path(self):
        return base.sc_driver.CONF.shared_cache.ceph_conf

    def run_cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        rc = manage.main(['--config-file', self.nova_conf] + list(args),
                         out=out, err=err)
        return rc, out.getvalue(), err.getvalue()


class ManageTest(CliCase):

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
        self.assertEqual(float(fence_cmd.DEFAULT_EXPIRE), add['expire'])

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
        rc, out, err = self.run_cli('fence', SPEC)
        self.assertEqual((2, ''), (rc, out))
        self.assertIn('the following arguments are required: --client', err)
        self.assertIn('usage: nova-shared-cache fence', err)

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
            rc, out, err = self.run_cli('fence', SPEC, '--client',
                                        REMOTE['addr'], '--expire', value)
            self.assertEqual((2, ''), (rc, out))
            self.assertIn('--expire must be', err)
        self.assertEqual([], self.ceph.calls)

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


class InputCheckedFirstTest(CliCase):
    """Bad input is reported before anything connects to Ceph or libvirt."""

    def assert_nothing_asked(self):
        self.assertEqual([], self.ceph.calls)
        self.addresses.assert_not_called()

    def test_malformed_image_spec(self):
        # The cluster is down: a check after connecting would wait.
        self.ceph.down = True
        for spec in ('volumes', 'volumes/', '/img', 'a/b/c/d', 'a//c', '',
                     'volumes/img\n', 'vol\x00umes/img'):
            for args in (('status', spec), ('fence', spec, '--client',
                                            REMOTE['addr'])):
                with self.subTest(args=args):
                    rc, out, err = self.run_cli(*args)
                    self.assertEqual((2, ''), (rc, out))
                    self.assertIn('POOL/IMAGE is %r' % spec, err)
        self.assert_nothing_asked()

    def test_malformed_client_address(self):
        for address in ('10.0.0.7', '10.0.0.7:0', '10.0.0.7/1',
                        'v3:10.0.0.7:0/1', 'fd00::7:0/1', '[fd00::7:0/1',
                        '300.0.0.7:0/1', '10.0.0.7:65536/1',
                        '10.0.0.7:0/4294967296', '10.0.0.7:0/-1',
                        'client.4100', ''):
            for undo in ((), ('--undo',)):
                with self.subTest(address=address, undo=undo):
                    rc, out, err = self.run_cli('fence', SPEC, '--client',
                                                address, *undo)
                    self.assertEqual((2, ''), (rc, out))
                    self.assertIn('%r is not a Ceph client address'
                                  % address, err)
        self.assert_nothing_asked()

    def test_ceph_user_is_an_id(self):
        for user, expected in (('client.admin', '--ceph-user admin'),
                               ('', 'is not a Ceph user id'),
                               ('ad min', 'is not a Ceph user id')):
            with self.subTest(user=user):
                rc, _, err = self.run_cli('status', SPEC, '--ceph-user',
                                          user)
                self.assertEqual(2, rc)
                self.assertIn(expected, err)
        self.assert_nothing_asked()

    def test_bad_option_before_anything(self):
        with open(self.nova_conf, 'a') as f:
            f.write('cache_mode = writeback\n')
        rc, _, err = self.run_cli('fence', SPEC, '--client', REMOTE['addr'])
        self.assertEqual(2, rc)
        self.assertIn('[shared_cache] cache_mode', err)
        self.assert_nothing_asked()

    def test_fence_matches_the_address_whatever_its_prefix(self):
        rc, out, err = self.run_cli('fence', SPEC, '--client',
                                    'v1:' + REMOTE['addr'], '--json')
        self.assertEqual((0, ''), (rc, err))
        # Fenced as Ceph spells the client.
        self.assertEqual(REMOTE['addr'], json.loads(out)['client'])
        self.assertIn(REMOTE['addr'], self.ceph.blocklist)


class AddressesUnknownTest(CliCase):
    """Without this host's addresses nothing is taken for remote."""

    def setUp(self):
        super().setUp()
        self.addresses.side_effect = exception.LocalAddressesUnknown(
            reason='the addresses of this host are not readable (/proc)')

    def test_status_stops_before_ceph(self):
        rc, out, err = self.run_cli('status', SPEC)
        self.assertEqual((2, ''), (rc, out))
        self.assertIn("cannot tell this host's Ceph clients", err)
        self.assertIn('not readable (/proc)', err)
        self.assertEqual([], self.ceph.calls)

    def test_fence_stops_unless_forced(self):
        rc, out, err = self.run_cli('fence', SPEC, '--client', LOCAL['addr'])
        self.assertEqual((2, ''), (rc, out))
        self.assertIn("cannot tell this host's Ceph clients", err)
        self.assertIn('--force fences without this check', err)
        self.assertEqual(({}, []), (self.ceph.blocklist, self.ceph.calls))
        # --force does not need the addresses.
        calls = self.addresses.call_count
        rc, _, err = self.run_cli('fence', SPEC, '--client', REMOTE['addr'],
                                  '--force')
        self.assertEqual((0, ''), (rc, err))
        self.assertEqual(calls, self.addresses.call_count)
        self.assertIn(REMOTE['addr'], self.ceph.blocklist)

    def test_json_error(self):
        rc, out, _ = self.run_cli('status', SPEC, '--json')
        doc = json.loads(out)
        self.assertEqual((2, 2, 'error', 'status', 'LocalAddressesUnknown'),
                         (rc, doc['exit_code'], doc['meaning'],
                          doc['command'], doc['error_type']))
        self.assertIn('not readable (/proc)', doc['error'])


class JsonOutcomesTest(CliCase):
    """With --json stdout is exactly one JSON document, whatever happens."""

    def run_json(self, *args, expected_rc=2):
        rc, out, err = self.run_cli(*args)
        self.assertEqual(expected_rc, rc, err)
        doc = json.loads(out)       # one document, nothing else
        self.assertEqual(expected_rc, doc['exit_code'])
        self.assertEqual(manage.MEANINGS[expected_rc], doc['meaning'])
        return doc, err

    def test_success_documents_keep_their_keys(self):
        doc, _ = self.run_json('status', SPEC, '--json', expected_rc=0)
        self.assertEqual(SPEC, doc['image'])
        self.assertEqual({'ceph_user', 'exit_code', 'features', 'guard',
                          'image', 'local_domains', 'meaning',
                          'single_client_features', 'size', 'watchers'},
                         set(doc))
        # The CLI reference documents every key (and no other).
        optional = {'local_domains_error', 'names_error'}
        self.assertEqual(set(doc) - {'exit_code', 'meaning'},
                         set(status_cmd.JSON_KEYS) - optional)
        # Which user read the image, and where it was named.
        self.assertEqual({'user': 'cinder',
                          'from': '[shared_cache] ceph_user'},
                         doc['ceph_user'])
        # What nova-compute's guard can use here, never a key.
        self.assertEqual('keyring', doc['guard']['source'])
        self.assertNotIn('key', doc['guard'])
        doc, _ = self.run_json('fence', SPEC, '--client', REMOTE['addr'],
                               '--json', expected_rc=0)
        self.assertTrue(doc['fenced'])
        self.assertEqual(set(doc) - {'exit_code', 'meaning'},
                         set(fence_cmd.JSON_KEYS))

    def test_no_ceph_user_named_is_an_error_never_admin(self):
        with open(self.nova_conf, 'w') as f:
            f.write('[shared_cache]\nceph_conf = %s\n'
                    % self.ceph_conf_path())
        for args in (('status', SPEC, '--json'),
                     ('fence', SPEC, '--client', REMOTE['addr'], '--json')):
            with self.subTest(args=args):
                doc, err = self.run_json(*args)
                self.assertIn('no Ceph user is named: pass --ceph-user',
                              doc['error'])
        self.assertEqual([], self.ceph.calls)
        doc, _ = self.run_json('status', SPEC, '--json', '--ceph-user',
                               'admin', expected_rc=0)
        self.assertEqual({'user': 'admin', 'from': '--ceph-user'},
                         doc['ceph_user'])

    def test_usage_errors(self):
        for args, expected in (
                (('fence', SPEC, '--json'), 'arguments are required: '
                                            '--client'),
                (('fence', SPEC, '--client', REMOTE['addr'], '--expire',
                  'soon', '--json'), '--expire must be'),
                (('status', SPEC, '--json', '--bogus'),
                 'unrecognized arguments: --bogus'),
                (('statu', SPEC, '--json'), 'invalid choice'),
                (('--json',), 'required'),
                (('install-hook', '--json'), 'unrecognized arguments')):
            with self.subTest(args=args):
                doc, err = self.run_json(*args)
                self.assertIn(expected, doc['error'])
                self.assertEqual('UsageError', doc['error_type'])
                self.assertIn('usage:', doc['usage'])
                self.assertIn(expected, err)    # and the human text too

    def test_help(self):
        doc, _ = self.run_json('status', '--help', '--json', expected_rc=0)
        self.assertIn('usage: nova-shared-cache status', doc['help'])

    def test_config_errors(self):
        out, err = io.StringIO(), io.StringIO()
        rc = manage.main(['--config-file', '/nonexistent/nova.conf',
                          'status', SPEC, '--json'], out=out, err=err)
        doc = json.loads(out.getvalue())
        self.assertEqual((2, 2), (rc, doc['exit_code']))
        self.assertIn('/nonexistent/nova.conf', doc['error'])
        with open(self.nova_conf, 'a') as f:
            f.write('rbd_feature_policy = sometimes\n')
        doc, _ = self.run_json('status', SPEC, '--json')
        self.assertIn('[shared_cache] rbd_feature_policy', doc['error'])
        self.assertEqual('ConfigError', doc['error_type'])

    def test_input_errors(self):
        doc, _ = self.run_json('status', 'volumes', '--json')
        self.assertIn("POOL/IMAGE is 'volumes'", doc['error'])
        self.assertEqual('UsageError', doc['error_type'])
        doc, _ = self.run_json('fence', SPEC, '--client', 'x', '--undo',
                               '--json')
        self.assertEqual('BadClientAddress', doc['error_type'])

    def test_ceph_errors(self):
        doc, _ = self.run_json('fence', SPEC, '--client', '10.9.9.9:0/1',
                               '--json')
        self.assertIn('is not a client of', doc['error'])
        self.ceph.down = True
        doc, err = self.run_json('status', SPEC, '--json')
        self.assertIn('no answer within 4s', doc['error'])
        self.assertIn('no answer within 4s', err)
        self.assertEqual('CephError', doc['error_type'])

    def test_unexpected_error(self):
        with mock.patch('nova_shared_cache.cephops.image_status',
                        side_effect=KeyError('addr')):
            doc, err = self.run_json('status', SPEC, '--json')
        self.assertEqual("unexpected KeyError: 'addr'", doc['error'])
        self.assertNotIn('Traceback', err)

    def test_partial_output_is_dropped(self):
        def half_written(conf, out):
            out.write('{"image": ')
            raise exception.CephError(what='read', reason='gone')
        with mock.patch.object(status_cmd, 'run', half_written):
            doc, _ = self.run_json('status', SPEC, '--json')
        self.assertEqual('nova-shared-cache could not read: gone',
                         doc['error'])

    def test_interrupted(self):
        # (Not from inside a Ceph call: under Nova's test base eventlet runs
        # those in its thread pool, whose workers die on KeyboardInterrupt.)
        with mock.patch.object(status_cmd, 'run',
                               mock.Mock(side_effect=KeyboardInterrupt)):
            doc, _ = self.run_json('status', SPEC, '--json')
        self.assertEqual('interrupted', doc['error'])


class LocalDomainsTest(CliCase):
    """status when libvirt cannot say which local domains use the image."""

    def test_libvirt_down_is_a_warning_in_status(self):
        common.local_domains_using.side_effect = exception.LibvirtError(
            what='connect to libvirt at qemu:///system',
            reason='no answer within 30s')
        rc, out, err = self.run_cli('status', SPEC, '--json')
        self.assertEqual((0, ''), (rc, err))
        doc = json.loads(out)
        self.assertIsNone(doc['local_domains'])
        self.assertIn('no answer within 30s', doc['local_domains_error'])
        rc, out, _ = self.run_cli('status', SPEC)
        self.assertIn('WARNING:   local domains unknown: ', out)
        self.assertIn('this host (no local domain uses it)', out)


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
