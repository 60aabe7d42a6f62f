"""POST/DELETE /servers/{id}/os-volume_attachments: server add/remove volume.

``openstack server add volume`` is this API. Nothing in the request says
"shared": the extension recognises the volume from the connection_info
Cinder returns.
"""

from nova.tests.functional.api import client

from tests.functional import base
from tests.unit import fakeceph


class AttachSharedVolumeTest(base.SharedCacheFunctionalTest):

    def setUp(self):
        super().setUp()
        self.start_compute()
        self.servers = [self._create_server(networks='none')
                        for _ in range(2)]

    def test_two_servers_get_shareable_directsync(self):
        for server in self.servers:
            self.attach(server, self.cinder.SHARED_VOL)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=2)
        self.assert_root_disks_untouched()

    def test_detach_then_attach_again(self):
        for server in self.servers:
            self.attach(server, self.cinder.SHARED_VOL)
        self.forget_sent()
        self.detach(self.servers[0], self.cinder.SHARED_VOL)
        # Nova detaches the disk libvirt reports (from the persistent and
        # the live definition); its XML is the shared one.
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL))
        remaining = self.cinder.attachment_ids_for_instance(
            self.servers[1]['id'])
        self.assertEqual(1, len(remaining))
        self.assertEqual([], self.cinder.attachment_ids_for_instance(
            self.servers[0]['id']))

        self.forget_sent()
        self.attach(self.servers[0], self.cinder.SHARED_VOL)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=1)

    def test_only_shared_volumes_of_enabled_backends_change(self):
        """Non-RBD multiattach and non-multiattach RBD keep Nova's XML."""
        server = self.servers[0]
        for volume in (self.cinder.SHARED_VOL, self.cinder.SHARED_ISCSI_VOL,
                       self.cinder.PLAIN_RBD_VOL):
            self.attach(server, volume)

        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=1)
        # iSCSI is not an enabled backend (enabled_backends = rbd): Nova's
        # own rule for multiattach disks, shareable with cache none.
        iscsi = [d for d in self.all_disks_sent()
                 if d.get('type') == 'block']
        self.assertEqual(1, len(iscsi))
        self.assertIsNotNone(iscsi[0].find('shareable'))
        self.assertEqual('none', iscsi[0].find('driver').get('cache'))
        # A volume attached to one server only: disk_cachemodes decides.
        self.assert_not_shared(self.disks_sent(self.cinder.PLAIN_RBD_VOL))
        self.assert_root_disks_untouched()


class CacheNoneAttachTest(base.SharedCacheFunctionalTest):
    """The default cache_mode, none.

    Upstream Nova already makes multiattach disks shareable with cache none,
    so this passes with stock Nova too: it guards that the extension keeps
    that, not that it adds it.
    """

    CACHE_MODE = 'none'

    def test_two_servers_get_shareable_none(self):
        self.start_compute()
        servers = [self._create_server(networks='none') for _ in range(2)]
        for server in servers:
            self.attach(server, self.cinder.SHARED_VOL)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=2)
        self.assert_root_disks_untouched()


class StockNovaAttachTest(base.SharedCacheFunctionalTest):
    """The same request without the extension.

    Nova's 'none', never the configured directsync: the tests above would
    see the difference.
    """

    EXTENSION = False

    def test_stock_nova_ignores_cache_mode(self):
        self.start_compute()
        servers = [self._create_server(networks='none') for _ in range(2)]
        for server in servers:
            self.attach(server, self.cinder.SHARED_VOL)
        disks = self.disks_sent(self.cinder.SHARED_VOL)
        self.assertEqual(2, len(disks))
        self.assert_shared(disks, cache_mode='none')


class CephGuardThroughTheApiTest(base.SharedCacheFunctionalTest):
    """The Ceph-side guard as the API user sees it."""

    def setUp(self):
        super().setUp()
        self.start_compute()
        self.server = self._create_server(networks='none')
        self.image = base.rbd_name(self.cinder.SHARED_VOL)

    def test_single_client_features_cleared_before_the_attach(self):
        self.ceph.add_image(self.image, features=fakeceph.DEFAULT_FEATURES)
        self.attach(self.server, self.cinder.SHARED_VOL)
        self.assertEqual(fakeceph.LAYERING | fakeceph.DEEP_FLATTEN,
                         self.ceph.features(self.image))
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=1)

    def test_refused_attach_leaves_the_server_untouched(self):
        self.flags(rbd_feature_policy='refuse', group='shared_cache')
        self.restart_compute_service('compute1')
        self.ceph.add_image(self.image, features=fakeceph.DEFAULT_FEATURES)
        self.forget_sent()
        # Nova's functional stack turns RPC casts into calls, so the
        # compute's failure reaches the API caller as a 500 here; in a
        # deployment the request is accepted and the attach then fails.
        self.assertRaises(
            client.OpenStackApiException, self.api.post_server_volume,
            self.server['id'],
            {'volumeAttachment': {'volumeId': self.cinder.SHARED_VOL}})
        self.assertIn('refused by nova-shared-cache: [shared_cache] '
                      'rbd_feature_policy = refuse: the image has '
                      'single-client features exclusive-lock',
                      self.stdlog.logger.output)
        # Nova rolled the attachment back; the domain was never touched.
        self.assertEqual([], self.api.get_server_volumes(self.server['id']))
        self.assertEqual([], self.cinder.attachment_ids_for_instance(
            self.server['id']))
        self.assertEqual([], self.disks_sent(self.cinder.SHARED_VOL))
        self.assertEqual(fakeceph.DEFAULT_FEATURES,
                         self.ceph.features(self.image))
        self.assertEqual('ACTIVE',
                         self.api.get_server(self.server['id'])['status'])


class CephUnreachableThroughTheApiTest(base.SharedCacheFunctionalTest):
    """Ceph down: what runs goes on, warn attaches, enforce refuses new."""

    def setUp(self):
        super().setUp()
        self.start_compute()
        self.server = self._create_server(networks='none')

    def test_warn_attaches_with_ceph_unreachable(self):
        self.flags(rbd_feature_policy='warn', sharing_guard='warn',
                   group='shared_cache')
        self.restart_compute_service('compute1')
        self.ceph.down = True
        self.attach(self.server, self.cinder.SHARED_VOL)
        self.assertIn('was not checked by nova-shared-cache',
                      self.stdlog.logger.output)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=1)

    def test_enforce_refuses_a_new_attach_with_ceph_unreachable(self):
        self.ceph.down = True
        self.forget_sent()
        self.assertRaises(
            client.OpenStackApiException, self.api.post_server_volume,
            self.server['id'],
            {'volumeAttachment': {'volumeId': self.cinder.SHARED_VOL}})
        self.assertIn('the Ceph-side check could not run',
                      self.stdlog.logger.output)
        self.assertEqual([], self.api.get_server_volumes(self.server['id']))
        self.assertEqual([], self.disks_sent(self.cinder.SHARED_VOL))

    def test_hard_reboot_under_enforce_with_ceph_unreachable(self):
        self.attach(self.server, self.cinder.SHARED_VOL)
        self.ceph.down = True
        self.forget_sent()
        self._reboot_server(self.server, hard=True)
        self.assertEqual('ACTIVE',
                         self.api.get_server(self.server['id'])['status'])
        self.assertIn('reconnect of an existing attachment',
                      self.stdlog.logger.output)
        self.assert_shared(self.disks_sent(self.cinder.SHARED_VOL), count=1)
