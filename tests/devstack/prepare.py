"""The ``prepare`` phase of the real devstack job (see realjob.py).

Everything here is what this machine kind lacks for devstack and what a
Zuul job's pre-run playbooks would have placed: a service manager stand-in,
the stack user, the trees under /opt/stack, local.conf.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

import realjob
from realjob import DEST
from realjob import DEVSTACK
from realjob import JobError
from realjob import PLUGIN_TREE
from realjob import REQUIREMENTS
from realjob import run
from realjob import say
from realjob import STACK_USER
from realjob import write

VENDOR_DIRS = (os.path.join(os.path.dirname(realjob.TOP), 'shared', 'vendor'),
               '/work/shared/vendor')
SNAPSHOTS = {'devstack': ('NSC_DEVSTACK_SOURCE', 'devstack-*.tar.gz'),
             'requirements': ('NSC_REQUIREMENTS_SOURCE',
                              'requirements-*.tar.gz')}

#: /bin/systemctl: docker-systemctl-replacement's systemctl3.py, run by
#: Debian's Python, with its journal in /var/log/journal.
SYSTEMCTL = '/bin/systemctl'
SYSTEMCTL_DIVERTED = '/bin/systemctl.distrib'
JOURNALCTL = '/bin/journalctl'
JOURNALCTL_DIVERTED = '/bin/journalctl.distrib'
STANDIN_DIR = '/usr/local/lib/nsc-systemctl'
MARK = '# nova-shared-cache devstack job: '

#: Unit overrides (drop-ins) the stand-in needs here, and why.
DROPINS = {
    # devstack restarts journald after writing its rate-limit settings;
    # there is no journald here (the stand-in keeps each unit's output in
    # /var/log/journal/), so the restart does nothing.
    'systemd-journald.service': (
        '[Service]\nType=oneshot\nRemainAfterExit=yes\n'
        'ExecStart=\nExecStart=/bin/true\n'),
    # Debian starts libvirtd with "--timeout 120" under socket activation,
    # which the stand-in does not do: libvirtd would exit after two idle
    # minutes and nothing would start it again. It runs in the foreground
    # (Type=simple), and with /dev/kvm hidden from it as the embedded
    # stack does (a device KVM cannot use makes libvirt re-probe QEMU on
    # every define; the guests are TCG, LIBVIRT_TYPE=qemu).
    # devstack restarts iscsid on every compute (lib/nova), for iSCSI
    # volumes; iscsid needs the kernel's iSCSI transport, which this
    # machine kind cannot load. RBD volumes never use it.
    'iscsid.service': (
        '[Service]\nType=oneshot\nRemainAfterExit=yes\nPIDFile=\n'
        'ExecStartPre=\nExecStart=\nExecStart=/bin/true\nExecStop=\n'),
    'libvirtd.service': (
        '[Service]\nType=simple\nEnvironmentFile=\n'
        'Environment=LIBVIRTD_ARGS=\nExecStart=\n'
        'ExecStart=/usr/local/sbin/nsc-libvirtd\n'),
}

#: What the libvirtd wrapper appends to libvirtd.conf (restore-host takes
#: exactly this out again).
LIBVIRTD_CONF_BLOCK = (
    '# nova-shared-cache devstack job: no D-Bus/polkit here; the socket\'s '
    'group\n'
    'auth_unix_rw = "none"\n'
    'unix_sock_group = "libvirt"\n'
    'unix_sock_rw_perms = "0770"\n')

LIBVIRTD_WRAPPER = """#!/bin/sh
# nova-shared-cache devstack job: libvirtd in the foreground, with /dev/kvm
# replaced in its own mount namespace by a node nobody may open (mode 000),
# so that libvirt sees no usable KVM and keeps its QEMU capabilities.
#
# There is no D-Bus system bus here, so polkit, which Debian's libvirtd
# asks whether a non-root client may use qemu:///system, cannot answer and
# nova-compute (the stack user) is refused ("Unable to get system bus
# connection"). Instead the read-write socket is what Debian's polkit rule
# grants: the libvirt group (devstack adds the stack user to it), no one
# else.
conf=/etc/libvirt/libvirtd.conf
if ! grep -q '^# nova-shared-cache devstack job' "$conf"; then
    cat >> "$conf" <<'CONF'
%sCONF
fi
if [ -e /dev/kvm ]; then
    exec unshare -m --propagation private sh -c \\
        'node=/run/nsc-kvm-hidden; rm -f "$node"; mknod -m 000 "$node" c 1 3 &&
         mount --bind "$node" /dev/kvm && exec /usr/sbin/libvirtd'
fi
exec /usr/sbin/libvirtd
""" % LIBVIRTD_CONF_BLOCK

#: RabbitMQ as Debian starts it listens on every address (AMQP 5672, the
#: Erlang distribution port, epmd 4369): bound to loopback before devstack
#: installs and starts it. (Debian's package ships no rabbitmq-env.conf of
#: its own in /etc/rabbitmq; apt keeps ours: devstack runs apt-get with
#: --force-confold.)
RABBITMQ_ENV = MARK + """loopback only
NODE_IP_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export ERL_EPMD_ADDRESS=127.0.0.1
"""
APACHE_PORTS = MARK + """loopback only
Listen 127.0.0.1:80
<IfModule ssl_module>
\tListen 127.0.0.1:443
</IfModule>
<IfModule mod_gnutls.c>
\tListen 127.0.0.1:443
</IfModule>
"""
RABBITMQ_DROPIN = '[Service]\nEnvironment=ERL_EPMD_ADDRESS=127.0.0.1\n'


def extract(tar, dest):
    """Unpack ``tar`` into ``dest``, refusing members that leave it."""
    root = os.path.realpath(dest)
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, member.name))
        if os.path.commonpath([root, target]) != root or member.isdev():
            raise JobError('%s: unsafe member %s' % (tar.name, member.name))
    tar.extractall(dest)


#: Who commits the trees placed here (no git identity on a fresh machine).
GIT_IDENTITY = {'GIT_AUTHOR_NAME': 'nsc', 'GIT_COMMITTER_NAME': 'nsc',
                'GIT_AUTHOR_EMAIL': 'nsc@localhost',
                'GIT_COMMITTER_EMAIL': 'nsc@localhost'}


def git(*args):
    return run(['git'] + list(args), env=dict(os.environ, **GIT_IDENTITY),
               timeout=600)


class Preparation:

    def __init__(self, job):
        self.job = job

    def run(self):
        # devstack runs git in the trees root places here, as the stack user.
        run(['git', 'config', '--system', '--replace-all', 'safe.directory',
             '*'])
        self.systemctl()
        self.loopback()
        self.unpack_snapshot('devstack', DEVSTACK)
        self.stack_user()
        stored = os.path.join(self.job.work, 'constraint-bumps.json')
        if self.unpack_snapshot('requirements', REQUIREMENTS):
            # A fresh requirements tree: earlier runs' bumps are gone.
            if os.path.exists(stored):
                os.unlink(stored)
        try:
            with open(stored) as f:
                bumps = json.load(f)
        except (OSError, ValueError):
            bumps = []
        bumps += [b for b in self.bump_constraints() if b not in bumps]
        write(stored, json.dumps(bumps) + '\n')
        self.job.record('prepare', constraint_bumps=bumps)
        self.service_trees()
        self.plugin_tree()
        self.guest_image()
        self.local_conf()
        run(['chown', '-R', '%s:%s' % (STACK_USER, STACK_USER), DEST])

    # -- the service manager stand-in ---------------------------------------

    def systemctl(self):
        site = os.path.join(STANDIN_DIR, 'site')
        script = os.path.join(site, 'systemctl2', 'systemctl3.py')
        if not os.path.exists(script):
            say('installing %s (the systemctl stand-in)'
                % realjob.SYSTEMCTL_REPLACEMENT)
            run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                 '--target', site, realjob.SYSTEMCTL_REPLACEMENT],
                timeout=600)
        for path, diverted, program in (
                (SYSTEMCTL, SYSTEMCTL_DIVERTED, 'systemctl3.py'),
                (JOURNALCTL, JOURNALCTL_DIVERTED, 'journalctl3.py')):
            listed = run(['dpkg-divert', '--list', path]).stdout
            if diverted not in listed:
                run(['dpkg-divert', '--local', '--rename', '--divert',
                     diverted, '--add', path])
            write(path, '#!/bin/sh\n%sthe %s stand-in (PID 1 is not '
                  'systemd)\nexec /usr/bin/python3 %s "$@"\n' % (
                      MARK, os.path.basename(path),
                      os.path.join(site, 'systemctl2', program)), 0o755)
        for unit, text in DROPINS.items():
            write('/etc/systemd/system/%s.d/nsc-devstack.conf' % unit,
                  MARK + 'see tests/devstack/prepare.py\n' + text)
        write('/usr/local/sbin/nsc-libvirtd', LIBVIRTD_WRAPPER, 0o755)

    def restore_host(self):
        """Undo what ``systemctl()`` put on the host.

        Only the job's own files: devstack's changes are clean.sh's, and
        the loopback settings of RabbitMQ and Apache stay (they only narrow
        what listens).
        Refused while a devstack unit file is still there (unstack.sh and
        clean.sh need the stand-in).
        """
        left = glob.glob('/etc/systemd/system/devstack@*.service')
        if left:
            raise JobError('devstack units are still defined (%s): run '
                           'unstack first, the stand-in stops them'
                           % ', '.join(sorted(left)))
        removed = []
        for path, diverted in ((SYSTEMCTL, SYSTEMCTL_DIVERTED),
                               (JOURNALCTL, JOURNALCTL_DIVERTED)):
            if diverted in run(['dpkg-divert', '--list', path]).stdout:
                os.unlink(path)
                run(['dpkg-divert', '--local', '--rename', '--remove', path])
                removed.append(path)
        for unit in list(DROPINS) + ['rabbitmq-server.service']:
            dropin = '/etc/systemd/system/%s.d/nsc-devstack.conf' % unit
            if os.path.exists(dropin):
                os.unlink(dropin)
                removed.append(dropin)
                try:
                    os.rmdir(os.path.dirname(dropin))
                except OSError:
                    pass   # other drop-ins are there
        for path in ('/usr/local/sbin/nsc-libvirtd',):
            if os.path.exists(path):
                os.unlink(path)
                removed.append(path)
        conf = '/etc/libvirt/libvirtd.conf'
        if os.path.exists(conf):
            with open(conf) as f:
                text = f.read()
            ours = LIBVIRTD_CONF_BLOCK
            if ours in text:
                write(conf, text.replace(ours, '', 1))
                removed.append(conf + ' (the job\'s lines)')
        if os.path.exists(STANDIN_DIR):
            shutil.rmtree(STANDIN_DIR)
            removed.append(STANDIN_DIR)
        return removed

    def loopback(self):
        write('/etc/rabbitmq/rabbitmq-env.conf', RABBITMQ_ENV)
        # Apache (devstack's proxy in front of every uwsgi API) listens on
        # port 80 of every address as Debian ships it. Placed before the
        # package when it is not installed yet (apt keeps a conffile that
        # is already there with --force-confold), edited when it is.
        ports = '/etc/apache2/ports.conf'
        if os.path.exists(ports):
            with open(ports) as f:
                text = f.read()
            text = re.sub(r'(?m)^(\s*)Listen (80|443)$',
                          r'\1Listen 127.0.0.1:\2', text)
        else:
            text = APACHE_PORTS
        write(ports, text)
        write('/etc/systemd/system/rabbitmq-server.service.d/'
              'nsc-devstack.conf', RABBITMQ_DROPIN)

    # -- the stack user and the trees ---------------------------------------

    def stack_user(self):
        run(['bash', os.path.join(DEVSTACK, 'tools', 'create-stack-user.sh')],
            timeout=600)

    def snapshot_source(self, name):
        variable, pattern = SNAPSHOTS[name]
        given = os.environ.get(variable)
        if given:
            return given
        for vendor in VENDOR_DIRS:
            found = sorted(glob.glob(os.path.join(vendor, pattern)))
            if found:
                return found[-1]
        raise JobError('no %s snapshot: set %s to a .tar.gz, a directory '
                       'or an http(s) URL of a .tar.gz (looked in %s)' % (
                           name, variable, ', '.join(VENDOR_DIRS)))

    def unpack_snapshot(self, name, dest):
        source = self.snapshot_source(name)
        if os.path.isdir(os.path.join(dest, '.git')):
            say('%s already placed at %s' % (name, dest))
            return False
        say('placing %s from %s' % (name, source))
        os.makedirs(DEST, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=DEST) as tmp:
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(tmp, name),
                                ignore=shutil.ignore_patterns('.git'))
                top = os.path.join(tmp, name)
            else:
                archive = source
                if source.startswith(('http://', 'https://')):
                    archive = os.path.join(tmp, 'download.tar.gz')
                    urllib.request.urlretrieve(source, archive)
                with tarfile.open(archive) as tar:
                    extract(tar, os.path.join(tmp, 'x'))
                entries = os.listdir(os.path.join(tmp, 'x'))
                if len(entries) != 1:
                    raise JobError('%s: expected one top directory, found %s'
                                   % (source, entries))
                top = os.path.join(tmp, 'x', entries[0])
            if os.path.exists(dest):
                shutil.rmtree(dest)
            shutil.move(top, dest)
        self.git_commit(dest, '%s from %s' % (name, os.path.basename(
            source.rstrip('/'))))
        return True

    @staticmethod
    def git_commit(tree, message):
        """Make ``tree`` a git repository of one commit.

        devstack's git_clone finds it and leaves it alone (RECLONE=False).
        """
        git('init', '-q', '-b', 'master', tree)
        git('-C', tree, 'add', '-A', '-f', '.')
        git('-C', tree, 'commit', '-q', '-m', message)

    def service_trees(self):
        cache = os.path.join(self.job.work, 'sdists')
        os.makedirs(cache, exist_ok=True)
        for name, requirement in realjob.TREES:
            dest = os.path.join(DEST, name)
            if os.path.isdir(os.path.join(dest, '.git')):
                continue
            project, version = requirement.split('==')
            stem = project.replace('-', '_')
            found = glob.glob(os.path.join(cache, '%s-%s.tar.gz'
                                           % (stem, version)))
            if not found:
                say('downloading the sdist of %s' % requirement)
                run([sys.executable, '-m', 'pip', 'download', '-q',
                     '--no-deps', '--no-binary', ':all:', '-d', cache,
                     requirement], timeout=900)
                found = glob.glob(os.path.join(cache, '%s-%s.tar.gz'
                                               % (stem, version)))
            if not found:
                raise JobError('pip download %s gave no %s-%s.tar.gz in %s'
                               % (requirement, stem, version, cache))
            with tempfile.TemporaryDirectory(dir=DEST) as tmp:
                with tarfile.open(found[0]) as tar:
                    extract(tar, tmp)
                shutil.move(os.path.join(tmp, '%s-%s' % (stem, version)),
                            dest)
            self.git_commit(dest, '%s (sdist)' % requirement)

    def plugin_tree(self):
        """This checkout's working tree (committed or not) as the plugin."""
        if os.path.exists(PLUGIN_TREE):
            shutil.rmtree(PLUGIN_TREE)
        files = run(['git', '-C', realjob.TOP, 'ls-files', '-z', '--cached',
                     '--others', '--exclude-standard']).stdout.split('\0')
        for rel in filter(None, files):
            src = os.path.join(realjob.TOP, rel)
            if not os.path.isfile(src):
                continue  # deleted in the working tree
            dst = os.path.join(PLUGIN_TREE, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
        self.git_commit(PLUGIN_TREE, 'nova-shared-cache at %s'
                        % realjob.checkout_commit())

    # -- requirements -------------------------------------------------------

    def bump_constraints(self):
        """Raise the upper-constraints pins the services cannot install with.

        Only where a 2026.2 service (or this plugin) asks for more than the
        snapshot pins, to the version the lab cloud runs
        (constraints/cloud.txt). Returns ["name old -> new (by whom)"].
        """
        from packaging.requirements import InvalidRequirement
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
        path = os.path.join(REQUIREMENTS, 'upper-constraints.txt')
        with open(path) as f:
            lines = f.read().splitlines()
        pins = {}
        for i, line in enumerate(lines):
            name, sep, rest = line.partition('===')
            if not sep:
                continue
            version, _, marker = rest.partition(';')
            pins.setdefault(canonicalize_name(name), []).append(
                (i, version.strip(), marker.strip()))
        known = {}
        with open(os.path.join(realjob.TOP, 'constraints', 'cloud.txt')) as f:
            for line in f:
                name, sep, version = line.strip().partition('==')
                if sep:
                    known[canonicalize_name(name)] = version
        wanted = []
        sources = [('plugin', os.path.join(realjob.TOP, 'requirements.txt'))]
        for name, requirement in realjob.TREES:
            tarball = glob.glob(os.path.join(
                self.job.work, 'sdists', '%s-*.tar.gz'
                % requirement.split('==')[0].replace('-', '_')))
            sources.append((requirement, ('tar', tarball[0]) if tarball
                            else None))
        for who, where in sources:
            for text in self._requirement_lines(who, where):
                try:
                    req = Requirement(text)
                except InvalidRequirement:
                    continue
                if req.marker and not req.marker.evaluate():
                    continue
                wanted.append((who, req))
        bumps = []
        for who, req in wanted:
            name = canonicalize_name(req.name)
            for i, version, marker in pins.get(name, ()):
                if req.specifier.contains(version, prereleases=True):
                    continue
                new = known.get(name)
                if not new or not req.specifier.contains(new,
                                                         prereleases=True):
                    raise JobError(
                        'upper-constraints pins %s===%s, which %s does not '
                        'accept (%s), and constraints/cloud.txt has no '
                        'version that it does' % (req.name, version, who,
                                                  req.specifier))
                lines[i] = '%s===%s%s' % (lines[i].split('===')[0], new,
                                          ';' + marker if marker else '')
                pins[name] = [(i, new, marker)]
                bumps.append('%s %s -> %s (%s needs %s)' % (
                    req.name, version, new, who, req.specifier))
        if bumps:
            write(path, '\n'.join(lines) + '\n')
            git('-C', REQUIREMENTS, 'commit', '-q', '-a', '-m',
                'Bump what the 2026.2 services need:\n\n' + '\n'.join(bumps))
        for line in bumps:
            say('upper-constraints: %s' % line)
        return bumps

    @staticmethod
    def _requirement_lines(who, where):
        if where is None:
            return []
        if isinstance(where, tuple):
            with tarfile.open(where[1]) as tar:
                member = next((m for m in tar.getmembers()
                               if m.name.count('/') == 1
                               and m.name.endswith('/requirements.txt')),
                              None)
                if member is None:
                    return []
                text = tar.extractfile(member).read().decode()
        else:
            with open(where) as f:
                text = f.read()
        out = []
        for line in text.splitlines():
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                out.append(line)
        return out

    # -- the guest image and local.conf -------------------------------------

    def guest_image(self):
        from nova_shared_cache_lab import diskimage
        path = diskimage.build()
        os.makedirs(os.path.dirname(self.job.image), exist_ok=True)
        shutil.copyfile(path, self.job.image)
        os.chmod(self.job.image, 0o644)
        os.chmod(os.path.dirname(self.job.image), 0o755)
        os.chmod(self.job.work, 0o755)

    def local_conf(self):
        password = self.job.secret('admin')
        text = LOCAL_CONF % {
            'password': password, 'image': self.job.image,
            'requirements': REQUIREMENTS, 'plugin': PLUGIN_TREE,
            'services': ','.join(SERVICES)}
        write(os.path.join(DEVSTACK, 'local.conf'), text, 0o600)
        subprocess.run(['chown', STACK_USER,
                        os.path.join(DEVSTACK, 'local.conf')], check=False)


#: What the multiattach proof needs and nothing else.
SERVICES = ('key', 'mysql', 'rabbit', 'placement-api', 'g-api', 'n-api',
            'n-cond', 'n-sch', 'n-cpu', 'c-api', 'c-sch', 'c-vol', 'q-svc')

LOCAL_CONF = """[[local|localrc]]
# Written by tests/devstack/prepare.py (the real devstack job).
ADMIN_PASSWORD=%(password)s
DATABASE_PASSWORD=%(password)s
RABBIT_PASSWORD=%(password)s
SERVICE_PASSWORD=%(password)s

# Loopback only.
HOST_IP=127.0.0.1
SERVICE_HOST=127.0.0.1
SERVICE_LISTEN_ADDRESS=127.0.0.1
SERVICE_IP_VERSION=4
IP_VERSION=4

# No git host: every tree is pre-placed under $DEST, one commit each.
ERROR_ON_CLONE=True
RECLONE=False
REQUIREMENTS_DIR=%(requirements)s

disable_all_services
ENABLED_SERVICES=%(services)s

# No guest networking: neutron-server with ML2 and no agent answers
# Nova's API calls; servers are made with --nic none.
Q_AGENT=openvswitch
Q_ML2_PLUGIN_MECHANISM_DRIVERS=openvswitch
Q_ML2_TENANT_NETWORK_TYPE=vxlan
NEUTRON_CREATE_INITIAL_NETWORKS=False

LIBVIRT_TYPE=qemu
# Two cores: one API worker each, and room for slow starts.
API_WORKERS=1
SERVICE_TIMEOUT=300
NOVA_READY_TIMEOUT=300
# No KSM tuning daemon for a test host.
ENABLE_KSMTUNED=False
ENABLE_KSM=False
DOWNLOAD_DEFAULT_IMAGES=False
IMAGE_URLS=file://%(image)s

# The plugin, from this checkout, with its own single-node Ceph and
# Debian 12's own libvirt 9.0 and QEMU 7.2 (not bookworm-backports).
enable_plugin nova-shared-cache file://%(plugin)s
NOVA_SHARED_CACHE_CEPH=embedded
NOVA_SHARED_CACHE_DISTRO_LIBVIRT=True

LOGFILE=$DEST/logs/stack.sh.log
LOG_COLOR=False
"""
