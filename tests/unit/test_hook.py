"""The qemu hook's decisions, with the status directory in a temp dir."""

import io
import os
import tempfile
import unittest

from nova_shared_cache import conf as sc_conf
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import hook

DISK = """<disk type='network' device='disk'>
  <driver name='qemu' type='raw'{cache}/>
  <source protocol='rbd' name='{spec}'><host name='10.0.0.1' port='3300'/>
  {snapshot}</source><target dev='{dev}' bus='virtio'/>{shareable}{ro}</disk>
"""


def domain(name, *disks):
    return ('<domain type="qemu"><name>%s</name><devices>%s</devices>'
            '</domain>' % (name, ''.join(disks))).encode()


def disk(spec='volumes/v1', cache='writeback', shareable=True, dev='vdb',
         readonly=False, snapshot=None):
    return DISK.format(spec=spec, dev=dev,
                       cache=" cache='%s'" % cache if cache else '',
                       shareable='<shareable/>' if shareable else '',
                       ro='<readonly/>' if readonly else '',
                       snapshot="<snapshot name='%s'/>" % snapshot
                       if snapshot else '')


def settings(mode, cache_mode='none'):
    return lambda: sc_conf.Settings(cache_mode=cache_mode,
                                    enabled_backends=('rbd',),
                                    hook_mode=mode)


class DecideTest(unittest.TestCase):

    def setUp(self):
        self.status = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.unlink(os.path.join(self.status, f))
                                 for f in os.listdir(self.status)])

    def decide(self, args, xml, mode='deny', **kwargs):
        return hook.decide(args, xml, settings(mode, **kwargs), self.status)

    def running(self, name, *disks):
        with open(os.path.join(self.status, name + '.xml'), 'wb') as f:
            f.write(b'<domstatus state="running">' + domain(name, *disks)
                    + b'</domstatus>')

    def test_deny(self):
        out = self.decide(['d1', 'prepare', 'begin', '-'],
                          domain('d1', disk()))
        self.assertEqual(hook.DENY, out.code)
        self.assertIn("refuses the start of domain d1: disk vdb (rbd "
                      "volumes/v1, <shareable/>) has cache='writeback'",
                      out.message)
        self.assertEqual(b'', out.stdout)

    def test_default_cache_counts_as_caching(self):
        out = self.decide(['d1', 'prepare', 'begin', '-'],
                          domain('d1', disk(cache=None)))
        self.assertEqual(hook.DENY, out.code)
        self.assertIn("cache='default'", out.message)

    def test_safe_and_unrelated_domains_pass_silently(self):
        for xml in (domain('d1'), domain('d1', disk(cache='none')),
                    domain('d1', disk(cache='directsync')),
                    domain('d1', disk(shareable=False)),
                    domain('d1', disk(cache='bogus'))):
            out = self.decide(['d1', 'prepare', 'begin', '-'], xml)
            self.assertEqual((0, b'', None),
                             (out.code, out.stdout, out.message), xml)

    def test_image_of_another_running_domain_is_shared(self):
        self.running('d0', disk(shareable=False, cache='none'))
        out = self.decide(['d1', 'prepare', 'begin', '-'],
                          domain('d1', disk(shareable=False)))
        self.assertEqual(hook.DENY, out.code)
        self.assertIn('also used by running domain(s) d0', out.message)
        # Its own status file (a restart) does not count.
        os.rename(os.path.join(self.status, 'd0.xml'),
                  os.path.join(self.status, 'd1.xml'))
        out = self.decide(['d1', 'prepare', 'begin', '-'],
                          domain('d1', disk(shareable=False)))
        self.assertEqual(0, out.code)

    def test_read_only_sharing_is_allowed(self):
        start = ['d1', 'prepare', 'begin', '-']
        self.running('d0', disk(shareable=False, readonly=True),
                     disk('volumes/v2', shareable=False, snapshot='s',
                          dev='vdc'))
        for xml in (domain('d1', disk(shareable=False, readonly=True)),
                    domain('d1', disk('volumes/v2', shareable=False,
                                      snapshot='s')),
                    # a snapshot <shareable/> or not, never written
                    domain('d1', disk('volumes/v2', snapshot='s')),
                    # another snapshot of v2, or v2 itself, is not s
                    domain('d1', disk('volumes/v2', shareable=False,
                                      snapshot='t'))):
            out = self.decide(start, xml)
            self.assertEqual((0, None), (out.code, out.message), xml)
        # A writer next to a reader: both read what the other cached.
        out = self.decide(start, domain('d1', disk(shareable=False)))
        self.assertEqual(hook.DENY, out.code)
        self.assertIn('also used by running domain(s) d0 (read-only)',
                      out.message)
        self.running('d2', disk(shareable=False))
        out = self.decide(start, domain('d1', disk(shareable=False,
                                                   readonly=True)))
        self.assertEqual(hook.DENY, out.code)
        self.assertIn('d0 (read-only), d2', out.message)

    def test_a_disk_recorded_by_fix_live_stays_fixed(self):
        # fix --live switched this plain caching disk; libvirt's XML (the
        # live XML a migration or save image carries) still says writeback.
        recorded = (
            "<metadata><nsc:shared-disks xmlns:nsc='%s'>"
            "<disk image='volumes/v1' target='vdb' cache='none'/>"
            "</nsc:shared-disks></metadata>" % domxml.METADATA_NS)
        xml = domain('d1', disk(shareable=False)).replace(
            b'</devices>', b'</devices>' + recorded.encode())
        for op in ('migrate', 'restore'):
            out = self.decide(['d1', op, 'begin', '-'], xml, mode='fix')
            self.assertEqual(0, out.code, out.message)
            (fixed,) = domxml.rbd_disks(domxml.parse(out.stdout))
            self.assertEqual(('none', True), (fixed.cache, fixed.shareable))
            self.assertIn("switched to cache='none' by nova-shared-cache "
                          "fix --live", out.message)
        out = self.decide(['d1', 'prepare', 'begin', '-'], xml)
        self.assertEqual(hook.DENY, out.code)
        # The record is for vdb: the image on another target is not it.
        moved = xml.replace(b"dev='vdb'", b"dev='vdc'")
        out = self.decide(['d1', 'restore', 'begin', '-'], moved, mode='fix')
        self.assertEqual((0, b''), (out.code, out.stdout))
        # Without the record the same disk is a private one.
        out = self.decide(['d1', 'restore', 'begin', '-'],
                          domain('d1', disk(shareable=False)), mode='fix')
        self.assertEqual((0, b''), (out.code, out.stdout))

    def test_warn(self):
        out = self.decide(['d1', 'prepare', 'begin', '-'],
                          domain('d1', disk()), mode='warn')
        self.assertEqual((0, b''), (out.code, out.stdout))
        self.assertIn('WARNING', out.message)

    def test_fix_rewrites_migrate_and_restore(self):
        for op in ('migrate', 'restore'):
            out = self.decide(['d1', op, 'begin', '-'],
                              domain('d1', disk(shareable=False, dev='vdb'),
                                     disk('volumes/v2', dev='vdc')),
                              mode='fix', cache_mode='directsync')
            self.assertEqual(0, out.code, out.message)
            disks = domxml.rbd_disks(domxml.parse(out.stdout))
            # vdb is not shareable and no other domain ran: untouched.
            self.assertEqual([('vdb', 'writeback', False),
                              ('vdc', 'directsync', True)],
                             [(d.target, d.cache, d.shareable)
                              for d in disks])

    def test_fix_cannot_rewrite_a_start(self):
        out = self.decide(['d1', 'prepare', 'begin', '-'],
                          domain('d1', disk()), mode='fix')
        self.assertEqual(hook.DENY, out.code)
        self.assertIn("fix --config --domain d1", out.message)

    def test_deny_migrate(self):
        out = self.decide(['d1', 'migrate', 'begin', '-'],
                          domain('d1', disk()))
        self.assertEqual(hook.DENY, out.code)
        self.assertIn('refuses the migrate of domain d1', out.message)

    def test_other_operations_are_not_looked_at(self):
        def boom():
            raise AssertionError('settings read')
        for args in (['d1', 'start', 'begin', '-'],
                     ['d1', 'stopped', 'end', '-'],
                     ['d1', 'migrate', 'end', '-'], ['d1'], []):
            out = hook.decide(args, b'garbage', boom, self.status)
            self.assertEqual((0, b'', None),
                             (out.code, out.stdout, out.message), args)

    def test_odd_xml_passes_with_a_note(self):
        for xml in (b'', b'<domain', b'\xff\xfe', b'<a/>'):
            out = self.decide(['d1', 'prepare', 'begin', '-'], xml)
            self.assertEqual(0, out.code, xml)

    def test_unreadable_configuration_passes(self):
        def broken():
            raise RuntimeError('bad nova.conf')
        out = hook.decide(['d1', 'prepare', 'begin', '-'],
                          domain('d1', disk()), broken, self.status)
        self.assertEqual(0, out.code)
        self.assertIn('bad nova.conf', out.message)

    def test_settings_read_only_when_needed(self):
        calls = []

        def counting():
            calls.append(1)
            return settings('deny')()
        hook.decide(['d1', 'prepare', 'begin', '-'],
                    domain('d1', disk(cache='none')), counting, self.status)
        self.assertEqual([], calls)


class MainTest(unittest.TestCase):

    def run_main(self, args, xml, conf_text):
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as f:
            f.write(conf_text)
            f.flush()
            out, err = io.BytesIO(), io.StringIO()
            code = hook.main(['--config-file', f.name] + args,
                             stdin=io.BytesIO(xml), stdout=out, stderr=err,
                             status_dir=tempfile.gettempdir() + '/none')
        return code, out.getvalue(), err.getvalue()

    def test_reads_hook_mode_from_the_config_file(self):
        xml = domain('d1', disk())
        code, out, err = self.run_main(
            ['d1', 'restore', 'begin', '-'], xml,
            '[shared_cache]\nhook_mode = fix\n')
        self.assertEqual(0, code, err)
        self.assertEqual('none', domxml.rbd_disks(
            domxml.parse(out))[0].cache)
        code, out, err = self.run_main(
            ['d1', 'restore', 'begin', '-'], xml,
            '[shared_cache]\nhook_mode = deny\n')
        self.assertEqual((hook.DENY, b''), (code, out))
        self.assertIn('refuses the restore', err)

    def test_reads_hook_mode_from_a_config_dir(self):
        # nova.conf says fix; the operator's override in nova.conf.d says
        # deny. The hook must read both, in oslo.config's order.
        with tempfile.TemporaryDirectory() as top:
            conf = os.path.join(top, 'nova.conf')
            with open(conf, 'w') as f:
                f.write('[shared_cache]\nhook_mode = fix\n')
            conf_d = os.path.join(top, 'nova.conf.d')
            os.mkdir(conf_d)
            with open(os.path.join(conf_d, '50-hook.conf'), 'w') as f:
                f.write('[shared_cache]\nhook_mode = deny\n')
            out, err = io.BytesIO(), io.StringIO()
            code = hook.main(['--config-file', conf, '--config-dir', conf_d,
                              '--', 'd1', 'restore', 'begin', '-'],
                             stdin=io.BytesIO(domain('d1', disk())),
                             stdout=out, stderr=err,
                             status_dir=tempfile.gettempdir() + '/none')
        self.assertEqual((hook.DENY, b''), (code, out.getvalue()),
                         err.getvalue())
        self.assertIn('refuses the restore', err.getvalue())

    def test_bad_option_value_allows(self):
        code, out, err = self.run_main(
            ['d1', 'prepare', 'begin', '-'], domain('d1', disk()),
            '[shared_cache]\nhook_mode = maybe\n')
        self.assertEqual(0, code)
        self.assertIn('hook_mode', err)


class FastPathTest(unittest.TestCase):

    def test_same_operations_as_the_hook(self):
        from nova_shared_cache.cmd import hook as cmd_hook
        self.assertEqual(hook.ACTS_ON, cmd_hook.ACTS_ON)

    def test_operation(self):
        from nova_shared_cache.cmd import hook as cmd_hook
        self.assertEqual('prepare', cmd_hook.operation(
            ['--config-file', 'a', '--config-file', 'b', 'd', 'prepare',
             'begin', '-']))
        self.assertIsNone(cmd_hook.operation(['d']))

    def test_split_args_keeps_files_and_dirs_in_order(self):
        from nova_shared_cache.cmd import hook as cmd_hook
        self.assertEqual(
            (['--config-file', 'a', '--config-dir', 'd.d'],
             ['--config-dir', 'prepare', 'begin', '-']),
            cmd_hook.split_args(['--config-file', 'a', '--config-dir', 'd.d',
                                 '--', '--config-dir', 'prepare', 'begin',
                                 '-']))
