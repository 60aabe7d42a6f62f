"""Every path that writes a domain's XML again keeps shared disks right.

A server booted from a multiattach volume, with a second multiattach volume
shared with another server, under ``[libvirt] disk_cachemodes =
network=writeback`` and ``[shared_cache] cache_mode = directsync``: after
hard reboot, stop/start, resize to the same host (and confirm),
shelve/unshelve and (stable device) rescue/unrescue, Nova regenerates the
domain and every shared disk in it (``virsh dumpxml``) is still
``<shareable/>`` with ``cache='directsync'``, in the live domain and in its
definition.
"""

import pytest

from tests.cloud import conftest

CACHE = 'directsync'


@pytest.fixture(scope='module')
def shared_setup(cloud, guest_image, volume_type):
    cloud.configure('extension', conftest.CACHING)
    made = {'servers': [], 'volumes': []}
    try:
        boot = cloud.create_volume(conftest.unique('boot'), '--image',
                                   guest_image, '--bootable', size=1)
        made['volumes'].append(boot)
        data = cloud.create_volume(conftest.unique('data'))
        made['volumes'].append(data)
        bfv = cloud.create_server(conftest.unique('bfv'), '--volume', boot)
        made['servers'].append(bfv)
        other = cloud.create_server(conftest.unique('peer'), '--image',
                                    guest_image)
        made['servers'].append(other)
        for server in (bfv, other):
            cloud.attach(server, data)
        yield {'bfv': bfv, 'other': other, 'boot': boot, 'data': data}
    finally:
        cloud.delete_servers(*made['servers'])
        cloud.delete_volumes(*made['volumes'])


def assert_shared_disks_right(cloud, server, volumes, live=True):
    for inactive in ((False, True) if live else (True,)):
        xml = cloud.domain_xml(server, inactive=inactive)
        for volume in volumes:
            disk = conftest.volume_disk(xml, volume)
            where = '%s %s of server %s' % (
                'definition' if inactive else 'live domain', volume, server)
            assert disk is not None, 'no disk for volume in ' + where
            assert conftest.is_shareable(disk), 'not shareable: ' + where
            assert conftest.disk_cache(disk) == CACHE, (
                'cache %s: %s' % (conftest.disk_cache(disk), where))


def test_boot_from_multiattach_volume(cloud, shared_setup):
    s = shared_setup
    assert_shared_disks_right(cloud, s['bfv'], [s['boot'], s['data']])
    assert_shared_disks_right(cloud, s['other'], [s['data']])


def test_hard_reboot(cloud, shared_setup):
    s = shared_setup
    cloud.openstack('server', 'reboot', '--hard', '--wait', s['bfv'],
                    parse=False)
    cloud.server_status(s['bfv'], 'ACTIVE')
    assert_shared_disks_right(cloud, s['bfv'], [s['boot'], s['data']])


def test_stop_start(cloud, shared_setup):
    s = shared_setup
    cloud.openstack('server', 'stop', s['bfv'], parse=False)
    cloud.server_status(s['bfv'], 'SHUTOFF')
    cloud.openstack('server', 'start', s['bfv'], parse=False)
    cloud.server_status(s['bfv'], 'ACTIVE')
    assert_shared_disks_right(cloud, s['bfv'], [s['boot'], s['data']])


def test_resize_to_the_same_host(cloud, shared_setup):
    s = shared_setup
    cloud.openstack('server', 'resize', '--flavor', conftest.FLAVOR_ALT,
                    s['bfv'], parse=False)
    cloud.server_status(s['bfv'], 'VERIFY_RESIZE')
    assert_shared_disks_right(cloud, s['bfv'], [s['boot'], s['data']])
    cloud.openstack('server', 'resize', 'confirm', s['bfv'], parse=False)
    cloud.server_status(s['bfv'], 'ACTIVE')
    assert cloud.openstack('server', 'show', s['bfv'])['flavor'][
        'name'] == conftest.FLAVOR_ALT
    assert_shared_disks_right(cloud, s['bfv'], [s['boot'], s['data']])


def test_shelve_unshelve(cloud, shared_setup):
    s = shared_setup
    cloud.openstack('server', 'shelve', s['bfv'], parse=False)
    cloud.server_status(s['bfv'], 'SHELVED_OFFLOADED')
    cloud.openstack('server', 'unshelve', s['bfv'], parse=False)
    cloud.server_status(s['bfv'], 'ACTIVE')
    assert_shared_disks_right(cloud, s['bfv'], [s['boot'], s['data']])


def test_rescue_unrescue(cloud, shared_setup):
    s = shared_setup
    server = s['other']
    # Stable device rescue (the rescue image asks for it): Nova writes a
    # rescue domain that keeps the instance's disks and volumes, so the
    # shared disk is in it. (A plain rescue leaves volumes out.)
    rescue_image = cloud.ensure_image(
        name='nsc-guest-rescue',
        properties={'hw_rescue_device': 'disk', 'hw_rescue_bus': 'virtio'})
    cloud.openstack('server', 'rescue', '--image', rescue_image, server,
                    parse=False)
    cloud.server_status(server, 'RESCUE')
    disk = conftest.volume_disk(cloud.domain_xml(server), s['data'])
    assert disk is not None, 'the rescue domain has no shared disk'
    assert conftest.is_shareable(disk)
    assert conftest.disk_cache(disk) == CACHE
    cloud.openstack('server', 'unrescue', server, parse=False)
    cloud.server_status(server, 'ACTIVE')
    assert_shared_disks_right(cloud, server, [s['data']])
