"""audit --format prometheus: the findings as metrics, read back with the
Prometheus client library's own parser of the text format."""

import io
import os
import stat
import tempfile
from unittest import mock

from nova_shared_cache import atomicfile
from nova_shared_cache.cmd import manage
from nova_shared_cache import exception
from nova_shared_cache import metrics
from tests.unit import test_audit
from tests.unit.test_audit import FakeDomain
from tests.unit.test_audit import xml

try:
    from prometheus_client import parser as prom_parser
except ImportError:     # pragma: no cover - Nova 34 brings it
    prom_parser = None


def parse(text):
    """{(name, ((label, value), ...)): value} of every sample."""
    if prom_parser is None:
        raise AssertionError('prometheus_client is needed to check the '
                             'metrics (Nova 34 brings it)')
    samples = {}
    for family in prom_parser.text_string_to_metric_families(text):
        assert family.type == 'gauge', family
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def disk_labels(name, image=test_audit.SPEC):
    return (('disk', 'vdb'), ('domain', name), ('image', image),
            ('uuid', 'uuid-' + name))


class RenderTest(test_audit.AuditCase):

    def metrics(self, *args):
        rc, out, err = self.run_cli('audit', '--format', 'prometheus', *args)
        return rc, out, err

    def test_a_host_with_a_hazard_and_a_clean_disk(self):
        # a and b cache one image without <shareable/>; c is alone.
        self.domains = [FakeDomain('a'), FakeDomain('b'),
                        FakeDomain('c', xml('c', spec=test_audit.OTHER_SPEC,
                                            index='2'),
                                   xml('c', spec=test_audit.OTHER_SPEC))]
        rc, out, err = self.metrics()
        self.assertEqual((1, ''), (rc, err))
        samples = parse(out)
        name = metrics.PREFIX
        for dom in ('a', 'b'):
            labels = disk_labels(dom)
            for gauge, value in (('disk_shared', 1), ('disk_caching', 1),
                                 ('disk_not_shareable', 1),
                                 ('disk_live_differs', 0),
                                 ('disk_features', 0), ('disk_findings', 3),
                                 ('disk_running', 1)):
                self.assertEqual(value, samples[name + gauge, labels],
                                 (dom, gauge))
            for code, where in (('caching', 'qemu'),
                                ('caching', 'definition'),
                                ('not-shareable', 'definition')):
                self.assertEqual(1, samples[
                    name + 'finding', tuple(sorted(
                        labels + (('code', code), ('where', where))))])
        clean = disk_labels('c', test_audit.OTHER_SPEC)
        for gauge in ('disk_shared', 'disk_caching', 'disk_not_shareable',
                      'disk_findings'):
            self.assertEqual(0, samples[name + gauge, clean], gauge)
        self.assertFalse([k for k in samples if k[0] == name + 'finding'
                          and ('domain', 'c') in k[1]])
        for gauge, value in (('audit_success', 1), ('audit_exit_code', 1),
                             ('audit_domains', 3), ('audit_disks', 3),
                             ('audit_shared_disks', 2),
                             ('audit_findings', 6), ('audit_errors', 0),
                             ('audit_warnings', 0)):
            self.assertEqual(value, samples[name + gauge, ()], gauge)
        self.assertGreater(samples[name + 'audit_timestamp_seconds', ()],
                           1.7e9)
        (usable,) = [v for k, v in samples.items()
                     if k[0] == name + 'guard_credentials_usable']
        self.assertIn(usable, (0, 1))

    def test_a_clean_host_gives_zeros_not_nothing(self):
        self.domains = [FakeDomain('a', xml('a', cache='none',
                                            shareable=True, index='2'),
                                   xml('a', cache='none', shareable=True),
                                   direct=True)]
        rc, out, _ = self.metrics()
        samples = parse(out)
        self.assertEqual(0, rc)
        labels = disk_labels('a')
        self.assertEqual(1, samples[metrics.PREFIX + 'disk_shared', labels])
        self.assertEqual(0, samples[metrics.PREFIX + 'disk_caching', labels])
        self.assertEqual(1, samples[metrics.PREFIX + 'audit_success', ()])

    def test_output_file_is_replaced_whole(self):
        self.domains = [FakeDomain('a'), FakeDomain('b')]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'nova_shared_cache.prom')
            with open(path, 'w') as f:
                f.write('old\n')
            old_inode = os.stat(path).st_ino
            rc, out, err = self.metrics('--output', path)
            self.assertEqual((1, '', ''), (rc, out, err))
            with open(path) as f:
                samples = parse(f.read())
            self.assertEqual(2, samples[metrics.PREFIX + 'audit_disks', ()])
            self.assertEqual(['nova_shared_cache.prom'], os.listdir(tmp))
            self.assertEqual(0o644, stat.S_IMODE(os.stat(path).st_mode))
            # A new file took the old one's name (a reader holding the old
            # one open still reads it whole) ...
            self.assertNotEqual(old_inode, os.stat(path).st_ino)
            # ... and a write that fails leaves the old file as it was and
            # no temporary file behind.
            with open(path) as f:
                before = f.read()
            with mock.patch.object(atomicfile.os, 'replace',
                                   side_effect=OSError('disk full')):
                self.assertRaises(OSError, metrics.write_atomically, path,
                                  'new\n')
            with open(path) as f:
                self.assertEqual(before, f.read())
            self.assertEqual(['nova_shared_cache.prom'], os.listdir(tmp))

    def test_a_nova_conf_that_cannot_be_read_still_says_so(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'nsc.prom')
            with open(path, 'w') as f:
                f.write('nova_shared_cache_audit_success 1\n')
            out, err = io.StringIO(), io.StringIO()
            rc = manage.main(['--config-file', os.path.join(tmp, 'missing'),
                              'audit', '--format', 'prometheus',
                              '--output=%s' % path], out=out, err=err)
            self.assertEqual((2, ''), (rc, out.getvalue()))
            with open(path) as f:
                samples = parse(f.read())
        self.assertEqual(0, samples[metrics.PREFIX + 'audit_success', ()])
        (failed,) = [k for k in samples
                     if k[0] == metrics.PREFIX + 'audit_failed']
        self.assertIn('Config', dict(failed[1])['error_type'])

    def test_a_domain_named_twice_is_one_domain(self):
        self.domains = [FakeDomain('a'), FakeDomain('b')]
        rc, out, _ = self.metrics('--domain', 'a', '--domain', 'a')
        samples = parse(out)
        self.assertEqual(1, samples[metrics.PREFIX + 'audit_disks', ()])

    def test_an_audit_that_cannot_run_still_says_so(self):
        # A file that said "all well" must not survive a failing audit.
        self.open_libvirt.side_effect = exception.LibvirtError(
            what='connect to libvirt at qemu:///system', reason='refused')
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'nsc.prom')
            rc, out, err = self.metrics('--output', path)
            self.assertEqual((2, ''), (rc, out))
            self.assertIn('refused', err)
            with open(path) as f:
                samples = parse(f.read())
        self.assertEqual(0, samples[metrics.PREFIX + 'audit_success', ()])
        self.assertEqual(2, samples[metrics.PREFIX + 'audit_exit_code', ()])
        self.assertEqual(1, samples[metrics.PREFIX + 'audit_failed',
                                    (('error_type', 'LibvirtError'),)])
        # To standard output as well.
        rc, out, _ = self.metrics()
        self.assertEqual(0, parse(out)[metrics.PREFIX + 'audit_success', ()])

    def test_usage_errors_name_the_options_and_write_nothing(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'nsc.prom')
            # --json promises one JSON document, errors too.
            rc, out, err = self.run_cli('audit', '--json', '--format',
                                        'prometheus')
            self.assertEqual(2, rc)
            self.assertIn('--json and --format prometheus: give one',
                          test_audit.json.loads(out)['error'])
            cases = [
                (('audit', '--output', path), '--output is for --format '
                                              'prometheus'),
                (('audit', '--format', 'prometheus', '--output',
                  os.path.join(tmp, 'missing', 'x.prom')),
                 'does not exist'),
                (('audit', '--format', 'prometheus', '--output', tmp),
                 'is not a file name'),
                (('audit', '--format', 'xml'), "invalid choice: 'xml'"),
            ]
            for args, message in cases:
                rc, out, err = self.run_cli(*args)
                self.assertEqual((2, ''), (rc, out), args)
                self.assertIn(message, err, args)
            self.assertEqual([], os.listdir(tmp))
        self.open_libvirt.assert_not_called()

    def test_format_json_is_json(self):
        self.domains = [FakeDomain('a'), FakeDomain('b')]
        rc, out, _ = self.run_cli('audit', '--format', 'json')
        self.assertEqual(1, rc)
        self.assertEqual('findings', test_audit.json.loads(out)['meaning'])
        self.open_libvirt.side_effect = exception.LibvirtError(
            what='connect', reason='refused')
        rc, out, _ = self.run_cli('audit', '--format=json')
        self.assertEqual('LibvirtError',
                         test_audit.json.loads(out)['error_type'])


class EscapeTest(test_audit.base.TestCase):

    def test_errors_of_one_image_are_one_series(self):
        # Two disks of one image read with different monitors or users
        # both fail when Ceph is down: one series, counted.
        report = {'errors': [{'image': 'volumes/v', 'error': 'timeout'},
                             {'image': 'volumes/v', 'error': 'timeout'},
                             {'domain': 'd', 'error': 'gone'}],
                  'disks': [], 'seconds': 1.0, 'domains': 1, 'findings': 0,
                  'warnings': []}
        samples = parse(metrics.render(report, {'source': 'keyring',
                                                'user': 'cinder',
                                                'usable': True}, 2, now=1.0))
        self.assertEqual(2, samples[metrics.PREFIX + 'audit_error',
                                    (('image', 'volumes/v'),)])
        self.assertEqual(1, samples[metrics.PREFIX + 'audit_error',
                                    (('domain', 'd'),)])

    def test_labels_are_escaped(self):
        report = {'errors': [{'domain': 'we"ird\\name\nx', 'error': 'e'}],
                  'disks': [], 'seconds': 0.5, 'domains': 1, 'findings': 0,
                  'warnings': []}
        text = metrics.render(report, {'source': 'none', 'user': None},
                              2, now=1.0)
        self.assertIn('domain="we\\"ird\\\\name\\nx"', text)
        samples = parse(text)
        self.assertEqual(1, samples[metrics.PREFIX + 'audit_error',
                                    (('domain', 'we"ird\\name\nx'),)])
        self.assertEqual(0, samples[metrics.PREFIX + 'audit_success', ()])
        self.assertEqual(0, samples[metrics.PREFIX
                                    + 'guard_credentials_usable',
                                    (('source', 'none'), ('user', ''))])
