"""libvirtd and virtlogd (no systemd here), and the ceph secret.

Uses the system daemons (``qemu:///system``). A daemon this module started is
recorded under the stack root and stopped again by ``down``; one that was
already running is left alone.
"""

import json
import os
import tempfile
import uuid

from nova_shared_cache_lab import common

LIBVIRT_PACKAGES = ('libvirt-daemon-system libvirt-daemon-driver-qemu '
                    'libvirt-clients qemu-system-x86 qemu-block-extra')
URI = 'qemu:///system'
SECRET_USAGE = 'client.cinder secret (nova-shared-cache embedded stack)'


#: Seconds a libvirtd that was just started may take to answer its first
#: connection: it probes every QEMU emulator installed (about 2 s each on
#: this machine kind; devstack installs Debian's qemu-system, 25 of them,
#: where the embedded stack needs qemu-system-x86 alone), then caches them.
FIRST_ANSWER = 300


class Libvirt:

    def __init__(self, root=None):
        self.root = os.path.join(root or common.root_dir(), 'libvirt')
        self.state_file = os.path.join(self.root, 'state.json')

    def virsh(self, *args, timeout=60, check=True):
        return common.run(['virsh', '-q', '-c', URI] + list(args),
                          timeout=timeout, check=check)

    def _state(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {'started': [], 'secret_uuid': None}

    def _save(self, state):
        os.makedirs(self.root, exist_ok=True)
        with open(self.state_file, 'w') as f:
            json.dump(state, f)

    def is_up(self, timeout=15):
        try:
            return self.virsh('version', timeout=timeout,
                              check=False).returncode == 0
        except common.StackError:
            # Timed out: libvirtd is still busy (see FIRST_ANSWER).
            return False

    def up(self):
        common.require_commands('libvirtd', 'virtlogd', 'virsh',
                                'qemu-system-x86_64',
                                package_hint=LIBVIRT_PACKAGES)
        os.makedirs(self.root, exist_ok=True)
        state = self._state()
        if common.run(['pgrep', '-x', 'virtlogd'], check=False).returncode:
            common.progress('starting virtlogd')
            common.run(['virtlogd', '-d'])
            state['started'].append('virtlogd')
        if common.run(['pgrep', '-x', 'libvirtd'], check=False).returncode:
            common.progress('starting libvirtd')
            common.run(self._libvirtd_command())
            state['started'].append('libvirtd')
        self._save(state)
        common.wait_for(lambda: self.is_up(timeout=FIRST_ANSWER),
                        FIRST_ANSWER, 'libvirtd to answer on %s' % URI)

    def _libvirtd_command(self):
        # NOTE: where /dev/kvm exists but KVM cannot run guests (nested
        # sandboxes), libvirtd re-probes QEMU's capabilities on every
        # defineXML (15-50 s each, seen with libvirt 9.0): it finds
        # /dev/kvm usable, probes, QEMU reports no KVM, and the next lookup
        # finds the cached capabilities stale. The guests here are TCG
        # anyway: in a private mount namespace, /dev/kvm becomes a device
        # node that the QEMU user may not open (mode 000), so libvirt sees
        # no usable KVM and keeps its cache. /dev/null would not do: it is
        # open to everyone, so libvirt takes it for a usable /dev/kvm.
        # Nothing changes for the rest of the host.
        if os.path.exists('/dev/kvm') and os.environ.get(
                'NSC_USE_KVM') != '1':
            hidden = os.path.join(self.root, 'kvm-hidden')
            return ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
                    'rm -f "$1" && mknod -m 000 "$1" c 1 3 && '
                    'mount --bind "$1" /dev/kvm && exec libvirtd -d',
                    'libvirtd-without-kvm', hidden]
        return ['libvirtd', '-d']

    def restart_libvirtd(self, timeout=60):
        """Stop libvirtd and start it again the way ``up`` does.

        Running QEMU processes stay: the new libvirtd reconnects to them
        (running the qemu hook's ``reconnect``) and reads its hooks anew.
        """
        def pids():
            return common.run(['pgrep', '-x', 'libvirtd'],
                              check=False).stdout.split()
        for pid in pids():
            common.stop_pid(int(pid), timeout=timeout)
        common.wait_for(lambda: not pids(), timeout, 'libvirtd to exit')
        common.run(self._libvirtd_command())
        common.wait_for(lambda: self.is_up(timeout=FIRST_ANSWER),
                        FIRST_ANSWER, 'libvirtd to answer on %s' % URI)

    def secret_uuid(self):
        return self._state().get('secret_uuid') or None

    def ensure_secret(self, key_file, wanted=None, private=True):
        """A ceph secret holding the client key; returns its uuid.

        ``wanted``: the uuid it must have (a deployment tool that already
        wrote it into cinder.conf); an existing secret of this stack with
        another uuid is replaced. ``private``: libvirt's private flag
        (devstack-plugin-ceph and most deployment tools say 'no', which
        lets the guard read the key; 'yes' keeps it inside libvirt). A
        secret whose flag differs is defined again under the same uuid.
        """
        state = self._state()
        secret_uuid = state.get('secret_uuid') or self._find_secret()
        if secret_uuid and wanted and secret_uuid != wanted:
            self.virsh('secret-undefine', secret_uuid, check=False)
            secret_uuid = None
        if secret_uuid and self.secret_private(secret_uuid) != private:
            self.virsh('secret-undefine', secret_uuid, check=False)
            wanted, secret_uuid = secret_uuid, None
        if not secret_uuid:
            secret_uuid = self._define_secret(wanted, private)
        if state.get('secret_uuid') != secret_uuid:
            state['secret_uuid'] = secret_uuid
            self._save(state)
        # --file takes the base64 text a cephx key already is; the key never
        # appears on a command line.
        self.virsh('secret-set-value', '--secret', secret_uuid,
                   '--file', key_file)
        return secret_uuid

    def _find_secret(self):
        listing = self.virsh('secret-list').stdout.split('\n')
        for line in listing:
            parts = line.split(None, 1)
            if len(parts) == 2 and SECRET_USAGE in parts[1]:
                return parts[0]
        return None

    def secret_private(self, secret_uuid):
        """libvirt's private flag of a secret (None: no such secret)."""
        out = self.virsh('secret-dumpxml', secret_uuid, check=False)
        if out.returncode:
            return None
        return "private='yes'" in out.stdout or 'private="yes"' in out.stdout

    def _define_secret(self, secret_uuid=None, private=True):
        secret_uuid = secret_uuid or str(uuid.uuid4())
        xml = ("<secret ephemeral='no' private='%s'><uuid>%s</uuid>"
               "<usage type='ceph'><name>%s</name></usage></secret>"
               % ('yes' if private else 'no', secret_uuid, SECRET_USAGE))
        with tempfile.NamedTemporaryFile('w', suffix='.xml') as f:
            f.write(xml)
            f.flush()
            self.virsh('secret-define', f.name)
        return secret_uuid

    def domains(self, prefix):
        out = self.virsh('list', '--all', '--name').stdout.split()
        return [name for name in out if name.startswith(prefix)]

    def remove_domains(self, names):
        for name in names:
            self.virsh('destroy', name, check=False)
            if self.virsh('undefine', name, '--nvram',
                          check=False).returncode:
                self.virsh('undefine', name, check=False)

    def down(self, domain_prefix):
        state = self._state()
        if self.is_up():
            if domain_prefix:
                self.remove_domains(self.domains(domain_prefix))
            secret_uuid = state.get('secret_uuid') or self._find_secret()
            if secret_uuid:
                self.virsh('secret-undefine', secret_uuid, check=False)
        for daemon in reversed(state.get('started', [])):
            for pid in common.run(['pgrep', '-x', daemon],
                                  check=False).stdout.split():
                common.stop_pid(int(pid))
        if os.path.exists(self.state_file):
            os.unlink(self.state_file)
