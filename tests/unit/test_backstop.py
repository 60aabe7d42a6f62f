"""tests/conftest.py's last bound, in a pytest of its own."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CONFTEST = os.path.join(os.path.dirname(HERE), 'conftest.py')

HANGS = textwrap.dedent('''
    import time

    def test_hangs_in_its_clean_up_too():
        try:
            time.sleep(60)
        finally:
            # What pytest-timeout's failure cannot end: the clean-up
            # waits again.
            time.sleep(60)

    def test_after_it():
        pass
''')


TEARDOWN_HANGS = textwrap.dedent('''
    import time

    import pytest


    @pytest.fixture
    def hangs_in_teardown():
        yield
        time.sleep(60)

    def test_fails_then_its_teardown_hangs(hangs_in_teardown):
        time.sleep(60)      # pytest-timeout fails it at 1 s
''')


class BackstopTest(unittest.TestCase):

    def run_pytest(self, limit, grace=None):
        """(exit status or None if still running after ``limit`` s, out).

        Popen and a deadline, not subprocess.run(timeout=): under the
        unit suite, Nova's fixtures may have patched subprocess.
        """
        env = dict(os.environ)
        if grace is not None:
            env['NSC_BACKSTOP_GRACE'] = str(grace)
        with open(os.path.join(self.tmp, 'out'), 'w+') as out:
            proc = subprocess.Popen(
                [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
                 '-q', '--timeout=1', self.tmp], stdout=out,
                stderr=subprocess.STDOUT, env=env, cwd=self.tmp)
            deadline = time.monotonic() + limit
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            status = proc.poll()
            if status is None:
                proc.kill()
                proc.wait()
            out.seek(0)
            return status, out.read()

    def setUp(self):
        self.tmp = os.path.join(os.environ.get('TMPDIR', '/tmp'),
                                'nsc-backstop-%d' % os.getpid())
        os.makedirs(self.tmp)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        with open(os.path.join(self.tmp, 'test_hangs.py'), 'w') as f:
            f.write(HANGS)

    def test_a_test_hung_past_pytest_timeout_ends_with_its_stack(self):
        shutil.copy(CONFTEST, self.tmp)
        started = time.monotonic()
        status, out = self.run_pytest(40, grace=2)
        # pytest-timeout fired at 1 s; the clean-up hung again; the last
        # bound ended the process 2 s after pytest-timeout's.
        self.assertEqual(1, status, out[-2000:])
        self.assertLess(time.monotonic() - started, 40)
        self.assertIn('Timeout (0:00:03)!', out)
        self.assertIn('test_hangs_in_its_clean_up_too', out)
        self.assertIn('test_hangs.py', out)

    def test_a_teardown_hung_after_a_failure_ends_with_its_stack(self):
        # pytest's faulthandler plugin cancels the timer when the call
        # fails; the teardown gets its own.
        os.remove(os.path.join(self.tmp, 'test_hangs.py'))
        with open(os.path.join(self.tmp, 'test_teardown.py'), 'w') as f:
            f.write(TEARDOWN_HANGS)
        shutil.copy(CONFTEST, self.tmp)
        status, out = self.run_pytest(40, grace=2)
        self.assertEqual(1, status, out[-2000:])
        self.assertIn('Timeout (0:00:03)!', out)
        self.assertIn('hangs_in_teardown', out)

    def test_without_it_the_same_test_hangs(self):
        # The control: pytest-timeout alone does not end this test.
        status, out = self.run_pytest(8)
        self.assertIsNone(status, out[-3000:])
