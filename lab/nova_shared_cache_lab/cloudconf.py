"""Configuration files of the lab cloud's services.

Every file is rendered from the cloud's layout (``Layout``) and its
passwords; nothing here starts a process. One function per service returns
``{path: text}`` so that ``cloud.py`` writes them all the same way (0640,
atomically) and a test can read what a service was given.
"""

import os

REGION = 'RegionOne'

#: Loopback ports. Not the services' usual ones, so that the lab cloud and a
#: devstack on the same machine do not collide.
PORTS = {
    'mysql': 13306,
    'amqp': 35672,
    'amqp-dist': 35673,
    'epmd': 34369,
    'keystone': 15000,
    'placement': 18778,
    'glance': 19292,
    'cinder': 18776,
    'nova': 18774,
    'neutron': 19696,
}

#: Databases and the service that owns each.
DATABASES = ('keystone', 'placement', 'glance', 'cinder', 'nova_api',
             'nova', 'nova_cell0', 'neutron')

#: Service users in the ``service`` project (each gets admin and service).
SERVICE_USERS = ('nova', 'placement', 'glance', 'cinder', 'neutron')

CINDER_BACKEND = 'ceph'


def url(service, path=''):
    return 'http://127.0.0.1:%d%s' % (PORTS[service], path)


def endpoints():
    """(service name, service type, public URL) for the catalog."""
    return [
        ('keystone', 'identity', url('keystone', '/v3')),
        ('placement', 'placement', url('placement')),
        ('glance', 'image', url('glance')),
        ('cinderv3', 'volumev3', url('cinder', '/v3/$(project_id)s')),
        ('cinder', 'block-storage', url('cinder', '/v3/$(project_id)s')),
        ('nova', 'compute', url('nova', '/v2.1')),
        ('neutron', 'network', url('neutron')),
    ]


class Layout:
    """Where everything of one cloud lives, under ``<stack root>/cloud``."""

    def __init__(self, root, venv):
        self.root = root
        self.venv = venv
        self.etc = os.path.join(root, 'etc')
        self.log = os.path.join(root, 'log')
        self.run = os.path.join(root, 'run')
        self.data = os.path.join(root, 'data')
        self.bin = os.path.join(root, 'bin')

    def etc_of(self, service, *names):
        return os.path.join(self.etc, service, *names)

    def data_of(self, service, *names):
        return os.path.join(self.data, service, *names)

    def log_of(self, name):
        return os.path.join(self.log, '%s.log' % name)

    def pid_of(self, name):
        return os.path.join(self.run, '%s.pid' % name)

    @property
    def mysql_socket(self):
        return os.path.join(self.run, 'mysql', 'mysqld.sock')

    @property
    def clouds_yaml(self):
        return os.path.join(self.root, 'clouds.yaml')

    def venv_etc(self, *names):
        return os.path.join(self.venv, 'etc', *names)


def render(sections):
    """An ini file from ``{section: {option: value}}`` (in that order)."""
    lines = []
    for section, options in sections.items():
        lines.append('[%s]' % section)
        for key, value in options.items():
            if isinstance(value, bool):
                value = 'True' if value else 'False'
            elif isinstance(value, (list, tuple)):
                value = ','.join(str(v) for v in value)
            lines.append('%s = %s' % (key, value))
        lines.append('')
    return '\n'.join(lines)


def db_url(secrets, name):
    return 'mysql+pymysql://nsc:%s@127.0.0.1:%d/%s?charset=utf8' % (
        secrets['db'], PORTS['mysql'], name)


def transport_url(secrets):
    return 'rabbit://nsc:%s@127.0.0.1:%d/' % (secrets['amqp'],
                                              PORTS['amqp'])


def _auth(secrets, user, project='service'):
    """A keystoneauth password section for a service user."""
    return {
        'auth_type': 'password',
        'auth_url': url('keystone'),
        'username': user,
        'password': secrets['service'],
        'project_name': project,
        'user_domain_name': 'Default',
        'project_domain_name': 'Default',
        'region_name': REGION,
        'valid_interfaces': 'public',
    }


def _authtoken(secrets, user):
    section = _auth(secrets, user)
    section.pop('valid_interfaces')
    section['www_authenticate_uri'] = url('keystone')
    section['service_token_roles_required'] = True
    section['service_type'] = {
        'nova': 'compute', 'cinder': 'block-storage', 'glance': 'image',
        'placement': 'placement', 'neutron': 'network'}[user]
    return section


def _common(layout, secrets, service, rpc=True):
    options = {
        'debug': True,
        'use_stderr': True,
        'state_path': layout.data_of(service),
    }
    if rpc:
        options['transport_url'] = transport_url(secrets)
    return options


def _rootwrap(layout, service, filter_dirs):
    return render({'DEFAULT': {
        'filters_path': ','.join(filter_dirs),
        # A venv's bin is not in rootwrap's default exec_dirs (privsep-helper
        # and the projects' helpers live there).
        'exec_dirs': ','.join([os.path.join(layout.venv, 'bin'), '/sbin',
                               '/usr/sbin', '/bin', '/usr/bin',
                               '/usr/local/sbin', '/usr/local/bin']),
        'use_syslog': False,
        'daemon_timeout': 600,
    }})


def keystone(layout, secrets):
    conf = {
        'DEFAULT': {'debug': True, 'use_stderr': True},
        'database': {'connection': db_url(secrets, 'keystone')},
        'token': {'provider': 'fernet'},
        'fernet_tokens': {
            'key_repository': layout.etc_of('keystone', 'fernet-keys')},
        'fernet_receipts': {
            'key_repository': layout.etc_of('keystone', 'fernet-keys')},
        'credential': {
            'key_repository': layout.etc_of('keystone', 'credential-keys')},
        'cache': {'enabled': False},
    }
    return {layout.etc_of('keystone', 'keystone.conf'): render(conf)}


def placement(layout, secrets):
    conf = {
        'DEFAULT': {'debug': True, 'use_stderr': True},
        'placement_database': {'connection': db_url(secrets, 'placement')},
        'api': {'auth_strategy': 'keystone'},
        'keystone_authtoken': _authtoken(secrets, 'placement'),
    }
    return {layout.etc_of('placement', 'placement.conf'): render(conf)}


def glance(layout, secrets):
    api = {
        'DEFAULT': dict(_common(layout, secrets, 'glance', rpc=False),
                        enabled_backends='file:file',
                        image_cache_dir=layout.data_of('glance', 'cache'),
                        workers=1,
                        bind_host='127.0.0.1', bind_port=PORTS['glance'],
                        public_endpoint=url('glance')),
        'database': {'connection': db_url(secrets, 'glance')},
        'glance_store': {'default_backend': 'file'},
        'file': {'filesystem_store_datadir': layout.data_of('glance',
                                                            'images')},
        'os_glance_staging_store': {
            'filesystem_store_datadir': layout.data_of('glance', 'staging')},
        'os_glance_tasks_store': {
            'filesystem_store_datadir': layout.data_of('glance', 'tasks')},
        'paste_deploy': {'flavor': 'keystone'},
        'keystone_authtoken': _authtoken(secrets, 'glance'),
        'oslo_concurrency': {'lock_path': layout.data_of('glance', 'lock')},
    }
    with open(layout.venv_etc('glance', 'glance-api-paste.ini')) as f:
        paste = f.read()
    return {layout.etc_of('glance', 'glance-api.conf'): render(api),
            layout.etc_of('glance', 'glance-api-paste.ini'): paste}


def cinder(layout, secrets, ceph):
    """``ceph``: dict with conf, pool, user, secret_uuid."""
    conf = {
        'DEFAULT': dict(
            _common(layout, secrets, 'cinder'),
            auth_strategy='keystone',
            enabled_backends=CINDER_BACKEND,
            default_volume_type='__DEFAULT__',
            api_paste_config=layout.etc_of('cinder', 'api-paste.ini'),
            rootwrap_config=layout.etc_of('cinder', 'rootwrap.conf'),
            resource_query_filters_file=layout.etc_of(
                'cinder', 'resource_filters.json'),
            image_conversion_dir=layout.data_of('cinder', 'conversion'),
            osapi_volume_listen='127.0.0.1',
            osapi_volume_listen_port=PORTS['cinder'],
            osapi_volume_workers=1,
            my_ip='127.0.0.1',
            glance_api_servers=url('glance'),
            # The cloud has one host: no backup service.
            backup_driver='cinder.backup.drivers.nfs.NFSBackupDriver'),
        'database': {'connection': db_url(secrets, 'cinder')},
        'keystone_authtoken': _authtoken(secrets, 'cinder'),
        'service_user': dict(_auth(secrets, 'cinder'),
                             send_service_user_token=True),
        'nova': dict(_auth(secrets, 'nova'), interface='public'),
        'oslo_concurrency': {'lock_path': layout.data_of('cinder', 'lock')},
        'coordination': {
            'backend_url': 'file://%s' % layout.data_of('cinder', 'coord')},
        CINDER_BACKEND: {
            'volume_driver': 'cinder.volume.drivers.rbd.RBDDriver',
            'volume_backend_name': CINDER_BACKEND,
            'rbd_pool': ceph['pool'],
            'rbd_ceph_conf': ceph['conf'],
            'rbd_user': ceph['user'],
            'rbd_secret_uuid': ceph['secret_uuid'],
            'rbd_flatten_volume_from_snapshot': False,
            'rbd_max_clone_depth': 5,
            'report_discard_supported': True,
        },
    }
    conf['nova'].pop('valid_interfaces')
    files = {layout.etc_of('cinder', 'cinder.conf'): render(conf)}
    for name in ('api-paste.ini', 'resource_filters.json'):
        with open(layout.venv_etc('cinder', name)) as f:
            files[layout.etc_of('cinder', name)] = f.read()
    files[layout.etc_of('cinder', 'rootwrap.conf')] = _rootwrap(
        layout, 'cinder', [layout.venv_etc('cinder', 'rootwrap.d'),
                           layout.venv_etc('os-brick', 'rootwrap.d')])
    return files


def nova(layout, secrets):
    """The nova.conf every Nova service reads (compute adds its own)."""
    conf = {
        'DEFAULT': dict(
            _common(layout, secrets, 'nova'),
            my_ip='127.0.0.1',
            host='nsc-compute',
            osapi_compute_listen='127.0.0.1',
            osapi_compute_workers=1,
            metadata_workers=1,
            rootwrap_config=layout.etc_of('nova', 'rootwrap.conf'),
            instances_path=layout.data_of('nova', 'instances'),
            allow_resize_to_same_host=True,
            # TCG guests of 128 MiB: let the one host take many.
            ram_allocation_ratio=4.0,
            disk_allocation_ratio=4.0,
            cpu_allocation_ratio=16.0,
            reserved_host_memory_mb=0,
            # Servers here have no network; never wait for Neutron events.
            vif_plugging_is_fatal=False,
            vif_plugging_timeout=0,
            compute_driver='libvirt.LibvirtDriver',
        ),
        'api': {'auth_strategy': 'keystone'},
        'wsgi': {'api_paste_config': layout.etc_of('nova', 'api-paste.ini')},
        'api_database': {'connection': db_url(secrets, 'nova_api')},
        'database': {'connection': db_url(secrets, 'nova')},
        'conductor': {'workers': 1},
        'scheduler': {'workers': 1},
        'keystone_authtoken': _authtoken(secrets, 'nova'),
        'service_user': dict(_auth(secrets, 'nova'),
                             send_service_user_token=True),
        'placement': _auth(secrets, 'placement'),
        'glance': {'valid_interfaces': 'public', 'region_name': REGION},
        'cinder': dict(_auth(secrets, 'cinder'), os_region_name=REGION,
                       catalog_info='volumev3::publicURL'),
        'neutron': dict(_auth(secrets, 'neutron'),
                        service_metadata_proxy=False),
        'oslo_concurrency': {'lock_path': layout.data_of('nova', 'lock')},
        'oslo_messaging_notifications': {'driver': 'noop'},
        'libvirt': {
            'virt_type': 'qemu',
            'cpu_mode': 'none',
            'live_migration_uri': 'qemu+ssh://%s/system',
        },
        'vnc': {'enabled': False},
        'serial_console': {'enabled': False},
        'os_vif_linux_bridge': {},
    }
    conf['cinder'].pop('region_name')
    conf['cinder'].pop('valid_interfaces')
    conf.pop('os_vif_linux_bridge')
    files = {layout.etc_of('nova', 'nova.conf'): render(conf)}
    with open(layout.venv_etc('nova', 'api-paste.ini')) as f:
        files[layout.etc_of('nova', 'api-paste.ini')] = f.read()
    files[layout.etc_of('nova', 'rootwrap.conf')] = _rootwrap(
        layout, 'nova', [layout.venv_etc('nova', 'rootwrap.d'),
                         layout.venv_etc('os-brick', 'rootwrap.d')])
    return files


#: nova-compute's drivers: the extension, stock Nova's, and the lab's
#: test-only driver that drops Nova's shareable rule (the hazard, for the
#: coherence checks' control; lab/nova/virt/nsc_lab_hazard).
DRIVERS = {
    'extension': 'shared_cache.LibvirtSharedCacheDriver',
    'stock': 'libvirt.LibvirtDriver',
    'hazard': 'nsc_lab_hazard.UnsharedCachingDriver',
}


def nova_compute(layout, driver, ceph_conf, options=None):
    """nova-compute's own file, read after nova.conf.

    ``driver``: a key of ``DRIVERS``. ``options``: extra
    ``{section: {option: value}}``, e.g. ``[libvirt] disk_cachemodes``.
    """
    conf = {'DEFAULT': {'compute_driver': DRIVERS[driver]}}
    if driver == 'extension':
        conf['shared_cache'] = {'ceph_conf': ceph_conf}
    for section, values in (options or {}).items():
        conf.setdefault(section, {}).update(values)
    return {layout.etc_of('nova', 'nova-compute.conf'): render(conf)}


def neutron(layout, secrets):
    conf = {
        'DEFAULT': dict(
            _common(layout, secrets, 'neutron'),
            core_plugin='ml2',
            # The router plugin loads the port-forwarding model that ML2's
            # port listing needs (with no service plugin at all, every
            # GET /v2.0/ports fails); it needs no agent to answer.
            service_plugins='router',
            auth_strategy='keystone',
            api_workers=1,
            rpc_workers=0,
            rpc_state_report_workers=0,
            bind_host='127.0.0.1',
            bind_port=PORTS['neutron'],
            api_paste_config=layout.etc_of('neutron', 'api-paste.ini'),
            notify_nova_on_port_status_changes=False,
            notify_nova_on_port_data_changes=False,
        ),
        'database': {'connection': db_url(secrets, 'neutron')},
        'keystone_authtoken': _authtoken(secrets, 'neutron'),
        'nova': _auth(secrets, 'nova'),
        'oslo_concurrency': {'lock_path': layout.data_of('neutron', 'lock')},
        'agent': {'root_helper': 'false'},
    }
    conf['nova'].pop('valid_interfaces')
    ml2 = {
        'ml2': {'type_drivers': 'flat', 'tenant_network_types': '',
                'mechanism_drivers': '', 'extension_drivers': ''},
        'ml2_type_flat': {'flat_networks': '*'},
    }
    files = {layout.etc_of('neutron', 'neutron.conf'): render(conf),
             layout.etc_of('neutron', 'plugins', 'ml2',
                           'ml2_conf.ini'): render(ml2)}
    with open(layout.venv_etc('neutron', 'api-paste.ini')) as f:
        files[layout.etc_of('neutron', 'api-paste.ini')] = f.read()
    return files


def clouds_yaml(secrets):
    """clouds.yaml: ``nova-shared-cache`` (demo member) and ``-admin``."""
    def entry(user, project, password):
        return ('    auth:\n'
                '      auth_url: %s\n'
                '      username: %s\n'
                '      password: %s\n'
                '      project_name: %s\n'
                '      user_domain_name: Default\n'
                '      project_domain_name: Default\n'
                '    region_name: %s\n'
                '    interface: public\n'
                '    identity_api_version: 3\n'
                % (url('keystone', '/v3'), user, password, project, REGION))
    return ('clouds:\n'
            '  nova-shared-cache:\n' + entry('demo', 'demo', secrets['demo'])
            + '  nova-shared-cache-admin:\n'
            + entry('admin', 'admin', secrets['admin']))
