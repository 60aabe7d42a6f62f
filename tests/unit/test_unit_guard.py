"""The unit suite's guard against real services (tests/unit/conftest.py).

Each test here provokes an attempt, checks that it was refused and
recorded, then clears the record so that the guard's own teardown check
passes.
"""

import io
import os
import subprocess
import types

import pytest

from nova_shared_cache import cephclient
from nova_shared_cache.cmd import manage
from nova_shared_cache import hostnet
from tests.unit import conftest


def refused(guard, call, *args, **kwargs):
    """The attempt ``call`` makes, refused and recorded.

    What reaches the caller may be RealServiceAccess or what the code in
    between made of it (cephclient turns it into a CephError).
    """
    with pytest.raises(Exception) as err:
        call(*args, **kwargs)
    attempts = list(guard.attempts)
    guard.attempts.clear()
    assert len(attempts) == 1, attempts
    assert 'unit test tried to %s' % attempts[0] in str(err.value)
    return attempts[0], err.value


def fake_bindings():
    """Modules shaped like libvirtmod and rados.

    They would 'connect' (and say so) if the guard let them.
    """
    connected = []
    libvirtmod = types.SimpleNamespace(**{
        name: (lambda *a, name=name: connected.append(name))
        for name in ('virConnectOpen', 'virConnectOpenReadOnly',
                     'virConnectOpenAuth')})

    class Rados:
        def __init__(self, conffile=None, rados_id=None, conf=None):
            self.rados_id = rados_id

        def connect(self, timeout=0):
            connected.append('Rados.connect')
    return libvirtmod, types.SimpleNamespace(Rados=Rados), connected


def test_bindings_are_guarded_below_libvirt_and_rados():
    libvirtmod, rados, connected = fake_bindings()
    guard = conftest.Guard()
    with pytest.MonkeyPatch.context() as patch:
        conftest.install(patch, guard, libvirtmod_module=libvirtmod,
                         rados_module=rados)
        for name in ('virConnectOpen', 'virConnectOpenReadOnly',
                     'virConnectOpenAuth'):
            attempt, _ = refused(guard, getattr(libvirtmod, name),
                                 'qemu:///system')
            assert attempt.startswith('open a libvirt connection (%s'
                                      % name)
        attempt, _ = refused(guard, rados.Rados(rados_id='cinder').connect)
        assert attempt == 'connect to Ceph (rados.Rados.connect as ' \
                          'client.cinder)'

    assert connected == []
    # Put back afterwards.
    libvirtmod.virConnectOpen('x')
    rados.Rados().connect()
    assert connected == ['virConnectOpen', 'Rados.connect']


def test_real_libvirt_is_guarded_where_importable(real_service_guard):
    libvirt = pytest.importorskip('libvirt')
    for opener in (libvirt.open, libvirt.openReadOnly):
        attempt, _ = refused(real_service_guard, opener, 'qemu:///system')
        assert attempt.startswith('open a libvirt connection')
    refused(real_service_guard, libvirt.openAuth, 'qemu:///system',
            [[], None, None], 0)


def test_ceph_connections_are_refused_in_every_env(real_service_guard,
                                                   tmp_path):
    # The real bindings where importable, a stand-in where not: the same
    # refusal either way.
    conffile = tmp_path / 'ceph.conf'
    conffile.write_text('[global]\nmon host = 127.0.0.1\n')
    client = cephclient.CephClient(str(conffile), 'cinder', 1)
    attempt, err = refused(real_service_guard, client.call, 'read',
                           lambda cluster: None)
    assert attempt.startswith('connect to Ceph')
    assert 'could not connect to Ceph as client.cinder' in str(err)


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """Harmless virsh, ceph and rbd first on PATH.

    If the guard let one through, it would only leave a mark.
    """
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    marks = tmp_path / 'ran'
    for name in ('virsh', 'ceph', 'rbd'):
        tool = bin_dir / name
        tool.write_text('#!/bin/sh\necho %s >> %s\n' % (name, marks))
        tool.chmod(0o755)
    monkeypatch.setenv('PATH', '%s:%s' % (bin_dir, os.environ['PATH']))
    yield bin_dir
    assert not marks.exists(), marks.read_text()


@pytest.mark.parametrize('args, shell', [
    (['virsh', 'list'], False),
    (['{bin}/ceph', '-s'], False),
    (['rbd', 'ls', 'volumes'], False),
    (['sudo', '-n', 'rbd', 'ls'], False),
    (['timeout', '5', 'virsh', 'list'], False),
    ('ceph health', True),
    (['sh', '-c', 'true && rbd ls'], False),
])
def test_subprocesses_to_ceph_and_libvirt_tools(real_service_guard, tools,
                                                args, shell):
    if not shell:
        args = [a.format(bin=tools) for a in args]
    attempt, err = refused(real_service_guard, subprocess.run, args,
                           shell=shell, capture_output=True)
    assert attempt.startswith('run ')
    assert isinstance(err, conftest.RealServiceAccess)


def test_os_level_process_calls(real_service_guard, tools):
    refused(real_service_guard, os.system, 'virsh list >/dev/null')
    refused(real_service_guard, os.posix_spawnp, 'ceph', ['ceph', '-s'],
            os.environ)
    refused(real_service_guard, os.spawnvp, os.P_WAIT, 'rbd', ['rbd'])


def test_other_subprocesses_run(real_service_guard):
    proc = subprocess.run(['sh', '-c', 'echo rbd ceph virsh'],
                          capture_output=True, text=True, check=True)
    assert proc.stdout == 'rbd ceph virsh\n'
    assert real_service_guard.attempts == []


def test_host_addresses_only_from_given_paths(real_service_guard, tmp_path):
    refused(real_service_guard, hostnet.local_addresses)
    (tmp_path / 'self' / 'net').mkdir(parents=True)
    (tmp_path / 'self' / 'net' / 'fib_trie').write_text('')
    assert hostnet.local_addresses(proc=str(tmp_path),
                                   run_dir=str(tmp_path / 'run'))


def test_a_command_that_swallows_the_refusal_is_still_caught(
        real_service_guard, tmp_path, monkeypatch):
    # main() turns every exception into exit status 2, which is what a
    # test of an error path expects: the record is what fails the test.
    conffile = tmp_path / 'ceph.conf'
    conffile.write_text('[global]\nmon host = 127.0.0.1\n')
    nova_conf = tmp_path / 'nova.conf'
    nova_conf.write_text('[shared_cache]\nceph_conf = %s\nceph_user = nova\n'
                         % conffile)
    monkeypatch.setattr(hostnet, 'local_addresses', lambda: frozenset())
    err = io.StringIO()
    rc = manage.main(['--config-file', str(nova_conf), 'status',
                      'volumes/x'], out=io.StringIO(), err=err)
    assert rc == 2
    assert 'unit test tried to connect to Ceph' in err.getvalue()
    assert len(real_service_guard.attempts) == 1
    with pytest.raises(pytest.fail.Exception):
        real_service_guard.check()
    real_service_guard.attempts.clear()


def test_a_caught_attempt_still_fails_the_test():
    guard = conftest.Guard()
    try:
        guard.refuse('open a libvirt connection (test)')
    except conftest.RealServiceAccess:
        pass
    with pytest.raises(pytest.fail.Exception) as err:
        guard.check()
    assert 'open a libvirt connection (test)' in str(err.value)


def test_command_names():
    assert conftest.command_names(['env', 'A=1', 'nice', '-n', '5', 'rbd',
                                   'ls']) == ['env', 'nice', 'rbd']
    assert conftest.command_names(['flock', '/tmp/ceph', 'true']) == [
        'flock', 'true']
    assert conftest.command_names(['grep', 'rbd', 'f']) == ['grep']
    assert conftest.command_names('a | virsh list', shell=True) == [
        'a', 'virsh']
