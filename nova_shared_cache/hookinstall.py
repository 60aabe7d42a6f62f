"""The libvirt qemu hook: installing it (``nova-shared-cache install-hook``).

The installed hook is a small POSIX sh wrapper around
``python -I -m nova_shared_cache.cmd.hook``. It fails open: libvirt refuses
a start, a restore or an incoming migration when the hook exits non-zero on
``prepare``/``start``/``started``/``restore``/``migrate``, and kills a
running QEMU when it exits non-zero on ``reconnect`` (libvirtd restarted)
or ``attach``. So the wrapper lets only one thing refuse: the Python
hook's own decision, exit status DENY. A missing interpreter, package or
dependency, a crash, a signal or a run past TIMEOUT seconds allow the
operation, with the cause and the remedy on stderr and in syslog.
"""

import os
import shlex
import subprocess

from nova_shared_cache import atomicfile
from nova_shared_cache.cmd import hook as cmd_hook
from nova_shared_cache import exception

#: Seconds the Python hook may run before the wrapper stops it and allows
#: the operation. A judged start takes about 40 ms here, 0.3 s with
#: nova.conf read on a cold cache; 10 s leaves a wide margin for a loaded
#: host, and with the 2 s grace before SIGKILL and 5 s for syslog stays
#: below the 30 s libvirt lets other calls on the same domain wait for its
#: job (a slower hook would make Nova's and virsh's calls fail with
#: "cannot acquire state change lock").
TIMEOUT = 10
#: Seconds between timeout's SIGTERM and its SIGKILL.
KILL_AFTER = 2
#: What the Python side must be able to import for the hook to judge.
SELF_CHECK = ('import nova_shared_cache.libvirt.hook, '
              'nova_shared_cache.conf, oslo_config.cfg')
SELF_CHECK_TIMEOUT = 60


class HookInstallError(exception.SharedCacheError):
    msg_fmt = "cannot install the libvirt hook %(path)s: %(reason)s"


# NOTE: libvirt (virHookCall) runs every executable file in qemu.d, whatever
# its name, and feeds the previous script's stdout to the next one for
# migrate/restore. Hence: Python only for the operations it acts on, output
# passed on only after a run that succeeded, and no temporary file of ours
# ever executable inside qemu.d.
HOOK_SCRIPT = r"""#!/bin/sh
# libvirt qemu hook of nova-shared-cache, written by
# 'nova-shared-cache install-hook': run that again when the Python
# environment below moves or is upgraded; 'install-hook --uninstall'
# removes this file.
#
# It fails open. Only the hook's own decision (exit status %(deny)d of the
# Python code) refuses an operation. A missing interpreter, package or
# dependency, a crash, a signal or a run longer than %(timeout)d s allow it,
# with the cause on stderr and in syslog. Python runs only for 'prepare',
# 'migrate begin' and 'restore begin': any other operation is always
# allowed (a failed 'reconnect' or 'attach' would make libvirtd kill the
# running QEMU). libvirt takes stdout as the new domain XML for migrate
# and restore: only the output of a run that succeeded is passed on.
PATH=${PATH:+$PATH:}/usr/sbin:/usr/bin:/sbin:/bin
export PATH
python=%(python)s
limit=%(timeout)d

case ${2-}/${3-} in
    prepare/* | migrate/begin | restore/begin) ;;
    *)
        # libvirt writes the domain XML to every hook: take it.
        cat >/dev/null 2>&1
        exit 0
        ;;
esac

allow() {
    note="nova-shared-cache hook: ${2-} of domain ${1-} allowed unchecked: \
$3. Run 'nova-shared-cache install-hook' again from the Python environment \
nova-compute uses, or remove this hook with 'nova-shared-cache install-hook \
--uninstall'"
    printf '%%s\n' "$note" >&2
    timeout 5 logger -t nova-shared-cache-hook -p daemon.warning -- "$note" \
        </dev/null >/dev/null 2>&1
    cat >/dev/null 2>&1
    exit 0
}

if [ ! -x "$python" ]; then
    allow "${1-}" "${2-}" "its Python interpreter $python is gone (the \
environment was removed or upgraded?)"
fi
if ! command -v timeout >/dev/null 2>&1; then
    allow "${1-}" "${2-}" "coreutils' timeout command is missing"
fi
out=$(timeout -k %(kill_after)d "$limit" "$python" -I -m \
nova_shared_cache.cmd.hook %(config)s-- "$@")
status=$?
case $status in
    0)
        printf '%%s' "$out"
        exit 0
        ;;
    %(deny)d)
        exit 1
        ;;
    124)
        reason="it ran longer than $limit s and was stopped"
        ;;
    125 | 126 | 127)
        reason="$python could not be run (exit status $status)"
        ;;
    137)
        reason="it was killed (SIGKILL: out of memory, or still running \
%(kill_after)d s after the $limit s limit)"
        ;;
    *)
        if [ "$status" -gt 128 ]; then
            reason="it was killed by signal $((status - 128))"
        else
            reason="it failed with exit status $status (is nova-shared-cache \
with lxml and oslo.config still installed for $python?)"
        fi
        ;;
esac
allow "${1-}" "${2-}" "$reason"
"""


def render(python, config_files=(), timeout=TIMEOUT, config_dirs=()):
    """The wrapper's text for this interpreter and these nova.conf files.

    ``config_dirs``: oslo.config's ``--config-dir`` directories, read after
    the files (where nova-compute's ``nova.conf.d`` overrides live).
    """
    config = ''.join('%s %s ' % (option, shlex.quote(os.path.abspath(path)))
                     for option, paths in (('--config-file', config_files),
                                           ('--config-dir', config_dirs))
                     for path in paths)
    return HOOK_SCRIPT % {'python': shlex.quote(python), 'config': config,
                          'timeout': timeout, 'kill_after': KILL_AFTER,
                          'deny': cmd_hook.DENY}


def self_check(python):
    """None if ``python`` can import the hook, else why not."""
    try:
        proc = subprocess.run([python, '-I', '-c', SELF_CHECK],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=SELF_CHECK_TIMEOUT,
                              check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return '%s cannot be run: %s' % (python, err)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        return '%s cannot import the hook: %s' % (
            python, lines[-1] if lines else 'exit status %d'
            % proc.returncode)
    return None


def hook_path(hooks_dir, name):
    return os.path.join(hooks_dir, 'qemu.d', name)


def _remove_leftovers(hooks_dir, name):
    """Temporary files an interrupted install left behind.

    Earlier versions wrote ``qemu.d/NAME.tmp`` and made it executable
    before renaming it: libvirt runs such a leftover as a hook of its own.
    """
    removed = []
    candidates = [hook_path(hooks_dir, name) + '.tmp']
    try:
        candidates += [os.path.join(hooks_dir, f)
                       for f in os.listdir(hooks_dir)
                       if f.startswith('.%s.' % name)]
    except OSError:
        pass
    for path in candidates:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def install(hooks_dir, name, text):
    """Write the hook atomically; returns its path.

    The new text is written and synced in a hidden file in ``hooks_dir``
    (libvirt runs only ``hooks/qemu`` there, and everything executable in
    ``hooks/qemu.d``), then renamed over the hook: libvirt sees the old
    hook or the new one, never a part of either.
    """
    directory = os.path.join(hooks_dir, 'qemu.d')
    os.makedirs(directory, mode=0o755, exist_ok=True)
    _remove_leftovers(hooks_dir, name)
    path = hook_path(hooks_dir, name)
    atomicfile.replace(path, text, 0o755, tmp_dir=hooks_dir)
    _sync_dir(directory)
    return path


def install_checked(hooks_dir, name, python, config_files=(),
                    config_dirs=()):
    """Install the hook for ``python`` if it can run it; returns its path.

    A hook that could not import itself would allow everything (it fails
    open): refuse to install it, and leave what is there.
    """
    path = hook_path(hooks_dir, name)
    problem = self_check(python)
    if problem:
        raise HookInstallError(path=path, reason=problem)
    try:
        return install(hooks_dir, name, render(python, config_files,
                                               config_dirs=config_dirs))
    except OSError as err:
        raise HookInstallError(path=path, reason=err)


def uninstall(hooks_dir, name):
    """Remove the hook (and leftovers); True if there was one."""
    path = hook_path(hooks_dir, name)
    _remove_leftovers(hooks_dir, name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    _sync_dir(os.path.dirname(path))
    return True


def _sync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
