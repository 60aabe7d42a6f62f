"""Load the enabled shared-volume backends with stevedore."""

from oslo_log import log as logging
from stevedore import named

from nova_shared_cache.backends import base
from nova_shared_cache import exception

LOG = logging.getLogger(__name__)

NAMESPACE = 'nova_shared_cache.backends'


def _load_failed(manager, entrypoint, err):
    raise exception.BackendLoadError(
        backend=entrypoint.name,
        reason="%s: %s" % (type(err).__name__, err)) from err


def _missing(names):
    raise exception.BackendLoadError(
        backend=', '.join(sorted(names)),
        reason="no such entry point is installed")


def load(names, conf, manager=None):
    """Return the backend objects for ``names``, in that order.

    stevedore's default is to log a plugin that fails to load and go on
    without it, which would leave its volumes unprotected and silently so;
    here any failure stops the driver with an error naming the backend.
    ``manager`` lets tests pass a ``NamedExtensionManager.make_test_instance``.
    """
    if manager is None:
        manager = named.NamedExtensionManager(
            NAMESPACE, names=list(names), name_order=True,
            invoke_on_load=True, invoke_args=(conf,),
            on_load_failure_callback=_load_failed,
            on_missing_entrypoints_callback=_missing)
    backends = []
    for ext in manager.extensions:
        if not isinstance(ext.obj, base.SharedVolumeBackend):
            raise exception.BackendLoadError(
                backend=ext.name,
                reason="%r is not a SharedVolumeBackend" % (ext.obj,))
        ext.obj.name = ext.name
        backends.append(ext.obj)
    LOG.debug("Shared-volume backends enabled: %s",
              ', '.join(b.name for b in backends))
    return backends
