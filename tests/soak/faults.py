"""The faults the soak injects, one kind per cycle.

Each fault has three moments: ``before`` (between steps: it is complete
when the step starts), ``during`` (called by the step at its critical
point: the fault runs while the step goes on) and ``end`` (after the step:
whatever the fault still holds is given back). ``window`` is when the fault
was in effect (monotonic seconds), so that a refusal can be judged against
it.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from nova_shared_cache_lab import common

#: Faults that make Ceph unreachable for a while: a new attachment under
#: enforce/refuse may then be refused (and only then).
CEPH_FAULTS = ('mon_freeze', 'osd_restart')


class Fault:
    """No fault: the control."""

    kind = 'none'

    def __init__(self, soak, rng):
        self.soak = soak
        self.rng = rng
        self.started = None
        self.stopped = None
        self.details = {}
        self.errors = []

    def before(self):
        pass

    def during(self):
        pass

    def end(self):
        pass

    def window(self):
        if self.started is None:
            return None
        return (self.started, self.stopped or time.monotonic())

    def active_between(self, start, stop):
        """Whether the fault was in effect at some time in [start, stop]."""
        window = self.window()
        return bool(window) and window[0] <= stop and window[1] >= start


class MonFreeze(Fault):
    """The monitor stopped (SIGSTOP) longer than ``ceph_timeout``.

    The guard's connection is retired first, so its next check has to reach
    the frozen monitor (an existing connection needs only the OSD).
    """

    kind = 'mon_freeze'

    def __init__(self, soak, rng):
        super().__init__(soak, rng)
        self.seconds = soak.ceph_timeout + 3
        self.timer = None
        self.lock = threading.Lock()

    def during(self):
        from nova_shared_cache import cephclient
        cephclient.REGISTRY.close_all()
        self._signal(signal.SIGSTOP)
        self.started = time.monotonic()
        self.details['frozen_s'] = self.seconds
        self.timer = threading.Timer(self.seconds, self.thaw)
        self.timer.daemon = True
        self.timer.start()

    def _signal(self, sig):
        pid = self.soak.stack.ceph.daemons().get('mon.a')
        if pid:
            os.kill(pid, sig)

    def thaw(self):
        with self.lock:
            if self.started is not None and self.stopped is None:
                self._signal(signal.SIGCONT)
                self.stopped = time.monotonic()

    def end(self):
        if self.timer:
            self.timer.cancel()
        self.thaw()


class OsdRestart(Fault):
    """The OSD stopped at the step's critical point, started again later.

    It starts again a random moment later, while the step goes on.
    """

    kind = 'osd_restart'

    def __init__(self, soak, rng):
        super().__init__(soak, rng)
        self.down = round(rng.uniform(0.5, 5.0), 2)
        self.thread = None

    def during(self):
        self.details['down_s'] = self.down
        self.started = time.monotonic()
        try:
            self.soak.stack.ceph.stop_osd()
        except Exception:
            try:
                self.soak.stack.ceph.start_osd()
            finally:
                self.stopped = time.monotonic()
            raise
        self.details['stop_s'] = round(time.monotonic() - self.started, 2)
        self.thread = threading.Thread(target=self._start, daemon=True)
        self.thread.start()

    def _start(self):
        time.sleep(self.down)
        try:
            self.soak.stack.ceph.start_osd()
        except Exception as err:   # recorded; the soak decides
            self.errors.append('OSD start failed: %s' % err)
        finally:
            self.stopped = time.monotonic()
            self.details['restart_s'] = round(self.stopped - self.started, 2)

    def end(self):
        if self.thread:
            self.thread.join(300)
            if self.thread.is_alive():
                self.errors.append('OSD start still running after 300 s')


class LibvirtdRestart(Fault):
    """libvirtd restarted before the step, with the hook installed.

    The running QEMU processes must survive the reconnect.
    """

    kind = 'libvirtd_restart'

    def before(self):
        self.started = time.monotonic()
        try:
            self.soak.stack.libvirt.restart_libvirtd()
        finally:
            self.stopped = time.monotonic()
            self.details['restart_s'] = round(self.stopped - self.started, 2)


class HookPackageRemoved(Fault):
    """nova-shared-cache uninstalled from the hook's venv for the step.

    The installed hook then cannot judge: it must allow everything, saying
    why. Put back after the step, it must judge again.
    """

    kind = 'hook_pkg_removed'

    def before(self):
        self.started = time.monotonic()
        self.soak.hook.remove_package()
        verdict = self.soak.hook.verdict()
        self.details['hook_while_removed'] = verdict['summary']
        if verdict['code'] != 0 or b'allowed unchecked' not in verdict[
                'stderr']:
            self.errors.append(
                'with the package removed the hook did not allow the start '
                'with a note: %s' % verdict['summary'])

    def end(self):
        if self.started is None:
            return
        try:
            self.soak.hook.restore_package()
        finally:
            self.stopped = time.monotonic()
        verdict = self.soak.hook.verdict()
        self.details['hook_after_restore'] = verdict['summary']
        if verdict['code'] != 1 or b'refuses the start' not in verdict[
                'stderr']:
            self.errors.append(
                'with the package restored the hook did not judge (refuse) '
                'a caching shared disk again: %s' % verdict['summary'])


KINDS = {cls.kind: cls for cls in (Fault, MonFreeze, OsdRestart,
                                   LibvirtdRestart, HookPackageRemoved)}


class HookVenv:
    """The throwaway venv the installed hook runs from."""

    def __init__(self, path, wheel, conf_path, hook_path, domain_xml):
        self.path = path
        self.wheel = wheel
        self.conf_path = conf_path
        self.hook_path = hook_path
        self.domain_xml = domain_xml

    def bin(self, name):
        return os.path.join(self.path, 'bin', name)

    def _run(self, cmd, timeout=300):
        return common.run(cmd, timeout=timeout)

    def ensure(self):
        """Create the venv once, then put this run's wheel in.

        Only the first creation installs the dependencies from the package
        index; the wheel goes in without touching the network.
        """
        if not os.access(self.bin('python'), os.X_OK) or subprocess.run(
                [self.bin('python'), '-I', '-c', 'import oslo_config, lxml'],
                capture_output=True).returncode:
            self._run([sys.executable, '-m', 'venv', '--clear', self.path])
            self._run([self.bin('pip'), 'install', '-q',
                       '--disable-pip-version-check', self.wheel],
                      timeout=900)
        self.restore_package()

    def install_hook(self):
        return self._run([self.bin('nova-shared-cache'), '--config-file',
                          self.conf_path, 'install-hook', '--reload'],
                         timeout=120)

    def remove_package(self):
        self._run([self.bin('pip'), 'uninstall', '-y', '-q',
                   '--disable-pip-version-check', 'nova-shared-cache'],
                  timeout=120)

    def restore_package(self):
        self._run([self.bin('pip'), 'install', '-q', '--no-deps',
                   '--no-index', '--force-reinstall',
                   '--disable-pip-version-check', self.wheel], timeout=300)

    def verdict(self):
        """The installed hook, run as libvirt runs it for a start.

        The domain's shared RBD disk caches: a hook that judges refuses it.
        """
        proc = subprocess.run(
            [self.hook_path, 'instance-soak-hookcheck', 'prepare', 'begin',
             '-'], input=self.domain_xml.encode(), capture_output=True,
            timeout=60)
        lines = proc.stderr.decode('utf-8', 'replace').strip().splitlines()
        return {'code': proc.returncode, 'stderr': proc.stderr,
                'summary': 'exit %d: %s' % (proc.returncode,
                                            lines[-1][:300] if lines
                                            else '(no message)')}
