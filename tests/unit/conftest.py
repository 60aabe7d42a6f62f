"""Keep the unit suite off real services, whatever the environment has.

Every unit test runs with a guard: opening a libvirt connection
(``libvirt.open``/``openReadOnly``/``openAuth``, or the ``libvirtmod``
calls under them), connecting to Ceph (``rados.Rados.connect``), running
``virsh``/``ceph``/``rbd``/``rados``, or reading this host's addresses and
QEMU namespaces through ``hostnet.local_addresses`` with its default paths,
raises ``RealServiceAccess`` and fails the test at teardown, even when the
code under test caught the error (the commands turn every exception into
exit status 2, which a test could take for the error it expected).

The bindings are guarded where they are importable (Debian's python3-libvirt
and python3-rados linked into a venv by tools/link-system-bindings); where
they are not, ``cephclient``'s ``rados``/``rbd`` become stand-ins that refuse
to connect, so a test without fakes fails the same way in every env. Tests
that use fakes (tests/unit/fakeceph.py, Nova's fake libvirt) replace what
this guard put in place for their own duration.
"""

import os
import re
import shlex
import subprocess
import sys
import types

import pytest

from nova_shared_cache import cephclient
from nova_shared_cache import hostnet

try:  # the real bindings, where this venv can import them
    import libvirtmod
except ImportError:
    libvirtmod = None
try:
    import rados
except ImportError:
    rados = None

FORBIDDEN_PROGRAMS = frozenset({'virsh', 'ceph', 'rbd', 'rados'})
#: Programs that run the command given after their own options.
_WRAPPERS = frozenset({'sudo', 'env', 'timeout', 'nice', 'ionice', 'nohup',
                       'setsid', 'stdbuf', 'flock', 'nsenter', 'unshare',
                       'chroot', 'runuser', 'time', 'exec', 'command',
                       'strace', 'taskset', 'chrt', 'xargs'})
_SHELLS = frozenset({'sh', 'bash', 'dash', 'zsh', 'ksh'})
_SEPARATORS = frozenset({';', '&&', '||', '|', '&', '(', ')'})
_REAL_LOCAL_ADDRESSES = hostnet.local_addresses
_NUMBER = re.compile(r'[0-9.]+[smhd]?')
_ASSIGNMENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*=.*')


class RealServiceAccess(Exception):
    """A unit test tried to reach a real service.

    An Exception, not a BaseException that ``except Exception`` would let
    through: under Nova's test base eventlet runs Ceph calls in its thread
    pool, whose workers die on anything else and leave the test hanging.
    The code under test may catch it; the teardown check still fails the
    test.
    """


def _tokens(args, shell=False):
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        if not shell:
            return [text]
        try:
            return shlex.split(text)
        except ValueError:
            return text.split()
    return [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a)
            for a in args]


def command_names(args, shell=False):
    """Basenames of the programs a command line runs (wrappers included).

    A heuristic for the guard: the first word, the word after a wrapper
    (``sudo``, ``env``, ``timeout 10``, ``flock FILE``...) and its options,
    the commands of ``sh -c SCRIPT`` and after ``;``, ``&&``, ``|``.
    """
    names, tokens = [], _tokens(args, shell)
    at_command, after_wrapper, index = True, False, 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token in _SEPARATORS:
            at_command, after_wrapper = True, False
            continue
        if not at_command:
            continue
        if after_wrapper and (token.startswith('-')
                              or _NUMBER.fullmatch(token)):
            continue
        if _ASSIGNMENT.fullmatch(token):
            continue    # VAR=value before a command
        name = os.path.basename(token)
        names.append(name)
        if name in _SHELLS and '-c' in tokens[index:]:
            script = tokens[tokens.index('-c', index) + 1:][:1]
            names.extend(command_names(script[0] if script else '', True))
            at_command = False
        elif name in _WRAPPERS:
            after_wrapper = True
            if name in ('flock', 'chroot', 'taskset'):
                while index < len(tokens) and tokens[index].startswith('-'):
                    index += 1
                index += 1      # the lock file, root or CPU mask
        else:
            at_command = after_wrapper = False
    return names


class Guard:

    def __init__(self):
        self.attempts = []

    def refuse(self, what):
        self.attempts.append(what)
        raise RealServiceAccess(
            'unit test tried to %s: a unit test must use a fake '
            '(tests/unit/conftest.py)' % what)

    def check(self):
        """Fail the test if it tried, whatever became of the error."""
        if self.attempts:
            pytest.fail('a unit test tried to reach a real service:\n  %s'
                        % '\n  '.join(self.attempts), pytrace=False)

    def check_command(self, args, shell=False):
        names = command_names(args, shell)
        bad = [n for n in names if n in FORBIDDEN_PROGRAMS]
        if bad:
            self.refuse('run %s (%r)' % (bad[0], args))


def install(monkeypatch, guard, libvirtmod_module=libvirtmod,
            rados_module=rados):
    def opener(name):
        def refuse(*args, **kwargs):
            guard.refuse('open a libvirt connection (%s%r)' % (name, args))
        return refuse

    if libvirtmod_module is not None:
        for name in ('virConnectOpen', 'virConnectOpenReadOnly',
                     'virConnectOpenAuth'):
            monkeypatch.setattr(libvirtmod_module, name, opener(name))
    real_libvirt = _loaded('libvirt')
    if real_libvirt is not None:
        for name in ('open', 'openReadOnly', 'openAuth'):
            monkeypatch.setattr(real_libvirt, name,
                                opener('libvirt.%s' % name))

    def refuse_connect(self, *args, **kwargs):
        guard.refuse('connect to Ceph (rados.Rados.connect as client.%s)'
                     % getattr(self, 'rados_id', '?'))

    if rados_module is not None:
        guarded = type('Rados', (rados_module.Rados,),
                       {'connect': refuse_connect})
        monkeypatch.setattr(rados_module, 'Rados', guarded)
    if cephclient.rados is None or cephclient.rbd is None:
        class StandInRados:
            def __init__(self, conffile=None, rados_id=None, conf=None,
                         clustername=None):
                self.rados_id = rados_id

            connect = refuse_connect

            def shutdown(self):
                pass

        error = type('Error', (Exception,), {})
        monkeypatch.setattr(cephclient, 'rados', types.SimpleNamespace(
            Rados=StandInRados, Error=error))
        monkeypatch.setattr(cephclient, 'rbd', types.SimpleNamespace(
            Error=error))

    real_init = subprocess.Popen.__init__

    def popen_init(self, args, *rest, **kwargs):
        guard.check_command(args, kwargs.get('shell', False))
        if kwargs.get('executable'):
            guard.check_command([kwargs['executable']])
        return real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, '__init__', popen_init)

    def os_call(name, path_index, shell=False):
        real = getattr(os, name)

        def call(*args, **kwargs):
            if len(args) > path_index:
                guard.check_command(
                    args[path_index] if shell else [args[path_index]],
                    shell)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(os, 'system', os_call('system', 0, shell=True))
    for name in ('execv', 'execve', 'execvp', 'execvpe', 'execl', 'execle',
                 'execlp', 'execlpe', 'posix_spawn', 'posix_spawnp'):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, os_call(name, 0))
    for name in ('spawnv', 'spawnve', 'spawnvp', 'spawnvpe', 'spawnl',
                 'spawnle', 'spawnlp', 'spawnlpe'):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, os_call(name, 1))

    def local_addresses(proc=None, run_dir=None, **kwargs):
        if proc is None or run_dir is None:
            guard.refuse("read this host's addresses and QEMU namespaces "
                         "(hostnet.local_addresses without proc/run_dir)")
        return _REAL_LOCAL_ADDRESSES(proc=proc, run_dir=run_dir, **kwargs)

    monkeypatch.setattr(hostnet, 'local_addresses', local_addresses)


def _loaded(name):
    module = sys.modules.get(name)
    # Nova's fake libvirt, put there by a test, is not the real one.
    if module is None or getattr(module, '__file__', '').find(
            'fixtures') >= 0:
        return None
    return module


@pytest.fixture(autouse=True)
def real_service_guard(monkeypatch):
    """The guard; a test of the guard itself may clear ``attempts``."""
    guard = Guard()
    install(monkeypatch, guard)
    yield guard
    guard.check()
