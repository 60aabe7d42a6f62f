"""Render the benchmarks' results files as PNG plots.

    python benchmarks/plots.py RESULTS_DIR PLOTS_DIR

Draws one PNG per results file present (``xml_path.json`` ->
``xml_path.png`` ...); bars are medians, whiskers min and max over trials.
"""

import json
import os
import sys

import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot  # noqa: E402


def _bars(ax, labels, series, ylabel):
    """Grouped bars; ``series`` is [(name, [summary, ...])]."""
    width = 0.8 / len(series)
    for n, (name, stats) in enumerate(series):
        xs = [i + (n - (len(series) - 1) / 2) * width
              for i in range(len(labels))]
        medians = [s['median'] for s in stats]
        errors = [[s['median'] - s['min'] for s in stats],
                  [s['max'] - s['median'] for s in stats]]
        ax.bar(xs, medians, width, yerr=errors, capsize=3, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylabel(ylabel)
    ax.legend()


def xml_path(data, ax):
    r = data['results']
    modes = ['none', 'directsync']
    _bars(ax, ['cache_mode = %s\nratio %.3f' % (m, r[m]['ratio']['median'])
               for m in modes],
          [('stock Nova', [r[m]['stock_us'] for m in modes]),
           ('extension', [r[m]['extension_us'] for m in modes])],
          'microseconds per disk config')
    ax.set_title('Disk XML path: _get_volume_config + _set_cache_mode')


def guard_latency(data, ax):
    r = data['results']
    names = ['stock', 'multiattach', 'not multiattach', 'cold']
    labels = ['stock Nova', 'extension\nmultiattach', 'extension\n'
              'not multiattach', 'extension\nfirst attach']
    _bars(ax, labels, [('connect step', [r[n] for n in names])],
          'milliseconds per attach')
    ax.set_yscale('log')
    ax.set_title('Connect step of an attach on the real cluster')


def fio_datapath(data, axes):
    configs = data['results']['configurations']
    for ax, rw in zip(axes, ('randwrite', 'randread')):
        rows = [c for c in configs if c['rw'] == rw]
        labels = ['%s\n%s' % ({'shared': '(a) shared', 'locked':
                               '(b) excl-lock', 'separate':
                               '(c) separate'}[c['layout']], c['mode'])
                  for c in rows]
        _bars(ax, labels, [('IOPS, 2 clients', [c['iops'] for c in rows])],
              'IOPS (both clients)')
        ax.set_title('fio rbd 4k %s, iodepth %s per client' % (
            rw, data['parameters']['iodepth']))
        ax.tick_params(axis='x', labelsize=8)


def live_switch(data, ax):
    pauses = sorted(data['results']['pauses_ms'])
    ax.plot(range(1, len(pauses) + 1), pauses, 'o-', markersize=3,
            label='VM pause of each switch (sorted)')
    ax.axhline(data['results']['pause_ms']['median'], color='green',
               linestyle='--', label='median %.1f ms'
               % data['results']['pause_ms']['median'])
    ax.axhline(50, color='red', linestyle=':', label='target: median 50 ms')
    ax.set_xlabel('switch')
    ax.set_ylabel('milliseconds paused')
    ax.set_title('fix --live: guest-visible pause')
    ax.legend()


def audit_scaling(data, ax):
    sizes = data['results']['sizes']
    counts = sorted(int(n) for n in sizes)
    for key, label in (('wall_s', 'audit command (with Python start)'),
                       ('scan_s', 'scan alone')):
        ax.errorbar(counts, [sizes[str(n)][key]['median'] for n in counts],
                    yerr=[[sizes[str(n)][key]['median']
                           - sizes[str(n)][key]['min'] for n in counts],
                          [sizes[str(n)][key]['max']
                           - sizes[str(n)][key]['median'] for n in counts]],
                    marker='o', capsize=3, label=label)
    fit = data['results']['scan_fit']
    ax.plot(counts, [fit['intercept_s'] + fit['slope_s'] * n
                     for n in counts], 'k:',
            label='linear fit of scan (r^2 %.4f)' % fit['r2'])
    ax.set_xlabel('domains on the host (libvirt test driver)')
    ax.set_ylabel('seconds')
    ax.set_title('nova-shared-cache audit')
    ax.legend()


def memory(data, ax):
    r = data['results']
    stages = ['imported', 'attached', 'peak']
    _bars(ax, ['after imports', 'after one attach', 'peak'],
          [('stock Nova', [r['stock'][s] for s in stages]),
           ('extension', [r['extension'][s] for s in stages])],
          'resident memory (MiB)')
    ax.set_title('Compute process memory')


PLOTS = {'xml_path': (xml_path, 1), 'guard_latency': (guard_latency, 1),
         'fio_datapath': (fio_datapath, 2), 'live_switch': (live_switch, 1),
         'audit_scaling': (audit_scaling, 1), 'memory': (memory, 1)}


def main(argv):
    results_dir, plots_dir = argv
    os.makedirs(plots_dir, exist_ok=True)
    drawn = 0
    for name, (draw, panels) in PLOTS.items():
        path = os.path.join(results_dir, name + '.json')
        if not os.path.exists(path):
            continue
        with open(path) as f:
            data = json.load(f)
        figure, axes = pyplot.subplots(1, panels,
                                       figsize=(7 * panels, 4.5))
        draw(data, axes)
        figure.tight_layout()
        figure.savefig(os.path.join(plots_dir, name + '.png'), dpi=90)
        pyplot.close(figure)
        drawn += 1
    print('%d plots in %s' % (drawn, plots_dir))
    return 0 if drawn else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
