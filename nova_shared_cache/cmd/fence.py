"""``nova-shared-cache fence POOL/IMAGE --client ADDR``: a client of an
image in Ceph's OSD blocklist (``--undo`` takes it out)."""

import json

from nova_shared_cache import cephops
from nova_shared_cache import cmd
from nova_shared_cache.cmd import common
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache import hostnet

NAMES = ('fence',)
#: The keys of fence --json's document (besides exit_code and meaning).
JSON_KEYS = {
    'image': 'the image, as given',
    'client': 'the client address, as Ceph spells it',
    'fenced': 'true after a fence, false after --undo',
    'entry': 'the blocklist entry (address, until), null after --undo',
    'ceph_user': 'the Ceph user that asked, and where it was named '
                 '(user, from)',
}
#: How long a fence lasts unless --expire says otherwise (Ceph's default).
DEFAULT_EXPIRE = 3600


def add_parser(subparsers):
    fence = subparsers.add_parser(
        'fence', help='blocklist a client of an RBD image in Ceph')
    fence.add_argument('image', metavar='POOL/IMAGE',
                       help='the image whose client to fence')
    fence.add_argument('--client', required=True, metavar='ADDR',
                       help='the client address as status shows it')
    fence.add_argument('--expire', default=DEFAULT_EXPIRE,
                       type=cmd.whole_number('--expire', 1,
                                             unit=' of seconds'),
                       metavar='SECONDS',
                       help='how long the blocklist entry lasts (default '
                            '%(default)s)')
    fence.add_argument('--undo', action='store_true',
                       help='remove the client from the blocklist')
    fence.add_argument('--force', action='store_true',
                       help="fence a client of this host's own domains")
    fence.add_argument('--json', action='store_true', help=cmd.JSON_HELP)
    fence.add_argument('--ceph-user', metavar='USER',
                       help="instead of [shared_cache] ceph_user (Ceph's "
                            "'profile rbd' may add blocklist entries but "
                            "not remove them: --undo needs more)")


def check_input(conf):
    command = conf.command
    common.check_image_argument(command)
    hostnet.parse_client_address(command.client)
    common.check_ceph_user(command.ceph_user)
    sc_conf.load(conf)
    common.ceph_user(conf)


def run(conf, out):
    spec = conf.command.image
    address = conf.command.client
    if conf.command.undo:
        client = common.ceph_client(conf)
        entry = client.call(
            'unfence %s' % address,
            lambda c: cephops.blocklist_rm(c, address, client.user))
        if entry is not None:
            raise exception.CephError(
                what='unfence client %s' % address,
                reason='it is still in the OSD blocklist (until %s)'
                       % entry.get('until'))
        result = {'image': spec, 'client': address, 'fenced': False,
                  'entry': None}
    else:
        # Read before Ceph is asked: unreadable addresses stop the command
        # unless --force says that a local client may be fenced anyway.
        local = None if conf.command.force else hostnet.local_addresses()
        client = common.ceph_client(conf)
        status = client.call('read the status of %s' % spec,
                             lambda c: cephops.image_status(c, spec))
        watchers = sorted(w['address'] for w in status['watchers'])
        same = [w for w in watchers if hostnet.same_client(w, address)]
        if not same:
            raise exception.CephError(
                what='fence client %s' % address,
                reason='it is not a client of %s (its clients: %s)' % (
                    spec, ', '.join(watchers) or 'none'))
        address = same[0]   # as Ceph spells it
        if local is not None and hostnet.is_local(address, local):
            try:
                domains = ', '.join(common.local_domains_using(conf, spec)
                                    or ['none found'])
            except exception.LibvirtError as err:
                domains = 'unknown: %s' % err
            raise exception.CephError(
                what='fence client %s' % address,
                reason="it is a client on this host (%s), presumably one of "
                       "its own running domains (%s); pass --force to fence "
                       "it anyway" % (hostnet.address_host(address),
                                      domains))
        entry = client.call(
            'fence %s' % address,
            lambda c: cephops.blocklist_add(c, address, conf.command.expire,
                                            client.user))
        result = {'image': spec, 'client': address, 'fenced': True,
                  'entry': entry}
    user, where = common.ceph_user(conf)
    result['ceph_user'] = {'user': user, 'from': where}
    if conf.command.json:
        out.write(json.dumps(result, indent=2, sort_keys=True) + '\n')
    elif result['fenced']:
        out.write('fenced %s (client of %s) until %s\n' % (
            address, spec, (result['entry'] or {}).get('until', '?')))
    else:
        out.write('%s is not fenced\n' % address)
    return common.OK
