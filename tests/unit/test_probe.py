"""The cross-VM probe's bookkeeping, on simulated guest consoles."""

import re

from nova_shared_cache_lab import probe
from tests.unit import base


class Disk:
    def __init__(self):
        self.blocks = {}


class FakeConsole:
    """Runs the probe's two shell loops against a dict, optionally caching.

    A caching console keeps what it read and never sees later writes, the
    way a librbd client with a writeback cache behaves for another client's
    writes.
    """

    def __init__(self, disk, caching=False):
        self.disk, self.caching, self.cache = disk, caching, {}

    def run(self, command, timeout=None):
        blocks = [int(b) for b in re.search(r'for b in ([\d ]+);',
                                            command).group(1).split()]
        if 'of=' in command:
            token = re.search(r'yes "([^"]+)-\$b"', command).group(1)
            for b in blocks:
                self.disk.blocks[b] = '%s-%d' % (token, b)
            return ''
        lines = []
        for b in blocks:
            if self.caching and b in self.cache:
                value = self.cache[b]
            else:
                value = self.disk.blocks.get(b, '\x00' * 40)
                self.cache[b] = value
            lines.append('%d %s' % (b, value))
        return '\n'.join(lines) + '\n'


class CrossVmTest(base.TestCase):

    def test_shared_disk_reads_fresh(self):
        disk = Disk()
        vms = [(FakeConsole(disk), '/dev/vdb'),
               (FakeConsole(disk), '/dev/vdb')]
        result = probe.cross_vm(vms, rounds=8, blocks_per_round=25)
        self.assertEqual((200, 200, 0, 0), (result.checks, result.fresh,
                                            result.stale, result.other))

    def test_caching_reader_is_counted_stale(self):
        disk = Disk()
        vms = [(FakeConsole(disk, caching=True), '/dev/vdb'),
               (FakeConsole(disk, caching=True), '/dev/vdb')]
        result = probe.cross_vm(vms, rounds=4, blocks_per_round=10)
        self.assertEqual((40, 0, 40, 0), (result.checks, result.fresh,
                                          result.stale, result.other))

    def test_zeros_are_shown_as_such(self):
        console = FakeConsole(Disk())
        self.assertEqual({3: '<zeros>'},
                         probe.read_blocks(console, '/dev/vdb', [3]))
