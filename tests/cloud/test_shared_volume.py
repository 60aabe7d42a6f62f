"""One Cinder multiattach volume on two servers, through the real API.

``openstack server add volume`` of one multiattach volume to two servers,
with ``[libvirt] disk_cachemodes = network=writeback`` (a caching default
for network disks) and ``[shared_cache] cache_mode = directsync``:

- with the extension both live domains get ``<shareable/>`` and
  ``cache='directsync'`` (the operator's choice);
- with stock Nova's driver both get ``<shareable/>`` and ``cache='none'``
  (Nova's own rule for multiattach disks), so stock is coherent too;

and in both, in-guest O_DIRECT probes see no stale read, and ``server remove
volume`` from one server leaves the other its data.
"""

import pytest

from nova_shared_cache_lab import probe

from tests.cloud import conftest

EXPECTED_CACHE = {'extension': 'directsync', 'stock': 'none'}
#: nova-compute's concurrency: Nova 34 starts it in native threads; the
#: deprecated eventlet mode is still selectable and both must work.
#: What nova-compute's log shows of its oslo.service backend (Nova's own
#: "Service is starting with ..." line comes before logging is set up).
BACKEND = {
    'threading': 'service.backend._threading',
    'eventlet': 'service.backend._eventlet',
}


@pytest.mark.parametrize('driver,concurrency', [
    ('extension', 'threading'),
    ('extension', 'eventlet'),
    ('stock', 'threading'),
])
def test_add_volume_to_two_servers(cloud, guest_image, volume_type, driver,
                                   concurrency):
    options = dict(conftest.CACHING)
    if concurrency == 'eventlet':
        options['DEFAULT'] = {'concurrency_backend': 'eventlet'}
    cloud.configure(driver, options)
    log = cloud.compute_log_since_start()
    assert BACKEND[concurrency] in log
    other = 'eventlet' if concurrency == 'threading' else 'threading'
    assert BACKEND[other] not in log
    servers, volume = [None, None], None
    try:
        servers = [cloud.create_server(conftest.unique('sv%d' % i),
                                       '--image', guest_image)
                   for i in range(2)]
        volume = cloud.create_volume(conftest.unique('shared'))
        for server in servers:
            cloud.attach(server, volume)
        cloud.volume_status(volume, 'in-use')

        for server in servers:
            disk = conftest.volume_disk(cloud.domain_xml(server), volume)
            assert disk is not None, 'volume not in the domain of %s' % server
            assert conftest.is_shareable(disk), server
            assert conftest.disk_cache(disk) == EXPECTED_CACHE[driver], (
                server, conftest.disk_cache(disk))
            # The definition Nova keeps agrees with the live domain.
            defined = conftest.volume_disk(
                cloud.domain_xml(server, inactive=True), volume)
            assert conftest.disk_cache(defined) == EXPECTED_CACHE[driver]

        consoles = [cloud.console(s) for s in servers]
        try:
            devs = [probe.find_disk(c, volume) for c in consoles]
            result = probe.cross_vm(list(zip(consoles, devs)), rounds=4,
                                    blocks_per_round=10)
            assert result.checks == 40
            assert result.stale == 0 and result.other == 0, str(result)
            assert result.fresh == 40, str(result)

            # Detach from the first server: the second keeps the data.
            probe.write_blocks(consoles[0], devs[0], [3], 'KEEP')
        finally:
            consoles[0].close()
        cloud.detach(servers[0], volume)
        assert conftest.volume_disk(cloud.domain_xml(servers[0]),
                                    volume) is None
        try:
            assert probe.read_blocks(consoles[1], devs[1], [3]) == {
                3: 'KEEP-3'}
        finally:
            consoles[1].close()
        assert cloud.attached_servers(volume) == [servers[1]]
    finally:
        cloud.delete_servers(*servers)
        cloud.delete_volumes(volume)
