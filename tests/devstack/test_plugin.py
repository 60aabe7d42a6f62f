"""The devstack plugin, sourced and run phase by phase as devstack does.

``run-devstack`` reproduces stack.sh/unstack.sh/clean.sh's order, with
devstack's own steps that touch the same files (Cinder's enabled_backends,
the libvirt compute_driver, nova-cpu.conf copied from nova.conf when
nova-compute starts, the multiattach volume type). The ini functions are
stand-ins that edit the files the way devstack's do, so a wrong section or
key shows up in the files read back here.
"""

import configparser
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, 'run-devstack')
DRIVER = 'shared_cache.LibvirtSharedCacheDriver'
REPO = os.path.dirname(os.path.dirname(HERE))

NOVA_CONF = """[DEFAULT]
debug = True
compute_driver = libvirt.LibvirtDriver

[libvirt]
virt_type = qemu
"""
CINDER_CONF = """[DEFAULT]
enabled_backends = lvmdriver-1

[lvmdriver-1]
volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver
"""
TEMPEST_CONF = """[compute-feature-enabled]
live_migration = True
"""


class Devstack:

    def __init__(self, root, localrc=''):
        self.root = str(root)
        self.files = {
            'nova': os.path.join(self.root, 'etc/nova/nova.conf'),
            'cinder': os.path.join(self.root, 'etc/cinder/cinder.conf'),
            'tempest': os.path.join(self.root, 'etc/tempest/tempest.conf'),
        }
        for name, text in (('nova', NOVA_CONF), ('cinder', CINDER_CONF),
                           ('tempest', TEMPEST_CONF)):
            os.makedirs(os.path.dirname(self.files[name]), exist_ok=True)
            with open(self.files[name], 'w') as f:
                f.write(text)
        self.localrc = os.path.join(self.root, 'localrc')
        with open(self.localrc, 'w') as f:
            f.write(localrc)
        self.bin = os.path.join(self.root, 'bin')
        os.makedirs(self.bin)
        # The console script and Python devstack's venv would have. Python
        # is a wrapper, not a symlink: a symlinked venv python outside its
        # venv finds no pyvenv.cfg and runs as the system's python.
        os.symlink(shutil.which('nova-shared-cache', path=os.path.dirname(
            sys.executable)), os.path.join(self.bin, 'nova-shared-cache'))
        python = os.path.join(self.bin, 'python3')
        with open(python, 'w') as f:
            f.write('#!/bin/sh\nexec %s "$@"\n' % sys.executable)
        os.chmod(python, 0o755)
        self.hooks = os.path.join(self.root, 'hooks')

    def run(self, action, check=True, **env):
        environ = dict(os.environ, NSC_DEVSTACK_ROOT=self.root,
                       NSC_DEVSTACK_LOCALRC=self.localrc,
                       NSC_DEVSTACK_BIN=self.bin,
                       NOVA_SHARED_CACHE_HOOKS_DIR=self.hooks, **env)
        proc = subprocess.run(['bash', RUN, action], env=environ,
                              capture_output=True, text=True, timeout=600)
        if check:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def conf(self, name):
        # [DEFAULT] as an ordinary section: oslo.config does not copy its
        # options into the other sections the way configparser would.
        parser = configparser.RawConfigParser(
            strict=True, default_section='nsc-no-default-section')
        parser.optionxform = str
        path = self.files[name] if name in self.files else name
        with open(path) as f:
            parser.read_file(f)
        return parser

    def nova_cpu(self):
        return self.conf(os.path.join(self.root, 'etc/nova/nova-cpu.conf'))

    def texts(self):
        out = {}
        for path in list(self.files.values()) + [
                os.path.join(self.root, 'etc/nova/nova-cpu.conf')]:
            if os.path.exists(path):
                with open(path) as f:
                    out[path] = f.read()
        return out

    def calls(self):
        path = os.path.join(self.root, 'calls')
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()

    def types(self):
        path = os.path.join(self.root, 'volume-types.json')
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    @property
    def hook(self):
        return os.path.join(self.hooks, 'qemu.d', '50-nova-shared-cache')


def section(parser, name):
    return dict(parser[name]) if parser.has_section(name) else None


@pytest.fixture
def devstack(tmp_path):
    return Devstack(tmp_path)


def assert_configured(ds, mode='none'):
    for conf in (ds.conf('nova'), ds.nova_cpu()):
        assert conf['DEFAULT']['compute_driver'] == DRIVER
        assert section(conf, 'shared_cache') == {
            'cache_mode': mode, 'rbd_feature_policy': 'enforce',
            'sharing_guard': 'refuse', 'hook_mode': 'fix',
            'ceph_conf': '/etc/ceph/ceph.conf', 'ceph_timeout': '10'}
        assert conf['DEFAULT']['debug'] == 'True'
    tempest = ds.conf('tempest')
    assert tempest['compute-feature-enabled']['volume_multiattach'] == 'True'
    assert tempest['compute-feature-enabled']['live_migration'] == 'True'
    assert tempest['volume']['volume_type_multiattach'] == 'multiattach'


def test_stack_configures_nova_cinder_and_tempest(devstack):
    devstack.run('stack', NSC_DEVSTACK_SKIP_TYPES='1')
    assert_configured(devstack)
    # Without a choice in local.conf, Cinder's backend is ceph
    # (override-defaults, as devstack-plugin-ceph's).
    cinder = devstack.conf('cinder')
    assert cinder['DEFAULT']['enabled_backends'] == 'ceph'
    calls = devstack.calls()
    assert 'plugin_requires nova-shared-cache devstack-plugin-ceph' in calls
    assert not any(c.startswith('install_package') for c in calls)
    # The product only: the lab (the embedded stack) is for embedded mode.
    assert [c for c in calls if c.startswith('setup_develop')] == [
        'setup_develop %s' % REPO]
    # devstack did not create the type: the plugin did.
    assert devstack.types() == {'multiattach': {
        'multiattach': '<is> True'}}
    # The hook is installed, pointing at nova-cpu.conf.
    with open(devstack.hook) as f:
        hook = f.read()
    assert os.access(devstack.hook, os.X_OK)
    assert '--config-file %s' % os.path.join(
        devstack.root, 'etc/nova/nova-cpu.conf') in hook


def test_nova_cpu_conf_is_a_copy_made_after_post_config(devstack):
    """devstack writes nova-cpu.conf from nova.conf after post-config.

    Options written only into nova-cpu.conf during post-config would be
    lost; the plugin writes them into nova.conf.
    """
    devstack.run('stack')
    assert devstack.nova_cpu()['DEFAULT']['compute_driver'] == DRIVER


def test_settings_from_local_conf(tmp_path):
    ds = Devstack(tmp_path, localrc=(
        'NOVA_SHARED_CACHE_MODE=directsync\n'
        'NOVA_SHARED_CACHE_HOOK_MODE=deny\n'
        'NOVA_SHARED_CACHE_CEPH_USER=nova\n'
        'NOVA_SHARED_CACHE_INSTALL_HOOK=no\n'
        'CINDER_ENABLED_BACKENDS=lvm:lvmdriver-1\n'))
    ds.run('stack')
    conf = ds.nova_cpu()
    assert conf['shared_cache']['cache_mode'] == 'directsync'
    assert conf['shared_cache']['hook_mode'] == 'deny'
    assert conf['shared_cache']['ceph_user'] == 'nova'
    assert not os.path.exists(ds.hook)
    # A local.conf without ceph gets it added, its own backends kept.
    assert ds.conf('cinder')['DEFAULT']['enabled_backends'] == \
        'lvmdriver-1,ceph'


def test_stack_twice_is_idempotent(devstack):
    devstack.run('stack')
    first = devstack.texts()
    devstack.run('stack')
    assert devstack.texts() == first
    assert devstack.types() == {'multiattach': {
        'multiattach': '<is> True'}}


def test_unstack_removes_the_hook_and_clean_undoes_the_rest(devstack):
    before = {name: devstack.conf(name) for name in ('nova', 'tempest')}
    devstack.run('stack')
    devstack.run('unstack')
    assert not os.path.exists(devstack.hook)
    # unstack keeps the configuration.
    assert devstack.conf('nova')['DEFAULT']['compute_driver'] == DRIVER
    devstack.run('clean')
    nova = devstack.conf('nova')
    assert nova['DEFAULT']['compute_driver'] == 'libvirt.LibvirtDriver'
    assert not nova.has_section('shared_cache')
    assert {s: dict(nova[s]) for s in nova.sections()} == {
        s: dict(before['nova'][s]) for s in before['nova'].sections()}
    assert dict(nova['DEFAULT']) == dict(before['nova']['DEFAULT'])
    cpu = devstack.nova_cpu()
    assert cpu['DEFAULT']['compute_driver'] == 'libvirt.LibvirtDriver'
    assert not cpu.has_section('shared_cache')
    tempest = devstack.conf('tempest')
    assert {s: dict(tempest[s]) for s in tempest.sections()} == {
        s: dict(before['tempest'][s]) for s in before['tempest'].sections()}
    assert not os.path.exists(os.path.join(devstack.root, 'data',
                                           'nova-shared-cache-state'))


def test_existing_type_without_multiattach_stops_the_stack(devstack):
    with open(os.path.join(devstack.root, 'volume-types.json'), 'w') as f:
        json.dump({'multiattach': {'volume_backend_name': 'ceph'}}, f)
    proc = devstack.run('stack', check=False)
    assert proc.returncode != 0
    assert "Volume type multiattach exists without " \
        "multiattach='<is> True'" in proc.stderr


# -- the embedded mode, against a real single-node Ceph -------------------

def _embedded_cluster(root):
    from nova_shared_cache_lab import ceph
    return ceph.Cluster(root)


@pytest.mark.skipif(os.geteuid() != 0, reason='starts Ceph daemons: root')
def test_embedded_ceph_for_real(tmp_path):
    embedded = str(tmp_path / 'embedded')
    secret = 'd2a5b1c4-0c1e-4d6a-9b7f-3e8f2a6c5d10'
    ds = Devstack(tmp_path, localrc=(
        'NOVA_SHARED_CACHE_CEPH=embedded\n'
        'NOVA_SHARED_CACHE_EMBEDDED_DIR=%s\n'
        'NOVA_SHARED_CACHE_EMBEDDED_SECRET_UUID=%s\n' % (embedded, secret)))
    cluster = _embedded_cluster(embedded)
    try:
        ds.run('stack')
        assert cluster.is_up()
        calls = ds.calls()
        assert not any(c.startswith('plugin_requires') for c in calls)
        assert ('install_package ceph-mon ceph-osd ceph-mgr ceph-common '
                'python3-rados python3-rbd') in calls
        # The product, then the lab from this checkout, before the stack
        # command (which is the lab's) runs.
        develop = [c for c in calls if c.startswith('setup_develop')]
        assert develop == ['setup_develop %s' % REPO,
                           'setup_develop %s' % os.path.join(REPO, 'lab')]
        assert calls.index(develop[1]) < min(
            i for i, c in enumerate(calls)
            if c.startswith('sudo ') and 'nova_shared_cache_lab.stack' in c)
        client_conf = os.path.join(embedded, 'ceph', 'client', 'ceph.conf')
        cinder = ds.conf('cinder')
        assert section(cinder, 'ceph') == {
            'volume_backend_name': 'ceph',
            'volume_driver': 'cinder.volume.drivers.rbd.RBDDriver',
            'rbd_ceph_conf': client_conf, 'rbd_pool': 'volumes',
            'rbd_user': 'cinder', 'rbd_secret_uuid': secret}
        assert cinder['DEFAULT']['enabled_backends'] == 'ceph'
        for nova in (ds.conf('nova'), ds.nova_cpu()):
            assert nova['libvirt']['rbd_user'] == 'cinder'
            assert nova['libvirt']['rbd_secret_uuid'] == secret
            assert nova['shared_cache']['ceph_conf'] == client_conf

        # What Cinder's RBD driver does with these values works: the user's
        # keyring through rbd_ceph_conf, on rbd_pool.
        rbd = ['rbd', '-c', cinder['ceph']['rbd_ceph_conf'], '--id',
               cinder['ceph']['rbd_user'], '-p', cinder['ceph']['rbd_pool']]
        subprocess.run(rbd + ['create', '--size', '8', 'devstack-probe'],
                       check=True, capture_output=True, timeout=60)
        listed = subprocess.run(rbd + ['ls'], check=True, text=True,
                                capture_output=True, timeout=60).stdout
        assert 'devstack-probe' in listed.split()
        # libvirt has the ceph secret under the uuid Cinder and Nova name
        # (private: its value cannot be read back, by design).
        dumped = subprocess.run(['virsh', '-q', 'secret-dumpxml', secret],
                                text=True, capture_output=True, timeout=30)
        assert dumped.returncode == 0, dumped.stderr
        assert "<usage type='ceph'>" in dumped.stdout
        assert "private='yes'" in dumped.stdout

        ds.run('stack')      # a second stack keeps the cluster and values
        assert cluster.is_up()
        assert section(ds.conf('cinder'), 'ceph')['rbd_secret_uuid'] == \
            secret

        ds.run('unstack')
        assert not cluster.is_up()
        gone = subprocess.run(['virsh', '-q', 'secret-list'], text=True,
                              capture_output=True, timeout=30).stdout
        assert secret not in gone
        ds.run('clean')
        assert not os.path.exists(embedded)
        assert not ds.conf('cinder').has_section('ceph')
        assert not ds.conf('nova').has_option('libvirt', 'rbd_user')
    finally:
        if cluster.is_up():
            cluster.down()


DEBIAN_LIBVIRT = ('install_package qemu-system libvirt-clients '
                  'libvirt-daemon-system libvirt-dev python3-libvirt '
                  'systemd-coredump')


def test_devstack_installs_libvirt_by_default(devstack):
    """Without the option, devstack's own install_libvirt runs.

    On bookworm that adds backports and the spice module.
    """
    devstack.run('stack', NSC_DEVSTACK_SKIP_TYPES='1')
    calls = devstack.calls()
    assert 'devstack: install_libvirt' in calls
    assert 'devstack: enable_debian_12_backports' in calls
    assert DEBIAN_LIBVIRT not in calls


def test_distro_libvirt_on_bookworm(tmp_path):
    """NOVA_SHARED_CACHE_DISTRO_LIBVIRT=True: Debian 12's own packages.

    No backports and no qemu-system-modules-spice, which only backports
    has (the real stack.sh died on it when only the backports were cut).
    """
    ds = Devstack(tmp_path, localrc='NOVA_SHARED_CACHE_DISTRO_LIBVIRT=True\n')
    proc = ds.run('stack', NSC_DEVSTACK_SKIP_TYPES='1')
    calls = ds.calls()
    assert not [c for c in calls if c.startswith('devstack: ')], calls
    assert not [c for c in calls if 'spice' in c or 'backports' in c]
    assert DEBIAN_LIBVIRT in calls
    assert 'install_package ovmf swtpm swtpm-tools mdevctl' in calls
    edit = [c for c in calls if c.startswith('edit-constraints')]
    assert edit == ['edit-constraints %s/requirements/upper-constraints.txt '
                    '-- libvirt-python' % ds.root]
    assert 'bookworm-backports not added' in proc.stdout


def test_distro_libvirt_elsewhere_changes_nothing(tmp_path):
    ds = Devstack(tmp_path, localrc='NOVA_SHARED_CACHE_DISTRO_LIBVIRT=True\n')
    ds.run('stack', NSC_DEVSTACK_SKIP_TYPES='1',
           NSC_DEVSTACK_DISTRO='trixie')
    calls = ds.calls()
    assert 'devstack: install_libvirt' in calls
    assert 'devstack: install_package qemu-system-modules-spice' in calls
    assert DEBIAN_LIBVIRT not in calls


@pytest.mark.parametrize('shown, multiattach', [
    # python-openstackclient 10.5 (what the real stack.sh ran: the plugin
    # matched the old string and stopped the stack on a good type).
    ({'properties': {'multiattach': '<is> True'}}, True),
    ({'properties': {'multiattach': '<is> True',
                     'volume_backend_name': 'ceph'}}, True),
    ({'properties': {'volume_backend_name': 'ceph'}}, False),
    ({'properties': {'multiattach': 'False'}}, False),
    ({'properties': {}}, False),
    # Older clients: one string.
    ({'properties': "multiattach='<is> True', volume_backend_name='ceph'"},
     True),
    ({'properties': "volume_backend_name='ceph'"}, False),
])
def test_multiattach_property_of_either_client(shown, multiattach):
    lib = os.path.join(REPO, 'devstack', 'lib', 'nova-shared-cache')
    proc = subprocess.run(
        ['bash', '-c', 'source "$1"; _nova_shared_cache_is_multiattach "$2"',
         'test', lib, json.dumps(shown)], capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == (0 if multiattach else 1), proc.stderr


def _source_tree_nova(root):
    """A Nova as setup_develop leaves it: a regular package on the path."""
    tree = os.path.join(str(root), 'nova-src')
    for sub in ('nova', os.path.join('nova', 'virt')):
        os.makedirs(os.path.join(tree, sub))
        open(os.path.join(tree, sub, '__init__.py'), 'w').close()
    return tree


def test_shim_linked_into_a_source_tree_nova(devstack, tmp_path):
    """A Nova in develop mode gets the shim linked into its source tree.

    nova.virt comes from that tree alone, so the shim installed with the
    package is not found there (the real stack.sh: "No module named
    'nova.virt.shared_cache'").
    """
    tree = _source_tree_nova(tmp_path)
    link = os.path.join(tree, 'nova', 'virt', 'shared_cache')
    proc = devstack.run('stack', NSC_DEVSTACK_SKIP_TYPES='1',
                        PYTHONPATH=tree)
    assert 'Linking the nova-shared-cache shim into %s' % os.path.dirname(
        link) in proc.stderr
    assert os.path.islink(link)
    assert os.readlink(link) == os.path.join(REPO, 'nova', 'virt',
                                             'shared_cache')
    found = subprocess.run(
        [sys.executable, '-c', 'import importlib.util as u; '
         'print(u.find_spec("nova.virt.shared_cache").origin)'],
        env=dict(os.environ, PYTHONPATH=tree), cwd='/', capture_output=True,
        text=True, timeout=60)
    assert found.stdout.strip() == os.path.join(link, '__init__.py')
    devstack.run('clean', PYTHONPATH=tree)
    assert not os.path.lexists(link)


def test_shim_left_alone_where_nova_finds_it(devstack):
    proc = devstack.run('stack', NSC_DEVSTACK_SKIP_TYPES='1')
    assert 'Linking the nova-shared-cache shim' not in proc.stderr
    assert 'Installing nova-shared-cache' in proc.stderr
    assert not os.path.exists(os.path.join(
        devstack.root, 'data', 'nova-shared-cache-state', 'links'))
