"""Pause of ``fix --live`` and time of ``audit`` on real guests.

Run as root with the embedded stack up (``tools/stack up``), in the tox
``integration`` env's Python::

    python benchmarks/live_switch.py [--switches 24] [--vms 2]

Boots ``--vms`` tiny guests (TCG) that share one RBD volume attached the way
stock Nova attaches a non-multiattach volume with ``disk_cachemodes =
network=writeback``, then repeats: switch every guest's disk to direct I/O
(the code ``fix --live`` runs), detach and attach again (cached again).
The guest named first writes O_DIRECT blocks in a loop the whole time, so
the switches happen under guest I/O. Prints the VM pause (suspend to
resume, as the tool sees it) and the whole switch, and the audit time of
the host with these domains.
"""

import io
import json
import sys
import tempfile
import time

import benchlib
from nova_shared_cache.cmd import manage
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import livefix
from nova_shared_cache_lab import compute as compute_harness
from nova_shared_cache_lab import probe
from nova_shared_cache_lab import stack as embedded_stack


#: Median guest-visible pause of a live switch (ms).
TARGET_PAUSE_MS = 50.0


def main():
    parser = benchlib.parser(__doc__.split('\n')[0])
    parser.add_argument('--switches', type=int, default=24)
    parser.add_argument('--vms', type=int, default=2)
    args = parser.parse_args()
    stack = embedded_stack.Stack()
    stack.secret_uuid = stack.libvirt.secret_uuid()
    if not stack.secret_uuid:
        sys.exit('the embedded stack is not up: tools/stack up')
    compute = compute_harness.Compute(extension=False,
                                      disk_cachemodes=['network=writeback'])
    volume_id, ci = stack.new_volume(multiattach=False)
    vms = []
    pauses, totals, audits = [], [], []
    with tempfile.NamedTemporaryFile('w', suffix='.conf') as nova_conf:
        nova_conf.write('[shared_cache]\nceph_conf = %s\n[libvirt]\n'
                        'rbd_user = cinder\n' % stack.ceph.client_conf)
        nova_conf.flush()
        try:
            for _ in range(args.vms):
                instance = compute.boot(compute.new_instance())
                console = compute.console(instance)
                console.wait_ready()
                compute.attach(instance, ci)
                vms.append((instance, console,
                            probe.find_disk(console, volume_id)))
            writer_console, writer_dev = vms[0][1], vms[0][2]
            writer_console.run(
                '(while :; do for b in $(seq 5000 5063); do dd if=/dev/zero '
                'of=%s bs=4096 seek=$b count=1 oflag=direct conv=notrunc '
                '2>/dev/null; done; done) </dev/null >/dev/null 2>&1 & true'
                % writer_dev)
            for _ in range(args.switches):
                for instance, _, _ in vms:
                    dom = compute.domain(instance)._domain
                    disk = [d for d in domxml.rbd_disks(domxml.parse(
                        dom.XMLDesc(0))) if d.serial == volume_id][0]
                    result = livefix.switch(dom, disk)
                    assert result.state == 'switched', result
                    pauses.append(result.pause_ms)
                    totals.append(result.total_ms)
                out = io.StringIO()
                started = time.perf_counter()
                code = manage.main(['--config-file', nova_conf.name, 'audit',
                                    '--json'], out, io.StringIO())
                audits.append((time.perf_counter() - started) * 1000)
                report = json.loads(out.getvalue())
                assert code in (0, 1), report
                for instance, console, _ in vms:
                    compute.detach(instance, ci)
                    compute.attach(instance, ci)
        finally:
            for instance, console, _ in vms:
                console.close()
                compute.destroy(instance)
            compute.close()
    domains = report['domains']
    pause = benchlib.summary(pauses)
    pause['low'], pause['high'] = benchlib.interval(pauses)
    pause['target'] = TARGET_PAUSE_MS
    pause['verdict'] = benchlib.verdict(pause['low'], pause['high'],
                                        TARGET_PAUSE_MS)
    results = {'pause_ms': pause,
               'switch_ms': benchlib.summary(totals),
               'audit_ms': benchlib.summary(audits), 'domains': domains,
               'pauses_ms': pauses}
    text = benchlib.table(
        ['fix --live pause (ms)', 'median [95% CI]', 'target', 'verdict'],
        [['VM paused (suspend to resume)', benchlib.fmt_ci(pause, 1),
          '< %g' % TARGET_PAUSE_MS, pause['verdict']]]) + '\n\n'
    text += benchlib.table(
        ['fix --live, %d guests on one image (ms)' % args.vms, 'samples',
         'median', 'min', 'max'],
        [[name, results[key]['n']] + ['%.1f' % results[key][k]
                                      for k in ('median', 'min', 'max')]
         for name, key in (
             ('VM paused (suspend to resume)', 'pause_ms'),
             ('whole switch (both stages)', 'switch_ms'),
             ('audit of the host (%d domains, Ceph asked)' % domains,
              'audit_ms'))])
    benchlib.finish(args, 'live_switch', results, text)
    compute_harness.exit_process(0)


if __name__ == '__main__':
    main()
