"""A last bound on every test of every suite: where it hung, then exit.

pytest-timeout (``--timeout``, signal method) fails a test that runs too
long, but only once the main thread is back in Python, and the test's
clean-up can then wait again (a thread pool's shutdown waiting for its
hung worker, a process still stopped). This timer runs in faulthandler's
own C thread, whatever Python does: ``BACKSTOP_GRACE`` seconds after
pytest-timeout's bound (counted from the start of each phase: set-up,
call, teardown) it writes the stack of every thread to the stderr pytest
started with and ends the process with status 1. A hung suite then
ends with where it hung, and the envs after it still run, instead of the
run's own bound (tools/run-tests) killing everything without a word.
"""

import faulthandler
import os

import pytest

#: Seconds after pytest-timeout's --timeout (NSC_BACKSTOP_GRACE).
BACKSTOP_GRACE = float(os.environ.get('NSC_BACKSTOP_GRACE') or 120)


def _timeout(config):
    try:
        value = config.getoption('timeout')
    except ValueError:          # pytest-timeout is not installed
        return 0
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0


def pytest_configure(config):
    timeout = _timeout(config)
    if timeout > 0:
        # Capturing is suspended here: fd 2 is still pytest's own stderr.
        config._nsc_backstop = (timeout + BACKSTOP_GRACE, os.dup(2))


def pytest_unconfigure(config):
    backstop = getattr(config, '_nsc_backstop', None)
    if backstop is not None:
        faulthandler.cancel_dump_traceback_later()
        os.close(backstop[1])
        config._nsc_backstop = None


def _arm(item):
    backstop = getattr(item.config, '_nsc_backstop', None)
    if backstop is not None:
        seconds, fd = backstop
        faulthandler.dump_traceback_later(seconds, exit=True, file=fd)


# Armed anew for each phase: pytest's own faulthandler plugin cancels the
# timer when a phase fails (pytest_exception_interact), and a teardown
# after a failure is where a hang is most likely.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _arm(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _arm(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    _arm(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    try:
        yield
    finally:
        if getattr(item.config, '_nsc_backstop', None) is not None:
            faulthandler.cancel_dump_traceback_later()
