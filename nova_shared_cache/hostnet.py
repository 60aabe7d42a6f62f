"""Which Ceph client addresses belong to this host.

Ceph names a client by its entity address: ``10.0.0.7:0/2041893277``,
``v2:10.0.0.7:0/2041893277`` or ``[fd00::7]:0/2041893277``. A client is on
this host when its IP is one of the host's own addresses. The commands may
run in another network namespace than the VMs (a container of their own),
so the addresses are those of this process's namespace and of every
namespace a local QEMU runs in (libvirt's pid files in /run/libvirt/qemu).

They are read from /proc: IPv4 from ``net/fib_trie`` (the ``/32 host
LOCAL`` entries), IPv6 from ``net/if_inet6``; ``ip -j addr show`` is the
fallback for this process's own namespace. When any of it cannot be read,
``local_addresses`` raises AddressError instead of guessing: a tool that
takes every client for a remote one fences its own host's VMs and reports
unshared disks as shared.
"""

import ipaddress
import json
import os
import re
import subprocess

from nova_shared_cache import exception

PROC = '/proc'
#: Where libvirt (qemu:///system) keeps a <domain>.pid of every running QEMU.
QEMU_RUN_DIR = '/run/libvirt/qemu'
IP_COMMAND = ('ip', '-j', 'addr', 'show')
IP_TIMEOUT = 10

LOOPBACK = frozenset({ipaddress.ip_address('127.0.0.1'),
                      ipaddress.ip_address('::1')})


AddressError = exception.LocalAddressesUnknown
ClientAddressError = exception.BadClientAddress


class _Unreadable(Exception):
    pass


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as err:
        raise _Unreadable('%s: %s' % (path, err.strerror or err)) from err


def parse_fib_trie(text):
    """The local IPv4 addresses in /proc/net/fib_trie."""
    addresses, leaf = set(), None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == '|--':
            leaf = words[1]
        elif words == ['/32', 'host', 'LOCAL'] and leaf:
            addresses.add(ipaddress.IPv4Address(leaf))
    return addresses


def parse_if_inet6(text):
    """The IPv6 addresses in /proc/net/if_inet6."""
    addresses = set()
    for line in text.splitlines():
        words = line.split()
        if words:
            addresses.add(ipaddress.IPv6Address(int(words[0], 16)))
    return addresses


def _proc_net(proc, who):
    """IPv4 and IPv6 addresses of the namespace of process ``who``."""
    net = os.path.join(proc, str(who), 'net')
    try:
        addresses = parse_fib_trie(_read(os.path.join(net, 'fib_trie')))
    except ValueError as err:
        raise _Unreadable('%s/fib_trie: unexpected content (%s)'
                          % (net, err)) from err
    try:
        addresses |= parse_if_inet6(_read(os.path.join(net, 'if_inet6')))
    except _Unreadable as err:
        # No if_inet6 at all: the kernel runs without IPv6.
        if not isinstance(err.__cause__, FileNotFoundError):
            raise
    except ValueError as err:
        raise _Unreadable('%s/if_inet6: unexpected content (%s)'
                          % (net, err)) from err
    return addresses


def _ip_command(command):
    try:
        out = subprocess.run(list(command), capture_output=True, text=True,
                             timeout=IP_TIMEOUT, check=True).stdout
        return {ipaddress.ip_address(info['local'])
                for link in json.loads(out)
                for info in link.get('addr_info', [])}
    except subprocess.CalledProcessError as err:
        raise _Unreadable("'%s' failed: %s" % (' '.join(command), (
            err.stderr or '').strip() or 'exit %s' % err.returncode))
    except (OSError, subprocess.SubprocessError) as err:
        raise _Unreadable("'%s': %s" % (' '.join(command), err))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise _Unreadable("'%s' printed no address list in JSON (%s: %s)"
                          % (' '.join(command), type(err).__name__, err))


def _namespace(proc, who):
    """An id of the network namespace of ``who``, or None if hidden."""
    try:
        return os.readlink(os.path.join(proc, str(who), 'ns', 'net'))
    except OSError:
        return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _qemu_pids(run_dir):
    """(domain, pid, pid file) of each running QEMU libvirt knows of."""
    if not os.path.isdir(run_dir):
        return []   # no libvirt here: no local QEMU either
    try:
        names = os.listdir(run_dir)
    except OSError as err:
        raise AddressError(reason='cannot list the running QEMUs in %s: %s '
                           '(run as root)' % (run_dir, err.strerror))
    found = []
    for name in sorted(names):
        domain, ext = os.path.splitext(name)
        # <domain>.pid beside <domain>.xml (libvirt's status file); the
        # daemon's own driver.pid has no status file.
        if ext != '.pid' or domain + '.xml' not in names:
            continue
        path = os.path.join(run_dir, name)
        try:
            text = _read(path).strip()
        except _Unreadable as err:
            if isinstance(err.__cause__, FileNotFoundError):
                continue    # the domain stopped meanwhile
            raise AddressError(reason='cannot read the pid of the QEMU of '
                               'domain %s: %s (run as root)' % (domain, err))
        if not text.isdigit():
            raise AddressError(reason='%s holds %r, not a pid'
                               % (path, text[:40]))
        found.append((domain, int(text), path))
    return found


def local_addresses(proc=PROC, run_dir=QEMU_RUN_DIR, ip_command=IP_COMMAND,
                    alive=_pid_alive):
    """Every IP address of this host as its Ceph clients can show it.

    The addresses of this process's network namespace and of the namespace
    of every QEMU in ``run_dir``. Raises AddressError naming what could not
    be read.
    """
    addresses = set(LOOPBACK)
    try:
        addresses |= _proc_net(proc, 'self')
    except _Unreadable as proc_err:
        try:
            addresses |= _ip_command(ip_command)
        except _Unreadable as ip_err:
            raise AddressError(
                reason='the addresses of this host are not readable (%s; '
                       '%s): mount /proc or install iproute2'
                       % (proc_err, ip_err))
    seen = {_namespace(proc, 'self')}
    for domain, pid, pid_file in _qemu_pids(run_dir):
        namespace = _namespace(proc, pid)
        if namespace is not None and namespace in seen:
            continue
        try:
            addresses |= _proc_net(proc, pid)
        except _Unreadable as err:
            if (isinstance(err.__cause__, FileNotFoundError)
                    and not os.path.isdir(os.path.join(proc, str(pid)))
                    and (not os.path.exists(pid_file) or not alive(pid))):
                continue    # that QEMU has exited (or its pid file is stale)
            raise AddressError(
                reason='cannot read the network namespace of the QEMU of '
                       'domain %s (pid %d): %s (run as root, in the host\'s '
                       'pid namespace)' % (domain, pid, err))
        if namespace is not None:
            seen.add(namespace)
    return frozenset(addresses)


def address_host(address):
    """'v2:10.0.0.7:0/123' or '10.0.0.7:0/123' -> ip_address('10.0.0.7')."""
    text = address.split('/', 1)[0]
    if text.startswith(('v1:', 'v2:', 'any:')):
        text = text.split(':', 1)[1]
    host = text.rsplit(':', 1)[0].strip('[]')
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_local(address, local):
    """Whether the client at Ceph address ``address`` is on this host."""
    host = address_host(address)
    return host is not None and (host.is_loopback or host in local)


_ENTITY_ADDRESS = re.compile(
    r'^(?:(?P<type>v1|v2|any):)?'
    r'(?:\[(?P<ip6>[^\]]*)\]|(?P<ip4>[^:/\[\]]*))'
    r':(?P<port>[0-9]+)/(?P<nonce>[0-9]+)$')


def parse_client_address(address):
    """Check a Ceph entity address; (type, ip, port, nonce).

    ``IP:PORT/NONCE`` with an optional ``v1:``, ``v2:`` or ``any:`` prefix,
    an IPv6 address in brackets. Raises ClientAddressError.
    """
    match = _ENTITY_ADDRESS.match(address or '')
    if not match:
        raise ClientAddressError(address=address, reason='not of the form '
                                 '[v1:|v2:|any:]IP:PORT/NONCE')
    ip_text = match.group('ip6')
    try:
        if ip_text is not None:
            ip = ipaddress.IPv6Address(ip_text)
        else:
            ip = ipaddress.IPv4Address(match.group('ip4'))
    except ValueError as err:
        raise ClientAddressError(address=address, reason=str(err))
    port, nonce = int(match.group('port')), int(match.group('nonce'))
    if port > 65535:
        raise ClientAddressError(address=address,
                                 reason='port %d is above 65535' % port)
    if nonce > 0xffffffff:
        raise ClientAddressError(address=address, reason='nonce %d is above '
                                 '2^32-1' % nonce)
    return match.group('type'), ip, port, nonce


def same_client(a, b):
    """Whether two entity addresses name one client (prefix aside)."""
    try:
        return parse_client_address(a)[1:] == parse_client_address(b)[1:]
    except ClientAddressError:
        return a == b
