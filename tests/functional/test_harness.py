"""The harness runs Nova's code the way Nova's own test runner does."""

import eventlet.patcher
from oslo_db.sqlalchemy import enginefacade
import testtools


class ProcessPreparedTest(testtools.TestCase):

    def test_db_transaction_state_is_per_greenthread(self):
        # tests/functional/__init__.py must let Nova monkey patch before
        # oslo.db is imported; otherwise greenthreads share one transaction
        # state and live migrations fail at random.
        self.assertTrue(eventlet.patcher.is_monkey_patched('thread'))
        local_base = enginefacade._TransactionContextTLocal.__mro__[1]
        self.assertEqual('eventlet.corolocal', local_base.__module__)
