"""QEMU's monitor (QMP), reached through libvirt's qemu-monitor-command.

libvirt has no API for a disk's block-node state or for reopening a node,
so these go to QEMU directly. libvirt marks a domain driven this way as
tainted ("custom-monitor") in its log; nothing else changes for libvirt.
"""

import json

from nova_shared_cache import exception


class QmpError(exception.LibvirtError):
    """QEMU refused a command, or libvirt could not pass it on."""

    def __init__(self, domain, command, reason):
        super().__init__(what='run QMP %s on domain %s' % (command, domain),
                         reason=reason)
        self.command = command
        self.reason = reason


class Monitor:

    def __init__(self, domain):
        self.domain = domain
        self.name = domain.name()

    def __call__(self, command, **arguments):
        import libvirt
        import libvirt_qemu
        payload = {'execute': command}
        if arguments:
            payload['arguments'] = arguments
        try:
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(
                self.domain, json.dumps(payload), 0))
        except libvirt.libvirtError as err:
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
