"""The embedded stack waits for a libvirtd busy with its first connection.

A libvirtd that devstack has just started probes every QEMU emulator of
Debian's ``qemu-system`` (25 here) before it answers its first client: a
minute on this machine kind. The real stack.sh with the plugin failed on
it ("virsh -q -c did not finish within 15s") when the embedded stack gave
up on the first ``virsh version`` that timed out.
"""

from nova_shared_cache_lab import common
from nova_shared_cache_lab import virt


class FakeRun:
    """``common.run``: virsh times out ``busy`` times, then answers."""

    def __init__(self, busy):
        self.busy = busy
        self.calls = []

    def __call__(self, cmd, timeout=60, check=True, **kwargs):
        self.calls.append((cmd, timeout))
        if cmd[0] == 'pgrep':
            return common.subprocess.CompletedProcess(cmd, 0, '1\n', '')
        if cmd[0] == 'virsh' and 'version' in cmd:
            if self.busy:
                self.busy -= 1
                raise common.StackError(
                    reason='%s did not finish within %ss'
                    % (' '.join(cmd[:3]), timeout))
        return common.subprocess.CompletedProcess(cmd, 0, '', '')


def test_a_busy_first_answer_is_waited_for(monkeypatch, tmp_path):
    fake = FakeRun(busy=2)
    monkeypatch.setattr(common, 'run', fake)
    monkeypatch.setattr(common, 'require_commands', lambda *a, **k: None)
    virt.Libvirt(root=str(tmp_path)).up()
    versions = [t for cmd, t in fake.calls if 'version' in cmd]
    assert len(versions) == 3
    # Each try may take as long as the first probe can.
    assert set(versions) == {virt.FIRST_ANSWER}
    assert virt.FIRST_ANSWER >= 120


def test_is_up_says_no_on_a_timeout(monkeypatch, tmp_path):
    monkeypatch.setattr(common, 'run', FakeRun(busy=1))
    libvirt = virt.Libvirt(root=str(tmp_path))
    assert libvirt.is_up() is False
    assert libvirt.is_up() is True
