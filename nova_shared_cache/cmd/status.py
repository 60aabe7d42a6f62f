"""``nova-shared-cache status POOL/IMAGE``: an image's features and
clients, marking this host's domains."""

import json

from nova_shared_cache import cephops
from nova_shared_cache import cmd
from nova_shared_cache.cmd import common
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache import hostnet

NAMES = ('status',)
#: The keys of status --json's document (besides exit_code and meaning),
#: for the CLI reference; a unit test holds the command to them.
JSON_KEYS = {
    'image': 'the image, as given',
    'size': 'its size in bytes',
    'features': "its RBD features, by librbd's names",
    'single_client_features': 'those of them a shared image must not have',
    'watchers': 'every client that has it open: address, client '
                '(client.<id>), name and module when the monitors say '
                '(else null), ignored (by [shared_cache] ignored_watchers), '
                'local (a client on this host), local_domains, domain (the '
                'one local domain it must be, else null)',
    'local_domains': 'the local libvirt domains with a disk on the image '
                     '(null when libvirt cannot say)',
    'local_domains_error': 'why libvirt could not say (only then)',
    'names_error': 'why some clients could not be named (only then)',
    'guard': "the credentials nova-compute's guard can use on this host: "
             'source, user, ceph_conf, usable, detail, cluster (when they '
             'could be read) and remedy (when not usable); never a key',
    'ceph_user': 'the Ceph user the image was read as, and where it was '
                 'named (user, from)',
}


def add_parser(subparsers):
    status = subparsers.add_parser(
        'status', help='features, size and clients of an RBD image')
    status.add_argument('image', metavar='POOL/IMAGE',
                        help='the image, as POOL/IMAGE or '
                             'POOL/NAMESPACE/IMAGE')
    status.add_argument('--json', action='store_true', help=cmd.JSON_HELP)
    status.add_argument('--ceph-user', metavar='USER',
                        help='instead of [shared_cache] ceph_user')


def check_input(conf):
    command = conf.command
    common.check_image_argument(command)
    common.check_ceph_user(command.ceph_user)
    sc_conf.load(conf)
    common.ceph_user(conf)


def run(conf, out):
    spec = conf.command.image
    # Before Ceph: a status that cannot tell this host's clients from the
    # others' would call this host's VMs "another host" (check_input has
    # already checked the spec).
    local = hostnet.local_addresses()
    client = common.ceph_client(conf)
    status = client.call('read the status of %s' % spec,
                         lambda cluster: cephops.image_status(
                             cluster, spec, names=True))
    patterns = sc_conf.load(conf).ignored_watchers
    for watcher in status['watchers']:
        watcher['ignored'] = cephops.ignored(watcher, patterns)
    try:
        domains, domains_error = common.local_domains_using(conf, spec), None
    except exception.LibvirtError as err:
        domains, domains_error = None, str(err)
    for watcher in status['watchers']:
        is_local = hostnet.is_local(watcher['address'], local)
        watcher['local'] = is_local
        # Ceph does not say which process a client is (its address nonce
        # is random); the candidates are the local domains using the image,
        # and a single local client with a single such domain is that one.
        watcher['local_domains'] = (domains or []) if is_local else []
        watcher['domain'] = None
    local_watchers = [w for w in status['watchers'] if w['local']]
    if len(local_watchers) == 1 and domains and len(domains) == 1:
        local_watchers[0]['domain'] = domains[0]
    status['local_domains'] = domains
    if domains_error:
        status['local_domains_error'] = domains_error
    status['guard'] = common.guard_credentials(conf)
    user, where = common.ceph_user(conf)
    status['ceph_user'] = {'user': user, 'from': where}
    if conf.command.json:
        out.write(json.dumps(status, indent=2, sort_keys=True) + '\n')
        return common.OK
    out.write('image:     %s\n' % status['image'])
    out.write('size:      %d bytes\n' % status['size'])
    out.write('features:  %s\n' % (', '.join(status['features']) or '-'))
    if status['single_client_features']:
        out.write('WARNING:   single-client features %s\n'
                  % ', '.join(status['single_client_features']))
    if domains_error:
        out.write('WARNING:   local domains unknown: %s\n' % domains_error)
    out.write('read as:   client.%s (%s)\n' % (user, where))
    out.write('guard:     %s\n' % common.guard_text(status['guard']))
    out.write('clients:   %d\n' % len(status['watchers']))
    for w in status['watchers']:
        if not w['local']:
            where = 'another host'
        elif w['domain']:
            where = 'this host: %s' % w['domain']
        else:
            where = 'this host (%s)' % (', '.join(w['local_domains'])
                                        or 'no local domain uses it')
        name = w.get('name') or '?'
        if w.get('module'):
            name += ' (%s)' % w['module']
        if w.get('ignored'):
            name += ', ignored'
        out.write('  %-40s %-16s %-28s %s\n' % (w['address'], w['client'],
                                                name, where))
    if status.get('names_error'):
        out.write('names:     not all known (%s)\n' % status['names_error'])
    return common.OK
