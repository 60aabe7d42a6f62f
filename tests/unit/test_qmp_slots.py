"""QMP commands in libvirt at once: a process never has more than the limit.

A command QEMU does not answer holds a libvirtd worker and a request slot
of its connection (max_client_requests, 5 by default) until QEMU answers.
"""

import threading
import time
import unittest

from nova_shared_cache.libvirt import qmp


class Qemu:
    """A QEMU that answers only once ``answer`` is set; counts commands."""

    def __init__(self):
        self.answer = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.inside = 0
        self.most = 0

    def send(self, text):
        with self.lock:
            self.sent += 1
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            self.answer.wait(30)
            return '{"return": []}'
        finally:
            with self.lock:
                self.inside -= 1


class Domain:

    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class SlotsTest(unittest.TestCase):

    def setUp(self):
        self.qemu = Qemu()
        self.addCleanup(self.qemu.answer.set)

    def monitor(self, n, timeout=0.3):
        return qmp.Monitor(Domain('d%d' % n), timeout=timeout,
                           send=self.qemu.send)

    def wait_until_free(self):
        deadline = time.monotonic() + 10
        while qmp._get_slots().used and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(0, qmp._get_slots().used)

    def test_unanswered_commands_hold_their_slots_the_next_is_not_sent(self):
        for n in range(qmp.MAX_IN_FLIGHT):
            with self.assertRaises(qmp.QmpTimeout):
                self.monitor(n)('query-named-block-nodes')
        self.assertEqual(qmp.MAX_IN_FLIGHT, self.qemu.sent)
        started = time.monotonic()
        with self.assertRaises(qmp.QmpBusy) as caught:
            self.monitor(9)('query-named-block-nodes')
        # Waited its own bound for a slot, then gave up without sending.
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertEqual(qmp.MAX_IN_FLIGHT, self.qemu.sent)
        self.assertNotIsInstance(caught.exception, qmp.QmpTimeout)
        self.assertIn('run QMP query-named-block-nodes on domain d9: not '
                      'sent: %d earlier QMP command(s) of this process were '
                      'still unanswered after 0.3 s' % qmp.MAX_IN_FLIGHT,
                      str(caught.exception))
        # Once QEMU answers, the slots are free again.
        self.qemu.answer.set()
        self.wait_until_free()
        self.assertEqual([], self.monitor(10)('query-named-block-nodes'))

    def test_a_slot_freed_in_time_is_taken_within_the_same_bound(self):
        for n in range(qmp.MAX_IN_FLIGHT):
            with self.assertRaises(qmp.QmpTimeout):
                self.monitor(n)('query-named-block-nodes')
        threading.Timer(0.2, self.qemu.answer.set).start()
        started = time.monotonic()
        self.assertEqual([], self.monitor(9, timeout=2)(
            'query-named-block-nodes'))
        self.assertLess(time.monotonic() - started, 1.5)

    def test_at_most_the_limit_inside_libvirt_from_many_threads(self):
        errors = []

        def ask(n):
            try:
                self.monitor(n, timeout=1)('query-named-block-nodes')
            except qmp.QmpError as err:
                errors.append(err)
        threads = [threading.Thread(target=ask, args=(n,))
                   for n in range(12)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        self.qemu.answer.set()
        for thread in threads:
            thread.join(10)
        self.assertEqual([], errors)
        self.assertEqual(12, self.qemu.sent)
        self.assertEqual(qmp.MAX_IN_FLIGHT, self.qemu.most)

    def test_a_lower_limit_inside_the_block(self):
        with qmp.in_flight_limit(1):
            with self.assertRaises(qmp.QmpTimeout):
                self.monitor(0)('query-named-block-nodes')
            with self.assertRaises(qmp.QmpBusy) as caught:
                self.monitor(1)('query-named-block-nodes')
        self.assertEqual(1, caught.exception.limit)
        self.assertEqual(1, self.qemu.sent)
        # Outside the block the process limit applies again.
        with self.assertRaises(qmp.QmpTimeout):
            self.monitor(2)('query-named-block-nodes')
        self.assertEqual(2, self.qemu.sent)

    def test_a_send_that_fails_frees_its_slot(self):
        def refuse(text):
            raise RuntimeError('libvirt said no')
        for n in range(qmp.MAX_IN_FLIGHT + 2):
            with self.assertRaises(RuntimeError):
                qmp.Monitor(Domain('d%d' % n), timeout=0.3,
                            send=refuse)('query-status')
        self.assertEqual(0, qmp._get_slots().used)

    def hang_the_limit(self):
        """MAX_IN_FLIGHT commands pending, each past its 0.3 s bound."""
        for n in range(qmp.MAX_IN_FLIGHT):
            with self.assertRaises(qmp.QmpTimeout):
                self.monitor(n)('query-named-block-nodes')

    def test_a_slot_found_late_still_gets_the_whole_bound_to_answer(self):
        self.hang_the_limit()
        # A slot frees after 0.25 s of the next command's 0.3 s; QEMU
        # then takes 0.2 s to answer it: within its own bound.
        threading.Timer(0.25, self.qemu.answer.set).start()
        late = qmp.Monitor(Domain('late'), timeout=0.3, send=lambda text: (
            time.sleep(0.2), '{"return": []}')[1])
        self.assertEqual([], late('query-named-block-nodes'))

    def test_a_freed_slot_wakes_the_waiter_whose_limit_it_fits(self):
        slots = qmp._Slots()
        for _ in range(3):
            self.assertTrue(slots.take(3, 0))
        outcomes = {}

        def take(name, limit):
            outcomes[name] = slots.take(limit, 1.5)
            ended[name] = time.monotonic()
        ended = {}
        # The one-at-a-time waiter waits first: a single wake-up would go
        # to it, and it cannot go with two still pending.
        one = threading.Thread(target=take, args=('one', 1))
        one.start()
        time.sleep(0.1)
        three = threading.Thread(target=take, args=('three', 3))
        three.start()
        time.sleep(0.1)
        given = time.monotonic()
        slots.give()
        three.join(5)
        one.join(5)
        self.assertEqual({'one': False, 'three': True}, outcomes)
        # At once, not when its own wait ran out.
        self.assertLess(ended['three'] - given, 0.5)
