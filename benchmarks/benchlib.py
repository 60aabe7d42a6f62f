"""What every benchmark shares: statistics, tables, the results file.

Each benchmark prints a Markdown table and, with ``--json FILE``, writes
its numbers and the machine they were measured on, so that
``benchmarks/plots.py`` and ``doc/performance.md`` read the same figures.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import time


def summary(samples):
    """Median, min, max and count of a list of numbers."""
    samples = sorted(samples)
    return {'median': statistics.median(samples), 'min': samples[0],
            'max': samples[-1], 'n': len(samples)}


def table(headers, rows):
    lines = ['| %s |' % ' | '.join(headers),
             '|%s' % ''.join(' --- |' for _ in headers)]
    lines += ['| %s |' % ' | '.join(str(c) for c in row) for row in rows]
    return '\n'.join(lines)


def fmt(stats, digits=2, scale=1.0):
    """'median (min-max)' of a summary()."""
    return '%.*f (%.*f-%.*f)' % (digits, stats['median'] * scale,
                                 digits, stats['min'] * scale,
                                 digits, stats['max'] * scale)


def _first_line(command):
    try:
        out = subprocess.run(command, capture_output=True, text=True,
                             timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def machine():
    """The machine and the stack versions a figure was measured on."""
    cpu = None
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name')), None)
    except OSError:
        pass
    memory = None
    try:
        with open('/proc/meminfo') as f:
            kib = int(f.readline().split()[1])
            memory = '%.1f GiB' % (kib / 2 ** 20)
    except (OSError, ValueError, IndexError):
        pass
    os_name = None
    try:
        with open('/etc/os-release') as f:
            os_name = dict(line.rstrip('\n').split('=', 1) for line in f
                           if '=' in line).get('PRETTY_NAME', '').strip('"')
    except OSError:
        pass
    return {
        'cpu': cpu, 'cores': os.cpu_count(), 'memory': memory,
        'os': os_name, 'kernel': platform.release(),
        'python': platform.python_version(),
        'ceph': _first_line(['ceph', '--version']),
        'qemu': _first_line(['qemu-system-x86_64', '--version']),
        'libvirt': _first_line(['libvirtd', '--version']),
        'fio': _first_line(['fio', '--version']),
        'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
    }


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--json', metavar='FILE',
                   help='also write the results to FILE')
    return p


def finish(args, name, results, text):
    """Print the table; write the results file if asked."""
    print(text)
    if args.json:
        data = {'benchmark': name, 'machine': machine(),
                'parameters': {k: v for k, v in vars(args).items()
                               if k != 'json'},
                'results': results}
        with open(args.json, 'w') as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write('\n')
