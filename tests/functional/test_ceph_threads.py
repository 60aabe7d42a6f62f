"""tests/unit's connect-attempt ordering, in the mode of this env.

The unit suite runs under eventlet (Nova's unit test base); here the same
tests run with native threads in functional-nova34-threading.
"""

from tests.unit import test_concurrency


class ConnectAttemptInThisModeTest(test_concurrency.ConnectAttemptTest):
    pass
