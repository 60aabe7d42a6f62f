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


class BackstopTest(unittest.TestCase):

    def run_pytest(self, tmp, grace):
        env = dict(os.environ, NSC_BACKSTOP_GRACE=str(grace))
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-q',
             '--timeout=1', tmp], capture_output=True, text=True, env=env,
            timeout=50, cwd=tmp)
        return done, time.monotonic() - started

    def setUp(self):
        self.tmp = os.path.join(os.environ.get('TMPDIR', '/tmp'),
                                'nsc-backstop-%d' % os.getpid())
        os.makedirs(self.tmp)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        with open(os.path.join(self.tmp, 'test_hangs.py'), 'w') as f:
            f.write(HANGS)

    def test_a_test_hung_past_pytest_timeout_ends_with_its_stack(self):
        shutil.copy(CONFTEST, self.tmp)
        done, elapsed = self.run_pytest(self.tmp, 2)
        # pytest-timeout fired at 1 s; the clean-up hung again; the last
        # bound ended the process 2 s after pytest-timeout's.
        self.assertEqual(1, done.returncode, done.stderr[-2000:])
        self.assertLess(elapsed, 40)
        self.assertIn('Timeout (0:00:03)!', done.stderr)
        self.assertIn('test_hangs_in_its_clean_up_too', done.stderr)
        self.assertIn('test_hangs.py', done.stderr)

    def test_without_it_the_same_test_hangs(self):
        # The control: pytest-timeout alone does not end this test.
        with self.assertRaises(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
                 '-q', '--timeout=1', self.tmp], capture_output=True,
                timeout=8, cwd=self.tmp)
