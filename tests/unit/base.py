"""Base class for unit tests: Nova's own test base with fake libvirt."""

import copy
import os

import fixtures

from nova.compute import utils as compute_utils
from nova import context as nova_context
from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import fake_instance
from nova.virt import fake
from nova.virt.libvirt import driver as libvirt_driver

from nova_shared_cache import compat
from nova_shared_cache import driver as sc_driver
from nova_shared_cache import exception
from tests import compat as compat_mixin
from tests.unit import fakeceph

SECRET_UUID = 'c9b1bd6c-7c6f-4f0e-a8b1-8d0e0c0a0b0c'
VOLUME_ID = '5d0b2b3e-1b8f-4c4e-9f55-5a1d2f8e6c01'
# Cinder's RBD driver can put the client keyring into connection_info
# (rbd_keyring_conf); it must never reach a log line.
KEYRING_SECRET = 'AQBjk3RpAAAAABAAnotarealkeybutsecretH0Q=='

RBD_CONNECTION_INFO = {
    'driver_volume_type': 'rbd',
    'serial': VOLUME_ID,
    'multiattach': True,
    'data': {
        'name': 'volumes/volume-%s' % VOLUME_ID,
        'hosts': ['127.0.0.1'],
        'ports': ['3300'],
        'cluster_name': 'ceph',
        'auth_enabled': True,
        'auth_username': 'cinder',
        'secret_type': 'ceph',
        'secret_uuid': SECRET_UUID,
        'volume_id': VOLUME_ID,
        'discard': True,
        'keyring': KEYRING_SECRET,
    },
}

ISCSI_CONNECTION_INFO = {
    'driver_volume_type': 'iscsi',
    'serial': VOLUME_ID,
    'multiattach': True,
    'data': {
        'target_portal': '127.0.0.1:3260',
        'target_iqn': 'iqn.2010-10.org.openstack:volume-%s' % VOLUME_ID,
        'target_lun': 1,
        'volume_id': VOLUME_ID,
        'device_path': '/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-lun-1',
    },
}

DISK_INFO = {'bus': 'virtio', 'dev': 'vdb', 'type': 'disk'}


def connection_info(base=RBD_CONNECTION_INFO, **overrides):
    info = copy.deepcopy(base)
    data = overrides.pop('data', {})
    info.update(overrides)
    info['data'].update(data)
    return info


def make_instance():
    instance = fake_instance.fake_instance_obj(
        nova_context.get_admin_context())
    instance.system_metadata = {}
    return instance


def volume_config(drv, info, disk_info=None, instance=None):
    """Call drv._get_volume_config the way this Nova release does."""
    disk_info = dict(DISK_INFO) if disk_info is None else disk_info
    params = compat.positional_parameters(
        libvirt_driver.LibvirtDriver._get_volume_config)
    if 'instance' in params:    # Nova 30 to 33
        return drv._get_volume_config(instance or make_instance(), info,
                                      disk_info)
    return drv._get_volume_config(info, disk_info)


class TestCase(compat_mixin.KeepTestMethodMixin, test.NoDBTestCase):

    def assertRefused(self, call, *args, **kwargs):
        """``call`` refuses the attach, and the API user can tell why.

        What Nova shows in ``server event show`` is its own rendering of
        the error, cut at 255 characters: the volume and the option that
        decided must be in it.
        """
        err = self.assertRaises(exception.AttachRefused, call, *args,
                                **kwargs)
        shown = compute_utils.exception_to_dict(err)['message']
        self.assertIn(err.kwargs['volume_id'], shown)
        self.assertRegex(shown, r'\[shared_cache\] (rbd_feature_policy|'
                                r'sharing_guard) = (enforce|refuse)')
        return err

    def setUp(self):
        super().setUp()
        self.useFixture(nova_fixtures.LibvirtFixture())
        # The Ceph-side guard talks to a fake cluster holding the volume of
        # RBD_CONNECTION_INFO as Cinder makes it for a multiattach type.
        ceph_dir = self.useFixture(fixtures.TempDir()).path
        ceph_conf = os.path.join(ceph_dir, 'ceph.conf')
        with open(ceph_conf, 'w') as f:
            f.write('[global]\nmon host = 127.0.0.1\n'
                    'keyring = %s/ceph.$name.keyring\n' % ceph_dir)
        for user in ('cinder', 'nova', 'admin'):
            fakeceph.write_keyring(ceph_dir, user)
        self.ceph_dir = ceph_dir
        self.ceph = self.useFixture(
            fakeceph.FakeCephFixture(ceph_conf)).cluster
        # What a ceph.conf said is kept while the file is unchanged: not
        # from one test to the next.
        self.useFixture(fixtures.MonkeyPatch(
            'nova_shared_cache.cephauth._CONF_KEYRINGS', {}))
        self.ceph.add_image(RBD_CONNECTION_INFO['data']['name'])
        self.flags(ceph_conf=ceph_conf, group='shared_cache')

    def shared_cache_flags(self, **kwargs):
        self.flags(group='shared_cache', **kwargs)

    def make_driver(self):
        return sc_driver.LibvirtSharedCacheDriver(fake.FakeVirtAPI(), False)

    def make_stock_driver(self):
        return libvirt_driver.LibvirtDriver(fake.FakeVirtAPI(), False)
