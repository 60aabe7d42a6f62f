"""Switch a running RBD disk to direct I/O without restarting the VM.

libvirt refuses to change a running disk's cache ("cannot modify field
'cache' of the disk"), and QEMU's rbd driver reads the cache mode only when
it opens the image (librbd's ``rbd_cache`` follows ``cache.direct``). So the
switch opens a second librbd client on the same image with
``cache.direct=true`` and moves the disk's raw format node onto it:

Stage 1, with the VM paused (QEMU drains and flushes every disk when it
stops, so the old client's cache holds no dirty data):

1. ``blockdev-add`` a new rbd node ``nsc-N-storage`` (before the pause),
   reusing the secret object libvirt created for the disk;
2. pause; ``blockdev-reopen`` the format node ``libvirt-N-format`` onto
   the new node with ``cache.direct=true``; ``blockdev-del`` the old node
   ``libvirt-N-storage`` (closing the caching client); resume.

   Any failure before the resume is rolled back (format node back on the
   old node, new node deleted), and the VM is resumed in every case.

Stage 2, running (both nodes are uncached, and ``blockdev-reopen`` drains
the node itself): a node under libvirt's own name ``libvirt-N-storage`` is
added with direct I/O, the format node moves onto it and ``nsc-N-storage``
goes. libvirt finds the names it knows again, so a later detach, migration
or block job works. Should stage 2 fail, the disk already runs uncached; a
second ``fix --live`` finishes it.

The key never passes through here: the node refers to libvirt's secret
object by its id.
"""

import dataclasses
import time

from nova_shared_cache import exception
from nova_shared_cache.libvirt import qmp

TEMP_NODE = 'nsc-%s-storage'
RESUME_ATTEMPTS = 3
VIR_DOMAIN_RUNNING = 1      # libvirt's virDomainState


@dataclasses.dataclass
class SwitchResult:
    domain: str
    disk: str
    image: str
    state: str              # switched | completed | already-direct
    pause_ms: float = 0.0   # the VM was paused this long (stage 1)
    total_ms: float = 0.0
    before: dict = None     # QEMU's cache state before
    after: dict = None


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


class Switch:
    """One disk's switch; ``run()`` does it and returns a SwitchResult."""

    def __init__(self, domain, disk, monitor=None, clock=time.monotonic):
        self.domain = domain
        self.disk = disk
        self.monitor = monitor or qmp.Monitor(domain)
        self.clock = clock
        self.name = self.monitor.name
        self.format_node, self.storage_node = qmp.node_names(disk)
        self.temp_node = TEMP_NODE % disk.index

    def error(self, reason):
        return exception.LiveSwitchError(domain=self.name,
                                         disk=self.disk.target,
                                         reason=reason)

    # -- checks ----------------------------------------------------------

    def _preflight(self):
        if self.format_node is None:
            raise self.error("libvirt's live XML has no <source index> for "
                             "it (libvirt without -blockdev is not "
                             "supported)")
        nodes = self.monitor.block_nodes()
        fmt = nodes.get(self.format_node)
        if fmt is None or fmt.get('drv') != 'raw':
            raise self.error(
                "QEMU has no raw format node %s for it (%s)" % (
                    self.format_node,
                    'found %s' % fmt.get('drv') if fmt else 'not found'))
        top = [dev for dev in self.monitor.devices()
               if (dev.get('inserted') or {}).get('node-name')
               == self.format_node]
        if not top:
            raise self.error(
                "%s is not the top node of a guest device (a block job or "
                "filter sits above it); not switched" % self.format_node)
        device = top[0].get('device') or top[0].get('qdev')
        jobs = [job for job in self.monitor.block_jobs()
                if job.get('device') in (device, self.format_node)]
        if jobs:
            raise self.error('block job %s is running on it; not switched'
                             % jobs[0].get('type'))
        if self.disk.user:
            secret = '%s-auth-secret0' % self.storage_node
            if secret not in self.monitor.objects():
                raise self.error("libvirt's secret object %s is missing"
                                 % secret)
        else:
            secret = None
        return nodes, fmt, secret

    # -- the switch ----------------------------------------------------------

    def run(self):
        started = self.clock()
        nodes, fmt, secret = self._preflight()
        before = qmp.live_cache(nodes, self.disk)
        storage = nodes.get(self.storage_node)
        if self.temp_node in nodes and storage is None:
            # A previous switch stopped after stage 1.
            self._stage2(fmt, secret)
            state, pause = 'completed', 0.0
        elif self.temp_node in nodes:
            raise self.error(
                'QEMU has both %s and %s: an earlier switch was interrupted '
                'and could not go back; not switched again (a cold restart '
                'of the VM cleans up)' % (self.storage_node, self.temp_node))
        elif storage is None or storage.get('drv') != 'rbd':
            raise self.error('QEMU has no rbd node %s' % self.storage_node)
        elif before['direct']:
            state, pause = 'already-direct', 0.0
        else:
            pause = self._stage1(fmt, secret)
            self._stage2(fmt, secret)
            state = 'switched'
        after = qmp.live_cache(self.monitor.block_nodes(), self.disk)
        if after is None or not after['direct']:
            raise self.error('QEMU still reports %s with cache %s after the '
                             'switch' % (self.storage_node, after))
        return SwitchResult(domain=self.name, disk=self.disk.target,
                            image=self.disk.spec, state=state,
                            pause_ms=pause * 1000.0,
                            total_ms=(self.clock() - started) * 1000.0,
                            before=before, after=after)

    def _stage1(self, fmt, secret):
        try:
            self.monitor('blockdev-add', **storage_options(
                self.disk, self.temp_node, secret))
        except qmp.QmpError as err:
            raise self.error('the uncached node could not be opened, '
                             'nothing changed: %s' % err.reason)
        paused_here = moved = False
        pause_started = self.clock()
        try:
            if self.domain.state()[0] == VIR_DOMAIN_RUNNING:
                self.domain.suspend()       # drains and flushes every disk
                paused_here = True
            self.monitor('blockdev-reopen', options=[
                format_options(fmt, self.temp_node, direct=True)])
            moved = True
            self.monitor('blockdev-del', **{'node-name': self.storage_node})
        except Exception as err:
            reason = self._roll_back(fmt, moved, err)
            resume_error = self._resume(paused_here)
            if resume_error:
                reason += '; AND THE VM COULD NOT BE RESUMED: %s' % (
                    resume_error)
            raise self.error(reason)
        resume_error = self._resume(paused_here)
        if resume_error:
            raise self.error('the disk was switched but THE VM COULD NOT BE '
                             'RESUMED: %s' % resume_error)
        return self.clock() - pause_started

    def _roll_back(self, fmt, moved, err):
        """Undo stage 1 before the VM resumes; the outcome as text."""
        if moved:
            # Still paused: the old client saw no I/O since the flush, so
            # its cache is current and going back to it is safe.
            try:
                self.monitor('blockdev-reopen', options=[format_options(
                    fmt, self.storage_node,
                    direct=bool((fmt.get('cache') or {}).get('direct')))])
            except Exception as back:
                return ('%s; going back failed too (%s): the disk runs '
                        'uncached on node %s and the old node %s is still '
                        'open; run fix --live again' % (
                            err, back, self.temp_node, self.storage_node))
        self._forget(self.temp_node)
        return 'rolled back, the disk is unchanged: %s' % err

    def _stage2(self, fmt, secret):
        try:
            self.monitor('blockdev-add', **storage_options(
                self.disk, self.storage_node, secret))
            try:
                self.monitor('blockdev-reopen', options=[
                    format_options(fmt, self.storage_node, direct=True)])
            except Exception:
                self._forget(self.storage_node)
                raise
            self.monitor('blockdev-del', **{'node-name': self.temp_node})
        except Exception as err:
            raise self.error(
                "the disk runs uncached (node %s) but libvirt's node name "
                "%s could not be restored: %s; run fix --live again before "
                "detaching or migrating it" % (self.temp_node,
                                               self.storage_node, err))

    def _resume(self, paused_here):
        """Resume a VM this switch paused; the error text if it cannot."""
        if not paused_here:
            return None
        error = None
        for attempt in range(RESUME_ATTEMPTS):
            try:
                self.domain.resume()
                return None
            except Exception as err:
                error = err
                time.sleep(0.2 * (attempt + 1))
        return str(error)

    def _forget(self, node_name):
        try:
            self.monitor('blockdev-del', **{'node-name': node_name})
        except Exception:
            pass


def switch(domain, disk, **kwargs):
    return Switch(domain, disk, **kwargs).run()
