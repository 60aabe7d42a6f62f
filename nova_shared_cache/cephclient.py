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

Under eventlet (Nova 30-33's compute, Nova 34's with
``concurrency_backend = eventlet``) a blocking librados call would stop
every greenthread; calls then run in eventlet's native thread pool. In
native threading mode (Nova 34's default) they run in the calling thread:
the bindings release the GIL inside librados, so only that thread waits.
eventlet is never imported here: Nova 34's compute then forbids it.
"""

import contextlib
import hashlib
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
                   "this Python environment (they come with Ceph, not from "
                   "PyPI: install Debian's python3-rados and python3-rbd, "
                   "or your distribution's equivalent, and make them "
                   "visible to this environment, for example a venv made "
                   "with --system-site-packages)")
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


class _Connection:
    """A connected Rados handle and the calls running on it."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.calls = 0
        self.retired = False
        self.shut = False


class _Connecting:
    """One connection attempt that concurrent callers wait for together."""

    def __init__(self):
        self.done = threading.Event()
        self.connection = None
        self.error = None
        #: Callers of this attempt, the leader included: each holds one
        #: call on the connection from the moment it is published.
        self.callers = 0
        self.published = False


class CephClient:
    """A lazily opened, shared connection as one Ceph user.

    NOTE: a broken connection is retired at once (the next call connects
    anew) but shut down only when the last call running on it has returned:
    ``rados_shutdown`` under a call still inside librados is a
    use-after-free in the C library, and a crash of nova-compute exactly
    when Ceph is degraded.
    """

    def __init__(self, conffile, user, timeout, mon_host=None, key=None,
                 cluster='ceph'):
        self.conffile = conffile
        self.user = user
        #: librados' cluster name: ``$cluster`` in keyring paths.
        self.cluster = cluster or 'ceph'
        self.timeout = timeout
        #: Monitors to use instead of ceph.conf's (the volume's cluster).
        self.mon_host = mon_host
        # The key of a libvirt secret (cephauth); never logged or shown.
        self._key = key
        self._connection = None
        self._connecting = None
        self._lock = threading.Lock()

    def __repr__(self):
        return '<CephClient %s client.%s %s mons=%s%s>' % (
            self.cluster, self.user, self.conffile or '-',
            self.mon_host or 'ceph.conf',
            ' key=libvirt-secret' if self._key else '')

    def _connect(self):
        rados_mod, _ = bindings()
        what = 'connect to Ceph as client.%s (%s)' % (
            self.user, self.conffile or 'monitors %s' % self.mon_host)
        if self.conffile and not os.path.isfile(self.conffile):
            raise exception.CephError(
                what=what,
                reason='the Ceph configuration file %s does not exist '
                       '([shared_cache] ceph_conf)' % self.conffile)
        options = client_options(self.timeout)
        if self.mon_host:
            options['mon_host'] = self.mon_host
        if self._key:
            options['key'] = self._key
        try:
            # The constructor already reads the configuration file;
            # os.devnull: no file at all, everything is in the options.
            cluster = rados_mod.Rados(conffile=self.conffile or os.devnull,
                                      rados_id=self.user, conf=options,
                                      clustername=self.cluster)
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
                reason = ('no usable key for client.%s (%s): %s'
                          % (self.user, 'the key of the libvirt secret'
                             if self._key else 'a keyring found through %s, '
                             'readable by this process' % self.conffile,
                             reason))
            raise exception.CephError(what=what, reason=reason) from err
        return cluster

    def _reason(self, err):
        name = type(err).__name__
        if name in ('TimedOut', 'InterruptedOrTimeoutError', 'Timeout'):
            return ('no answer within %ds ([shared_cache] ceph_timeout): '
                    'are the monitors and OSDs up and reachable?'
                    % self.timeout)
        return '%s: %s' % (name, err)

    def _acquire(self):
        """The current connection with one more call counted on it.

        Only one caller connects; concurrent callers wait for that attempt
        (bounded by the same timeouts) instead of queueing one connect
        after another.
        """
        with self._lock:
            if self._connection is not None:
                self._connection.calls += 1
                return self._connection
            attempt = self._connecting
            leader = attempt is None
            if leader:
                attempt = self._connecting = _Connecting()
            attempt.callers += 1
        if leader:
            connection = None
            try:
                connection = _Connection(self._connect())
            except BaseException as err:
                attempt.error = err
            # NOTE: the connection is published with a call counted for
            # every caller of the attempt, under the lock that retiring
            # takes: a call that fails on it (or close()) in the meantime
            # retires it but cannot shut it down under a waiting caller
            # that has not run yet (with native threads, or greenthreads
            # woken after others ran, that window is real).
            with self._lock:
                self._connecting = None
                if connection is not None:
                    connection.calls += attempt.callers
                    attempt.connection = connection
                    self._connection = connection
                attempt.published = True
            attempt.done.set()
        else:
            # The leader's connect is bounded by client_mount_timeout; the
            # margin covers a leader that never gets to set the event.
            attempt.done.wait(self.timeout * 3 + 5)
            with self._lock:
                published = attempt.published
                if not published:
                    attempt.callers -= 1    # not counted on it any more
            if not published:
                raise exception.CephError(
                    what='connect to Ceph as client.%s' % self.user,
                    reason='no answer within %ds ([shared_cache] '
                           'ceph_timeout)' % self.timeout)
        if attempt.error is not None:
            if not isinstance(attempt.error, Exception):
                raise attempt.error         # KeyboardInterrupt and the like
            if isinstance(attempt.error, exception.SharedCacheError):
                raise exception.CephError(**attempt.error.kwargs)
            raise exception.CephError(
                what='connect to Ceph as client.%s' % self.user,
                reason=self._reason(attempt.error))
        return attempt.connection

    def _release(self, connection):
        with self._lock:
            connection.calls -= 1
            shut = (connection.retired and connection.calls == 0
                    and not connection.shut)
            if shut:
                connection.shut = True
        if shut:
            with contextlib.suppress(Exception):
                _offload(connection.cluster.shutdown)

    def _retire(self, connection=None):
        """Stop handing out ``connection`` (default: the current one).

        It is shut down once no call runs on it any more.
        """
        with self._lock:
            connection = connection or self._connection
            if connection is None:
                return
            if self._connection is connection:
                self._connection = None
            connection.retired = True
            connection.calls += 1       # released just below
        self._release(connection)

    def call(self, what, function):
        """Run ``function(cluster)`` on the shared connection.

        ``what`` names the operation for the error message. rados/rbd
        errors become CephError; the connection is retired unless the
        error is about the request rather than the cluster. rados handles
        are thread safe, so concurrent calls do not queue behind each
        other's timeouts.
        """
        connection = self._acquire()
        try:
            return _offload(function, connection.cluster)
        except exception.SharedCacheError:
            raise
        except Exception as err:
            if not self._is_ceph_error(err):
                raise
            if type(err).__name__ not in _KEEP_CONNECTION:
                self._retire(connection)
            raise exception.CephError(
                what=what, reason=self._reason(err)) from err
        finally:
            self._release(connection)

    @staticmethod
    def _is_ceph_error(err):
        classes = tuple(m.Error for m in (rados, rbd) if m is not None)
        return bool(classes) and isinstance(err, classes)

    def close(self):
        self._retire()

    @property
    def connected(self):
        return self._connection is not None

    @property
    def calls_in_flight(self):
        with self._lock:
            return self._connection.calls if self._connection else 0


class Registry:
    """The process's clients, one per connection identity.

    The identity is (cluster, ceph.conf, user, timeout, mons, key). A key
    read from a libvirt secret is part of it (a rotated secret gets a new
    client), but only as a digest.
    """

    def __init__(self):
        self._clients = {}
        self._lock = threading.Lock()

    def get(self, conffile, user, timeout, mon_host=None, key=None,
            cluster='ceph'):
        digest = hashlib.sha256(key.encode()).hexdigest() if key else None
        cluster = cluster or 'ceph'
        identity = (cluster, conffile, user, timeout, mon_host, digest)
        with self._lock:
            client = self._clients.get(identity)
            if client is None:
                client = self._clients[identity] = CephClient(
                    conffile, user, timeout, mon_host=mon_host, key=key,
                    cluster=cluster)
            return client

    def for_credentials(self, credentials, timeout, mon_host=None):
        """The client for cephauth.Credentials that are usable."""
        return self.get(credentials.conffile, credentials.user, timeout,
                        mon_host=mon_host, key=credentials.key,
                        cluster=credentials.cluster)

    def close_all(self):
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


#: Shared by every backend instance of this process.
REGISTRY = Registry()
