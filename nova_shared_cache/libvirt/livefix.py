"""Switch a running RBD disk to direct I/O without restarting the VM.

libvirt refuses to change a running disk's cache ("cannot modify field
'cache' of the disk"), and QEMU's rbd driver reads the cache mode only when
it opens the image (librbd's ``rbd_cache`` follows ``cache.direct``). So the
switch opens a second librbd client on the same image with
``cache.direct=true`` and moves the disk's raw format node onto it.

Before anything changes: no libvirt job (migration, save, dump, snapshot)
and no block job runs on the domain, and the format node is the guest
device's top node.

Stage 1, the VM paused as briefly as possible (QEMU drains and flushes
every disk when it stops, so the old client's cache holds no dirty data):

1. ``blockdev-add`` a new rbd node ``nsc-N-storage`` (before the pause),
   reusing the secret object libvirt created for the disk;
2. pause; ``blockdev-reopen`` the format node ``libvirt-N-format`` onto
   the new node with ``cache.direct=true``; resume;
3. ``blockdev-del`` the old node ``libvirt-N-storage`` with the VM running.
   It is safe there: after the reopen nothing refers to it and its cache was
   flushed by the pause and saw no I/O since. It is not done paused because
   ``rbd_close`` is synchronous in QEMU's main loop (it waits for the OSDs).

   If the disk has not moved when the pause ends (a refusal, a timeout, a
   signal), the switch rolls back: resume, delete the new node. Once it has
   moved, it goes forward. The VM is resumed in every case (a VM that was
   paused before stays paused); resuming is retried for ``RESUME_DEADLINE``.

Stage 2, running, only once the old node is really gone (both nodes are
uncached, and ``blockdev-reopen`` drains the node itself): a node under
libvirt's own name ``libvirt-N-storage`` is added with direct I/O, the
format node moves onto it and ``nsc-N-storage`` goes. libvirt finds the
names it knows again, so a later detach, migration or block job works.

Every QMP command and libvirt call is bounded (``QMP_TIMEOUT``); one that
does not answer raises an error saying its outcome is unknown. SIGINT,
SIGTERM and SIGHUP are caught for the duration of the switch and stop it at
the next safe point. Whatever could not be finished is reported as a
leftover with its remedy; a second ``fix --live`` deletes a node an earlier
switch left unused (QEMU itself refuses to delete a node in use) and
finishes stage 2.

Test hook: ``NOVA_SHARED_CACHE_LIVEFIX_TEST_HOOK="POINT:ACTION[,...]"``,
read only here and only meant for the integration tests, makes the switch
act at a named point (``added``, ``paused``, ``moved``, ``resumed``,
``old-deleted``): ``signal:TERM`` sends this process SIGTERM,
``stop:PID:SECONDS`` stops process PID and continues it SECONDS later.

The key never passes through here: the node refers to libvirt's secret
object by its id.
"""

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time

from oslo_log import log as logging

from nova_shared_cache import exception
from nova_shared_cache.libvirt import qmp

LOG = logging.getLogger(__name__)

TEMP_NODE = 'nsc-%s-storage'
QMP_TIMEOUT = qmp.TIMEOUT   # s, each QMP command and libvirt call
RESUME_DEADLINE = 60.0      # s, keep trying to resume the VM this long
CLOSE_DEADLINE = 30.0       # s, wait this long for the old node to close
VIR_DOMAIN_RUNNING = 1      # libvirt's virDomainState
VIR_DOMAIN_PAUSED = 3
VIR_DOMAIN_JOB_NONE = 0     # libvirt's virDomainJobType
JOB_OPERATIONS = {2: 'save', 3: 'restore', 4: 'incoming migration',
                  5: 'migration', 6: 'snapshot', 7: 'snapshot revert',
                  8: 'dump', 9: 'backup'}
OK_STATES = ('switched', 'completed', 'already-direct')
HOOK_ENV = 'NOVA_SHARED_CACHE_LIVEFIX_TEST_HOOK'
SIGNALS = ('SIGINT', 'SIGTERM', 'SIGHUP')


class NotSwitched(exception.LiveSwitchError):
    """Refused before anything changed; the reason says why."""


class _Stop(Exception):
    """Ends a switch early with a state for the result."""

    def __init__(self, state, reason):
        super().__init__(reason)
        self.state = state
        self.reason = reason


@dataclasses.dataclass
class SwitchResult:
    domain: str
    disk: str
    image: str
    # switched | completed | already-direct | not-switched | rolled-back |
    # partial (something is left: see leftover)
    state: str
    pause_ms: float = 0.0   # the VM was paused this long (stage 1)
    total_ms: float = 0.0
    before: dict = None     # QEMU's cache state before
    after: dict = None      # ... and after (None: not known)
    interrupted: str = None     # the signal that stopped it, e.g. SIGTERM
    error: str = None           # why it did not finish
    leftover: list = dataclasses.field(default_factory=list)
    remedy: str = None
    vm: str = None              # running | paused | unknown, as left
    notes: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        return (self.state in OK_STATES and not self.leftover
                and not self.interrupted)


class Interrupts:
    """Records SIGINT, SIGTERM and SIGHUP instead of dying of them.

    Installed only in the main thread (Python allows no other); the old
    handlers come back on exit. ``received`` is the first signal's name.
    """

    def __init__(self):
        self.received = None
        self._old = {}

    def __enter__(self):
        for name in SIGNALS:
            number = getattr(signal, name, None)
            try:
                self._old[number] = signal.signal(number, self._record)
            except (TypeError, ValueError):
                # Not the main thread (Python refuses), or no such signal.
                break
        return self

    def _record(self, number, frame):
        if self.received is None:
            self.received = signal.Signals(number).name

    def __exit__(self, *exc_info):
        for number, old in self._old.items():
            signal.signal(number, signal.SIG_DFL if old is None else old)
        self._old = {}
        return False


def run_test_hook(point, environ=os.environ):
    """The integration tests' hook (see the module docstring)."""
    for item in filter(None, environ.get(HOOK_ENV, '').split(',')):
        where, _, action = item.partition(':')
        if where != point:
            continue
        verb, *args = action.split(':')
        LOG.warning('live switch test hook at %(point)s: %(action)s',
                    {'point': point, 'action': action})
        if verb == 'signal':
            os.kill(os.getpid(), getattr(signal, 'SIG' + args[0]))
        elif verb == 'stop':
            pid, seconds = int(args[0]), float(args[1])
            os.kill(pid, signal.SIGSTOP)
            timer = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
            timer.daemon = True
            timer.start()


def storage_options(disk, node_name, secret_id):
    """blockdev-add arguments for an uncached rbd node of ``disk``."""
    options = {
        'driver': 'rbd',
        'node-name': node_name,
        'pool': disk.pool,
        'image': disk.image,
        'auto-read-only': True,
        'read-only': disk.readonly,
        'cache': {'direct': True, 'no-flush': False},
    }
    if disk.namespace:
        options['namespace'] = disk.namespace
    if disk.snapshot:
        options['snapshot'] = disk.snapshot
    if disk.hosts:
        options['server'] = [{'host': h, 'port': str(p or 6789)}
                             for h, p in disk.hosts]
    if disk.config_file:
        options['conf'] = disk.config_file
    if disk.user:
        options['user'] = disk.user
        options['auth-client-required'] = ['cephx', 'none']
        options['key-secret'] = secret_id
    if disk.discard == 'unmap':
        options['discard'] = 'unmap'
    return options


def format_options(node, file_node, direct):
    """blockdev-reopen arguments: the format node as it is, on ``file_node``.

    blockdev-reopen resets every option it is not given, so the options
    QEMU reports are given back unchanged.
    """
    options = {
        'driver': node['drv'],
        'node-name': node['node-name'],
        'read-only': bool(node.get('ro')),
        'file': file_node,
        'cache': {'direct': direct,
                  'no-flush': bool((node.get('cache') or {}).get(
                      'no-flush'))},
    }
    if node.get('detect_zeroes', 'off') != 'off':
        options['detect-zeroes'] = node['detect_zeroes']
    return options


def _not_found(err):
    # QEMU: "Failed to find node with node-name='...'"
    return 'find node' in str(getattr(err, 'reason', err))


class Switch:
    """One disk's switch; ``run()`` does it and returns a SwitchResult.

    Refusals before anything changed raise :class:`NotSwitched`; every
    other outcome is a SwitchResult whose state, leftover and remedy say
    what QEMU was left with.
    """

    def __init__(self, domain, disk, monitor=None, clock=time.monotonic,
                 qmp_timeout=None, resume_deadline=None, close_deadline=None,
                 interrupts=None):
        self.domain = domain
        self.disk = disk
        self.qmp_timeout = QMP_TIMEOUT if qmp_timeout is None else qmp_timeout
        self.resume_deadline = (RESUME_DEADLINE if resume_deadline is None
                                else resume_deadline)
        self.close_deadline = (CLOSE_DEADLINE if close_deadline is None
                               else close_deadline)
        self.monitor = monitor or qmp.Monitor(domain, timeout=self.qmp_timeout)
        self.clock = clock
        self.interrupts = interrupts
        self.name = self.monitor.name
        self.format_node, self.storage_node = qmp.node_names(disk)
        self.temp_node = TEMP_NODE % disk.index
        self.before = self.after = None
        self.pause = 0.0
        self.paused_here = False
        self.resume_error = None
        self.timed_out = False
        self.leftover = []
        self.notes = []
        self.remedy = None

    def error(self, reason):
        return exception.LiveSwitchError(domain=self.name,
                                         disk=self.disk.target,
                                         reason=reason)

    def refuse(self, reason):
        return NotSwitched(domain=self.name, disk=self.disk.target,
                           reason=reason)

    @property
    def signalled(self):
        return self.interrupts.received if self.interrupts else None

    # -- bounded calls -------------------------------------------------------

    def _call(self, what, fn, *args):
        """A libvirt domain call, bounded like a QMP command."""
        try:
            return qmp.bounded(fn, *args, timeout=self.qmp_timeout,
                               what=what)
        except qmp.CallTimeout:
            self.timed_out = True
            raise

    def _qmp(self, command, **arguments):
        try:
            return self.monitor(command, **arguments)
        except qmp.QmpTimeout:
            self.timed_out = True
            raise

    def _delete(self, node_name, wait=0.0):
        """blockdev-del; True once the node is gone, False if not known.

        A deletion that times out may still be under way in QEMU (an
        ``rbd_close`` waiting for the OSDs): it is waited for up to ``wait``
        more seconds, unless a signal asks to stop. One that could not be
        sent (the process's QMP commands in libvirt at their limit, for
        example behind the command that just timed out) is tried again
        for as long.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                self._qmp('blockdev-del', **{'node-name': node_name})
                return True
            except qmp.QmpBusy as err:
                if self.signalled or time.monotonic() >= deadline:
                    LOG.warning('%(domain)s: node %(node)s not deleted: '
                                '%(err)s', {'domain': self.name,
                                            'node': node_name, 'err': err})
                    return False
            except qmp.QmpTimeout as err:
                call, failure = err.call, err
                break
            except qmp.QmpError as err:
                if _not_found(err):
                    return True
                LOG.warning('%(domain)s: node %(node)s not deleted: %(err)s',
                            {'domain': self.name, 'node': node_name,
                             'err': err})
                return False
        deadline = time.monotonic() + wait
        while call is not None and not call.done:
            if self.signalled or time.monotonic() >= deadline:
                break
            call.wait(min(0.2, deadline - time.monotonic()))
        if call is None or not call.done:
            LOG.warning('%(domain)s: node %(node)s not deleted: %(err)s',
                        {'domain': self.name, 'node': node_name,
                         'err': failure})
            return False
        try:
            reply = json.loads(call.result())
        except Exception:
            return False
        if 'error' not in reply:
            self.notes.append('blockdev-del of %s answered late (%s)'
                              % (node_name, failure.reason))
            return True
        return 'find node' in str(reply['error'].get('desc'))

    # -- checks ----------------------------------------------------------

    def _preflight(self):
        if self.format_node is None:
            raise self.refuse("libvirt's live XML has no <source index> for "
                              "it (libvirt without -blockdev is not "
                              "supported)")
        try:
            return self._read_qemu()
        except qmp.QmpError as err:
            raise self.refuse('%s; nothing changed' % err)

    def _read_qemu(self):
        nodes = self.monitor.block_nodes()
        fmt = nodes.get(self.format_node)
        if fmt is None or fmt.get('drv') != 'raw':
            raise self.refuse(
                "QEMU has no raw format node %s for it (%s)" % (
                    self.format_node,
                    'found %s' % fmt.get('drv') if fmt else 'not found'))
        top = [dev for dev in self.monitor.devices()
               if (dev.get('inserted') or {}).get('node-name')
               == self.format_node]
        if not top:
            raise self.refuse(
                "%s is not the top node of a guest device (a block job or "
                "filter sits above it); not switched" % self.format_node)
        device = top[0].get('device') or top[0].get('qdev')
        jobs = [job for job in self.monitor.block_jobs()
                if job.get('device') in (device, self.format_node)]
        if jobs:
            raise self.refuse('block job %s is running on it; not switched'
                              % jobs[0].get('type'))
        if self.disk.user:
            secret = '%s-auth-secret0' % self.storage_node
            if secret not in self.monitor.objects():
                raise self.refuse("libvirt's secret object %s is missing"
                                  % secret)
        else:
            secret = None
        return nodes, fmt, secret

    def _libvirt_job(self):
        """The libvirt job running on the domain (text), or None."""
        info = self._call('read the job of the domain', self.domain.jobInfo)
        if not info or info[0] == VIR_DOMAIN_JOB_NONE:
            return None
        try:
            stats = self._call('read the job of the domain',
                               self.domain.jobStats)
            operation = JOB_OPERATIONS.get((stats or {}).get('operation'))
        except Exception:
            operation = None
        return operation or 'job type %s' % info[0]

    def _check_libvirt_job(self):
        try:
            job = self._libvirt_job()
        except Exception as err:
            raise self.refuse('libvirt could not say whether a job '
                              '(migration, save, snapshot) runs on it: %s; '
                              'not switched' % err)
        if job:
            raise self.refuse('libvirt runs a %s job on it; not switched '
                              '(run fix --live again when it has ended)'
                              % job)

    # -- what is left, in words ---------------------------------------------

    def _extra_client(self, node_name, cached, maybe=False):
        self.leftover.append(
            'node %s is %sstill open: an extra librbd client%s of image %s '
            '(a watcher the sharing guard counts as another client)' % (
                node_name, 'perhaps ' if maybe else '',
                ' with its cache on' if cached else '', self.disk.spec))
        self._remedy_again(
            ', or delete it by hand: virsh qemu-monitor-command %s \'%s\''
            % (self.name, json.dumps({'execute': 'blockdev-del',
                                      'arguments': {'node-name': node_name}},
                                     sort_keys=True)))

    def _on_temp_node(self):
        self.leftover.append(
            "the disk runs uncached on node %s; libvirt's node name %s is "
            "not restored (a detach, migration or block job would not find "
            "it)" % (self.temp_node, self.storage_node))
        self._remedy_again('')

    def _remedy_again(self, extra):
        again = ('run nova-shared-cache fix --live --domain %s again (it '
                 'deletes a node left unused and finishes without pausing '
                 'the VM)' % self.name)
        if not self.remedy:
            self.remedy = again + extra
        elif extra and extra not in self.remedy:
            self.remedy += extra

    # -- the switch ----------------------------------------------------------

    def run(self):
        started = self.clock()
        with contextlib.ExitStack() as stack:
            if self.interrupts is None:
                self.interrupts = stack.enter_context(Interrupts())
            try:
                state, reason = self._run(), None
            except _Stop as stop:
                state, reason = stop.state, stop.reason
            vm = self._vm_state()
            after = self.after
            if after is None and not self.timed_out:
                try:
                    after = qmp.live_cache(self.monitor.block_nodes(),
                                           self.disk)
                except qmp.QmpError:
                    pass
            signalled = self.signalled
        if self.resume_error:
            self.leftover.insert(0, 'THE VM IS STILL PAUSED (%s)'
                                 % self.resume_error)
            self.remedy = 'virsh resume %s; then %s' % (
                self.name, self.remedy or 'run fix --live again')
        if self.leftover and state != 'not-switched':
            state = 'partial'
        if signalled:
            reason = 'stopped by %s: %s' % (
                signalled, reason or 'the switch had finished')
        result = SwitchResult(
            domain=self.name, disk=self.disk.target, image=self.disk.spec,
            state=state, pause_ms=self.pause * 1000.0,
            total_ms=(self.clock() - started) * 1000.0, before=self.before,
            after=after, interrupted=signalled, error=reason,
            leftover=self.leftover, remedy=self.remedy, vm=vm,
            notes=self.notes)
        log = LOG.info if result.ok else LOG.warning
        log('%(domain)s %(disk)s: live switch %(state)s%(why)s',
            {'domain': self.name, 'disk': self.disk.target, 'state': state,
             'why': ': %s' % reason if reason else ''})
        return result

    def _vm_state(self):
        try:
            state = self._call('read the run state', self.domain.state)[0]
        except Exception:
            return 'unknown'
        return {VIR_DOMAIN_RUNNING: 'running',
                VIR_DOMAIN_PAUSED: 'paused'}.get(state, 'state %s' % state)

    def _run(self):
        nodes, fmt, secret = self._preflight()
        self._check_libvirt_job()
        if self.temp_node in nodes and self.storage_node in nodes:
            nodes, fmt = self._drop_unused_node()
        self.before = qmp.live_cache(nodes, self.disk)
        if self.signalled:
            raise _Stop('not-switched', 'nothing was switched')
        storage = nodes.get(self.storage_node)
        if self.temp_node in nodes:
            # An earlier switch stopped after stage 1.
            self._stage2(fmt, secret)
            state = 'completed'
        elif storage is None or storage.get('drv') != 'rbd':
            raise self.refuse('QEMU has no rbd node %s' % self.storage_node)
        elif self.before['direct']:
            return 'completed' if self.notes else 'already-direct'
        else:
            self._stage1(fmt, secret)
            if self.signalled:
                self._on_temp_node()
                raise _Stop('partial', 'the disk had moved to the uncached '
                            'node; libvirt\'s node name was not restored')
            self._stage2(fmt, secret)
            state = 'switched'
        self.after = qmp.live_cache(self.monitor.block_nodes(), self.disk)
        if self.after is None or not self.after['direct']:
            raise _Stop('partial', 'QEMU still reports %s with cache %s '
                        'after the switch' % (self.storage_node, self.after))
        return state

    def _drop_unused_node(self):
        """Both nodes exist: delete the one an earlier switch left unused.

        QEMU refuses to delete a node that the format node (or anything)
        uses, so trying each in turn deletes only the unused one.
        """
        refused = []
        for node_name, cached in ((self.temp_node, False),
                                  (self.storage_node, None)):
            try:
                self._qmp('blockdev-del', **{'node-name': node_name})
            except qmp.QmpBusy as err:
                raise self.refuse(
                    'deleting %s, left by an earlier switch: %s; not '
                    'switched (run it again once QEMU answers)'
                    % (node_name, err.reason))
            except qmp.QmpTimeout as err:
                self._extra_client(node_name, cached, maybe=True)
                raise _Stop('partial', 'deleting %s, left by an earlier '
                            'switch: %s' % (node_name, err.reason))
            except qmp.QmpError as err:
                refused.append('%s: %s' % (node_name, err.reason))
                continue
            self.notes.append('deleted node %s, left unused by an earlier '
                              'switch' % node_name)
            break
        else:
            raise self.refuse(
                'QEMU has both %s and %s and neither can be deleted (%s); '
                'not switched (a cold restart of the VM cleans up)' % (
                    self.storage_node, self.temp_node, '; '.join(refused)))
        try:
            nodes = self.monitor.block_nodes()
        except qmp.QmpError as err:
            raise _Stop('not-switched', 'could not read QEMU again: %s'
                        % err)
        return nodes, nodes.get(self.format_node)

    def _stage1(self, fmt, secret):
        """Move the format node onto the new node (stage 1).

        On return it is there, the old node is gone and the VM runs (or
        stays paused); any other outcome raises _Stop.
        """
        try:
            self._qmp('blockdev-add', **storage_options(
                self.disk, self.temp_node, secret))
        except qmp.QmpTimeout as err:
            self._roll_back('the uncached node %s did not open in time: %s'
                            % (self.temp_node, err.reason))
        except qmp.QmpError as err:
            raise _Stop('not-switched', 'the uncached node could not be '
                        'opened, nothing changed: %s' % err.reason)
        run_test_hook('added')
        if self.signalled:
            self._roll_back('before the pause')
        moved, failure = self._paused(fmt)
        if moved is None:
            moved = self._moved(fmt)
        if moved is None:
            self._extra_client(self.storage_node, True, maybe=True)
            self._extra_client(self.temp_node, False, maybe=True)
            raise _Stop('partial', 'QEMU did not say whether the disk moved '
                        'to %s (%s)' % (self.temp_node, failure))
        if not moved:
            self._roll_back(failure or 'before the disk moved')
        if failure:
            self.notes.append('the disk moved although: %s' % failure)
        if not self._delete(self.storage_node, wait=self.close_deadline):
            self._extra_client(self.storage_node, True, maybe=True)
            self._on_temp_node()
            raise _Stop('partial', 'the disk runs uncached, but the old '
                        'caching node %s had not closed when the switch '
                        'stopped waiting' % self.storage_node)
        run_test_hook('old-deleted')

    def _paused(self, fmt):
        """The pause: (moved True/False/None for unknown, failure text)."""
        moved, failure = False, None
        started = self.clock()
        try:
            state = self._call('read the run state', self.domain.state)[0]
            if state == VIR_DOMAIN_RUNNING:
                # Set first: a suspend that times out may still happen.
                self.paused_here = True
                self._call('pause the VM', self.domain.suspend)
            run_test_hook('paused')
            job = None if self.signalled else self._libvirt_job()
            if job:
                failure = 'libvirt started a %s job' % job
            elif not self.signalled:
                moved = None
                self._qmp('blockdev-reopen', options=[
                    format_options(fmt, self.temp_node, direct=True)])
                moved = True
                run_test_hook('moved')
        except (qmp.QmpTimeout, qmp.CallTimeout) as err:
            failure = str(getattr(err, 'reason', err))
        except Exception as err:
            failure = str(getattr(err, 'reason', err))
            if moved is None:
                moved = False       # QEMU or libvirt refused it
        self.resume_error = self._resume()
        self.pause = self.clock() - started
        run_test_hook('resumed')
        return moved, failure

    def _moved(self, fmt):
        """Whether the format node is on the new node (None: unknown)."""
        if (fmt.get('cache') or {}).get('direct'):
            return None             # it cannot tell
        try:
            node = self.monitor.block_nodes().get(self.format_node)
        except qmp.QmpError:
            return None
        if node is None:
            return None
        return bool((node.get('cache') or {}).get('direct'))

    def _roll_back(self, why):
        """The disk did not move: delete the new node (VM running)."""
        if self._delete(self.temp_node, wait=self.qmp_timeout):
            raise _Stop('rolled-back', 'rolled back, the disk is unchanged '
                        '(%s)' % why)
        self._extra_client(self.temp_node, False, maybe=True)
        raise _Stop('partial', 'the disk is unchanged (%s), but the new '
                    'node %s could not be deleted' % (why, self.temp_node))

    def _resume(self):
        """Resume a VM this switch paused; None, or why it could not.

        Bounded but persistent: QEMU answers nothing while its main loop
        waits (an rbd_close, a stopped OSD), and libvirt runs the resume
        only after the commands queued before it.
        """
        if not self.paused_here:
            return None
        deadline = time.monotonic() + self.resume_deadline
        attempt, error = 0, None
        while True:
            attempt += 1
            call = qmp.Call(self.domain.resume, name='nsc-resume')
            if not call.wait(deadline - time.monotonic()):
                return ('libvirt did not answer a resume within %g s; the VM '
                        'may still resume' % self.resume_deadline)
            try:
                call.result()
                return None
            except Exception as err:
                error = err
            if self._vm_state() == 'running':
                return None
            delay = min(0.2 * attempt, 2.0)
            if time.monotonic() + delay >= deadline:
                return 'gave up after %d attempts in %g s: %s' % (
                    attempt, self.resume_deadline, error)
            LOG.warning('%(domain)s: resume failed (%(err)s), again in '
                        '%(delay).1f s', {'domain': self.name, 'err': error,
                                          'delay': delay})
            time.sleep(delay)

    def _stage2(self, fmt, secret):
        """Put an uncached node back under libvirt's name (VM running)."""
        try:
            self._qmp('blockdev-add', **storage_options(
                self.disk, self.storage_node, secret))
        except qmp.QmpError as err:
            if isinstance(err, qmp.QmpTimeout) and not self._delete(
                    self.storage_node, wait=self.qmp_timeout):
                self._extra_client(self.storage_node, False, maybe=True)
            self._on_temp_node()
            raise _Stop('partial', 'the uncached node %s could not be '
                        'added: %s' % (self.storage_node, err.reason))
        try:
            self._qmp('blockdev-reopen', options=[
                format_options(fmt, self.storage_node, direct=True)])
        except qmp.QmpTimeout as err:
            # Both nodes are uncached; the one left unused is deleted by
            # the next fix --live.
            self.leftover.append(
                'the disk runs uncached on %s or %s (QEMU did not say); the '
                'other is an extra librbd client of image %s' % (
                    self.temp_node, self.storage_node, self.disk.spec))
            self._remedy_again('')
            raise _Stop('partial', 'moving the disk back to libvirt\'s '
                        'node name: %s' % err.reason)
        except qmp.QmpError as err:
            if not self._delete(self.storage_node, wait=self.qmp_timeout):
                self._extra_client(self.storage_node, False, maybe=True)
            self._on_temp_node()
            raise _Stop('partial', 'moving the disk back to libvirt\'s '
                        'node name: %s' % err.reason)
        if not self._delete(self.temp_node, wait=self.close_deadline):
            self._extra_client(self.temp_node, False, maybe=True)
            raise _Stop('partial', 'the disk is switched, but node %s '
                        'could not be deleted' % self.temp_node)


def switch(domain, disk, **kwargs):
    return Switch(domain, disk, **kwargs).run()


def temp_nodes(domain, timeout=None):
    """Nodes an earlier switch may have left (``nsc-*``), by disk index.

    Raises what asking QEMU raised (a :class:`qmp.QmpError`, libvirt's
    error) when it cannot be asked: the caller says so rather than take
    "no answer" for "nothing left".
    """
    monitor = (qmp.Monitor(domain) if timeout is None
               else qmp.Monitor(domain, timeout=timeout))
    nodes = monitor.block_nodes()
    prefix, suffix = TEMP_NODE.split('%s')
    return {name[len(prefix):-len(suffix)]: name for name in nodes
            if name.startswith(prefix) and name.endswith(suffix)}


class _NoInterrupts:
    """Inside nova-compute: its own signal handlers stay in place."""

    received = None


def _libvirt(module):
    if module is not None:
        return module
    import libvirt
    return libvirt


def record(domain, disk, cache_mode, persistent, libvirt_mod=None):
    """Record ``disk`` as switched in the domain's metadata.

    Live, and persistent when the domain has a definition: libvirt's live
    XML keeps the old cache mode after a switch, and this record travels
    with the domain (migration, save images) for the hook and the audit.
    {'live': 'recorded' | 'failed: ...', 'config': ...}; never raises for
    a libvirt error. ``libvirt_mod``: the libvirt module to use (inside
    nova-compute, the one Nova loaded).
    """
    from nova_shared_cache.libvirt import domxml
    libvirt = _libvirt(libvirt_mod)
    done = {}
    for name, flag in (('live', libvirt.VIR_DOMAIN_AFFECT_LIVE),
                       ('config', libvirt.VIR_DOMAIN_AFFECT_CONFIG)):
        if name == 'config' and not persistent:
            continue
        try:
            try:
                current = domain.metadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS,
                    flag)
            except libvirt.libvirtError as err:
                if err.get_error_code() != getattr(
                        libvirt, 'VIR_ERR_NO_DOMAIN_METADATA', 80):
                    raise
                current = None
            domain.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                domxml.record_disk(current, disk, cache_mode),
                domxml.METADATA_PREFIX, domxml.METADATA_NS, flag)
            done[name] = 'recorded'
        except libvirt.libvirtError as err:
            done[name] = 'failed: %s' % err.get_error_message()
        except Exception as err:    # the switch stands whatever happens
            done[name] = 'failed: %s: %s' % (type(err).__name__, err)
    return done


def after_block_copy(domain, target, cache_mode, libvirt_mod=None):
    """Make a disk that a block copy swapped in a safe shared disk.

    libvirt's block copy (Nova's swap_volume) takes the new disk's source
    and format but keeps the old disk's cache mode and ``<shareable/>``,
    in QEMU and in the XML Nova then saves as the definition. For a
    shared disk whose old disk cached, this switches QEMU to direct I/O
    (as ``fix --live``), fixes the definition (cache and ``<shareable/>``)
    and records the switch. Returns a report dict; raises nothing that a
    caller must handle beyond logging.
    """
    # Nova's own connection to libvirtd: a command QEMU leaves unanswered
    # holds one of its request slots, so never more than one at a time.
    with qmp.offloaded(), qmp.in_flight_limit(1):
        return _after_block_copy(domain, target, cache_mode,
                                 _libvirt(libvirt_mod))


def _after_block_copy(domain, target, cache_mode, libvirt):
    from nova_shared_cache.libvirt import domxml
    report = {'disk': target, 'state': 'unchanged'}
    live = [d for d in domxml.rbd_disks(domxml.parse(domain.XMLDesc(0)))
            if d.target == target]
    if not live:
        report['state'] = 'not-an-rbd-disk'
        return report
    disk = live[0]
    if disk.cache == cache_mode and disk.shareable:
        return report
    if domxml.caches(disk.cache) is not False:
        try:
            result = Switch(domain, disk,
                            interrupts=_NoInterrupts()).run()
        except NotSwitched as err:
            report.update(state='not-switched', error=str(err))
            return report
        report['live'] = dataclasses.asdict(result)
        if not result.ok:
            report['state'] = result.state
            return report
    persistent = bool(domain.isPersistent())
    if persistent:
        config = [d for d in domxml.rbd_disks(domxml.parse(domain.XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE))) if d.target == target]
        if config:
            changes = domxml.fix_disk(config[0].element, cache_mode)
            if changes:
                domain.updateDeviceFlags(domxml.to_text(config[0].element),
                                         libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            report['config'] = changes
    report['recorded'] = record(domain, disk, cache_mode, persistent,
                                libvirt_mod=libvirt)
    report['state'] = 'fixed'
    return report
