# Nova prepares the process (eventlet monkey patching) in the modules its own
# test runner imports first: nova.tests.functional (and nova.tests) on Nova
# 30, 31, 33 and 34, nova.test on Nova 32. It must happen before anything
# imports oslo.db, whose per-thread transaction state would otherwise be
# shared by every greenthread (a live migration then fails at random with
# "Can't upgrade a READER transaction to a WRITER").
import nova.tests.functional  # noqa: F401 (first)
import nova.test  # noqa: F401,H306 (after nova.tests.functional)
