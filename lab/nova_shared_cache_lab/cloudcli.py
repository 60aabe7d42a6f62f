"""The lab cloud as its user drives it: the ``openstack`` command, ``virsh``
and the guests' serial consoles.

``CloudCLI`` runs ``openstack`` with the cloud's clouds.yaml and parses its
JSON, waits for servers and volumes with bounded waits, and reads what
libvirt has for a server. ``tools/demo`` shows every command it runs
(``echo``); the cloud tests use it silently.
"""

import json
import os
import shlex
import subprocess
import sys
import time

from nova_shared_cache.verify import image as product_image
from nova_shared_cache_lab import cloud as cloud_mod
from nova_shared_cache_lab import common
from nova_shared_cache_lab import diskimage
from nova_shared_cache_lab import libvirtconsole

IMAGE = 'nsc-guest'
VOLUME_TYPE = 'multiattach'
FLAVOR = 'nsc.tiny'
FLAVOR_ALT = 'nsc.tiny.alt'
OPENSTACK = os.path.join(os.path.dirname(sys.executable), 'openstack')


def cloud_command():
    """The tools/cloud command of the checkout ``NSC_TOP`` names.

    tools/demo and the cloud tests set ``NSC_TOP``; ``NSC_CLOUD_CMD``
    overrides the whole command.
    """
    if os.environ.get('NSC_CLOUD_CMD'):
        return shlex.split(os.environ['NSC_CLOUD_CMD'])
    top = os.environ.get('NSC_TOP')
    if not top:
        raise CommandError('NSC_TOP (the checkout with tools/cloud) is not '
                           'set')
    return [os.path.join(top, 'tools', 'cloud')]


class CommandError(AssertionError):
    pass


class CloudCLI:
    """What a user of the running cloud has: the CLI, virsh, consoles."""

    def __init__(self, echo=None):
        self.layout = cloud_mod.Cloud().layout
        self.env = dict(os.environ)
        self.env['OS_CLIENT_CONFIG_FILE'] = self.layout.clouds_yaml
        self.env.pop('OS_CLOUD', None)
        self.driver = None
        self.options = None
        #: Called with each command line before it runs (the demo prints).
        self.echo = echo

    # -- the cloud itself ------------------------------------------------

    def tool(self, *args, timeout=1200):
        if self.echo:
            self.echo('tools/cloud %s' % ' '.join(args))
        proc = subprocess.run(cloud_command() + list(args),
                              capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise CommandError('tools/cloud %s failed (%d):\n%s\n%s' % (
                ' '.join(args), proc.returncode, proc.stdout[-3000:],
                proc.stderr[-3000:]))
        return proc.stdout

    def configure(self, driver, options):
        """nova-compute with ``driver`` and ``options`` (restarts it)."""
        if (driver, options) == (self.driver, self.options):
            return
        args = ['up', '--%s' % driver]
        if options:
            for section, values in options.items():
                for key, value in values.items():
                    args += ['--compute-option',
                             '%s.%s=%s' % (section, key, value)]
        else:
            args.append('--no-compute-options')
        self.tool(*args)
        self.driver, self.options = driver, options

    # -- the openstack command ----------------------------------------------

    def openstack(self, *args, admin=False, parse=True, check=True,
                  timeout=300):
        cmd = [OPENSTACK, '--os-cloud',
               cloud_mod.ADMIN_CLOUD if admin else cloud_mod.CLOUD_NAME,
               '--os-compute-api-version', '2.latest',
               '--os-volume-api-version', '3.latest'] + list(args)
        if self.echo:
            self.echo('openstack %s%s' % (
                '--os-cloud %s ' % cloud_mod.ADMIN_CLOUD if admin else '',
                ' '.join(shlex.quote(a) for a in args)))
        if parse:
            cmd += ['-f', 'json']
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandError('openstack %s failed (%d): %s' % (
                ' '.join(args), proc.returncode, proc.stderr.strip()[-2000:]))
        if not parse or proc.returncode != 0:
            return proc
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def wait(self, what, check, timeout=300, interval=2):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError('timed out after %ss waiting for %s (last: %r)'
                             % (timeout, what, last))

    def server_status(self, server, wanted, timeout=600):
        def check():
            status = self.openstack('server', 'show', server)['status']
            if status == 'ERROR' and wanted != 'ERROR':
                fault = self.openstack('server', 'show', server,
                                       admin=True).get('fault')
                raise AssertionError('server %s is in ERROR: %s'
                                     % (server, fault))
            return status == wanted
        return self.wait('server %s to be %s' % (server, wanted), check,
                         timeout=timeout)

    def volume_status(self, volume, wanted, timeout=300):
        def check():
            status = self.openstack('volume', 'show', volume)['status']
            if status == 'error':
                raise AssertionError('volume %s is in error' % volume)
            return status == wanted
        return self.wait('volume %s to be %s' % (volume, wanted), check,
                         timeout=timeout)

    def create_server(self, name, *args):
        server = self.openstack('server', 'create', '--flavor', FLAVOR,
                                '--nic', 'none', *args, name)
        self.server_status(server['id'], 'ACTIVE')
        return server['id']

    def create_volume(self, name, *args, size=1):
        volume = self.openstack('volume', 'create', '--type', VOLUME_TYPE,
                                '--size', str(size), *args, name)
        self.volume_status(volume['id'], 'available')
        return volume['id']

    def attach(self, server, volume):
        self.openstack('server', 'add', 'volume', server, volume)
        self.wait('volume %s attached to %s' % (volume, server),
                  lambda: server in self.attached_servers(volume))

    def detach(self, server, volume):
        self.openstack('server', 'remove', 'volume', server, volume,
                       parse=False)
        self.wait('volume %s detached from %s' % (volume, server),
                  lambda: server not in self.attached_servers(volume))

    def attached_servers(self, volume):
        info = self.openstack('volume', 'show', volume)
        return [a['server_id'] for a in info.get('attachments') or []]

    def delete_servers(self, *servers):
        servers = [s for s in servers if s]
        if servers:
            self.openstack('server', 'delete', '--wait', *servers,
                           parse=False, check=False, timeout=600)

    def delete_volumes(self, *volumes):
        """Delete volumes once nothing has them attached (best effort)."""
        def settled(volume):
            shown = self.openstack('volume', 'show', volume, check=False)
            if isinstance(shown, subprocess.CompletedProcess):
                return True     # the command failed: gone already
            return shown.get('status') in ('available', 'error')
        for volume in volumes:
            if volume:
                self.wait('volume %s to be deletable' % volume,
                          lambda v=volume: settled(v), timeout=120)
                self.openstack('volume', 'delete', volume, parse=False,
                               check=False)

    def compute_log_since_start(self):
        """nova-compute's log since tools/cloud last started it."""
        with open(self.layout.log_of('nova-compute'), errors='replace') as f:
            text = f.read()
        return text[text.rfind(cloud_mod.LOG_MARK):]

    # -- what every scenario needs ------------------------------------

    def ensure_image(self, name=IMAGE, properties=None):
        """The project's tiny guest as a public Glance image.

        Uploaded once; an image of an older build of the guest (another
        sha512 than Glance's ``os_hash_value``) is replaced. ``properties``:
        more image properties (another ``name`` for another set).
        """
        path = diskimage.build()
        digest = product_image.file_digest(path, 'sha512')
        wanted = dict(diskimage.glance_properties(), **(properties or {}))
        for found in self.openstack('image', 'list', '--name', name,
                                    admin=True):
            shown = self.openstack('image', 'show', found['ID'], admin=True)
            # The openstack command lists os_hash_value with the image's
            # properties (it is a top-level attribute in Glance's API).
            have = dict(shown.get('properties') or {}, **shown)
            if (have.get('os_hash_value') == digest
                    and have.get('status') == 'active'
                    and all(str(have.get(k)) == str(v)
                            for k, v in wanted.items())):
                return found['ID']
            common.progress('replacing Glance image %s (%s): another build '
                            'of the guest or other properties'
                            % (name, found['ID']))
            self.openstack('image', 'delete', found['ID'], admin=True,
                           parse=False)
        args = ['image', 'create', '--public', '--disk-format', 'raw',
                '--container-format', 'bare', '--file', path]
        for key, value in wanted.items():
            if key in ('disk_format', 'container_format'):
                continue
            if key in ('min_disk', 'min_ram'):
                args += ['--%s' % key.replace('_', '-'), str(value)]
            else:
                args += ['--property', '%s=%s' % (key, value)]
        return self.openstack(*args, name, admin=True, timeout=600)['id']

    def ensure_volume_type(self):
        """The multiattach volume type, as an operator creates it."""
        found = self.openstack('volume', 'type', 'list', admin=True)
        if not any(t['Name'] == VOLUME_TYPE for t in found):
            self.openstack('volume', 'type', 'create', '--property',
                           'multiattach=<is> True', VOLUME_TYPE, admin=True)
        return VOLUME_TYPE

    # -- what libvirt and the guests say -------------------------------

    def instance_name(self, server):
        return self.openstack('server', 'show', server, admin=True)[
            'OS-EXT-SRV-ATTR:instance_name']

    def domain_xml(self, server, inactive=False):
        args = ['virsh', '-c', 'qemu:///system', 'dumpxml']
        if inactive:
            args.append('--inactive')
        proc = subprocess.run(args + [self.instance_name(server)],
                              capture_output=True, text=True, timeout=60,
                              check=True)
        return proc.stdout

    def console(self, server, timeout=180):
        console = libvirtconsole.LibvirtConsole.open(
            self.instance_name(server))
        console.wait_ready(timeout=timeout)
        return console


def volume_disk(xml, volume_id):
    """The ``<disk>`` element of a volume in a domain's XML (or None)."""
    from lxml import etree
    root = etree.fromstring(xml.encode())
    for disk in root.findall('./devices/disk'):
        source = disk.find('source')
        if source is not None and (source.get('name') or '').endswith(
                'volume-%s' % volume_id):
            return disk
    return None


def disk_cache(disk):
    return disk.find('driver').get('cache')


def is_shareable(disk):
    return disk.find('shareable') is not None
