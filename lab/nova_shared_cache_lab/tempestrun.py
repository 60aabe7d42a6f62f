"""Tempest 47 against the lab cloud (tools/cloud): workspace, selection, run.

``Workspace(cloud, label)`` lives under ``<cloud root>/tempest/<label>``:

- ``etc/tempest.conf``, rendered from the running cloud (``tempest_conf``):
  keystone v3 with the admin of the cloud's ``secrets.json``, dynamic
  credentials, the guest image and the two ``nsc.*`` flavors, the
  ``multiattach`` volume type, timeouts for TCG guests on a busy host, and
  every feature the cloud lacks switched off (no Swift, no guest network so
  no project networks and no SSH validation, one host so no migration).
  Every option is checked against Tempest's own option list first: Tempest
  ignores an unknown option, so a typo would silently change a run.
- ``include-list.txt``: ``SELECTION``, one anchored regex per test, with the
  reason beside every test that is expected to skip and, commented out,
  every multiattach test of Tempest left out and why.
- ``.stestr.conf`` and ``.stestr/`` (what ``tempest init`` makes), ``run.log``
  (``tempest run``'s output), ``tempest.log`` and ``last.subunit``.

``Workspace.run()`` runs ``tempest run --concurrency 1 --include-list`` with
the venv's tempest and reads ``stestr last --subunit`` into a ``Result``:
one outcome per test, the counts and the duration. ``Result.problems()``
lists what is wrong against the selection (a failure, a skip that is not
expected, a selected test that did not run).
"""

import argparse
import collections
import io
import json
import os
import re
import subprocess
import sys
import time

from nova_shared_cache_lab import cloud as cloud_mod
from nova_shared_cache_lab import cloudconf
from nova_shared_cache_lab import common

IMAGE = 'nsc-guest'
VOLUME_TYPE = 'multiattach'
FLAVOR, FLAVOR_ALT = (f[0] for f in cloud_mod.FLAVORS)
#: One whole Tempest run (eleven tests, a dozen TCG guests) at most.
RUN_TIMEOUT = 5400
#: Waits for servers, volumes and images. TCG guests boot in tens of
#: seconds, a boot volume is a copy of the image through cinder-volume, and
#: the machine's two cores are shared.
BUILD_TIMEOUT = 900

RUN, SKIP, EXCLUDED = 'run', 'skip', 'excluded'
Entry = collections.namedtuple('Entry', 'test expect reason')

_ATTACH = 'tempest.api.compute.volumes.test_attach_volume.'
_NO_SCSI = ("the guest image has no hw_scsi_model=virtio-scsi (its "
            "initramfs drives virtio-blk only) and the test logs into the "
            "guest over SSH (`lsblk -S`), which needs run_validation")

#: The selection: the whole test_attach_volume module (every class in it)
#: and Cinder's API-side multiattach test; then what was left out, and why.
SELECTION = (
    Entry(_ATTACH + 'AttachVolumeTestJSON.test_attach_detach_volume',
          RUN, ''),
    Entry(_ATTACH + 'AttachVolumeTestJSON.test_list_get_volume_attachments',
          RUN, ''),
    Entry(_ATTACH + 'AttachVolumeShelveTestJSON.'
          'test_attach_volume_shelved_or_offload_server', RUN, ''),
    Entry(_ATTACH + 'AttachVolumeShelveTestJSON.'
          'test_detach_volume_shelved_or_offload_server', RUN, ''),
    Entry(_ATTACH + 'AttachVolumeMultiAttachTest.'
          'test_list_get_volume_attachments_multiattach', RUN, ''),
    Entry(_ATTACH + 'AttachVolumeMultiAttachTest.'
          'test_boot_from_multiattach_volume', RUN, ''),
    Entry(_ATTACH + 'AttachVolumeMultiAttachTest.'
          'test_snapshot_volume_backed_multiattach', RUN, ''),
    Entry(_ATTACH + 'AttachVolumeMultiAttachTest.'
          'test_resize_server_with_multiattached_volume', RUN, ''),
    Entry(_ATTACH + 'AttachVolumeMultiAttachTest.'
          'test_boot_with_multiattach_volume_direct_lun', SKIP, _NO_SCSI),
    Entry(_ATTACH + 'AttachVolumeMultiAttachTest.'
          'test_boot_from_multiattach_volume_direct_lun', SKIP, _NO_SCSI),
    Entry('tempest.api.volume.admin.test_volume_retype.'
          'VolumeRetypeMultiattachTest.test_volume_retype_multiattach',
          RUN, ''),
    Entry('tempest.api.compute.admin.test_volume_swap.'
          'TestMultiAttachVolumeSwap.test_volume_swap_with_multiattach',
          EXCLUDED,
          "runs only with [compute-feature-enabled] swap_volume = True, "
          "which this cloud cannot claim: Nova's libvirt driver swaps only "
          "disks with a host path, not RBD network disks; and the swap it "
          "tries is refused by nova-api (409) before any compute code"),
    Entry('tempest.api.compute.admin.test_volumes_negative.'
          'UpdateMultiattachVolumeNegativeTest.'
          'test_multiattach_rw_volume_update_failure', EXCLUDED,
          "always skipped in Tempest 47 (skip_because bug 2112187)"),
    Entry('cinder_tempest_plugin.scenario.test_volume_multiattach.'
          'VolumeMultiattachTests', EXCLUDED,
          "cinder-tempest-plugin is not installed: both its multiattach "
          "scenarios need guest networking (keypair, Neutron security "
          "group, SSH into the guests to write and read the disk; "
          "test_multiattach_data_integrity also a LUKS volume type)"),
)

#: Statuses of testtools' StreamToDict.
PASSED, SKIPPED = ('success',), ('skip',)

_ERROR_LINE = re.compile(r' (ERROR|CRITICAL) |^Traceback ')
#: A log line of the extension's own loggers (oslo.log: level, then name).
_EXTENSION_LINE = re.compile(
    r' (DEBUG|INFO|WARNING|ERROR|CRITICAL) nova_shared_cache\.')
_DRIVER_LINE = re.compile(r"Loading compute driver '([^']+)'")
_START_MARK = b'\n==== started by tools/cloud at '


class TempestRunError(common.StackError):
    msg_fmt = "tempest: %(reason)s"


def include_regex(test):
    """The include-list line of one test id: that test and no other."""
    return '^%s(\\[|$)' % re.escape(test)


def include_list(selection=SELECTION):
    lines = ['# Tempest 47 against the nova-shared-cache lab cloud, written '
             'by nova_shared_cache_lab.tempestrun.',
             '# One anchored regex per test; an expected skip says why '
             'beside it; excluded tests are commented out with the reason.']
    for entry in selection:
        if entry.expect == RUN:
            lines.append(include_regex(entry.test))
        elif entry.expect == SKIP:
            lines.append('%s  # expected skip: %s' % (
                include_regex(entry.test), entry.reason))
        else:
            lines.append('# excluded: %s  # %s' % (entry.test, entry.reason))
    return '\n'.join(lines) + '\n'


def tempest_conf(cloud, image_id, flavor_id, flavor_alt_id,
                 volume_type=VOLUME_TYPE, workspace=None):
    """``{section: {option: value}}`` of tempest.conf for ``cloud``."""
    secrets = cloud.secrets
    conf = {
        'DEFAULT': {'debug': True, 'use_stderr': False},
        'oslo_concurrency': {},
        'auth': {
            'use_dynamic_credentials': True,
            'admin_username': 'admin',
            'admin_password': secrets['admin'],
            'admin_project_name': 'admin',
            'admin_domain_name': 'Default',
            'admin_user_domain_name': 'Default',
            'admin_project_domain_name': 'Default',
            'default_credentials_domain_name': 'Default',
            # No network, subnet or router per project: there is no agent
            # to serve them and no guest network to test.
            'create_isolated_networks': False,
        },
        'identity': {
            'uri_v3': cloudconf.url('keystone', '/v3'),
            'auth_version': 'v3',
            'region': cloudconf.REGION,
            'v3_endpoint_type': 'public',
        },
        'identity-feature-enabled': {'api_v2': False, 'api_v3': True},
        'service_available': {
            'nova': True, 'cinder': True, 'glance': True,
            # neutron-server answers (ML2, no agent): the attach tests'
            # base class skips without it (create_default_network). With
            # no isolated networks (below) no project has a network, so
            # servers are created with networks='none' (2.37+) or with
            # none found to allocate from (2.1), and never wait for ports.
            'neutron': True,
            'swift': False, 'horizon': False,
        },
        'compute': {
            'image_ref': image_id,
            'image_ref_alt': image_id,
            'flavor_ref': flavor_id,
            'flavor_ref_alt': flavor_alt_id,
            'region': cloudconf.REGION,
            'endpoint_type': 'publicURL',
            # The default (None) skips every test that needs 2.60.
            'max_microversion': 'latest',
            'min_compute_nodes': 1,
            'build_timeout': BUILD_TIMEOUT,
            'build_interval': 2,
            # Nova's default: shelve offloads at once.
            'shelved_offload_time': 0,
        },
        'compute-feature-enabled': {
            'volume_multiattach': True,
            # Resize to the one host ([DEFAULT] allow_resize_to_same_host).
            'resize': True,
            'shelve': True,
            'snapshot': True,
            # The guest's serial console is logged by virtlogd.
            'console_output': True,
            # One host: no migration of any kind.
            'live_migration': False,
            'cold_migration': False,
            'shelve_migrate': False,
            'block_migration_for_live_migration': False,
            'volume_backed_live_migration': False,
            # RBD network disks cannot be swapped by the libvirt driver.
            'swap_volume': False,
            # No Barbican, no guest agent, no graphical or serial console
            # proxy, no metadata service, no guest network.
            'attach_encrypted_volume': False,
            'change_password': False,
            'vnc_console': False,
            'spice_console': False,
            'serial_console': False,
            'metadata_service': False,
            'interface_attach': False,
            'config_drive': False,
        },
        'volume': {
            'region': cloudconf.REGION,
            'catalog_type': 'volumev3',
            'endpoint_type': 'publicURL',
            'volume_type_multiattach': volume_type,
            'max_microversion': 'latest',
            'backend_names': cloudconf.CINDER_BACKEND,
            'storage_protocol': 'ceph',
            'vendor_name': 'Open Source',
            'volume_size': 1,
            'build_timeout': BUILD_TIMEOUT,
            'build_interval': 2,
        },
        'volume-feature-enabled': {
            # No cinder-backup service runs.
            'backup': False,
            'snapshot': True,
            'clone': True,
            'multi_backend': False,
            'manage_volume': False,
            'manage_snapshot': False,
        },
        'image': {
            'region': cloudconf.REGION,
            'endpoint_type': 'publicURL',
            'build_timeout': BUILD_TIMEOUT,
            'build_interval': 2,
        },
        'image-feature-enabled': {'api_v2': True, 'import_image': False},
        'validation': {
            # No guest network: no SSH, no ping, no floating IP.
            'run_validation': False,
        },
    }
    if workspace is not None:
        conf['DEFAULT'].update(log_dir=workspace.root, log_file='tempest.log')
        conf['oslo_concurrency']['lock_path'] = os.path.join(
            workspace.root, 'lock')
    return conf


def check_options(conf):
    """Every option of ``conf`` is one Tempest knows, or TempestRunError."""
    from oslo_log import _options as oslo_log_options
    from tempest import config as tempest_config
    known = collections.defaultdict(set)
    for group, opts in tempest_config.list_opts():
        name = getattr(group, 'name', group) or 'DEFAULT'
        known[name].update(o.dest for o in opts)
    # [DEFAULT]'s logging options are oslo.log's, registered by Tempest.
    known['DEFAULT'].update(
        o.dest for o in (oslo_log_options.common_cli_opts
                         + oslo_log_options.logging_cli_opts
                         + oslo_log_options.generic_log_opts
                         + oslo_log_options.log_opts))
    known['oslo_concurrency'].add('lock_path')
    unknown = ['[%s] %s' % (section, option)
               for section, options in conf.items()
               for option in options if option not in known[section]]
    if unknown:
        raise TempestRunError(reason="tempest.conf options Tempest does not "
                                     "know: %s" % ', '.join(unknown))


def find_resources(cloud, image_name=IMAGE, volume_type=VOLUME_TYPE):
    """(image id, flavor id, alt flavor id) of the running cloud."""
    conn = cloud.connection()
    image = conn.image.find_image(image_name)
    if image is None:
        raise TempestRunError(reason="no image %r in Glance (the cloud "
                                     "tests' guest_image fixture uploads it)"
                              % image_name)
    if not any(t.name == volume_type
               for t in conn.block_storage.types()):
        raise TempestRunError(reason="no volume type %r (the cloud tests' "
                                     "volume_type fixture creates it)"
                              % volume_type)
    flavors = []
    for name in (FLAVOR, FLAVOR_ALT):
        flavor = conn.compute.find_flavor(name)
        if flavor is None:
            raise TempestRunError(reason="no flavor %r (tools/cloud up makes "
                                         "it)" % name)
        flavors.append(flavor.id)
    return image.id, flavors[0], flavors[1]


def remove_leftovers(cloud, timeout=600):
    """Delete what an interrupted Tempest run left; the names removed.

    Dynamic credentials make projects and users named ``tempest-*`` and
    delete them (with their servers and volumes) in their class cleanups;
    a run that was killed leaves them. Servers go first (volumes attached
    to them cannot be deleted), then snapshots, volumes, users, projects.
    """
    conn = cloud.connection()
    projects = [p for p in conn.identity.projects()
                if p.name.startswith('tempest-')]
    removed = []
    for project in projects:
        servers = list(conn.compute.servers(all_projects=True,
                                            project_id=project.id))
        for server in servers:
            conn.compute.delete_server(server, ignore_missing=True)
            removed.append('server %s' % server.name)
        for server in servers:
            conn.compute.wait_for_delete(server, wait=timeout)
        volumes = list(conn.block_storage.volumes(all_projects=True,
                                                  project_id=project.id))
        for snapshot in conn.block_storage.snapshots(all_projects=True,
                                                     project_id=project.id):
            conn.block_storage.delete_snapshot(snapshot, ignore_missing=True)
            conn.block_storage.wait_for_delete(snapshot, wait=timeout)
            removed.append('snapshot %s' % snapshot.name)
        for volume in volumes:
            conn.block_storage.delete_volume(volume, ignore_missing=True,
                                             force=volume.status not in (
                                                 'available', 'error'))
            removed.append('volume %s' % volume.name)
        for volume in volumes:
            conn.block_storage.wait_for_delete(volume, wait=timeout)
    for user in conn.identity.users():
        if user.name.startswith('tempest-'):
            conn.identity.delete_user(user, ignore_missing=True)
            removed.append('user %s' % user.name)
    for project in projects:
        conn.identity.delete_project(project, ignore_missing=True)
        removed.append('project %s' % project.name)
    return removed


class Outcome(collections.namedtuple('Outcome', 'status reason seconds')):
    """One test's status (testtools' names), skip reason, duration."""


class Result:

    def __init__(self, label, tests, duration, returncode, compute,
                 selection=SELECTION):
        self.label = label
        #: {test id without [attrs]: Outcome}; setUpClass/tearDownClass
        #: entries keep their own ids.
        self.tests = tests
        self.duration = duration
        self.returncode = returncode
        #: What nova-compute did over the run (``ComputeLog.watch``).
        self.compute = compute
        self.selection = selection

    def count(self, statuses):
        return sum(1 for o in self.tests.values() if o.status in statuses)

    @property
    def counts(self):
        passed = self.count(PASSED)
        skipped = self.count(SKIPPED)
        return {'passed': passed, 'skipped': skipped,
                'failed': len(self.tests) - passed - skipped,
                'not_run': len(self.missing())}

    def missing(self):
        return [e.test for e in self.selection
                if e.expect != EXCLUDED and e.test not in self.tests]

    def problems(self):
        """What is wrong against the selection, one line each."""
        expected = {e.test: e for e in self.selection}
        out = ['%s did not run' % test for test in self.missing()]
        for test, outcome in sorted(self.tests.items()):
            entry = expected.get(test)
            if outcome.status in SKIPPED:
                if entry is None or entry.expect != SKIP:
                    out.append('%s skipped unexpectedly: %s'
                               % (test, outcome.reason))
            elif outcome.status not in PASSED:
                out.append('%s: %s' % (test, outcome.status))
            elif entry is None:
                out.append('%s ran but is not in the selection' % test)
            elif entry.expect == EXCLUDED:
                out.append('%s is excluded but ran' % test)
        if self.returncode not in (0, None) and not out:
            out.append('tempest run exited %d with every test accounted for'
                       % self.returncode)
        return out

    def summary(self):
        return dict(self.counts, label=self.label,
                    duration_s=round(self.duration, 1),
                    returncode=self.returncode,
                    compute=self.compute,
                    tests={t: {'status': o.status, 'seconds': o.seconds,
                               **({'reason': o.reason} if o.reason else {})}
                           for t, o in sorted(self.tests.items())})


def parse_subunit(data):
    """``{test id: Outcome}`` from a subunit v2 byte stream."""
    import subunit
    import testtools
    tests = {}

    def on_test(test):
        if test['status'] in ('exists', None):
            return
        reason = ''
        details = test.get('details') or {}
        if 'reason' in details:
            reason = details['reason'].as_text().strip()
        start, end = (test.get('timestamps') or [None, None])[:2]
        seconds = (round((end - start).total_seconds(), 1)
                   if start and end else None)
        tests[strip_attrs(test['id'])] = Outcome(test['status'], reason,
                                                 seconds)

    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        subunit.ByteStreamToStreamResult(io.BytesIO(data)).run(result)
    finally:
        result.stopTestRun()
    return tests


def strip_attrs(test_id):
    """``pkg.Class.test_x[id-...,slow]`` -> ``pkg.Class.test_x``."""
    return re.sub(r'\[[^\]]*\]$', '', test_id)


class ComputeLog:
    """nova-compute's log (``log/nova-compute.log``) over a run."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.path = cloud.layout.log_of('nova-compute')

    def _read(self):
        try:
            with open(self.path, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            return b''

    def size(self):
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def current_section(self):
        """The log since the running nova-compute's start.

        tools/cloud writes a mark into the log before each start.
        """
        data = self._read()
        if _START_MARK in data:
            data = data[data.rfind(_START_MARK) + 1:]
        return data.decode('utf-8', 'replace')

    def current_driver(self):
        """The compute driver the running nova-compute loaded (or None)."""
        found = _DRIVER_LINE.findall(self.current_section())
        return found[-1] if found else None

    def lines_since(self, offset):
        return self._read()[offset:].decode('utf-8', 'replace').splitlines()

    def watch(self, before):
        """What changed since ``before`` (from ``snapshot()``)."""
        after = self.snapshot()
        lines = self.lines_since(before['log_offset'])
        errors = [line for line in lines if _ERROR_LINE.search(line)]
        return {
            'pid_before': before['pid'], 'pid_after': after['pid'],
            'driver': after['driver'],
            'restarted': before['pid'] != after['pid'],
            'error_lines': len(errors),
            'first_errors': errors[:10],
            'extension_lines': [line for line in lines
                                if _EXTENSION_LINE.search(line)][:50],
        }

    def snapshot(self):
        return {'pid': self.cloud.pid('nova-compute'),
                'log_offset': self.size(),
                'driver': self.current_driver()}


class Workspace:

    def __init__(self, cloud, label):
        self.cloud = cloud
        self.label = label
        self.root = os.path.join(cloud.layout.root, 'tempest', label)
        self.conf_path = os.path.join(self.root, 'etc', 'tempest.conf')
        self.list_path = os.path.join(self.root, 'include-list.txt')
        self.log_path = os.path.join(self.root, 'run.log')
        self.subunit_path = os.path.join(self.root, 'last.subunit')

    @property
    def tempest(self):
        return self.cloud.bin('tempest')

    def env(self):
        env = self.cloud.env()
        env['TEMPEST_CONFIG_DIR'] = os.path.dirname(self.conf_path)
        env['TEMPEST_CONFIG'] = os.path.basename(self.conf_path)
        env['PYTHON'] = self.cloud.bin('python')
        return env

    def write(self, conf, selection=SELECTION):
        check_options(conf)
        os.makedirs(os.path.join(self.root, 'lock'), exist_ok=True)
        # The admin password is in it.
        cloud_mod._write(self.conf_path, cloudconf.render(conf), 0o600)
        cloud_mod._write(self.list_path, include_list(selection), 0o644)
        # What `tempest init` writes: discovery from the installed Tempest.
        import tempest
        top = os.path.dirname(os.path.dirname(tempest.__file__))
        cloud_mod._write(os.path.join(self.root, '.stestr.conf'),
                         '[DEFAULT]\ntest_path=%s\ntop_dir=%s\n'
                         'group_regex=([^\\.]*\\.)*\n' % (
                             os.path.join(os.path.dirname(tempest.__file__),
                                          'test_discover'), top), 0o644)
        if not os.path.isdir(os.path.join(self.root, '.stestr')):
            proc = subprocess.run([self.cloud.bin('stestr'), 'init'],
                                  cwd=self.root, env=self.env(),
                                  capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise TempestRunError(reason="stestr init failed in %s: %s"
                                      % (self.root, proc.stderr.strip()))

    def _tempest(self, args, timeout, log=None):
        cmd = [self.tempest] + args
        out = open(log, 'ab') if log else subprocess.PIPE
        try:
            proc = subprocess.Popen(cmd, cwd=self.root, env=self.env(),
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                stdout, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                raise TempestRunError(reason="tempest %s did not finish "
                                             "within %ss (see %s)" % (
                                                 args[0], timeout,
                                                 log or 'its output'))
        finally:
            if log:
                out.close()
        return proc.returncode, (stdout or b'').decode('utf-8', 'replace')

    def listed(self):
        """The test ids the include list selects (Tempest's discovery)."""
        rc, out = self._tempest(['run', '--list-tests', '--include-list',
                                 self.list_path], timeout=600)
        if rc != 0:
            raise TempestRunError(reason="tempest run --list-tests failed "
                                         "(%d): %s" % (rc, out[-2000:]))
        return [strip_attrs(line.strip()) for line in out.splitlines()
                if line.startswith(('tempest.', 'cinder_tempest_plugin.'))]

    def check_selection(self, selection=SELECTION):
        """Each selected test exists and the list selects nothing else."""
        listed = self.listed()
        wanted = [e.test for e in selection if e.expect != EXCLUDED]
        wrong = ([t for t in wanted if listed.count(t) != 1]
                 + [t for t in listed if t not in wanted])
        if wrong:
            raise TempestRunError(reason="the include list does not select "
                                         "exactly the selection: %s"
                                  % ', '.join(wrong))
        return listed

    def run(self, timeout=RUN_TIMEOUT, selection=SELECTION):
        """Run the selection; a ``Result`` (raises only if nothing ran)."""
        self.check_selection(selection)
        left = remove_leftovers(self.cloud)
        if left:
            common.progress('tempest: removed what an earlier run left: %s'
                            % ', '.join(left))
        for stale in (self.subunit_path,):
            if os.path.exists(stale):
                os.unlink(stale)
        compute_log = ComputeLog(self.cloud)
        before = compute_log.snapshot()
        with open(self.log_path, 'ab') as log:
            log.write(b'\n==== tempest run (%s) at %s\n' % (
                self.label.encode(),
                time.strftime('%Y-%m-%d %H:%M:%S').encode()))
        started = time.monotonic()
        rc, _ = self._tempest(['run', '--concurrency', '1',
                               '--include-list', self.list_path],
                              timeout=timeout, log=self.log_path)
        duration = time.monotonic() - started
        compute = compute_log.watch(before)
        last = subprocess.run([self.cloud.bin('stestr'), 'last',
                               '--subunit'], cwd=self.root, env=self.env(),
                              capture_output=True, timeout=120)
        if not last.stdout:
            raise TempestRunError(reason="no results from tempest run (exit "
                                         "%d); see %s" % (rc, self.log_path))
        with open(self.subunit_path, 'wb') as f:
            f.write(last.stdout)
        return Result(self.label, parse_subunit(last.stdout), duration, rc,
                      compute, selection)


def record(path, result):
    """Merge ``result``'s summary into the JSON file ``path`` by label."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    data[result.label] = result.summary()
    cloud_mod._write(path, json.dumps(data, indent=1, sort_keys=True) + '\n',
                     0o644)
    return data


def results_path(cloud):
    return os.path.join(cloud.layout.root, 'tempest', 'results.json')


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m nova_shared_cache_lab.tempestrun',
        description="Tempest's multiattach selection against the running "
                    "lab cloud (hold the stack lock: the cloud is shared).")
    parser.add_argument('action', choices=('list', 'conf', 'run'))
    parser.add_argument('--label', default=None,
                        help='workspace name (default: the driver '
                             'nova-compute runs)')
    args = parser.parse_args(argv)
    if args.action == 'list':
        sys.stdout.write(include_list())
        return 0
    cloud = cloud_mod.Cloud()
    label = args.label or cloud.state().get('driver') or 'cloud'
    try:
        workspace = Workspace(cloud, label)
        workspace.write(tempest_conf(cloud, *find_resources(cloud),
                                     workspace=workspace))
        if args.action == 'conf':
            print(workspace.conf_path)
            return 0
        result = workspace.run()
    except common.StackError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    record(results_path(cloud), result)
    print(json.dumps(dict(result.counts, duration_s=round(result.duration),
                          label=label)))
    for line in result.problems():
        print('problem: %s' % line)
    return 1 if result.problems() else 0


if __name__ == '__main__':
    sys.exit(main())
