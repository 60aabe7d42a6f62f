"""QEMU's monitor (QMP), reached through libvirt's qemu-monitor-command.

libvirt has no API for a disk's block-node state or for reopening a node,
so these go to QEMU directly. libvirt marks a domain driven this way as
tainted ("custom-monitor") in its log; nothing else changes for libvirt.

Every command is bounded: libvirt waits for QEMU's answer without a limit
(and QEMU answers nothing while its main loop sits in a synchronous
``rbd_close`` or waits for a stopped OSD), so the call runs in a worker
thread and the caller waits ``timeout`` seconds. A command that did not
answer in time raises :class:`QmpTimeout`; it is still queued in libvirt
and may take effect later, and libvirt runs the domain's later jobs only
after it, so commands keep their order.

A command QEMU does not answer stays pending until QEMU answers: it keeps
one of libvirtd's worker threads (``max_workers``, 20 by default) and one
request slot of its connection (``max_client_requests``, 5 by default),
and other calls on that connection can wait behind it (with libvirt 9.0,
seen with three such commands: a read of a domain's XML waited as long as
QEMU did; the audit therefore sends QMP over a connection of its own). A
process has at most :data:`MAX_IN_FLIGHT` commands in libvirt at once,
answered in time or not; a command that finds no free slot within its
bound is not sent (:class:`QmpBusy`), and what it was for did not happen.

The worker is a plain thread in the command line tools. Inside a
nova-compute that runs under eventlet (Nova 30-33, or 34 with
``concurrency_backend = eventlet``; the swap repair runs there) a blocked
libvirt call in a greenthread would hold every greenthread, bound or not:
there (inside ``offloaded()``, which the driver's code uses) the call goes
to eventlet's pool of native threads (``tpool``) from a greenthread, and the
caller waits on it with the same bound. eventlet is never imported by this
module unless the process has monkey patched threads already.
"""

import contextlib
import contextvars
import json
import sys
import threading

from nova_shared_cache import exception

TIMEOUT = 5.0       # seconds for one QMP command
#: QMP commands this process may have in libvirt at once, answered in
#: time or not: fewer than a connection's request slots, a small part of
#: libvirtd's workers.
MAX_IN_FLIGHT = 3


class QmpError(exception.LibvirtError):
    """QEMU refused a command, or libvirt could not pass it on."""

    def __init__(self, domain, command, reason):
        super().__init__(what='run QMP %s on domain %s' % (command, domain),
                         reason=reason)
        self.command = command
        self.reason = reason


class QmpBusy(QmpError):
    """Not sent: the process's QMP commands in libvirt are at the limit.

    They wait for QEMUs that do not answer in time (a stopped QEMU, or one
    whose main loop waits for a stopped Ceph OSD). The command had no
    effect.
    """

    def __init__(self, domain, command, limit, timeout):
        super().__init__(domain, command, (
            'not sent: %d earlier QMP command(s) of this process were still '
            'unanswered after %g s (their QEMUs do not answer, for example '
            'while waiting for a stopped Ceph OSD; libvirtd holds a worker '
            'and a request slot of the connection for each until QEMU '
            'answers)' % (limit, timeout)))
        self.limit = limit


class QmpTimeout(QmpError):
    """No answer in time: whether the command took effect is unknown.

    ``call`` is the call still under way (a :class:`Call`), for a caller
    that can afford to wait longer.
    """

    def __init__(self, domain, command, timeout, call=None):
        super().__init__(domain, command,
                         'no answer within %g s; whether it took effect is '
                         'unknown (libvirt still waits for QEMU)' % timeout)
        self.timeout = timeout
        self.call = call


_OFFLOAD = contextvars.ContextVar('nova_shared_cache_qmp_offload',
                                  default=False)


@contextlib.contextmanager
def offloaded():
    """Calls made in this block block natively (real libvirt calls).

    Under eventlet they then run in eventlet's native thread pool; without
    eventlet nothing changes.
    """
    token = _OFFLOAD.set(True)
    try:
        yield
    finally:
        _OFFLOAD.reset(token)


_LIMIT = contextvars.ContextVar('nova_shared_cache_qmp_limit', default=None)


@contextlib.contextmanager
def in_flight_limit(limit):
    """At most ``limit`` QMP commands in libvirt while in this block.

    Counted with every other command of the process (the limit applies to
    the whole count).
    """
    token = _LIMIT.set(max(1, int(limit)))
    try:
        yield
    finally:
        _LIMIT.reset(token)


class _Slots:
    """The count of this process's QMP commands still inside libvirt."""

    def __init__(self):
        self._cond = threading.Condition()
        self.used = 0

    def take(self, limit, timeout):
        """True once a slot is ours, False if none within ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.used < limit,
                                       max(timeout, 0)):
                return False
            self.used += 1
            return True

    def give(self):
        with self._cond:
            self.used -= 1
            # All: waiters may have different limits (in_flight_limit).
            self._cond.notify_all()


_slots = None
_slots_made = threading.Lock()


def _get_slots():
    # Made at first use, not at import: inside a nova-compute under
    # eventlet that is after monkey patching, so waits are green.
    global _slots
    with _slots_made:
        if _slots is None:
            _slots = _Slots()
        return _slots


def _green():
    """Should this call go to eventlet's native thread pool?"""
    if not _OFFLOAD.get():
        return False
    patcher = sys.modules.get('eventlet.patcher')
    return patcher is not None and patcher.is_monkey_patched('thread')


class Call:
    """``fn(*args)`` in a daemon thread, waited for with a bound.

    A libvirt call cannot be cancelled; a call that outlives its wait goes
    on in its thread and its outcome can still be collected.
    """

    def __init__(self, fn, *args, name='nsc-libvirt-call', on_end=None):
        self._done = threading.Event()
        self._value = self._error = None
        self._on_end = on_end
        if _green():
            import eventlet
            from eventlet import tpool
            eventlet.spawn_n(self._run, tpool.execute, (fn,) + args)
            return
        thread = threading.Thread(target=self._run, args=(fn, args),
                                  name=name, daemon=True)
        thread.start()

    def _run(self, fn, args):
        try:
            self._value = fn(*args)
        except BaseException as err:   # handed to the waiting thread
            self._error = err
        finally:
            if self._on_end is not None:
                self._on_end()
            self._done.set()

    @property
    def done(self):
        return self._done.is_set()

    def wait(self, timeout):
        """True once the call has ended (with a value or an error)."""
        return self._done.wait(max(timeout, 0))

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


def bounded(fn, *args, timeout, what='call'):
    """``fn(*args)``; :class:`CallTimeout` if it has not returned in time."""
    call = Call(fn, *args, name='nsc-%s' % what)
    if not call.wait(timeout):
        raise CallTimeout(what, timeout, call)
    return call.result()


class CallTimeout(Exception):
    """A libvirt call did not return in time (it may still take effect)."""

    def __init__(self, what, timeout, call):
        super().__init__('%s: no answer within %g s; whether it took effect '
                         'is unknown' % (what, timeout))
        self.what = what
        self.timeout = timeout
        self.call = call


class Monitor:

    def __init__(self, domain, timeout=None, send=None):
        self.domain = domain
        self.name = domain.name()
        self.timeout = TIMEOUT if timeout is None else timeout
        self._send = send

    def _send_default(self, text):
        import libvirt_qemu
        return libvirt_qemu.qemuMonitorCommand(self.domain, text, 0)

    def __call__(self, command, **arguments):
        return self.execute(command, arguments)

    def execute(self, command, arguments=None, timeout=None):
        """One QMP command; QEMU's ``return`` value."""
        try:
            import libvirt
            libvirt_error = libvirt.libvirtError
        except ImportError:
            libvirt_error = ()
        payload = {'execute': command}
        if arguments:
            payload['arguments'] = arguments
        timeout = self.timeout if timeout is None else timeout
        # Up to the bound for a slot, then up to the bound for the answer:
        # a slot found late must not leave the command too little time
        # (a "not sent" would become "sent, outcome unknown").
        slots = _get_slots()
        limit = _LIMIT.get() or MAX_IN_FLIGHT
        if not slots.take(limit, timeout):
            raise QmpBusy(self.name, command, limit, timeout)
        try:
            call = Call(self._send or self._send_default, json.dumps(payload),
                        name='nsc-qmp-%s' % command, on_end=slots.give)
        except BaseException:
            slots.give()
            raise
        if not call.wait(timeout):
            raise QmpTimeout(self.name, command, timeout, call)
        try:
            reply = json.loads(call.result())
        except libvirt_error as err:
            raise QmpError(self.name, command, err.get_error_message())
        if 'error' in reply:
            raise QmpError(self.name, command,
                           reply['error'].get('desc') or reply['error'])
        return reply.get('return')

    def block_nodes(self):
        """{node-name: query-named-block-nodes entry}."""
        return {node['node-name']: node
                for node in self('query-named-block-nodes', flat=True)
                if node.get('node-name')}

    def objects(self):
        return {o['name'] for o in self('qom-list', path='/objects')}

    def devices(self):
        """query-block entries: the guest devices and their top nodes."""
        return self('query-block')

    def block_jobs(self):
        return self('query-block-jobs')


def node_names(disk):
    """libvirt's (format, storage) node names of a disk in the live XML.

    libvirt (blockdev mode, libvirt >= 5.10 with QEMU >= 4.2) names a disk's
    nodes after the ``index`` of its ``<source>``.
    """
    if not disk.index:
        return None, None
    return ('libvirt-%s-format' % disk.index,
            'libvirt-%s-storage' % disk.index)


def live_cache(nodes, disk):
    """QEMU's cache state of a disk's librbd node, or None if not found."""
    _, storage = node_names(disk)
    node = nodes.get(storage)
    if node is None or node.get('drv') != 'rbd':
        return None
    cache = node.get('cache') or {}
    return {'direct': bool(cache.get('direct')),
            'writeback': bool(cache.get('writeback')),
            'no_flush': bool(cache.get('no-flush'))}
