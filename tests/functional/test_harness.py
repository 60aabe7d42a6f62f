"""The harness runs Nova's code the way Nova's own test runner does."""

import os
import sys

from oslo_db.sqlalchemy import enginefacade
import testtools

#: Nova's own switch (nova/monkey_patch.py): tox -e
#: functional-nova34-threading sets it, as Nova 34's compute runs.
THREADING = os.environ.get('OS_NOVA_DISABLE_EVENTLET_PATCHING',
                           '').lower() in ('1', 'true', 'yes')


class ProcessPreparedTest(testtools.TestCase):

    def test_db_transaction_state_is_per_thread_of_the_mode(self):
        local_base = enginefacade._TransactionContextTLocal.__mro__[1]
        if THREADING:
            # As Nova 34's nova-compute starts by default: not patched,
            # and eventlet cannot even be imported.
            from nova import utils
            self.assertTrue(utils.concurrency_mode_threading())
            self.assertNotIn('eventlet', sys.modules)
            self.assertRaises(ImportError, __import__, 'eventlet')
            self.assertEqual('_thread', local_base.__module__)
            return
        # tests/functional/__init__.py must let Nova monkey patch before
        # oslo.db is imported; otherwise greenthreads share one transaction
        # state and live migrations fail at random.
        import eventlet.patcher
        self.assertTrue(eventlet.patcher.is_monkey_patched('thread'))
        self.assertEqual('eventlet.corolocal', local_base.__module__)
