"""``nova-shared-cache install-hook``: libvirt's qemu hook, installed
(or removed) as a fail-open wrapper around this Python environment."""

import os
import subprocess
import sys

from nova_shared_cache.cmd import common
from nova_shared_cache import hookinstall

NAMES = ('install-hook',)
HOOKS_DIR = '/etc/libvirt/hooks'
HOOK_NAME = '50-nova-shared-cache'


def add_parser(subparsers):
    install = subparsers.add_parser(
        'install-hook', help="install libvirt's qemu hook "
                             "(nova-shared-cache-libvirt-hook)")
    install.add_argument('--hooks-dir', default=HOOKS_DIR,
                         help='default: %(default)s')
    install.add_argument('--uninstall', action='store_true',
                         help='remove the hook instead')
    install.add_argument('--reload', action='store_true',
                         help='make libvirtd (or virtqemud) read its hooks '
                              'again (SIGHUP); else they are read at its '
                              'next start')


def run(conf, out):
    hooks_dir = conf.command.hooks_dir
    if conf.command.uninstall:
        path = hookinstall.hook_path(hooks_dir, HOOK_NAME)
        if hookinstall.uninstall(hooks_dir, HOOK_NAME):
            out.write('removed %s\n' % path)
        else:
            out.write('%s is not installed\n' % path)
    else:
        out.write('installed %s\n' % hookinstall.install_checked(
            hooks_dir, HOOK_NAME, sys.executable, conf.config_file or [],
            config_dirs=_config_dirs(conf)))
    if conf.command.reload:
        signalled = _reload_libvirt()
        out.write('asked %s to read its hooks again\n' % (
            ', '.join(signalled) or 'no running libvirtd/virtqemud'))
    else:
        out.write('libvirtd reads hooks when it starts or reloads '
                  '(systemctl reload libvirtd, or --reload)\n')
    return common.OK


def _config_dirs(conf):
    """The --config-dir directories, in order (a list in newer oslo)."""
    dirs = conf.config_dir or []
    return [dirs] if isinstance(dirs, str) else list(dirs)


def _reload_libvirt():
    import signal
    signalled = []
    for daemon in ('libvirtd', 'virtqemud'):
        found = subprocess.run(['pgrep', '-x', daemon], capture_output=True,
                               text=True, check=False).stdout.split()
        for pid in found:
            os.kill(int(pid), signal.SIGHUP)
            signalled.append('%s (pid %s)' % (daemon, pid))
    return signalled
