"""The Ceph-side guard on real Cinder volumes, through the real API.

A Cinder multiattach volume (Cinder cleared the single-client features at
create) attaches untouched. An image whose features were set back
(``rbd feature enable ... exclusive-lock``) has them cleared at attach under
the default ``rbd_feature_policy = enforce``, and is refused under
``refuse``: the attach fails with the guard's message in the server's
events, the volume goes back to available, the image is not changed and
the server keeps running.
"""

import pytest

from nova_shared_cache_lab import cloud as cloud_mod

from tests.cloud import conftest

SINGLE_CLIENT = {'exclusive-lock', 'object-map', 'fast-diff', 'journaling'}


def image_spec(volume):
    return 'volumes/volume-%s' % volume


def features(volume):
    ceph = cloud_mod.Cloud().stack.ceph
    return set(ceph.image_info(image_spec(volume))['features'])


@pytest.fixture
def server(cloud, guest_image):
    server = cloud.create_server(conftest.unique('guard'), '--image',
                                 guest_image)
    yield server
    cloud.delete_servers(server)


def _volume(cloud, request):
    volume = cloud.create_volume(conftest.unique('guarded'))
    request.addfinalizer(lambda: cloud.delete_volumes(volume))
    return volume


def test_cinder_multiattach_volume_attaches_untouched(
        cloud, server, volume_type, request):
    cloud.configure('extension', {})
    volume = _volume(cloud, request)
    before = features(volume)
    assert not before & SINGLE_CLIENT, before
    cloud.attach(server, volume)
    assert features(volume) == before
    disk = conftest.volume_disk(cloud.domain_xml(server), volume)
    assert conftest.is_shareable(disk)
    assert conftest.disk_cache(disk) == 'none'
    cloud.detach(server, volume)


def test_features_set_back_are_cleared_at_attach(
        cloud, server, volume_type, request):
    cloud.configure('extension', {})
    volume = _volume(cloud, request)
    cloud_mod.Cloud().stack.ceph.rbd('feature', 'enable', image_spec(volume),
                                     'exclusive-lock')
    assert 'exclusive-lock' in features(volume)
    cloud.attach(server, volume)
    assert not features(volume) & SINGLE_CLIENT
    cloud.detach(server, volume)


def test_refuse_policy_refuses_the_attach_with_its_message(
        cloud, server, volume_type, request):
    cloud.configure('extension',
                    {'shared_cache': {'rbd_feature_policy': 'refuse'}})
    volume = _volume(cloud, request)
    cloud_mod.Cloud().stack.ceph.rbd('feature', 'enable', image_spec(volume),
                                     'exclusive-lock')
    # The API accepts the request; the compute refuses it.
    cloud.openstack('server', 'add', 'volume', server, volume)

    def failed_event():
        for action in cloud.openstack('server', 'event', 'list', server,
                                      admin=True):
            if action['Action'] != 'attach_volume':
                continue
            # Nova's default policy shows an event's details (not only
            # its traceback) to admins.
            shown = cloud.openstack('server', 'event', 'show', server,
                                    action['Request ID'], admin=True)
            for event in shown.get('events') or []:
                if event.get('result') == 'Error':
                    return event
        return None
    event = cloud.wait('the attach to fail', failed_event, timeout=180)
    text = event.get('details') or ''
    assert text.startswith('nova-shared-cache refused volume %s: '
                           '[shared_cache] rbd_feature_policy = refuse: '
                           % volume), event
    assert 'exclusive-lock' in text, text
    cloud.volume_status(volume, 'available')
    # Nothing was changed, and the server runs on.
    assert 'exclusive-lock' in features(volume)
    assert cloud.openstack('server', 'show', server)['status'] == 'ACTIVE'
    assert conftest.volume_disk(cloud.domain_xml(server), volume) is None
