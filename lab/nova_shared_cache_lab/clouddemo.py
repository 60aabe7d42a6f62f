"""tools/demo: one shared Ceph volume, two servers, on a real OpenStack.

Every step is a command a user types (shown with ``$``): ``tools/cloud up``
brings up keystone, placement, glance, nova, cinder (RBD on the embedded
Ceph) and neutron's API; ``openstack`` creates the multiattach volume type,
a volume, two servers and attaches the volume to both; ``virsh dumpxml``
shows the disk libvirt runs; in-guest O_DIRECT writes on one server are read
on the other through their serial consoles, then 200 cross-VM probes.

Then the control: nova-compute with the lab's test-only driver that leaves a
multiattach disk unshared and caching (what this project prevents), a new
volume on the same two servers, and the same probes: stale reads.

The client ceph.conf asks librbd to cache (``rbd cache policy =
writeback``) for the whole run, so only the disk XML decides.
"""

import argparse
import sys

from nova_shared_cache_lab import clientconf
from nova_shared_cache_lab import cloudcli
from nova_shared_cache_lab import common
from nova_shared_cache_lab import probe

say = common.progress
PROBE_ROUNDS = 8
PROBE_BLOCKS = 25


def echo(command):
    print('$ %s' % command, flush=True)


def show_disk(cli, server, volume):
    name = cli.instance_name(server)
    echo('virsh dumpxml %s   # the disk of volume %s' % (name, volume))
    from lxml import etree
    disk = cloudcli.volume_disk(cli.domain_xml(server), volume)
    print(etree.tostring(disk, encoding='unicode').rstrip())
    return cloudcli.disk_cache(disk), cloudcli.is_shareable(disk)


def scenario(cli, timer, label, servers):
    volume = timer.measure('volume create (%s)' % label, cli.create_volume,
                           'shared-%s' % label)
    for i, server in enumerate(servers):
        timer.measure('server add volume vm%d (%s)' % (i + 1, label),
                      cli.attach, server, volume)
    cache, shareable = show_disk(cli, servers[0], volume)
    consoles = [cli.console(s) for s in servers]
    try:
        devs = [probe.find_disk(c, volume) for c in consoles]
        say('%s: the volume is %s in vm1 and %s in vm2' % (
            label, devs[0], devs[1]))
        before = probe.read_blocks(consoles[1], devs[1], [7]).get(7)
        probe.write_blocks(consoles[0], devs[0], [7], 'HELLO-FROM-VM1')
        after = probe.read_blocks(consoles[1], devs[1], [7]).get(7)
        say('%s: vm1 wrote "HELLO-FROM-VM1-7"; vm2 read "%s" (before: '
            '"%s")' % (label, after, before))
        say('%s: %d cross-VM read-after-write probes' % (
            label, PROBE_ROUNDS * PROBE_BLOCKS))
        result = timer.measure(
            '%d probes (%s)' % (PROBE_ROUNDS * PROBE_BLOCKS, label),
            probe.cross_vm, list(zip(consoles, devs)), rounds=PROBE_ROUNDS,
            blocks_per_round=PROBE_BLOCKS)
        say('%s: %s' % (label, result))
    finally:
        for console in consoles:
            console.close()
    for i, server in enumerate(servers):
        timer.measure('server remove volume vm%d (%s)' % (i + 1, label),
                      cli.detach, server, volume)
    cli.delete_volumes(volume)
    return {'cache': cache, 'shareable': shareable, 'result': result,
            'single_ok': after == 'HELLO-FROM-VM1-7'}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='tools/demo', description=__doc__)
    parser.add_argument('--keep', action='store_true',
                        help='leave the cloud running afterwards')
    args = parser.parse_args(argv)
    timer = common.Timer()
    cli = cloudcli.CloudCLI(echo=echo)
    caching = {'libvirt': {'disk_cachemodes': 'network=writeback'}}
    outcome, servers = {}, []
    say('a real OpenStack on loopback; nova-compute runs '
        'shared_cache.LibvirtSharedCacheDriver with [libvirt] '
        'disk_cachemodes = network=writeback (caching network disks)')
    try:
        timer.measure('tools/cloud up', cli.configure, 'extension', caching)
        timer.measure('image and volume type', _prepare, cli)
        for i in (1, 2):
            servers.append(timer.measure(
                'server create vm%d (until ACTIVE)' % i,
                cli.create_server, 'vm%d' % i, '--image', cloudcli.IMAGE))
        # The hostile client ceph.conf is written after each tools/cloud up:
        # bringing the embedded stack up removes one a killed run left.
        with clientconf.client_options(clientconf.WRITEBACK):
            say('the client ceph.conf asks librbd to cache (rbd cache policy '
                '= writeback): only the disk XML decides')
            outcome['extension'] = scenario(cli, timer, 'extension', servers)
        say('the control: nova-compute with the lab\'s test-only driver '
            'that leaves multiattach disks unshared (tools/cloud up '
            '--hazard); the two servers keep running')
        timer.measure('nova-compute switched to the control driver',
                      cli.configure, 'hazard', caching)
        with clientconf.client_options(clientconf.WRITEBACK):
            say('the same caching client ceph.conf again')
            outcome['control'] = scenario(cli, timer, 'control', servers)
    finally:
        if servers:
            timer.measure('server delete vm1 vm2', cli.delete_servers,
                          *servers)
        cli.configure('extension', {})
        if not args.keep:
            say('taking the cloud down (--keep leaves it running)')
            timer.measure('tools/cloud down', cli.tool, 'down')
    return report(outcome, timer)


def _prepare(cli):
    cli.ensure_image()
    cli.ensure_volume_type()


def report(outcome, timer):
    print()
    print('Report')
    print('------')
    for name, row in outcome.items():
        r = row['result']
        print('%-10s cache=%-10s shareable=%-5s probes=%d fresh=%d stale=%d '
              'other=%d' % (name, row['cache'], row['shareable'], r.checks,
                            r.fresh, r.stale, r.other))
    print()
    for label, seconds in timer.rows:
        print('%-48s %7.2fs' % (label, seconds))
    ext, control = outcome.get('extension'), outcome.get('control')
    ok = bool(ext and control and ext['result'].stale == 0
              and ext['result'].fresh == ext['result'].checks
              and ext['shareable'] and control['result'].stale > 0)
    print()
    print('RESULT: %s' % ('the shared volume stayed coherent through the '
                          'extension; the unshared caching disk served stale '
                          'data' if ok else 'unexpected outcome (see above)'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
