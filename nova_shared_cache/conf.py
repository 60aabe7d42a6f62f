"""Options of nova-shared-cache: the ``[shared_cache]`` group of nova.conf."""

import copy
import dataclasses

from oslo_config import cfg

from nova_shared_cache import exception

GROUP_NAME = 'shared_cache'

#: Cache modes that keep a disk shared by several QEMU processes coherent.
#: Both make QEMU open the image with ``cache.direct=on``, which for librbd
#: means ``rbd_cache=false``: every read and write goes to the cluster.
CACHE_MODES = ('none', 'directsync')

GROUP_HELP = """
Options of the nova-shared-cache compute driver extension
(``[DEFAULT] compute_driver = shared_cache.LibvirtSharedCacheDriver``).
The extension makes every disk that several instances share (a multiattach
volume of an enabled backend) a ``<shareable/>`` disk with a cache mode that
bypasses every client-side cache, on every path that writes disk XML.
"""


def shared_cache_group():
    # A new OptGroup for each ConfigOpts: oslo.config keeps a group's
    # per-option state (overrides, values) in the OptGroup object it is
    # given, only shallow-copied, so one OptGroup registered in two
    # ConfigOpts would share their overrides.
    return cfg.OptGroup(GROUP_NAME, title='nova-shared-cache options',
                        help=GROUP_HELP)


shared_cache_opts = [
    cfg.StrOpt(
        'cache_mode',
        default='none',
        choices=[
            ('none', 'O_DIRECT, guest-visible write cache honoured through '
                     'flushes; librbd cache off. Same as upstream Nova.'),
            ('directsync', 'O_DIRECT and every write synchronous; librbd '
                           'cache off. For guests that do not send flushes.'),
        ],
        help="""
Cache mode given to every shared disk of an enabled backend.

Each QEMU process is its own librbd client; a client-side cache makes one
instance read stale data or hide its writes from the others. Both choices
turn librbd's cache off. ``none`` is what upstream Nova uses for multiattach
disks. ``directsync`` also makes each write synchronous, which protects
guests that never send flush requests, at the price of write latency.
This option overrides ``[libvirt] disk_cachemodes`` for shared disks only;
every other disk keeps the cache mode Nova gives it.
"""),
    cfg.ListOpt(
        'enabled_backends',
        default=['rbd'],
        help="""
Storage backends whose multiattach volumes are handled as shared disks.

Each name is an entry point in the ``nova_shared_cache.backends`` namespace;
``rbd`` (Ceph RBD volumes, ``driver_volume_type = rbd``) is built in.
A volume of any other type is left exactly as Nova makes it. An unknown or
broken backend stops nova-compute at start. An empty list turns the
extension into stock Nova's driver (with a warning at start).
"""),
    cfg.StrOpt(
        'rbd_feature_policy',
        default='enforce',
        choices=[
            ('enforce', 'clear the single-client features before the '
                        'attach (needs write access to the image)'),
            ('refuse', 'fail the attach, naming the features'),
            ('warn', 'log a warning and attach anyway'),
            ('off', 'do not look at the image'),
        ],
        help="""
What to do when a multiattach RBD volume's image has single-client features.

exclusive-lock, object-map, fast-diff and journaling assume one writer: with
several, the clients pass the lock back and forth on every write. Cinder
clears them when it creates a volume of a multiattach type, but not for a
volume managed into Cinder, made by an older Cinder, or whose features were
set again by hand. The image is checked on the compute, before the disk is
attached.

Only a *new* attachment (attach, swap, first boot) can be refused, under
``enforce`` (when the features cannot be cleared, or the image cannot be
checked at all: Ceph unreachable, no credentials) or ``refuse``. A reconnect
of an existing attachment (hard reboot, power on, host boot, live migration,
resize, unshelve, evacuate) is never refused nor delayed past
``ceph_timeout``: it logs a warning and goes on, as stock Nova would.
``warn`` never blocks anything; ``off`` does not look.
"""),
    cfg.StrOpt(
        'sharing_guard',
        default='refuse',
        choices=[
            ('refuse', 'fail the attach, naming the other clients'),
            ('warn', 'log a warning and attach anyway'),
            ('off', 'do not look'),
        ],
        help="""
What to do when an RBD volume that is not multiattach is already open by
another client when it is attached to an instance.

Two instances writing one image that Nova and Cinder believe unshared (for
example the same image managed into Cinder twice) corrupt it with nobody
told. Checked for new attachments only (attach, swap, boot); a reconnect of
the same instance (reboot, migration, rescue) is not checked because the
other client can be the instance's own previous QEMU process.
"""),
    cfg.ListOpt(
        'ignored_watchers',
        default=['mgr.*', 'client.rbd-mirror.*', 'client.rbd-mirror-peer'],
        help="""
Ceph entity names (shell patterns) of clients that ``sharing_guard``, the
audit and ``status`` do not count as another user of an image.

Some Ceph services hold a watch on an image nobody shares: ceph-mgr's
rbd_support module (as ``mgr.<name>``) while it runs a task on the image,
rbd-mirror daemons (``client.rbd-mirror.<id>``, peers often as
``client.rbd-mirror-peer``), and any backup or migration tool that opens
images read-write under its own user. (A read-only open, such as ``rbd
export-diff``, holds no watch.) Ceph shows a watcher only as
``client.<global id>`` and an address; the name is found through the
monitors, which needs these mon caps for the checking user on top of
``profile rbd``: ``allow command "mgr dump"`` (names the mgr's module
clients) and ``allow command sessions`` (names every client). A watcher
whose name cannot be found is counted, and the message says which cap is
missing. An empty list counts every watcher.
"""),
    cfg.StrOpt(
        'hook_mode',
        default='fix',
        choices=[
            ('deny', 'refuse to start, restore or receive a domain whose '
                     'shared RBD disk caches'),
            ('fix', 'give libvirt corrected XML where the hook may '
                    '(migrate, restore); refuse a start it cannot correct'),
            ('warn', 'allow it and log a warning'),
        ],
        help="""
What the libvirt qemu hook (``nova-shared-cache install-hook``) does with a
domain that has a shared RBD disk (``<shareable/>``, a disk ``fix --live``
recorded in the domain's metadata, or an image another running local domain
uses when one of them writes it) in a caching mode. Read-only sharing
(``<readonly/>`` disks, RBD snapshots) is not shared. libvirt lets a hook
rewrite the XML of an incoming migration and of a restore, not of a start:
under ``fix`` a start is refused like under ``deny``, with the command that
repairs the definition. A domain without such a disk, or whose XML the hook
cannot read, is always allowed.
"""),
    cfg.StrOpt(
        'ceph_conf',
        default='/etc/ceph/ceph.conf',
        help="""
Ceph configuration file the compute uses for the Ceph-side checks.

Credentials are looked for in this order: a keyring for the Ceph user that
this file names (librados' ``keyring``, ``keyfile`` or ``key``); else the key
of the volume's libvirt secret (its ``secret_uuid``, else ``[libvirt]
rbd_secret_uuid``) when the secret is not private (``private='no'``); else
none, and the checks cannot run (nova-compute says so at start). The file
may be missing when the volume's connection_info names its monitors and the
libvirt secret is readable: QEMU itself needs neither. Never falls back to
``client.admin``.

This file is the default cluster's (``ceph``). A volume of another Ceph
cluster (Cinder's ``rbd_cluster_name``, ``cluster_name`` in the volume's
connection_info) is read with ``<cluster>.conf`` in the same directory, or
with this path's ``$cluster`` replaced when it has one; librados expands
``$cluster`` in keyring paths (``/etc/ceph/<cluster>.client.<user>.keyring``)
as the Ceph tools do.
"""),
    cfg.StrOpt(
        'ceph_user',
        help="""
Ceph user (without ``client.``) for the Ceph-side checks. Unset: the user in
the volume's connection_info, else ``[libvirt] rbd_user``, as Nova does.
Its key is found as ``ceph_conf`` describes.
"""),
    cfg.IntOpt(
        'ceph_timeout',
        default=10,
        min=1,
        help="""
Seconds any Ceph call of the Ceph-side checks may take (connecting, monitor
and OSD operations). A check that cannot finish in time refuses a new
attachment only under ``rbd_feature_policy = enforce/refuse`` or
``sharing_guard = refuse`` (the domain is not touched); anything else goes
on with a warning.
"""),
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated options the driver works with."""

    cache_mode: str
    enabled_backends: tuple
    rbd_feature_policy: str = 'enforce'
    sharing_guard: str = 'refuse'
    ceph_conf: str = '/etc/ceph/ceph.conf'
    ceph_user: object = None
    ceph_timeout: int = 10
    hook_mode: str = 'fix'
    ignored_watchers: tuple = ('mgr.*', 'client.rbd-mirror.*',
                               'client.rbd-mirror-peer')


def register_opts(conf):
    conf.register_group(shared_cache_group())
    conf.register_opts(shared_cache_opts, group=GROUP_NAME)


def load(conf):
    """Read and validate ``[shared_cache]``; raise ConfigError on bad input.

    oslo.config checks ``choices`` only when a value is read, so everything
    is read here, once, when the driver starts: a typo stops nova-compute at
    start instead of failing the first attach.
    """
    group = conf[GROUP_NAME]
    values = {}
    for opt in shared_cache_opts:
        try:
            values[opt.dest] = group[opt.dest]
        except (cfg.ConfigFileValueError, ValueError) as err:
            raise exception.ConfigError(option=opt.name, reason=err)

    backends = tuple(name.strip() for name in values['enabled_backends'])
    if any(not name for name in backends):
        raise exception.ConfigError(
            option='enabled_backends',
            reason="it names an empty backend (got %r)"
                   % list(values['enabled_backends']))
    if len(set(backends)) != len(backends):
        raise exception.ConfigError(
            option='enabled_backends',
            reason="a backend is named twice (got %r)" % list(backends))
    return Settings(cache_mode=values['cache_mode'],
                    enabled_backends=backends,
                    rbd_feature_policy=values['rbd_feature_policy'],
                    sharing_guard=values['sharing_guard'],
                    ceph_conf=values['ceph_conf'],
                    ceph_user=values['ceph_user'],
                    ceph_timeout=values['ceph_timeout'],
                    hook_mode=values['hook_mode'],
                    ignored_watchers=tuple(
                        p.strip() for p in values['ignored_watchers']
                        if p.strip()))


def list_opts():
    """Options for oslo-config-generator. Loads no plugin, touches nothing."""
    return [(shared_cache_group(), copy.deepcopy(shared_cache_opts))]
