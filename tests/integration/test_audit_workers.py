"""audit --workers on real running QEMU domains and the real Ceph.

Eight persistent TCG domains in pairs on four RBD images (two pairs as Nova
makes a multiattach disk, two caching without ``<shareable/>``), and one
shut-off domain whose image does not exist (a Ceph error in the report).
The guests boot no OS: QEMU runs with the disk open and answers QMP. The
concurrent audit must report exactly what the sequential one reports, in
the same order; a stopped QEMU (SIGSTOP) or a stopped OSD must cost only
the rows that need them, within one bound, not one bound per row.
"""

import io
import json
import os
import signal
import threading
import time
import uuid

import pytest

from nova_shared_cache.cmd import manage
from nova_shared_cache.libvirt import qmp
from nova_shared_cache_lab import ceph as embedded_ceph
from nova_shared_cache_lab import compute as compute_harness
from nova_shared_cache_lab import virt

NAME = compute_harness.DOMAIN_PREFIX + 'a0d2%04x'
DOMAIN = """<domain type='qemu'>
  <name>%(name)s</name>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='%(cache)s'/>
      <auth username='%(user)s'><secret type='ceph' uuid='%(secret)s'/></auth>
      <source protocol='rbd' name='%(image)s'>
        <host name='127.0.0.1' port='%(port)s'/>
      </source>
      <target dev='vdb' bus='virtio'/>%(shareable)s
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""
CEPH_TIMEOUT = 3


@pytest.fixture(scope='module')
def fleet(stack):
    import libvirt
    connection = libvirt.open(virt.URI)
    domains, images = [], []

    def define(n, image, caching):
        return connection.defineXML(DOMAIN % {
            'name': NAME % n, 'cache': 'writeback' if caching else 'none',
            'user': embedded_ceph.CLIENT, 'secret': stack.secret_uuid,
            'image': image, 'port': stack.ceph.port,
            'shareable': '' if caching else '<shareable/>'})
    try:
        for pair in range(4):
            images.append(stack.ceph.create_multiattach_volume(
                str(uuid.uuid4()), 16))
            for n in (2 * pair, 2 * pair + 1):
                domain = define(n, images[-1], caching=pair % 2 == 1)
                domains.append(domain)
                domain.create()
        # Shut off, its image gone: Ceph answers ImageNotFound.
        domains.append(define(8, '%s/volume-missing-%s' % (
            embedded_ceph.POOL, uuid.uuid4()), caching=False))
        yield [d.name() for d in domains]
    finally:
        for domain in domains:
            for step in (domain.destroy, domain.undefine):
                try:
                    step()
                except libvirt.libvirtError:
                    pass
        for image in images:
            stack.ceph.remove_image(image)
        connection.close()


@pytest.fixture(scope='module')
def conf(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp('etc') / 'nova.conf'
    path.write_text('[shared_cache]\nceph_conf = %s\nceph_timeout = %d\n'
                    '[libvirt]\nrbd_user = cinder\n'
                    % (stack.ceph.client_conf, CEPH_TIMEOUT))
    return str(path)


def audit(conf, *args):
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = manage.main(['--config-file', conf, 'audit', '--json']
                       + list(args), out, err)
    elapsed = time.monotonic() - started
    doc = json.loads(out.getvalue())
    doc.pop('seconds', None)
    return code, doc, elapsed


def ours(doc, fleet):
    """The rows of this module's domains (others may run on the host)."""
    return [d for d in doc['disks'] if d['domain'] in fleet]


def qemu_pid(name):
    with open('/run/libvirt/qemu/%s.pid' % name) as f:
        return int(f.read().strip())


class Stopped:
    """Processes stopped (SIGSTOP) until the block ends, or ``limit`` s.

    The timer resumes them even if the code under test never returns
    (it waits for them): the test then fails on its time bound instead of
    hanging the run with the OSD or QEMUs stopped.
    """

    def __init__(self, pids, limit=60):
        self.pids = pids
        self.timer = threading.Timer(limit, self.resume)
        self.timer.daemon = True

    def resume(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def __enter__(self):
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.resume()


def test_concurrent_report_is_the_sequential_one(fleet, conf):
    code, sequential, _ = audit(conf, '--workers', '1')
    assert code == 2, sequential            # the missing image
    rows = ours(sequential, fleet)
    assert sorted(r['domain'] for r in rows) == sorted(fleet)
    running = [r for r in rows if r['running']]
    assert len(running) == 8
    # QEMU and Ceph were asked for every running domain's disk.
    assert all(r['qemu'] is not None for r in running)
    assert all(r['features'] == [] for r in running)
    caching = [r for r in running if not r['qemu']['direct']]
    assert sorted(r['domain'] for r in caching) == sorted(
        fleet[n] for n in (2, 3, 6, 7))
    assert all({f['code'] for f in r['findings']}
               == {'caching', 'not-shareable'} for r in caching)
    missing = [e for e in sequential['errors']
               if 'volume-missing' in e.get('image', '')]
    assert len(missing) == 1 and 'ImageNotFound' in missing[0]['error']
    for workers in ([], ['--workers', '8'], ['--workers', '3']):
        code, concurrent, elapsed = audit(conf, *workers)
        print('audit %s: %.3f s' % (' '.join(workers), elapsed))
        assert code == 2
        assert concurrent == sequential, workers


def test_a_stopped_qemu_costs_its_rows_one_bound(fleet, conf, monkeypatch):
    monkeypatch.setattr(qmp, 'TIMEOUT', 2.0)
    stopped = [fleet[1], fleet[6]]
    with Stopped([qemu_pid(name) for name in stopped]):
        code, doc, elapsed = audit(conf, '--workers', '8')
    assert code == 2
    # One QMP bound (2 s) for both, not one after the other.
    assert elapsed < 2 * 2.0, elapsed
    print('audit with QEMUs %s stopped: %.3f s' % (stopped, elapsed))
    errors = [e for e in doc['errors'] if e.get('domain') in fleet]
    assert sorted(e['domain'] for e in errors) == sorted(stopped)
    for error in errors:
        assert ('run QMP query-named-block-nodes on domain %s: no answer '
                'within 2 s' % error['domain']) in error['error']
    for row in ours(doc, fleet):
        if row['running']:
            assert (row['qemu'] is None) == (row['domain'] in stopped), row
            assert row['features'] == [], row
    # The stopped caching domain is still judged, on its live XML.
    (row,) = [r for r in ours(doc, fleet) if r['domain'] == fleet[6]]
    assert {'code': 'caching', 'where': 'live-xml',
            'detail': "libvirt runs it with cache='writeback'"} in \
        row['findings']
    # Once QEMU answers again, so does the audit (libvirt ran the queued
    # commands).
    deadline = time.monotonic() + 30
    while True:
        code, doc, _ = audit(conf)
        if all(r['qemu'] is not None for r in ours(doc, fleet)
               if r['running']) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(r['qemu'] is not None for r in ours(doc, fleet)
               if r['running'])


def test_a_stopped_osd_costs_its_rows_one_bound(stack, fleet, conf,
                                                monkeypatch):
    # QEMU's own answer to query-named-block-nodes can wait for the OSD
    # too (it reads the images' snapshots): those rows lose their QEMU
    # state, within the QMP bound.
    monkeypatch.setattr(qmp, 'TIMEOUT', 2.0)
    (osd,) = [pid for name, pid in stack.ceph.daemons().items()
              if name.startswith('osd')]
    with Stopped([osd]):
        code, doc, elapsed = audit(conf, '--workers', '8')
    print('audit with the OSD stopped: %.3f s' % elapsed)
    assert code == 2
    # One QMP bound (2 s) and one ceph_timeout (3 s) for all eight
    # domains and five images, plus the connection; sequential would be
    # up to eight and five bounds. The reads of the domains' XML never
    # wait behind the QMP commands QEMU leaves unanswered (libvirtd runs
    # five requests of a connection at a time).
    assert elapsed < 2.0 + 2 * CEPH_TIMEOUT, elapsed
    images = [r['image'] for r in ours(doc, fleet)]
    errors = [e for e in doc['errors'] if e.get('image') in images]
    assert [e['image'] for e in errors] == list(dict.fromkeys(images))
    for error in errors:
        assert 'read the status of %s as client.cinder' % error['image'] \
            in error['error'], error
    unanswered = {e['domain']: e['error'] for e in doc['errors']
                  if e.get('domain') in fleet}
    for row in ours(doc, fleet):
        assert row['features'] is None
        if not row['running']:
            continue
        # QEMU was asked and answered, or its row says that it did not
        # answer in time, or that the command was not sent because the
        # earlier ones (qmp.MAX_IN_FLIGHT) still wait for their QEMUs.
        if row['qemu'] is None:
            error = unanswered[row['domain']]
            assert ('no answer within 2 s' in error
                    or 'not sent: %d earlier QMP command(s)'
                    % qmp.MAX_IN_FLIGHT in error), error
        else:
            assert row['domain'] not in unanswered


def prometheus(conf, *args):
    out, err = io.StringIO(), io.StringIO()
    code = manage.main(['--config-file', conf, 'audit', '--format',
                        'prometheus'] + list(args), out, err)
    return code, out.getvalue(), err.getvalue()


def samples(text):
    from prometheus_client import parser
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return found


def test_prometheus_metrics_are_the_report(fleet, conf, tmp_path):
    # The textfile collector's file, replaced whole, says what the JSON
    # report says, disk by disk, on real running QEMUs and the real Ceph.
    code, doc, _ = audit(conf)
    path = tmp_path / 'nova_shared_cache.prom'
    path.write_text('stale\n')
    assert prometheus(conf, '--output', str(path)) == (code, '', '')
    found = samples(path.read_text())
    assert os.listdir(tmp_path) == ['nova_shared_cache.prom']
    rows = ours(doc, fleet)
    assert len(rows) == 9
    prefix = 'nova_shared_cache_'
    for row in rows:
        labels = tuple(sorted({'domain': row['domain'], 'uuid': row['uuid'],
                               'disk': row['target'],
                               'image': row['image']}.items()))
        codes = {f['code'] for f in row['findings']}
        assert found[prefix + 'disk_shared', labels] == row['shared']
        assert found[prefix + 'disk_running', labels] == row['running']
        assert found[prefix + 'disk_caching', labels] == (
            'caching' in codes), row
        assert found[prefix + 'disk_not_shareable', labels] == (
            'not-shareable' in codes), row
        assert found[prefix + 'disk_findings', labels] == len(
            row['findings'])
    caching = [k for k, v in found.items()
               if k[0] == prefix + 'disk_caching' and v == 1
               and dict(k[1])['domain'] in fleet]
    assert sorted(dict(k[1])['domain'] for k in caching) == sorted(
        fleet[n] for n in (2, 3, 6, 7))
    # The missing image is the audit's one error.
    assert found[prefix + 'audit_success', ()] == 0
    assert found[prefix + 'audit_exit_code', ()] == 2
    assert [dict(k[1]) for k in found if k[0] == prefix + 'audit_error'
            and 'volume-missing' in dict(k[1]).get('image', '')]
    assert found[prefix + 'guard_credentials_usable',
                 (('source', 'keyring'), ('user', 'cinder'))] == 1


def test_prometheus_file_of_an_audit_that_cannot_run(conf, tmp_path):
    # libvirtd not reachable: the file still gets replaced, with success 0.
    broken = tmp_path / 'nova.conf'
    broken.write_text(open(conf).read().replace(
        '[libvirt]\n', '[libvirt]\nconnection_uri = qemu:///system?socket='
        '%s\n' % (tmp_path / 'no-such-socket')))
    path = tmp_path / 'nsc.prom'
    path.write_text('nova_shared_cache_audit_success 1\n')
    code, out, err = prometheus(str(broken), '--output', str(path))
    assert (code, out) == (2, ''), err
    assert 'no-such-socket' in err
    found = samples(path.read_text())
    assert found['nova_shared_cache_audit_success', ()] == 0
    assert found['nova_shared_cache_audit_failed',
                 (('error_type', 'LibvirtError'),)] == 1
