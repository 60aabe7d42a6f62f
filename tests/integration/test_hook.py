"""The libvirt qemu hook, installed for real and run by libvirtd.

Domains here are plain libvirt domains (no Nova): a tiny guest and an RBD
disk on the stack's Ceph, in the shape an operator's hand-made or foreign
domain would have.
"""

import io
import json
import os
import shutil
import subprocess
import sys

from lxml import etree
import pytest

from nova_shared_cache.cmd import install_hook as install_hook_cmd
from nova_shared_cache.cmd import manage
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import qmp
from nova_shared_cache_lab import guest as guest_image

HOOK = os.path.join(install_hook_cmd.HOOKS_DIR, 'qemu.d',
                    install_hook_cmd.HOOK_NAME)

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
        <host name='127.0.0.1' port='{port}'/>{snapshot}
      </source>
      <target dev='{dev}' bus='virtio'/>
      {shareable}{readonly}
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

    def rbd_disk(self, spec, cache='writeback', shareable=True, dev='vdb',
                 readonly=False, snapshot=None):
        return RBD_DISK.format(
            cache=" cache='%s'" % cache if cache else '',
            secret=self.stack.secret_uuid, spec=spec,
            port=self.stack.ceph.port, dev=dev,
            shareable='<shareable/>' if shareable else '',
            readonly='<readonly/>' if readonly else '',
            snapshot="<snapshot name='%s'/>" % snapshot if snapshot else '')

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


def test_read_only_sharing_starts_and_a_writer_is_refused(hook_env):
    """Domains that only read an image share it safely, cache or not."""
    hook_env.set_mode('deny')
    spec = hook_env.volume()
    hook_env.stack.ceph.rbd('snap', 'create', spec + '@base')
    readers = {
        'instance-hook-ro1': hook_env.rbd_disk(spec, shareable=False,
                                               readonly=True),
        'instance-hook-ro2': hook_env.rbd_disk(spec, shareable=False,
                                               readonly=True),
        # A snapshot never changes (QEMU opens one only read-only, libvirt
        # needs <readonly/>), even with <shareable/> and a cache.
        'instance-hook-snap1': hook_env.rbd_disk(spec, snapshot='base',
                                                 readonly=True),
        'instance-hook-snap2': hook_env.rbd_disk(spec, snapshot='base',
                                                 readonly=True),
    }
    try:
        for name, disk in readers.items():
            dom = hook_env.define(name, [disk])
            assert _start_error(dom) is None, name
            assert dom.isActive(), name
        # A writer of the image the readers use makes it shared.
        dom = hook_env.define('instance-hook-rw', [hook_env.rbd_disk(
            spec, shareable=False)])
        error = _start_error(dom)
        assert error and 'also used by running domain(s) instance-hook-ro1 ' \
            '(read-only), instance-hook-ro2 (read-only)' in error, error
        assert not dom.isActive()
    finally:
        for name in readers:
            try:
                dom = hook_env.connection.lookupByName(name)
            except Exception:
                continue        # never defined: an earlier assert failed
            if dom.isActive():
                dom.destroy()


def test_an_override_in_a_config_dir_reaches_the_hook(hook_env, tmp_path):
    """nova.conf says warn; nova.conf.d says deny: the hook denies."""
    hook_env.set_mode('warn')
    conf_d = tmp_path / 'nova.conf.d'
    conf_d.mkdir()
    (conf_d / '50-hook.conf').write_text('[shared_cache]\nhook_mode = deny\n')
    assert hook_env.manage('--config-dir', str(conf_d), 'install-hook',
                           '--reload')[0] == 0
    try:
        dom = hook_env.define('instance-hook-confdir',
                              [hook_env.rbd_disk(hook_env.volume())])
        error = _start_error(dom)
        assert error is not None, 'the domain started: nova.conf.d unread'
        assert 'refuses the start of domain instance-hook-confdir' in error
    finally:
        assert hook_env.manage('install-hook', '--reload')[0] == 0


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


def _qemu_direct(dom):
    disk = domxml.rbd_disks(domxml.parse(dom.XMLDesc(0)))[0]
    return qmp.live_cache(qmp.Monitor(dom).block_nodes(), disk)['direct']


def test_a_live_fixed_disk_stays_fixed(hook_env):
    """A plain caching disk switched by fix --live stays switched.

    Through save/restore, managed save and an incoming migration's XML:
    the hook reads the record in the domain's metadata.
    """
    import libvirt
    hook_env.set_mode('warn')       # let the accidental sharing start
    spec = hook_env.volume()
    plain = hook_env.rbd_disk(spec, shareable=False)
    dom = hook_env.define('instance-hook-livefixed', [plain])
    other = hook_env.define('instance-hook-livefixed-peer', [plain])
    assert _start_error(dom) is None and _start_error(other) is None
    code, out, err = hook_env.manage(
        'fix', '--live', '--no-ceph', '--json', '--domain', dom.name())
    assert code == 0, (out, err)
    (result,) = [r for r in json.loads(out)['results']
                 if r['domain'] == dom.name()]
    assert result['state'] == 'switched', result
    other.destroy()                 # the sharing that made it shared ends
    # libvirt still shows the old mode; QEMU runs direct.
    live = domxml.rbd_disks(domxml.parse(dom.XMLDesc(0)))[0]
    assert (live.cache, live.shareable) == ('writeback', False)
    assert _qemu_direct(dom) is True
    migratable = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE).encode()
    hook_env.set_mode('fix')

    saved = os.path.join(hook_env.work, 'livefixed.save')
    dom.save(saved)
    try:
        hook_env.connection.restore(saved)
    finally:
        os.unlink(saved)
    dom = hook_env.connection.lookupByName(dom.name())
    assert _qemu_direct(dom) is True, 'restored with the cache on'

    dom.managedSave()
    assert dom.hasManagedSaveImage()
    assert _start_error(dom) is None
    assert _qemu_direct(dom) is True, 'managed save resumed with the cache on'

    proc = _run_hook([dom.name(), 'migrate', 'begin', '-'], migratable)
    assert proc.returncode == 0, proc.stderr
    (moved,) = domxml.rbd_disks(domxml.parse(proc.stdout))
    assert (moved.cache, moved.shareable) == ('none', True)
    assert b'fix --live' in proc.stderr

    code, out, err = hook_env.manage('audit', '--no-ceph', '--json',
                                     '--domain', dom.name())
    (row,) = json.loads(out)['disks']
    assert row['recorded'] == 'none'
    assert "switched to cache='none' by fix --live" in row['shared_by']
    assert (code, row['findings']) == (0, []), (out, err)
    assert result['recorded'] == {'live': 'recorded', 'config': 'recorded'}
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


# -- the hook fails open: its environment broken under a running libvirtd --

TREE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _package_source():
    """The wheel tox installed here, else the source tree."""
    import importlib.metadata
    import json
    import urllib.parse
    try:
        direct = json.loads(importlib.metadata.distribution(
            'nova-shared-cache').read_text('direct_url.json') or '{}')
    except importlib.metadata.PackageNotFoundError:
        direct = {}
    path = urllib.parse.urlparse(direct.get('url', '')).path
    return path if path.endswith('.whl') and os.path.exists(path) else TREE


@pytest.fixture(scope='module')
def throwaway_venv(tmp_path_factory):
    """A venv with nova-shared-cache and its dependencies pip-installed."""
    venv = str(tmp_path_factory.mktemp('hookvenv') / 'venv')
    subprocess.run([sys.executable, '-m', 'venv', venv], check=True,
                   capture_output=True, timeout=300)
    proc = subprocess.run(
        [os.path.join(venv, 'bin', 'pip'), 'install', '-q',
         '--disable-pip-version-check', _package_source()],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture
def venv_hook(hook_env, throwaway_venv):
    """The real hook, written by the throwaway venv's own install-hook.

    The module's hook is put back afterwards, whatever happens.
    """
    try:
        proc = subprocess.run(
            [os.path.join(throwaway_venv, 'bin', 'nova-shared-cache'),
             '--config-file', hook_env.conf_path, 'install-hook',
             '--reload'], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        yield throwaway_venv
    finally:
        assert hook_env.manage('install-hook', '--reload')[0] == 0


def _qemu_pid(name):
    with open('/run/libvirt/qemu/%s.pid' % name) as f:
        return int(f.read().strip())


def test_a_hook_whose_package_or_venv_is_gone_allows_starts(
        hook_env, venv_hook):
    hook_env.set_mode('deny')
    with open(HOOK) as f:
        assert os.path.join(venv_hook, 'bin', 'python') in f.read()
    dom = hook_env.define('instance-hook-venv',
                          [hook_env.rbd_disk(hook_env.volume())])
    args = ['instance-hook-venv', 'prepare', 'begin', '-']
    xml = dom.XMLDesc(0).encode()
    # While the venv is whole, the hook judges (and refuses).
    error = _start_error(dom)
    assert error and 'refuses the start' in error, error
    # The package uninstalled from that venv: the hook cannot judge.
    subprocess.run([os.path.join(venv_hook, 'bin', 'pip'), 'uninstall',
                    '-y', '-q', 'nova-shared-cache'], check=True,
                   capture_output=True, timeout=120)
    proc = _run_hook(args, xml)
    assert (proc.returncode, proc.stdout) == (0, b''), proc.stderr
    assert b'allowed unchecked: it failed with exit status 1' in proc.stderr
    assert b'install-hook --uninstall' in proc.stderr
    assert _start_error(dom) is None
    assert dom.isActive()
    dom.destroy()
    # The venv deleted.
    shutil.rmtree(venv_hook)
    proc = _run_hook(args, xml)
    assert (proc.returncode, proc.stdout) == (0, b''), proc.stderr
    assert b'its Python interpreter' in proc.stderr
    assert _start_error(dom) is None
    assert dom.isActive()
    dom.destroy()


def test_libvirtd_restart_with_a_broken_hook_keeps_vms_running(
        hook_env, tmp_path):
    import libvirt

    from nova_shared_cache import hookinstall
    from nova_shared_cache_lab import common
    # An interpreter that fails whatever it is asked (a package gone), and
    # notes each call.
    calls = tmp_path / 'calls'
    python = tmp_path / 'python'
    python.write_text('#!/bin/sh\ncat >/dev/null\necho "$*" >> %s\n'
                      'exit 1\n' % calls)
    python.chmod(0o755)
    # After ours (qemu.d runs in name order), a hook that notes what
    # libvirtd ran: once it has seen a reconnect, ours has answered.
    seen_by_libvirt = tmp_path / 'libvirt-ran'
    recorder = os.path.join(install_hook_cmd.HOOKS_DIR, 'qemu.d',
                            '99-nsc-test-recorder')
    hook_env.set_mode('deny')
    names = ['instance-hook-restart-1', 'instance-hook-restart-2']
    try:
        hookinstall.install(install_hook_cmd.HOOKS_DIR,
                            install_hook_cmd.HOOK_NAME,
                            hookinstall.render(str(python),
                                               [hook_env.conf_path]))
        hookinstall.install(install_hook_cmd.HOOKS_DIR, '99-nsc-test-recorder',
                            '#!/bin/sh\necho "$1 $2" >> %s\n'
                            % seen_by_libvirt)
        domains = [hook_env.define(names[0], []), hook_env.define(
            names[1], [hook_env.rbd_disk(hook_env.volume())])]
        for dom in domains:
            assert _start_error(dom) is None
        pids = {name: _qemu_pid(name) for name in names}
        hook_env.stack.libvirt.restart_libvirtd()
        try:
            hook_env.connection.close()
        except libvirt.libvirtError:
            pass
        hook_env.connection = libvirt.open('qemu:///system')
        hook_env.defined = [
            d for d in hook_env.connection.listAllDomains()
            if d.name() in {old.name() for old in hook_env.defined}]
        reconnects = ['%s reconnect' % name for name in names]
        common.wait_for(lambda: set(reconnects) <= set(
            seen_by_libvirt.read_text().splitlines()), 60,
            'libvirtd to run the hooks for reconnect')
        for name in names:
            dom = hook_env.connection.lookupByName(name)
            # Takes the domain's job: waits for the end of the reconnect
            # (which kills the QEMU when a hook failed).
            dom.memoryStats()
            assert dom.isActive(), name
            assert _qemu_pid(name) == pids[name], name
            os.kill(pids[name], 0)  # that QEMU process still runs
        # The hook ran (and failed) for both starts; Python never started
        # for reconnect.
        seen = calls.read_text().splitlines()
        assert [line.split(' -- ')[1] for line in seen] == [
            '%s prepare begin -' % name for name in names], seen
    finally:
        if os.path.exists(recorder):
            os.unlink(recorder)
        assert hook_env.manage('install-hook', '--reload')[0] == 0
        for name in names:
            try:
                hook_env.connection.lookupByName(name).destroy()
            except libvirt.libvirtError:
                pass
