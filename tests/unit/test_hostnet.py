"""This host's addresses, read from a fake /proc and libvirt run directory.

The files have the kernel's formats (fib_trie and if_inet6 as Linux 6.1
prints them); nothing of the real host is read.
"""

import ipaddress
import json
import os
import sys

import pytest

from nova_shared_cache import exception
from nova_shared_cache import hostnet

# /proc/net/fib_trie of a host with 127.0.0.1 and 192.0.2.2/24 (abridged
# to the Local table the kernel prints after Main).
HOST_FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
"""
HOST_IF_INET6 = """fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
"""


def fib_trie(*addresses):
    lines = ['Local:', '  +-- 0.0.0.0/0 3 0 5']
    for address in addresses:
        lines += ['     |-- %s' % address, '        /32 host LOCAL']
    return '\n'.join(lines) + '\n'


def ips(*texts):
    return {ipaddress.ip_address(t) for t in texts}


HOST = ips('127.0.0.1', '192.0.2.2', '::1', 'fd00::2', 'fe80::fc:ff:fe00:1')


class Host:
    """A fake /proc and /run/libvirt/qemu under a temporary directory."""

    def __init__(self, root):
        self.proc = root / 'proc'
        self.run_dir = root / 'run'
        self.run_dir.mkdir()
        self.process('self', 'net:[4026531833]', HOST_FIB_TRIE,
                     HOST_IF_INET6)
        self.alive = set()

    def process(self, pid, namespace, fib=None, if_inet6=None):
        base = self.proc / str(pid)
        (base / 'ns').mkdir(parents=True)
        if namespace:
            os.symlink(namespace, base / 'ns' / 'net')
        (base / 'net').mkdir()
        if fib is not None:
            (base / 'net' / 'fib_trie').write_text(fib)
        if if_inet6 is not None:
            (base / 'net' / 'if_inet6').write_text(if_inet6)

    def qemu(self, domain, pid, status=True):
        (self.run_dir / ('%s.pid' % domain)).write_text('%s\n' % pid)
        if status:
            (self.run_dir / ('%s.xml' % domain)).write_text('<domstatus/>')

    def addresses(self, **kwargs):
        kwargs.setdefault('alive', lambda pid: pid in self.alive)
        return hostnet.local_addresses(proc=str(self.proc),
                                       run_dir=str(self.run_dir), **kwargs)


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def test_own_namespace(host):
    # Network, broadcast and 127.0.0.0/8 entries are not addresses.
    assert host.addresses() == HOST


def test_no_libvirt_run_directory(host, tmp_path):
    assert hostnet.local_addresses(
        proc=str(host.proc), run_dir=str(tmp_path / 'none')) == HOST


def test_qemu_in_another_namespace(host):
    host.process(4242, 'net:[4026532999]', fib_trie('198.51.100.7'),
                 '20010db8000000000000000000000007 02 40 00 80 eth0\n')
    host.qemu('instance-00000001', 4242)
    # libvirt's own driver.pid has no status file: not a QEMU.
    (host.run_dir / 'driver.pid').write_text('1\n')
    assert host.addresses() == HOST | ips('198.51.100.7', '2001:db8::7')


def test_qemu_in_this_namespace_is_not_read_again(host):
    host.process(4242, 'net:[4026531833]')      # no net files at all
    host.qemu('instance-00000001', 4242)
    assert host.addresses() == HOST


def test_unreadable_qemu_namespace_is_an_error(host):
    host.process(4242, 'net:[4026532999]')      # no fib_trie
    host.qemu('instance-00000001', 4242)
    with pytest.raises(exception.LocalAddressesUnknown) as err:
        host.addresses()
    message = str(err.value)
    assert 'domain instance-00000001 (pid 4242)' in message
    assert '4242/net/fib_trie' in message
    assert "cannot tell this host's Ceph clients" in message


def test_hidden_namespace_is_an_error(host):
    # A QEMU of another pid namespace (or /proc mounted with hidepid) has
    # no /proc entry although it runs.
    host.process(4242, None)
    (host.proc / '4242' / 'ns').rmdir()
    (host.proc / '4242' / 'net').rmdir()
    (host.proc / '4242').rmdir()
    host.qemu('instance-00000001', 4242)
    host.alive.add(4242)
    with pytest.raises(exception.LocalAddressesUnknown) as err:
        host.addresses()
    assert 'pid 4242' in str(err.value)
    # The same pid file of a process that is gone: a QEMU that exited.
    host.alive.clear()
    assert host.addresses() == HOST


def test_pid_file_without_a_pid_is_an_error(host):
    host.qemu('instance-00000001', 'garbage')
    with pytest.raises(exception.LocalAddressesUnknown) as err:
        host.addresses()
    assert "holds 'garbage', not a pid" in str(err.value)


def test_unlistable_run_directory_is_an_error(host, monkeypatch):
    def denied(path):
        raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(hostnet.os, 'listdir', denied)
    with pytest.raises(exception.LocalAddressesUnknown) as err:
        host.addresses()
    assert 'cannot list the running QEMUs' in str(err.value)
    assert 'Permission denied' in str(err.value)


def test_kernel_without_ipv6(host):
    os.unlink(host.proc / 'self' / 'net' / 'if_inet6')
    assert host.addresses() == ips('127.0.0.1', '192.0.2.2', '::1')


def test_garbage_fib_trie_is_an_error(host):
    (host.proc / 'self' / 'net' / 'fib_trie').write_text(
        fib_trie('not-an-address'))
    with pytest.raises(exception.LocalAddressesUnknown) as err:
        host.addresses(ip_command=('/nonexistent/ip',))
    assert 'unexpected content' in str(err.value)


def ip_printing(output, code=0):
    return (sys.executable, '-c',
            'import sys; print(%r); sys.exit(%d)' % (output, code))


IP_JSON = json.dumps([
    {'ifname': 'lo', 'addr_info': [{'family': 'inet', 'local': '127.0.0.1'}]},
    {'ifname': 'eth0', 'addr_info': [
        {'family': 'inet', 'local': '203.0.113.5'},
        {'family': 'inet6', 'local': 'fd00::5'}]}])


def test_no_proc_falls_back_to_ip(host):
    for name in ('fib_trie', 'if_inet6'):
        os.unlink(host.proc / 'self' / 'net' / name)
    assert host.addresses(ip_command=ip_printing(IP_JSON)) == ips(
        '127.0.0.1', '::1', '203.0.113.5', 'fd00::5')


@pytest.mark.parametrize('command, reason', [
    (('/nonexistent/ip', '-j', 'addr', 'show'), 'No such file'),
    (ip_printing('Option "-j" is unknown, try "ip -help".', 255),
     'exit 255'),
    (ip_printing('1: lo: <LOOPBACK,UP> mtu 65536'), 'no address list'),
])
def test_no_proc_and_no_usable_ip_is_an_error(host, command, reason):
    os.unlink(host.proc / 'self' / 'net' / 'fib_trie')
    with pytest.raises(exception.LocalAddressesUnknown) as err:
        host.addresses(ip_command=command)
    message = str(err.value)
    assert reason in message
    assert 'self/net/fib_trie' in message    # both reasons are given
    assert 'mount /proc or install iproute2' in message


@pytest.mark.parametrize('address, expected', [
    ('10.0.0.7:0/2041893277', (None, '10.0.0.7', 0, 2041893277)),
    ('v2:10.0.0.7:3300/0', ('v2', '10.0.0.7', 3300, 0)),
    ('v1:10.0.0.7:6789/1', ('v1', '10.0.0.7', 6789, 1)),
    ('any:[fd00::7]:0/5', ('any', 'fd00::7', 0, 5)),
    ('[fd00::7]:0/4294967295', (None, 'fd00::7', 0, 4294967295)),
])
def test_client_addresses(address, expected):
    kind, ip, port, nonce = hostnet.parse_client_address(address)
    assert (kind, str(ip), port, nonce) == expected


@pytest.mark.parametrize('address', [
    '', '10.0.0.7', '10.0.0.7:0', '10.0.0.7/1', 'v3:10.0.0.7:0/1',
    'fd00::7:0/1', '[fd00::7:0/1', '[10.0.0.7]:0/1', '300.0.0.7:0/1',
    '10.0.0.7:65536/1', '10.0.0.7:0/4294967296', '10.0.0.7:0/-1',
    ' 10.0.0.7:0/1', 'client.4100'])
def test_bad_client_addresses(address):
    with pytest.raises(exception.BadClientAddress) as err:
        hostnet.parse_client_address(address)
    assert 'is not a Ceph client address' in str(err.value)


def test_is_local_and_same_client():
    local = ips('192.0.2.2', 'fd00::2')
    assert hostnet.is_local('192.0.2.2:0/1', local)
    assert hostnet.is_local('v2:[fd00::2]:0/1', local)
    assert hostnet.is_local('127.0.0.9:0/1', local)     # loopback
    assert not hostnet.is_local('192.0.2.3:0/1', local)
    assert not hostnet.is_local('nonsense', local)
    assert hostnet.same_client('v2:10.0.0.7:0/1', '10.0.0.7:0/1')
    assert not hostnet.same_client('10.0.0.7:0/1', '10.0.0.7:0/2')
