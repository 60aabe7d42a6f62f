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
    cases = [c for c in r if isinstance(r[c], dict) and 'ratio' in r[c]]
    _bars(ax, ['%s\nratio %s' % (c, _ci(r[c]['ratio'])) for c in cases],
          [('stock Nova', [r[c]['stock_us'] for c in cases]),
           ('extension', [r[c]['extension_us'] for c in cases])],
          'microseconds per disk config')
    ax.set_title('Disk XML path: _get_volume_config + _set_cache_mode')


def _ci(ratio):
    if 'low' not in ratio:
        return '%.3f' % ratio['median']
    return '%.3f [%.3f, %.3f]' % (ratio['median'], ratio['low'],
                                  ratio['high'])


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


def api_ops(data, axes):
    r = data['results']
    ops = ['attach', 'detach', 'boot', 'reboot']
    labels = ['server add\nvolume', 'server remove\nvolume',
              'boot from\nmultiattach vol.', 'hard reboot\n(vol. attached)']
    ax = axes[0]
    for n, (variant, name) in enumerate((('stock', 'stock Nova'),
                                         ('extension', 'extension'))):
        offset = (n - 0.5) * 0.35
        for i, op in enumerate(ops):
            samples = r['operations'][op][variant]['samples']
            ax.plot([i + offset] * len(samples), samples, '.', alpha=0.4,
                    color='C%d' % n)
        ax.plot([i + offset for i in range(len(ops))],
                [r['operations'][op][variant]['median'] for op in ops],
                '_', markersize=18, markeredgewidth=2, color='C%d' % n,
                label='%s (dots: samples, bar: median)' % name)
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel('seconds, API request to state reached')
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title('Through the real API (lab cloud)')
    ax = axes[1]
    ratios = [r['operations'][op]['ratio'] for op in ops]
    ax.errorbar(range(len(ops)), [q['median'] for q in ratios],
                yerr=[[q['median'] - q['low'] for q in ratios],
                      [q['high'] - q['median'] for q in ratios]],
                fmt='o', capsize=4, label='median ratio, 95% interval')
    target = ratios[0].get('target', 1.02)
    ax.axhline(target, color='red', linestyle=':',
               label='target <= %.2f' % target)
    ax.axhline(1.0, color='grey', linewidth=0.5)
    for i, q in enumerate(ratios):
        ax.annotate(q.get('verdict', ''), (i, q['high']),
                    textcoords='offset points', xytext=(0, 6),
                    ha='center', fontsize=8)
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel('extension / stock (median)')
    ax.legend(fontsize=8)
    ax.set_title('Ratio of medians')


def audit_running(data, axes):
    r = data['results']
    sizes = sorted(int(n) for n in r['sizes'])
    ax = axes[0]
    for n, workers in enumerate(r['workers']):
        key = str(workers)
        name = 'workers %s' % (workers or 'default')
        for size in sizes:
            samples = r['sizes'][str(size)]['by_workers'][key][
                'wall_samples_s']
            ax.plot([size] * len(samples), samples, '.', alpha=0.4,
                    color='C%d' % n)
        fit = r['fits'][key]['wall']
        ax.plot([0, sizes[-1]], [fit['intercept_s'], fit['intercept_s']
                                 + fit['slope_s'] * sizes[-1]],
                '-', color='C%d' % n, label='%s: %.1f ms/domain + %.2f s'
                % (name, fit['slope_s'] * 1000, fit['intercept_s']))
    ax.set_xlabel('running domains (TCG guests, one shared RBD disk each)')
    ax.set_ylabel('seconds, whole audit --json command')
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title('audit of real running guests, QMP and Ceph asked')
    ax = axes[1]
    fits = [r['fits'][str(w)]['wall'] for w in r['workers']]
    xs = range(len(fits))
    ax.errorbar(xs, [f['value_s'] for f in fits],
                yerr=[[f['value_s'] - f['low_s'] for f in fits],
                      [f['high_s'] - f['value_s'] for f in fits]],
                fmt='o', capsize=4, label='line at %d domains, 95%% '
                'interval' % fits[0]['at'])
    ax.axhline(fits[0]['target_s'], color='red', linestyle=':',
               label='target < %g s' % fits[0]['target_s'])
    for i, f in enumerate(fits):
        ax.annotate('%.2f s, %s' % (f['value_s'], f['verdict']),
                    (i, f['high_s']), textcoords='offset points',
                    xytext=(0, 6), ha='center', fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(['--workers %s' % (w or 'default')
                        for w in r['workers']])
    ax.set_xlim(-0.5, len(fits) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_ylabel('seconds (extrapolated)')
    ax.legend(fontsize=8)
    ax.set_title('Extrapolated to %d running domains' % fits[0]['at'])


PLOTS = {'xml_path': (xml_path, 1), 'guard_latency': (guard_latency, 1),
         'fio_datapath': (fio_datapath, 2), 'live_switch': (live_switch, 1),
         'audit_scaling': (audit_scaling, 1),
         'audit_running': (audit_running, 2), 'memory': (memory, 1),
         'api_ops': (api_ops, 2)}


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
