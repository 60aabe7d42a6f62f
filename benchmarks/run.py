"""Run every benchmark, write its results and render the plots.

    python benchmarks/run.py [--only NAME ...] [--out DIR] [--smoke] [--keep]

Brings the embedded stack up (Ceph, libvirtd, the guest image) unless it is
already up, runs each benchmark with its default parameters (``--smoke``:
tiny ones, to prove the scripts still work), writes ``DIR/NAME.json``
(default ``benchmarks/results``) and the plots into ``DIR/plots`` (with
``--plots DIR`` elsewhere), and takes the stack down again if it started
it (``--keep`` leaves it). ``tox -e bench`` runs this as root;
``doc/performance.md`` reads these files.
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, TOP)

from nova_shared_cache_lab import stack as embedded_stack  # noqa: E402

#: name: (needs the real stack, full arguments, smoke arguments)
BENCHMARKS = {
    'xml_path': (False, ['--callgrind', '3000'],
                 ['--trials', '2', '--calls', '50']),
    'guard_latency': (True, [], ['--trials', '2', '--calls', '3',
                                 '--cold', '2']),
    'fio_datapath': (True, [], ['--trials', '1', '--runtime', '1',
                                '--size-mb', '16']),
    'live_switch': (True, [], ['--switches', '1']),
    'audit_scaling': (False, [], ['--domains', '10', '100',
                                  '--trials', '1']),
    'audit_running': (True, [], ['--sizes', '2', '6', '--trials', '2']),
    'memory': (True, [], ['--processes', '1']),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', nargs='+', choices=sorted(BENCHMARKS),
                        default=list(BENCHMARKS))
    parser.add_argument('--out', default=os.path.join(HERE, 'results'))
    parser.add_argument('--plots', help='default: OUT/plots')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny parameters: check the scripts work')
    parser.add_argument('--keep', action='store_true',
                        help='leave the embedded stack up')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join(
                   [TOP] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    stack = None
    if any(BENCHMARKS[name][0] for name in args.only):
        probe = embedded_stack.Stack()
        if not (probe.ceph.is_up() and probe.libvirt.is_up()):
            print('==> bringing the embedded stack up', flush=True)
            stack = embedded_stack.Stack().up()
    failed = []
    try:
        for name in args.only:
            _, full, smoke = BENCHMARKS[name]
            command = [sys.executable, os.path.join(HERE, name + '.py'),
                       '--json', os.path.join(args.out, name + '.json')]
            command += smoke if args.smoke else full
            print('\n==> %s' % ' '.join(command[1:]), flush=True)
            started = time.monotonic()
            code = subprocess.call(command, env=env)
            print('==> %s: exit %d after %.0f s'
                  % (name, code, time.monotonic() - started), flush=True)
            if code:
                failed.append(name)
    finally:
        if stack is not None and not args.keep:
            stack.down()
    plots = args.plots or os.path.join(args.out, 'plots')
    code = subprocess.call([sys.executable, os.path.join(HERE, 'plots.py'),
                            args.out, plots], env=env)
    if code:
        failed.append('plots')
    if failed:
        print('failed: %s' % ', '.join(failed))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
