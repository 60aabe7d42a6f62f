"""The ``check``, ``tempest`` and ``unstack`` checks of the real devstack job.

Everything goes through what an operator of the devstack cloud has: the
``openstack`` command with devstack's ``/etc/openstack/clouds.yaml``
(cloud ``devstack-admin``), ``virsh`` on the compute, the processes and
the logs devstack's units write.
"""

import configparser
import glob
import json
import os
import re
import time
import types

from lxml import etree

import realjob
from realjob import JobError
from realjob import run
from realjob import say

CLOUDS_YAML = '/etc/openstack/clouds.yaml'
CLOUD = 'devstack-admin'
NOVA_CPU_CONF = '/etc/nova/nova-cpu.conf'
DRIVER = 'shared_cache.LibvirtSharedCacheDriver'
#: The operator command, from devstack's venv (the plugin installed it).
AUDIT = '/opt/stack/data/venv/bin/nova-shared-cache'
IMAGE = 'nsc-guest'
VOLUME_TYPE = 'multiattach'
#: name, MiB, vCPUs, root GiB (the lab cloud's; the alt one is resize's).
FLAVORS = (('nsc.tiny', 128, 1, 1), ('nsc.tiny.alt', 160, 1, 1))
#: TCG guests on two shared cores; a boot takes tens of seconds.
WAIT = 900


def journal_of(unit):
    """The stand-in's log of a devstack unit (``devstack@n-cpu``...)."""
    found = sorted(glob.glob('/var/log/journal/%s.service*.log' % unit))
    return found[0] if found else None


class OpenStack:
    """The openstack command of the job's venv, as devstack's admin."""

    def __init__(self, job):
        self.job = job
        self.bin = os.path.join(job.work, 'venv', 'bin', 'openstack')

    def env(self):
        return dict(os.environ, OS_CLIENT_CONFIG_FILE=CLOUDS_YAML,
                    OS_CLOUD=CLOUD)

    def __call__(self, *args, parse=True, timeout=WAIT, check=True):
        cmd = [self.bin] + list(args)
        if parse:
            cmd += ['-f', 'json']
        proc = run(cmd, env=self.env(), timeout=timeout, check=check)
        if not parse or proc.returncode != 0:
            return proc
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def wait_for(self, what, probe, wanted, failed=(), timeout=WAIT):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = probe()
            if value in wanted:
                return value
            if value in failed:
                raise JobError('%s went to %s' % (what, value))
            time.sleep(3)
        raise JobError('%s is %s after %d s, not %s'
                       % (what, value, timeout, '/'.join(wanted)))


def compute_driver():
    """What nova-compute runs: (configured, loaded, pids, log).

    The driver in nova-cpu.conf (devstack's unit runs nova-compute with
    it), the driver its log says it loaded, its pids and that log.
    """
    conf = configparser.RawConfigParser(strict=False)
    conf.read(NOVA_CPU_CONF)
    configured = conf.get('DEFAULT', 'compute_driver', fallback=None)
    pids = run(['pgrep', '-f', 'bin/nova-compute'], check=False).stdout.split()
    loaded = None
    log = journal_of('devstack@n-cpu')
    if log:
        with open(log, errors='replace') as f:
            for line in f:
                if 'Loading compute driver' in line:
                    loaded = line.split("Loading compute driver '", 1)[-1]
                    loaded = loaded.split("'", 1)[0]
    return configured, loaded, pids, log


def restart_compute(cache_mode, timeout=WAIT):
    """nova-compute again, with ``[shared_cache] cache_mode`` changed.

    Edits the one line in devstack's nova-cpu.conf (as an operator would),
    restarts devstack's unit and waits until the new process has updated
    its compute service record (its RPC server is up right after).
    """
    with open(NOVA_CPU_CONF) as f:
        text = f.read()
    new, count = re.subn(r'(?ms)(^\[shared_cache\][^\[]*?^cache_mode\s*=)'
                         r'[^\n]*', r'\g<1> %s' % cache_mode, text)
    if count != 1:
        raise JobError('no [shared_cache] cache_mode in %s' % NOVA_CPU_CONF)
    with open(NOVA_CPU_CONF, 'w') as f:
        f.write(new)
    log = journal_of('devstack@n-cpu')
    offset = os.path.getsize(log)
    realjob.systemctl('restart', 'devstack@n-cpu.service')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, 'rb') as f:
            f.seek(offset)
            if b'Compute_service record updated' in f.read():
                return
        time.sleep(3)
    raise JobError('nova-compute did not come back within %d s after a '
                   'restart with cache_mode = %s (see %s)'
                   % (timeout, cache_mode, log))


def rbd_disks(xml):
    """[{name, shareable, cache}] of the domain's RBD network disks."""
    out = []
    for disk in etree.fromstring(xml.encode()).findall('./devices/disk'):
        source = disk.find('source')
        if source is None or source.get('protocol') != 'rbd':
            continue
        driver = disk.find('driver')
        out.append({'name': source.get('name'),
                    'shareable': disk.find('shareable') is not None,
                    'cache': driver.get('cache') if driver is not None
                    else None,
                    'target': disk.find('target').get('dev')})
    return out


def ensure_flavors_and_image(os_):
    for name, ram, vcpus, disk in FLAVORS:
        if not isinstance(os_('flavor', 'show', name, check=False), dict):
            os_('flavor', 'create', '--ram', str(ram), '--vcpus', str(vcpus),
                '--disk', str(disk), '--public', name)
    image = os_('image', 'show', IMAGE, check=False)
    if not isinstance(image, dict):
        raise JobError('devstack did not upload %s (IMAGE_URLS); glance has '
                       'no image of that name' % IMAGE)
    from nova_shared_cache_lab import diskimage
    props = [a for key, value in sorted(diskimage.glance_properties().items())
             if key.startswith(('hw_', 'os_'))
             for a in ('--property', '%s=%s' % (key, value))]
    os_('image', 'set', *props, IMAGE, parse=False)
    return image['id']


class SharedDiskCheck:
    """Two servers, one multiattach volume, two shareable uncached disks.

    The volume is added with ``openstack server add volume``.
    """

    def __init__(self, job):
        self.job = job
        self.os = OpenStack(job)

    def run(self):
        configured, loaded, pids, log = compute_driver()
        result = {'compute_driver_configured': configured,
                  'compute_driver_loaded': loaded,
                  'nova_compute_pids': pids}
        if configured != DRIVER or loaded != DRIVER or not pids:
            raise JobError('nova-compute does not run %s: nova-cpu.conf says '
                           '%s, its log (%s) says it loaded %s, pids %s'
                           % (DRIVER, configured, log, loaded, pids))
        ensure_flavors_and_image(self.os)
        vtype = self.os('volume', 'type', 'show', VOLUME_TYPE)
        result['volume_type_properties'] = vtype.get('properties')
        made = []
        try:
            result.update(self._attach_two(made, 'none'))
        finally:
            self._remove(made)
        # Stock Nova 34 also makes a multiattach disk <shareable/> and
        # cache='none', so the pass above shows the chain works, not that
        # the extension shapes the disk. directsync is the extension's
        # alone: the same attach with [shared_cache] cache_mode = directsync
        # in nova-cpu.conf must give it.
        say('check: nova-compute again with [shared_cache] cache_mode = '
            'directsync')
        restart_compute('directsync')
        made = []
        try:
            result['directsync'] = self._attach_two(made, 'directsync')
        finally:
            self._remove(made)
            restart_compute('none')
        return result

    def _server_status(self, name):
        shown = self.os('server', 'show', name, check=False)
        return shown.get('status') if isinstance(shown, dict) else 'GONE'

    def _volume_status(self, name):
        shown = self.os('volume', 'show', name, check=False)
        return shown.get('status') if isinstance(shown, dict) else 'GONE'

    def _attach_two(self, made, cache):
        os_ = self.os
        say('check: a multiattach volume and two servers (--nic none)')
        volume = os_('volume', 'create', '--size', '1', '--type',
                     VOLUME_TYPE, 'nsc-devstack-shared')
        made.append(('volume', volume['id']))
        os_.wait_for('volume nsc-devstack-shared',
                     lambda: self._volume_status(volume['id']),
                     ('available',), ('error',))
        servers = []
        for name in ('nsc-devstack-a', 'nsc-devstack-b'):
            # --nic none needs compute API 2.37 or later.
            server = os_('--os-compute-api-version', '2.60', 'server',
                         'create', '--flavor', FLAVORS[0][0],
                         '--image', IMAGE, '--nic', 'none', name)
            made.append(('server', server['id']))
            servers.append(server['id'])
        for sid in servers:
            os_.wait_for('server %s' % sid, lambda: self._server_status(sid),
                         ('ACTIVE',), ('ERROR',))
        say('check: openstack server add volume, to both servers')
        for sid in servers:
            os_('--os-compute-api-version', '2.60', 'server', 'add',
                'volume', sid, volume['id'], parse=False)
            # Cinder reserves the volume until this attachment completes
            # and refuses another reservation meanwhile.
            os_.wait_for('volume %s in use' % volume['id'],
                         lambda: self._volume_status(volume['id']),
                         ('in-use',), ('error', 'error_attaching'))
        os_.wait_for('volume %s attachments' % volume['id'],
                     lambda: len(os_('volume', 'show', volume['id'])
                                 .get('attachments') or []),
                     (2,), timeout=WAIT)
        disks = {}
        for sid in servers:
            shown = os_('server', 'show', sid)
            domain = shown['OS-EXT-SRV-ATTR:instance_name']
            xml = run(['virsh', '-c', 'qemu:///system', 'dumpxml',
                       domain]).stdout
            disks[domain] = rbd_disks(xml)
        wanted = 'volume-%s' % volume['id']
        bad = []
        for domain, found in disks.items():
            shared = [d for d in found if d['name'].endswith('/' + wanted)]
            if len(shared) != 1:
                bad.append('%s has %d RBD disks of %s' % (
                    domain, len(shared), wanted))
                continue
            if not shared[0]['shareable'] or shared[0]['cache'] != cache:
                bad.append('%s: %s is shareable=%s cache=%s' % (
                    domain, wanted, shared[0]['shareable'],
                    shared[0]['cache']))
        if bad:
            raise JobError('the shared volume is not a shareable disk with '
                           'cache=%s in both domains: %s' % (
                               cache, '; '.join(bad)))
        say('check: both domains have %s as <shareable/> cache=%s'
            % (wanted, cache))
        return {'volume': volume['id'], 'domains': disks,
                'audit': self._audit(wanted)}

    def _audit(self, image):
        """The operator's audit on the devstack compute agrees."""
        proc = run([AUDIT, '--config-file', NOVA_CPU_CONF, 'audit',
                    '--json'], check=False, timeout=300)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise JobError('audit --json printed no JSON (exit %d): %s'
                           % (proc.returncode, proc.stderr[-2000:]))
        rows = [d for d in data['disks'] if d['image'].endswith('/' + image)]
        summary = {'exit': proc.returncode, 'domains': data['domains'],
                   'shared_rows': len(rows), 'findings': data['findings'],
                   'errors': data['errors'], 'warnings': data['warnings']}
        if proc.returncode != 0 or len(rows) != 2 or not all(
                r['shared'] and not r['findings'] for r in rows):
            raise JobError('nova-shared-cache audit on the devstack compute: '
                           '%s' % json.dumps(summary))
        say('check: nova-shared-cache audit: %d shared disks of %s, no '
            'finding' % (len(rows), image))
        return summary

    def _remove(self, made):
        os_ = self.os
        servers = [i for kind, i in made if kind == 'server']
        volumes = [i for kind, i in made if kind == 'volume']
        for sid in servers:
            os_('server', 'delete', sid, parse=False, check=False)
        for sid in servers:
            os_.wait_for('server %s deleted' % sid,
                         lambda: self._server_status(sid), ('GONE',))
        for vid in volumes:
            os_.wait_for('volume %s detached' % vid,
                         lambda: self._volume_status(vid),
                         ('available', 'error', 'GONE'))
            os_('volume', 'delete', vid, parse=False, check=False)
            os_.wait_for('volume %s deleted' % vid,
                         lambda: self._volume_status(vid), ('GONE',))


class DevstackCloud:
    """What the lab's tempestrun needs of a cloud, for devstack's."""

    def __init__(self, job):
        self.job = job
        self.secrets = {'admin': job.secret('admin')}
        root = os.path.join(job.work, 'tempest-root')
        self.layout = types.SimpleNamespace(
            root=root,
            log_of=lambda name: journal_of('devstack@n-cpu') or os.devnull)

    def bin(self, name):
        return os.path.join(self.job.work, 'venv', 'bin', name)

    def env(self):
        return OpenStack(self.job).env()

    def connection(self):
        import openstack
        os.environ.update(OS_CLIENT_CONFIG_FILE=CLOUDS_YAML)
        return openstack.connect(cloud=CLOUD)

    def pid(self, name):
        pids = run(['pgrep', '-f', 'bin/%s' % name],
                   check=False).stdout.split()
        return int(pids[0]) if pids else None

    def state(self):
        return {}


def run_tempest(job):
    from nova_shared_cache_lab import tempestrun
    os_ = OpenStack(job)
    image_id = ensure_flavors_and_image(os_)
    flavors = [os_('flavor', 'show', name)['id'] for name, *_ in FLAVORS]
    cloud = DevstackCloud(job)
    workspace = tempestrun.Workspace(cloud, 'devstack')
    conf = tempestrun.tempest_conf(cloud, image_id, flavors[0], flavors[1],
                                   workspace=workspace)
    # devstack's keystone is behind Apache at /identity, and it registers
    # Cinder as "block-storage" (the lab cloud: volumev3): read it.
    conf['identity']['uri_v3'] = 'http://127.0.0.1/identity/v3'
    catalog = {entry['Name']: entry['Type']
               for entry in os_('catalog', 'list')}
    conf['volume']['catalog_type'] = catalog['cinder']
    workspace.write(conf)
    result = workspace.run()
    summary = result.summary()
    tempestrun.record(os.path.join(job.work, 'tempest-results.json'), result)
    problems = result.problems()
    say('tempest: %s in %d s' % (result.counts, result.duration))
    if problems:
        raise JobError('tempest: %s (see %s)' % (
            '; '.join(problems), workspace.log_path))
    return {k: summary[k] for k in ('passed', 'skipped', 'failed', 'not_run',
                                    'duration_s')}


def _zombie(pid):
    """An exited process its parent has not reaped yet: runs nothing."""
    try:
        with open('/proc/%s/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except (OSError, IndexError):
        return True   # gone meanwhile


def leftovers():
    """What still runs or listens after unstack.sh and clean.sh."""
    left = []
    for name in realjob.SERVICE_PROCESSES:
        proc = run(['pgrep', '-a', '-f', name], check=False)
        for line in proc.stdout.splitlines():
            pid, _, cmd = line.partition(' ')
            if int(pid) == os.getpid() or 'pgrep' in cmd or _zombie(pid):
                continue
            left.append('%s (pid %s: %s)' % (name, pid, cmd[:120]))
    listening = run(['ss', '-Hltnp'], check=False).stdout.splitlines()
    for line in listening:
        found = re.search(r'users:\(\("([^"]+)"', line)
        name = found.group(1) if found else ''
        if name.startswith(realjob.SERVICE_PROCESSES):
            left.append('%s listening: %s'
                        % (name, ' '.join(line.split()[:4])))
    return sorted(set(left))
