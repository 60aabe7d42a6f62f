"""pytest plugin: Nova's own libvirt driver tests, run on the extension.

Loaded with ``-p tests.nova_peer.plugin`` (tox -e nova-peer). Before any
test module is collected it puts ``LibvirtSharedCacheDriver`` in place of
Nova's ``LibvirtDriver`` under both names Nova's tests use:

- ``nova.virt.libvirt.driver.LibvirtDriver`` (``from nova.virt.libvirt
  import driver as libvirt_driver`` and then ``libvirt_driver.LibvirtDriver(
  ...)``, ``mock.patch.object(libvirt_driver.LibvirtDriver, ...)`` and
  ``mock.patch('nova.virt.libvirt.driver.LibvirtDriver.x')``: looked up when
  the test runs, so these see the subclass);
- ``nova.virt.libvirt.LibvirtDriver`` (bound once when the package is
  imported; ``mock.patch('nova.virt.libvirt.LibvirtDriver.x')`` and
  ``compute_driver = libvirt.LibvirtDriver``).

With both names on the subclass, every patch a test makes lands on the class
the test instantiates, as it does with stock Nova. Three more things keep the
run a faithful copy of the stock one, and change no test:

- LibvirtDriver's staticmethods and classmethods are copied into the
  subclass's own ``__dict__``: fixtures' MonkeyPatch (``self.stub_out``)
  only keeps a replacement static when the attribute it replaces is a
  staticmethod in the patched class's own ``__dict__``; otherwise it sets a
  plain function, which then gets ``self`` as an extra argument.
- The subclass's ``__dict__`` is put back after every test: MonkeyPatch
  restores an inherited attribute by setting it on the subclass, where it
  would stay and leak into later tests.
- ``nova_shared_cache.driver`` sees Nova's own module through a view whose
  ``LibvirtDriver`` is Nova's class, as in production: its ``__init__``
  checks ``libvirt_driver.LibvirtDriver`` with ``compat.check``, which must
  be Nova's class and not the subclass the harness put under that name.

Nova's test base deletes every public attribute of a test at cleanup, the
test method included, which pytest >= 9 deletes itself afterwards; the
method is kept (tests/compat.py does the same for this project's tests).

``NSC_NOVA_PEER_STOCK=1`` leaves Nova's class in place: the stock baseline.
``EXCLUDED`` lists the Nova tests not run, each with its reason.

One process, no pytest-xdist: once Nova's tests have monkey patched with
eventlet, an xdist worker's channel to its controller stalls (stock Nova's
tests alone stall the same way under ``-n 2``).
"""

import os
import types

import pytest

STOCK_RUN = os.environ.get('NSC_NOVA_PEER_STOCK') == '1'

#: "module::Class::test" -> why the test is not run with the extension.
#: Every test here passes with stock Nova; keep this list empty unless a
#: difference is understood and reported.
EXCLUDED = {}


class ClassDictSnapshot:
    """Put a class's own attributes back as they were when taken."""

    def __init__(self, cls):
        self.cls = cls
        self.saved = dict(cls.__dict__)

    def restore(self):
        """Undo every change since the snapshot; return the names fixed."""
        now = self.cls.__dict__
        added = [name for name in now if name not in self.saved]
        changed = [name for name, value in self.saved.items()
                   if now.get(name, self) is not value]
        for name in added:
            delattr(self.cls, name)
        for name in changed:
            setattr(self.cls, name, self.saved[name])
        return sorted(added + changed)


class Substitution:
    """LibvirtSharedCacheDriver under the names of Nova's LibvirtDriver."""

    def __init__(self):
        import nova.virt.libvirt
        from nova.virt.libvirt import driver as nova_driver

        from nova_shared_cache import driver as sc_driver

        self.package = nova.virt.libvirt
        self.module = nova_driver
        self.sc_module = sc_driver
        self.stock = nova_driver.LibvirtDriver
        self.extension = sc_driver.LibvirtSharedCacheDriver
        self.snapshot = None
        self.restored_tests = 0
        self.restored_names = set()

    def apply(self):
        stock, extension = self.stock, self.extension
        assert extension.__bases__ == (stock,), extension.__bases__
        for name, value in vars(stock).items():
            if (isinstance(value, (staticmethod, classmethod))
                    and name not in vars(extension)):
                setattr(extension, name, value)
        self.snapshot = ClassDictSnapshot(extension)
        view = types.ModuleType(self.module.__name__, self.module.__doc__)
        view.__getattr__ = lambda name: getattr(self.module, name)
        view.LibvirtDriver = stock
        self.sc_module.libvirt_driver = view
        self.module.LibvirtDriver = extension
        self.package.LibvirtDriver = extension

    def after_test(self):
        names = self.snapshot.restore()
        if names:
            self.restored_tests += 1
            self.restored_names.update(names)


def _keep_test_method():
    from nova import test

    clear_attrs = test.TestCase._clear_attrs
    if getattr(clear_attrs, 'keeps_test_method', False):
        return

    def _clear_attrs(self):
        method = self.__dict__.get(self._testMethodName)
        clear_attrs(self)
        if method is not None:
            self.__dict__[self._testMethodName] = method

    _clear_attrs.keeps_test_method = True
    test.TestCase._clear_attrs = _clear_attrs


_substitution = None


def substitution():
    """The Substitution in force, or None in a stock run."""
    return _substitution


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    # Before any test module is imported. Nova's test package first, as in
    # a stock run: it monkey patches with eventlet and registers Nova's
    # objects before anything else imports Nova.
    global _substitution
    import nova.tests.unit  # noqa: F401
    _keep_test_method()
    if not STOCK_RUN and _substitution is None:
        _substitution = Substitution()
        _substitution.apply()


def _test_id(item):
    names = [item.module.__name__] if item.module else []
    if item.cls is not None:
        names.append(item.cls.__name__)
    names.append(item.name)
    return '::'.join(names)


def pytest_collection_modifyitems(config, items):
    if STOCK_RUN or not EXCLUDED:
        return
    kept, excluded = [], []
    for item in items:
        (excluded if _test_id(item) in EXCLUDED else kept).append(item)
    if excluded:
        config.hook.pytest_deselected(items=excluded)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if _substitution is not None:
        _substitution.after_test()


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    if STOCK_RUN:
        write('nova-peer: STOCK run (NSC_NOVA_PEER_STOCK=1): Nova\'s own '
              'LibvirtDriver, no substitution')
        return
    write('nova-peer: Nova\'s LibvirtDriver replaced by '
          'nova_shared_cache.driver.LibvirtSharedCacheDriver')
    if _substitution is not None and _substitution.restored_tests:
        write('nova-peer: the subclass __dict__ was put back after %d '
              'tests (%s)' % (_substitution.restored_tests,
                              ', '.join(sorted(
                                  _substitution.restored_names))))
    for test_id, reason in sorted(EXCLUDED.items()):
        write('nova-peer: EXCLUDED %s: %s' % (test_id, reason))
