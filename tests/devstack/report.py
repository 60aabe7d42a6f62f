"""The summary of the last successful real devstack run, for the docs.

``write_summary(job, path)`` renders ``doc/source/devstack-run.md`` from the
job's ``phases.json`` and what the machine and devstack's trees say; the
job calls it only when every phase passed, so the page always describes a
run that passed.
"""

import datetime
import os
import platform
import re
import subprocess

import realjob

#: Every departure from a plain devstack run on a gate node, and why.
WORKAROUNDS = (
    ("`/bin/systemctl` is docker-systemctl-replacement's `systemctl3.py` "
     "(`dpkg-divert`, and `journalctl` likewise)",
     "PID 1 is not systemd here; devstack runs every service as a systemd "
     "unit and has no other way left. Each unit's output is in "
     "`/var/log/journal/<unit>.log`."),
    ("`systemd-journald.service` overridden by a no-op",
     "devstack restarts journald after setting its rate limits; there is no "
     "journald to restart."),
    ("`libvirtd.service` overridden: foreground (`Type=simple`), no "
     "`--timeout`, `/dev/kvm` hidden in libvirtd's mount namespace",
     "Debian's unit relies on socket activation to start libvirtd again "
     "after `--timeout 120`; the stand-in does no socket activation. A "
     "`/dev/kvm` that KVM cannot use (nested sandbox) makes libvirt "
     "re-probe QEMU on every define; the guests are TCG anyway "
     "(`LIBVIRT_TYPE=qemu`), as in the embedded stack."),
    ("`iscsid.service` overridden by a no-op",
     "devstack restarts iscsid on every compute for iSCSI volumes; it needs "
     "the kernel's iSCSI transport, which this machine kind cannot load. "
     "RBD volumes never use it."),
    ("libvirtd's read-write socket restricted to the `libvirt` group with "
     "`auth_unix_rw = \"none\"` (appended to `/etc/libvirt/libvirtd.conf` "
     "by the job's libvirtd wrapper)",
     "Debian's libvirtd asks polkit, over the D-Bus system bus, whether a "
     "non-root client may use `qemu:///system`; there is no D-Bus here, so "
     "nova-compute (the stack user) was refused. The group is what Debian's "
     "polkit rule grants, and devstack puts the stack user in it."),
    ("The job calls `systemctl` with a clean environment, from `/`",
     "the stand-in starts a unit with its caller's environment and working "
     "directory, which systemd never does."),
    ("`API_WORKERS=1`, `SERVICE_TIMEOUT=300`, `NOVA_READY_TIMEOUT=300`, "
     "`ENABLE_KSMTUNED=False`, `ENABLE_KSM=False`",
     "two cores; no KSM tuning daemon on a test host."),
    ("RabbitMQ, epmd and Apache bound to 127.0.0.1 before devstack starts "
     "them (`/etc/rabbitmq/rabbitmq-env.conf`, a drop-in for epmd's "
     "address, `/etc/apache2/ports.conf`)",
     "nothing this project starts may listen beyond loopback; Debian's "
     "defaults listen on every address and devstack leaves them."),
    ("devstack and requirements from snapshots, each service tree from its "
     "2026.2 sdist as a git repository of one commit; `ERROR_ON_CLONE=True`, "
     "`RECLONE=False`",
     "no git host is reachable from this machine kind."),
    ("upper-constraints pins raised where a 2026.2 service needs a newer "
     "release (listed above)",
     "the requirements snapshot predates nova 34.0.0's release."),
    ("`NOVA_SHARED_CACHE_DISTRO_LIBVIRT=True`: Debian 12's own libvirt 9.0 "
     "and QEMU 7.2, not bookworm-backports",
     "they are what the embedded stack and every other suite of this "
     "project run; a job that upgrades the host's libvirt would change "
     "them under those suites."),
    ("`NOVA_SHARED_CACHE_CEPH=embedded`",
     "devstack-plugin-ceph deploys Ceph with cephadm and container images; "
     "neither is possible here."),
    ("neutron-server with ML2 and no agent; servers with `--nic none`; "
     "Tempest without validation",
     "no Open vSwitch datapath or OVN on this machine kind; Nova still asks "
     "Neutron on every server read, delete, reboot and resize, so its API "
     "must answer."),
)


def _version(cmd, pattern):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True,
                             timeout=30).stdout
    except OSError:
        return 'unknown'
    found = re.search(pattern, out)
    return found.group(1) if found else 'unknown'


def _cpu():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def _stack_timings(job):
    """devstack's own "DevStack Component Timing" table (seconds)."""
    log = os.path.join(job.logs, 'stack.sh.log')
    try:
        with open(log, errors='replace') as f:
            text = f.read()
    except OSError:
        return []
    at = text.rfind('DevStack Component Timing')
    if at < 0:
        return []
    rows = []
    for line in text[at:].splitlines()[1:80]:
        found = re.match(r'^(?:.*\| )?([A-Za-z_][\w .-]*?)\s+(\d+)\s*$',
                         line)
        if found:
            rows.append((found.group(1), int(found.group(2))))
            if found.group(1).startswith('Total runtime'):
                break
    return rows


def write_summary(job, path):
    phases = job.phases()
    ended = datetime.datetime.fromtimestamp(
        phases['job']['ended'], datetime.timezone.utc)
    total = phases['job']['ended'] - phases['job']['started']
    lines = [
        '# The real devstack job: last successful run',
        '',
        '<!-- Written by tests/devstack/report.py at the end of a passing',
        '     `tools/run-tests --devstack`; do not edit by hand. -->',
        '',
        '`tools/run-tests --devstack` (`tests/devstack/run-real`) runs '
        "devstack's own `stack.sh` with this project's plugin on one "
        'Debian 12 machine, checks the shared disks through the `openstack` '
        "command, runs Tempest's multiattach selection, then `unstack.sh` "
        'and `clean.sh`, and rewrites this page when every phase passed. '
        'It is not part of the default test run. The times below are this '
        "machine's, with the Debian packages and Python distributions of "
        'earlier runs in its caches; a first run on a fresh machine also '
        'downloads every one of them.',
        '',
        '## The run',
        '',
        '| | |',
        '| --- | --- |',
        '| ended | %s UTC |' % ended.strftime('%Y-%m-%d %H:%M'),
        '| commit | `%s` |' % phases['job']['commit'],
        '| machine | %s, %d cores |' % (_cpu(), os.cpu_count()),
        '| whole job | %d min |' % round(total / 60),
        '| libvirt, QEMU | %s, %s (Debian 12) |' % (
            _version(['libvirtd', '--version'], r'(\d+\.\d+\.\d+)'),
            _version(['qemu-system-x86_64', '--version'],
                     r'version (\d+\.\d+\.\d+)')),
        '| Ceph | %s (embedded, one OSD) |' % _version(
            ['ceph', '--version'], r'version (\d+\.\d+\.\d+)'),
        '',
        '| phase | seconds |',
        '| --- | ---: |',
    ]
    for phase in realjob.PHASES:
        lines.append('| %s | %s |' % (phase, phases[phase]['seconds']))
    timings = _stack_timings(job)
    if timings:
        lines += ['', "Inside `stack.sh`, devstack's own component timing "
                  '(seconds):', '', '| component | seconds |',
                  '| --- | ---: |']
        lines += ['| %s | %d |' % row for row in timings]
    check = phases['check'].get('result', {})
    lines += ['', '## The shared disk, through the openstack command', '',
              'nova-compute ran `%s` (nova-cpu.conf and its log). One '
              'multiattach volume added with `openstack server add volume` '
              'to two servers gave, in `virsh dumpxml`, with `[shared_cache] '
              'cache_mode` at its default (`none`, which stock Nova 34 also '
              'gives a multiattach disk) and then, nova-compute restarted, '
              'at `directsync` (which only the extension gives):'
              % check.get('compute_driver_loaded'), '',
              '| cache_mode | domain | disk | shareable | cache |',
              '| --- | --- | --- | --- | --- |']
    for mode, passed in (('none', check), ('directsync',
                                           check.get('directsync') or {})):
        for domain, disks in sorted(passed.get('domains', {}).items()):
            for disk in disks:
                lines.append('| %s | %s | `%s` (%s) | %s | %s |' % (
                    mode, domain, disk['name'], disk['target'],
                    'yes' if disk['shareable'] else 'no', disk['cache']))
    audit = check.get('audit')
    if audit:
        lines += ['', '`nova-shared-cache audit --json` on the compute '
                  '(devstack\'s venv, nova-cpu.conf), with both servers '
                  'running: exit %(exit)s, %(domains)s domains, '
                  '%(shared_rows)s shared disks of the volume, '
                  '%(findings)s findings.' % audit]
    tempest = phases['tempest'].get('result', {})
    lines += ['', '## Tempest 47', '',
              "The lab's selection (`nova_shared_cache_lab.tempestrun`): "
              '%(passed)s passed, %(skipped)s skipped (expected), '
              '%(failed)s failed, %(not_run)s not run, in %(duration_s)s s.'
              % tempest, '']
    unstack = phases['unstack']
    lines += ['## unstack.sh and clean.sh', '',
              'After them nothing of the services, the plugin or its Ceph '
              'ran or listened, except what devstack never stops on any '
              'host (its unstack.sh and clean.sh have no step for them), '
              'which the job then stopped: %s.'
              % (', '.join(unstack.get('left_by_devstack') or []) or 'none'),
              '']
    bumps = phases['prepare'].get('constraint_bumps') or []
    lines += ['## upper-constraints raised', '']
    lines += ['- %s' % b for b in bumps] or ['- none']
    lines += ['', '## Workarounds, and why', '']
    for what, why in WORKAROUNDS:
        lines.append('- %s: %s' % (what, why))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
