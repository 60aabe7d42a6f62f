"""How ``nova-shared-cache audit`` scales with the domains on a host.

libvirt's test driver (``test:///FILE``, in-process, no daemon) holds as
many running, persistent domains as its node file defines. Each domain has
an RBD root disk of its own; domains come in pairs sharing one RBD volume,
half of the pairs as Nova makes a multiattach disk (``<shareable/>``,
cache none), half caching without ``<shareable/>`` (findings). The whole
command runs as an operator runs it (``nova-shared-cache --config-file F
audit --json --no-ceph``), so the time includes starting Python; the audit
reports its own scan time too. The test driver has no QEMU monitor, so the
QMP query of a real host is not in these figures (``live_switch.py``
reports audit on real QEMU guests)::

    python benchmarks/audit_scaling.py [--domains 10 100 1000] [--trials 3]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import benchlib

DOMAIN = """  <domain type='test'>
    <name>instance-%(n)08x</name>
    <uuid>%(uuid)s</uuid>
    <memory unit='MiB'>128</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='network' device='disk'>
        <driver name='qemu' type='raw' cache='writeback'/>
        <source protocol='rbd' name='vms/%(uuid)s_disk'>
          <host name='127.0.0.1' port='3300'/>
        </source>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='network' device='disk'>
        <driver name='qemu' type='raw' cache='%(cache)s'/>
        <source protocol='rbd' name='volumes/volume-%(pair)08x'>
          <host name='127.0.0.1' port='3300'/>
        </source>
        <target dev='vdb' bus='virtio'/>%(shareable)s
        <serial>volume-%(pair)08x</serial>
      </disk>
    </devices>
  </domain>
"""


def node_xml(count):
    domains = []
    for n in range(count):
        pair = n // 2
        safe = pair % 2 == 0
        domains.append(DOMAIN % {
            'n': n, 'uuid': uuid.UUID(int=n + 1), 'pair': pair,
            'cache': 'none' if safe else 'writeback',
            'shareable': '\n        <shareable/>' if safe else ''})
    return '<node>\n%s</node>\n' % ''.join(domains)


def command():
    script = os.path.join(os.path.dirname(sys.executable),
                          'nova-shared-cache')
    if os.path.exists(script):
        return [script]
    return [sys.executable, '-m', 'nova_shared_cache.cmd.manage']


def run_audit(conf_file):
    started = time.perf_counter()
    proc = subprocess.run(command() + ['--config-file', conf_file, 'audit',
                                       '--json', '--no-ceph'],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit('audit failed (%d): %s' % (proc.returncode,
                                                    proc.stderr.strip()))
    return wall, json.loads(proc.stdout)


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--domains', type=int, nargs='+',
                        default=[10, 100, 1000])
    parser.add_argument('--trials', type=int, default=3)
    args = parser.parse_args()
    results = {'sizes': {}}
    wall_points, scan_points = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.domains:
            node = os.path.join(tmp, 'node-%d.xml' % count)
            with open(node, 'w') as f:
                f.write(node_xml(count))
            conf_file = os.path.join(tmp, 'nova-%d.conf' % count)
            with open(conf_file, 'w') as f:
                f.write('[libvirt]\nconnection_uri = test://%s\n' % node)
            walls, scans = [], []
            for _ in range(args.trials):
                wall, report = run_audit(conf_file)
                if report['domains'] != count:
                    raise SystemExit('audit saw %d domains, not %d'
                                     % (report['domains'], count))
                walls.append(wall)
                scans.append(report['seconds'])
            findings = report['findings']
            results['sizes'][str(count)] = {
                'wall_s': benchlib.summary(walls),
                'scan_s': benchlib.summary(scans),
                'disks': len(report['disks']), 'findings': findings}
            wall_points += [(count, w) for w in walls]
            scan_points += [(count, s) for s in scans]
    results['wall_fit'] = dict(zip(('slope_s', 'intercept_s', 'r2'),
                                   benchlib.fit(wall_points)))
    results['scan_fit'] = dict(zip(('slope_s', 'intercept_s', 'r2'),
                                   benchlib.fit(scan_points)))
    rows = []
    for count in args.domains:
        r = results['sizes'][str(count)]
        rows.append([count, r['disks'], r['findings'],
                     benchlib.fmt(r['wall_s'], 3),
                     benchlib.fmt(r['scan_s'], 3),
                     '%.2f' % (r['scan_s']['median'] / count * 1000)])
    text = benchlib.table(
        ['domains', 'RBD disks', 'findings', 'audit command (s)',
         'scan alone (s)', 'scan per domain (ms)'], rows)
    wf, sf = results['wall_fit'], results['scan_fit']
    text += ('\n\nLinear fit, command: %.3f ms/domain + %.3f s (r^2 %.4f); '
             'scan: %.3f ms/domain + %.3f s (r^2 %.4f). %d trials each, '
             'median (min-max).' % (
                 wf['slope_s'] * 1000, wf['intercept_s'], wf['r2'],
                 sf['slope_s'] * 1000, sf['intercept_s'], sf['r2'],
                 args.trials))
    benchlib.finish(args, 'audit_scaling', results, text)


if __name__ == '__main__':
    main()
