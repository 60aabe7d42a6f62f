"""The libvirt qemu hook, installed for real and run by libvirtd.

Domains here are plain libvirt domains (no Nova): a tiny guest and an RBD
disk on the stack's Ceph, in the shape an operator's hand-made or foreign
domain would have.
"""

import io
import os
import shutil
import subprocess

from lxml import etree
import pytest

from nova_shared_cache.cmd import manage
from nova_shared_cache.embedded import guest as guest_image
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import qmp

HOOK = os.path.join(manage.HOOKS_DIR, 'qemu.d', manage.HOOK_NAME)

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>96</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <devices>
{disks}
    <serial type='pty'/>
  </devices>
</domain>
"""

RBD_DISK = """    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'{cache}/>
      <auth username='cinder'><secret type='ceph' uuid='{secret}'/></auth>
      <source protocol='rbd' name='{spec}'>
        <host name='127.0.0.1' port='{port}'/>
      </source>
      <target dev='{dev}' bus='virtio'/>
      {shareable}
    </disk>"""


@pytest.fixture(scope='module')
def hook_env(stack, tmp_path_factory):
    import libvirt
    work = os.path.join(stack.root, 'hooktest')
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    kernel, initrd = guest_image.build()
    paths = {}
    for name, src in (('kernel', kernel), ('initrd', initrd)):
        paths[name] = os.path.join(work, name)
        shutil.copy(src, paths[name])
        os.chmod(paths[name], 0o644)
    conf_path = str(tmp_path_factory.mktemp('hook') / 'nova.conf')
    env = HookEnv(stack, paths, conf_path, work)
    env.set_mode('deny')
    assert env.manage('install-hook', '--reload')[0] == 0
    env.connection = libvirt.open('qemu:///system')
    yield env
    env.remove_domains()
    env.manage('install-hook', '--uninstall', '--reload')
    env.connection.close()


class HookEnv:

    def __init__(self, stack, paths, conf_path, work):
        self.stack = stack
        self.paths = paths
        self.conf_path = conf_path
        self.work = work
        self.defined = []

    def set_mode(self, mode):
        with open(self.conf_path, 'w') as f:
            f.write('[shared_cache]\nhook_mode = %s\ncache_mode = none\n'
                    % mode)

    def manage(self, *args):
        out, err = io.StringIO(), io.StringIO()
        code = manage.main(['--config-file', self.conf_path] + list(args),
                           out, err)
        return code, out.getvalue(), err.getvalue()

    def volume(self):
        volume_id, ci = self.stack.new_volume()
        return ci['data']['name']

    def xml(self, name, disks):
        return DOMAIN.format(
            name=name, kernel=self.paths['kernel'],
            initrd=self.paths['initrd'], cmdline=guest_image.CMDLINE,
            disks='\n'.join(disks))

    def rbd_disk(self, spec, cache='writeback', shareable=True, dev='vdb'):
        return RBD_DISK.format(
            cache=" cache='%s'" % cache if cache else '',
            secret=self.stack.secret_uuid, spec=spec,
            port=self.stack.ceph.port, dev=dev,
            shareable='<shareable/>' if shareable else '')

    def define(self, name, disks):
        dom = self.connection.defineXML(self.xml(name, disks))
        self.defined.append(dom)
        return dom

    def remove_domains(self):
        for dom in self.defined:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except Exception:
                pass


def _start_error(dom):
    import libvirt
    try:
        dom.create()
    except libvirt.libvirtError as err:
        return err.get_error_message()
    return None


def test_hook_is_installed_as_an_executable(hook_env):
    assert os.access(HOOK, os.X_OK)
    with open(HOOK) as f:
        text = f.read()
    assert hook_env.conf_path in text
    assert 'nova_shared_cache.cmd.hook' in text


def test_deny_refuses_a_caching_shared_disk_with_a_message(hook_env):
    hook_env.set_mode('deny')
    dom = hook_env.define('instance-hook-deny',
                          [hook_env.rbd_disk(hook_env.volume())])
    error = _start_error(dom)
    assert error is not None, 'the domain started'
    assert 'nova-shared-cache refuses the start of domain ' \
        'instance-hook-deny' in error
    assert "cache='writeback'" in error and 'fix --config' in error
    assert not dom.isActive()


def test_deny_leaves_unrelated_domains_alone(hook_env):
    hook_env.set_mode('deny')
    spec = hook_env.volume()
    cases = {
        'instance-hook-nodisk': [],
        # A caching RBD disk nobody else uses is not shared.
        'instance-hook-private': [hook_env.rbd_disk(
            spec, cache='writeback', shareable=False)],
        'instance-hook-safe': [hook_env.rbd_disk(
            hook_env.volume(), cache='none', shareable=True)],
    }
    for name, disks in cases.items():
        dom = hook_env.define(name, disks)
        assert _start_error(dom) is None, name
        assert dom.isActive(), name
    # A second domain on the image the running one uses is shared, even
    # without <shareable/>: libvirt's status files tell the hook.
    dom = hook_env.define('instance-hook-second', [hook_env.rbd_disk(
        spec, cache='writeback', shareable=False)])
    error = _start_error(dom)
    assert error and 'also used by running domain(s) ' \
        'instance-hook-private' in error, error
    for name in cases:
        hook_env.connection.lookupByName(name).destroy()


def test_warn_allows_it(hook_env):
    hook_env.set_mode('warn')
    dom = hook_env.define('instance-hook-warn',
                          [hook_env.rbd_disk(hook_env.volume())])
    assert _start_error(dom) is None
    disk = domxml.rbd_disks(domxml.parse(dom.XMLDesc(0)))[0]
    assert disk.cache == 'writeback'
    assert qmp.live_cache(qmp.Monitor(dom).block_nodes(),
                          disk)['direct'] is False
    dom.destroy()


def test_fix_refuses_a_start_and_corrects_a_restore(hook_env):
    hook_env.set_mode('fix')
    dom = hook_env.define('instance-hook-fix',
                          [hook_env.rbd_disk(hook_env.volume())])
    error = _start_error(dom)
    assert error and 'refuses the start' in error
    # Started while the hook only warned, saved, restored under fix.
    hook_env.set_mode('warn')
    assert _start_error(dom) is None
    saved = os.path.join(hook_env.work, 'fix.save')
    dom.save(saved)
    try:
        hook_env.set_mode('fix')
        hook_env.connection.restore(saved)
    finally:
        os.unlink(saved)
    dom = hook_env.connection.lookupByName('instance-hook-fix')
    assert dom.isActive()
    disk = domxml.rbd_disks(domxml.parse(dom.XMLDesc(0)))[0]
    assert disk.cache == 'none'
    assert disk.shareable
    assert qmp.live_cache(qmp.Monitor(dom).block_nodes(),
                          disk)['direct'] is True
    dom.destroy()


def _run_hook(args, xml):
    return subprocess.run([HOOK] + args, input=xml, capture_output=True,
                          timeout=60)


def test_migrate_gets_corrected_xml(hook_env):
    xml = hook_env.xml('instance-hook-migrate',
                       [hook_env.rbd_disk('volumes/volume-x', dev='vdb'),
                        hook_env.rbd_disk('volumes/volume-y', cache='none',
                                          dev='vdc')]).encode()
    hook_env.set_mode('fix')
    proc = _run_hook(['instance-hook-migrate', 'migrate', 'begin', '-'], xml)
    assert proc.returncode == 0, proc.stderr
    disks = {d.target: d for d in domxml.rbd_disks(
        domxml.parse(proc.stdout))}
    assert disks['vdb'].cache == 'none' and disks['vdb'].shareable
    assert disks['vdc'].cache == 'none'
    # Everything but that disk's driver is what libvirt gave.
    given = etree.fromstring(xml)
    got = etree.fromstring(proc.stdout)
    for doc in (given, got):
        doc.find("./devices/disk/driver").attrib.pop('cache')
    assert etree.tostring(given, method='c14n') == etree.tostring(
        got, method='c14n')
    # The same under deny: refused; under warn: allowed, unchanged.
    hook_env.set_mode('deny')
    proc = _run_hook(['instance-hook-migrate', 'migrate', 'begin', '-'], xml)
    assert proc.returncode == 1 and b'refuses the migrate' in proc.stderr
    hook_env.set_mode('warn')
    proc = _run_hook(['instance-hook-migrate', 'migrate', 'begin', '-'], xml)
    assert proc.returncode == 0 and proc.stdout == b''
    assert b'WARNING' in proc.stderr


@pytest.mark.parametrize('xml', [
    b'', b'<domain', b'not xml at all', b'<domain><devices><disk '
    b'type="network"><source protocol="rbd"/></disk></devices></domain>',
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM '
    b'"file:///etc/shadow">]><domain>&e;</domain>',
    b'<domain><devices><disk type="network"><driver cache="bogus"/>'
    b'<source protocol="rbd" name="p/i"/><shareable/></disk></devices>'
    b'</domain>',
])
def test_odd_xml_is_never_blocked(hook_env, xml):
    hook_env.set_mode('deny')
    for op in ('prepare', 'migrate', 'restore'):
        proc = _run_hook(['instance-hook-odd', op, 'begin', '-'], xml)
        assert proc.returncode == 0, (op, proc.stderr)
        assert proc.stdout == b''
        assert b'Traceback' not in proc.stderr
