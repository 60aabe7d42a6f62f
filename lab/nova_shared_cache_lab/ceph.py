"""A single-node Ceph cluster (mon, mgr, one memstore OSD) on 127.0.0.1.

Facts this relies on (verified on Debian 12 with Ceph 16): daemons find
their keyring only through ``keyring`` in their own config section; a pool
of size 1 needs ``mon allow pool size one``; memstore keeps the OSD's data in
RAM, so a restarted OSD is an empty OSD and ``up`` rebuilds the cluster
rather than restarting half of it.
"""

import json
import os
import shutil
import signal
import tempfile
import time
import uuid

from nova_shared_cache_lab import common

CEPH_PACKAGES = 'ceph-mon ceph-osd ceph-mgr ceph-common'
POOL = 'volumes'
CLIENT = 'cinder'

#: What Cinder's RBD driver clears on a volume of a multiattach type.
MULTIATTACH_EXCLUDED_FEATURES = ('journaling', 'fast-diff', 'object-map',
                                 'exclusive-lock')

_CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = {store_bytes}
osd memory target = 536870912
run dir = {root}/run
pid file = {root}/run/$name.pid
admin socket = {root}/run/$name.asok
log file = {root}/log/$name.log
mon data = {root}/mon/$cluster-$id
mgr data = {root}/mgr/$cluster-$id
osd data = {root}/osd/$cluster-$id

[mon]
keyring = {root}/mon.keyring

[mgr]
keyring = {root}/mgr/$cluster-$id/keyring

[osd]
keyring = {root}/osd/$cluster-$id/keyring

[client.admin]
keyring = {root}/admin.keyring
"""


class Cluster:
    """The cluster under ``<stack root>/ceph``."""

    def __init__(self, root=None, port=None):
        self.root = os.path.join(root or common.root_dir(), 'ceph')
        self.port = int(port or os.environ.get('NSC_CEPH_PORT', 3300))
        self.conf = os.path.join(self.root, 'ceph.conf')
        self.admin_keyring = os.path.join(self.root, 'admin.keyring')
        #: What a compute host has: the monitors and client.cinder's keyring
        #: (no admin key). [shared_cache] ceph_conf points here.
        self.client_conf = os.path.join(self.root, 'client', 'ceph.conf')

    # -- helpers ------------------------------------------------------------

    def ceph(self, *args, timeout=60, check=True):
        return common.run(['ceph', '-c', self.conf, '--connect-timeout', '15']
                          + list(args), timeout=timeout, check=check)

    def rbd(self, *args, timeout=60, check=True):
        return common.run(['rbd', '-c', self.conf] + list(args),
                          timeout=timeout, check=check)

    def _pidfile(self, name):
        return os.path.join(self.root, 'run', '%s.pid' % name)

    def daemons(self):
        names = ['mon.a', 'mgr.x', 'osd.0']
        return {n: common.read_pid(self._pidfile(n)) for n in names}

    def is_up(self):
        pids = self.daemons()
        if not all(pid and common.pid_alive(pid) for pid in pids.values()):
            return False
        proc = self.ceph('osd', 'stat', '-f', 'json', timeout=20, check=False)
        if proc.returncode != 0:
            return False
        return json.loads(proc.stdout).get('num_up_osds') == 1

    # -- up / down ----------------------------------------------------------

    def up(self, store_bytes=2 << 30):
        common.require_commands('ceph-mon', 'ceph-osd', 'ceph-mgr', 'ceph',
                                'ceph-authtool', 'monmaptool', 'rbd',
                                package_hint=CEPH_PACKAGES)
        if self.is_up():
            common.progress('Ceph already up (%s)' % self.root)
            return
        self.down()
        if common.port_in_use(self.port):
            raise common.StackError(
                reason="port %d on 127.0.0.1 is already in use; stop what "
                       "listens there or set NSC_CEPH_PORT" % self.port)
        started = time.monotonic()
        for sub in ('run', 'log', 'mon', 'mgr/ceph-x', 'osd'):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        os.chmod(self.root, 0o755)
        fsid = str(uuid.uuid4())
        with open(self.conf, 'w') as f:
            f.write(_CONF.format(fsid=fsid, port=self.port, root=self.root,
                                 store_bytes=store_bytes))
        os.chmod(self.conf, 0o644)
        mon_keyring = os.path.join(self.root, 'mon.keyring')
        common.run(['ceph-authtool', '--create-keyring', mon_keyring,
                    '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *'])
        common.run(['ceph-authtool', '--create-keyring', self.admin_keyring,
                    '--gen-key', '-n', 'client.admin',
                    '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *',
                    '--cap', 'mgr', 'allow *', '--cap', 'mds', 'allow *'])
        common.run(['ceph-authtool', mon_keyring, '--import-keyring',
                    self.admin_keyring])
        for keyring in (mon_keyring, self.admin_keyring):
            os.chmod(keyring, 0o600)
        monmap = os.path.join(self.root, 'monmap')
        common.run(['monmaptool', '--create', '--addv', 'a',
                    '[v2:127.0.0.1:%d]' % self.port, '--fsid', fsid, monmap])
        common.run(['ceph-mon', '-c', self.conf, '--mkfs', '-i', 'a',
                    '--monmap', monmap, '--keyring', mon_keyring])
        common.progress('starting ceph-mon on 127.0.0.1:%d' % self.port)
        common.run(['ceph-mon', '-c', self.conf, '-i', 'a'])
        self.ceph('status', timeout=60)

        mgr_keyring = os.path.join(self.root, 'mgr', 'ceph-x', 'keyring')
        self.ceph('auth', 'get-or-create', 'mgr.x', 'mon', 'allow profile mgr',
                  'osd', 'allow *', 'mds', 'allow *', '-o', mgr_keyring)
        common.run(['ceph-mgr', '-c', self.conf, '-i', 'x'])

        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph('osd', 'new', osd_uuid).stdout.strip()
        osd_dir = os.path.join(self.root, 'osd', 'ceph-%s' % osd_id)
        os.makedirs(osd_dir, exist_ok=True)
        self.ceph('auth', 'get-or-create', 'osd.%s' % osd_id,
                  'mon', 'allow profile osd', 'mgr', 'allow profile osd',
                  'osd', 'allow *', '-o', os.path.join(osd_dir, 'keyring'))
        common.run(['ceph-osd', '-c', self.conf, '-i', osd_id, '--mkfs',
                    '--osd-uuid', osd_uuid], timeout=120)
        common.progress('starting ceph-osd (memstore)')
        common.run(['ceph-osd', '-c', self.conf, '-i', osd_id])
        common.wait_for(self.is_up, 90, 'the OSD to come up')

        self.ceph('osd', 'pool', 'create', POOL, '8')
        self.rbd('pool', 'init', POOL, timeout=120)
        self.ceph('auth', 'get-or-create', 'client.%s' % CLIENT,
                  'mon', 'profile rbd', 'osd', 'profile rbd pool=%s' % POOL,
                  'mgr', 'profile rbd pool=%s' % POOL)
        common.progress('Ceph up in %.1fs (pool %s, user client.%s)'
                        % (time.monotonic() - started, POOL, CLIENT))

    def down(self):
        for name, pid in reversed(list(self.daemons().items())):
            common.stop_pid(pid)
        # Daemons started by an earlier run whose pid files are gone.
        common.run(['pkill', '-f', '-TERM', '-c', ' -c %s ' % self.conf],
                   check=False)
        if os.path.isdir(self.root):
            shutil.rmtree(self.root, ignore_errors=True)

    def restart_osd(self, stop_timeout=60, timeout=90):
        """Stop the OSD cleanly and start it again the way ``up`` does."""
        self.stop_osd(stop_timeout)
        self.start_osd(timeout)

    def stop_osd(self, timeout=60):
        """Stop the OSD so that a restart keeps its data.

        A memstore OSD keeps its objects only if it unmounts its store,
        which Ceph's fast shutdown (the default) skips: it is turned off
        first. An OSD that must be killed loses its data, and this says so.
        """
        pid = self.daemons()['osd.0']
        if not (pid and common.pid_alive(pid)):
            raise common.StackError(reason="osd.0 is not running")
        self.ceph('tell', 'osd.0', 'config', 'set', 'osd_fast_shutdown',
                  'false', timeout=30)
        os.kill(pid, signal.SIGTERM)
        try:
            common.wait_for(lambda: not common.pid_alive(pid), timeout,
                            'osd.0 (pid %d) to stop' % pid)
        except common.StackError:
            common.stop_pid(pid, timeout=0)
            raise common.StackError(
                reason="osd.0 did not stop within %ss and was killed: its "
                       "memstore data is lost" % timeout)

    def start_osd(self, timeout=90):
        """Start the OSD again and wait until every PG is active."""
        common.run(['ceph-osd', '-c', self.conf, '-i', '0'])
        common.wait_for(self.is_up, timeout, 'the OSD to come up again')
        common.wait_for(self._pgs_active, timeout,
                        'every placement group to be active again')

    def _pgs_active(self):
        proc = self.ceph('pg', 'stat', '-f', 'json', timeout=20, check=False)
        if proc.returncode:
            return False
        summary = json.loads(proc.stdout).get('pg_summary', {})
        states = summary.get('num_pg_by_state', [])
        total = summary.get('num_pgs', 0)
        active = sum(s.get('num', 0) for s in states
                     if 'active' in s.get('name', '').split('+'))
        return total > 0 and active == total

    # -- users and images ---------------------------------------------------

    def write_client_conf(self, users=(CLIENT,)):
        """The compute's ceph.conf and keyrings (0600) for ``users``."""
        directory = os.path.dirname(self.client_conf)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lines = ['[global]', 'mon host = v2:127.0.0.1:%d' % self.port, '']
        for user in users:
            keyring = os.path.join(directory, 'ceph.client.%s.keyring' % user)
            # ceph writes the keyring itself: the key never passes through
            # this process's output.
            self.ceph('auth', 'get', 'client.%s' % user, '-o', keyring)
            os.chmod(keyring, 0o600)
            lines += ['[client.%s]' % user, 'keyring = %s' % keyring, '']
        with open(self.client_conf, 'w') as f:
            f.write('\n'.join(lines))
        return self.client_conf

    def add_user(self, user, osd_caps):
        """Create (or update) client.<user> with ``profile rbd`` mon caps."""
        self.ceph('auth', 'get-or-create', 'client.%s' % user,
                  'mon', 'profile rbd', 'osd', osd_caps)

    def client_key(self, name=CLIENT):
        return self.ceph('auth', 'get-key', 'client.%s' % name).stdout.strip()

    def create_multiattach_volume(self, volume_id, size_mb=64):
        """An RBD image as Cinder makes one for a multiattach volume type.

        Cinder creates the image with the cluster's default features and
        then clears the single-client ones.
        """
        image = 'volume-%s' % volume_id
        spec = '%s/%s' % (POOL, image)
        self.rbd('create', '--size', str(size_mb), spec)
        present = set(self.image_info(spec)['features'])
        excluded = [f for f in MULTIATTACH_EXCLUDED_FEATURES if f in present]
        if excluded:
            self.rbd('feature', 'disable', spec, *excluded)
        return spec

    def image_info(self, spec):
        return json.loads(self.rbd('info', spec, '--format', 'json').stdout)

    def remove_image(self, spec):
        self.rbd('rm', '--no-progress', spec, timeout=120, check=False)

    def write_key_file(self, name=CLIENT):
        """The client's key in a 0600 temporary file; the caller removes it."""
        fd, path = tempfile.mkstemp(prefix='nsc-key-', dir=self.root)
        with os.fdopen(fd, 'w') as f:
            f.write(self.client_key(name))
        return path

    def connection_info(self, volume_id, secret_uuid, multiattach=True):
        """What Cinder's RBD driver returns, plus Nova's multiattach flag."""
        return {
            'driver_volume_type': 'rbd',
            'serial': volume_id,
            'multiattach': multiattach,
            'data': {
                'name': '%s/volume-%s' % (POOL, volume_id),
                'hosts': ['127.0.0.1'],
                'ports': [str(self.port)],
                'cluster_name': 'ceph',
                'auth_enabled': True,
                'auth_username': CLIENT,
                'secret_type': 'ceph',
                'secret_uuid': secret_uuid,
                'volume_id': volume_id,
                'discard': True,
                'qos_specs': None,
                'access_mode': 'rw',
                'encrypted': False,
            },
        }
