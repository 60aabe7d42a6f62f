# Nova prepares the process (eventlet monkey patching) in the modules its own
# test runner imports first: nova.tests.functional on Nova 30-31, nova.test on
# Nova 32 and later. It must happen before anything imports oslo.db, whose
# per-thread transaction state is otherwise shared by every greenthread.
import nova.test  # noqa: F401
import nova.tests.functional  # noqa: F401
