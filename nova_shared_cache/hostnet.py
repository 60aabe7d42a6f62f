"""Which Ceph client addresses belong to this host."""

import ipaddress
import json
import subprocess


def local_addresses():
    addresses = {ipaddress.ip_address('127.0.0.1'),
                 ipaddress.ip_address('::1')}
    try:
        out = subprocess.run(['ip', '-j', 'addr', 'show'],
                             capture_output=True, text=True, timeout=10,
                             check=True).stdout
        for link in json.loads(out):
            for info in link.get('addr_info', []):
                addresses.add(ipaddress.ip_address(info['local']))
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        pass
    return addresses


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
