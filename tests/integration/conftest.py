"""The real stack for the integration tests: started once per run."""

import pytest

from nova_shared_cache.embedded import compute as compute_harness
from nova_shared_cache.embedded import stack as embedded_stack


@pytest.fixture(scope='session')
def stack():
    s = embedded_stack.Stack().up()
    yield s
    s.down()


@pytest.fixture(scope='session')
def compute(stack):
    c = compute_harness.Compute(extension=True, cache_mode='none')
    yield c
    for instance in list(c.instances.values()):
        c.destroy(instance)
    c.close()


def pytest_sessionfinish(session, exitstatus):
    session.config._nsc_exitstatus = int(exitstatus)


def pytest_unconfigure(config):
    # NOTE: Nova's libvirt event loop leaves non-daemon threads behind once
    # libvirtd has been stopped by the stack's teardown, and the interpreter
    # would wait for them forever. Everything pytest reports (summary,
    # junit XML) is written by now; leave with pytest's own exit status.
    import os
    import sys
    import threading
    stuck = [t for t in threading.enumerate()
             if t is not threading.main_thread() and not t.daemon]
    if stuck and hasattr(config, '_nsc_exitstatus'):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config._nsc_exitstatus)
