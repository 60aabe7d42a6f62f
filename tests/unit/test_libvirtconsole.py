"""LibvirtConsole against a scripted stream (the real one: integration)."""

import re
import types
from unittest import mock

import pytest

from nova_shared_cache_lab import common
from nova_shared_cache_lab import guest
from nova_shared_cache_lab import libvirtconsole


class FakeError(Exception):
    pass


FAKE_LIBVIRT = types.SimpleNamespace(
    VIR_STREAM_NONBLOCK=1, VIR_DOMAIN_CONSOLE_FORCE=1,
    libvirtError=FakeError)


class FakeGuest:
    """A stream and domain whose guest shell answers like the real one."""

    def __init__(self, printed=''):
        self.out = printed.encode()
        self.sent = []
        self.active = True
        self.aborted = False
        self.console_flags = None
        self.open_error = None

    # virDomain
    def name(self):
        return 'instance-fake'

    def connect(self):
        return self

    def newStream(self, flags):
        assert flags == FAKE_LIBVIRT.VIR_STREAM_NONBLOCK
        return self

    def openConsole(self, devname, stream, flags):
        self.console_flags = flags
        if self.open_error:
            raise FakeError(self.open_error)

    def isActive(self):
        return self.active

    # virStream
    def recv(self, nbytes):
        if not self.out:
            return -2
        data, self.out = self.out[:nbytes], self.out[nbytes:]
        return data

    def send(self, data):
        line = data.decode()
        self.sent.append(line)
        m = re.match(r'(.*); echo "@@(\w+) \$\?@@"\n$', line)
        if m:
            cmd, tag = m.groups()
            rc = 0
            if cmd.startswith('echo '):
                reply = cmd[5:] + '\r\n'
            else:
                reply, rc = 'sh: %s: not found\r\n' % cmd, 127
            self.out += ('%s@@%s %d@@\r\n' % (reply, tag, rc)).encode()
        elif line.startswith('echo ') and self.active:
            self.out += (line[5:].replace('"', '').strip()
                         + '\r\n').encode()
        return len(data)

    def abort(self):
        self.aborted = True


@pytest.fixture(autouse=True)
def fake_libvirt():
    with mock.patch.object(libvirtconsole, 'libvirt', FAKE_LIBVIRT), \
            mock.patch.object(libvirtconsole, 'POLL', 0.001):
        yield


def test_ready_already_on_the_stream():
    g = FakeGuest('boot noise\r\n%s\r\n' % guest.READY)
    console = libvirtconsole.LibvirtConsole(g)
    console.wait_ready(timeout=1, probe_interval=None)
    assert g.sent == [] and g.console_flags == 0


def test_missed_ready_is_asked_for_again():
    g = FakeGuest('')
    console = libvirtconsole.LibvirtConsole(g)
    with pytest.raises(common.StackError, match='NSC-GUEST-READY'):
        console.wait_ready(timeout=0.2, probe_interval=None)
    assert g.sent == []
    console.wait_ready(timeout=2, probe_interval=0.05)
    assert len(g.sent) >= 1
    # An echoed probe (the guest echoes until its init says stty -echo)
    # must not pass for the READY line itself.
    assert guest.READY not in g.sent[0]


def test_run_returns_output_and_checks_the_exit_code():
    g = FakeGuest(guest.READY + '\r\n')
    console = libvirtconsole.LibvirtConsole(g)
    console.wait_ready(timeout=1)
    assert console.run('echo hello', timeout=1) == 'hello\n'
    with pytest.raises(common.StackError, match='exited 127'):
        console.run('nosuch', timeout=1)
    assert 'not found' in console.run('nosuch', timeout=1, check=False)
    with pytest.raises(ValueError):
        console.run('echo a\necho b')


def test_a_stopped_domain_or_ended_stream_is_an_error_not_a_hang():
    g = FakeGuest('')
    console = libvirtconsole.LibvirtConsole(g)
    g.active = False
    with pytest.raises(common.StackError, match='not running'):
        console.expect('x', timeout=5)
    g = FakeGuest('')
    console = libvirtconsole.LibvirtConsole(g)
    g.recv = lambda n: b''
    with pytest.raises(common.StackError, match='stream ended'):
        console.expect('x', timeout=5)


def test_open_failure_aborts_the_stream_and_says_why():
    g = FakeGuest('')
    g.open_error = 'Active console session exists for this domain'
    with pytest.raises(common.StackError, match='Active console session'):
        libvirtconsole.LibvirtConsole(g)
    assert g.aborted
    g = FakeGuest('')
    console = libvirtconsole.LibvirtConsole(g, force=True)
    assert g.console_flags == FAKE_LIBVIRT.VIR_DOMAIN_CONSOLE_FORCE
    console.close()
    assert g.aborted
    with pytest.raises(common.StackError, match='closed'):
        console.run('echo x')
