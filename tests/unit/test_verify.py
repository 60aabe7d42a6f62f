"""verify: the in-guest protocol (run by busybox here), parsing, outcome,
cleanup, the image's module list and the command line."""

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import types
from unittest import mock

import pytest

from nova_shared_cache.cmd import manage
from nova_shared_cache import exception
from nova_shared_cache.verify import guest
from nova_shared_cache.verify import image
from nova_shared_cache.verify import runner

BUSYBOX = shutil.which('busybox')
needs_busybox = pytest.mark.skipif(BUSYBOX is None,
                                   reason='busybox is not installed')

#: A read cache below the reader, in shell: every O_DIRECT read of the
#: shared "disk" is answered from the first answer for that block. It is
#: what librbd's cache does for a block it has read (the protocol's own
#: scratch writes keep whole objects from being cached as absent).
CACHING_READS = r"""
mkdir -p "$CACHE"
dd() {
  case " $* " in
    *" if=$dev "*)
      key=$(echo "$*" | sed 's/.* skip=\([0-9]*\) .*/\1/')
      if [ -f "$CACHE/$key" ]; then cat "$CACHE/$key"
      else busybox dd "$@" | tee "$CACHE/$key"; fi ;;
    *) busybox dd "$@" ;;
  esac
}
"""
NO_PAUSES = 'nap() { :; }\n'


@pytest.fixture
def disk():
    # O_DIRECT needs a file system that takes it (not every tmpfs does).
    work = tempfile.mkdtemp(prefix='nsc-verify-', dir='/var/tmp')
    path = os.path.join(work, 'shared.img')
    with open(path, 'wb') as f:
        f.truncate(guest.cells_needed(8) << 20)
    yield work, path
    shutil.rmtree(work)


def script(role, dev, probes, extra=''):
    # Each role gets its own temporary directory, as each guest has its
    # own /tmp.
    return (guest.PRELUDE
            + 'role=%s nonce=abc123 probes=%d dev=%s T=%s\n' % (
                role, probes, dev, os.path.join(os.path.dirname(dev), role))
            + extra + guest.PROTOCOL_SCRIPT)


def run_probes(work, dev, probes, roles=guest.ROLES, extra=None):
    procs = {}
    for role in roles:
        os.makedirs(os.path.join(work, role))
        env = dict(os.environ, CACHE=os.path.join(work, 'cache-' + role))
        procs[role] = subprocess.Popen(
            [BUSYBOX, 'sh', '-c', script(role, dev, probes,
                                         (extra or {}).get(role, ''))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env)
    outs = {}
    for role, proc in procs.items():
        outs[role] = proc.communicate(timeout=120)[0]
    return {role: guest.parse_console(out, 'abc123', role)
            for role, out in outs.items()}, outs


@needs_busybox
def test_protocol_on_a_coherent_disk_reads_every_token(disk):
    work, dev = disk
    logs, outs = run_probes(work, dev, 8)
    for role in guest.ROLES:
        assert logs[role].end == (4, 0, 0), outs[role]
        assert logs[role].barrier and not logs[role].errors
    for writer in guest.ROLES:
        row = guest.direction(logs, writer, 8)
        assert (row['fresh'], row['stale'], row['other'],
                row['timeout'], row['missing']) == (4, 0, 0, 0, 0)


@needs_busybox
def test_protocol_under_a_read_cache_reports_stale_never_a_stall(disk):
    """A caching reader: every probe is a proven stale read.

    None is a wait that runs out: the messages reach the reader through
    blocks it never read before.
    """
    work, dev = disk
    extra = {role: CACHING_READS for role in guest.ROLES}
    logs, outs = run_probes(work, dev, 6, extra=extra)
    for role in guest.ROLES:
        assert logs[role].end == (0, 3, 0), outs[role]
    for writer in guest.ROLES:
        row = guest.direction(logs, writer, 6)
        assert row['stale'] == 3 and row['timeout'] == 0, row
    report = runner.finish({'probes': {'requested': 6},
                            'directions': runner.directions(logs, 6)})
    assert report['exit_code'] == runner.STALE


@needs_busybox
def test_protocol_one_caching_reader_is_stale_in_its_direction_only(disk):
    work, dev = disk
    logs, outs = run_probes(work, dev, 4, extra={'B': CACHING_READS})
    # B reads what A writes (even probes): stale; A reads B's: fresh.
    assert guest.direction(logs, 'A', 4)['stale'] == 2
    assert guest.direction(logs, 'B', 4)['fresh'] == 2


@needs_busybox
def test_protocol_without_the_other_server_ends_with_an_error(disk):
    work, dev = disk
    logs, outs = run_probes(work, dev, 4, roles=('A',),
                            extra={'A': NO_PAUSES})
    log = logs['A']
    assert log.done and not log.barrier
    assert log.errors == ['server B never wrote its hello to the shared '
                          'volume'], outs['A']


def test_parse_console_keeps_only_this_run():
    text = ('boot noise\r\nNSCP - - BOOTED\r\n'
            'NSCP ffff00 A R 0 stale 5\r\n'          # another run
            'NSCP abc123 B R 0 fresh 5\r\n'          # the other server
            'NSCP abc123 A START probes=2 dev=/dev/vdb\r\n'
            'NSCP abc123 A BARRIER\n'
            'NSCP abc123 A W 0 3\n'
            'NSCP abc123 A R 1 stale 17\n'
            'NSCP abc123 A END 0 1 0\n')
    log = guest.parse_console(text, 'abc123', 'A')
    assert log.booted and log.started and log.barrier and log.done
    assert log.reads == {1: ('stale', 17)}
    assert log.writes == {0: 3}
    assert log.end == (0, 1, 0)


def test_parse_console_reports_errors_before_the_run_is_known():
    log = guest.parse_console(
        'NSCP - - BOOTED\nNSCP - - ERROR no config drive (x)\n'
        'NSCP - - END 0 0 0\n', 'abc123', 'A')
    assert log.errors == ['no config drive (x)']


def _logs(reads_a, reads_b):
    return {'A': guest.GuestLog('A', reads=reads_a),
            'B': guest.GuestLog('B', reads=reads_b)}


def _report(logs, probes, error=None):
    return runner.finish({'probes': {'requested': probes}, 'error': error,
                          'directions': runner.directions(logs, probes)})


def test_outcome_coherent_stale_and_error():
    fresh = _logs({1: ('fresh', 3)}, {0: ('fresh', 4)})
    assert _report(fresh, 2)['exit_code'] == runner.COHERENT
    stale = _logs({1: ('fresh', 3)}, {0: ('stale', 4)})
    report = _report(stale, 2)
    assert (report['exit_code'], report['result']) == (runner.STALE, 'stale')
    assert report['directions']['A->B']['stale_probes'] == [0]
    # Stale reads are the finding even when the run ended in an error.
    assert _report(stale, 2, error='boom')['exit_code'] == runner.STALE
    missing = _logs({1: ('fresh', 3)}, {})
    report = _report(missing, 2)
    assert report['exit_code'] == runner.ERROR
    assert report['problems'] == ['1 probes did not finish']
    other = _logs({1: ('other', 3)}, {0: ('fresh', 4)})
    assert _report(other, 2)['exit_code'] == runner.ERROR
    assert runner.finish({'probes': {'requested': 2}, 'error': 'x',
                          'directions': None})['exit_code'] == runner.ERROR


def test_direction_timings_in_milliseconds():
    logs = _logs({}, {0: ('fresh', 10), 2: ('fresh', 30), 4: ('fresh', 20)})
    row = guest.direction(logs, 'A', 6)
    assert (row['median_ms'], row['max_ms']) == (200, 300)


def test_user_data_and_volume_size():
    text = guest.user_data('B', 'abc123', 'v-1', 40)
    assert 'role=B\n' in text and 'probes=40\n' in text
    assert text.startswith('nsc_probe=%d\n' % guest.PROTOCOL)
    with pytest.raises(ValueError):
        guest.user_data('C', 'abc123', 'v-1', 4)
    assert guest.cells_needed(40) == 123


# -- the run against a fake cloud -------------------------------------------

def _fake_conn(multiattach=True, attach_error=None, properties=None):
    conn = mock.MagicMock()
    props = ({runner.IMAGE_PROPERTY: str(guest.PROTOCOL)}
             if properties is None else properties)
    conn.image.find_image.return_value = types.SimpleNamespace(
        id='img', name='probe', properties=props, status='active',
        min_disk=1, min_ram=128)
    conn.compute.flavors.return_value = [types.SimpleNamespace(
        id='f1', name='tiny', ram=128, disk=1, vcpus=1)]
    volume = types.SimpleNamespace(id='vol', name='v', volume_type='t',
                                   size=1, is_multiattach=multiattach,
                                   status='available', attachments=[])
    conn.block_storage.create_volume.return_value = volume
    conn.block_storage.wait_for_status.return_value = volume
    conn.block_storage.find_volume.return_value = volume
    conn.compute.create_server_group.return_value = types.SimpleNamespace(
        id='grp', name='g')
    servers = iter([types.SimpleNamespace(id='s%d' % n, name='n%d' % n,
                                          status='ACTIVE', host_id='h',
                                          compute_host=None)
                    for n in range(2)])
    made = {}

    def create_server(**attrs):
        server = next(servers)
        made[server.id] = server
        return server
    conn.compute.create_server.side_effect = create_server
    conn.compute.get_server.side_effect = lambda sid: made[sid]
    if attach_error:
        conn.compute.create_volume_attachment.side_effect = attach_error
    return conn


def _options(**kw):
    return runner.Options(probes=4, **kw)


def test_a_failure_mid_run_deletes_everything_made():
    conn = _fake_conn(attach_error=RuntimeError('attach broke'))
    report = runner.verify(_options(), conn=conn, say=lambda t: None)
    assert report['exit_code'] == runner.ERROR
    assert 'attach broke' in report['error']
    deleted = sorted((r['type'], r['id']) for r in
                     report['cleanup']['deleted'])
    assert deleted == [('server', 's0'), ('server', 's1'),
                       ('server_group', 'grp'), ('volume', 'vol')]
    assert report['cleanup']['left'] == []
    assert conn.compute.delete_server.call_count == 2
    conn.block_storage.delete_volume.assert_called_once()


def test_ctrl_c_mid_run_deletes_everything_made():
    conn = _fake_conn(attach_error=KeyboardInterrupt())
    report = runner.verify(_options(), conn=conn, say=lambda t: None)
    assert report['error'] == 'interrupted (Ctrl-C)'
    assert len(report['cleanup']['deleted']) == 4


def test_keep_leaves_everything_and_lists_it():
    conn = _fake_conn(attach_error=RuntimeError('x'))
    report = runner.verify(_options(keep=True), conn=conn,
                           say=lambda t: None)
    conn.compute.delete_server.assert_not_called()
    assert len(report['cleanup']['left']) == 4


def test_a_volume_type_without_multiattach_is_named():
    conn = _fake_conn(multiattach=False)
    report = runner.verify(_options(volume_type='t'), conn=conn,
                           say=lambda t: None)
    assert report['exit_code'] == runner.ERROR
    assert 'of type t is not multiattach' in report['error']
    assert "multiattach='<is> True'" in report['error']
    conn.compute.create_server.assert_not_called()
    assert report['cleanup']['deleted'] == [
        {'type': 'volume', 'id': 'vol', 'name': 'v'}]


def test_an_image_that_is_not_a_probe_image_is_named():
    conn = _fake_conn(properties={})
    report = runner.verify(_options(image='cirros'), conn=conn,
                           say=lambda t: None)
    assert 'cirros' in report['error']
    assert 'build-probe-image --upload' in report['error']
    conn.block_storage.create_volume.assert_not_called()


# -- the image's kernel modules ----------------------------------------------

def _module(tree, rel, depends):
    path = os.path.join(tree, 'lib', 'modules', '6.1.0-9-cloud-amd64',
                        'kernel', rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(b'\x7fELF...\0license=GPL\0depends=%s\0vermagic=6.1\0'
                % depends.encode())


def test_module_closure_puts_dependencies_first(tmp_path):
    tree = str(tmp_path)
    _module(tree, 'drivers/scsi/sr_mod.ko', 'scsi_mod,cdrom')
    _module(tree, 'drivers/scsi/scsi_mod.ko', 'scsi_common')
    _module(tree, 'drivers/scsi/scsi_common.ko', '')
    _module(tree, 'drivers/cdrom/cdrom.ko', '')
    _module(tree, 'fs/isofs/isofs.ko', 'cdrom')
    with open(os.path.join(tree, 'lib', 'modules', '6.1.0-9-cloud-amd64',
                           'modules.builtin'), 'w') as f:
        f.write('kernel/drivers/acpi/button.ko\n')
    names = [os.path.basename(p) for p in image.module_closure(
        tree, ['sr_mod', 'isofs', 'button'])]
    assert names == ['scsi_common.ko', 'scsi_mod.ko', 'cdrom.ko',
                     'sr_mod.ko', 'isofs.ko']
    with pytest.raises(exception.ProbeImageError, match='ahci'):
        image.module_closure(tree, ['ahci'])


def test_probe_image_properties_ask_for_what_the_probe_needs():
    props = image.glance_properties()
    assert props['img_config_drive'] == 'mandatory'
    assert props['hw_machine_type'] == 'pc'
    assert props[runner.IMAGE_PROPERTY] == str(guest.PROTOCOL)


# -- the command line ------------------------------------------------------

def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = manage.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_verify_host_must_be_given_twice():
    code, out, err = _main('verify', '--host', 'h1', '--json')
    assert code == 2
    assert 'given twice' in json.loads(out)['error']


@pytest.mark.parametrize('value', ['1', 'x', '5000'])
def test_verify_probes_out_of_range(value):
    code, out, err = _main('verify', '--probes', value)
    assert code == 2 and '--probes must be a whole number' in err


def test_verify_renders_a_report():
    report = _report(_logs({1: ('fresh', 3)}, {0: ('stale', 4)}), 2)
    report.update(servers=[], timings_s={'total_s': 1.0}, cleanup={
        'deleted': [], 'left': []})
    text = runner.render(report)
    lines = text.splitlines()
    assert lines[0] == 'nova-shared-cache verify: stale (exit 1)'
    assert lines[2].split()[:4] == ['A->B', '1', '0', '1']
    assert lines[3].split()[:4] == ['B->A', '1', '1', '0']


def _attaching_conn(consoles):
    """A fake cloud on which attaching works and consoles say ``consoles``."""
    conn = _fake_conn()
    conn.block_storage.get_volume.return_value = types.SimpleNamespace(
        id='vol', status='in-use',
        attachments=[{'server_id': 's0'}, {'server_id': 's1'}])
    conn.compute.get_server_console_output.side_effect = (
        lambda server: {'output': consoles[server.id]})
    return conn


def _console(nonce, role, reads):
    lines = ['NSCP - - BOOTED', 'NSCP %s %s START probes=4' % (nonce, role),
             'NSCP %s %s BARRIER' % (nonce, role)]
    lines += ['NSCP %s %s R %d %s 12' % (nonce, role, i, v)
              for i, v in reads.items()]
    counts = [sum(v == k for v in reads.values())
              for k in ('fresh', 'stale', 'other')]
    lines.append('NSCP %s %s END %d %d %d' % ((nonce, role) + tuple(counts)))
    return '\r\n'.join(lines) + '\r\n'


def test_a_whole_run_on_a_fake_cloud_reads_both_consoles():
    consoles = {'s0': _console('n1', 'A', {1: 'fresh', 3: 'fresh'}),
                's1': _console('n1', 'B', {0: 'stale', 2: 'fresh'})}
    conn = _attaching_conn(consoles)
    report = runner.verify(_options(poll_interval=0), conn=conn,
                           say=lambda t: None, nonce='n1')
    assert report['exit_code'] == runner.STALE, report
    assert report['directions']['A->B']['stale_probes'] == [0]
    assert report['directions']['B->A']['fresh'] == 2
    assert report['same_host'] is True
    # The user data each server got names its role and this run.
    datas = [kw['user_data'] for _, kw in
             conn.compute.create_server.call_args_list]
    assert [base64.b64decode(d).decode().split('\n')[1] for d in datas] == [
        'role=A', 'role=B']
    assert all(kw['networks'] == 'none' and kw['config_drive'] for _, kw in
               conn.compute.create_server.call_args_list)
    assert len(report['cleanup']['deleted']) == 4


def test_a_server_that_prints_nothing_is_named():
    conn = _attaching_conn({'s0': 'grub noise\n', 's1': ''})
    report = runner.verify(_options(poll_interval=0, boot_timeout=0),
                           conn=conn, say=lambda t: None, nonce='n1')
    assert report['exit_code'] == runner.ERROR
    assert 'server A printed nothing of the probe' in report['error']
    assert 'is nova-shared-cache-probe a probe image' in report['error']
    assert len(report['cleanup']['deleted']) == 4


def test_verify_json_is_one_document_on_stdout(capsys):
    consoles = {'s0': _console('n1', 'A', {1: 'fresh', 3: 'fresh'}),
                's1': _console('n1', 'B', {0: 'fresh', 2: 'fresh'})}
    conn = _attaching_conn(consoles)
    with mock.patch.object(runner, 'connect', return_value=conn), \
            mock.patch.object(runner.secrets, 'token_hex', return_value='n1'):
        code, out, err = _main('verify', '--probes', '4', '--json')
    doc = json.loads(out)
    assert code == doc['exit_code'] == runner.COHERENT
    assert (doc['schema'], doc['result'], doc['meaning']) == (
        runner.SCHEMA, 'coherent', 'coherent')
    assert doc['probes']['fresh'] == 4
    # Progress goes to stderr, never into the document.
    assert 'verify: creating volume' in capsys.readouterr().err


def test_verify_json_when_the_login_fails():
    with mock.patch.object(runner, 'connect', side_effect=(
            exception.VerifyError(reason='cannot log in to the cloud x'))):
        code, out, err = _main('verify', '--json')
    doc = json.loads(out)
    assert code == doc['exit_code'] == 2
    assert doc['error'] == 'verify: cannot log in to the cloud x'
    assert doc['command'] == 'verify'


def test_hosts_place_each_server_and_skip_the_group():
    consoles = {'s0': _console('n1', 'A', {1: 'fresh'}),
                's1': _console('n1', 'B', {0: 'fresh'})}
    conn = _attaching_conn(consoles)
    report = runner.verify(runner.Options(probes=2, poll_interval=0,
                                          hosts=['cmp1', 'cmp2']),
                           conn=conn, say=lambda t: None, nonce='n1')
    assert report['exit_code'] == runner.COHERENT, report
    calls = [kw for _, kw in conn.compute.create_server.call_args_list]
    assert [kw['host'] for kw in calls] == ['cmp1', 'cmp2']
    assert not any('scheduler_hints' in kw for kw in calls)
    conn.compute.create_server_group.assert_not_called()
