"""Nova's libvirt driver in a benchmark process, under Nova's fake libvirt.

The drivers are Nova's real ``LibvirtDriver`` code and the extension's
``LibvirtSharedCacheDriver``; only libvirt itself is Nova's test double
(``nova.tests.fixtures.LibvirtFixture``), as in the unit tests.
"""

import contextlib
import inspect
import logging
import sys
import tempfile

import nova.conf
from nova import context as nova_context
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import fake_instance
from nova.virt import fake
from nova.virt.libvirt import driver as libvirt_driver

# Nothing of the extension is imported here: the stock figures (memory.py)
# must not include it.

CONF = nova.conf.CONF
DISK_INFO = {'bus': 'virtio', 'dev': 'vdb', 'type': 'disk'}
# Nova 30-33 take the instance first, Nova 34 does not.
_WITH_INSTANCE = 'instance' in inspect.signature(
    libvirt_driver.LibvirtDriver._get_volume_config).parameters


@contextlib.contextmanager
def fake_libvirt(log_file=None, **shared_cache):
    """Nova's CONF and fake libvirt; INFO logs to ``log_file`` if given."""
    CONF([], project='nova', default_config_files=[])
    CONF.set_override('disk_cachemodes', ['network=writeback'], 'libvirt')
    set_shared_cache(**shared_cache)
    root = logging.getLogger()
    handler = None
    if log_file:
        # nova-compute logs INFO to a file; the policy's line goes there.
        handler = logging.FileHandler(log_file)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        CONF.set_override('instances_path', tmp)
        fixture = nova_fixtures.LibvirtFixture()
        fixture.setUp()
        try:
            yield
        finally:
            fixture.cleanUp()
            if handler:
                root.removeHandler(handler)
                handler.close()


def set_shared_cache(**options):
    """Override ``[shared_cache]`` options (registering the group first)."""
    if not options:
        return
    from nova_shared_cache import conf as sc_conf
    sc_conf.register_opts(CONF)
    for name, value in options.items():
        CONF.set_override(name, value, 'shared_cache')


def instance():
    return fake_instance.fake_instance_obj(nova_context.get_admin_context())


def stock_driver():
    return libvirt_driver.LibvirtDriver(fake.FakeVirtAPI(), False)


def extension_driver():
    from nova_shared_cache import driver as sc_driver
    return sc_driver.LibvirtSharedCacheDriver(fake.FakeVirtAPI(), False)


def volume_xml_path(drv, inst, connection_info):
    """A callable building one volume disk as Nova does for an attach.

    ``_get_volume_config``, then ``_set_cache_mode`` again as
    ``_get_guest_storage_config`` does.
    """
    if _WITH_INSTANCE:
        def build():
            conf = drv._get_volume_config(inst, connection_info,
                                          DISK_INFO)
            drv._set_cache_mode(conf)
            return conf
    else:
        def build():
            conf = drv._get_volume_config(connection_info, DISK_INFO)
            drv._set_cache_mode(conf)
            return conf
    return build


def connect_path(drv, inst, connection_info, new_attachment=True):
    """A callable doing the driver's connect step of an attach."""
    context = nova_context.get_admin_context()
    sc_driver = sys.modules.get('nova_shared_cache.driver')
    if sc_driver is None or not isinstance(
            drv, sc_driver.LibvirtSharedCacheDriver):
        return lambda: drv._connect_volume(context, connection_info, inst)

    def connect():
        # attach_volume marks a new attachment for the guard; the rest of
        # attach_volume needs a domain and Nova's database.
        with sc_driver._scope(sc_driver._NEW_ATTACHMENT, new_attachment):
            drv._connect_volume(context, connection_info, inst)
    return connect
