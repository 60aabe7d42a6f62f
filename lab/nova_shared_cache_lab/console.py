"""Drive a tiny guest through its serial console (a pty libvirt gives us)."""

import os
import re
import select
import time
import tty
import uuid

from nova_shared_cache_lab import common
from nova_shared_cache_lab import guest as guest_image


class LineConsole:
    """A guest's shell on a serial line: what both consoles share.

    A subclass gives ``path`` (for messages), ``buffer`` (text read and not
    yet matched), ``_read(timeout)`` and ``send(text)``.
    """

    def expect(self, pattern, timeout):
        """Wait for ``pattern``; return (output before it, the match)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.buffer)
            if match:
                before = self.buffer[:match.start()]
                self.buffer = self.buffer[match.end():]
                return before, match
            left = deadline - time.monotonic()
            if left <= 0:
                raise common.StackError(
                    reason="no %r on console %s within %ss; last output: %r"
                           % (pattern, self.path, timeout,
                              self.buffer[-300:]))
            self.buffer += self._read(min(left, 0.5))

    def run(self, command, timeout=60, check=True):
        """Run one shell line in the guest; return its output."""
        if '\n' in command:
            raise ValueError('one line per command')
        tag = uuid.uuid4().hex[:12]
        self.send('%s; echo "@@%s $?@@"\n' % (command, tag))
        before, match = self.expect(r'@@%s (\d+)@@\n' % tag, timeout)
        rc = int(match.group(1))
        if check and rc != 0:
            raise common.StackError(reason="guest command %r exited %d: %s"
                                    % (command[:80], rc, before[-300:]))
        return before


class Console(LineConsole):
    """The pty of a domain's serial console, opened directly."""

    def __init__(self, pty_path):
        self.path = pty_path
        self.fd = os.open(pty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        # Raw at once: with echo on, this end would send the guest's own
        # output back to it as input.
        tty.setraw(self.fd)
        self.buffer = ''

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _read(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ''
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return ''
        return data.decode('utf-8', 'replace').replace('\r', '')

    def wait_ready(self, timeout=120):
        self.expect(re.escape(guest_image.READY), timeout)

    def send(self, text):
        os.write(self.fd, text.encode())
