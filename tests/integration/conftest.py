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
    # Everything pytest reports (summary, junit XML) is written by now.
    if hasattr(config, '_nsc_exitstatus'):
        compute_harness.exit_process(config._nsc_exitstatus)
