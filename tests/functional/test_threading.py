"""Concurrent operations on one compute, in the mode the env runs Nova in.

tox -e functional-nova34-threading runs this suite as Nova 34's
nova-compute runs by default: native threads, eventlet not importable;
the other functional envs run it under eventlet (greenthreads). The driver
carries the instance of the operation in a context variable and remembers
the disks it made shared; here several attaches (and then hard reboots) are
held inside the driver at the same moment, each with its own values set,
and every domain must still get the XML of its own volume and the log line
of its own instance.
"""

from concurrent import futures
import threading

import fixtures
import futurist
from nova import context as nova_context
from nova import objects
from nova.virt.libvirt import driver as libvirt_driver

from nova_shared_cache import driver as sc_driver
from tests.functional import base

#: How long a held operation waits for the others (seconds).
HOLD = 30


class ConcurrentOperationsTest(base.SharedCacheFunctionalTest):

    def setUp(self):
        super().setUp()
        self.start_compute()
        self.volumes = [self.cinder.SHARED_VOL, self.cinder.PLAIN_RBD_VOL,
                        self.cinder.SHARED_VOL_2, self.cinder.SHARED_ISCSI_VOL]
        self.servers = [self._create_server(networks='none')
                        for _ in self.volumes]
        self.forget_sent()
        self.held = []

    def hold_volume_disks(self, parties):
        """Hold every volume disk's configuration until ``parties`` are in.

        The hold is at the end of Nova's _get_volume_config, before the
        extension decides on the disk Nova built: each thread has set its
        own instance and reads it only after every other one has set
        theirs. The barrier opens again for the next ``parties`` operations.
        """
        barrier = threading.Barrier(parties, timeout=HOLD)
        novas = libvirt_driver.LibvirtDriver._get_volume_config

        def held(driver, *args, **kwargs):
            conf = novas(driver, *args, **kwargs)
            self.held.append(threading.current_thread().ident)
            barrier.wait()
            return conf

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.driver.LibvirtDriver._get_volume_config',
            held))

    def in_parallel(self, function, items):
        with futures.ThreadPoolExecutor(len(items)) as pool:
            for done in [pool.submit(function, item) for item in items]:
                done.result()

    def assert_each_volume_its_own_xml(self, logged=1, roots=False):
        shared = (self.cinder.SHARED_VOL, self.cinder.SHARED_VOL_2)
        for volume in shared:
            self.assert_shared(self.disks_sent(volume), count=1)
        self.assert_not_shared(self.disks_sent(self.cinder.PLAIN_RBD_VOL))
        iscsi = [d for d in self.all_disks_sent() if d.get('type') == 'block']
        self.assertEqual(1, len(iscsi))
        self.assertEqual('none', iscsi[0].find('driver').get('cache'))
        if roots:
            self.assert_root_disks_untouched()
        # The log line of each shared disk names its own instance.
        log = self.stdlog.logger.output
        for server, volume in zip(self.servers, self.volumes):
            line = 'Shared disk enforced for instance %s: volume %s' % (
                server['id'], volume)
            if volume in shared:
                self.assertEqual(logged, log.count(line), log)
            else:
                self.assertNotIn('volume %s (backend' % volume, log)

    def test_concurrent_attaches_then_hard_reboots(self):
        pairs = list(zip(self.servers, self.volumes))
        self.hold_volume_disks(len(pairs))

        def attach(pair):
            server, volume = pair
            self.api.post_server_volume(
                server['id'], {'volumeAttachment': {'volumeId': volume}})
            self._wait_for_volume_attach(server['id'], volume)

        self.in_parallel(attach, pairs)
        self.assertEqual(len(pairs), len(self.held))
        self.assert_each_volume_its_own_xml()
        # Hard reboots rebuild every disk's XML: the volume disks in a
        # first pass (inside _get_volume_config) and a second one.
        self.forget_sent()
        del self.held[:]

        def reboot(server):
            self._reboot_server(server, hard=True)

        self.in_parallel(reboot, self.servers)
        self.assertEqual(len(pairs), len(self.held))
        self.assert_each_volume_its_own_xml(logged=2, roots=True)


class NothingLeftInPoolThreadsTest(base.SharedCacheFunctionalTest):
    """A pool thread runs the next task with nothing of the last one.

    Native threads of a pool keep their context from task to task
    (greenthreads start afresh); the driver must reset what it set, on
    errors too.
    """

    def test_next_task_on_the_same_thread_sees_defaults(self):
        self.start_compute()
        server = self._create_server(networks='none')
        drv = self.computes['compute1'].driver
        ctxt = nova_context.get_admin_context()
        instance = objects.Instance.get_by_uuid(ctxt, server['id'])
        info = base.rbd_connection_info(self.cinder.SHARED_VOL)
        info['serial'] = self.cinder.SHARED_VOL
        info['multiattach'] = True

        def attach_then_fail():
            # Nova's attach reaches _connect_volume and _get_volume_config
            # (so every variable is set) and then fails in libvirt.
            def refuse(*args, **kwargs):
                raise RuntimeError('libvirt refused the device')
            with fixtures.MockPatch(
                    'nova.virt.libvirt.guest.Guest.attach_device', refuse):
                try:
                    drv.attach_volume(ctxt, info, instance, '/dev/vdb')
                except RuntimeError:
                    return threading.current_thread().ident
            raise AssertionError('the attach did not fail')

        def look():
            return (threading.current_thread().ident,
                    sc_driver._INSTANCE_UUID.get(),
                    sc_driver._NEW_ATTACHMENT.get())

        # One worker: the second task runs on the thread of the first.
        with futurist.ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(attach_then_fail)
            second = pool.submit(look)
            ident = first.result()
            self.assertEqual((ident, None, False), second.result())
        self.assertIn('Shared disk enforced for instance %s'
                      % server['id'], self.stdlog.logger.output)
