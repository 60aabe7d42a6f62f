"""devstack for real on this machine: the phases of tests/devstack/run-real.

Run by ``tests/devstack/run-real`` (as root, in the job's venv, with this
checkout and its lab on PYTHONPATH). Each phase records its start, end and
outcome in ``<work>/phases.json``; ``all`` runs them in order, stops at the
first failure, always runs ``unstack`` once ``stack`` started, and, when
every phase passed, rewrites ``doc/source/devstack-run.md``.

What a phase does and why (each workaround names what it works around):

prepare
  Debian packages devstack cannot install for itself here come first: a
  systemctl stand-in (docker-systemctl-replacement from the package index,
  ``dpkg-divert`` of ``/bin/systemctl``: PID 1 is not systemd), unit
  overrides (``systemd-journald`` restarts are a no-op, libvirtd runs in
  the foreground without ``--timeout`` and with ``/dev/kvm`` hidden as the
  embedded stack does, RabbitMQ and epmd bound to loopback). Then the
  ``stack`` user (devstack's ``tools/create-stack-user.sh``), devstack and
  requirements from their snapshots, requirements' upper-constraints with
  only the pins the 2026.2 services need bumped, each service's tree from
  its sdist as a git repository of one commit, this checkout (its working
  tree) as the plugin's tree, the tiny guest as ``nsc-guest.img``, and
  ``local.conf``.
stack
  ``./stack.sh`` as the stack user.
check
  What the plugin promises, through the openstack command: nova-compute
  runs ``shared_cache.LibvirtSharedCacheDriver``; a multiattach volume
  added to two servers with ``openstack server add volume`` is a
  ``<shareable/>`` RBD disk with ``cache='none'`` in both domains
  (``virsh dumpxml``); everything made is removed again.
tempest
  Tempest 47's multiattach selection (the lab's, ``tempestrun.SELECTION``)
  against the devstack cloud.
unstack
  ``./unstack.sh`` then ``./clean.sh`` as the stack user; then no process
  of any service devstack or the plugin started may be left, and nothing
  may listen on any port the services had.
"""

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEST = '/opt/stack'
STACK_USER = 'stack'
DEVSTACK = os.path.join(DEST, 'devstack')
REQUIREMENTS = os.path.join(DEST, 'requirements')
PLUGIN_TREE = os.path.join(DEST, 'nova-shared-cache')
SUMMARY = os.path.join(TOP, 'doc', 'source', 'devstack-run.md')

#: The service trees devstack would clone, from the 2026.2 sdists.
TREES = (
    ('keystone', 'keystone==30.0.0'),
    ('placement', 'openstack-placement==16.0.0'),
    ('glance', 'glance==33.0.0'),
    ('nova', 'nova==34.0.0'),
    ('cinder', 'cinder==29.0.0'),
    ('neutron', 'neutron==29.0.0'),
)
SYSTEMCTL_REPLACEMENT = 'docker-systemctl-replacement==1.7.1097'

#: Debian services devstack starts and neither unstack.sh nor clean.sh
#: stops (devstack's design: it leaves the host's web server, cache and
#: hypervisor alone).
DEVSTACK_LEAVES = ('apache2', 'memcached', 'libvirtd', 'virtlogd')

PHASES = ('prepare', 'stack', 'check', 'tempest', 'unstack')
#: Bounds per phase (seconds): a hung step fails its phase, not the job.
BOUNDS = {'prepare': 1800, 'stack': 5400, 'check': 1800, 'tempest': 5400,
          'unstack': 1200}

#: Processes devstack, the plugin and their services start; none may be
#: left after unstack.sh and clean.sh. (name as pgrep -f sees it)
SERVICE_PROCESSES = (
    'nova-compute', 'nova-conductor', 'nova-scheduler', 'nova-api',
    'cinder-volume', 'cinder-scheduler', 'cinder-api', 'glance',
    'keystone', 'placement', 'neutron-server', 'neutron-api',
    'uwsgi', 'mariadbd', 'mysqld', 'beam.smp', 'epmd', 'memcached',
    'apache2', 'libvirtd', 'virtlogd', 'qemu-system', 'ceph-mon',
    'ceph-osd', 'ceph-mgr',
)


class JobError(Exception):
    """A phase failed; the message says what and where to look."""


def say(msg):
    print('==> %s %s' % (time.strftime('%H:%M:%S', time.gmtime()), msg),
          file=sys.stderr, flush=True)


def run(cmd, check=True, timeout=600, **kwargs):
    kwargs.setdefault('stdin', subprocess.DEVNULL)
    proc = subprocess.run(cmd, timeout=timeout, text=True,
                          capture_output=True, **kwargs)
    if check and proc.returncode != 0:
        raise JobError('%s failed (%d): %s' % (
            ' '.join(shlex.quote(c) for c in cmd), proc.returncode,
            (proc.stderr or proc.stdout).strip()[-3000:]))
    return proc


def systemctl(*args, timeout=600, check=True):
    """Run systemctl as from a login shell, in /.

    The stand-in starts a unit with the caller's environment and directory
    (systemd would not), so a PYTHONPATH or a checkout's nova/ in the
    current directory would reach the service (seen: nova-compute imported
    nova.virt from this checkout and failed).
    """
    return run(['systemctl'] + list(args), check=check, timeout=timeout,
               cwd='/', env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin',
                             'LANG': 'C.UTF-8'})


def write(path, text, mode=0o644):
    from nova_shared_cache import atomicfile  # on sys.path from main()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomicfile.replace(path, text, mode)


class Job:

    def __init__(self, work):
        self.work = work
        self.logs = os.path.join(work, 'logs')
        os.makedirs(self.logs, exist_ok=True)
        self.phases_path = os.path.join(work, 'phases.json')
        self.image = os.path.join(work, 'images', 'nsc-guest.img')

    # -- bookkeeping --------------------------------------------------------

    def phases(self):
        try:
            with open(self.phases_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def record(self, phase, **values):
        data = self.phases()
        data.setdefault(phase, {}).update(values)
        write(self.phases_path, json.dumps(data, indent=1, sort_keys=True)
              + '\n')

    def secret(self, name):
        """A password of this job's cloud (made once, kept 0600)."""
        path = os.path.join(self.work, 'secrets.json')
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
        if name not in data:
            data[name] = secrets.token_hex(12)
            write(path, json.dumps(data), 0o600)
        return data[name]

    def as_stack(self, command, log, timeout):
        """Run a shell line as the stack user in devstack's tree.

        Output goes to ``log``; returns the return code. A timeout kills
        the whole process group.
        """
        say('as %s: %s (log: %s)' % (STACK_USER, command, log))
        with open(log, 'ab') as out:
            proc = subprocess.Popen(
                ['su', '-', STACK_USER, '-c',
                 'cd %s && %s' % (shlex.quote(DEVSTACK), command)],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise JobError('%s did not end within %d s; see %s'
                               % (command, timeout, log))

    # -- prepare ------------------------------------------------------------

    def prepare(self):
        import prepare as prep  # tests/devstack/prepare.py
        prep.Preparation(self).run()

    # -- stack --------------------------------------------------------------

    def stack(self):
        log = os.path.join(self.logs, 'stack.sh.log')
        rc = self.as_stack('./stack.sh', log, BOUNDS['stack'])
        if rc != 0:
            raise JobError('stack.sh failed (%d); the end of %s:\n%s' % (
                rc, log, tail(log, 40)))

    # -- check, tempest -----------------------------------------------------

    def check(self):
        import cloudcheck
        self.record('check', result=cloudcheck.SharedDiskCheck(self).run())

    def tempest(self):
        import cloudcheck
        self.record('tempest', result=cloudcheck.run_tempest(self))

    # -- unstack ------------------------------------------------------------

    def unstack(self):
        import cloudcheck
        log = os.path.join(self.logs, 'unstack.log')
        rc = self.as_stack('./unstack.sh', log, BOUNDS['unstack'] // 2)
        if rc != 0:
            raise JobError('unstack.sh failed (%d); see %s:\n%s'
                           % (rc, log, tail(log, 30)))
        log = os.path.join(self.logs, 'clean.log')
        rc = self.as_stack('./clean.sh', log, BOUNDS['unstack'] // 2)
        if rc != 0:
            raise JobError('clean.sh failed (%d); see %s:\n%s'
                           % (rc, log, tail(log, 30)))
        left = cloudcheck.leftovers()
        # Debian services devstack installs and never stops (unstack.sh and
        # clean.sh have no step for them, on any host): stopped here, and
        # named in the record. Anything else left is a failure.
        by_design = [u for u in DEVSTACK_LEAVES
                     if systemctl('is-active', u, check=False).returncode == 0]
        for unit in by_design:
            systemctl('stop', unit, check=False, timeout=120)
        self.record('unstack', left_by_devstack=by_design,
                    leftovers=[line for line in left
                               if not line.startswith(DEVSTACK_LEAVES)])
        left = cloudcheck.leftovers()
        self.record('unstack', after_stopping_those=left)
        if left:
            raise JobError('left running after unstack.sh and clean.sh '
                           '(and stopping %s): %s' % (
                               ', '.join(by_design) or 'nothing',
                               '; '.join(left)))

    def restore_host(self):
        import prepare as prep
        for what in prep.Preparation(self).restore_host():
            say('removed %s' % what)

    # -- driver -------------------------------------------------------------

    def run_phase(self, phase):
        say('phase %s' % phase)
        started = time.time()
        self.record(phase, started=started, ended=None, ok=None, error=None)
        try:
            getattr(self, phase)()
        except Exception as err:  # every failure ends the phase the same way
            self.record(phase, ended=time.time(), ok=False,
                        seconds=round(time.time() - started),
                        error=str(err))
            say('phase %s FAILED after %d s: %s' % (
                phase, time.time() - started, err))
            return False
        self.record(phase, ended=time.time(), ok=True,
                    seconds=round(time.time() - started))
        say('phase %s passed in %d s' % (phase, time.time() - started))
        return True

    def all(self):
        write(self.phases_path, '{}\n')
        self.record('job', commit=checkout_commit(), started=time.time())
        ok = True
        stacked = False
        for phase in PHASES:
            if phase == 'unstack' and not stacked:
                break
            if not ok and phase != 'unstack':
                continue
            if phase == 'stack':
                stacked = True
            ok = self.run_phase(phase) and ok
        self.record('job', ended=time.time(), ok=ok)
        if ok:
            import report
            report.write_summary(self, SUMMARY)
            say('summary written to %s' % SUMMARY)
        print(summary_line(self.phases()))
        return 0 if ok else 1


def tail(path, lines):
    try:
        with open(path, 'rb') as f:
            data = f.read()[-200000:]
    except OSError:
        return ''
    return '\n'.join(data.decode('utf-8', 'replace').splitlines()[-lines:])


def checkout_commit():
    proc = run(['git', '-C', TOP, 'rev-parse', 'HEAD'], check=False)
    commit = proc.stdout.strip() or 'unknown'
    dirty = run(['git', '-C', TOP, 'status', '--porcelain',
                 '--untracked-files=no'], check=False).stdout.strip()
    return commit + (' (with uncommitted changes)' if dirty else '')


def summary_line(phases):
    passed = sum(1 for p in PHASES if phases.get(p, {}).get('ok') is True)
    failed = sum(1 for p in PHASES if phases.get(p, {}).get('ok') is False)
    return '%d passed, %d failed' % (passed, failed)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='tests/devstack/run-real')
    parser.add_argument('--work', required=True)
    parser.add_argument('phase', nargs='?', default='all',
                        choices=('all',) + PHASES + ('status',
                                                     'restore-host'))
    args = parser.parse_args(argv)
    # The product and the lab from this checkout, for this process only.
    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), TOP,
                    os.path.join(TOP, 'lab')]
    job = Job(args.work)
    if args.phase == 'all':
        return job.all()
    if args.phase == 'status':
        print(json.dumps(job.phases(), indent=1, sort_keys=True))
        return 0
    if args.phase == 'restore-host':
        try:
            job.restore_host()
        except JobError as err:
            print('error: %s' % err, file=sys.stderr)
            return 1
        return 0
    return 0 if job.run_phase(args.phase) else 1


if __name__ == '__main__':
    sys.exit(main())
