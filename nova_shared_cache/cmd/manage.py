"""``nova-shared-cache``: the operator's view of shared disks.

Reads nova.conf like nova-manage (``--config-file``, ``--config-dir``,
default ``/etc/nova/nova.conf``): ``[shared_cache] ceph_conf``,
``ceph_user`` and ``ceph_timeout`` say how to reach Ceph, ``[libvirt]
connection_uri`` where the local domains are.

Exit status: 0 done, 2 error (the audit to come uses 1 for findings).
"""

import argparse
import ipaddress
import json
import os
import subprocess
import sys

from lxml import etree
from oslo_config import cfg

from nova_shared_cache import cephclient
from nova_shared_cache import cephops
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception

DEFAULT_CONFIG = '/etc/nova/nova.conf'
OK, ERROR = 0, 2
#: How long a fence lasts unless --expire says otherwise (Ceph's default).
DEFAULT_EXPIRE = 3600

# The two [libvirt] options read here, declared under Nova's names so the
# same nova.conf works without importing Nova.
_libvirt_opts = [
    cfg.StrOpt('connection_uri', default=''),
    cfg.StrOpt('rbd_user'),
]


def _add_parsers(subparsers):
    status = subparsers.add_parser(
        'status', help='features, size and clients of an RBD image')
    status.add_argument('image', metavar='POOL/IMAGE')
    status.add_argument('--json', action='store_true')
    status.add_argument('--ceph-user', metavar='USER',
                        help='instead of [shared_cache] ceph_user')

    fence = subparsers.add_parser(
        'fence', help='blocklist a client of an RBD image in Ceph')
    fence.add_argument('image', metavar='POOL/IMAGE')
    fence.add_argument('--client', required=True, metavar='ADDR',
                       help='the client address as status shows it')
    fence.add_argument('--expire', type=_positive, default=DEFAULT_EXPIRE,
                       metavar='SECONDS')
    fence.add_argument('--undo', action='store_true',
                       help='remove the client from the blocklist')
    fence.add_argument('--force', action='store_true',
                       help="fence a client of this host's own domains")
    fence.add_argument('--json', action='store_true')
    fence.add_argument('--ceph-user', metavar='USER',
                       help="instead of [shared_cache] ceph_user (Ceph's "
                            "'profile rbd' may add blocklist entries but "
                            "not remove them: --undo needs more)")


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            '--expire must be a whole number of seconds >= 1, not %r' % text)
    return value


def make_conf(argv):
    conf = cfg.ConfigOpts()
    sc_conf.register_opts(conf)
    conf.register_opts(_libvirt_opts, group='libvirt')
    conf.register_cli_opt(cfg.SubCommandOpt(
        'command', title='commands', handler=_add_parsers))
    default_files = ([DEFAULT_CONFIG] if os.path.exists(DEFAULT_CONFIG)
                     else [])
    conf(argv, project='nova', prog='nova-shared-cache',
         default_config_files=default_files)
    return conf


def ceph_client(conf):
    settings = sc_conf.load(conf)
    user = (conf.command.ceph_user or settings.ceph_user
            or conf.libvirt.rbd_user or 'admin')
    return cephclient.REGISTRY.get(settings.ceph_conf, user,
                                   settings.ceph_timeout)


# -- local libvirt domains --------------------------------------------------

def local_domains_using(conf, spec):
    """Names of the local libvirt domains with an RBD disk on ``spec``."""
    try:
        import libvirt
    except ImportError:
        return None
    uri = conf.libvirt.connection_uri or 'qemu:///system'
    try:
        connection = libvirt.openReadOnly(uri)
    except libvirt.libvirtError:
        return None
    try:
        names = []
        for domain in connection.listAllDomains():
            doc = etree.fromstring(domain.XMLDesc(0))
            for source in doc.findall('./devices/disk/source'):
                if (source.get('protocol') == 'rbd'
                        and source.get('name') == spec):
                    names.append(domain.name())
                    break
        return sorted(names)
    finally:
        connection.close()


def local_addresses():
    addresses = {ipaddress.ip_address('127.0.0.1'),
                 ipaddress.ip_address('::1')}
    try:
        out = subprocess.run(['ip', '-j', 'addr', 'show'],
                             capture_output=True, text=True, timeout=10,
                             check=True).stdout
        for link in json.loads(out):
            for info in link.get('addr_info', []):
                addresses.add(ipaddress.ip_address(info['local']))
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        pass
    return addresses


def address_host(address):
    """'v2:10.0.0.7:0/123' or '10.0.0.7:0/123' -> ip_address('10.0.0.7')."""
    text = address.split('/', 1)[0]
    if text.startswith(('v1:', 'v2:', 'any:')):
        text = text.split(':', 1)[1]
    host = text.rsplit(':', 1)[0].strip('[]')
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# -- commands -----------------------------------------------------------------

def cmd_status(conf, out):
    spec = conf.command.image
    client = ceph_client(conf)
    status = client.call('read the status of %s' % spec,
                         lambda cluster: cephops.image_status(cluster, spec))
    local = local_addresses()
    domains = local_domains_using(conf, spec)
    for watcher in status['watchers']:
        is_local = address_host(watcher['address']) in local
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
    if conf.command.json:
        out.write(json.dumps(status, indent=2, sort_keys=True) + '\n')
        return OK
    out.write('image:     %s\n' % status['image'])
    out.write('size:      %d bytes\n' % status['size'])
    out.write('features:  %s\n' % (', '.join(status['features']) or '-'))
    if status['single_client_features']:
        out.write('WARNING:   single-client features %s\n'
                  % ', '.join(status['single_client_features']))
    out.write('clients:   %d\n' % len(status['watchers']))
    for w in status['watchers']:
        if not w['local']:
            where = 'another host'
        elif w['domain']:
            where = 'this host: %s' % w['domain']
        else:
            where = 'this host (%s)' % (', '.join(w['local_domains'])
                                        or 'no local domain uses it')
        out.write('  %-40s %-16s %s\n' % (w['address'], w['client'], where))
    return OK


def cmd_fence(conf, out):
    spec = conf.command.image
    address = conf.command.client
    client = ceph_client(conf)
    if conf.command.undo:
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
        status = client.call('read the status of %s' % spec,
                             lambda c: cephops.image_status(c, spec))
        watchers = {w['address'] for w in status['watchers']}
        if address not in watchers:
            raise exception.CephError(
                what='fence client %s' % address,
                reason='it is not a client of %s (its clients: %s)' % (
                    spec, ', '.join(sorted(watchers)) or 'none'))
        host = address_host(address)
        if host in local_addresses() and not conf.command.force:
            raise exception.CephError(
                what='fence client %s' % address,
                reason="it is a client on this host (%s), presumably one of "
                       "its own running domains (%s); pass --force to fence "
                       "it anyway" % (host, ', '.join(
                           local_domains_using(conf, spec) or ['unknown'])))
        entry = client.call(
            'fence %s' % address,
            lambda c: cephops.blocklist_add(c, address, conf.command.expire,
                                            client.user))
        result = {'image': spec, 'client': address, 'fenced': True,
                  'entry': entry}
    if conf.command.json:
        out.write(json.dumps(result, indent=2, sort_keys=True) + '\n')
    elif result['fenced']:
        out.write('fenced %s (client of %s) until %s\n' % (
            address, spec, (result['entry'] or {}).get('until', '?')))
    else:
        out.write('%s is not fenced\n' % address)
    return OK


COMMANDS = {'status': cmd_status, 'fence': cmd_fence}


def main(argv=None, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        conf = make_conf(sys.argv[1:] if argv is None else argv)
        return COMMANDS[conf.command.name](conf, out)
    except (exception.SharedCacheError, cfg.Error) as error:
        err.write('nova-shared-cache: %s\n' % error)
        return ERROR
    except Exception as error:  # never a traceback and exit 1 ("findings")
        err.write('nova-shared-cache: unexpected %s: %s\n'
                  % (type(error).__name__, error))
        return ERROR
    finally:
        cephclient.REGISTRY.close_all()


if __name__ == '__main__':
    sys.exit(main())
