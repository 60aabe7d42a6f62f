"""tools/cloud's stop(): SIGTERM, a bounded wait, then SIGKILL.

nova-compute counts as stopped once its graceful shutdown said nothing is
in progress (Nova 34's compute with native threads never exits on its own
after that here); other services get the whole bound.
"""

import os
import sys
import time

import pytest

from nova_shared_cache_lab import cloud as cloud_mod

#: A service that logs (to its stdout, the service's log) on SIGTERM,
#: optionally the idle mark, and then never exits by itself.
CHILD = r'''
import signal, sys, time
def term(*_):
    if sys.argv[1] == 'idle':
        print('INFO nova.manager [-] Graceful shutdown: no in-progress '
              'tasks.', flush=True)
    else:
        print('INFO nova.compute.manager [-] waiting for 1 task', flush=True)
signal.signal(signal.SIGTERM, term)
print('CHILD-READY', flush=True)
while True:
    time.sleep(1)
'''


@pytest.fixture
def lab(tmp_path):
    c = cloud_mod.Cloud(root=str(tmp_path / 'stack'),
                        venv=str(tmp_path / 'venv'))
    for d in (c.layout.run, os.path.dirname(c.layout.log_of('x'))):
        os.makedirs(d, exist_ok=True)
    return c


def start(lab, name, mode):
    lab.spawn(name, [sys.executable, '-c', CHILD, mode])
    deadline = time.monotonic() + 10
    while b'CHILD-READY' not in open(lab.layout.log_of(name), 'rb').read():
        assert time.monotonic() < deadline, 'the child did not start'
        time.sleep(0.05)
    return lab.pid(name)


@pytest.mark.parametrize('name, mode, low, high', [
    # Said it is idle: killed after the grace, not after the bound.
    ('nova-compute', 'idle', 0.9, 2.5),
    # Work in progress: the whole bound.
    ('nova-compute', 'busy', 3.0, 5.0),
    # Another service saying the same: the whole bound too.
    ('cinder-volume', 'idle', 3.0, 5.0),
])
def test_stop_waits_until_idle_or_the_bound(lab, name, mode, low, high):
    pid = start(lab, name, mode)
    started = time.monotonic()
    lab.stop(name, timeout=3)
    took = time.monotonic() - started
    assert not lab.pid(name)
    # Our own child here: reap it; SIGKILL ended it (it ignores SIGTERM).
    _, status = os.waitpid(pid, os.WNOHANG)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, status
    assert low <= took <= high, took


def test_a_mark_from_an_earlier_run_does_not_count(lab):
    log = lab.layout.log_of('nova-compute')
    with open(log, 'w') as f:
        f.write('INFO nova.manager [-] Graceful shutdown: no in-progress '
                'tasks.\n')
    start(lab, 'nova-compute', 'busy')
    started = time.monotonic()
    lab.stop('nova-compute', timeout=3)
    assert time.monotonic() - started >= 3.0
