"""What runs inside the two probe servers, and how to read what they print.

The probe servers have no network and no agent. Each learns its role (A or
B), the run's nonce, the volume and the number of probes from its config
drive (``openstack/latest/user_data``), finds the shared volume by its
virtio serial and talks to the other server through that volume only. It
prints one line per event to its serial console, which ``verify`` reads
through Nova's API (``os-getConsoleOutput``). Every access to the shared
volume is O_DIRECT (busybox ``dd iflag=direct``/``oflag=direct``): the
guest's page cache is out of the picture, so a stale read can only come from
below the guest (QEMU or librbd caching).

The volume is laid out in MiB-sized cells (MiB 0 is left alone):

- a *channel* is one cell that one server writes whole, with one message
  repeated (``post``; written with O_DIRECT and flushed), and the other
  polls (``wait_for``). Each poll reads a 4 KiB block that this server
  never read before (blocks 255, 253, ... 3 of the cell), so a read cache
  below the reader can never hide the message: a block first read after
  the message landed comes from Ceph. Before polling a cell the reader
  writes (and flushes) its own scratch block in it (block 0 for A, 1 for
  B): librbd's cache remembers an object that did not exist when it was
  first read as all zeros, and the scratch write makes sure it exists.
- MiB 1 and 2 are A's and B's hello (the start barrier).
- Probe *i* uses cells 3+3i (P: "primed", reader to writer), 4+3i (W:
  "written", writer to reader) and 5+3i (D: the data block, block 2).
  The writer of probe *i* is A for even *i* and B for odd *i*.

One probe:

1. the reader reads D (its *primed* view; any cache below it now holds
   it) and posts P;
2. the writer waits for P, writes the token into D with O_DIRECT, then
   posts W (flushed, so D is on Ceph before W is);
3. the reader waits for W, then reads D once: the token is ``fresh``, its
   primed view is ``stale``, anything else is ``other``.

A stale verdict is proven, never guessed: the reader saw W, which the
writer wrote after D's write completed, and still read its old view of D.
A slow guest only makes a wait longer; a wait that runs out of polls
(minutes) ends the run as ``timeout``, never as ``stale``.
"""

import dataclasses
import re
import statistics

#: Bump when the protocol or the image's contents change.
PROTOCOL = 1
MARK = 'NSCP'
#: The kernel command line of the probe image.
CMDLINE = 'console=ttyS0 quiet loglevel=1 panic=-1'
#: Modules the probe needs from the cloud kernel (plus what they need):
#: virtio-blk for the volume; the IDE CD-ROM (the image asks for the 'pc'
#: machine) and ISO 9660 for the config drive; the ACPI button for a clean
#: stop.
MODULES = ('virtio_pci', 'virtio_blk', 'ata_piix', 'sr_mod', 'isofs',
           'button', 'evdev')
#: Polls per channel (blocks 255, 253, ... 3 of a cell).
POLLS = 127
#: Longest pause between polls, in tenths of a second: at the start
#: barrier (the other server may still be booting or waiting for its
#: attachment) and in a probe. 127 polls then last about 10 min and 2 min.
BARRIER_CAP = 50
STEP_CAP = 10
#: How long a probe server waits for the volume to appear (s).
DISK_WAIT = 900
CELLS_BEFORE_PROBES = 3
CELLS_PER_PROBE = 3

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /cfg
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/printk
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\nexec poweroff -f\n' > /etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /tmp/acpid.log
/bin/nsc-probe
while :; do sleep 3600; done
"""

_PRELUDE = r"""#!/bin/sh
# nova-shared-cache verify: the probe (protocol %(protocol)d).
nonce=- role=- T=/tmp
say() { echo "%(mark)s $nonce $role $*"; }
now() {
  read -r up rest < /proc/uptime
  echo $(( ${up%%.*} * 100 + 1${up#*.} - 100 ))
}
nap() { sleep $(( $1 / 10 )).$(( $1 %% 10 )); }
fresh=0 stale=0 other=0
fail() { say ERROR "$*"; say END $fresh $stale $other; exit 1; }
"""

# Read the config drive, check the user data, find the volume.
_SETUP = r"""say BOOTED

tries=0 found=
while [ -z "$found" ]; do
  for d in /dev/sr*; do
    [ -b "$d" ] || continue
    if mount -t iso9660 -o ro "$d" /cfg 2>/dev/null; then
      if [ -f /cfg/openstack/latest/user_data ]; then found=$d; break; fi
      umount /cfg
    fi
  done
  [ -n "$found" ] && break
  tries=$((tries + 1))
  [ $tries -gt 60 ] && fail "no config drive" \
    "(an ISO 9660 CD-ROM holding openstack/latest/user_data)"
  sleep 1
done
while IFS='=' read -r k v; do
  case "$k" in
    nsc_probe|role|nonce|volume|probes|disk_wait) eval "u_$k=\$v" ;;
  esac
done < /cfg/openstack/latest/user_data
umount /cfg
[ "$u_nsc_probe" = %(protocol)d ] || \
  fail "the user data is not a protocol-%(protocol)d probe's"
case "$u_role" in A|B) ;; *) fail "bad role in the user data" ;; esac
case "$u_nonce" in ''|*[!0-9a-f]*) fail "bad nonce in the user data" ;; esac
case "$u_probes" in ''|*[!0-9]*) fail "bad probe count in the user data";; esac
case "$u_disk_wait" in ''|*[!0-9]*) u_disk_wait=%(disk_wait)d ;; esac
case "$u_volume" in ''|*[!0-9a-f-]*) fail "bad volume id in user data";; esac
role=$u_role nonce=$u_nonce probes=$u_probes

say WAITING-DISK "$u_volume"
dev= waited=0
while [ -z "$dev" ]; do
  for s in /sys/block/vd*/serial; do
    [ -f "$s" ] || continue
    serial=$(cat "$s")
    [ -n "$serial" ] || continue
    case "$u_volume" in "$serial"*) d=${s%%/serial}; dev=/dev/${d##*/};; esac
  done
  [ -n "$dev" ] && break
  waited=$((waited + 1))
  [ $waited -gt $u_disk_wait ] && \
    fail "volume $u_volume did not appear as a virtio disk in $u_disk_wait s"
  sleep 1
done
"""

# The protocol itself: needs dev, role, nonce and probes.
_PROTOCOL = r"""if [ "$role" = A ]; then slot=0 peer=B; else slot=1 peer=A; fi
yes "<S $nonce $role>" | head -c 4096 > $T/scratch
touch_cell() {
  dd if=$T/scratch of=$dev bs=4096 seek=$(( $1 * 256 + slot )) count=1 \
     oflag=direct conv=notrunc,fsync 2>/dev/null || fail "cannot write to $dev"
}
post() {
  yes "<$2>" | head -c 1048576 > $T/post
  dd if=$T/post of=$dev bs=1048576 seek=$1 count=1 \
     oflag=direct conv=notrunc,fsync 2>/dev/null || fail "cannot write to $dev"
}
wait_for() {
  touch_cell $1
  k=0 pause=1
  while [ $k -lt %(polls)d ]; do
    if dd if=$dev bs=4096 skip=$(( $1 * 256 + 255 - 2 * k )) count=1 \
         iflag=direct 2>/dev/null | grep -qF "<$2>"; then
      return 0
    fi
    k=$((k + 1))
    nap $pause
    pause=$((pause * 2))
    [ $pause -gt $3 ] && pause=$3
  done
  return 1
}

say START probes=$probes dev=$dev
[ $role = A ] && mine=1 theirs=2 || mine=2 theirs=1
post $mine "H $nonce $role"
wait_for $theirs "H $nonce $peer" %(barrier_cap)d || \
  fail "server $peer never wrote its hello to the shared volume"
say BARRIER
i=0
while [ $i -lt $probes ]; do
  p=$(( %(before)d + %(per)d * i )); w=$((p + 1)); d=$((p + 2))
  block=$(( d * 256 + 2 ))
  if [ $(( i %% 2 )) = 0 ]; then writer=A; else writer=B; fi
  if [ $writer = $role ]; then
    if ! wait_for $p "P $nonce $i" %(step_cap)d; then
      say W $i timeout
      fail "no primed message for probe $i from server $peer"
    fi
    t0=$(now)
    yes "<D $nonce $i>" | head -c 4096 > $T/data
    dd if=$T/data of=$dev bs=4096 seek=$block count=1 oflag=direct \
       conv=notrunc 2>/dev/null || fail "cannot write to $dev"
    post $w "W $nonce $i"
    say W $i $(( $(now) - t0 ))
  else
    touch_cell $d
    primed=$(dd if=$dev bs=4096 skip=$block count=1 iflag=direct \
             2>/dev/null | md5sum)
    t0=$(now)
    post $p "P $nonce $i"
    if ! wait_for $w "W $nonce $i" %(step_cap)d; then
      say R $i timeout
      fail "no written message for probe $i from server $peer"
    fi
    dd if=$dev bs=4096 skip=$block count=1 iflag=direct 2>/dev/null \
      > $T/read
    if grep -qF "<D $nonce $i>" $T/read; then
      verdict=fresh fresh=$((fresh + 1))
    elif [ "$(md5sum < $T/read)" = "$primed" ]; then
      verdict=stale stale=$((stale + 1))
    else
      verdict=other other=$((other + 1))
    fi
    say R $i $verdict $(( $(now) - t0 ))
  fi
  i=$((i + 1))
done
say END $fresh $stale $other
"""

_VALUES = {'protocol': PROTOCOL, 'mark': MARK, 'polls': POLLS,
           'barrier_cap': BARRIER_CAP, 'step_cap': STEP_CAP,
           'disk_wait': DISK_WAIT, 'before': CELLS_BEFORE_PROBES,
           'per': CELLS_PER_PROBE}
PRELUDE = _PRELUDE % _VALUES
PROTOCOL_SCRIPT = _PROTOCOL % _VALUES
#: /bin/nsc-probe in the probe image.
PROBE = PRELUDE + _SETUP % _VALUES + PROTOCOL_SCRIPT

ROLES = ('A', 'B')


def writer_of(probe):
    return 'A' if probe % 2 == 0 else 'B'


def cells_needed(probes):
    """MiB of the volume a run of ``probes`` uses (MiB 0 included)."""
    return CELLS_BEFORE_PROBES + CELLS_PER_PROBE * probes


def user_data(role, nonce, volume_id, probes, disk_wait=DISK_WAIT):
    """The probe server's user data (plain text, one key=value a line)."""
    if role not in ROLES:
        raise ValueError('role must be A or B, not %r' % role)
    return ('nsc_probe=%d\nrole=%s\nnonce=%s\nvolume=%s\nprobes=%d\n'
            'disk_wait=%d\n' % (PROTOCOL, role, nonce, volume_id, probes,
                                disk_wait))


_LINE = re.compile(r'%s (\S+) (\S+) (.*)' % MARK)


@dataclasses.dataclass
class GuestLog:
    """What one probe server printed for one run."""
    role: str
    booted: bool = False
    started: bool = False
    barrier: bool = False
    #: probe -> (verdict, centiseconds) for the probes this server read.
    reads: dict = dataclasses.field(default_factory=dict)
    #: probe -> centiseconds (or 'timeout') for the probes it wrote.
    writes: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)
    end: tuple = None
    last: str = ''

    @property
    def done(self):
        return self.end is not None


def parse_console(text, nonce, role):
    """Read one server's console output for the run ``nonce``."""
    log = GuestLog(role=role)
    for raw in text.splitlines():
        match = _LINE.search(raw.replace('\r', ''))
        if not match:
            continue
        seen_nonce, seen_role, rest = match.groups()
        words = rest.split()
        if not words:
            continue
        if seen_nonce == '-' and words[0] in ('BOOTED', 'ERROR'):
            # Before the user data is read: a boot, or a config drive
            # problem (those lines cannot name the run yet).
            if words[0] == 'BOOTED':
                log.booted = True
            else:
                log.errors.append(rest.split(' ', 1)[1] if ' ' in rest
                                  else rest)
            log.last = rest
            continue
        if seen_nonce != nonce or seen_role != role:
            continue
        log.last = rest
        kind = words[0]
        if kind == 'START':
            log.started = True
        elif kind == 'BARRIER':
            log.barrier = True
        elif kind == 'R' and len(words) >= 3 and words[1].isdigit():
            cs = int(words[3]) if len(words) > 3 and words[3].isdigit() \
                else None
            log.reads[int(words[1])] = (words[2], cs)
        elif kind == 'W' and len(words) >= 3 and words[1].isdigit():
            log.writes[int(words[1])] = (int(words[2]) if words[2].isdigit()
                                         else words[2])
        elif kind == 'ERROR':
            log.errors.append(rest.split(' ', 1)[1] if ' ' in rest else '')
        elif kind == 'END' and len(words) == 4:
            log.end = tuple(int(w) if w.isdigit() else 0 for w in words[1:])
    return log


def _percentile(values, fraction):
    ordered = sorted(values)
    last = len(ordered) - 1
    index = min(last, max(0, round(fraction * last)))
    return ordered[index]


def direction(logs, writer, probes):
    """Counts and timings of the probes ``writer`` wrote and the other read.

    ``logs``: {role: GuestLog}. A probe that the reader never reported is
    ``missing``; a reader's wait that ran out is ``timeout``.
    """
    reader = 'B' if writer == 'A' else 'A'
    counts = {'fresh': 0, 'stale': 0, 'other': 0, 'timeout': 0,
              'missing': 0}
    times, stale_probes, other_probes = [], [], []
    planned = [i for i in range(probes) if writer_of(i) == writer]
    for i in planned:
        verdict, cs = logs[reader].reads.get(i, ('missing', None))
        if verdict not in counts:
            verdict = 'other'
        counts[verdict] += 1
        if verdict == 'stale':
            stale_probes.append(i)
        elif verdict == 'other':
            other_probes.append(i)
        if cs is not None and verdict in ('fresh', 'stale', 'other'):
            times.append(cs * 10)
    row = dict(counts, writer=writer, reader=reader, probes=len(planned),
               stale_probes=stale_probes, other_probes=other_probes)
    if times:
        row.update(median_ms=round(statistics.median(times)),
                   p95_ms=_percentile(times, 0.95), max_ms=max(times))
    else:
        row.update(median_ms=None, p95_ms=None, max_ms=None)
    return row
