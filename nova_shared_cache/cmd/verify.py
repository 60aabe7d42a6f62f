"""``nova-shared-cache verify`` and ``build-probe-image``.

Both run from any machine with a cloud account (``verify``) or with apt
and Debian's archive (``build-probe-image``): neither reads nova.conf nor
needs Ceph, libvirt or Nova installed.

verify exit status: 0 coherent, 1 stale reads seen, 2 error (nothing
conclusive; see the problems it lists).
"""

import json
import os
import sys

from nova_shared_cache import cmd
from nova_shared_cache import exception
from nova_shared_cache.verify import guest
from nova_shared_cache.verify import image
from nova_shared_cache.verify import runner

DEFAULT_OUTPUT = 'nova-shared-cache-probe.raw'
#: One run may use at most this many probes (the volume grows with them).
MAX_PROBES = 2000


#: The subcommands of this module.
NAMES = ('verify', 'build-probe-image')


def add_parser(subparsers):
    verify = subparsers.add_parser(
        'verify', help='check through the cloud API alone that two servers '
                       'sharing a multiattach volume see each other\'s '
                       'writes (exit 0 coherent, 1 stale, 2 error)')
    verify.add_argument('--os-cloud', metavar='NAME',
                        help='a cloud of clouds.yaml (default: $OS_CLOUD, '
                             'else the OS_* variables)')
    verify.add_argument('--image', default=runner.DEFAULT_IMAGE,
                        help='the probe image (default: %(default)s)')
    verify.add_argument('--flavor', help='default: the smallest that fits')
    verify.add_argument('--volume-type',
                        help='a multiattach volume type (default: the '
                             "cloud's default type, which must be one)")
    verify.add_argument('--availability-zone', '--az', dest='az',
                        help='boot both servers in this availability zone')
    verify.add_argument('--host', action='append', default=[],
                        dest='hosts', metavar='HOST',
                        help='boot server A on the first --host, B on the '
                             'second (admin; repeat it); without it the '
                             'servers ask for different hosts (soft '
                             'anti-affinity)')
    verify.add_argument('--network', help='attach the servers to this '
                                          'network (default: no network)')
    verify.add_argument('--probes',
                        type=cmd.whole_number('--probes', 2, MAX_PROBES),
                        default=runner.DEFAULT_PROBES,
                        help='read-after-write probes, half in each '
                             'direction (default: %(default)s)')
    for option, default, what in (
            ('--boot-timeout', 600, 'seconds each server may take to '
                                    'become ACTIVE and to boot'),
            ('--probe-timeout', 1800, 'seconds the probes may take in '
                                      'all')):
        verify.add_argument(option, default=default, type=cmd.whole_number(
            option, 1, unit=' of seconds'),
            help='%s (default: %%(default)s)' % what)
    verify.add_argument('--keep', action='store_true',
                        help='leave the servers, volume and group')
    verify.add_argument('--json', action='store_true', help=cmd.JSON_HELP)

    build = subparsers.add_parser(
        'build-probe-image', help="build verify's probe image from Debian "
                                  'packages (and upload it)')
    build.add_argument('--output', default=DEFAULT_OUTPUT,
                       help='the raw image file (default: %(default)s)')
    build.add_argument('--force', action='store_true',
                       help='build even if the file is of the same recipe')
    build.add_argument('--upload', action='store_true',
                       help='upload it to Glance (openstacksdk)')
    build.add_argument('--os-cloud', metavar='NAME',
                       help='the cloud to upload to (default: $OS_CLOUD, '
                            'else the OS_* variables)')
    build.add_argument('--name', default=runner.DEFAULT_IMAGE,
                       dest='image_name',
                       help='the Glance image name (default: %(default)s)')
    build.add_argument('--public', action='store_true',
                       help='a public image (admin)')
    build.add_argument('--json', action='store_true', help=cmd.JSON_HELP)


def check_input(conf):
    command = conf.command
    if command.name == 'verify':
        if len(command.hosts) not in (0, 2):
            raise exception.UsageError(
                reason='--host is given twice (server A, server B) or not '
                       'at all, not %d times' % len(command.hosts))
        if any(not h.strip() for h in command.hosts):
            raise exception.UsageError(reason='--host needs a host name')
    if command.name == 'build-probe-image':
        directory = os.path.dirname(os.path.abspath(command.output))
        if not os.path.isdir(directory):
            raise exception.UsageError(
                reason='--output %s: directory %s does not exist'
                       % (command.output, directory))


def _progress(text):
    print('nova-shared-cache: %s' % text, file=sys.stderr, flush=True)


def cmd_verify(conf, out):
    c = conf.command
    options = runner.Options(
        cloud=c.os_cloud, image=c.image, flavor=c.flavor,
        volume_type=c.volume_type, availability_zone=c.az,
        hosts=list(c.hosts), network=c.network, probes=c.probes,
        keep=c.keep, boot_timeout=c.boot_timeout,
        probe_timeout=c.probe_timeout)
    report = runner.verify(options)
    if c.json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + '\n')
    else:
        out.write(runner.render(report))
    return report['exit_code']


def upload(conn, path, name, public=False):
    """The Glance image of ``path`` named ``name``: reused or uploaded.

    An image of that name with the same sha512 is reused; older probe
    images of that name (same property, other content) are deleted after
    the new one is active.
    """
    digest = image.file_digest(path, 'sha512')
    found = [i for i in conn.image.images(name=name)]
    props = image.glance_properties()
    for candidate in found:
        have = candidate.properties or {}
        if (candidate.hash_value == digest and candidate.status == 'active'
                and all(str(have.get(k)) == v for k, v in props.items())):
            return candidate, False
    created = conn.image.create_image(
        name, filename=path, disk_format='raw', container_format='bare',
        visibility='public' if public else 'private', min_disk=1,
        min_ram=runner.MIN_RAM_MB, disable_vendor_agent=False, wait=True,
        allow_duplicates=True, **props)
    for old in found:
        if (old.properties or {}).get(runner.IMAGE_PROPERTY) is not None:
            conn.image.delete_image(old, ignore_missing=True)
    return created, True


def cmd_build_probe_image(conf, out):
    c = conf.command
    path, built, size = image.build_probe_image(c.output, force=c.force,
                                                progress=_progress)
    doc = {'command': 'build-probe-image', 'path': os.path.abspath(path),
           'built': built, 'size_bytes': size,
           'protocol': guest.PROTOCOL,
           'properties': image.glance_properties(), 'image': None}
    if c.upload:
        conn = runner.connect(c.os_cloud)
        _progress('uploading %s to Glance as %s' % (path, c.image_name))
        try:
            created, uploaded = upload(conn, path, c.image_name,
                                       public=c.public)
        except exception.SharedCacheError:
            raise
        except Exception as error:
            raise exception.ProbeImageError(
                reason='upload to Glance failed: %s' % error) from None
        doc['image'] = {'id': created.id, 'name': created.name,
                        'uploaded': uploaded}
    if c.json:
        out.write(json.dumps(doc, indent=2, sort_keys=True) + '\n')
        return 0
    out.write('%s %s (%d MiB)\n' % ('built' if built else 'up to date:',
                                    doc['path'], size >> 20))
    if doc['image']:
        out.write('Glance image %s (%s): %s\n' % (
            doc['image']['name'], doc['image']['id'],
            'uploaded' if doc['image']['uploaded'] else 'already there'))
    else:
        args = ' '.join('--property %s=%s' % kv for kv in
                        sorted(image.glance_properties().items()))
        out.write('upload it with:\n  openstack image create --disk-format '
                  'raw --container-format bare --min-disk 1 --min-ram %d '
                  '%s --file %s %s\n' % (runner.MIN_RAM_MB, args,
                                         doc['path'], runner.DEFAULT_IMAGE))
    return 0


COMMANDS = {'verify': cmd_verify, 'build-probe-image': cmd_build_probe_image}


def run(conf, out):
    return COMMANDS[conf.command.name](conf, out)
