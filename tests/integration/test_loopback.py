"""Nothing the embedded stack starts listens beyond loopback.

The OSD's cluster and back heartbeat messengers bound to every address
(0.0.0.0:6802-6807) until ``cluster addr`` was set: seen with ``ss`` on
the real devstack run, where the plugin starts this same Ceph.
"""

import ipaddress
import re
import subprocess

DAEMONS = ('ceph-mon', 'ceph-mgr', 'ceph-osd', 'libvirtd', 'virtlogd')


def listening():
    out = subprocess.run(['ss', '-Hltnp'], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    for line in out.splitlines():
        fields = line.split()
        found = re.search(r'users:\(\("([^"]+)"', line)
        if found:
            yield found.group(1), fields[3]


def test_the_stack_listens_on_loopback_only(stack):
    seen = [(name, addr) for name, addr in listening()
            if name.startswith(DAEMONS)]
    assert any(name == 'ceph-osd' for name, _ in seen), seen
    beyond = []
    for name, addr in seen:
        host = addr.rsplit(':', 1)[0].strip('[]')
        if host == '*' or not ipaddress.ip_address(host).is_loopback:
            beyond.append((name, addr))
    assert beyond == []
