"""The RBD backend's Ceph-side guard, on a fake cluster.

The same behaviours are tested against a real cluster in
tests/integration/test_rbd_guard.py.
"""

import os
import shutil
from unittest import mock

from nova_shared_cache.backends import rbd
from nova_shared_cache import cephclient
from nova_shared_cache import driver as sc_driver
from tests.unit import base
from tests.unit import fakeceph

SPEC = base.RBD_CONNECTION_INFO['data']['name']
OTHER = {'addr': '10.0.0.7:0/2041893277', 'id': 9001, 'cookie': 1}


class GuardTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.instance = base.make_instance()

    def backend(self):
        return rbd.RbdBackend(sc_driver.CONF)

    def connect(self, shared=True, new_attachment=True, info=None):
        info = info or base.connection_info(multiattach=shared)
        self.backend().on_connect(None, info, self.instance, shared=shared,
                                  new_attachment=new_attachment)

    def updates(self):
        return [c for c in self.ceph.calls if c[0] == 'update_features']

    # -- single-client features of a shared volume ----------------------

    def test_cinder_multiattach_image_passes_untouched(self):
        self.connect()
        self.assertEqual([], self.updates())
        # Read from the header object: the id, then one omap key; the
        # image itself is never opened.
        image_id = self.ceph.images[SPEC]['id']
        pool, name = SPEC.split('/')
        self.assertEqual(
            [('read', pool, '', 'rbd_id.' + name),
             ('omap', pool, '', 'rbd_header.' + image_id)],
            [c for c in self.ceph.calls if c[0] in ('read', 'omap', 'open')])
        self.assertEqual(fakeceph.CINDER_MULTIATTACH, self.ceph.features(SPEC))

    def test_an_image_without_format_2_objects_is_opened_instead(self):
        # No rbd_id object (a format-1 image): librbd decides.
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES,
                            header=False)
        self.connect()
        self.assertEqual(('open', SPEC, True),
                         [c for c in self.ceph.calls if c[0] == 'open'][0])
        self.assertEqual(fakeceph.CINDER_MULTIATTACH, self.ceph.features(SPEC))

    def test_a_header_that_does_not_read_as_expected_opens_the_image(self):
        from nova_shared_cache import cephops
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        real = self.ceph.objects
        for broken in ({'features': b'\x01'}, {}):
            def objects(pool, namespace, broken=broken):
                found = dict(real(pool, namespace))
                header = 'rbd_header.' + self.ceph.images[SPEC]['id']
                found[header] = (b'', broken)
                return found
            with mock.patch.object(self.ceph, 'objects', objects):
                ref = cephops.parse_image_spec(SPEC)
                cluster = self.ceph.rados.Rados(rados_id='cinder')
                self.assertIsNone(cephops.header_features(cluster, ref))
        for bad_id in (b'', b'\x09\x00\x00\x00abc',
                       b'\x02\x00\x00\x00\xff\xfe'):
            def objects(pool, namespace, bad_id=bad_id):
                found = dict(real(pool, namespace))
                found['rbd_id.' + SPEC.split('/')[1]] = (bad_id, {})
                return found
            with mock.patch.object(self.ceph, 'objects', objects):
                self.assertIsNone(cephops.header_features(cluster, ref))
        # And the guard still checks such an image, by opening it.
        with mock.patch.object(self.ceph, 'objects', lambda p, n: {}):
            self.connect()
        self.assertIn(('open', SPEC, True), self.ceph.calls)
        self.assertEqual(fakeceph.CINDER_MULTIATTACH, self.ceph.features(SPEC))

    def test_enforce_clears_single_client_features(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        self.connect()
        self.assertEqual(fakeceph.LAYERING | fakeceph.DEEP_FLATTEN,
                         self.ceph.features(SPEC))
        log = self.stdlog.logger.output
        self.assertIn('Cleared single-client RBD features exclusive-lock, '
                      'object-map, fast-diff of image %s' % SPEC, log)
        self.assertIn(base.VOLUME_ID, log)

    def test_enforce_is_idempotent_when_another_compute_wins_the_race(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        real_image = self.ceph.rbd.Image

        def racing_image(ioctx, name, read_only=False):
            image = real_image(ioctx, name, read_only=read_only)
            if not read_only:
                # The other compute clears them between our read and write.
                self.ceph.images[SPEC]['features'] = (
                    fakeceph.CINDER_MULTIATTACH | fakeceph.EXCLUSIVE_LOCK)
                image.features = lambda: self.ceph.images[SPEC]['features']
                cleared = fakeceph.CINDER_MULTIATTACH

                def update(mask, enabled):
                    self.ceph.images[SPEC]['features'] = cleared
                    raise self.ceph.rbd.InvalidArgument('already disabled')
                image.update_features = update
            return image

        with mock.patch.object(self.ceph.rbd, 'Image', racing_image):
            self.connect()
        self.assertEqual(fakeceph.CINDER_MULTIATTACH, self.ceph.features(SPEC))

    def test_refuse_names_volume_image_and_features(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES
                            | fakeceph.JOURNALING)
        self.flags(rbd_feature_policy='refuse', group='shared_cache')
        err = self.assertRefused(self.connect)
        for text in (base.VOLUME_ID, SPEC, 'exclusive-lock, object-map, '
                     'fast-diff, journaling', 'rbd_feature_policy = refuse',
                     self.instance.uuid):
            self.assertIn(text, str(err))
        self.assertEqual([], self.updates())

    def test_warn_logs_and_changes_nothing(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        self.flags(rbd_feature_policy='warn', group='shared_cache')
        self.connect()
        self.assertEqual([], self.updates())
        self.assertIn('has single-client RBD features exclusive-lock',
                      self.stdlog.logger.output)

    def test_user_without_write_caps_is_named(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        self.ceph.read_only_users.add('cinder')
        err = self.assertRefused(self.connect)
        self.assertIn('client.cinder may not change', str(err))
        self.assertIn("'osd profile rbd pool=volumes'", str(err))
        self.assertEqual(fakeceph.DEFAULT_FEATURES, self.ceph.features(SPEC))

    # -- another client on a volume that is not multiattach ---------------

    def test_foreign_watcher_refused_by_default(self):
        self.ceph.add_image(SPEC, watchers=[OTHER])
        err = self.assertRefused(self.connect, shared=False)
        self.assertIn('client.9001 at 10.0.0.7:0/2041893277', str(err))
        self.assertIn('not multiattach', str(err))

    def test_foreign_watcher_warned(self):
        self.ceph.add_image(SPEC, watchers=[OTHER])
        self.flags(sharing_guard='warn', group='shared_cache')
        self.connect(shared=False)
        self.assertIn('already open by client.9001',
                      self.stdlog.logger.output)

    def test_guard_off_does_not_touch_ceph(self):
        self.ceph.add_image(SPEC, watchers=[OTHER])
        self.flags(sharing_guard='off', group='shared_cache')
        self.connect(shared=False)
        self.assertEqual([], self.ceph.calls)

    def test_reconnect_of_an_attachment_is_not_checked(self):
        # Hard reboot, migration...: the other client may be this
        # instance's previous QEMU.
        self.ceph.add_image(SPEC, watchers=[OTHER])
        self.connect(shared=False, new_attachment=False)
        self.assertEqual([], self.ceph.calls)

    def test_own_watch_is_not_another_client(self):
        self.connect(shared=False)     # connects; learn our instance id
        own = self.backend().client(base.connection_info())
        own_id = own._connection.cluster.get_instance_id()
        self.ceph.add_image(SPEC, watchers=[{'addr': '127.0.0.1:0/1',
                                             'id': own_id, 'cookie': 2}])
        self.connect(shared=False)

    # -- the connection ---------------------------------------------------

    def test_one_connection_reused_with_bounded_client_options(self):
        for _ in range(3):
            self.connect()
        self.assertEqual(1, self.ceph.connects)
        [(_, user, options)] = [c for c in self.ceph.calls
                                if c[0] == 'connect']
        self.assertEqual('cinder', user)
        self.assertEqual({'client_mount_timeout': '10',
                          'rados_mon_op_timeout': '10',
                          'rados_osd_op_timeout': '10',
                          # The volume's own monitors, from connection_info.
                          'mon_host': '127.0.0.1:3300'}, options)

    def test_cluster_down_is_a_clear_error_then_reconnects(self):
        self.flags(ceph_timeout=3, group='shared_cache')
        self.ceph.down = True
        err = self.assertRefused(self.connect)
        self.assertIn('no answer within 3s ([shared_cache] ceph_timeout)',
                      str(err))
        self.assertIn('client.cinder', str(err))
        self.assertIn(base.VOLUME_ID, str(err))
        self.assertIn('rbd_feature_policy = enforce refuses new attachments '
                      'it cannot check', str(err))
        self.ceph.down = False
        self.connect()
        self.assertEqual(1, self.ceph.connects)

    def test_error_on_a_live_connection_drops_it(self):
        self.connect()
        self.ceph.down = True
        err = self.assertRefused(self.connect)
        self.assertIn('inspect RBD image %s' % SPEC, str(err))
        self.ceph.down = False
        self.connect()
        self.assertEqual(2, self.ceph.connects)

    def test_missing_ceph_conf_named(self):
        self.flags(ceph_conf='/nonexistent/ceph.conf', group='shared_cache')
        err = self.assertRefused(self.connect)
        self.assertIn('/nonexistent/ceph.conf does not exist', str(err))
        self.assertIn('ceph_conf', str(err))
        # and what to configure instead
        self.assertIn("define libvirt secret %s with private='no'"
                      % base.SECRET_UUID, str(err))

    def test_missing_bindings_named(self):
        with mock.patch.object(cephclient, 'rbd', None):
            err = self.assertRefused(self.connect)
        self.assertIn('python3-rbd', str(err))

    def test_bad_image_name_named(self):
        info = base.connection_info(data={'name': 'no-pool'})
        err = self.assertRefused(self.connect, info=info)
        self.assertIn("'no-pool'", str(err))

    def test_image_in_an_rbd_namespace_is_found_and_fixed(self):
        # pool/namespace/image, as libvirt and QEMU name such an image.
        spec = 'volumes/tenant-a/volume-ns'
        self.ceph.add_image(spec, features=fakeceph.DEFAULT_FEATURES)
        self.ceph.add_image('volumes/volume-ns')    # same name, no namespace
        self.connect(info=base.connection_info(data={'name': spec}))
        # Read in the namespace's objects, then opened to be cleared.
        self.assertIn(('read', 'volumes', 'tenant-a', 'rbd_id.volume-ns'),
                      self.ceph.calls)
        self.assertEqual([('open', spec, False)],
                         [c for c in self.ceph.calls if c[0] == 'open'])
        self.assertEqual(fakeceph.LAYERING | fakeceph.DEEP_FLATTEN,
                         self.ceph.features(spec))
        self.assertEqual(fakeceph.CINDER_MULTIATTACH,
                         self.ceph.features('volumes/volume-ns'))

    def test_too_many_parts_named(self):
        info = base.connection_info(data={'name': 'a/b/c/d'})
        err = self.assertRefused(self.connect, info=info)
        self.assertIn("'a/b/c/d'", str(err))
        self.assertIn('POOL/NAMESPACE/IMAGE', str(err))

    def test_service_watchers_are_named_and_ignored(self):
        self.flags(sharing_guard='refuse', group='shared_cache')
        mirror = {'addr': '10.0.0.8:0/77', 'id': 4301, 'cookie': 1}
        rbd_support = {'addr': '10.0.0.9:0/526070907', 'id': 4113,
                       'cookie': 2}
        self.ceph.sessions = {4301: 'client.rbd-mirror.site-a'}
        self.ceph.mgr_clients = [{'name': 'rbd_support', 'addrvec': [
            {'type': 'v2', 'addr': '10.0.0.9:0', 'nonce': 526070907}]}]
        self.ceph.add_image(SPEC, watchers=[mirror, rbd_support])
        self.connect(shared=False)      # both ignored by default
        log = self.stdlog.logger.output
        self.assertIn('not counting client.4301 at 10.0.0.8:0/77 '
                      '(client.rbd-mirror.site-a', log)
        self.assertIn('(mgr.x, module rbd_support', log)
        # Anyone else is counted, named.
        self.ceph.sessions[4302] = 'client.backup'
        self.ceph.add_image(SPEC, watchers=[
            mirror, {'addr': '10.0.0.7:0/5', 'id': 4302, 'cookie': 3}])
        err = self.assertRefused(self.connect, shared=False)
        self.assertIn('client.4302 at 10.0.0.7:0/5 (client.backup)',
                      str(err))
        self.assertNotIn('4301', str(err))
        # An empty list counts every watcher.
        self.flags(ignored_watchers=[], group='shared_cache')
        self.ceph.add_image(SPEC, watchers=[mirror])
        err = self.assertRefused(self.connect, shared=False)
        self.assertIn('client.4301', str(err))

    def test_odd_monitor_replies_never_break_the_check(self):
        from nova_shared_cache import cephops
        watchers = [{'address': '10.0.0.8:0/77', 'client': 'client.4301'},
                    {'address': None, 'client': None}]
        for reply in (b'{"x": 1}', b'[1, "a", null]', b'not json',
                      b'{"active_clients": [1, {"addrvec": "x"}]}',
                      b'{"mons": null}', b'[{"global_id": "x"}]'):
            cluster = mock.Mock()
            cluster.mon_command.return_value = (0, reply, '')
            problems = cephops.watcher_names(cluster, watchers)
            self.assertEqual([None, None], [w['name'] for w in watchers])
            self.assertIsInstance(problems, list)
        cluster.mon_command.side_effect = RuntimeError('binding broke')
        self.assertIn("'mgr dump': RuntimeError: binding broke",
                      cephops.watcher_names(cluster, watchers))

    def test_unnamed_watchers_are_counted_and_the_cap_named(self):
        self.ceph.denied = {'sessions', 'mgr dump'}
        self.ceph.sessions = {4301: 'client.rbd-mirror.site-a'}
        self.ceph.add_image(SPEC, watchers=[
            {'addr': '10.0.0.8:0/77', 'id': 4301, 'cookie': 1}])
        err = self.assertRefused(self.connect, shared=False)
        self.assertIn('client.4301 at 10.0.0.8:0/77', str(err))
        self.assertIn("its Ceph name is unknown", str(err))
        self.assertIn("'sessions' on mon.a: access denied", str(err))
        self.assertIn("give client.cinder mon caps 'allow command sessions'",
                      str(err))
        # Nobody else has it open: no monitor command at all.
        self.ceph.calls.clear()
        self.ceph.add_image(SPEC, watchers=[])
        self.connect(shared=False)
        self.assertEqual([], [c for c in self.ceph.calls
                              if c[0] == 'mon_command'])

    def test_mon_host_from_connection_info(self):
        mon_host = rbd.RbdBackend.mon_host
        self.assertEqual('10.0.0.1:3300,[fd00::2]:3300', mon_host(
            {'data': {'hosts': ['10.0.0.1', 'fd00::2'],
                      'ports': ['3300', '3300']}}))
        self.assertEqual('10.0.0.1', mon_host(
            {'data': {'hosts': ['10.0.0.1'], 'ports': []}}))
        self.assertIsNone(mon_host({'data': {}}))
        self.assertIsNone(mon_host(
            {'data': {'hosts': ['a', 'b'], 'ports': ['1']}}))

    def test_unreadable_ceph_conf_named(self):
        def broken(*args, **kwargs):
            raise self.ceph.rados.InvalidArgument('error calling '
                                                  'conf_read_file')
        with mock.patch.object(self.ceph.rados, 'Rados', broken):
            err = self.assertRefused(self.connect)
        self.assertIn('read %s' % self.backend().settings.ceph_conf,
                      str(err))

    def test_missing_key_named(self):
        def no_key(rados_self, timeout=0):
            raise self.ceph.rados.ObjectNotFound('error connecting to the '
                                                 'cluster')
        with mock.patch.object(self.ceph.rados.Rados, 'connect', no_key):
            err = self.assertRefused(self.connect)
        self.assertIn('no usable key for client.cinder', str(err))

    def test_ceph_refusing_to_clear_is_reported_with_its_reason(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        real_image = self.ceph.rbd.Image

        def stubborn_image(ioctx, name, read_only=False):
            image = real_image(ioctx, name, read_only=read_only)

            def refuse(mask, enabled):
                raise self.ceph.rbd.InvalidArgument('mirroring is enabled')
            image.update_features = refuse
            return image

        with mock.patch.object(self.ceph.rbd, 'Image', stubborn_image):
            err = self.assertRefused(self.connect)
        self.assertIn('still set after clearing them', str(err))
        self.assertIn('mirroring is enabled', str(err))

    def test_a_volume_of_another_cluster_is_read_with_its_files(self):
        # Cinder's rbd_cluster_name = backup: /etc/ceph/backup.conf and
        # backup.client.cinder.keyring, as the Ceph tools name them.
        backup_conf = os.path.join(self.ceph_dir, 'backup.conf')
        with open(backup_conf, 'w') as f:
            f.write('[global]\nmon host = 10.0.0.9\n'
                    'keyring = %s/$cluster.$name.keyring\n' % self.ceph_dir)
        keyring = os.path.join(self.ceph_dir, 'backup.client.cinder.keyring')
        shutil.copy(fakeceph.write_keyring(self.ceph_dir, 'cinder'), keyring)
        info = base.connection_info(data={'cluster_name': 'backup'})
        backend = self.backend()
        credentials = backend.credentials(info)
        self.assertEqual(('keyring', 'backup', backup_conf),
                         (credentials.source, credentials.cluster,
                          credentials.conffile))
        self.assertIn('backup.client.cinder.keyring', credentials.detail)
        self.connect(info=info)
        self.assertEqual([('backup', backup_conf)], self.ceph.clusters)
        # The default cluster's volume gets its own connection.
        self.connect()
        self.assertEqual(('ceph', backend.settings.ceph_conf),
                         self.ceph.clusters[-1])
        self.assertEqual(2, self.ceph.connects)

    def test_a_cluster_without_its_files_is_named(self):
        info = base.connection_info(data={'cluster_name': 'backup',
                                          'secret_uuid': None})
        self.flags(rbd_secret_uuid=None, group='libvirt')
        err = self.assertRefused(self.connect, info=info)
        self.assertIn('%s/backup.conf does not exist ([shared_cache] '
                      'ceph_conf, for Ceph cluster backup)' % self.ceph_dir,
                      str(err))
        for bad in ('../etc', 'a b', ''):
            info = base.connection_info(data={'cluster_name': bad or None})
            if bad:
                err = self.assertRefused(self.connect, info=info)
                self.assertIn("'cluster_name' is %r" % bad, str(err))
            else:
                self.connect(info=info)     # none: the default cluster

    def test_ceph_user_chosen_like_nova(self):
        backend = self.backend()
        info = base.connection_info()
        self.assertEqual('cinder', backend.ceph_user(info))
        del info['data']['auth_username']
        self.flags(rbd_user='nova', group='libvirt')
        self.assertEqual('nova', backend.ceph_user(info))
        self.flags(ceph_user='guard', group='shared_cache')
        self.assertEqual('guard', self.backend().ceph_user(info))

    def test_no_secret_in_logs_or_errors(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        self.connect()
        self.flags(rbd_feature_policy='refuse', group='shared_cache')
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES)
        err = self.assertRefused(self.connect)
        self.assertNotIn(base.KEYRING_SECRET, str(err))
        self.assertNotIn(base.KEYRING_SECRET, self.stdlog.logger.output)


class DriverPassesAttachKindTest(base.TestCase):
    """attach/swap/spawn are new attachments; other connects are not."""

    def test_attach_volume_is_new_and_storage_config_is_not(self):
        drv = self.make_driver()
        seen = []
        backend = drv._shared_backends[0]
        with mock.patch.object(
                backend, 'on_connect',
                side_effect=lambda *a, **kw: seen.append(
                    kw['new_attachment'])), \
                mock.patch.object(drv, '_get_volume_driver'):
            with sc_driver._scope(sc_driver._NEW_ATTACHMENT, True):
                drv._connect_volume(None, base.connection_info(),
                                    base.make_instance())
            drv._connect_volume(None, base.connection_info(),
                                base.make_instance())
        self.assertEqual([True, False], seen)

    def test_entry_points_mark_new_attachments(self):
        drv = self.make_driver()
        instance = base.make_instance()
        calls = {
            'attach_volume': lambda: drv.attach_volume(
                None, {}, instance, '/dev/vdb'),
            'swap_volume': lambda: drv.swap_volume(
                None, {}, {}, instance, '/dev/vdb', 0),
            'spawn': lambda: drv.spawn(None, instance, None, None, None,
                                       None),
        }
        seen = {}
        for name, call in calls.items():
            def record(*args, _name=name, **kwargs):
                seen[_name] = sc_driver._NEW_ATTACHMENT.get()

            with mock.patch.object(sc_driver.libvirt_driver.LibvirtDriver,
                                   name, record):
                call()
        self.assertEqual({'attach_volume': True, 'swap_volume': True,
                          'spawn': True}, seen)
        self.assertFalse(sc_driver._NEW_ATTACHMENT.get())
