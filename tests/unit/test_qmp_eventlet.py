"""qmp inside an eventlet-patched process (nova-compute 30-33).

A libvirt call blocks in C; run in a greenthread it would stop every other
greenthread and no bound could interrupt it. Checked in a subprocess (a
monkey patch cannot be undone): a native sleep stands in for the call.
"""

import json
import subprocess
import sys
import textwrap

# Patched, with a greenthread ticking every 50 ms (``ticks``).
PREAMBLE = textwrap.dedent('''
    import eventlet
    eventlet.monkey_patch()
    import ctypes, json, time
    from nova_shared_cache.libvirt import qmp
    libc = ctypes.CDLL(None)
    ticks = []

    def ticker():
        while True:
            ticks.append(time.monotonic())
            eventlet.sleep(0.05)
    eventlet.spawn_n(ticker)
    eventlet.sleep(0)
''')

SCRIPT = PREAMBLE + textwrap.dedent('''
    started = time.monotonic()
    with qmp.offloaded():
        value = qmp.bounded(lambda: libc.usleep(600000) or 'done',
                            timeout=5)
    done_after = time.monotonic() - started
    ticked = len(ticks)
    started = time.monotonic()
    try:
        with qmp.offloaded():
            qmp.bounded(libc.usleep, 2000000, timeout=0.3, what='slow')
        timed_out = False
    except qmp.CallTimeout:
        timed_out = True
    bound_after = time.monotonic() - started
    print(json.dumps({'value': value, 'done_after': done_after,
                      'ticked': ticked, 'timed_out': timed_out,
                      'bound_after': bound_after}))
''')


def test_a_blocking_call_leaves_other_greenthreads_running():
    proc = subprocess.run([sys.executable, '-W', 'ignore', '-c', SCRIPT],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['value'] == 'done'
    assert 0.5 < result['done_after'] < 3, result
    # The ticker ran every 50 ms while the call blocked in C for 600 ms.
    assert result['ticked'] >= 6, result
    # And the bound holds: 0.3 s, not the call's 2 s.
    assert result['timed_out'] is True
    assert result['bound_after'] < 1.5, result


LIMIT_SCRIPT = PREAMBLE + textwrap.dedent('''
    class Domain:
        def name(self):
            return 'd'

    def send(text):
        libc.usleep(1500000)    # QEMU answers after 1.5 s
        return '{"return": {}}'
    monitor = qmp.Monitor(Domain(), timeout=0.3, send=send)
    outcomes = []
    started = time.monotonic()
    with qmp.offloaded(), qmp.in_flight_limit(1):
        for _ in range(2):
            try:
                monitor('query-status')
                outcomes.append('answered')
            except qmp.QmpBusy:
                outcomes.append('busy')
            except qmp.QmpTimeout:
                outcomes.append('timeout')
        busy_after = time.monotonic() - started
        ticked = len(ticks)
        eventlet.sleep(1.5)     # the first command is answered meanwhile
        monitor.timeout = 3
        outcomes.append(monitor('query-status') == {} and 'answered')
    print(json.dumps({'outcomes': outcomes, 'busy_after': busy_after,
                      'ticked': ticked}))
''')


def test_the_in_flight_limit_waits_green_and_frees_on_the_answer():
    proc = subprocess.run([sys.executable, '-W', 'ignore', '-c',
                           LIMIT_SCRIPT],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # One command pending (unanswered within 0.3 s): the next is not sent
    # within its own 0.3 s; once the first is answered, one goes again.
    assert result['outcomes'] == ['timeout', 'busy', 'answered'], result
    assert result['busy_after'] < 1.2, result
    # Other greenthreads ran while this one waited for a slot.
    assert result['ticked'] >= 8, result
