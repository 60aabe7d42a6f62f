"""What every benchmark shares: statistics, tables, the results file.

Each benchmark prints a Markdown table and, with ``--json FILE``, writes
its numbers and the machine they were measured on, so that
``benchmarks/plots.py`` and ``doc/source/performance.md`` read the same
figures.
"""

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import time

#: Confidence level of every interval in the reports.
CONFIDENCE = 0.95
#: Bootstrap resamples per interval.
RESAMPLES = 5000


def summary(samples):
    """Median, min, max and count of a list of numbers."""
    samples = sorted(samples)
    return {'median': statistics.median(samples), 'min': samples[0],
            'max': samples[-1], 'n': len(samples)}


def interval(samples, stat=statistics.median, confidence=CONFIDENCE,
             resamples=RESAMPLES, seed=0):
    """Percentile-bootstrap confidence interval of ``stat(samples)``.

    ``samples`` are independent trials (for an A/B comparison, the ratio of
    one interleaved pair each). Returns (low, high); with fewer than three
    samples there is nothing to resample and the interval is the range.
    """
    samples = list(samples)
    if len(samples) < 3:
        return min(samples), max(samples)
    rng = random.Random(seed)
    return _bounds([stat(rng.choices(samples, k=len(samples)))
                    for _ in range(resamples)], confidence)


def _bounds(stats, confidence):
    """The two-sided percentile bounds of bootstrap statistics."""
    stats = sorted(stats)
    tail = (1 - confidence) / 2
    return (stats[int(tail * len(stats))],
            stats[min(len(stats) - 1, int((1 - tail) * len(stats)))])


def _two_groups(a, b, combine, confidence, resamples, seed, block=None):
    """combine(median(a), median(b)), its bootstrap bounds and the counts.

    Each resample draws both groups anew; with ``block``, whole runs of
    that many consecutive samples are drawn.
    """
    a, b = list(a), list(b)
    rng = random.Random(seed)

    def chunks(samples):
        if not block:
            return [[x] for x in samples]
        return [samples[i:i + block] for i in range(0, len(samples), block)]

    def draw(groups):
        picked = rng.choices(groups, k=len(groups))
        return statistics.median([x for group in picked for x in group])

    a_groups, b_groups = chunks(a), chunks(b)
    low, high = _bounds([combine(draw(a_groups), draw(b_groups))
                         for _ in range(resamples)], confidence)
    return {'median': combine(statistics.median(a), statistics.median(b)),
            'low': low, 'high': high, 'n': [len(a), len(b)],
            'confidence': confidence}


def ratio_of_medians(a, b, target=None, lower_is_better=True,
                     confidence=CONFIDENCE, resamples=RESAMPLES, seed=0,
                     block=None):
    """median(a) / median(b) with a bootstrap interval and a verdict.

    For two groups of samples not paired one by one: each resample draws
    both groups anew. With ``block``, the samples came in blocks of that
    many consecutive ones run under the same conditions (one start of a
    service, say); whole blocks are drawn then, so that what differs from
    block to block widens the interval instead of passing for independent
    noise.
    """
    result = _two_groups(a, b, lambda x, y: x / y, confidence,
                         resamples, seed, block)
    if block:
        result['block'] = block
    if target is not None:
        result['target'] = target
        result['verdict'] = verdict(result['low'], result['high'], target,
                                    lower_is_better)
    return result


def difference_of_medians(a, b, confidence=CONFIDENCE,
                          resamples=RESAMPLES, seed=0):
    """median(a) - median(b) with a bootstrap interval (independent groups)."""
    return _two_groups(a, b, lambda x, y: x - y, confidence, resamples,
                       seed)


def verdict(low, high, target, lower_is_better=True):
    """'met', 'missed' or 'cannot tell' for an interval against a target.

    Met only when the whole interval is on the good side of the target,
    missed only when it is all on the bad side: otherwise this machine's
    noise cannot tell.
    """
    good = high <= target if lower_is_better else low >= target
    bad = low > target if lower_is_better else high < target
    return 'met' if good else 'missed' if bad else 'cannot tell'


def ratio_summary(ratios, target=None, lower_is_better=True):
    """summary() of per-trial ratios plus their interval and verdict."""
    result = summary(ratios)
    result['low'], result['high'] = interval(ratios)
    result['confidence'] = CONFIDENCE
    if target is not None:
        result['target'] = target
        result['verdict'] = verdict(result['low'], result['high'], target,
                                    lower_is_better)
    return result


def fmt_ci(stats, digits=3):
    """'median [low, high]' of a ratio_summary()."""
    return '%.*f [%.*f, %.*f]' % (digits, stats['median'], digits,
                                  stats['low'], digits, stats['high'])


def fit(points):
    """Least-squares line through (x, y): slope, intercept, r^2."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for _, y in points)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in points)
    return slope, intercept, 1 - ss_res / ss_tot if ss_tot else 1.0


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
