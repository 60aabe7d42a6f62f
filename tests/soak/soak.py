"""A bounded fault soak of nova-shared-cache on the real embedded stack.

Two TCG guests share one multiattach RBD volume through
LibvirtSharedCacheDriver (Nova's own libvirt driver code on the real
libvirtd, real Ceph), with the libvirt qemu hook installed for real from a
throwaway venv. Then, until the time is up, one cycle after another, each
with a step, a fault and a guard policy drawn from a seeded RNG:

steps   attach_detach  a second multiattach volume attached to one VM
                       through the extension (a new attachment), used,
                       detached;
        hard_reboot    one VM hard rebooted (Nova reconnects its volumes);
        live_switch    a third volume attached by stock Nova to both VMs in
                       writeback under a caching client ceph.conf, switched
                       to direct I/O with 'nova-shared-cache fix --live',
                       detached.
faults  none, mon_freeze (SIGSTOP longer than ceph_timeout, during the
        step), osd_restart (during the step), libvirtd_restart (before the
        step), hook_pkg_removed (the package uninstalled from the hook's
        venv for the step, restored after).

After every step: both VMs run (libvirt state RUNNING, same QEMU pid unless
the step rebooted it), no stale read (probe.cross_vm), no lost write (the
blocks written before the step, and a sample of older ones, read back by
both VMs), the shared disk still <shareable/> and cache='none', no cephx key
in any message, and every refusal a clear one (see report.judge_refusal).

Run it with ``tools/soak [--minutes N] [--seed S]`` (under the stack lock).
"""

import argparse
import contextlib
import datetime
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.parse

from tests.soak import faults
from tests.soak import report as soak_report

CEPH_TIMEOUT = 3
MAX_MINUTES = 20
MAIN_MOUNT, SECOND_MOUNT, CACHING_MOUNT = '/dev/vdb', '/dev/vdc', '/dev/vdd'
#: Blocks of the shared volume: the cross-VM probes rotate below
#: LEDGER_BASE, the lost-write marks (8 a cycle) start there.
PROBE_BASE, LEDGER_BASE, MARKS = 64, 8192, 8
DISK_CACHEMODES = ['network=writeback']
#: The throwaway venv the hook runs from (kept between runs: only the first
#: run installs the package's dependencies into it).
HOOK_VENV = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), '.venv-soak-hook')

HOOK_DOMAIN = """<domain type='qemu'>
  <name>instance-soak-hookcheck</name>
  <memory unit='MiB'>96</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <auth username='cinder'><secret type='ceph' uuid='{secret}'/></auth>
      <source protocol='rbd' name='volumes/volume-soak-hookcheck'>
        <host name='127.0.0.1' port='{port}'/>
      </source>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
  </devices>
</domain>
"""


#: libvirt's domain states (virDomainState).
STATES = {0: 'nostate', 1: 'running', 2: 'blocked', 3: 'paused',
          4: 'shutting down', 5: 'shut off', 6: 'crashed',
          7: 'suspended (PM)'}


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop the loop, tear everything down."""


class Abort(Exception):
    """The soak cannot go on (a VM that cannot be recovered, a dead stack)."""


def say(message):
    print('soak: %s' % message, flush=True)


class WarningSink(logging.Handler):
    """WARNING and above from nova_shared_cache, per cycle."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        if record.name.startswith('nova_shared_cache'):
            try:
                self.messages.append(record.getMessage())
            except Exception:
                self.messages.append(str(record.msg))


class VM:

    def __init__(self, label, instance, console, dev):
        self.label = label
        self.instance = instance
        self.console = console
        self.dev = dev
        self.pid = None


class Cycle:

    def __init__(self, number, plan, offset):
        self.record = dict(plan, cycle=number, started_s=round(offset, 1),
                           outcome=None, failures=[], notes=[],
                           fault_details={}, timings={})

    def fail(self, check, message, tb=None):
        entry = {'check': check, 'message': str(message)[:2000]}
        if tb:
            entry['traceback'] = tb[-6000:]
        self.record['failures'].append(entry)

    def note(self, text):
        self.record['notes'].append(str(text)[:600])

    def outcome(self, value):
        self.record['outcome'] = value


class Soak:

    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(self.seed)
        self.ceph_timeout = CEPH_TIMEOUT
        self.report = soak_report.Report(
            args.report, self.seed, args.minutes,
            {'ceph_timeout': CEPH_TIMEOUT, 'hook_mode': 'fix',
             'cache_mode': 'none', 'disk_cachemodes': DISK_CACHEMODES,
             'steps': soak_report.STEPS, 'faults': soak_report.FAULTS,
             'only_steps': args.steps, 'only_faults': args.faults})
        self.stack = None
        self.compute = None
        self.hook = None
        self.vms = []
        self.ledger = {}
        self.key = None
        self.sink = WarningSink()
        self.cli = os.path.join(os.path.dirname(sys.executable),
                                'nova-shared-cache')

    # -- set-up ---------------------------------------------------------------

    def setup(self, cleanups):
        from nova_shared_cache_lab import clientconf
        from nova_shared_cache_lab import compute as compute_harness
        from nova_shared_cache_lab import stack as embedded_stack

        self.stack = embedded_stack.Stack()
        cleanups.callback(self._safe, 'stack down', self.stack.down)
        say('bringing up the embedded stack (Ceph, libvirtd, secret)')
        self.stack.up()
        self.key = self.stack.ceph.client_key()
        cleanups.callback(self._safe, 'thaw Ceph', self._thaw_ceph)
        # Only the cache mode in the disk XML decides whether a VM caches.
        cleanups.enter_context(clientconf.client_options(clientconf.WRITEBACK))

        work = os.path.join(self.stack.root, 'soak')
        os.makedirs(work, exist_ok=True)
        os.chmod(work, 0o755)
        self.conf_path = os.path.join(work, 'nova.conf')
        with open(self.conf_path, 'w') as f:
            f.write('[shared_cache]\nhook_mode = fix\ncache_mode = none\n'
                    'ceph_timeout = %d\nceph_conf = %s\n[libvirt]\n'
                    'rbd_user = cinder\n'
                    % (CEPH_TIMEOUT, self.stack.ceph.client_conf))

        from nova_shared_cache.cmd import install_hook as install_hook_cmd
        wheel = os.path.join(work, os.path.basename(_package_wheel()))
        shutil.copy(_package_wheel(), wheel)
        self.hook = faults.HookVenv(
            os.environ.get('NSC_SOAK_HOOK_VENV') or HOOK_VENV, wheel,
            self.conf_path,
            os.path.join(install_hook_cmd.HOOKS_DIR, 'qemu.d',
                         install_hook_cmd.HOOK_NAME),
            HOOK_DOMAIN.format(secret=self.stack.secret_uuid,
                               port=self.stack.ceph.port))
        say('hook venv %s' % self.hook.path)
        self.hook.ensure()
        cleanups.callback(self._safe, 'uninstall the hook',
                          self._uninstall_hook)
        self.hook.install_hook()
        verdict = self.hook.verdict()
        if verdict['code'] != 1:
            raise Abort('the installed hook does not refuse the start of a '
                        'caching shared disk: %s' % verdict['summary'])

        logging.getLogger().addHandler(self.sink)
        self.compute = compute_harness.Compute(
            extension=True, cache_mode='none',
            disk_cachemodes=DISK_CACHEMODES)
        cleanups.callback(self._safe, 'destroy the VMs', self._destroy_vms)
        import nova.conf
        nova.conf.CONF.set_override('ceph_timeout', CEPH_TIMEOUT,
                                    'shared_cache')
        self.set_policy('enforce')

        self.main_volume, self.main_ci = self.stack.new_volume(size_mb=128)
        for label in ('A', 'B'):
            instance = self.compute.boot(self.compute.new_instance())
            console = self.compute.console(instance)
            vm = VM(label, instance, console, None)
            self.vms.append(vm)
            console.wait_ready()
            self.compute.attach(instance, self.main_ci, MAIN_MOUNT)
            vm.dev = _find_disk(console, self.main_volume)
            vm.pid = self.qemu_pid(vm)
        say('VMs %s share volume %s through the extension; hook installed '
            'from %s' % (', '.join(self.name(vm) for vm in self.vms),
                         self.main_volume, self.hook.path))

    def _safe(self, what, fn):
        try:
            fn()
        except Exception as err:
            self.report.doc['teardown_errors'].append('%s: %s' % (what, err))
            say('teardown: %s failed: %s' % (what, err))

    def _thaw_ceph(self):
        for pid in self.stack.ceph.daemons().values():
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def _uninstall_hook(self):
        import io

        from nova_shared_cache.cmd import manage
        out, err = io.StringIO(), io.StringIO()
        code = manage.main(['--config-file', self.conf_path, 'install-hook',
                            '--uninstall', '--reload'], out, err)
        if code:
            raise RuntimeError(err.getvalue().strip())

    def _destroy_vms(self):
        for vm in self.vms:
            try:
                vm.console.close()
            except Exception:
                pass
        for instance in list(self.compute.instances.values()):
            try:
                self.compute.destroy(instance)
            except Exception as err:
                self.report.doc['teardown_errors'].append(
                    'destroy %s: %s' % (instance.uuid, err))
        self.compute.close()

    # -- helpers --------------------------------------------------------------

    def set_policy(self, policy):
        import nova.conf

        from nova_shared_cache import cephclient
        strict = policy == 'enforce'
        conf = nova.conf.CONF
        conf.set_override('rbd_feature_policy',
                          'enforce' if strict else 'warn', 'shared_cache')
        conf.set_override('sharing_guard', 'refuse' if strict else 'warn',
                          'shared_cache')
        self.compute.switch_driver(extension=True, cache_mode='none',
                                   disk_cachemodes=DISK_CACHEMODES)
        cephclient.REGISTRY.close_all()

    def name(self, vm):
        return self.compute.domain(vm.instance)._domain.name()

    def qemu_pid(self, vm):
        with open('/run/libvirt/qemu/%s.pid' % self.name(vm)) as f:
            return int(f.read().strip())

    def other(self, vm):
        return self.vms[1] if vm is self.vms[0] else self.vms[0]

    def live_direct(self, vm, volume_id):
        from nova_shared_cache.libvirt import domxml
        from nova_shared_cache.libvirt import qmp
        dom = self.compute.domain(vm.instance)._domain
        disk = [d for d in domxml.rbd_disks(domxml.parse(dom.XMLDesc(0)))
                if d.serial == volume_id]
        if not disk:
            return None
        cache = qmp.live_cache(qmp.Monitor(dom).block_nodes(), disk[0])
        return None if cache is None else cache['direct']

    def detach_if_attached(self, vm, ci, mountpoint):
        if ci['serial'] in self.compute.volumes.get(vm.instance.uuid, {}):
            self.compute.detach(vm.instance, ci, mountpoint)

    def fix_live(self, spec):
        cmd = [self.cli, '--config-file', self.conf_path, 'fix', '--live',
               '--json']
        for vm in self.vms:
            cmd += ['--domain', self.name(vm)]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=300)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = {'results': [], 'errors': [{'error': proc.stdout[-500:]}]}
        results = [r for r in doc.get('results', [])
                   if r.get('image') == spec]
        return {'code': proc.returncode, 'results': results,
                'errors': doc.get('errors', []), 'stderr': proc.stderr,
                'stdout': proc.stdout,
                'seconds': round(time.monotonic() - started, 2)}

    # -- the loop -------------------------------------------------------------

    def run(self, deadline):
        number = 0
        durations = []
        while True:
            expected = max(durations[-5:] or [60.0])
            if time.monotonic() + expected > deadline:
                break
            number += 1
            plan = soak_report.plan_cycle(self.rng, number,
                                          self.args.steps, self.args.faults)
            cycle = Cycle(number, plan, time.monotonic() - self.t0)
            started = time.monotonic()
            try:
                self.run_cycle(cycle)
            finally:
                total = time.monotonic() - started
                cycle.record['timings']['cycle'] = round(total, 2)
                cycle.record['warning_count'] = len(self.sink.messages)
                cycle.record['warnings'] = sorted(set(
                    m[:300] for m in self.sink.messages))[:6]
                self.check_no_key(cycle, '\n'.join(self.sink.messages),
                                  'logs')
                self.sink.messages = []
                self.report.add_cycle(cycle.record)
                self.report.write()
                durations.append(total)
                rec = cycle.record
                say('cycle %d: %s, fault %s, policy %s: %s, %s (%.1f s)%s' % (
                    number, rec['step'], rec['fault'], rec['policy'],
                    rec['outcome'] or 'no outcome',
                    'FAILED' if rec['failures'] else 'passed', total,
                    ''.join('\n    %s: %s' % (f['check'], f['message'][:400])
                            for f in rec['failures'])))

    def run_cycle(self, cycle):
        rec = cycle.record
        self.set_policy(rec['policy'])
        marks = self.write_marks(cycle)
        fault = faults.KINDS[rec['fault']](self, self.rng)
        rebooted = set()
        try:
            started = time.monotonic()
            fault.before()
            rec['timings']['fault_before'] = round(
                time.monotonic() - started, 2)
        except Exception as err:
            cycle.fail('fault', 'injecting %s failed: %s' % (fault.kind, err),
                       traceback.format_exc())
        else:
            started = time.monotonic()
            try:
                getattr(self, 'step_' + rec['step'])(cycle, fault, rebooted)
            except Exception as err:
                cycle.fail('step', '%s: %s' % (type(err).__name__, err),
                           traceback.format_exc())
            finally:
                rec['timings']['step'] = round(time.monotonic() - started, 2)
                try:
                    fault.end()
                except Exception as err:
                    cycle.fail('fault', 'ending %s failed: %s'
                               % (fault.kind, err), traceback.format_exc())
        rec['fault_details'] = fault.details
        for error in fault.errors:
            cycle.fail('fault', error)
        if fault.window():
            rec['timings']['fault'] = round(
                fault.window()[1] - fault.window()[0], 2)
        started = time.monotonic()
        self.check_after(cycle, marks, rebooted)
        rec['timings']['checks'] = round(time.monotonic() - started, 2)

    # -- steps ----------------------------------------------------------------

    def step_attach_detach(self, cycle, fault, rebooted):
        from nova_shared_cache import exception
        vm = self.rng.choice(self.vms)
        volume_id, ci = self.stack.new_volume(size_mb=16)
        cycle.record['vm'] = vm.label
        fault.during()
        started = time.monotonic()
        try:
            self.compute.attach(vm.instance, ci, SECOND_MOUNT)
        except exception.AttachRefused as err:
            stopped = time.monotonic()
            message = str(err)
            cycle.note('refused after %.1f s: %s' % (stopped - started,
                                                     message))
            self.check_no_key(cycle, message, 'refusal')
            why = soak_report.judge_refusal(
                message, volume_id, cycle.record['policy'], fault.kind,
                fault.active_between(started, stopped), True,
                faults.CEPH_FAULTS)
            if why:
                cycle.fail('refusal', '%s. The message: %s' % (why, message))
            if self.compute.disk_xml(vm.instance, volume_id) is not None:
                cycle.fail('refusal', 'refused, but the disk is in the '
                                      'domain')
            cycle.outcome('refused')
            return
        cycle.record['timings']['attach'] = round(
            time.monotonic() - started, 2)
        try:
            dev = _find_disk(vm.console, volume_id)
            token = 'SECOND%d' % cycle.record['cycle']
            _write(vm.console, dev, [1, 2], token)
            seen = _read(vm.console, dev, [1, 2])
            if seen != {1: '%s-1' % token, 2: '%s-2' % token}:
                cycle.fail('second-volume', 'read back %r' % seen)
            self.compute.detach(vm.instance, ci, SECOND_MOUNT)
            if self.compute.disk_xml(vm.instance, volume_id) is not None:
                cycle.fail('second-volume', 'still in the domain after '
                                            'the detach')
            cycle.outcome('attached')
        finally:
            self.detach_if_attached(vm, ci, SECOND_MOUNT)

    def step_hard_reboot(self, cycle, fault, rebooted):
        from nova_shared_cache import exception
        vm = self.rng.choice(self.vms)
        cycle.record['vm'] = vm.label
        old_pid = vm.pid
        vm.console.close()
        fault.during()
        started = time.monotonic()
        rebooted.add(vm.label)
        try:
            self.compute.hard_reboot(vm.instance)
        except exception.AttachRefused as err:
            cycle.fail('refusal', 'a hard reboot (a reconnect) was refused: '
                                  '%s' % err)
            raise
        finally:
            try:
                vm.console = self.compute.console(vm.instance)
            except Exception as err:
                cycle.note('no console after the reboot: %s' % err)
        cycle.record['timings']['reboot'] = round(
            time.monotonic() - started, 2)
        _wait_ready(vm.console)
        vm.dev = _find_disk(vm.console, self.main_volume)
        vm.pid = self.qemu_pid(vm)
        if vm.pid == old_pid:
            cycle.fail('reboot', 'the QEMU pid did not change (%d)' % old_pid)
        cycle.outcome('rebooted')

    def step_live_switch(self, cycle, fault, rebooted):
        from nova_shared_cache.libvirt import livefix
        volume_id, ci = self.stack.new_volume(multiattach=False, size_mb=16)
        spec = ci['data']['name']
        a, b = self.vms
        try:
            # Stock Nova with disk_cachemodes = network=writeback and a
            # volume not marked multiattach: both VMs cache.
            self.compute.switch_driver(extension=False,
                                       disk_cachemodes=DISK_CACHEMODES)
            try:
                for vm in self.vms:
                    self.compute.attach(vm.instance, ci, CACHING_MOUNT)
            finally:
                self.set_policy(cycle.record['policy'])
            devs = {vm.label: _find_disk(vm.console, volume_id)
                    for vm in self.vms}
            before = {vm.label: self.live_direct(vm, volume_id)
                      for vm in self.vms}
            if any(v is not False for v in before.values()):
                cycle.fail('live-switch', 'precondition: the disks do not '
                           'cache before the switch: %r' % before)
            # B's writes stay in its librbd cache until the switch flushes.
            _write(a.console, devs['A'], range(0, 8), 'PREA')
            _write(b.console, devs['B'], range(8, 16), 'PREB')
            fault.during()
            attempts = [self.fix_live(spec)]
            direct = {vm.label: self.live_direct(vm, volume_id)
                      for vm in self.vms}
            if not all(direct.values()) and fault.kind in faults.CEPH_FAULTS:
                # Ceph was faulted: a second run after the fault must
                # finish the switch.
                cycle.note('first fix --live under %s: exit %d, %s' % (
                    fault.kind, attempts[0]['code'], _fix_summary(
                        attempts[0])))
                # A disk not switched says why, in its result or in an
                # error about its domain (QMP did not answer the audit).
                explained = {e.get('domain') for e in attempts[0]['errors']
                             if isinstance(e, dict) and e.get('error')}
                unclear = [r.get('domain') for r in attempts[0]['results']
                           if r.get('state') not in livefix.OK_STATES
                           and not r.get('error')
                           and r.get('domain') not in explained]
                if unclear or not (attempts[0]['results']
                                   or attempts[0]['errors']):
                    cycle.fail('live-switch', 'fix --live under %s failed '
                               'without saying why: %s' % (
                                   fault.kind, _fix_summary(attempts[0])))
                fault.end()
                attempts.append(self.fix_live(spec))
                direct = {vm.label: self.live_direct(vm, volume_id)
                          for vm in self.vms}
            for attempt in attempts:
                self.check_no_key(cycle, attempt['stdout'] + attempt[
                    'stderr'], 'fix --live output')
            cycle.record['fix'] = [
                {'code': t['code'], 'seconds': t['seconds'],
                 'results': [{k: r.get(k) for k in (
                     'domain', 'state', 'pause_ms', 'total_ms', 'error')}
                     for r in t['results']],
                 'errors': t['errors'][:4]} for t in attempts]
            pauses = [r.get('pause_ms') for t in attempts
                      for r in t['results'] if r.get('pause_ms')]
            if pauses:
                cycle.record['timings']['pause_ms_max'] = max(pauses)
            last = attempts[-1]
            if not all(direct.values()):
                cycle.fail('live-switch', 'not switched to direct I/O: %r; '
                           'fix --live exit %d: %s' % (
                               direct, last['code'], _fix_summary(last)))
            states = {r['domain']: r['state'] for r in last['results']}
            switched = len(states) == 2 and all(
                s in livefix.OK_STATES for s in states.values())
            if len(attempts) == 1 and last['code'] != 0:
                # Under a Ceph fault the audit part may say that Ceph did
                # not answer (exit 2) while the switch itself is done.
                if switched and fault.kind in faults.CEPH_FAULTS and (
                        _ceph_errors_only(last)):
                    cycle.note('fix --live exit %d, switched, Ceph errors '
                               'reported: %s' % (last['code'],
                                                 _fix_summary(last)))
                else:
                    cycle.fail('live-switch', 'fix --live exit %d: %s' % (
                        last['code'], _fix_summary(last)))
            elif len(attempts) == 1 and not switched:
                cycle.fail('live-switch', 'fix --live exit 0 but: %s'
                           % _fix_summary(last))
            # Nothing written before the switch is lost, both ways.
            expect_a = {n: 'PREB-%d' % n for n in range(8, 16)}
            expect_b = {n: 'PREA-%d' % n for n in range(0, 8)}
            got_a = _read(a.console, devs['A'], range(8, 16))
            got_b = _read(b.console, devs['B'], range(0, 8))
            if got_a != expect_a or got_b != expect_b:
                cycle.fail('lost-write', 'after the switch A read %r, B read '
                           '%r' % (got_a, got_b))
            from nova_shared_cache_lab import probe
            result = probe.cross_vm([(a.console, devs['A']),
                                     (b.console, devs['B'])], rounds=2,
                                    blocks_per_round=8, first_block=32)
            if result.stale or result.fresh != result.checks:
                cycle.fail('stale-read', 'on the switched volume: %s'
                           % result)
            cycle.outcome('switched' if len(attempts) == 1
                          else 'switched_on_retry')
        finally:
            for vm in self.vms:
                try:
                    self.detach_if_attached(vm, ci, CACHING_MOUNT)
                except Exception as err:
                    cycle.fail('cleanup', 'detach of the switched volume '
                               'from %s: %s' % (vm.label, err),
                               traceback.format_exc())

    # -- checks ---------------------------------------------------------------

    def write_marks(self, cycle):
        """Blocks written to the shared volume before the step."""
        number = cycle.record['cycle']
        writer = self.rng.choice(self.vms)
        blocks = list(range(LEDGER_BASE + (number - 1) * MARKS,
                            LEDGER_BASE + number * MARKS))
        token = 'C%d%s' % (number, writer.label)
        try:
            _write(writer.console, writer.dev, blocks, token)
        except Exception as err:
            cycle.fail('marks', 'writing the marks from %s: %s'
                       % (writer.label, err), traceback.format_exc())
            return []
        for block in blocks:
            self.ledger[block] = '%s-%d' % (token, block)
        return blocks

    def check_after(self, cycle, marks, rebooted):
        # 1. Both VMs run, with the QEMU they had.
        import libvirt
        broken = []
        for vm in self.vms:
            try:
                state, reason = self.compute.domain(
                    vm.instance)._domain.state()
            except Exception as err:
                cycle.fail('running', '%s: cannot read its state: %s'
                           % (vm.label, err))
                broken.append(vm)
                continue
            if state != libvirt.VIR_DOMAIN_RUNNING:
                cycle.fail('running', '%s is %s (libvirt state %d, reason '
                           '%d), not running' % (
                               vm.label, STATES.get(state, '?'), state,
                               reason))
                broken.append(vm)
                continue
            try:
                pid = self.qemu_pid(vm)
            except OSError as err:
                cycle.fail('running', '%s: no QEMU pid: %s' % (vm.label, err))
                broken.append(vm)
                continue
            if vm.label not in rebooted and pid != vm.pid:
                cycle.fail('running', '%s has QEMU pid %d, was %d: it was '
                           'restarted' % (vm.label, pid, vm.pid))
                vm.pid = pid
            elif not _alive(pid):
                cycle.fail('running', '%s: QEMU pid %d is gone'
                           % (vm.label, pid))
                broken.append(vm)
        if broken:
            self.recover(cycle, broken)
        # 2. The shared disk is still what the extension makes it.
        from lxml import etree
        for vm in self.vms:
            xml = self.compute.disk_xml(vm.instance, self.main_volume)
            doc = etree.fromstring(xml) if xml else None
            if doc is None or doc.find('shareable') is None or doc.find(
                    'driver').get('cache') != 'none':
                cycle.fail('disk-xml', '%s: the shared disk is %s'
                           % (vm.label, xml))
        # 3. No lost write: this cycle's marks and a sample of older ones.
        older = sorted(set(self.ledger) - set(marks))
        sample = sorted(marks + self.rng.sample(older, min(8, len(older))))
        expected = {b: self.ledger[b] for b in sample}
        for vm in self.vms:
            try:
                seen = _read(vm.console, vm.dev, sample)
            except Exception as err:
                cycle.fail('lost-write', '%s could not read: %s'
                           % (vm.label, err))
                continue
            wrong = {b: (expected[b], seen.get(b)) for b in sample
                     if seen.get(b) != expected[b]}
            if wrong:
                cycle.fail('lost-write', '%s read (expected, got): %r'
                           % (vm.label, wrong))
        # 4. No stale read.
        from nova_shared_cache_lab import probe
        first = PROBE_BASE + ((cycle.record['cycle'] - 1) % 400) * 16
        try:
            result = probe.cross_vm([(vm.console, vm.dev) for vm in self.vms],
                                    rounds=2, blocks_per_round=8,
                                    first_block=first)
        except Exception as err:
            cycle.fail('stale-read', 'probe failed: %s' % err)
        else:
            cycle.record['probe'] = str(result)
            if result.stale or result.fresh != result.checks:
                cycle.fail('stale-read', str(result))

    def check_no_key(self, cycle, text, where):
        if self.key and text and self.key in text:
            cycle.fail('secret', 'the cephx key of client.cinder appears in '
                                 'the %s' % where)

    def recover(self, cycle, broken):
        """Bring a VM that stopped back (a hard reboot), or give up."""
        for vm in broken:
            cycle.note('recovering %s with a hard reboot' % vm.label)
            try:
                vm.console.close()
                self.compute.hard_reboot(vm.instance)
                vm.console = self.compute.console(vm.instance)
                _wait_ready(vm.console)
                vm.dev = _find_disk(vm.console, self.main_volume)
                vm.pid = self.qemu_pid(vm)
            except Exception as err:
                raise Abort('VM %s could not be recovered: %s'
                            % (vm.label, err))


# -- guest I/O with the stack's probe helpers ---------------------------------

def _find_disk(console, volume_id):
    from nova_shared_cache_lab import probe
    return probe.find_disk(console, volume_id, timeout=60)


def _write(console, dev, blocks, token):
    from nova_shared_cache_lab import probe
    probe.write_blocks(console, dev, list(blocks), token)


def _read(console, dev, blocks):
    from nova_shared_cache_lab import probe
    return probe.read_blocks(console, dev, list(blocks))


def _wait_ready(console):
    """The guest's ready line, or (if it went by) a shell that answers."""
    from nova_shared_cache_lab import common
    try:
        console.wait_ready(timeout=180)
    except common.StackError:
        console.run('true', timeout=20)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ceph_errors_only(attempt):
    """Every error fix reported is Ceph not answering, said clearly."""
    errors = [json.dumps(e) for e in attempt['errors']]
    return bool(errors) and all('ceph_timeout' in e for e in errors)


def _fix_summary(attempt):
    parts = ['%s %s%s' % (r.get('domain'), r.get('state'),
                          ' (%s)' % r['error'] if r.get('error') else '')
             for r in attempt['results']]
    parts += ['error: %s' % json.dumps(e, sort_keys=True)[:300]
              for e in attempt['errors']]
    if not parts:
        parts.append('no result for the volume; stderr: %s'
                     % attempt['stderr'][-300:])
    return '; '.join(parts)


def _package_wheel():
    """The wheel tox installed into this environment."""
    import importlib.metadata
    import site
    # Not the tree's egg-info that the working directory would find first.
    found = list(importlib.metadata.distributions(
        name='nova-shared-cache', path=site.getsitepackages()))
    direct = json.loads(found and found[0].read_text('direct_url.json')
                        or '{}')
    path = urllib.parse.urlparse(direct.get('url', '')).path
    if not (path.endswith('.whl') and os.path.exists(path)):
        raise Abort('nova-shared-cache is not installed from a wheel here '
                    '(%s): run the soak through tox (tools/soak)' % path)
    return path


def _minutes(text):
    value = float(text)
    if not 0 < value <= MAX_MINUTES:
        raise argparse.ArgumentTypeError(
            'between 0 and %d minutes' % MAX_MINUTES)
    return value


def _names(table):
    def parse(text):
        names = [n for n in text.split(',') if n]
        try:
            soak_report._only(table, names)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err))
        return names
    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='tools/soak', description='Bounded fault soak of '
        'nova-shared-cache on the embedded stack (root, under the stack '
        'lock).')
    parser.add_argument('--minutes', type=_minutes, default=15,
                        help='wall time for set-up and cycles (at most %d; '
                             'teardown comes after)' % MAX_MINUTES)
    parser.add_argument('--seed', type=int, default=None,
                        help='seed of the RNG that picks steps, faults and '
                             'policies (default: from the clock; reported)')
    parser.add_argument('--steps', type=_names(soak_report.STEPS),
                        help='only these steps (comma-separated; default '
                             'all: %s)' % ','.join(sorted(soak_report.STEPS)))
    parser.add_argument('--faults', type=_names(soak_report.FAULTS),
                        help='only these faults (comma-separated; default '
                             'all: %s)' % ','.join(sorted(
                                 soak_report.FAULTS)))
    parser.add_argument('--report', default=os.environ.get(
        'NSC_SOAK_REPORT', 'soak-report.json'), help='JSON report file')
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 1000000
    return args


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print('soak: run as root (Ceph daemons, libvirtd, the hook)',
              file=sys.stderr)
        return 2
    soak = Soak(args)
    doc = soak.report.doc
    soak.t0 = time.monotonic()
    deadline = soak.t0 + args.minutes * 60
    doc['started'] = datetime.datetime.now().isoformat(timespec='seconds')
    say('seed %d, %.1f minutes, report %s' % (
        args.seed, args.minutes, os.path.abspath(args.report)))

    def interrupted(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    def hold_on(signum, frame):
        say('%s: tearing down, please wait' % signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    status = 0
    try:
        with contextlib.ExitStack() as cleanups:
            try:
                soak.setup(cleanups)
                doc['setup_s'] = round(time.monotonic() - soak.t0, 1)
                say('set-up done in %.0f s' % doc['setup_s'])
                soak.run(deadline)
            except Interrupted as sig:
                doc['interrupted'] = str(sig)
                say('interrupted by %s' % sig)
                status = 130
            except Exception as err:
                doc['aborted'] = '%s: %s' % (type(err).__name__, err)
                doc['aborted_traceback'] = traceback.format_exc()[-6000:]
                say('ABORTED: %s' % doc['aborted'])
                status = 2
            finally:
                signal.signal(signal.SIGINT, hold_on)
                signal.signal(signal.SIGTERM, hold_on)
                say('tearing down (VMs, hook, stack)')
                teardown_started = time.monotonic()
                cleanups.close()
                doc['teardown_s'] = round(
                    time.monotonic() - teardown_started, 1)
    finally:
        doc['finished'] = datetime.datetime.now().isoformat(
            timespec='seconds')
        doc['seconds'] = round(time.monotonic() - soak.t0, 1)
        written = soak.report.write()
        summary = written['summary']
        say('report: %s' % os.path.abspath(args.report))
        say('faults: %s' % ', '.join('%s %d' % kv for kv in
                                     summary['faults_injected'].items()))
        say('outcomes: %s' % ', '.join('%s %d' % kv for kv in
                                       summary['outcomes'].items()))
        for f in summary['failures']:
            say('FAILED cycle %d (%s, %s): %s: %s' % (
                f['cycle'], f['step'], f['fault'], f['check'],
                f['message'][:300]))
        if doc['teardown_errors']:
            say('teardown errors: %s' % '; '.join(doc['teardown_errors']))
        print(soak.report.summary_line(), flush=True)
    if status == 0 and (summary['failed'] or doc['teardown_errors']):
        status = 1
    return status


if __name__ == '__main__':
    code = main()
    from nova_shared_cache_lab import compute as compute_harness
    compute_harness.exit_process(code)
    sys.exit(code)
