"""In-guest I/O that shows whether two VMs really share a disk.

Every access is O_DIRECT inside the guest (``dd iflag/oflag=direct``), so
the guest's own page cache is out of the picture: a stale read can only come
from below the guest (QEMU / librbd caching).
"""

import dataclasses
import time

BLOCK = 4096

_FIND = ('for d in /sys/block/vd*; do s=$(cat $d/serial 2>/dev/null); '
         '[ -n "$s" ] && case "%s" in "$s"*) echo /dev/${d##*/};; esac; '
         'done; true')


def find_disk(console, volume_id, timeout=30):
    """The guest device of a volume, by its serial (virtio keeps 20 chars)."""
    deadline = time.monotonic() + timeout
    while True:
        out = console.run(_FIND % volume_id).split()
        if out:
            return out[0]
        if time.monotonic() > deadline:
            raise AssertionError('volume %s did not appear in the guest'
                                 % volume_id)
        time.sleep(0.3)


def write_blocks(console, dev, blocks, token):
    """Write ``<token>-<block>`` lines filling each 4 KiB block."""
    console.run(
        'for b in %s; do yes "%s-$b" | head -c %d > /tmp/p; '
        'dd if=/tmp/p of=%s bs=%d seek=$b count=1 oflag=direct '
        'conv=notrunc 2>/dev/null || exit 1; done'
        % (' '.join(map(str, blocks)), token, BLOCK, dev, BLOCK),
        timeout=120)


def read_blocks(console, dev, blocks):
    """{block: first line of the block}, read with O_DIRECT."""
    out = console.run(
        'for b in %s; do printf "%%s " $b; dd if=%s bs=%d skip=$b count=1 '
        'iflag=direct 2>/dev/null | head -n 1; done'
        % (' '.join(map(str, blocks)), dev, BLOCK), timeout=120)
    result = {}
    for line in out.splitlines():
        parts = line.split(' ', 1)
        if len(parts) == 2 and parts[0].isdigit():
            # A block never written reads as zeros.
            result[int(parts[0])] = (parts[1].replace('\x00', '').strip()
                                     or '<zeros>')
    return result


@dataclasses.dataclass
class Result:
    checks: int = 0
    fresh: int = 0
    stale: int = 0
    other: int = 0
    seconds: float = 0.0

    def __str__(self):
        return ('%d cross-VM read-after-write checks: %d fresh, %d stale, '
                '%d other (%.1fs)' % (self.checks, self.fresh, self.stale,
                                      self.other, self.seconds))


def cross_vm(vms, rounds=8, blocks_per_round=25, first_block=16):
    """Alternate writer and reader between two VMs and count stale reads.

    ``vms`` is ``[(console, dev), (console, dev)]``. In each round the
    reader first reads the blocks (so any cache below it holds them), the
    writer overwrites them with a new token, and the reader reads again: a
    read that still returns the reader's earlier view is stale.
    """
    result = Result()
    started = time.monotonic()
    for rnd in range(rounds):
        writer, reader = (vms[0], vms[1]) if rnd % 2 == 0 else (vms[1], vms[0])
        blocks = list(range(first_block + rnd * blocks_per_round,
                            first_block + (rnd + 1) * blocks_per_round))
        before = read_blocks(reader[0], reader[1], blocks)
        token = 'NSC%d' % rnd
        write_blocks(writer[0], writer[1], blocks, token)
        after = read_blocks(reader[0], reader[1], blocks)
        for b in blocks:
            result.checks += 1
            expected = '%s-%d' % (token, b)
            got = after.get(b)
            if got == expected:
                result.fresh += 1
            elif got == before.get(b):
                result.stale += 1
            else:
                result.other += 1
    result.seconds = time.monotonic() - started
    return result
