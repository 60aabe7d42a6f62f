"""The installed qemu hook (the sh wrapper), run for real with /bin/sh.

Interpreters are throwaway venvs made with ``python -m venv --without-pip``
whose site-packages holds a .pth file: ``python -I`` then imports exactly
what the test put there (the working tree, and lxml/oslo.config from this
test environment, or less), as it would in a real environment with a
package or a dependency gone. Stand-in interpreters (sh scripts) play the
ones that hang, crash or print half an answer.
"""

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import unittest

from nova_shared_cache.cmd import hook as cmd_hook
from nova_shared_cache.cmd import install_hook as install_hook_cmd
from nova_shared_cache import hookinstall
from nova_shared_cache.libvirt import domxml
from tests import compat as test_compat
from tests.unit import test_hook as hook_tests

TREE = test_compat.source_tree()
SITE = sysconfig.get_paths()['purelib']
PLATSITE = sysconfig.get_paths()['platlib']
NEVER_ACTED_ON = [['d1', 'start', 'begin', '-'],
                  ['d1', 'started', 'begin', '-'],
                  ['d1', 'reconnect', 'begin', '-'],
                  ['d1', 'attach', 'begin', '-'],
                  ['d1', 'stopped', 'end', '-'],
                  ['d1', 'release', 'end', 'destroyed'],
                  ['d1', 'migrate', 'end', '-'], ['d1'], []]


def shared_domain(name='d1'):
    return hook_tests.domain(name, hook_tests.disk())


def make_venv(root, name, paths):
    """A venv whose python -I sees exactly ``paths`` (plus the stdlib)."""
    target = os.path.join(root, name)
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', target],
                   check=True, capture_output=True, timeout=120)
    python = os.path.join(target, 'bin', 'python')
    site = subprocess.run(
        [python, '-I', '-c',
         'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, 'nsc-test.pth'), 'w') as f:
        f.write(''.join(p + '\n' for p in paths))
    return python


def stand_in(root, name, body):
    """An executable sh script in place of the hook's interpreter."""
    path = os.path.join(root, name)
    with open(path, 'w') as f:
        f.write('#!/bin/sh\n' + textwrap.dedent(body))
    os.chmod(path, 0o755)
    return path


class WrapperTestBase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix='nsc-hook-wrapper-')
        # The package under test alone (the checkout's, or the installed
        # one under tox -e package), without the rest of its directory.
        product = os.path.join(cls.root, 'product')
        os.mkdir(product)
        os.symlink(os.path.dirname(os.path.dirname(os.path.abspath(
            cmd_hook.__file__))), os.path.join(product, 'nova_shared_cache'))
        paths = [product, SITE] + ([PLATSITE] if PLATSITE != SITE else [])
        cls.good = make_venv(cls.root, 'good', paths)
        # The package but not lxml (nor oslo.config).
        cls.no_lxml = make_venv(cls.root, 'nolxml', [product])
        # The package uninstalled (this environment's site-packages holds
        # an installed copy: left out too).
        cls.no_package = make_venv(cls.root, 'nopackage', [])
        cls.conf = os.path.join(cls.root, 'nova.conf')
        cls.set_mode('deny')

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    @classmethod
    def set_mode(cls, mode):
        with open(cls.conf, 'w') as f:
            f.write('[shared_cache]\nhook_mode = %s\ncache_mode = none\n'
                    % mode)

    def wrapper(self, python, timeout=hookinstall.TIMEOUT, config=True):
        fd, path = tempfile.mkstemp(dir=self.root, prefix='hook-')
        with os.fdopen(fd, 'w') as f:
            f.write(hookinstall.render(
                python, [self.conf] if config else [], timeout=timeout))
        os.chmod(path, 0o755)
        return path

    def run_hook(self, hook, args, xml=b'', timeout=60):
        started = time.monotonic()
        proc = subprocess.run(['/bin/sh', hook] + list(args), input=xml,
                              capture_output=True, timeout=timeout,
                              env={'PATH': os.environ.get('PATH', '')})
        proc.seconds = time.monotonic() - started
        return proc


class RealInterpreterTest(WrapperTestBase):

    def setUp(self):
        self.set_mode('deny')

    def test_deny_is_the_only_refusal(self):
        proc = self.run_hook(self.wrapper(self.good),
                             ['d1', 'prepare', 'begin', '-'],
                             shared_domain())
        self.assertEqual(1, proc.returncode, proc.stderr)
        self.assertIn(b'nova-shared-cache refuses the start of domain d1',
                      proc.stderr)
        self.assertEqual(b'', proc.stdout)

    def test_safe_domain_passes_silently(self):
        proc = self.run_hook(
            self.wrapper(self.good), ['d1', 'prepare', 'begin', '-'],
            hook_tests.domain('d1', hook_tests.disk(cache='none')))
        self.assertEqual((0, b'', b''),
                         (proc.returncode, proc.stdout, proc.stderr))

    def test_fix_passes_the_corrected_xml_on(self):
        self.set_mode('fix')
        proc = self.run_hook(self.wrapper(self.good),
                             ['d1', 'restore', 'begin', '-'],
                             shared_domain())
        self.assertEqual(0, proc.returncode, proc.stderr)
        disk = domxml.rbd_disks(domxml.parse(proc.stdout))[0]
        self.assertEqual(('none', True), (disk.cache, disk.shareable))

    def test_a_domain_named_like_an_option_is_judged(self):
        for name in ('--config-file', '--', '-I'):
            proc = self.run_hook(self.wrapper(self.good),
                                 [name, 'prepare', 'begin', '-'],
                                 shared_domain(name))
            self.assertEqual(1, proc.returncode, (name, proc.stderr))
            self.assertIn(('refuses the start of domain %s' % name).encode(),
                          proc.stderr)

    def test_interpreter_gone(self):
        hook = self.wrapper(os.path.join(self.root, 'removed', 'bin',
                                         'python'))
        for op in ('prepare', 'migrate', 'restore'):
            proc = self.run_hook(hook, ['d1', op, 'begin', '-'],
                                 shared_domain())
            self.assertEqual((0, b''), (proc.returncode, proc.stdout), op)
            self.assertIn(b'allowed unchecked: its Python interpreter',
                          proc.stderr)
            self.assertIn(b"nova-shared-cache install-hook --uninstall",
                          proc.stderr)

    def test_package_uninstalled(self):
        proc = self.run_hook(self.wrapper(self.no_package),
                             ['d1', 'restore', 'begin', '-'],
                             shared_domain())
        self.assertEqual((0, b''), (proc.returncode, proc.stdout),
                         proc.stderr)
        self.assertIn(b"No module named 'nova_shared_cache'", proc.stderr)
        self.assertIn(b'allowed unchecked: it failed with exit status 1',
                      proc.stderr)

    def test_lxml_missing(self):
        proc = self.run_hook(self.wrapper(self.no_lxml),
                             ['d1', 'prepare', 'begin', '-'],
                             shared_domain())
        self.assertEqual((0, b''), (proc.returncode, proc.stdout),
                         proc.stderr)
        self.assertIn(b'allowed unchecked: the hook cannot be loaded '
                      b"(ModuleNotFoundError: No module named 'lxml')",
                      proc.stderr)
        self.assertNotIn(b'Traceback', proc.stderr)

    def test_nova_conf_missing(self):
        os.unlink(self.conf)
        proc = self.run_hook(self.wrapper(self.good),
                             ['d1', 'prepare', 'begin', '-'],
                             shared_domain())
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertIn(b'configuration could not be read', proc.stderr)

    def test_no_nova_conf_at_all(self):
        # Installed without --config-file, on a host without
        # /etc/nova/nova.conf (this test would mean nothing on one with it).
        if os.path.exists('/etc/nova/nova.conf'):
            self.skipTest('/etc/nova/nova.conf exists here')
        proc = self.run_hook(self.wrapper(self.good, config=False),
                             ['d1', 'prepare', 'begin', '-'],
                             shared_domain())
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertIn(b'no nova.conf', proc.stderr)

    def test_odd_arguments_are_allowed(self):
        hook = self.wrapper(self.good)
        for args in (['d1', 'prepare'], ['d1', 'prepare', 'begin'],
                     ['', 'prepare', 'begin', '-'],
                     ['d1', 'restore', 'begin', '-', 'extra']):
            proc = self.run_hook(hook, args, b'<domain')
            self.assertEqual((0, b''), (proc.returncode, proc.stdout), args)
            self.assertNotIn(b'Traceback', proc.stderr)


class StandInInterpreterTest(WrapperTestBase):

    def test_operations_never_acted_on_never_start_python(self):
        marker = os.path.join(self.root, 'started')
        python = stand_in(self.root, 'python-marks',
                          'touch %s\nexit 1\n' % marker)
        hooks = [self.wrapper(python), self.wrapper(os.path.join(
            self.root, 'nonexistent')), self.wrapper(self.no_package)]
        for hook in hooks:
            for args in NEVER_ACTED_ON:
                proc = self.run_hook(hook, args, shared_domain() * 5000)
                self.assertEqual((0, b'', b''), (
                    proc.returncode, proc.stdout, proc.stderr), args)
        self.assertFalse(os.path.exists(marker))

    def test_fast_path_is_fast(self):
        hook = self.wrapper(self.good)
        self.run_hook(hook, ['d1', 'started', 'begin', '-'])
        best = min(self.run_hook(hook, ['d1', 'started', 'begin', '-'],
                                 shared_domain()).seconds
                   for _ in range(5))
        self.assertLess(best, 0.1)

    def test_dedicated_deny_status(self):
        for status, expected in ((cmd_hook.DENY, 1), (1, 0), (2, 0),
                                 (120, 0), (3, 0)):
            python = stand_in(self.root, 'python-%d' % status,
                              'cat >/dev/null; echo said no >&2; exit %d\n'
                              % status)
            proc = self.run_hook(self.wrapper(python),
                                 ['d1', 'prepare', 'begin', '-'],
                                 shared_domain())
            self.assertEqual(expected, proc.returncode, status)
            self.assertIn(b'said no', proc.stderr)

    def test_partial_output_of_a_failed_run_is_not_passed_on(self):
        bodies = {
            'exit': 'printf "<domain><name>half" ; exit 1\n',
            'signal': 'printf "<domain><name>half" ; kill -SEGV $$\n',
            'deny': 'printf "<domain><name>half" ; exit %d\n'
                    % cmd_hook.DENY,
        }
        for name, body in bodies.items():
            python = stand_in(self.root, 'python-partial-' + name, body)
            proc = self.run_hook(self.wrapper(python),
                                 ['d1', 'migrate', 'begin', '-'],
                                 shared_domain())
            self.assertEqual(b'', proc.stdout, name)
            if name == 'signal':
                self.assertEqual(0, proc.returncode)
                self.assertIn(b'killed by signal 11', proc.stderr)

    def test_output_of_a_successful_run_is_passed_on_whole(self):
        xml = shared_domain() * 3000  # past any pipe buffer
        python = stand_in(self.root, 'python-echo', 'cat\n')
        proc = self.run_hook(self.wrapper(python),
                             ['d1', 'restore', 'begin', '-'], xml)
        self.assertEqual((0, xml), (proc.returncode, proc.stdout))

    def test_hung_python_is_bounded_and_allowed(self):
        python = stand_in(self.root, 'python-hangs',
                          'printf "<domain>"\nexec sleep 60\n')
        proc = self.run_hook(self.wrapper(python, timeout=1),
                             ['d1', 'migrate', 'begin', '-'],
                             shared_domain(), timeout=30)
        self.assertEqual((0, b''), (proc.returncode, proc.stdout))
        self.assertIn(b'ran longer than 1 s', proc.stderr)
        self.assertLess(proc.seconds, 5)

    def test_python_ignoring_sigterm_is_killed(self):
        python = stand_in(self.root, 'python-stubborn',
                          "trap '' TERM\nwhile :; do sleep 1; done\n")
        proc = self.run_hook(self.wrapper(python, timeout=1),
                             ['d1', 'prepare', 'begin', '-'],
                             shared_domain(), timeout=30)
        self.assertEqual(0, proc.returncode)
        self.assertIn(b'it was killed (SIGKILL', proc.stderr)
        self.assertLess(proc.seconds, 1 + hookinstall.KILL_AFTER + 3)

    def test_arguments_reach_python_after_a_double_dash(self):
        record = os.path.join(self.root, 'argv')
        python = stand_in(self.root, 'python-argv',
                          'cat >/dev/null\nprintf "%%s\\n" "$@" > %s\n'
                          % record)
        self.run_hook(self.wrapper(python),
                      ['--config-file', 'prepare', 'begin', '-'])
        with open(record) as f:
            argv = f.read().splitlines()
        self.assertEqual(['-I', '-m', 'nova_shared_cache.cmd.hook',
                          '--config-file', self.conf, '--',
                          '--config-file', 'prepare', 'begin', '-'], argv)


class ScriptTextTest(unittest.TestCase):

    def text(self):
        return hookinstall.render("/opt/it's here/bin/python",
                                  ['/etc/nova/nova.conf', '/etc/nova/a b'])

    def test_sh_syntax(self):
        for shell in ('/bin/sh', 'dash', 'bash'):
            if shutil.which(shell):
                proc = subprocess.run([shell, '-n'], input=self.text(),
                                      capture_output=True, text=True)
                self.assertEqual(0, proc.returncode, (shell, proc.stderr))

    def test_shellcheck(self):
        shellcheck = shutil.which('shellcheck') or shutil.which(
            'shellcheck', path=os.path.join(TREE, '.tox', 'bashate', 'bin'))
        if not shellcheck:
            self.skipTest('no shellcheck here (tox -e bashate installs it)')
        proc = subprocess.run([shellcheck, '-s', 'sh', '-'],
                              input=self.text(), capture_output=True,
                              text=True)
        self.assertEqual(0, proc.returncode, proc.stdout)

    def test_paths_are_quoted(self):
        text = self.text()
        self.assertIn("""python='/opt/it'"'"'s here/bin/python'""", text)
        self.assertIn("--config-file /etc/nova/nova.conf "
                      "--config-file '/etc/nova/a b' -- \"$@\"", text)


class InstallTest(WrapperTestBase):

    def setUp(self):
        self.hooks = tempfile.mkdtemp(dir=self.root)
        self.path = hookinstall.hook_path(self.hooks, 'hook')

    def executables(self):
        found = []
        for dirpath, _, files in os.walk(self.hooks):
            for f in files:
                mode = os.stat(os.path.join(dirpath, f)).st_mode
                if mode & stat.S_IXUSR:
                    found.append(os.path.relpath(os.path.join(dirpath, f),
                                                 self.hooks))
        return sorted(found)

    def test_install_writes_the_wrapper_and_nothing_else(self):
        os.makedirs(os.path.join(self.hooks, 'qemu.d'))
        leftover = self.path + '.tmp'  # what an interrupted old install left
        with open(leftover, 'w') as f:
            f.write('#!/bin/sh\nexit 1\n')
        os.chmod(leftover, 0o755)
        path = hookinstall.install_checked(self.hooks, 'hook', self.good,
                                           [self.conf])
        self.assertEqual(self.path, path)
        self.assertEqual(['qemu.d/hook'], self.executables())
        self.assertEqual(['qemu.d'], os.listdir(self.hooks))
        self.assertEqual(0o755, stat.S_IMODE(os.stat(path).st_mode))
        with open(path) as f:
            self.assertEqual(hookinstall.render(self.good, [self.conf]),
                             f.read())

    def test_an_interpreter_that_cannot_run_the_hook_is_refused(self):
        hookinstall.install(self.hooks, 'hook', 'old\n')
        for python in (self.no_package, self.no_lxml,
                       os.path.join(self.root, 'nonexistent')):
            self.assertRaisesRegex(
                hookinstall.HookInstallError, 'cannot (import|be run)',
                hookinstall.install_checked, self.hooks, 'hook', python)
            with open(self.path) as f:
                self.assertEqual('old\n', f.read())
        self.assertEqual(['qemu.d/hook'], self.executables())

    def test_a_failed_write_leaves_the_old_hook(self):
        hookinstall.install(self.hooks, 'hook', 'old\n')

        class Boom(Exception):
            pass

        real = os.fsync

        def failing(fd):
            raise Boom()
        os.fsync = failing
        try:
            self.assertRaises(Boom, hookinstall.install, self.hooks, 'hook',
                              'new\n')
        finally:
            os.fsync = real
        with open(self.path) as f:
            self.assertEqual('old\n', f.read())
        self.assertEqual(['qemu.d'], os.listdir(self.hooks))

    def test_uninstall(self):
        hookinstall.install(self.hooks, 'hook', 'x\n')
        self.assertTrue(hookinstall.uninstall(self.hooks, 'hook'))
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(hookinstall.uninstall(self.hooks, 'hook'))

    def test_manage_install_hook(self):
        import io

        from nova_shared_cache.cmd import manage
        out, err = io.StringIO(), io.StringIO()
        code = manage.main(['--config-file', self.conf, 'install-hook',
                            '--hooks-dir', self.hooks], out, err)
        self.assertEqual(0, code, err.getvalue())
        path = hookinstall.hook_path(self.hooks, install_hook_cmd.HOOK_NAME)
        self.assertIn('installed %s' % path, out.getvalue())
        with open(path) as f:
            self.assertEqual(hookinstall.render(sys.executable, [self.conf]),
                             f.read())
        conf_d = os.path.join(self.root, 'nova.conf.d')
        os.mkdir(conf_d)
        code = manage.main(['--config-file', self.conf, '--config-dir',
                            conf_d, 'install-hook', '--hooks-dir',
                            self.hooks], io.StringIO(), err)
        self.assertEqual(0, code, err.getvalue())
        with open(path) as f:
            text = f.read()
        self.assertEqual(hookinstall.render(sys.executable, [self.conf],
                                            config_dirs=[conf_d]), text)
        self.assertIn('--config-dir %s -- "$@"' % conf_d, text)
        out = io.StringIO()
        code = manage.main(['install-hook', '--hooks-dir', self.hooks,
                            '--uninstall'], out, err)
        self.assertEqual(0, code)
        self.assertIn('removed %s' % path, out.getvalue())
        self.assertFalse(os.path.exists(path))
