"""Drive a guest's serial console through libvirt (virDomain.openConsole).

Nova's domains have ``<serial type='pty'>`` with a virtlogd log; the pty is
libvirt's, and a client reaches it only through libvirt's console stream.
``LibvirtConsole`` offers what ``console.Console`` offers (``expect``,
``wait_ready``, ``run``, ``close``), so ``probe`` drives either.

The stream is non-blocking and read by polling, with no thread and no
libvirt event loop: libvirt's client reads the stream's data off its
socket only while it runs a call, so an idle poll makes one cheap call
(``isActive``, which also tells a guest that stopped).

QEMU drops what a pty guest prints while nobody has the pty open. A
console opened after the guest printed its READY line would wait for it
in vain; ``wait_ready`` therefore asks the guest to print it again
(``probe_interval``).
"""

import codecs
import re
import time

from nova_shared_cache_lab import common
from nova_shared_cache_lab import console
from nova_shared_cache_lab import guest as guest_image

try:
    import libvirt
except ImportError:  # pragma: no cover - Debian's python3-libvirt
    libvirt = None

URI = 'qemu:///system'
#: Seconds between two looks at an idle stream.
POLL = 0.05
#: The guest echoes what it is sent until its init turns echo off; quotes
#: keep an echoed probe from looking like the READY line it asks for.
_PROBE = 'echo %s"%s"\n'


class LibvirtConsole(console.LineConsole):
    """The serial console of a libvirt domain, as a line-driven shell.

    ``domain``: a ``virDomain``; its connection must stay open while the
    console is used. ``devname``: the console's alias (None: the first
    console or serial port, as ``virsh console`` takes it). ``force``:
    take the console over from another client (``virsh console``) instead
    of failing.
    """

    def __init__(self, domain, devname=None, force=False):
        if libvirt is None:
            raise common.StackError(reason="libvirt-python is missing "
                                           "(Debian package python3-libvirt)")
        self.domain = domain
        self.path = 'libvirt:%s%s' % (domain.name(),
                                      ':' + devname if devname else '')
        self.buffer = ''
        self._decoder = codecs.getincrementaldecoder('utf-8')('replace')
        self._conn = None
        self.stream = domain.connect().newStream(libvirt.VIR_STREAM_NONBLOCK)
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        try:
            domain.openConsole(devname, self.stream, flags)
        except libvirt.libvirtError as e:
            self._abort()
            raise common.StackError(reason="cannot open the console of %s: "
                                           "%s" % (domain.name(), e))

    @classmethod
    def open(cls, name, uri=URI, devname=None, force=False):
        """A console on a connection of its own, closed with the console."""
        if libvirt is None:
            raise common.StackError(reason="libvirt-python is missing "
                                           "(Debian package python3-libvirt)")
        conn = libvirt.open(uri)
        try:
            console = cls(conn.lookupByName(name), devname, force)
        except Exception:
            conn.close()
            raise
        console._conn = conn
        return console

    def _abort(self):
        if self.stream is not None:
            try:
                self.stream.abort()
            except libvirt.libvirtError:
                pass  # the domain is gone, and the stream with it
            self.stream = None

    def close(self):
        self._abort()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fail(self, why):
        return common.StackError(reason="console %s: %s" % (self.path, why))

    def _read(self, timeout):
        """What the guest printed within ``timeout`` seconds ('' if none)."""
        if self.stream is None:
            raise self._fail('closed')
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.stream.recv(65536)
            except libvirt.libvirtError as e:
                raise self._fail('read failed: %s' % e)
            if data == b'':
                raise self._fail('the stream ended (domain stopped?)')
            if isinstance(data, bytes):
                return self._decoder.decode(data).replace('\r', '')
            # -2: nothing yet. A call lets libvirt's client read its socket.
            try:
                active = self.domain.isActive()
            except libvirt.libvirtError as e:
                raise self._fail('domain lookup failed: %s' % e)
            if not active:
                raise self._fail('the domain is not running')
            left = deadline - time.monotonic()
            if left <= 0:
                return ''
            time.sleep(min(POLL, left))

    def send(self, text, timeout=10):
        """Write ``text`` to the guest's console."""
        if self.stream is None:
            raise self._fail('closed')
        data = text.encode()
        deadline = time.monotonic() + timeout
        while data:
            try:
                sent = self.stream.send(data)
            except libvirt.libvirtError as e:
                raise self._fail('write failed: %s' % e)
            if sent > 0:
                data = data[sent:]
                continue
            if time.monotonic() > deadline:
                raise self._fail('write did not go out within %ss' % timeout)
            time.sleep(POLL)

    def wait_ready(self, timeout=120, probe_interval=10.0):
        """Wait for the guest's READY line.

        Every ``probe_interval`` seconds without it, ask the guest to print
        it (None: only wait, for a console opened before the guest started).
        A probe the guest gets before its shell reads is lost, harmlessly.
        """
        marker = guest_image.READY
        half = len(marker) // 2
        probe = _PROBE % (marker[:half], marker[half:])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            step = left if probe_interval is None else min(left,
                                                           probe_interval)
            try:
                # The whole line: what follows is the next command's.
                self.expect(re.escape(marker) + r'.*\n', max(step, 0))
                return
            except common.StackError:
                if time.monotonic() >= deadline:
                    raise self._fail(
                        'no %s line within %ss (%s); last output: %r'
                        % (marker, timeout,
                           'never asked for' if probe_interval is None else
                           'asked for every %ss' % probe_interval,
                           self.buffer[-300:]))
            self.send(probe)
