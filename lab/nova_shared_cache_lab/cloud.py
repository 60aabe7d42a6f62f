"""A real OpenStack on one machine, on loopback, for the project's tests.

``tools/cloud up|down|status``: keystone, placement, glance, nova (api,
conductor, scheduler, compute with the extension or stock Nova's driver),
cinder (api, scheduler, volume with the RBD driver on the embedded Ceph) and
neutron's API (ML2, no agents) from their PyPI releases, in one venv, with a
private MariaDB and RabbitMQ. Everything lives under ``<stack root>/cloud``:
one log per service in ``log/``, pid files in ``run/``, data in ``data/``.

The APIs run under Debian's uwsgi; the other services as their own console
scripts, as shipped (Nova 34's compute, conductor and scheduler in native
threading mode). The services run as root, so ``sudo`` in their PATH is a
pass-through (``bin/sudo``) and rootwrap's ``exec_dirs`` include the venv.

``up`` is idempotent: it starts what is not running and creates what is
missing. ``down`` leaves nothing: no process, database, queue, domain or
libvirt secret, and the Ceph cluster goes with the embedded stack.
"""

import argparse
import glob
import json
import os
import secrets as pysecrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from nova_shared_cache_lab import ceph as ceph_mod
from nova_shared_cache_lab import cloudconf
from nova_shared_cache_lab import common
from nova_shared_cache_lab import stack as stack_mod

CLOUD_NAME = 'nova-shared-cache'
ADMIN_CLOUD = 'nova-shared-cache-admin'
#: The first line of a user clouds.yaml that tools/cloud wrote (and may
#: replace or remove).
USER_CLOUDS_MARK = ('# written by nova-shared-cache tools/cloud up; '
                    'tools/cloud down removes it\n')
FLAVORS = (
    # name, MiB, vCPUs, root GiB: the guest needs little; the alt flavor is
    # what resize goes to.
    ('nsc.tiny', 128, 1, 1),
    ('nsc.tiny.alt', 160, 1, 1),
)
#: (name, module) of every API under uwsgi, in start order.
WSGI_APIS = (
    ('keystone', 'keystone.wsgi.api', 'OS_KEYSTONE_CONFIG_DIR'),
    ('placement', 'placement.wsgi.api', 'OS_PLACEMENT_CONFIG_DIR'),
    ('glance', 'glance.wsgi.api', 'OS_GLANCE_CONFIG_DIR'),
    ('cinder', 'cinder.wsgi.api', None),
    ('neutron', 'neutron.wsgi.api', 'OS_NEUTRON_CONFIG_DIR'),
    ('nova', 'nova.wsgi.osapi_compute', 'OS_NOVA_CONFIG_DIR'),
)
DAEMONS = (
    ('cinder-scheduler', 'cinder', ['cinder.conf']),
    ('cinder-volume', 'cinder', ['cinder.conf']),
    ('nova-conductor', 'nova', ['nova.conf']),
    ('nova-scheduler', 'nova', ['nova.conf']),
    ('nova-compute', 'nova', ['nova.conf', 'nova-compute.conf']),
)
START_TIMEOUT = 120
#: The line each service's log gets when tools/cloud starts it.
LOG_MARK = '==== started by tools/cloud'


def user_clouds_yaml():
    """Where openstacksdk looks for a user's clouds (after ./clouds.yaml)."""
    base = os.environ.get('XDG_CONFIG_HOME') or os.path.expanduser(
        '~/.config')
    return os.path.join(base, 'openstack', 'clouds.yaml')


def _written_by_us(path):
    """True: tools/cloud wrote it; False: someone else's; None: none."""
    try:
        with open(path) as f:
            return f.readline() == USER_CLOUDS_MARK
    except FileNotFoundError:
        return None
    except OSError:
        return False


class CloudError(common.StackError):
    msg_fmt = "cloud: %(reason)s"


def default_venv():
    return os.environ.get('NSC_CLOUD_VENV', os.path.dirname(
        os.path.dirname(os.path.abspath(sys.executable))))


class Cloud:

    def __init__(self, root=None, venv=None):
        self.stack = stack_mod.Stack(root)
        self.layout = cloudconf.Layout(
            os.path.join(self.stack.root, 'cloud'), venv or default_venv())
        self._secrets = None

    # -- small helpers ------------------------------------------------------

    @property
    def secrets(self):
        if self._secrets is None:
            path = os.path.join(self.layout.root, 'secrets.json')
            try:
                with open(path) as f:
                    self._secrets = json.load(f)
            except FileNotFoundError:
                self._secrets = {name: pysecrets.token_hex(12) for name in
                                 ('db', 'amqp', 'service', 'admin', 'demo')}
                _write(path, json.dumps(self._secrets), 0o600)
        return self._secrets

    def bin(self, name):
        return os.path.join(self.layout.venv, 'bin', name)

    def env(self):
        env = dict(os.environ)
        env['PATH'] = ':'.join([self.layout.bin,
                                os.path.join(self.layout.venv, 'bin'),
                                '/usr/local/sbin:/usr/local/bin',
                                '/usr/sbin:/usr/bin:/sbin:/bin'])
        for name in ('OS_CLOUD', 'OS_AUTH_URL', 'OS_PASSWORD', 'OS_TOKEN',
                     'PYTHONPATH'):
            env.pop(name, None)
        return env

    def run(self, cmd, timeout=300, input=None, what=None, env=None):
        """Run a set-up command; on failure name it and keep its output."""
        try:
            proc = subprocess.run(cmd, input=input, capture_output=True,
                                  text=True, timeout=timeout,
                                  env=env or self.env())
        except subprocess.TimeoutExpired:
            raise CloudError(reason="%s did not finish within %ss"
                             % (what or os.path.basename(cmd[0]), timeout))
        if proc.returncode != 0:
            raise CloudError(reason="%s failed (exit %d): %s" % (
                what or ' '.join(os.path.basename(c) for c in cmd[:3]),
                proc.returncode, (proc.stderr or proc.stdout).strip()[-1500:]))
        return proc

    def pid(self, name):
        pid = common.read_pid(self.layout.pid_of(name))
        return pid if pid and common.pid_alive(pid) else None

    def spawn(self, name, cmd, env=None, config=()):
        """Start ``cmd`` in its own session, output to log/<name>.log.

        A running one is left alone unless its command line or the files
        files of ``config`` (files or directories) changed since it started:
        then it is restarted.
        """
        recorded = os.path.join(self.layout.run, '%s.cmd' % name)
        started_as = {'cmd': cmd, 'config': _digest(config)}
        try:
            with open(recorded) as f:
                same = json.load(f) == started_as
        except (OSError, ValueError):
            same = False
        if self.pid(name):
            if same:
                return False
            # Started by an older tools/cloud with other arguments.
            self.stop(name)
        _write(recorded, json.dumps(started_as), 0o644)
        log = open(self.layout.log_of(name), 'ab')
        log.write(b'\n%s at %s\n' % (
            LOG_MARK.encode(), time.strftime('%Y-%m-%d %H:%M:%S').encode()))
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.layout.root,
                                env=env or self.env(), start_new_session=True)
        log.close()
        _write(self.layout.pid_of(name), '%d\n' % proc.pid, 0o644)
        return True

    def stop(self, name, timeout=20):
        pid = common.read_pid(self.layout.pid_of(name))
        if pid and common.pid_alive(pid):
            log = self.layout.log_of(name)
            try:
                logged = os.path.getsize(log)
            except OSError:
                logged = None
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            mark, grace = self.IDLE_AFTER_TERM.get(name, (None, 0))
            idle_since = None
            while common.pid_alive(pid) and time.monotonic() < deadline:
                if idle_since is None and _logged_since(log, logged, mark):
                    idle_since = time.monotonic()
                if idle_since is not None and (
                        time.monotonic() - idle_since >= grace):
                    break
                time.sleep(0.2)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            common.wait_for(lambda: not common.pid_alive(pid), 10,
                            '%s (pid %d) to exit' % (name, pid))
        try:
            os.unlink(self.layout.pid_of(name))
        except FileNotFoundError:
            pass

    def wait_service(self, name, check, timeout=START_TIMEOUT):
        """Wait for ``check()``; fail naming the service and its log."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except Exception:   # noqa: S110 - keep waiting, report below
                pass
            if not self.pid(name):
                raise CloudError(reason="%s exited while starting; see %s:"
                                 "\n%s" % (name, self.layout.log_of(name),
                                           _tail(self.layout.log_of(name))))
            if time.monotonic() > deadline:
                raise CloudError(reason="%s did not come up within %ss; see "
                                 "%s:\n%s" % (name, timeout,
                                              self.layout.log_of(name),
                                              _tail(self.layout.log_of(name))))
            time.sleep(0.5)

    # -- MariaDB and RabbitMQ --------------------------------------------

    def _mysql(self, sql, timeout=60):
        return self.run(['mariadb', '--no-defaults', '-S',
                         self.layout.mysql_socket, '-u', 'root', '-N', '-B'],
                        input=sql, timeout=timeout, what='mariadb')

    def mysql_up(self):
        datadir = self.layout.data_of('mysql')
        if not os.path.isdir(os.path.join(datadir, 'mysql')):
            common.progress('cloud: initialising MariaDB in %s' % datadir)
            os.makedirs(datadir, exist_ok=True)
            shutil.chown(datadir, 'mysql', 'mysql')
            self.run(['mariadb-install-db', '--no-defaults', '--user=mysql',
                      '--datadir=%s' % datadir, '--skip-test-db',
                      '--auth-root-authentication-method=socket'],
                     what='mariadb-install-db')
        sockdir = os.path.dirname(self.layout.mysql_socket)
        os.makedirs(sockdir, exist_ok=True)
        shutil.chown(sockdir, 'mysql', 'mysql')
        if self.spawn('mysql', [
                'mariadbd', '--no-defaults', '--user=mysql',
                '--datadir=%s' % datadir,
                '--socket=%s' % self.layout.mysql_socket,
                '--port=%d' % cloudconf.PORTS['mysql'],
                '--bind-address=127.0.0.1', '--skip-name-resolve',
                '--innodb-buffer-pool-size=64M', '--max-connections=500',
                '--performance-schema=off', '--log-error=',
                '--character-set-server=utf8mb4']):
            common.progress('cloud: starting MariaDB on 127.0.0.1:%d'
                            % cloudconf.PORTS['mysql'])
        self.wait_service('mysql', lambda: subprocess.run(
            ['mariadb-admin', '--no-defaults', '-S',
             self.layout.mysql_socket, 'ping'], capture_output=True,
            timeout=10).returncode == 0, timeout=60)
        sql = ["CREATE USER IF NOT EXISTS 'nsc'@'127.0.0.1' "
               "IDENTIFIED BY '%s';" % self.secrets['db'],
               "ALTER USER 'nsc'@'127.0.0.1' IDENTIFIED BY '%s';"
               % self.secrets['db']]
        for db in cloudconf.DATABASES:
            sql.append('CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8;'
                       % db)
            sql.append("GRANT ALL PRIVILEGES ON %s.* TO 'nsc'@'127.0.0.1';"
                       % db)
        self._mysql('\n'.join(sql))

    def _rabbit_env(self):
        base = self.layout.data_of('rabbitmq')
        env = self.env()
        env.update({
            'HOME': base,
            'RABBITMQ_CONF_ENV_FILE': os.path.join(base, 'rabbitmq-env.conf'),
            'RABBITMQ_MNESIA_BASE': os.path.join(base, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(base, 'log'),
            'RABBITMQ_LOGS': '-',
            'RABBITMQ_CONFIG_FILE': os.path.join(base, 'rabbitmq.conf'),
            'RABBITMQ_ADVANCED_CONFIG_FILE': os.path.join(
                base, 'advanced.config'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(
                base, 'enabled_plugins'),
            'RABBITMQ_PID_FILE': os.path.join(base, 'rabbit.pid'),
            'RABBITMQ_NODENAME': 'nsc@localhost',
            'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODE_PORT': str(cloudconf.PORTS['amqp']),
            'RABBITMQ_DIST_PORT': str(cloudconf.PORTS['amqp-dist']),
            'ERL_EPMD_ADDRESS': '127.0.0.1',
            'ERL_EPMD_PORT': str(cloudconf.PORTS['epmd']),
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS':
                '-kernel inet_dist_use_interface {127,0,0,1}',
            'RABBITMQ_CTL_ERL_ARGS':
                '-kernel inet_dist_use_interface {127,0,0,1}',
        })
        return env

    def rabbit_up(self):
        base = self.layout.data_of('rabbitmq')
        os.makedirs(os.path.join(base, 'log'), exist_ok=True)
        _write(os.path.join(base, 'rabbitmq-env.conf'), '', 0o644)
        _write(os.path.join(base, 'enabled_plugins'), '[].\n', 0o644)
        _write(os.path.join(base, 'rabbitmq.conf'), '\n'.join([
            'listeners.tcp.default = 127.0.0.1:%d' % cloudconf.PORTS['amqp'],
            'default_user = nsc',
            'default_pass = %s' % self.secrets['amqp'],
            'loopback_users = none',
            'log.console = true',
            'log.file = false',
            '']), 0o600)
        cookie = os.path.join(base, '.erlang.cookie')
        if not os.path.exists(cookie):
            _write(cookie, pysecrets.token_hex(16), 0o400)
        if self.spawn('rabbitmq', ['/usr/lib/rabbitmq/bin/rabbitmq-server'],
                      env=self._rabbit_env()):
            common.progress('cloud: starting RabbitMQ on 127.0.0.1:%d'
                            % cloudconf.PORTS['amqp'])
        self.wait_service('rabbitmq', lambda: common.port_in_use(
            cloudconf.PORTS['amqp']), timeout=90)

    def rabbit_down(self):
        self.stop('rabbitmq', timeout=30)
        # epmd outlives the broker; only ours (its own port) is stopped.
        subprocess.run(['epmd', '-kill'], env=self._rabbit_env(),
                       capture_output=True, timeout=15)

    # -- configuration ------------------------------------------------------

    def ceph_settings(self):
        ceph = self.stack.ceph
        return {'conf': ceph.client_conf, 'pool': ceph_mod.POOL,
                'user': ceph_mod.CLIENT,
                'secret_uuid': self.stack.libvirt.secret_uuid()}

    def write_config(self):
        files = {}
        lay, sec = self.layout, self.secrets
        files.update(cloudconf.keystone(lay, sec))
        files.update(cloudconf.placement(lay, sec))
        files.update(cloudconf.glance(lay, sec))
        files.update(cloudconf.cinder(lay, sec, self.ceph_settings()))
        files.update(cloudconf.nova(lay, sec))
        files.update(cloudconf.neutron(lay, sec))
        for path, text in files.items():
            _write(path, text, 0o640)
        _write(lay.clouds_yaml, cloudconf.clouds_yaml(sec), 0o600)
        # Services run as root: sudo is a pass-through that finds the venv's
        # rootwrap and privsep-helper.
        _write(os.path.join(lay.bin, 'sudo'),
               '#!/bin/sh\n# nova-shared-cache lab cloud: services run as '
               'root\nwhile [ "${1#-}" != "$1" ]; do shift; done\n'
               'PATH=%s:$PATH exec "$@"\n'
               % os.path.join(lay.venv, 'bin'), 0o755)

    def state(self):
        try:
            with open(os.path.join(self.layout.root, 'state.json')) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _save_state(self, **values):
        state = self.state()
        state.update(values)
        _write(os.path.join(self.layout.root, 'state.json'),
               json.dumps(state, indent=1), 0o644)

    def write_compute_config(self, driver='extension', options=None):
        files = cloudconf.nova_compute(self.layout, driver,
                                       self.stack.ceph.client_conf, options)
        for path, text in files.items():
            _write(path, text, 0o640)
        self._save_state(driver=driver, compute_options=options or {})

    # -- services -----------------------------------------------------------

    def _http_ok(self, service, path=''):
        try:
            with urllib.request.urlopen(cloudconf.url(service, path),
                                        timeout=5) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as err:
            return err.code < 500
        except OSError:
            return False

    def start_api(self, name, module, config_env):
        env = self.env()
        argv = []
        if config_env:
            env[config_env] = self.layout.etc_of(name)
        else:
            argv = ['--pyargv', '--config-file %s'
                    % self.layout.etc_of(name, '%s.conf' % name)]
        cmd = ['uwsgi', '--plugin', 'python3', '--virtualenv',
               self.layout.venv,
               '--http-socket', '127.0.0.1:%d' % cloudconf.PORTS[name],
               '--module', '%s:application' % module,
               '--master', '--processes', '1', '--threads', '4',
               '--enable-threads', '--die-on-term', '--need-app',
               # uwsgi's http-socket closes every connection after its
               # response; say so, or clients reuse it and get a reset.
               '--add-header', 'Connection: close',
               '--lazy-apps', '--buffer-size', '65535',
               # Chunked uploads (Nova's snapshots to Glance through
               # glanceclient) come in 1 MiB chunks; uwsgi's default limit
               # of a chunk is 1 MiB with its header, so every snapshot
               # failed ("unable to receive chunked part"). And a slow
               # sender gets devstack's 30 s, not the default 4 s.
               '--chunked-input-limit', str(16 << 20),
               '--socket-timeout', '30',
               '--hook-master-start',
               'unix_signal:15 gracefully_kill_them_all',
               '--thunder-lock', '--vacuum',
               '--procname-prefix', 'nsc-cloud-%s ' % name] + argv
        config = [self.layout.etc_of(name)]
        if name == 'nova':
            config = [self.layout.etc_of('nova', n)
                      for n in ('nova.conf', 'api-paste.ini')]
        if self.spawn(name, cmd, env=env, config=config):
            common.progress('cloud: starting %s API on %s'
                            % (name, cloudconf.url(name)))

    def product_dirs(self):
        """Where the venv holds nova-compute's drivers from this checkout."""
        found = []
        for site in glob.glob(os.path.join(self.layout.venv, 'lib',
                                           'python3*', 'site-packages')):
            found += [os.path.join(site, *parts) for parts in (
                ('nova_shared_cache',), ('nova', 'virt', 'shared_cache'),
                ('nova', 'virt', 'nsc_lab_hazard'))]
        return found

    #: What a service logs once its graceful shutdown has nothing left in
    #: progress. Nova 34's nova-compute (native threads) then shuts its
    #: thread pools down, and here its default pool never finishes doing
    #: so (Nova's own driver as well as the extension's): it would always
    #: use the whole bound of stop() before the kill.
    IDLE_AFTER_TERM = {
        'nova-compute': (b'Graceful shutdown: no in-progress tasks', 1.0),
    }

    def start_daemon(self, name, project, conf_files):
        cmd = [self.bin(name)]
        for conf in conf_files:
            cmd += ['--config-file', self.layout.etc_of(project, conf)]
        config = [self.layout.etc_of(project, c) for c in conf_files]
        if name == 'nova-compute':
            # The driver's code counts as its configuration: a compute
            # that runs an older install of this checkout is restarted.
            config += self.product_dirs()
        if self.spawn(name, cmd, config=config):
            common.progress('cloud: starting %s' % name)
            return True
        return False

    def keystone_setup(self):
        kman = self.bin('keystone-manage')
        conf = ['--config-file', self.layout.etc_of('keystone',
                                                    'keystone.conf')]
        self.run([kman] + conf + ['db_sync'], what='keystone-manage db_sync')
        for what in ('fernet_setup', 'credential_setup'):
            self.run([kman] + conf + [what, '--keystone-user', 'root',
                                      '--keystone-group', 'root'],
                     what='keystone-manage %s' % what)
        env = self.env()
        env['OS_BOOTSTRAP_PASSWORD'] = self.secrets['admin']
        self.run([kman] + conf + [
            'bootstrap', '--bootstrap-username', 'admin',
            '--bootstrap-project-name', 'admin',
            '--bootstrap-role-name', 'admin',
            '--bootstrap-service-name', 'keystone',
            '--bootstrap-region-id', cloudconf.REGION,
            '--bootstrap-public-url', cloudconf.url('keystone', '/v3')],
            env=env, what='keystone-manage bootstrap')

    def connection(self, cloud=ADMIN_CLOUD):
        import openstack.config
        import openstack.connection
        config = openstack.config.OpenStackConfig(
            config_files=[self.layout.clouds_yaml], load_envvars=False)
        return openstack.connection.Connection(
            config=config.get_one(cloud=cloud))

    def identity_setup(self):
        conn = self.connection()
        ident = conn.identity
        domain = ident.find_domain('default', ignore_missing=False)

        def find_or_create(find, create, name, **attrs):
            found = find(name, domain_id=domain.id) if attrs.pop(
                'in_domain', True) else find(name)
            return found or create(name=name, **attrs)

        roles = {name: ident.find_role(name) or ident.create_role(name=name)
                 for name in ('admin', 'member', 'reader', 'service')}
        service = find_or_create(ident.find_project, ident.create_project,
                                 'service', domain_id=domain.id)
        demo = find_or_create(ident.find_project, ident.create_project,
                              'demo', domain_id=domain.id)
        for user in cloudconf.SERVICE_USERS:
            found = ident.find_user(user, domain_id=domain.id)
            if found:
                ident.update_user(found, password=self.secrets['service'])
            else:
                found = ident.create_user(
                    name=user, domain_id=domain.id,
                    password=self.secrets['service'],
                    default_project_id=service.id)
            for role in ('admin', 'service'):
                ident.assign_project_role_to_user(service, found,
                                                  roles[role])
        user = ident.find_user('demo', domain_id=domain.id)
        if user:
            ident.update_user(user, password=self.secrets['demo'])
        else:
            user = ident.create_user(name='demo', domain_id=domain.id,
                                     password=self.secrets['demo'],
                                     default_project_id=demo.id)
        for role in ('member', 'reader'):
            ident.assign_project_role_to_user(demo, user, roles[role])
        admin = ident.find_user('admin', domain_id=domain.id)
        ident.assign_project_role_to_user(demo, admin, roles['admin'])
        existing = {(s.name, s.type): s for s in ident.services()}
        endpoints = {(e.service_id, e.interface) for e in ident.endpoints()}
        for name, kind, public in cloudconf.endpoints():
            svc = existing.get((name, kind)) or ident.create_service(
                name=name, type=kind, is_enabled=True)
            # Some clients ask for the internal interface (Nova's keystone
            # client does): same URL, all on loopback.
            for interface in ('public', 'internal'):
                if (svc.id, interface) not in endpoints:
                    ident.create_endpoint(service_id=svc.id,
                                          interface=interface, url=public,
                                          region_id=cloudconf.REGION)

    def db_setup(self):
        nman = [self.bin('nova-manage'), '--config-file',
                self.layout.etc_of('nova', 'nova.conf')]
        steps = [
            ([self.bin('placement-manage'), '--config-file',
              self.layout.etc_of('placement', 'placement.conf'),
              'db', 'sync'], 'placement-manage db sync'),
            ([self.bin('glance-manage'), '--config-file',
              self.layout.etc_of('glance', 'glance-api.conf'), 'db_sync'],
             'glance-manage db_sync'),
            ([self.bin('cinder-manage'), '--config-file',
              self.layout.etc_of('cinder', 'cinder.conf'), 'db', 'sync'],
             'cinder-manage db sync'),
            ([self.bin('neutron-db-manage'), '--config-file',
              self.layout.etc_of('neutron', 'neutron.conf'),
              '--config-file',
              self.layout.etc_of('neutron', 'plugins', 'ml2', 'ml2_conf.ini'),
              'upgrade', 'heads'], 'neutron-db-manage upgrade heads'),
            (nman + ['api_db', 'sync'], 'nova-manage api_db sync'),
        ]
        for cmd, what in steps:
            common.progress('cloud: %s' % what)
            self.run(cmd, timeout=600, what=what)
        cells = self.run(nman + ['cell_v2', 'list_cells', '--verbose'],
                         what='nova-manage cell_v2 list_cells').stdout
        if ' cell0 ' not in cells:
            self.run(nman + ['cell_v2', 'map_cell0', '--database_connection',
                             cloudconf.db_url(self.secrets, 'nova_cell0')],
                     what='nova-manage cell_v2 map_cell0')
        common.progress('cloud: nova-manage db sync')
        self.run(nman + ['db', 'sync'], timeout=600,
                 what='nova-manage db sync')
        if ' cell1 ' not in cells:
            self.run(nman + ['cell_v2', 'create_cell', '--name', 'cell1'],
                     what='nova-manage cell_v2 create_cell')

    def discover_hosts(self):
        def registered():
            out = self.run([self.bin('nova-manage'), '--config-file',
                            self.layout.etc_of('nova', 'nova.conf'),
                            'cell_v2', 'discover_hosts', '--verbose'],
                           what='nova-manage cell_v2 discover_hosts').stdout
            # The hypervisor is listed once its cell knows the host.
            conn = self.connection()
            return out is not None and any(
                True for _h in conn.compute.hypervisors())
        self.wait_service('nova-compute', registered, timeout=START_TIMEOUT)

    def resources_setup(self):
        conn = self.connection()
        for name, ram, vcpus, disk in FLAVORS:
            if not conn.compute.find_flavor(name):
                conn.compute.create_flavor(name=name, ram=ram, vcpus=vcpus,
                                           disk=disk, is_public=True)

    # -- up / down / status -------------------------------------------------

    def up(self, driver=None, compute_options=None, guest_image=True):
        """Bring the cloud up, or what of it is not running.

        ``driver``: 'extension' or 'stock' (None: as before, else the
        extension). ``compute_options``: nova-compute's extra options
        ``{section: {option: value}}`` (None: as before). nova-compute is
        restarted when either changes.
        """
        started = time.monotonic()
        if os.geteuid() != 0:
            raise CloudError(reason="run as root (libvirtd, Ceph, the "
                                    "services' privsep)")
        for sub in (self.layout.etc, self.layout.log, self.layout.run,
                    self.layout.data, self.layout.bin):
            os.makedirs(sub, exist_ok=True)
        for service in ('keystone', 'placement', 'glance', 'cinder', 'nova',
                        'neutron'):
            os.makedirs(self.layout.etc_of(service), exist_ok=True)
            os.makedirs(self.layout.data_of(service), exist_ok=True)
        os.makedirs(self.layout.data_of('nova', 'instances'), exist_ok=True)
        common.progress('cloud: the embedded Ceph and libvirtd')
        self.stack.up(guest_image=guest_image, secret_private=False)
        driver = driver or self.state().get('driver') or 'extension'
        self.write_config()
        if compute_options is None:
            compute_options = self.state().get('compute_options')
        self.write_compute_config(driver, compute_options)
        self.mysql_up()
        self.rabbit_up()
        # The databases and keystone's content are made once; a later up
        # only starts what is not running.
        set_up = self.state().get('set_up')
        if not set_up:
            self.keystone_setup()
        self.start_api(*WSGI_APIS[0])
        self.wait_service('keystone', lambda: self._http_ok('keystone',
                                                            '/v3'))
        if not set_up:
            self.identity_setup()
            self.db_setup()
            self._save_state(set_up=True)
        for name, module, config_env in WSGI_APIS[1:]:
            self.start_api(name, module, config_env)
        for name, _module, _env in WSGI_APIS[1:]:
            self.wait_service(name, lambda n=name: self._http_ok(n))
        # neutron-api configures its ORM mappers on its first query; until
        # then listing ports (which Nova does for every server) fails with
        # "type object 'Port' has no attribute 'port_forwardings'". One
        # authenticated query makes it ready.
        self.wait_service('neutron', lambda: list(
            self.connection().network.networks()) is not None)
        restarted = {name: self.start_daemon(name, project, confs)
                     for name, project, confs in DAEMONS}
        self.discover_hosts()
        if restarted['nova-compute']:
            self.wait_compute_up()
        self.wait_volume_service()
        self.resources_setup()
        self._save_state(up=True)
        published = self.publish_clouds_yaml()
        common.progress('cloud: up in %.0f s (nova-compute: %s driver); %s'
                        'OS_CLOUD=%s openstack ...'
                        % (time.monotonic() - started, driver,
                           '' if published else 'OS_CLIENT_CONFIG_FILE=%s '
                           % self.layout.clouds_yaml, CLOUD_NAME))

    def publish_clouds_yaml(self):
        """The clouds in the user's clouds.yaml, unless it is someone else's.

        ``OS_CLOUD=nova-shared-cache openstack ...`` then works from any
        directory. A clouds.yaml this tool did not write is left alone (the
        progress line names the cloud's own file instead); ``down`` removes
        only the one it wrote. Returns whether the user's file has them.
        """
        path = user_clouds_yaml()
        if _written_by_us(path) is False:
            return False
        with open(self.layout.clouds_yaml) as f:
            text = f.read()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        _write(path, USER_CLOUDS_MARK + text, 0o600)
        return True

    def unpublish_clouds_yaml(self):
        path = user_clouds_yaml()
        if _written_by_us(path):
            os.unlink(path)

    def wait_volume_service(self):
        def up():
            conn = self.connection()
            return any(s.binary == 'cinder-volume' and s.state == 'up'
                       for s in conn.block_storage.services())
        self.wait_service('cinder-volume', up)

    def wait_compute_up(self, timeout=START_TIMEOUT):
        since = time.time()

        def up():
            conn = self.connection()
            for svc in conn.compute.services():
                if svc.binary == 'nova-compute' and svc.state == 'up':
                    updated = svc.updated_at
                    return updated and _parse_time(updated) >= since - 1
            return False
        self.wait_service('nova-compute', up, timeout=timeout)

    def down(self):
        common.progress('cloud: stopping the services')
        for name, _p, _c in reversed(DAEMONS):
            self.stop(name)
        for name, _m, _e in reversed(WSGI_APIS):
            self.stop(name)
        self.remove_nova_domains()
        self.rabbit_down()
        self.stop('mysql', timeout=60)
        common.progress('cloud: the embedded Ceph and libvirtd')
        for pid in self.stray_processes():
            common.stop_pid(pid, timeout=10)
        self.stack.down()
        if os.path.isdir(self.layout.root):
            shutil.rmtree(self.layout.root)
        self.unpublish_clouds_yaml()
        left = self.leftovers()
        if left:
            raise CloudError(reason="down left %s" % '; '.join(left))
        common.progress('cloud: down (no process, port, domain, secret or '
                        'file of it left)')

    def stray_processes(self):
        """Processes of this cloud that outlived their service.

        Privsep daemons and a service's children: their command line names
        the cloud's directory, or starts with uwsgi's process name prefix.
        """
        found = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as f:
                    cmdline = f.read().replace(b'\0', b' ').decode(
                        errors='replace')
            except OSError:
                continue
            if (self.layout.root + '/') in cmdline or cmdline.startswith(
                    'nsc-cloud-'):
                found.append(int(entry))
        return found

    def leftovers(self):
        """What of the cloud still exists (empty after a complete down)."""
        left = ['process %d' % pid for pid in self.stray_processes()]
        left += ['a listener on 127.0.0.1:%d (%s)' % (port, name)
                 for name, port in sorted(cloudconf.PORTS.items())
                 if common.port_in_use(port)]
        if os.path.exists(self.layout.root):
            left.append(self.layout.root)
        if self.stack.libvirt.is_up():
            left += ['libvirt domain %s' % name for name in
                     self.stack.libvirt.domains('instance-')]
            secret = self.stack.libvirt._find_secret()
            if secret:
                left.append('libvirt secret %s' % secret)
        return left

    def remove_nova_domains(self):
        """Nova's domains on the stack's libvirtd (names instance-*)."""
        if not self.stack.libvirt.is_up():
            return
        names = self.stack.libvirt.domains('instance-')
        self.stack.libvirt.remove_domains(names)

    def status(self):
        """(name, 'up'|'down', pid, RSS in MiB of its session) per part."""
        rows = [('ceph', 'up' if self.stack.ceph.is_up() else 'down', None,
                 None),
                ('libvirtd', 'up' if self.stack.libvirt.is_up() else 'down',
                 None, None)]
        sessions = _session_rss()
        for name in (['mysql', 'rabbitmq'] + [a[0] for a in WSGI_APIS]
                     + [d[0] for d in DAEMONS]):
            pid = self.pid(name)
            ok = bool(pid)
            if ok and name in cloudconf.PORTS and name != 'mysql':
                ok = self._http_ok(name)
            rows.append((name, 'up' if ok else 'down', pid,
                         sessions.get(pid, 0) / 1024 if pid else None))
        return rows


def _session_rss():
    """{session id: KiB of resident memory of its processes}."""
    totals = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            with open('/proc/%s/status' % entry) as f:
                rss = [int(line.split()[1]) for line in f
                       if line.startswith('VmRSS:')]
        except (OSError, IndexError, ValueError):
            continue
        # stat after the command: state ppid pgrp session ...
        session = int(fields[3])
        totals[session] = totals.get(session, 0) + sum(rss)
    return totals


def parse_options(items):
    """``['libvirt.disk_cachemodes=network=writeback']`` to a dict."""
    options = {}
    for item in items:
        key, sep, value = item.partition('=')
        section, dot, name = key.partition('.')
        if not sep or not dot or not section or not name:
            raise ValueError("--compute-option %r: expected "
                             "SECTION.OPTION=VALUE" % item)
        options.setdefault(section, {})[name] = value
    return options


def _parse_time(text):
    import datetime
    value = datetime.datetime.fromisoformat(text.rstrip('Z'))
    return value.replace(tzinfo=datetime.timezone.utc).timestamp()


def _logged_since(path, offset, mark):
    """Whether ``mark`` (bytes) is in file ``path`` after ``offset``."""
    if mark is None or offset is None:
        return False
    try:
        with open(path, 'rb') as f:
            f.seek(offset)
            return mark in f.read()
    except OSError:
        return False


def _digest(paths):
    """A digest of the files ``paths`` name (a directory: all under it)."""
    import hashlib
    digest = hashlib.sha256()
    files = []
    for path in paths:
        if os.path.isdir(path):
            for base, dirs, names in os.walk(path):
                # Bytecode appears when a service first imports the code.
                dirs[:] = sorted(d for d in dirs if d != '__pycache__')
                files += [os.path.join(base, n) for n in names
                          if not n.endswith('.pyc')]
        else:
            files.append(path)
    for path in sorted(files):
        digest.update(path.encode())
        try:
            with open(path, 'rb') as f:
                digest.update(f.read())
        except OSError:
            pass
    return digest.hexdigest()


def _tail(path, lines=15):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return '(no log)'


def _write(path, text, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='tools/cloud')
    parser.add_argument('action', choices=('up', 'down', 'status'))
    parser.add_argument('--stock', action='store_true',
                        help="up: nova-compute with stock Nova's libvirt "
                             "driver instead of the extension")
    parser.add_argument('--hazard', action='store_true',
                        help="up: nova-compute with the lab's test-only "
                             "driver that leaves multiattach disks unshared "
                             "and cached (the coherence checks' control; "
                             "never on a real compute)")
    parser.add_argument('--extension', action='store_true',
                        help='up: nova-compute with the extension (the '
                             'default; switches a --stock cloud back)')
    parser.add_argument('--compute-option', action='append', default=None,
                        metavar='SECTION.OPTION=VALUE',
                        help="up: an option of nova-compute's own config "
                             "file (repeat it; the set replaces the "
                             "previous one), e.g. "
                             "libvirt.disk_cachemodes=network=writeback")
    parser.add_argument('--no-compute-options', action='store_true',
                        help="up: drop the options given before")
    args = parser.parse_args(argv)
    options = None
    if args.no_compute_options:
        options = {}
    if args.compute_option:
        try:
            options = parse_options(args.compute_option)
        except ValueError as err:
            parser.error(str(err))
    cloud = Cloud()
    try:
        if args.action == 'up':
            chosen = [d for d in ('stock', 'hazard', 'extension')
                      if getattr(args, d)]
            if len(chosen) > 1:
                parser.error('choose one of --%s' % ', --'.join(chosen))
            driver = chosen[0] if chosen else None
            cloud.up(driver=driver, compute_options=options)
        elif args.action == 'down':
            cloud.down()
        else:
            rows = cloud.status()
            for name, state, pid, mib in rows:
                print('%-17s %-5s %-8s %s' % (
                    name, state, pid or '',
                    '%.0f MiB' % mib if mib is not None else ''))
            print('services: %.0f MiB resident; nova-compute driver: %s'
                  % (sum(r[3] or 0 for r in rows),
                     cloud.state().get('driver', '-')))
            return 0 if all(r[1] == 'up' for r in rows) else 1
    except common.StackError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
