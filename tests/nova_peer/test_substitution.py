"""Controls: Nova's libvirt tests really run LibvirtSharedCacheDriver.

Each of these fails when the plugin's substitution is removed
(``NSC_NOVA_PEER_STOCK=1``, or running without ``-p
tests.nova_peer.plugin``); the Nova tests themselves would pass either way.
"""

import sys
import unittest
from unittest import mock

import fixtures
import nova.virt.libvirt
from nova.virt.libvirt import driver as nova_driver

from nova_shared_cache import driver as sc_driver
from tests.nova_peer import plugin

EXTENSION = sc_driver.LibvirtSharedCacheDriver


def _run_nova_test(case):
    result = unittest.TestResult()
    case.run(result)
    assert result.testsRun == 1
    assert result.wasSuccessful(), result.errors + result.failures
    return result


def test_nova_names_are_the_extension():
    from nova.tests.unit.virt.libvirt import test_driver

    assert nova_driver.LibvirtDriver is EXTENSION
    assert nova.virt.libvirt.LibvirtDriver is EXTENSION
    # The name the test module uses, looked up as its tests do.
    assert test_driver.libvirt_driver.LibvirtDriver is EXTENSION


def test_novas_tests_instantiate_and_run_the_extension():
    """One of Nova's own tests, run as is, goes through our overrides."""
    from nova.tests.unit.virt.libvirt import test_driver

    real_init = EXTENSION.__init__
    drivers = []

    def init(self, *args, **kwargs):
        drivers.append(self)
        real_init(self, *args, **kwargs)

    # The subclass's _set_cache_mode calls Nova's through Nova's class:
    # who called it is recorded.
    novas = sc_driver._NOVA_DRIVER._set_cache_mode
    callers = []

    def spy(self, conf):
        callers.append(sys._getframe(1).f_code.co_qualname)
        return novas(self, conf)

    with mock.patch.object(EXTENSION, '__init__', init), \
            mock.patch.object(sc_driver._NOVA_DRIVER, '_set_cache_mode',
                              spy):
        _run_nova_test(test_driver.LibvirtConnTestCase('test_set_cache_mode'))

    assert len(drivers) == 1
    driver = drivers[0]
    assert type(driver) is EXTENSION
    # The extension's own __init__ ran (settings and backends loaded).
    assert [b.name for b in driver._shared_backends] == ['rbd']
    assert callers == ['LibvirtSharedCacheDriver._set_cache_mode']


def test_extension_sees_novas_class_under_novas_name():
    # compat.check in the driver's __init__ must check Nova's class.
    assert sc_driver.libvirt_driver.LibvirtDriver is EXTENSION.__bases__[0]
    assert sc_driver.libvirt_driver.LibvirtDriver is not EXTENSION
    assert (sc_driver.libvirt_driver.MIN_LIBVIRT_VERSION
            is nova_driver.MIN_LIBVIRT_VERSION)


def test_statics_are_in_the_subclass_dict():
    stock = EXTENSION.__bases__[0]
    statics = [name for name, value in vars(stock).items()
               if isinstance(value, (staticmethod, classmethod))]
    assert statics
    for name in statics:
        assert type(vars(EXTENSION)[name]) is type(vars(stock)[name]), name


def test_leftovers_of_a_patch_are_removed_after_each_test():
    substitution = plugin.substitution()
    assert substitution is not None, 'no substitution (stock run?)'
    name = 'get_available_nodes'   # inherited, not overridden
    assert name not in vars(EXTENSION)
    patch = fixtures.MonkeyPatch(
        'nova.virt.libvirt.driver.LibvirtDriver.%s' % name, lambda s: [])
    patch.setUp()
    patch.cleanUp()
    # fixtures put Nova's function back on the subclass itself ...
    assert name in vars(EXTENSION)
    substitution.after_test()
    # ... and the plugin took it away again.
    assert name not in vars(EXTENSION)


def test_class_dict_snapshot():
    class Base:
        def inherited(self):
            return 'base'

    class Sub(Base):
        def own(self):
            return 'sub'

    snapshot = plugin.ClassDictSnapshot(Sub)
    original_own = Sub.own
    Sub.inherited = lambda self: 'leftover'
    Sub.own = lambda self: 'patched'
    Sub.added = 1
    assert snapshot.restore() == ['added', 'inherited', 'own']
    assert 'inherited' not in vars(Sub) and 'added' not in vars(Sub)
    assert Sub.own is original_own
    assert Sub().inherited() == 'base'
    assert snapshot.restore() == []
