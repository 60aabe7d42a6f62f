"""Small helpers shared by the embedded stack's parts."""

import os
import shutil
import socket
import subprocess
import time

from nova_shared_cache import exception

DEFAULT_ROOT = '/var/tmp/nova-shared-cache'


class StackError(exception.SharedCacheError):
    msg_fmt = "embedded stack: %(reason)s"


def root_dir():
    return os.environ.get('NSC_STACK_DIR', DEFAULT_ROOT)


def progress(message):
    print('==> %s' % message, flush=True)


class Timer:
    """Wall-clock rows ``(label, seconds)`` of the steps it measured."""

    def __init__(self):
        self.rows = []

    def measure(self, label, func, *args, **kwargs):
        started = time.monotonic()
        result = func(*args, **kwargs)
        self.rows.append((label, time.monotonic() - started))
        return result


def require_commands(*commands, package_hint=None):
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        raise StackError(reason="missing command(s) %s%s" % (
            ', '.join(missing),
            " (Debian packages: %s)" % package_hint if package_hint else ''))


def run(cmd, timeout=60, input=None, check=True, env=None):
    """Run a command; on failure raise StackError with its stderr."""
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise StackError(reason="%s did not finish within %ss"
                         % (' '.join(cmd[:3]), timeout))
    if check and proc.returncode != 0:
        raise StackError(reason="%s failed (exit %d): %s" % (
            ' '.join(cmd[:4]), proc.returncode,
            (proc.stderr or proc.stdout).strip()[-800:]))
    return proc


def port_in_use(port, host='127.0.0.1'):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def stop_pid(pid, timeout=15):
    """SIGTERM, wait, then SIGKILL."""
    if pid is None or not pid_alive(pid):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def wait_for(predicate, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise StackError(reason="timed out after %ss waiting for %s"
                             % (timeout, what))
        time.sleep(interval)
