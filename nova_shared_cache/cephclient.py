"""One Ceph cluster connection per process, bounded in time, reused.

Everything here goes through the ``rados`` and ``rbd`` Python bindings
(Debian's python3-rados / python3-rbd, linked into Nova's environment).

Bounding time: ``Rados.connect(timeout=...)`` does not bound anything, so
the bound is given to librados itself as client options:
``client_mount_timeout`` (connecting and authenticating),
``rados_mon_op_timeout`` (monitor commands) and ``rados_osd_op_timeout``
(every OSD operation: opening an image, listing its watchers, changing its
features). A call that hits a bound raises, and the connection is dropped
so that the next call connects again.

Under eventlet (Nova's compute on the releases that still use it) a
blocking librados call would stop every greenthread; calls then run in
eventlet's native thread pool.
"""

import contextlib
import os
import sys
import threading

from oslo_log import log as logging

from nova_shared_cache import exception

LOG = logging.getLogger(__name__)

try:  # the bindings are optional until a Ceph check is needed
    import rados
    import rbd
except ImportError:  # pragma: no cover - depends on the host
    rados = None
    rbd = None

#: rados/rbd errors after which the connection itself is suspect.
_KEEP_CONNECTION = ('ObjectNotFound', 'ImageNotFound', 'PermissionError',
                    'PermissionDeniedError', 'InvalidArgument',
                    'InvalidArgumentError', 'ReadOnlyImage', 'ImageBusy')


def bindings():
    """The (rados, rbd) modules, or a CephError saying how to get them."""
    if rados is None or rbd is None:
        raise exception.CephError(
            what='load the Ceph Python bindings',
            reason="the 'rados' and 'rbd' modules are not importable in "
                   "this Python environment (install python3-rados and "
                   "python3-rbd and make them visible to nova-compute)")
    return rados, rbd


def _offload(function, *args):
    """Run a blocking librados call without stopping other greenthreads."""
    # Only a process that imported eventlet can be monkey patched; do not
    # import it (and its deprecation warning) into one that did not.
    patcher = sys.modules.get('eventlet.patcher')
    if patcher is not None and patcher.is_monkey_patched('thread'):
        from eventlet import tpool
        return tpool.execute(function, *args)
    return function(*args)


def client_options(timeout):
    return {
        'client_mount_timeout': str(timeout),
        'rados_mon_op_timeout': str(timeout),
        'rados_osd_op_timeout': str(timeout),
    }


class CephClient:
    """A lazily opened, shared connection as one Ceph user."""

    def __init__(self, conffile, user, timeout, mon_host=None):
        self.conffile = conffile
        self.user = user
        self.timeout = timeout
        #: Monitors to use instead of ceph.conf's (the volume's cluster).
        self.mon_host = mon_host
        self._cluster = None
        self._lock = threading.Lock()

    def _connect(self):
        rados_mod, _ = bindings()
        what = 'connect to Ceph as client.%s (%s)' % (
            self.user, self.conffile)
        if not os.path.isfile(self.conffile):
            raise exception.CephError(
                what=what,
                reason='the Ceph configuration file %s does not exist '
                       '([shared_cache] ceph_conf)' % self.conffile)
        options = client_options(self.timeout)
        if self.mon_host:
            options['mon_host'] = self.mon_host
        try:
            # The constructor already reads the configuration file.
            cluster = rados_mod.Rados(conffile=self.conffile,
                                      rados_id=self.user, conf=options)
        except rados_mod.Error as err:
            raise exception.CephError(
                what=what, reason='cannot read %s: %s' % (
                    self.conffile, self._reason(err))) from err
        try:
            _offload(cluster.connect)
        except rados_mod.Error as err:
            _offload(cluster.shutdown)
            reason = self._reason(err)
            if type(err).__name__ in ('ObjectNotFound', 'PermissionError',
                                      'PermissionDeniedError'):
                reason = ('no usable key for client.%s (a keyring found '
                          'through %s, readable by this process): %s'
                          % (self.user, self.conffile, reason))
            raise exception.CephError(what=what, reason=reason) from err
        return cluster

    def _reason(self, err):
        name = type(err).__name__
        if name in ('TimedOut', 'InterruptedOrTimeoutError', 'Timeout'):
            return ('no answer within %ds ([shared_cache] ceph_timeout): '
                    'are the monitors and OSDs up and reachable?'
                    % self.timeout)
        return '%s: %s' % (name, err)

    def call(self, what, function):
        """Run ``function(cluster)`` on the shared connection.

        ``what`` names the operation for the error message. rados/rbd
        errors become CephError; the connection is dropped unless the error
        is about the request rather than the cluster. The lock covers only
        getting the connection: rados handles are thread safe, so
        concurrent calls do not queue behind each other's timeouts.
        """
        with self._lock:
            if self._cluster is None:
                self._cluster = self._connect()
            cluster = self._cluster
        try:
            return _offload(function, cluster)
        except exception.SharedCacheError:
            raise
        except Exception as err:
            if not self._is_ceph_error(err):
                raise
            if type(err).__name__ not in _KEEP_CONNECTION:
                self._drop(cluster)
            raise exception.CephError(
                what=what, reason=self._reason(err)) from err

    @staticmethod
    def _is_ceph_error(err):
        classes = tuple(m.Error for m in (rados, rbd) if m is not None)
        return bool(classes) and isinstance(err, classes)

    def _drop(self, failed=None):
        """Forget the connection (only ``failed``, if given) and shut it."""
        with self._lock:
            cluster = self._cluster
            if cluster is None or (failed is not None
                                   and cluster is not failed):
                return
            self._cluster = None
        with contextlib.suppress(Exception):
            _offload(cluster.shutdown)

    def close(self):
        self._drop()

    @property
    def connected(self):
        return self._cluster is not None


class Registry:
    """The process's clients, one per (ceph.conf, user, timeout, mons)."""

    def __init__(self):
        self._clients = {}
        self._lock = threading.Lock()

    def get(self, conffile, user, timeout, mon_host=None):
        key = (conffile, user, timeout, mon_host)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = CephClient(
                    conffile, user, timeout, mon_host=mon_host)
            return client

    def close_all(self):
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


#: Shared by every backend instance of this process.
REGISTRY = Registry()
