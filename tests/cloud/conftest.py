"""The real cloud (tools/cloud) for the tests in this directory.

The session brings the cloud up with ``tools/cloud up`` and takes it down
at the end (``NSC_CLOUD_KEEP=1`` leaves it up). Tests drive it the way an
operator does (``nova_shared_cache_lab.cloudcli``): the ``openstack``
command, ``virsh`` for what libvirt reports, the guests' serial consoles
through libvirt.
"""

import os
import uuid

import pytest

from nova_shared_cache_lab import cloudcli
from nova_shared_cache_lab.cloudcli import CommandError  # noqa: F401
from nova_shared_cache_lab.cloudcli import disk_cache  # noqa: F401
from nova_shared_cache_lab.cloudcli import FLAVOR  # noqa: F401
from nova_shared_cache_lab.cloudcli import FLAVOR_ALT  # noqa: F401
from nova_shared_cache_lab.cloudcli import is_shareable  # noqa: F401
from nova_shared_cache_lab.cloudcli import volume_disk  # noqa: F401

os.environ.setdefault('NSC_TOP', os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))

#: The compute options of the shared-volume tests: a caching default for
#: network disks (what Ceph's docs recommend for single-writer disks), and
#: the extension asked for directsync on shared ones.
CACHING = {'libvirt': {'disk_cachemodes': 'network=writeback'},
           'shared_cache': {'cache_mode': 'directsync'}}


@pytest.fixture(scope='session')
def cloud():
    c = cloudcli.CloudCLI()
    c.configure('extension', {})
    yield c
    if os.environ.get('NSC_CLOUD_KEEP') != '1':
        c.tool('down')
    elif c.driver == 'hazard':
        # A cloud left running never keeps the test-only driver.
        c.configure('extension', {})


@pytest.fixture(scope='session')
def guest_image(cloud):
    """The project's tiny guest as a public Glance image (once)."""
    return cloud.ensure_image()


@pytest.fixture(scope='session')
def volume_type(cloud):
    """The multiattach volume type, as an operator creates it."""
    return cloud.ensure_volume_type()


def unique(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:6])
