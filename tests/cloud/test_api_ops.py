"""benchmarks/api_ops.py once, with tiny parameters, on the cloud.

Not a measurement: one sample per operation and driver means nothing.
This keeps the benchmark working (the API calls, the driver switches, the
checks of the domain XML) and checks that it measured what it says: both
drivers ran, each start loaded the driver it claims, every operation has
its samples, and both gave the shared disk ``<shareable/>`` and
``cache='none'``.

To stay near two minutes it runs with Nova's default options
(``--options defaults``, what the session's cloud already runs: the
extension's block needs no restart of nova-compute, only the switch to
stock Nova does) and leaves nova-compute with stock Nova's driver: the
next test that needs the extension restarts it anyway.
"""

import json
import os
import subprocess
import sys

TOP = os.environ['NSC_TOP']
SCRIPT = os.path.join(TOP, 'benchmarks', 'api_ops.py')
OPERATIONS = ('attach', 'detach', 'boot', 'reboot')
#: Nova's defaults: what the session's cloud runs (conftest).
OPTIONS = {}


def cloud_python():
    venv = os.environ.get('NSC_CLOUD_VENV') or os.path.join(TOP,
                                                            '.venv-cloud')
    python = os.path.join(venv, 'bin', 'python')
    return python if os.path.exists(python) else sys.executable


def test_api_ops_smoke(cloud, guest_image, volume_type, tmp_path):
    out = tmp_path / 'api_ops.json'
    cloud.configure('extension', {})
    # --no-restore: the next test that wants the extension restarts
    # nova-compute anyway (cloud.configure), so giving it back here would
    # be one restart (about 30 s) for nothing.
    proc = subprocess.run(
        [cloud_python(), SCRIPT, '--blocks', '1', '--per-block', '1',
         '--warmup', '0', '--settle', '0', '--options', 'defaults',
         '--first', 'extension', '--no-restore', '--json', str(out)],
        capture_output=True, text=True, check=False, timeout=900)
    # Whatever happened, the session's cloud no longer knows what
    # nova-compute runs: its next configure() runs tools/cloud up.
    cloud.driver, cloud.options = None, None
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '| --- |' in proc.stdout
    with open(out) as f:
        data = json.load(f)
    r = data['results']
    assert r['order'] == ['extension', 'stock']
    assert r['compute_options'] == OPTIONS
    for variant in ('stock', 'extension'):
        seen = r['variants'][variant]
        # The driver check ran at every switch and found the driver.
        assert len(seen['starts']) == 1, seen
        start = seen['starts'][0]
        assert start['driver'] == variant and start['loaded'], start
        assert start['extension_started'] == (variant == 'extension')
        assert start['compute_options'] == OPTIONS
        for op in OPERATIONS:
            samples = r['operations'][op][variant]['samples']
            assert len(samples) == 1 and samples[0] > 0, (op, variant)
        # Both drivers give the shared disk the same XML, live and in the
        # definition, after attach, reboot and boot from volume.
        for op in ('attach', 'reboot', 'boot'):
            assert seen['disks'][op] == {'shareable, cache=none': 2}, (
                op, variant, seen['disks'])
    for op in OPERATIONS:
        ratio = r['operations'][op]['ratio']
        assert ratio['n'] == [1, 1]
        assert ratio['verdict'] in ('met', 'missed', 'cannot tell')
    assert r['switch_s']['n'] == 2
    assert r['polls'] > 0
