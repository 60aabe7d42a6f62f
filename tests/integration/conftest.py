"""The real stack for the integration tests: started once per run."""

import pytest

from nova_shared_cache_lab import clientconf
from nova_shared_cache_lab import compute as compute_harness
from nova_shared_cache_lab import stack as embedded_stack


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


@pytest.fixture(scope='module')
def hostile_client_conf():
    """A client ceph.conf asking librbd to cache, for the modules that ask.

    Writeback with no writethrough phase: only the disk's cache mode
    decides whether a VM caches.
    """
    with clientconf.client_options(clientconf.WRITEBACK):
        yield


@pytest.fixture(scope='module')
def nova_conf(stack, tmp_path_factory):
    """The compute's nova.conf as the operator commands read it."""
    path = tmp_path_factory.mktemp('etc') / 'nova.conf'
    path.write_text('[shared_cache]\nceph_conf = %s\n[libvirt]\n'
                    'rbd_user = cinder\n' % stack.ceph.client_conf)
    return str(path)


def pytest_sessionfinish(session, exitstatus):
    session.config._nsc_exitstatus = int(exitstatus)


def pytest_unconfigure(config):
    # Everything pytest reports (summary, junit XML) is written by now.
    if hasattr(config, '_nsc_exitstatus'):
        compute_harness.exit_process(config._nsc_exitstatus)
