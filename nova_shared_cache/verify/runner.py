"""``verify``: two probe servers, one multiattach volume, the API only.

Creates (all named ``nsc-verify-<nonce>``, the servers ``...-a``/``-b``):
a multiattach volume, a soft-anti-affinity server group (unless hosts are
asked for), two probe servers with a config drive and no network. Attaches
the volume to both, reads both consoles until both probes have reported,
deletes everything it created (on errors and on Ctrl-C or SIGTERM too;
``--keep`` leaves it) and reports.
"""

import base64
import dataclasses
import math
import secrets
import signal
import sys
import time

from nova_shared_cache import exception
from nova_shared_cache.verify import guest

COHERENT, STALE, ERROR = 0, 1, 2
RESULTS = {COHERENT: 'coherent', STALE: 'stale', ERROR: 'error'}
SCHEMA = 'nova-shared-cache/verify/1'
DEFAULT_IMAGE = 'nova-shared-cache-probe'
#: The property build-probe-image sets; its value is the protocol.
IMAGE_PROPERTY = 'nova_shared_cache_probe'
DEFAULT_PROBES = 40
MIN_RAM_MB = 128
#: Volume states that mean an attachment is still being made or removed.
_BUSY = ('attaching', 'detaching', 'reserved', 'in-use', 'creating',
         'downloading')


class Interrupted(Exception):
    """SIGTERM (or SIGINT) during the run."""


@dataclasses.dataclass
class Options:
    cloud: str = None
    image: str = DEFAULT_IMAGE
    flavor: str = None
    volume_type: str = None
    availability_zone: str = None
    hosts: list = dataclasses.field(default_factory=list)
    network: str = None
    probes: int = DEFAULT_PROBES
    keep: bool = False
    boot_timeout: int = 600
    attach_timeout: int = 300
    #: How long the probes may take once both servers have the volume.
    probe_timeout: int = 1800
    #: Seconds between two reads of the consoles.
    poll_interval: float = 3.0


def _fail(reason):
    raise exception.VerifyError(reason=reason)


def connect(cloud):
    """An openstacksdk connection: clouds.yaml ``cloud`` or OS_* variables."""
    try:
        import openstack
    except ImportError:
        _fail("openstacksdk is not installed here: pip install "
              "'nova-shared-cache[verify]' (or openstacksdk)")
    try:
        conn = openstack.connect(cloud=cloud)
        conn.authorize()
    except Exception as error:
        _fail('cannot log in to the cloud%s: %s' % (
            ' %s' % cloud if cloud else ' (OS_CLOUD or OS_* variables)',
            error))
    return conn


class Run:
    def __init__(self, conn, options, say=None, nonce=None):
        self.conn = conn
        self.options = options
        self.say = say or (lambda text: print('verify: %s' % text,
                                              file=sys.stderr, flush=True))
        self.nonce = nonce or secrets.token_hex(6)
        self.name = 'nsc-verify-%s' % self.nonce
        self.created = []           # (kind, resource) in creation order
        self.servers = {}           # role -> server
        self.volume = None
        self.group = None
        self.timings = {}
        self.logs = {}

    # -- lookups ---------------------------------------------------------

    def find_image(self):
        wanted = self.options.image
        image = self.conn.image.find_image(wanted, ignore_missing=True)
        if image is None:
            _fail('no image %r: build and upload the probe image with '
                  '"nova-shared-cache build-probe-image --upload" (or pass '
                  '--image)' % wanted)
        props = dict(image.properties or {})
        protocol = props.get(IMAGE_PROPERTY)
        if str(protocol) != str(guest.PROTOCOL):
            _fail('image %s (%s) is not a probe image of protocol %d '
                  '(property %s=%r): rebuild it with "nova-shared-cache '
                  'build-probe-image --upload"' % (
                      wanted, image.id, guest.PROTOCOL, IMAGE_PROPERTY,
                      protocol))
        if image.status != 'active':
            _fail('image %s (%s) is %s, not active'
                  % (wanted, image.id, image.status))
        return image

    def find_flavor(self, image):
        min_disk = max(1, image.min_disk or 0)
        min_ram = max(MIN_RAM_MB, image.min_ram or 0)
        if self.options.flavor:
            flavor = self.conn.compute.find_flavor(self.options.flavor,
                                                   ignore_missing=True)
            if flavor is None:
                _fail('no flavor %r' % self.options.flavor)
            if flavor.ram < min_ram or flavor.disk < min_disk:
                _fail('flavor %s has %d MiB and %d GiB; the probe image '
                      'needs %d MiB and %d GiB' % (
                          flavor.name, flavor.ram, flavor.disk, min_ram,
                          min_disk))
            return flavor
        fits = [f for f in self.conn.compute.flavors()
                if f.ram >= min_ram and f.disk >= min_disk]
        if not fits:
            _fail('no flavor with at least %d MiB of RAM and a %d GiB disk; '
                  'pass --flavor' % (min_ram, min_disk))
        return min(fits, key=lambda f: (f.ram, f.disk, f.vcpus, f.name))

    def find_network(self):
        if not self.options.network:
            return 'none'
        net = self.conn.network.find_network(self.options.network,
                                             ignore_missing=True)
        if net is None:
            _fail('no network %r' % self.options.network)
        return [{'uuid': net.id}]

    # -- creating ----------------------------------------------------------

    def _track(self, kind, resource):
        self.created.append((kind, resource))
        return resource

    def create_volume(self):
        probes = self.options.probes
        size = max(1, math.ceil(guest.cells_needed(probes) / 1024))
        attrs = {'name': self.name, 'size': size,
                 'description': 'nova-shared-cache verify %s' % self.nonce,
                 'metadata': {'nova_shared_cache_verify': self.nonce}}
        if self.options.volume_type:
            attrs['volume_type'] = self.options.volume_type
        self.say('creating volume %s (%d GiB%s)' % (
            self.name, size, ', type %s' % self.options.volume_type
            if self.options.volume_type else ', the default type'))
        volume = self._track('volume',
                             self.conn.block_storage.create_volume(**attrs))
        self.volume = volume
        volume = self.conn.block_storage.wait_for_status(
            volume, status='available', failures=['error'], interval=2,
            wait=self.options.attach_timeout)
        self.volume = volume
        if not volume.is_multiattach:
            _fail('volume %s of type %s is not multiattach: its volume type '
                  "needs the extra spec multiattach='<is> True' (pass "
                  '--volume-type with one that has it)' % (
                      volume.id, volume.volume_type))
        return volume

    def create_group(self):
        if self.options.hosts:
            return None
        try:
            group = self.conn.compute.create_server_group(
                name=self.name, policy='soft-anti-affinity')
        except Exception as error:
            self.say('no server group (%s): the scheduler may put both '
                     'servers on one host' % error)
            return None
        self.group = self._track('server_group', group)
        return group

    def create_servers(self, image, flavor, networks):
        for n, role in enumerate(guest.ROLES):
            data = guest.user_data(role, self.nonce, self.volume.id,
                                   self.options.probes)
            attrs = {
                'name': '%s-%s' % (self.name, role.lower()),
                'image_id': image.id, 'flavor_id': flavor.id,
                'networks': networks, 'config_drive': True,
                'user_data': base64.b64encode(data.encode()).decode(),
                'metadata': {'nova_shared_cache_verify': self.nonce,
                             'role': role},
            }
            if self.group is not None:
                attrs['scheduler_hints'] = {'group': self.group.id}
            if self.options.availability_zone:
                attrs['availability_zone'] = self.options.availability_zone
            if self.options.hosts:
                attrs['host'] = self.options.hosts[n % len(
                    self.options.hosts)]
            self.say('creating server %s (role %s%s)' % (
                attrs['name'], role, ', host %s' % attrs['host']
                if 'host' in attrs else ''))
            self.servers[role] = self._track(
                'server', self.conn.compute.create_server(**attrs))
        for role, server in list(self.servers.items()):
            self.servers[role] = self._wait_active(server)

    def _wait_active(self, server):
        deadline = time.monotonic() + self.options.boot_timeout
        while True:
            server = self.conn.compute.get_server(server.id)
            if server.status == 'ACTIVE':
                return server
            if server.status == 'ERROR':
                fault = (server.fault or {}).get('message', 'no fault given')
                _fail('server %s (%s) went to ERROR: %s'
                      % (server.name, server.id, fault))
            if time.monotonic() > deadline:
                _fail('server %s (%s) is %s after %d s, not ACTIVE' % (
                    server.name, server.id, server.status,
                    self.options.boot_timeout))
            time.sleep(2)

    def attach(self):
        for role in guest.ROLES:
            server = self.servers[role]
            self.say('attaching %s to %s' % (self.volume.id, server.name))
            self.conn.compute.create_volume_attachment(server, self.volume)
            self._wait_attached(server)

    def _wait_attached(self, server):
        deadline = time.monotonic() + self.options.attach_timeout
        while True:
            volume = self.conn.block_storage.get_volume(self.volume.id)
            servers = {a.get('server_id') for a in volume.attachments or []}
            if server.id in servers and volume.status == 'in-use':
                return
            if time.monotonic() > deadline:
                _fail('volume %s did not attach to %s (%s) in %d s (status '
                      '%s); "openstack server event list %s" shows why'
                      % (volume.id, server.name, server.id,
                         self.options.attach_timeout, volume.status,
                         server.id))
            if not any(a.volume_id == self.volume.id for a in
                       self.conn.compute.volume_attachments(server)):
                # Nova removed its block device mapping: the attach failed
                # (a refusal, a failed connection); the action says why.
                _fail('attaching volume %s to %s (%s) failed; "openstack '
                      'server event list %s" shows why' % (
                          volume.id, server.name, server.id, server.id))
            time.sleep(2)

    # -- the probes --------------------------------------------------------

    def read_consoles(self):
        for role, server in self.servers.items():
            out = self.conn.compute.get_server_console_output(server)
            self.logs[role] = guest.parse_console(
                (out or {}).get('output') or '', self.nonce, role)
        return self.logs

    def probe(self):
        deadline = time.monotonic() + self.options.probe_timeout
        boot_deadline = time.monotonic() + self.options.boot_timeout
        reported, failed_at = set(), None
        while True:
            logs = self.read_consoles()
            for role, log in logs.items():
                for step in ('booted', 'started', 'barrier', 'done'):
                    if getattr(log, step) and (role, step) not in reported:
                        reported.add((role, step))
                        self.say('server %s: %s' % (role, {
                            'booted': 'booted', 'started':
                            'found the volume, probing',
                            'barrier': 'met the other server on the volume',
                            'done': 'finished'}[step]))
            if all(log.done for log in logs.values()):
                return logs
            if any(log.errors for log in logs.values()):
                # The other probe stops at its next wait; give it a moment
                # to say so, then stop reading.
                failed_at = failed_at or time.monotonic()
                if time.monotonic() - failed_at > 30:
                    return logs
            silent = [r for r, log in sorted(logs.items())
                      if not log.booted and not log.errors]
            if silent and time.monotonic() > boot_deadline:
                _fail('server %s printed nothing of the probe on its console '
                      'in %d s; is %s a probe image? ("openstack console log '
                      'show %s" shows what it printed)' % (
                          silent[0], self.options.boot_timeout,
                          self.options.image, self.servers[silent[0]].id))
            if time.monotonic() > deadline:
                _fail('the probes did not finish in %d s (last lines: %s)' % (
                    self.options.probe_timeout, '; '.join(
                        '%s: %s' % (r, logs[r].last or 'nothing')
                        for r in sorted(logs))))
            time.sleep(self.options.poll_interval)

    # -- cleaning up -------------------------------------------------------

    def cleanup(self):
        """Delete what this run created; (deleted, left) as dicts."""
        deleted, left = [], []

        def row(kind, resource, why=None):
            entry = {'type': kind, 'id': resource.id,
                     'name': getattr(resource, 'name', None)}
            if why:
                entry['reason'] = why
            return entry
        servers = [r for k, r in self.created if k == 'server']
        for server in servers:
            try:
                self.conn.compute.delete_server(server, ignore_missing=True)
            except Exception as error:
                left.append(row('server', server, str(error)))
        for server in servers:
            if any(e['id'] == server.id for e in left):
                continue
            try:
                self.conn.compute.wait_for_delete(server, interval=2,
                                                  wait=300)
                deleted.append(row('server', server))
            except Exception as error:
                left.append(row('server', server, str(error)))
        for kind, resource in self.created:
            if kind == 'volume':
                try:
                    self._delete_volume(resource)
                    deleted.append(row(kind, resource))
                except Exception as error:
                    left.append(row(kind, resource, str(error)))
            elif kind == 'server_group':
                try:
                    self.conn.compute.delete_server_group(
                        resource, ignore_missing=True)
                    deleted.append(row(kind, resource))
                except Exception as error:
                    left.append(row(kind, resource, str(error)))
        return deleted, left

    def _delete_volume(self, volume):
        deadline = time.monotonic() + 300
        while True:
            current = self.conn.block_storage.find_volume(volume.id,
                                                          ignore_missing=True)
            if current is None:
                return
            if current.status not in _BUSY:
                break
            if time.monotonic() > deadline:
                raise exception.VerifyError(
                    reason='volume %s is still %s' % (volume.id,
                                                      current.status))
            time.sleep(2)
        self.conn.block_storage.delete_volume(volume, ignore_missing=True)
        self.conn.block_storage.wait_for_delete(volume, interval=2, wait=300)


def _on_signal(signum, frame):
    raise Interrupted('interrupted by signal %d' % signum)


def _set_signals(handler):
    """Set SIGINT/SIGTERM handlers (main thread only); the old ones."""
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:      # not the main thread
            pass
    return old


def _restore(old):
    for sig, handler in old.items():
        signal.signal(sig, handler)


def verify(options, conn=None, say=None, nonce=None):
    """Run the check; the report (a dict, as ``--json`` prints it)."""
    started = time.monotonic()
    if conn is None:
        conn = connect(options.cloud)
    run = Run(conn, options, say=say, nonce=nonce)
    report = {'schema': SCHEMA, 'command': 'verify', 'nonce': run.nonce,
              'name': run.name, 'cloud': options.cloud,
              'probes': {'requested': options.probes}, 'error': None,
              'kept': options.keep}
    old = _set_signals(_on_signal)
    phase_started = time.monotonic()
    try:
        image = run.find_image()
        flavor = run.find_flavor(image)
        networks = run.find_network()
        report['image'] = {'id': image.id, 'name': image.name}
        report['flavor'] = {'id': flavor.id, 'name': flavor.name}
        run.create_volume()
        run.create_group()
        run.create_servers(image, flavor, networks)
        run.attach()
        run.timings['setup_s'] = time.monotonic() - phase_started
        phase_started = time.monotonic()
        run.probe()
        run.timings['probe_s'] = time.monotonic() - phase_started
    except (exception.VerifyError, Interrupted, KeyboardInterrupt) as error:
        report['error'] = str(error) or 'interrupted'
        if isinstance(error, KeyboardInterrupt):
            report['error'] = 'interrupted (Ctrl-C)'
    except Exception as error:
        report['error'] = '%s: %s' % (type(error).__name__, error)
    finally:
        # A second Ctrl-C must not leave servers behind: cleanup has its
        # own bounded waits.
        _set_signals(signal.SIG_IGN)
        try:
            _describe(run, report)
            phase_started = time.monotonic()
            if options.keep:
                report['cleanup'] = {'deleted': [], 'left': [
                    {'type': k, 'id': r.id, 'name': getattr(r, 'name', None)}
                    for k, r in run.created]}
            else:
                if run.created:
                    run.say('deleting %d resources' % len(run.created))
                deleted, left = run.cleanup()
                report['cleanup'] = {'deleted': deleted, 'left': left}
            run.timings['cleanup_s'] = time.monotonic() - phase_started
        finally:
            _restore(old)
    run.timings['total_s'] = time.monotonic() - started
    report['timings_s'] = {k: round(v, 1) for k, v in run.timings.items()}
    return finish(report)


def _describe(run, report):
    report['volume'] = ({'id': run.volume.id, 'name': run.volume.name,
                         'type': run.volume.volume_type,
                         'size_gib': run.volume.size}
                        if run.volume is not None else None)
    servers = []
    for role, server in sorted(run.servers.items()):
        servers.append({'role': role, 'id': server.id, 'name': server.name,
                        'host_id': getattr(server, 'host_id', None),
                        'host': getattr(server, 'compute_host', None)})
    report['servers'] = servers
    host_ids = {s['host_id'] for s in servers if s['host_id']}
    report['same_host'] = (len(host_ids) == 1 if len(servers) == 2
                           and all(s['host_id'] for s in servers) else None)
    probes = report['probes']['requested']
    if len(run.logs) == 2:
        report['directions'] = directions(run.logs, probes)
        report['guest_errors'] = {r: log.errors for r, log in
                                  sorted(run.logs.items()) if log.errors}
    else:
        report['directions'] = None
        report['guest_errors'] = {}


def directions(logs, probes):
    """{'A->B': row, 'B->A': row}: each named by writer and reader."""
    return {'%s->%s' % (w, 'B' if w == 'A' else 'A'): guest.direction(
        logs, w, probes) for w in guest.ROLES}


def finish(report):
    """Decide the outcome from the directions and the error."""
    rows = list((report.get('directions') or {}).values())
    counts = {k: sum(r[k] for r in rows) for k in
              ('fresh', 'stale', 'other', 'timeout', 'missing')}
    report['probes'].update(completed=counts['fresh'] + counts['stale']
                            + counts['other'], **counts)
    problems = []
    if report.get('error'):
        problems.append(report['error'])
    for role, errors in (report.get('guest_errors') or {}).items():
        problems += ['server %s: %s' % (role, e) for e in errors]
    if counts['other']:
        problems.append('%d reads returned neither the token nor the '
                        "reader's earlier view" % counts['other'])
    if rows and (counts['timeout'] or counts['missing']) and not problems:
        problems.append('%d probes did not finish'
                        % (counts['timeout'] + counts['missing']))
    if counts['stale']:
        code = STALE
    elif problems or not rows:
        code = ERROR
    else:
        code = COHERENT
    report['problems'] = problems
    report['result'] = report['meaning'] = RESULTS[code]
    report['exit_code'] = code
    return report


def render(report):
    """The report for a terminal."""
    lines = ['nova-shared-cache verify: %s (exit %d)' % (
        report['result'], report['exit_code'])]
    if report.get('directions'):
        lines.append('%-8s %6s %6s %6s %6s %8s %10s %8s' % (
            'writes', 'probes', 'fresh', 'stale', 'other', 'timeout',
            'median ms', 'p95 ms'))
        for name, r in sorted(report['directions'].items()):
            lines.append('%-8s %6d %6d %6d %6d %8d %10s %8s' % (
                name, r['probes'], r['fresh'], r['stale'], r['other'],
                r['timeout'] + r['missing'], r['median_ms'], r['p95_ms']))
    servers = report.get('servers') or []
    if servers:
        where = {True: 'both on one host (hostId %s)' % servers[0]['host_id'],
                 False: 'on two hosts', None: 'host unknown'}[
                     report.get('same_host')]
        lines.append('servers: %s; %s' % (', '.join(
            '%s %s' % (s['role'], s['id']) for s in servers), where))
    for problem in report.get('problems') or []:
        lines.append('problem: %s' % problem)
    timings = report.get('timings_s') or {}
    lines.append('time: %s' % ', '.join('%s %.1f s' % (k[:-2], v)
                                        for k, v in timings.items()))
    cleanup = report.get('cleanup') or {}
    if report.get('kept'):
        lines.append('kept (--keep): %s' % ', '.join(
            '%s %s' % (r['type'], r['id']) for r in cleanup.get('left', [])))
    elif cleanup.get('left'):
        lines.append('LEFT BEHIND (delete by hand): %s' % ', '.join(
            '%s %s (%s)' % (r['type'], r['id'], r.get('reason'))
            for r in cleanup['left']))
    return '\n'.join(lines) + '\n'
