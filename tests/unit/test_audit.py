"""audit and fix through the CLI, on fake libvirt domains and fake Ceph.

The domains here have the XML libvirt would report and a fake QMP block
graph; what the real libvirt and QEMU do is in tests/integration/
test_repair.py.
"""

import functools
import io
import json
import os
import sys
import threading
import time
import types
from unittest import mock

from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt

from nova_shared_cache import audit
from nova_shared_cache.cmd import common
from nova_shared_cache.cmd import fix as fix_cmd
from nova_shared_cache.cmd import manage
from nova_shared_cache import exception
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import qmp
from tests.unit import base
from tests.unit import fakeceph

SPEC = base.RBD_CONNECTION_INFO['data']['name']
OTHER_SPEC = 'volumes/volume-other'
REMOTE = {'addr': '10.0.0.7:0/2041893277', 'id': 9001, 'cookie': 1}

DOMAIN = """<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid>
<devices>
<disk type='file' device='disk'><source file='/x/disk'/>
  <target dev='vda'/></disk>
<disk type='network' device='disk'>
  <driver name='qemu' type='raw'{cache}/>
  {auth}
  <source protocol='rbd' name='{spec}'{index}>
    <host name='127.0.0.1' port='3300'/>{snapshot}</source>
  <target dev='vdb' bus='virtio'/>{shareable}{readonly}
</disk></devices></domain>"""
AUTH = "<auth username='%s'><secret type='ceph' uuid='s'/></auth>"


def xml(name, spec=SPEC, cache='writeback', shareable=False, index=None,
        readonly=False, user='cinder', snapshot=None):
    return DOMAIN.format(name=name, uuid='uuid-' + name, spec=spec,
                         cache=" cache='%s'" % cache if cache else '',
                         index=" index='%s'" % index if index else '',
                         shareable='<shareable/>' if shareable else '',
                         readonly='<readonly/>' if readonly else '',
                         auth=AUTH % user if user else '',
                         snapshot="<snapshot name='%s'/>" % snapshot
                         if snapshot else '')


class FakeDomain:

    def __init__(self, name, live=None, config=None, running=True,
                 persistent=True, direct=False):
        self._name = name
        self.live = live or xml(name, index='2')
        self.config = config or xml(name)
        self.running = running
        self.persistent = persistent
        self.direct = direct
        self.updates = []
        self.metadata_calls = []

    def name(self):
        return self._name

    def UUIDString(self):
        return 'uuid-' + self._name

    def isActive(self):
        return self.running

    def isPersistent(self):
        return self.persistent

    def XMLDesc(self, flags=0):
        if flags & fakelibvirt.VIR_DOMAIN_XML_INACTIVE or not self.running:
            return self.config
        return self.live

    def metadata(self, kind, uri, flags):
        assert (kind, uri) == (fakelibvirt.VIR_DOMAIN_METADATA_ELEMENT,
                               domxml.METADATA_NS)
        doc = etree.fromstring(self._pick(flags))
        found = doc.find('./metadata/{%s}%s' % (uri, domxml.METADATA_ROOT))
        if found is None:
            raise fakelibvirt.make_libvirtError(
                fakelibvirt.libvirtError, 'metadata not found',
                error_code=80)
        # libvirt hands the element back without its namespace
        found.tag = etree.QName(found).localname
        etree.cleanup_namespaces(found)
        return etree.tostring(found, encoding='unicode')

    def setMetadata(self, kind, text, prefix, uri, flags):
        self.metadata_calls.append((text, prefix, uri, flags))
        for which in ('live', 'config'):
            flag = getattr(fakelibvirt, 'VIR_DOMAIN_AFFECT_%s'
                           % which.upper())
            if not flags & flag:
                continue
            doc = etree.fromstring(getattr(self, which))
            metadata = doc.find('metadata')
            if metadata is None:
                metadata = etree.SubElement(doc, 'metadata')
            for old in metadata.findall('{%s}*' % uri):
                metadata.remove(old)
            new = etree.fromstring(text)
            element = etree.SubElement(
                metadata, '{%s}%s' % (uri, new.tag), nsmap={prefix: uri})
            for child in new:
                element.append(child)
            setattr(self, which, etree.tostring(doc, encoding='unicode'))

    def _pick(self, flags):
        if flags & fakelibvirt.VIR_DOMAIN_AFFECT_CONFIG:
            return self.config
        return self.live

    def updateDeviceFlags(self, disk_xml, flags):
        assert flags == fakelibvirt.VIR_DOMAIN_AFFECT_CONFIG
        self.updates.append(disk_xml)
        doc = etree.fromstring(self.config)
        devices = doc.find('devices')
        new = etree.fromstring(disk_xml)
        for old in devices.findall('disk'):
            if old.find('target').get('dev') == new.find(
                    'target').get('dev'):
                devices.replace(old, new)
        self.config = etree.tostring(doc, encoding='unicode')


class FakeMonitor:

    def __init__(self, domain):
        self.domain = domain
        self.name = domain.name()

    def block_nodes(self):
        cache = {'direct': self.domain.direct, 'writeback': True,
                 'no-flush': False}
        return {'libvirt-2-storage': {'node-name': 'libvirt-2-storage',
                                      'drv': 'rbd', 'cache': cache}}


def use_module(test, name, module):
    """``import name`` gives ``module`` for the rest of the test.

    In sys.modules itself: rebinding the name ``sys.modules`` (what these
    tests did) does not stop ``import libvirt`` from finding the real
    module once something imported it, and the test then talked to the
    real libvirtd.
    """
    patcher = mock.patch.dict(sys.modules, {name: module})
    patcher.start()
    test.addCleanup(patcher.stop)


class FakeConnection:

    def __init__(self, domains):
        self.domains = domains

    def listAllDomains(self):
        return list(self.domains)

    def getURI(self):
        return 'qemu:///system'

    def close(self):
        pass


class AuditCase(base.TestCase):

    def setUp(self):
        super().setUp()
        conf_dir = os.path.dirname(base.sc_driver.CONF.shared_cache.ceph_conf)
        self.nova_conf = os.path.join(conf_dir, 'nova.conf')
        with open(self.nova_conf, 'w') as f:
            f.write('[shared_cache]\nceph_conf = %s\nceph_user = cinder\n'
                    % base.sc_driver.CONF.shared_cache.ceph_conf)
        self.ceph.add_image(SPEC, features=fakeceph.CINDER_MULTIATTACH)
        self.ceph.add_image(OTHER_SPEC, features=fakeceph.CINDER_MULTIATTACH)
        use_module(self, 'libvirt', fakelibvirt)
        self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.libvirt.qmp.Monitor', FakeMonitor))
        self.addresses = self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.hostnet.local_addresses',
            return_value={manage.hostnet.address_host('127.0.0.1:0/1')}
        )).mock
        self.domains = []
        self.open_libvirt = self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.cmd.common.open_libvirt',
            side_effect=lambda conf: FakeConnection(self.domains))).mock

    def run_cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        rc = manage.main(['--config-file', self.nova_conf] + list(args),
                         out=out, err=err)
        return rc, out.getvalue(), err.getvalue()

    def audit(self, *args):
        rc, out, err = self.run_cli('audit', '--json', *args)
        self.assertEqual('', err)
        return rc, json.loads(out)

    def findings(self, report, name):
        (row,) = [d for d in report['disks'] if d['domain'] == name]
        return {(f['code'], f['where']) for f in row['findings']}


class AuditTest(AuditCase):

    def test_clean_host(self):
        self.domains = [FakeDomain('a', xml('a', cache='none',
                                            shareable=True, index='2'),
                                   xml('a', cache='none', shareable=True),
                                   direct=True)]
        rc, report = self.audit()
        self.assertEqual(0, rc)
        self.assertEqual(0, report['findings'])
        self.assertEqual(['shareable'], report['disks'][0]['shared_by'])

    def test_two_local_domains_on_one_image(self):
        self.domains = [FakeDomain('a'), FakeDomain('b'),
                        FakeDomain('c', xml('c', spec=OTHER_SPEC, index='2'),
                                   xml('c', spec=OTHER_SPEC))]
        rc, report = self.audit()
        self.assertEqual(1, rc)
        expected = {('caching', 'qemu'), ('caching', 'definition'),
                    ('not-shareable', 'definition')}
        self.assertEqual(expected, self.findings(report, 'a'))
        self.assertEqual(expected, self.findings(report, 'b'))
        self.assertEqual(set(), self.findings(report, 'c'))
        # Asking about one domain still sees the other one.
        rc, report = self.audit('--domain', 'a')
        self.assertEqual(['a'], [d['domain'] for d in report['disks']])
        self.assertEqual(expected, self.findings(report, 'a'))

    def test_read_only_sharing_is_not_a_hazard(self):
        self.domains = [
            FakeDomain('r1', xml('r1', readonly=True, index='2'),
                       xml('r1', readonly=True)),
            FakeDomain('r2', xml('r2', readonly=True, index='2'),
                       xml('r2', readonly=True)),
            FakeDomain('s1', xml('s1', snapshot='base', index='2'),
                       xml('s1', snapshot='base')),
            FakeDomain('s2', xml('s2', snapshot='base', index='2'),
                       xml('s2', snapshot='base'))]
        rc, report = self.audit()
        self.assertEqual((0, 0), (rc, report['findings']), report)
        self.assertEqual([[]] * 4, [d['shared_by'] for d in report['disks']])
        self.assertEqual([True, True, False, False],
                         [d['readonly'] for d in report['disks']])

    def test_a_writer_makes_read_only_users_shared(self):
        self.domains = [
            FakeDomain('r1', xml('r1', readonly=True, index='2'),
                       xml('r1', readonly=True)),
            FakeDomain('w', xml('w', index='2'), xml('w'))]
        rc, report = self.audit()
        self.assertEqual(1, rc)
        self.assertIn(('caching', 'qemu'), self.findings(report, 'r1'))
        self.assertIn(('caching', 'qemu'), self.findings(report, 'w'))
        shared_by = {d['domain']: d['shared_by'] for d in report['disks']}
        self.assertEqual({'r1': ['local domains: w'],
                          'w': ['local domains: r1 (read-only)']}, shared_by)

    def test_a_live_fix_is_recorded_and_keeps_the_disk_shared(self):
        # A plain caching disk that fix --live switched: QEMU is direct
        # now, libvirt's live XML still says writeback.
        dom = FakeDomain('a', direct=True)
        self.domains = [dom]
        rc, report = self.audit()
        self.assertEqual((0, []), (rc, report['disks'][0]['shared_by']))
        (row,) = audit.Auditor(FakeConnection([dom]), manage.sc_conf.load(
            manage.make_conf(['--config-file', self.nova_conf, 'audit'])),
            ceph=False).scan().disks
        self.assertEqual({'live': 'recorded', 'config': 'recorded'},
                         audit.record_live_fix(row, 'none'))
        # Recording twice keeps one entry per image.
        audit.record_live_fix(row, 'none')
        self.assertEqual({(SPEC, 'vdb'): 'none'}, domxml.recorded_disks(
            domxml.parse(dom.live)))
        self.assertEqual({(SPEC, 'vdb'): 'none'}, domxml.recorded_disks(
            domxml.parse(dom.config)))
        dom.config = xml('a', cache='none', shareable=True)  # fix --config
        dom.config = dom.config.replace('</devices>', '</devices>' + (
            etree.tostring(etree.fromstring(dom.live).find('metadata'),
                           encoding='unicode')))
        rc, report = self.audit()
        (disk,) = report['disks']
        self.assertEqual(['shareable', "switched to cache='none' by fix "
                                       "--live"], disk['shared_by'])
        self.assertEqual((0, 'none'), (rc, disk['recorded']))
        # Restored without the hook: QEMU caches again, and the audit says
        # so (without the record the disk would look unshared and fine).
        dom.direct = False
        rc, report = self.audit()
        self.assertEqual(1, rc)
        self.assertIn(('caching', 'qemu'), self.findings(report, 'a'))

    def test_images_are_read_as_the_named_user_never_admin(self):
        self.domains = [FakeDomain('a', xml('a', user=None, index='2'),
                                   xml('a', user=None)),
                        FakeDomain('b', xml('b', spec=OTHER_SPEC, index='2'),
                                   xml('b', spec=OTHER_SPEC))]
        with open(self.nova_conf, 'w') as f:     # no ceph_user, no rbd_user
            f.write('[shared_cache]\nceph_conf = %s\n'
                    % base.sc_driver.CONF.shared_cache.ceph_conf)
        rc, report = self.audit()
        self.assertEqual(2, rc)
        (error,) = report['errors']
        self.assertEqual(SPEC, error['image'])
        self.assertIn('no Ceph user', error['error'])
        self.assertIn('client.admin is never assumed', error['error'])
        users = {d['domain']: d['ceph_user'] for d in report['disks']}
        self.assertEqual({'a': None, 'b': 'cinder'}, users)
        self.assertNotIn('admin', [c[1] for c in self.ceph.calls
                                   if c[0] == 'connect'])

    def test_a_client_on_another_host_makes_it_shared(self):
        self.ceph.add_image(SPEC, features=fakeceph.DEFAULT_FEATURES,
                            watchers=[REMOTE])
        self.domains = [FakeDomain('a')]
        rc, report = self.audit()
        self.assertEqual(1, rc)
        self.assertIn(('features', 'ceph'), self.findings(report, 'a'))
        self.assertEqual(['clients on other hosts: 10.0.0.7:0/2041893277'],
                         report['disks'][0]['shared_by'])
        # Without Ceph nobody knows.
        rc, report = self.audit('--no-ceph')
        self.assertEqual((0, []), (rc, report['disks'][0]['shared_by']))

    def test_a_service_client_on_another_host_is_not_sharing(self):
        local = {'addr': '127.0.0.1:0/5', 'id': 4400, 'cookie': 2}
        self.ceph.add_image(SPEC, watchers=[REMOTE, local])
        self.ceph.sessions = {REMOTE['id']: 'client.rbd-mirror.b'}
        self.domains = [FakeDomain('a', direct=True)]
        rc, report = self.audit()
        self.assertEqual((0, [], None), (
            rc, report['disks'][0]['shared_by'],
            report['disks'][0]['names_error']))
        # Only the remote client is named: this host's QEMU is not asked
        # about, and without the caps the client counts, with the reason.
        asked = [c[1] for c in self.ceph.calls if c[0] == 'mon_command']
        self.assertIn({'prefix': 'sessions', 'format': 'json'}, asked)
        self.ceph.denied = {'sessions', 'mgr dump'}
        rc, report = self.audit()
        (disk,) = report['disks']
        self.assertEqual(['clients on other hosts: 10.0.0.7:0/2041893277'],
                         disk['shared_by'])
        self.assertIn("'sessions' on mon.a: access denied",
                      disk['names_error'])
        self.assertIn("give the Ceph user mon caps", disk['names_error'])
        # Nobody on another host: no monitor command at all.
        self.ceph.calls.clear()
        self.ceph.add_image(SPEC, watchers=[local])
        self.audit()
        self.assertEqual([], [c for c in self.ceph.calls
                              if c[0] == 'mon_command'])

    def test_live_differs_from_definition(self):
        self.domains = [FakeDomain(
            'a', config=xml('a', cache='none', shareable=True))]
        rc, report = self.audit()
        self.assertEqual({('caching', 'qemu'), ('live-differs', 'qemu')},
                         self.findings(report, 'a'))

    def test_shut_off_domain_is_judged_on_its_definition(self):
        self.domains = [FakeDomain('a', running=False, config=xml(
            'a', cache=None, shareable=True))]
        rc, report = self.audit()
        self.assertEqual({('caching', 'definition')},
                         self.findings(report, 'a'))
        self.assertIsNone(report['disks'][0]['qemu'])

    def test_ceph_error_is_exit_2_with_the_rest_reported(self):
        self.domains = [FakeDomain('a', xml('a', spec='volumes/missing',
                                            index='2'),
                                   xml('a', spec='volumes/missing',
                                       shareable=True))]
        rc, report = self.audit()
        self.assertEqual(2, rc)
        self.assertEqual('volumes/missing', report['errors'][0]['image'])
        self.assertIn(('caching', 'qemu'), self.findings(report, 'a'))

    def test_unknown_domain_is_an_error_before_anything(self):
        self.domains = [FakeDomain('a')]
        rc, out, err = self.run_cli('fix', '--config', '--domain', 'nope')
        self.assertEqual(2, rc)
        self.assertIn('find domain(s) nope: no such domain', err)
        self.assertEqual([], self.domains[0].updates)

    def test_human_table(self):
        self.domains = [FakeDomain('a'), FakeDomain('b')]
        rc, out, err = self.run_cli('audit')
        self.assertEqual(1, rc)
        lines = out.splitlines()
        self.assertEqual(['DOMAIN', 'STATE', 'DISK', 'IMAGE', 'DEFINED',
                          'QEMU', 'SHARED', 'FINDINGS'], lines[0].split())
        self.assertIn('rbd cache on', lines[1])
        self.assertTrue(lines[-1].startswith('2 domains, 2 RBD disks, 2 '
                                             'shared, 6 findings, 0 errors'))

    def test_fix_config_changes_only_the_shared_disk(self):
        self.domains = [FakeDomain('a'), FakeDomain('b'),
                        FakeDomain('c', xml('c', spec=OTHER_SPEC, index='2'),
                                   xml('c', spec=OTHER_SPEC))]
        rc, out, err = self.run_cli('fix', '--config', '--json')
        self.assertEqual(0, rc, err)
        # The CLI reference documents every key of the document.
        self.assertEqual(set(fix_cmd.JSON_KEYS) | {'exit_code', 'meaning'},
                         set(json.loads(out)))
        results = json.loads(out)['results']
        self.assertEqual([('a', 'fixed'), ('b', 'fixed')],
                         [(r['domain'], r['state']) for r in results])
        for dom in self.domains[:2]:
            (disk,) = domxml.rbd_disks(domxml.parse(dom.config))
            self.assertEqual(('none', True), (disk.cache, disk.shareable))
        self.assertEqual([], self.domains[2].updates)
        # Once fixed, the definitions are clean; QEMU still caches.
        rc, report = self.audit()
        self.assertEqual({('caching', 'qemu'), ('live-differs', 'qemu')},
                         self.findings(report, 'a'))

    def test_fix_config_skips_transient_domains(self):
        self.domains = [FakeDomain('a', persistent=False,
                                   config=xml('a', index='2')),
                        FakeDomain('b')]
        rc, out, _ = self.run_cli('fix', '--config', '--json')
        results = {r['domain']: r for r in json.loads(out)['results']}
        self.assertEqual('skipped', results['a']['state'])
        self.assertEqual('fixed', results['b']['state'])

    def test_dry_run_changes_nothing(self):
        self.domains = [FakeDomain('a'), FakeDomain('b')]
        with mock.patch.object(audit.livefix, 'switch') as switch:
            rc, out, _ = self.run_cli('fix', '--live', '--config',
                                      '--dry-run')
        self.assertEqual(0, rc)
        self.assertIn('would fix (live)', out)
        switch.assert_not_called()
        self.assertEqual([], self.domains[0].updates)

    def test_addresses_unknown_stop_before_libvirt(self):
        self.ceph.add_image(SPEC, watchers=[REMOTE])
        self.domains = [FakeDomain('a')]
        self.addresses.side_effect = exception.LocalAddressesUnknown(
            reason='no /proc')
        for command in (('audit',), ('fix', '--config')):
            with self.subTest(command=command):
                rc, out, err = self.run_cli(*command)
                self.assertEqual((2, ''), (rc, out))
                self.assertIn("cannot tell this host's Ceph clients", err)
                self.assertIn('pass --no-ceph', err)
                rc, out, err = self.run_cli(*command, '--json')
                doc = json.loads(out)
                self.assertEqual((2, 'error', 'LocalAddressesUnknown'),
                                 (doc['exit_code'], doc['meaning'],
                                  doc['error_type']))
                self.assertIn('pass --no-ceph', doc['error'])
        self.open_libvirt.assert_not_called()
        self.assertEqual([], self.ceph.calls)
        self.assertEqual([], self.domains[0].updates)
        # --no-ceph needs no addresses: judged on the local view.
        rc, report = self.audit('--no-ceph')
        self.assertEqual((0, []), (rc, report['disks'][0]['shared_by']))
        rc, out, _ = self.run_cli('fix', '--config', '--no-ceph')
        self.assertEqual((0, 'nothing to fix\n'), (rc, out))

    def test_a_scan_that_cannot_read_the_addresses_is_an_error(self):
        # Readable when checked, unreadable when the scan reads them.
        self.domains = [FakeDomain('a')]
        self.addresses.side_effect = [
            set(), exception.LocalAddressesUnknown(reason='gone')]
        rc, out, err = self.run_cli('audit')
        self.assertEqual((2, ''), (rc, out))
        self.assertIn('gone; or pass --no-ceph', err)

    def test_injected_addresses_are_used(self):
        self.ceph.add_image(SPEC, watchers=[REMOTE])
        self.domains = [FakeDomain('a')]
        auditor = audit.Auditor(FakeConnection(self.domains),
                                manage.sc_conf.load(
                                    manage.make_conf(['audit'])),
                                local_addresses={manage.hostnet.address_host(
                                    REMOTE['addr'])})
        report = auditor.scan()
        self.addresses.assert_not_called()
        self.assertEqual([], report.disks[0].shared_by)

    def test_loopback_clients_are_local(self):
        self.ceph.add_image(SPEC, watchers=[dict(REMOTE,
                                                 addr='127.0.0.5:0/77')])
        self.domains = [FakeDomain('a')]
        rc, report = self.audit()
        self.assertEqual((0, []), (rc, report['disks'][0]['shared_by']))

    def test_input_checked_before_libvirt(self):
        with open(self.nova_conf, 'a') as f:
            f.write('cache_mode = writeback\n')
        rc, _, err = self.run_cli('audit')
        self.assertEqual(2, rc)
        self.assertIn('[shared_cache] cache_mode', err)
        with open(self.nova_conf, 'w') as f:
            f.write('[shared_cache]\nceph_conf = %s\n'
                    % base.sc_driver.CONF.shared_cache.ceph_conf)
        rc, _, err = self.run_cli('fix', '--config', '--domain', ' ')
        self.assertEqual(2, rc)
        self.assertIn('--domain needs a domain name', err)
        rc, _, err = self.run_cli('audit', '--ceph-user', 'client.cinder')
        self.assertEqual(2, rc)
        self.assertIn('--ceph-user cinder', err)
        self.open_libvirt.assert_not_called()
        self.addresses.assert_not_called()

    def test_json_documents(self):
        self.domains = [FakeDomain('a'), FakeDomain('b')]
        rc, report = self.audit()
        self.assertEqual((1, 1, 'findings'),
                         (rc, report['exit_code'], report['meaning']))
        self.open_libvirt.side_effect = exception.LibvirtError(
            what='connect to libvirt at qemu:///system', reason='refused')
        rc, out, _ = self.run_cli('audit', '--json')
        doc = json.loads(out)
        self.assertEqual((2, 'LibvirtError', 'audit'),
                         (rc, doc['error_type'], doc['command']))
        self.assertIn('connect to libvirt at qemu:///system: refused',
                      doc['error'])
        rc, out, _ = self.run_cli('fix', '--json')
        self.assertEqual('fix needs --config, --live or both',
                         json.loads(out)['error'])

    def test_fix_needs_a_mode(self):
        rc, _, err = self.run_cli('fix')
        self.assertEqual(2, rc)
        self.assertIn('fix needs --config, --live or both', err)


REAL_MONITOR = qmp.Monitor


class ScriptedMonitor:
    """FakeMonitor with a delay, an error or a hang per domain.

    Counts the questions in flight, so a test sees how many QEMUs were
    asked at a time.
    """

    delays = {}
    errors = set()
    hangs = set()
    in_flight = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def __init__(self, domain):
        self.domain = domain
        self.name = domain.name()

    def block_nodes(self):
        cls = type(self)
        if self.name in cls.hangs:
            # The real Monitor with a QEMU that never answers: only its
            # own bound (qmp.TIMEOUT) ends the wait.
            return REAL_MONITOR(self.domain, send=lambda text: (
                cls.release.wait(), '{}')[1]).block_nodes()
        with cls.lock:
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
        try:
            time.sleep(cls.delays.get(self.name, 0))
            if self.name in cls.errors:
                raise qmp.QmpError(self.name, 'query-named-block-nodes',
                                   'QEMU said no')
            return FakeMonitor(self.domain).block_nodes()
        finally:
            with cls.lock:
                cls.in_flight -= 1


class ConcurrentAuditTest(AuditCase):
    """--workers: the same report, QMP and Ceph asked N at a time."""

    def setUp(self):
        super().setUp()
        monitor = type('Monitor', (ScriptedMonitor,), {
            'delays': {}, 'errors': set(), 'hangs': set(), 'in_flight': 0,
            'most': 0, 'lock': threading.Lock(),
            'release': threading.Event()})
        self.addCleanup(monitor.release.set)
        self.monitor = monitor
        self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.libvirt.qmp.Monitor', monitor))
        # Twelve domains in pairs on six images: pairs 0, 2, 4 as Nova
        # makes a multiattach disk, 1, 3, 5 caching without <shareable/>;
        # one shut off; image 4 is missing in Ceph.
        self.domains = []
        for n in range(12):
            pair = n // 2
            spec = 'volumes/volume-%d' % pair
            safe = pair % 2 == 0
            if pair != 4:
                self.ceph.add_image(spec, features=fakeceph.CINDER_MULTIATTACH
                                    if pair else fakeceph.DEFAULT_FEATURES)
            cache = 'none' if safe else 'writeback'
            self.domains.append(FakeDomain(
                'd%02d' % n,
                xml('d%02d' % n, spec=spec, cache=cache, shareable=safe,
                    index='2'),
                xml('d%02d' % n, spec=spec, cache=cache, shareable=safe),
                running=n != 7, direct=safe))
        self.ceph_in_flight = {'now': 0, 'most': 0}
        self.ceph_delays = {}
        self.ceph_slow = set()
        ceph_lock = threading.Lock()
        real_status = audit.cephops.image_status

        def image_status(cluster, spec):
            with ceph_lock:
                self.ceph_in_flight['now'] += 1
                self.ceph_in_flight['most'] = max(
                    self.ceph_in_flight['most'], self.ceph_in_flight['now'])
            try:
                time.sleep(self.ceph_delays.get(spec, 0))
                if spec in self.ceph_slow:
                    # librados' own bound (rados_osd_op_timeout) ended it.
                    raise self.ceph.rbd.Timeout('timed out')
                return real_status(cluster, spec)
            finally:
                with ceph_lock:
                    self.ceph_in_flight['now'] -= 1
        self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.cephops.image_status',
            side_effect=image_status))

    def report(self, *args):
        rc, doc = self.audit(*args)
        doc.pop('seconds')
        return rc, doc

    def test_the_report_is_the_sequential_one_in_its_order(self):
        # Answers end in the reverse order of the questions, and some are
        # errors: the report still follows the domains and images.
        for n, dom in enumerate(self.domains):
            self.monitor.delays[dom.name()] = (12 - n) * 0.01
        self.monitor.errors.add('d03')
        for pair in range(6):
            self.ceph_delays['volumes/volume-%d' % pair] = (6 - pair) * 0.02
        self.ceph_slow.add('volumes/volume-1')
        rc, sequential = self.report('--workers', '1')
        self.assertEqual(2, rc)
        self.assertEqual(
            [('domain', 'd03'), ('image', 'volumes/volume-1'),
             ('image', 'volumes/volume-4')],
            [next((k, v) for k, v in e.items() if k != 'error')
             for e in sequential['errors']])
        self.assertEqual(['d%02d' % n for n in range(12)],
                         [d['domain'] for d in sequential['disks']])
        self.assertEqual(19, sequential['findings'])
        for workers in ('2', '8', '64'):
            with self.subTest(workers=workers):
                rc, concurrent = self.report('--workers', workers)
                self.assertEqual(2, rc)
                self.assertEqual(sequential, concurrent)
        # The default asks eight at a time and reports the same.
        self.monitor.most = 0
        self.assertEqual((2, sequential), self.report())
        self.assertEqual(8, self.monitor.most)

    def test_questions_run_at_most_workers_at_a_time(self):
        for dom in self.domains:
            self.monitor.delays[dom.name()] = 0.05
        for pair in range(6):
            self.ceph_delays['volumes/volume-%d' % pair] = 0.05
        self.report('--workers', '4')
        self.assertEqual(4, self.monitor.most)
        self.assertEqual(4, self.ceph_in_flight['most'])
        self.monitor.most = 0
        self.ceph_in_flight['most'] = 0
        self.report('--workers', '1')
        self.assertEqual((1, 1), (self.monitor.most,
                                  self.ceph_in_flight['most']))

    def test_domain_xml_is_read_workers_at_a_time(self):
        in_flight = {'now': 0, 'most': 0}
        lock = threading.Lock()

        def slow(real, flags=0):
            with lock:
                in_flight['now'] += 1
                in_flight['most'] = max(in_flight['most'], in_flight['now'])
            try:
                time.sleep(0.03)
                return real(flags)
            finally:
                with lock:
                    in_flight['now'] -= 1
        for dom in self.domains:
            dom.XMLDesc = functools.partial(slow, dom.XMLDesc)
        rc, concurrent = self.report('--workers', '4')
        self.assertEqual(4, in_flight['most'])
        in_flight['most'] = 0
        self.assertEqual((rc, concurrent), self.report('--workers', '1'))
        self.assertEqual(1, in_flight['most'])

    def test_a_hung_qemu_costs_only_its_row_and_its_bound(self):
        self.useFixture(base.fixtures.MonkeyPatch(
            'nova_shared_cache.libvirt.qmp.TIMEOUT', 0.5))
        self.monitor.hangs.update({'d00', 'd06', 'd09'})
        started = time.monotonic()
        rc, report = self.report('--workers', '8')
        elapsed = time.monotonic() - started
        # One bound, not three after one another.
        self.assertLess(elapsed, 1.4)
        self.assertEqual(2, rc)
        errors = [e for e in report['errors'] if 'domain' in e]
        self.assertEqual(['d00', 'd06', 'd09'], [e['domain'] for e in errors])
        for error in errors:
            self.assertIn('run QMP query-named-block-nodes on domain %s: '
                          'no answer within 0.5 s' % error['domain'],
                          error['error'])
        rows = {d['domain']: d for d in report['disks']}
        for name, row in rows.items():
            if name in ('d00', 'd06', 'd09', 'd07'):
                self.assertIsNone(row['qemu'], name)
            else:
                self.assertIsNotNone(row['qemu'], name)
        # The hung domains are still judged, the caching one on its live
        # XML.
        self.assertIn(('caching', 'live-xml'), self.findings(report, 'd06'))
        self.assertEqual({('features', 'ceph')},
                         self.findings(report, 'd00'))

    def test_a_slow_ceph_costs_only_its_images_and_its_bound(self):
        for spec in ('volumes/volume-0', 'volumes/volume-3'):
            self.ceph_delays[spec] = 0.5
            self.ceph_slow.add(spec)
        started = time.monotonic()
        rc, report = self.report('--workers', '8')
        self.assertLess(time.monotonic() - started, 0.95)
        self.assertEqual(2, rc)
        errors = [e for e in report['errors'] if 'image' in e]
        self.assertEqual(['volumes/volume-0', 'volumes/volume-3',
                          'volumes/volume-4'],
                         [e['image'] for e in errors])
        self.assertIn('read the status of volumes/volume-0 as '
                      'client.cinder: no answer within', errors[0]['error'])
        for row in report['disks']:
            unread = row['image'] in ('volumes/volume-0', 'volumes/volume-3',
                                      'volumes/volume-4')
            self.assertEqual(unread, row['features'] is None, row['image'])

    def test_workers_is_checked_and_named(self):
        for command in (('audit',), ('fix', '--config')):
            for value in ('0', '65', 'many', '-1'):
                with self.subTest(command=command, value=value):
                    rc, out, err = self.run_cli(*command, '--workers', value)
                    self.assertEqual((2, ''), (rc, out))
                    self.assertIn("--workers must be a whole number from 1 "
                                  "to 64, not '%s'" % value, err)
                    rc, out, _ = self.run_cli(*command, '--json',
                                              '--workers', value)
                    doc = json.loads(out)
                    self.assertEqual((2, 'UsageError'),
                                     (rc, doc['error_type']))
                    self.assertIn('--workers must be a whole number',
                                  doc['error'])
        self.open_libvirt.assert_not_called()
        with mock.patch.object(audit, 'Auditor',
                               wraps=audit.Auditor) as auditor:
            self.report()
            self.report('--workers', '3')
            self.run_cli('fix', '--config', '--dry-run')
        self.assertEqual([8, 3, 8], [c.kwargs['workers']
                                     for c in auditor.call_args_list])


class SlottedConnection:
    """A libvirt connection that carries one call at a time.

    The worst of what libvirt 9.0 was seen doing: while a QMP command that
    QEMU does not answer is pending on a connection, later calls on that
    connection may wait for it. These QEMUs answer only once ``answer``
    is set (their main loops wait for a stopped OSD).
    """

    def __init__(self, domains, answer, counts):
        self.slot = threading.Lock()
        self.answer = answer
        self.counts = counts
        self.domains = [SlottedDomain(self, d) for d in domains]

    def listAllDomains(self):
        with self.slot:
            return list(self.domains)

    def getURI(self):
        return 'qemu:///system'

    def close(self):
        pass

    def call(self, fn, *args):
        with self.slot:
            return fn(*args)


class SlottedDomain:
    """A FakeDomain reached through one SlottedConnection."""

    def __init__(self, connection, domain):
        self.connection = connection
        self.domain = domain
        self.direct = domain.direct

    def name(self):
        return self.domain.name()

    def UUIDString(self):
        return self.domain.UUIDString()

    def isActive(self):
        return self.connection.call(self.domain.isActive)

    def isPersistent(self):
        return self.connection.call(self.domain.isPersistent)

    def XMLDesc(self, flags=0):
        return self.connection.call(self.domain.XMLDesc, flags)


def qemu_monitor_command(domain, text, flags):
    connection = domain.connection

    def wait_for_qemu():
        connection.counts['reached qemu'] += 1
        connection.answer.wait(60)
        return json.dumps({'return': list(
            FakeMonitor(domain).block_nodes().values())})
    return connection.call(wait_for_qemu)


class UnansweredQmpTest(AuditCase):
    """QEMUs that do not answer cannot stop the audit's other calls."""

    def setUp(self):
        super().setUp()
        self.answer = threading.Event()
        self.addCleanup(self.answer.set)
        self.counts = {'reached qemu': 0}
        self.connections = []

        def open_libvirt(conf):
            connection = SlottedConnection(self.domains, self.answer,
                                           self.counts)
            self.connections.append(connection)
            return connection
        self.open_libvirt.side_effect = open_libvirt
        self.useFixture(base.fixtures.MockPatch(
            'nova_shared_cache.libvirt.qmp.Monitor', REAL_MONITOR))
        self.useFixture(base.fixtures.MonkeyPatch(
            'nova_shared_cache.libvirt.qmp.TIMEOUT', 0.5))
        use_module(self, 'libvirt_qemu', types.SimpleNamespace(
            qemuMonitorCommand=qemu_monitor_command))
        for n in range(12):
            self.domains.append(FakeDomain('d%02d' % n, direct=n % 2 == 0))

    def audit_in_thread(self, *args):
        result = {}

        def run():
            started = time.monotonic()
            result['report'] = self.audit(*args)
            result['elapsed'] = time.monotonic() - started
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(10)
        # With a command waiting for QEMU on the connection the domains'
        # XML is read on, the audit would wait for QEMU too.
        self.assertFalse(thread.is_alive(), 'the audit waited for QEMU')
        return result['report'], result['elapsed']

    def test_every_qemu_waiting_for_ceph_costs_one_bound_per_wave(self):
        (rc, report), elapsed = self.audit_in_thread('--workers', '8')
        self.assertEqual(2, rc)
        # Two connections: the reads on one, the QMP commands on the other.
        self.assertEqual(2, len(self.connections))
        self.assertEqual([], report['warnings'])
        # As many sent as the limit, each unanswered within its bound;
        # every other domain's command found no slot within its own
        # bound.
        self.assertLess(elapsed, 3 * 0.5)
        errors = {e['domain']: e['error'] for e in report['errors']}
        self.assertEqual(['d%02d' % n for n in range(12)], sorted(errors))
        unanswered = [d for d, e in errors.items()
                      if 'no answer within 0.5 s' in e]
        not_sent = [d for d, e in errors.items()
                    if 'not sent: %d earlier QMP command(s)'
                    % qmp.MAX_IN_FLIGHT in e]
        self.assertEqual((qmp.MAX_IN_FLIGHT, 12 - qmp.MAX_IN_FLIGHT),
                         (len(unanswered), len(not_sent)))
        # Every disk is still read from libvirt and judged.
        self.assertEqual(['d%02d' % n for n in range(12)],
                         [d['domain'] for d in report['disks']])
        for row in report['disks']:
            self.assertIsNone(row['qemu'])
            self.assertIn(('caching', 'definition'),
                          {(f['code'], f['where']) for f in row['findings']})
        # Once QEMU answers, the slots are free and QEMU is asked again.
        self.answer.set()
        deadline = time.monotonic() + 10
        while qmp._get_slots().used and time.monotonic() < deadline:
            time.sleep(0.01)
        (rc, report), _ = self.audit_in_thread('--workers', '8')
        self.assertEqual([], report['errors'])
        self.assertTrue(all(d['qemu'] is not None for d in report['disks']))

    def test_without_a_second_connection_qmp_shares_the_first(self):
        opened = []

        def open_libvirt(conf):
            if opened:
                raise exception.LibvirtError(what='connect to libvirt',
                                             reason='too many clients')
            opened.append(SlottedConnection(self.domains, self.answer,
                                            self.counts))
            return opened[0]
        self.open_libvirt.side_effect = open_libvirt
        self.answer.set()
        (rc, report), _ = self.audit_in_thread('--workers', '8')
        self.assertEqual([], report['errors'])
        self.assertEqual(12, self.counts['reached qemu'])
        self.assertTrue(all(d['qemu'] is not None for d in report['disks']))
        # Said, with the cause and what to look at.
        (warning,) = report['warnings']
        self.assertIn('QMP queries went over the connection the domains '
                      'were read on (could not open a second libvirt '
                      'connection: ', warning)
        self.assertIn('connect to libvirt: too many clients)', warning)
        self.assertIn('max_clients', warning)
        opened.clear()
        rc, out, err = self.run_cli('audit')
        self.assertIn('WARNING QMP queries went over the connection', out)


class InOrderTest(base.TestCase):

    def test_results_in_the_order_of_the_items(self):
        def slow(n):
            time.sleep((5 - n) * 0.01)
            return n * 10
        for workers in (1, 2, 5, 64):
            self.assertEqual([0, 10, 20, 30, 40],
                             audit.in_order(slow, range(5), workers))

    def test_one_worker_is_a_plain_loop_in_this_thread(self):
        threads = audit.in_order(lambda _: threading.current_thread(),
                                 range(3), 1)
        self.assertEqual([threading.current_thread()] * 3, threads)

    def test_the_first_error_in_order_is_raised_after_the_rest(self):
        ended = []

        def call(n):
            time.sleep(0.05 if n == 1 else 0)
            ended.append(n)
            if n in (1, 2):
                raise ValueError(n)
            return n
        with self.assertRaises(ValueError) as caught:
            audit.in_order(call, range(3), 3)
        self.assertEqual((1,), caught.exception.args)
        self.assertEqual([0, 1, 2], sorted(ended))


class FakeLibvirtError(Exception):

    def __init__(self, message, code=1):
        super().__init__(message)
        self.message, self.code = message, code

    def get_error_message(self):
        return self.message

    def get_error_code(self):
        return self.code


def fake_libvirt(**functions):
    """A libvirt module with only what open_libvirt and friends use."""
    def refuse(uri):
        raise AssertionError('this test opened no connection of this kind')
    module = types.SimpleNamespace(
        libvirtError=FakeLibvirtError, VIR_ERR_NO_DOMAIN=42,
        open=refuse, openReadOnly=refuse, openAuth=refuse)
    vars(module).update(functions)
    return module


class OpenLibvirtTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = manage.make_conf(['audit'])

    def test_refused_connection_names_the_uri(self):
        def refuse(uri):
            raise FakeLibvirtError('Failed to connect socket')
        use_module(self, 'libvirt', fake_libvirt(open=refuse))
        err = self.assertRaises(exception.LibvirtError,
                                common.open_libvirt, self.conf)
        self.assertIn('connect to libvirt at qemu:///system', str(err))
        self.assertIn('Failed to connect socket', str(err))

    def test_a_hung_daemon_is_waited_for_a_bounded_time(self):
        release = threading.Event()
        self.addCleanup(release.set)
        use_module(self, 'libvirt',
                   fake_libvirt(open=lambda uri: release.wait(30)))
        with mock.patch.object(common, 'LIBVIRT_TIMEOUT', 0.3):
            started = time.monotonic()
            err = self.assertRaises(exception.LibvirtError,
                                    common.open_libvirt, self.conf)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn('no answer within', str(err))

    def test_read_write_or_read_only(self):
        opened = []
        use_module(self, 'libvirt', fake_libvirt(
            open=lambda uri: opened.append(('rw', uri)) or 'rw',
            openReadOnly=lambda uri: opened.append(('ro', uri)) or 'ro'))
        self.assertEqual('rw', common.open_libvirt(self.conf))
        self.assertEqual('ro', common.open_libvirt(self.conf,
                                                   read_only=True))
        self.assertEqual([('rw', 'qemu:///system'), ('ro', 'qemu:///system')],
                         opened)

    def test_missing_bindings_are_named(self):
        use_module(self, 'libvirt', None)     # import libvirt fails
        err = self.assertRaises(exception.LibvirtError,
                                common.open_libvirt, self.conf)
        self.assertIn('load the libvirt Python bindings', str(err))
        self.assertIn('python3-libvirt', str(err))
        self.assertIn('libvirt-python', str(err))
        self.assertIn("nova-shared-cache[libvirt]", str(err))


class LocalDomainsUsingTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = manage.make_conf(['status', SPEC])

    def use(self, connection):
        use_module(self, 'libvirt', fake_libvirt(
            openReadOnly=lambda uri: connection))

    def test_names_the_domains_using_the_image(self):
        gone = FakeDomain('gone')

        def vanished(flags=0):
            raise FakeLibvirtError('no domain', code=42)
        gone.XMLDesc = vanished
        self.use(FakeConnection([
            FakeDomain('b'), FakeDomain('a'), gone,
            FakeDomain('c', xml('c', spec=OTHER_SPEC, index='2'))]))
        self.assertEqual(['a', 'b'],
                         common.local_domains_using(self.conf, SPEC))

    def test_a_libvirt_error_is_named(self):
        connection = FakeConnection([])

        def fail():
            raise FakeLibvirtError('internal error')
        connection.listAllDomains = fail
        self.use(connection)
        err = self.assertRaises(exception.LibvirtError,
                                common.local_domains_using, self.conf, SPEC)
        self.assertIn('list the domains at qemu:///system: internal error',
                      str(err))
