"""Nova API operations on a shared volume, extension against stock Nova.

Runs on the lab cloud (``tools/cloud up``: keystone, nova, cinder on the
embedded Ceph ...) and times, through the real Compute and Block Storage
APIs, four operations on Cinder multiattach volumes:

- ``attach``: ``server add volume`` (POST os-volume_attachments) of the
  shared volume to a running server, until Cinder lists the server among
  the volume's attachments;
- ``detach``: ``server remove volume`` (DELETE os-volume_attachments),
  until Cinder no longer lists it;
- ``boot``: a new server booted from a multiattach volume (block device
  mapping, boot index 0), until the server is ACTIVE;
- ``reboot``: hard reboot of a server that has the shared volume attached,
  until it is ACTIVE again with no task.

The shared volume stays attached to a second server (the one that is
rebooted) the whole time, so every attach and detach is of a volume that
really is shared. Each time is taken from just before the API request to
the first poll (every ``--poll`` seconds, one GET) that shows the state.

nova-compute runs stock Nova's ``libvirt.LibvirtDriver`` and the
extension's ``shared_cache.LibvirtSharedCacheDriver`` in alternating blocks
(order ABBA..., ``tools/cloud up --stock|--extension``: only nova-compute
restarts; the servers keep running), so that drift of the machine hits both;
the first ``--warmup`` cycles after each switch are not timed.
Both run with ``[libvirt] disk_cachemodes = network=writeback`` (a caching
default for network disks, what the extension is for) and the extension's
default ``cache_mode = none``: then both drivers must give the shared disk
the same XML (``<shareable/>``, ``cache='none'``), which is checked after
every operation with ``virsh dumpxml``, as is the driver each nova-compute
start loaded (its log). The difference measured is the extension's own
work on these paths, not another cache mode. (``--options defaults``
runs both with Nova's defaults instead; here that changes no disk: every
RBD disk is a multiattach volume, which Nova itself makes ``cache='none'``,
and the root disks are local files.)

Set-up uses the ``openstack`` command as a user would (image, volume type,
volumes, servers, the first attach); the timed calls go through
openstacksdk's sessions, which cost less per poll than starting the
command. At the end the volumes and servers are deleted and nova-compute
gets back the driver and options it had (``--no-restore`` leaves it as the
last block ran). Run as root with the cloud up, with the cloud's venv::

    .venv-cloud/bin/python benchmarks/api_ops.py [--blocks 4] \
        [--per-block 6] [--poll 0.15]

(another Python re-runs the script with ``.venv-cloud/bin/python``).
"""

import os
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)

try:
    from nova_shared_cache_lab import cloud as cloud_mod
    import openstack  # noqa: F401
except ImportError:
    _venv = os.environ.get('NSC_CLOUD_VENV') or os.path.join(TOP,
                                                             '.venv-cloud')
    _python = os.path.join(_venv, 'bin', 'python')
    if os.path.exists(_python) and not os.environ.get('NSC_API_OPS_REEXEC'):
        os.environ['NSC_API_OPS_REEXEC'] = '1'
        os.execv(_python, [_python] + sys.argv)
    raise SystemExit('needs openstacksdk and the lab: run it with the '
                     'cloud venv (%s)' % _python)

import benchlib  # noqa: E402
from nova_shared_cache_lab import cloudcli  # noqa: E402
from nova_shared_cache_lab import cloudconf  # noqa: E402

OPERATIONS = ('attach', 'detach', 'boot', 'reboot')
LABELS = {
    'attach': 'server add volume (until attached)',
    'detach': 'server remove volume (until detached)',
    'boot': 'boot from a multiattach volume (until ACTIVE)',
    'reboot': 'hard reboot, shared volume attached (until ACTIVE)',
}
VARIANTS = ('stock', 'extension')
#: Extension / stock median; lower is better.
TARGET = 1.02
#: nova-compute's options in both variants (--options; see the module's
#: docstring). 'defaults': Nova's own (no cache mode set for any disk type).
COMPUTE_OPTIONS = {
    'caching': {'libvirt': {'disk_cachemodes': 'network=writeback'}},
    'defaults': {},
}
#: What the shared disk must be in the domain, with both drivers.
EXPECTED_CACHE = 'none'
#: What the extension logs when nova-compute starts with it.
EXTENSION_STARTED = 'nova-shared-cache enabled: cache_mode=none'
#: What it logs when its policy changes a disk Nova configured.
ENFORCED = 'Shared disk enforced for instance'
COMPUTE_API = '2.60'     # multiattach volumes need 2.60
OP_TIMEOUT = 300
#: Fewer samples per variant than this: no verdict (a smoke run).
MIN_FOR_VERDICT = 5


class BenchmarkError(Exception):
    pass


def block_order(blocks, first):
    """ABBA...: ``blocks`` blocks of each variant, ``first`` first."""
    second = VARIANTS[1] if first == VARIANTS[0] else VARIANTS[0]
    order = []
    for pair in range(blocks):
        order += [first, second] if pair % 2 == 0 else [second, first]
    return order


def p95(samples):
    samples = sorted(samples)
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=20, method='inclusive')[18]


class Api:
    """The timed calls: one request, then one GET per poll."""

    def __init__(self, cloud, poll):
        self.conn = cloud.connection(cloud_mod.CLOUD_NAME)
        self.admin = cloud.connection(cloud_mod.ADMIN_CLOUD)
        self.poll = poll
        self.polls = 0

    @staticmethod
    def _ok(resp, what):
        if resp.status_code >= 400:
            raise BenchmarkError('%s: HTTP %d %s' % (what, resp.status_code,
                                                     resp.text[:500]))
        return resp

    def _until(self, check, what, started, timeout=OP_TIMEOUT):
        """Seconds from ``started`` to the first poll where check() holds."""
        while True:
            self.polls += 1
            if check():
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise BenchmarkError('timed out after %ds waiting for %s'
                                     % (timeout, what))
            time.sleep(self.poll)

    def server(self, server_id, admin=False):
        conn = self.admin if admin else self.conn
        resp = conn.compute.get('/servers/%s' % server_id,
                                microversion=COMPUTE_API)
        if resp.status_code == 404:
            return None
        return self._ok(resp, 'GET server %s' % server_id).json()['server']

    def volume(self, volume_id):
        resp = self.conn.block_storage.get('/volumes/%s' % volume_id)
        return self._ok(resp, 'GET volume %s' % volume_id).json()['volume']

    def attached_to(self, volume_id):
        volume = self.volume(volume_id)
        if volume['status'] == 'error':
            raise BenchmarkError('volume %s is in error' % volume_id)
        return {a['server_id'] for a in volume.get('attachments') or []}

    def _settled(self, server_id, wanted='ACTIVE'):
        server = self.server(server_id)
        if server['status'] == 'ERROR':
            fault = (self.server(server_id, admin=True) or {}).get('fault')
            raise BenchmarkError('server %s is in ERROR: %s'
                                 % (server_id, fault))
        return (server['status'] == wanted
                and not server.get('OS-EXT-STS:task_state'))

    def wait_volume(self, volume_id, wanted):
        self._until(lambda: self._volume_is(volume_id, wanted),
                    'volume %s %s' % (volume_id, wanted), time.monotonic())

    def _volume_is(self, volume_id, wanted):
        status = self.volume(volume_id)['status']
        if status.startswith('error'):
            raise BenchmarkError('volume %s is %s' % (volume_id, status))
        return status == wanted

    def wait_server(self, server_id, wanted):
        self._until(lambda: self._settled(server_id, wanted),
                    'server %s %s' % (server_id, wanted), time.monotonic())

    def wait_attached(self, server_id, volume_id):
        self._until(lambda: server_id in self.attached_to(volume_id),
                    'volume %s attached to %s' % (volume_id, server_id),
                    time.monotonic())

    def attach(self, server_id, volume_id):
        started = time.monotonic()
        self._ok(self.conn.compute.post(
            '/servers/%s/os-volume_attachments' % server_id,
            json={'volumeAttachment': {'volumeId': volume_id}},
            microversion=COMPUTE_API), 'attach')
        return self._until(lambda: server_id in self.attached_to(volume_id),
                           'volume %s attached to %s' % (volume_id,
                                                         server_id), started)

    def detach(self, server_id, volume_id):
        started = time.monotonic()
        self._ok(self.conn.compute.delete(
            '/servers/%s/os-volume_attachments/%s' % (server_id, volume_id),
            microversion=COMPUTE_API), 'detach')
        return self._until(
            lambda: server_id not in self.attached_to(volume_id),
            'volume %s detached from %s' % (volume_id, server_id), started)

    def hard_reboot(self, server_id):
        started = time.monotonic()
        self._ok(self.conn.compute.post(
            '/servers/%s/action' % server_id,
            json={'reboot': {'type': 'HARD'}}, microversion=COMPUTE_API),
            'hard reboot')
        return self._until(lambda: self._settled(server_id),
                           'server %s ACTIVE after reboot' % server_id,
                           started)

    def boot_from_volume(self, name, flavor_id, volume_id):
        """(seconds to ACTIVE, server id)."""
        started = time.monotonic()
        resp = self._ok(self.conn.compute.post('/servers', json={'server': {
            'name': name, 'flavorRef': flavor_id, 'networks': 'none',
            'block_device_mapping_v2': [{
                'boot_index': 0, 'uuid': volume_id, 'source_type': 'volume',
                'destination_type': 'volume',
                'delete_on_termination': False}]}},
            microversion=COMPUTE_API), 'boot from volume')
        server_id = resp.json()['server']['id']
        try:
            took = self._until(lambda: self._settled(server_id),
                               'server %s ACTIVE' % server_id, started)
        except BenchmarkError:
            self.delete_server(server_id, volume_id)
            raise
        return took, server_id

    def delete_server(self, server_id, volume_id=None):
        """Delete a server; wait until it and its volume's use are gone."""
        started = time.monotonic()
        resp = self.conn.compute.delete('/servers/%s' % server_id)
        if resp.status_code != 404:
            self._ok(resp, 'delete server %s' % server_id)
        self._until(lambda: self.server(server_id) is None,
                    'server %s deleted' % server_id, started)
        if volume_id:
            self._until(lambda: self.volume(volume_id)['status']
                        == 'available', 'volume %s available' % volume_id,
                        started)

    def instance_name(self, server_id):
        return self.server(server_id, admin=True)[
            'OS-EXT-SRV-ATTR:instance_name']


class Facts:
    """What each variant was seen to run, for the results file."""

    def __init__(self):
        self.by_variant = {v: {'starts': [], 'disks': {}} for v in VARIANTS}

    def start(self, variant, record):
        self.by_variant[variant]['starts'].append(record)

    def disk(self, variant, operation, disk):
        seen = self.by_variant[variant]['disks'].setdefault(operation, {})
        key = '%s, %s' % ('shareable' if disk['shareable'] else
                          'not shareable', 'cache=%s' % disk['cache'])
        seen[key] = seen.get(key, 0) + 1


class Bench:

    def __init__(self, args):
        self.args = args
        os.environ.setdefault('NSC_TOP', TOP)
        self.cli = cloudcli.CloudCLI()
        self.api = Api(cloud_mod.Cloud(), args.poll)
        self.facts = Facts()
        self.times = {op: {v: [] for v in VARIANTS} for op in OPERATIONS}
        self.switches = []
        self.made = {'servers': [], 'volumes': []}
        self.tag = uuid.uuid4().hex[:6]
        self.options = COMPUTE_OPTIONS[args.options]
        self.clean_up_error = None
        self.load = {v: [] for v in VARIANTS}
        self.steps = {}

    # -- set-up, through the openstack command -------------------------------

    def set_up(self):
        """Image, volume type, volumes, servers: the openstack command.

        The commands are a user's; the waits for their results poll the
        API through the SDK (one ``openstack`` process per poll costs
        about two seconds of this machine's two cores).
        """
        cli, api = self.cli, self.api
        started = time.monotonic()
        image = cli.ensure_image()
        cli.ensure_volume_type()
        self.flavor_id = cli.openstack('flavor', 'show',
                                       cloudcli.FLAVOR)['id']
        started = self.step('image, volume type, flavor', started)
        servers = {}
        for role in ('peer', 'guest'):
            made = cli.openstack('server', 'create', '--flavor',
                                 cloudcli.FLAVOR, '--nic', 'none',
                                 '--image', image,
                                 'nsc-api-%s-%s' % (role, self.tag))
            self.made['servers'].append(made['id'])
            servers[role] = made['id']
        volumes = {}
        for role, extra in (('shared', ()),
                            ('boot', ('--image', image, '--bootable'))):
            made = cli.openstack('volume', 'create', '--type',
                                 cloudcli.VOLUME_TYPE, '--size', '1',
                                 *extra, 'nsc-api-%s-%s' % (role, self.tag))
            self.made['volumes'].append(made['id'])
            volumes[role] = made['id']
        started = self.step('create commands', started)
        for volume in volumes.values():
            api.wait_volume(volume, 'available')
        started = self.step('volumes available', started)
        for server in servers.values():
            api.wait_server(server, 'ACTIVE')
        started = self.step('servers ACTIVE', started)
        self.peer, self.guest = servers['peer'], servers['guest']
        self.shared, self.boot_volume = volumes['shared'], volumes['boot']
        cli.openstack('server', 'add', 'volume', self.peer, self.shared)
        api.wait_attached(self.peer, self.shared)
        started = self.step('attach to the peer', started)
        # A guest still booting may miss the unplug of a detach: wait for
        # its shell once (this guest is never rebooted).
        cli.console(self.guest).close()
        started = self.step('guest shell', started)
        self.names = {s: api.instance_name(s) for s in servers.values()}

    def step(self, name, started):
        """Record how long a step of the set-up took."""
        now = time.monotonic()
        self.steps[name] = now - started
        return now

    def clean_up(self):
        """Delete what set_up made (through the API: faster)."""
        api = self.api
        for server in self.made['servers']:
            api.conn.compute.delete('/servers/%s' % server)
        for server in self.made['servers']:
            api._until(lambda s=server: api.server(s) is None,
                       'server %s deleted' % server, time.monotonic())
        for volume in self.made['volumes']:
            api.wait_volume(volume, 'available')
            api._ok(api.conn.block_storage.delete('/volumes/%s' % volume),
                    'delete volume %s' % volume)

    # -- nova-compute's driver ---------------------------------------------

    def switch(self, variant, options=None, check=True):
        """nova-compute with ``variant``'s driver; the time it took.

        ``--switch compute`` (the default) does what ``tools/cloud up``
        does for nova-compute: write its own config file, restart it
        (only it: the servers keep running) and wait until it reports up.
        ``--switch tool`` runs ``tools/cloud up --stock|--extension``,
        which also checks the Debian packages and the cloud's venv
        (reinstalling this checkout into it when a file of it changed,
        which would change the code under test in the middle of a run)
        and every other service.
        """
        if options is None:
            options = self.options
        started = time.monotonic()
        if self.args.switch == 'tool':
            self.cli.configure(variant, options)
        else:
            cloud = cloud_mod.Cloud()
            cloud.write_compute_config(variant, options)
            name, project, confs = next(d for d in cloud_mod.DAEMONS
                                        if d[0] == 'nova-compute')
            if cloud.start_daemon(name, project, confs):
                cloud.wait_compute_up()
            # Our CloudCLI's idea of what runs is stale now.
            self.cli.driver = self.cli.options = None
        took = time.monotonic() - started
        if check:
            self.switches.append(took)
            self.check_driver(variant, took)

    def check_driver(self, variant, took=None):
        state = cloud_mod.Cloud().state()
        log = self.cli.compute_log_since_start()
        loaded = "Loading compute driver '%s'" % cloudconf.DRIVERS[variant]
        record = {'driver': state.get('driver'),
                  'compute_options': state.get('compute_options'),
                  'loaded': loaded in log,
                  'extension_started': EXTENSION_STARTED in log,
                  'switch_s': took}
        wrong = []
        if record['driver'] != variant:
            wrong.append('tools/cloud state says %s' % record['driver'])
        if record['compute_options'] != self.options:
            wrong.append('compute options %s' % record['compute_options'])
        if not record['loaded']:
            wrong.append('no "%s" in its log' % loaded)
        if record['extension_started'] != (variant == 'extension'):
            wrong.append('"%s" %sin its log' % (
                EXTENSION_STARTED, '' if record['extension_started']
                else 'not '))
        if wrong:
            raise BenchmarkError('nova-compute does not run %s: %s'
                                 % (variant, '; '.join(wrong)))
        self.facts.start(variant, record)

    def check_disk(self, variant, operation, server, volume):
        name = self.names.get(server) or self.api.instance_name(server)
        for inactive in (False, True):
            xml = _dumpxml(name, inactive)
            disk = cloudcli.volume_disk(xml, volume)
            if disk is None:
                raise BenchmarkError('%s: volume %s not in the %s of %s'
                                     % (operation, volume, 'definition'
                                        if inactive else 'domain', name))
            seen = {'shareable': cloudcli.is_shareable(disk),
                    'cache': cloudcli.disk_cache(disk)}
            self.facts.disk(variant, operation, seen)
            if not seen['shareable'] or seen['cache'] != EXPECTED_CACHE:
                raise BenchmarkError(
                    '%s with %s: the shared disk of %s is %s (%s)'
                    % (operation, variant, name, seen,
                       'definition' if inactive else 'live'))

    # -- one cycle of the four operations -------------------------------

    def cycle(self, variant, number, timed=True):
        api, settle = self.api, self.args.settle
        times = self.times if timed else {op: {variant: []}
                                          for op in OPERATIONS}
        if timed:
            # Whatever else loads the machine, per variant (cycle start).
            self.load[variant].append(os.getloadavg()[0])
        times['attach'][variant].append(
            api.attach(self.guest, self.shared))
        self.check_disk(variant, 'attach', self.guest, self.shared)
        time.sleep(settle)
        times['detach'][variant].append(
            api.detach(self.guest, self.shared))
        time.sleep(settle)
        times['reboot'][variant].append(api.hard_reboot(self.peer))
        self.check_disk(variant, 'reboot', self.peer, self.shared)
        time.sleep(settle)
        took, server = api.boot_from_volume(
            'nsc-api-bfv-%s-%d' % (self.tag, number), self.flavor_id,
            self.boot_volume)
        self.made['servers'].append(server)
        times['boot'][variant].append(took)
        try:
            self.check_disk(variant, 'boot', server, self.boot_volume)
        finally:
            api.delete_server(server, self.boot_volume)
            self.made['servers'].remove(server)
        time.sleep(settle)

    def run(self):
        args = self.args
        found = cloud_mod.Cloud().state()
        if not found.get('up'):
            raise SystemExit('the lab cloud is not up: tools/cloud up')
        found = {'driver': found.get('driver') or 'extension',
                 'compute_options': found.get('compute_options') or {}}
        started = time.monotonic()
        durations = {}
        enforced_before = self._enforced_lines()
        try:
            self.set_up()
            durations['set_up_s'] = time.monotonic() - started
            order = block_order(args.blocks, args.first)
            current, number = None, 0
            for variant in order:
                if variant != current:
                    self.switch(variant)
                    current = variant
                    # The first cycle after a start is often slower (up to
                    # 5 s against 1 s for an attach): untimed, so that
                    # both variants' samples are of a warm nova-compute
                    # however many starts each had.
                    for _ in range(args.warmup):
                        self.cycle(variant, number, timed=False)
                        number += 1
                for _ in range(args.per_block):
                    self.cycle(variant, number)
                    number += 1
                    print('.', end='', file=sys.stderr, flush=True)
            print(file=sys.stderr)
            durations['measured_s'] = (time.monotonic() - started
                                       - durations['set_up_s'])
        finally:
            cleaning = time.monotonic()
            try:
                self.clean_up()
            except Exception as err:
                # Never lose the measurements to a failed clean-up; say it.
                self.clean_up_error = '%s: %s' % (type(err).__name__, err)
                print('clean-up failed (%s); trying the openstack command'
                      % self.clean_up_error, file=sys.stderr)
                self.cli.delete_servers(*self.made['servers'])
                self.cli.delete_volumes(*self.made['volumes'])
            durations['clean_up_s'] = time.monotonic() - cleaning
            restoring = time.monotonic()
            if args.restore:
                self.switch(found['driver'], found['compute_options'],
                            check=False)
            durations['restore_s'] = time.monotonic() - restoring
        durations['total_s'] = time.monotonic() - started
        return self.results(order, found, durations,
                            self._enforced_lines() - enforced_before)

    def _enforced_lines(self):
        try:
            with open(self.cli.layout.log_of('nova-compute'),
                      errors='replace') as f:
                return f.read().count(ENFORCED)
        except OSError:
            return 0

    def results(self, order, found, durations, enforced):
        ops = {}
        for op in OPERATIONS:
            entry = {}
            for variant in VARIANTS:
                samples = self.times[op][variant]
                entry[variant] = dict(benchlib.summary(samples),
                                      p95=p95(samples), samples=samples)
            # Blocks of cycles share one start of nova-compute: the
            # interval resamples whole blocks.
            entry['ratio'] = benchlib.ratio_of_medians(
                self.times[op]['extension'], self.times[op]['stock'],
                target=TARGET, block=self.args.per_block)
            if min(entry['ratio']['n']) < MIN_FOR_VERDICT:
                # Nothing to resample: the 'interval' is one point.
                entry['ratio']['verdict'] = 'cannot tell'
            ops[op] = entry
        return {
            'operations': ops,
            'order': order,
            'switch_s': benchlib.summary(self.switches),
            'switches': self.switches,
            'variants': self.facts.by_variant,
            'compute_options': self.options,
            'found': found,
            'restored': self.args.restore,
            'enforced_log_lines': enforced,
            'polls': self.api.polls,
            'durations': durations,
            'switch_method': self.args.switch,
            'set_up_steps': self.steps,
            'clean_up_error': self.clean_up_error,
            'load_1min': {v: benchlib.summary(self.load[v])
                          for v in VARIANTS if self.load[v]},
            'commit': _commit(),
        }


def _commit():
    try:
        return subprocess.run(['git', '-C', TOP, 'rev-parse', '--short',
                               'HEAD'], capture_output=True, text=True,
                              timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _dumpxml(name, inactive):
    cmd = ['virsh', '-c', 'qemu:///system', 'dumpxml']
    if inactive:
        cmd.append('--inactive')
    return subprocess.run(cmd + [name], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def report(results, args):
    rows = []
    for op in OPERATIONS:
        r = results['operations'][op]
        rows.append([LABELS[op]]
                    + ['%.2f' % r[v][k] for v in VARIANTS
                       for k in ('median', 'p95')]
                    + [benchlib.fmt_ci(r['ratio']), r['ratio']['verdict']])
    text = benchlib.table(
        ['operation (s)', 'stock median', 'stock p95', 'extension median',
         'extension p95', 'ratio ext/stock [95% CI]',
         'verdict (<= %.2f)' % TARGET], rows)
    d = results['durations']
    text += ('\n\n%d blocks per variant (%s), %d cycles each (and %d '
             'untimed after each switch): %d samples '
             'per operation and variant; polled every %.2f s. Switching '
             'nova-compute (%s): %.1f s median (%d switches). Set-up %.0f s, '
             'measured %.0f s, total %.0f s.'
             % (args.blocks, ' '.join(v[0].upper() for v in results['order']),
                args.per_block, args.warmup, args.blocks * args.per_block,
                args.poll,
                args.switch, results['switch_s']['median'],
                results['switch_s']['n'],
                d['set_up_s'], d.get('measured_s', 0), d['total_s']))
    load = results.get('load_1min') or {}
    if len(load) == len(VARIANTS):
        text += (' Load average (1 min) at the cycles\' start, median: '
                 'stock %.1f, extension %.1f (2 cores).'
                 % (load['stock']['median'], load['extension']['median']))
    return text


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--blocks', type=int, default=4,
                        help='blocks of each variant (default 4)')
    parser.add_argument('--per-block', type=int, default=6,
                        help='cycles of the four operations per block '
                             '(default 6)')
    parser.add_argument('--first', choices=VARIANTS, default='stock',
                        help='the variant of the first block')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed cycles after each switch (default 1)')
    parser.add_argument('--poll', type=float, default=0.15,
                        help='seconds between polls (default 0.15)')
    parser.add_argument('--settle', type=float, default=1.0,
                        help='seconds between operations (default 1)')
    parser.add_argument('--options', choices=sorted(COMPUTE_OPTIONS),
                        default='caching',
                        help="nova-compute's options in both variants: "
                             "caching (default): [libvirt] disk_cachemodes "
                             "= network=writeback; defaults: Nova's")
    parser.add_argument('--switch', choices=('compute', 'tool'),
                        default='compute',
                        help='how nova-compute changes driver: restart it '
                             'alone (default) or tools/cloud up')
    parser.add_argument('--no-restore', dest='restore', action='store_false',
                        help="leave nova-compute as the last block ran "
                             "instead of giving it back its driver and "
                             "options")
    args = parser.parse_args()
    if args.blocks < 1 or args.per_block < 1:
        parser.error('--blocks and --per-block must be at least 1')
    results = Bench(args).run()
    benchlib.finish(args, 'api_ops', results, report(results, args))


if __name__ == '__main__':
    main()
