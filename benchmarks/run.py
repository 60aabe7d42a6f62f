"""Run every benchmark, write its results and render the plots.

    python benchmarks/run.py [--only NAME ...] [--out DIR] [--smoke] [--keep]

Brings the embedded stack up (Ceph, libvirtd, the guest image) unless it is
already up, runs each benchmark with its default parameters (``--smoke``:
tiny ones, to prove the scripts still work), writes ``DIR/NAME.json``
(default ``benchmarks/results``) and the plots into ``DIR/plots`` (with
``--plots DIR`` elsewhere), and takes the stack down again if it started
it (``--keep`` leaves it). The benchmarks of ``CLOUD`` run last, on the
lab cloud (``tools/cloud``) with its venv's Python: the cloud is brought up
if it is not, and taken down again afterwards if it was not up (the
embedded stack goes with it; a stack that was up alone is brought up again,
as a new one). ``tox -e bench`` runs this as root;
``doc/source/performance.md`` reads these files.
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
    'xml_path': (False, ['--callgrind', '10000'],
                 ['--rounds', '2', '--calls', '50']),
    'guard_latency': (True, [], ['--trials', '2', '--calls', '3',
                                 '--cold', '2']),
    'fio_datapath': (True, [], ['--trials', '1', '--runtime', '1',
                                '--size-mb', '16']),
    'live_switch': (True, [], ['--switches', '1']),
    'audit_scaling': (False, [], ['--domains', '10', '100',
                                  '--trials', '1']),
    'audit_running': (True, [], ['--sizes', '2', '6', '--trials', '2']),
    'memory': (True, [], ['--processes', '1']),
    'api_ops': (False, [], ['--blocks', '1', '--per-block', '1',
                            '--warmup', '0', '--settle', '0']),
}
#: The benchmarks that need the lab cloud (tools/cloud) and its venv.
CLOUD = {'api_ops'}
CLOUD_TOOL = os.path.join(TOP, 'tools', 'cloud')


def cloud_python():
    venv = os.environ.get('NSC_CLOUD_VENV') or os.path.join(TOP,
                                                            '.venv-cloud')
    return os.path.join(venv, 'bin', 'python')


def cloud_is_up():
    return subprocess.call([CLOUD_TOOL, 'status'],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) == 0


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
    # The cloud's benchmarks last: taking the cloud down takes the
    # embedded stack with it.
    names = ([n for n in args.only if n not in CLOUD]
             + [n for n in args.only if n in CLOUD])
    stack = None
    probe = embedded_stack.Stack()
    stack_was_up = probe.ceph.is_up() and probe.libvirt.is_up()
    if any(BENCHMARKS[name][0] for name in names) and not stack_was_up:
        print('==> bringing the embedded stack up', flush=True)
        stack = embedded_stack.Stack().up()
    failed = []
    cloud_up = None     # the cloud was up before: True/False; None: unused
    try:
        for name in names:
            _, full, smoke = BENCHMARKS[name]
            python = sys.executable
            if name in CLOUD:
                python = cloud_python()
                if cloud_up is None:
                    cloud_up = cloud_is_up()
                    if not cloud_up:
                        print('==> bringing the lab cloud up: tools/cloud '
                              'up', flush=True)
                        subprocess.check_call([CLOUD_TOOL, 'up'])
            command = [python, os.path.join(HERE, name + '.py'),
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
        if cloud_up is False and not args.keep:
            print('==> taking the lab cloud down: tools/cloud down',
                  flush=True)
            subprocess.call([CLOUD_TOOL, 'down'])
            # It took the embedded stack with it.
            stack = None
            if stack_was_up:
                print('==> bringing the embedded stack up again (a new '
                      'one: it was up before the cloud)', flush=True)
                embedded_stack.Stack().up()
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
