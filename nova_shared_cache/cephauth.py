"""Which Ceph credentials the guard and the commands can use, if any.

QEMU needs no keyring on the compute: libvirt hands it the key of the
volume's libvirt secret. The guard looks for credentials in this order and
never falls back to ``client.admin`` silently:

1. a keyring for the Ceph user that ``[shared_cache] ceph_conf`` names
   (librados' own ``keyring``, ``keyfile`` and ``key`` options, read with
   librados so ``$cluster``/``$name`` expand as they do for QEMU);
2. the key of the volume's libvirt secret (``secret_uuid``, else
   ``[libvirt] rbd_secret_uuid``), read through libvirt, where the secret
   is not private (devstack-plugin-ceph and most deployment tools define it
   ``private='no'``);
3. none: the checks cannot run, and say exactly what to configure.

The key read from libvirt stays in memory: it is given to librados as its
``key`` option and never reaches a log, an argv, a file or an error.
"""

import base64
import dataclasses
import os
from typing import Optional

from nova_shared_cache import cephclient
from nova_shared_cache import exception

KEYRING = 'keyring'
DEFAULT_CLUSTER = 'ceph'
LIBVIRT_SECRET = 'libvirt-secret'
NONE = 'none'


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the key for ``user`` comes from; ``key`` only for secrets."""

    source: str                 # keyring | libvirt-secret | none
    user: Optional[str]
    conffile: Optional[str]     # the ceph.conf read, None: no file
    detail: str                 # for logs and reports: where, or why not
    key: Optional[str] = dataclasses.field(default=None, repr=False,
                                           compare=False)
    cluster: str = DEFAULT_CLUSTER  # librados' $cluster

    @property
    def usable(self):
        return self.source != NONE

    def report(self):
        """A secret-free dict for ``status``/``audit``."""
        return {'source': self.source, 'user': self.user,
                'cluster': self.cluster, 'ceph_conf': self.conffile,
                'detail': self.detail}


def cluster_conf(ceph_conf, cluster):
    """The configuration file of Ceph cluster ``cluster``.

    ``ceph_conf`` names the file of the default cluster (``ceph``); a
    volume of another cluster (Cinder's ``rbd_cluster_name``, in its
    connection_info as ``cluster_name``) is read with ``<cluster>.conf``
    next to it, as the Ceph tools name it (``ceph --cluster``). A
    ``$cluster`` in ``ceph_conf`` is replaced instead.
    """
    cluster = cluster or DEFAULT_CLUSTER
    if not ceph_conf:
        return ceph_conf
    if '$cluster' in ceph_conf:
        return ceph_conf.replace('$cluster', cluster)
    if cluster == DEFAULT_CLUSTER:
        return ceph_conf
    return os.path.join(os.path.dirname(ceph_conf), '%s.conf' % cluster)


def valid_cluster_name(cluster):
    """Is it a name Ceph allows ($cluster goes into file names)?"""
    return bool(cluster) and len(cluster) <= 64 and all(
        c.isalnum() or c in '-_' for c in cluster) and cluster.isascii()


#: {(conffile, user, cluster, CEPH_ARGS, bindings): (the file's stat key,
#: (candidates, inline))}: what librados read from a ceph.conf, kept while
#: the file is unchanged (making a Rados handle parses it: a few
#: milliseconds of every attach otherwise).
_CONF_KEYRINGS = {}


def _conf_keyrings(conffile, user, cluster):
    """(keyring candidates, inline key set) as librados reads them."""
    rados_mod, _ = cephclient.bindings()
    try:
        st = os.stat(conffile)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        stamp = None
    key = (conffile, user, cluster, os.environ.get('CEPH_ARGS'),
           id(rados_mod))
    cached = _CONF_KEYRINGS.get(key)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        handle = rados_mod.Rados(conffile=conffile, rados_id=user,
                                 clustername=cluster)
    except rados_mod.Error as err:
        raise exception.CephError(
            what='read %s' % conffile,
            reason='%s: %s' % (type(err).__name__, err)) from err
    try:
        inline = bool(handle.conf_get('key'))
        candidates = [handle.conf_get('keyfile') or '']
        candidates += (handle.conf_get('keyring') or '').split(',')
    finally:
        handle.shutdown()
    if stamp is not None:
        _CONF_KEYRINGS[key] = (stamp, (candidates, inline))
    return candidates, inline


def keyring_paths(conffile, user, cluster=DEFAULT_CLUSTER):
    """Readable key files librados would use for ``client.<user>``.

    Returns (paths, inline) where ``inline`` says ceph.conf holds the key
    itself (``key =``). Raises CephError when the bindings are missing or
    ceph.conf cannot be parsed.
    """
    candidates, inline = _conf_keyrings(conffile, user, cluster)
    paths = [p.strip() for p in candidates
             if p.strip() and os.path.isfile(p.strip())
             and os.access(p.strip(), os.R_OK)]
    return paths, inline


def _keyring_has(path, user):
    """Does the keyring file at ``path`` have a section for the user?

    A ``keyfile`` holds only a key (no sections): it counts.
    """
    try:
        with open(path, 'r', errors='replace') as f:
            text = f.read()
    except OSError:
        return False
    if '[' not in text:
        return bool(text.strip())
    return ('[client.%s]' % user) in text.replace(' ', '')


def _libvirt_message(err):
    getter = getattr(err, 'get_error_message', None)
    return getter() if callable(getter) else str(err)


def libvirt_secret_key(connection, secret_uuid):
    """(key, None) or (None, why not) for a libvirt ceph secret.

    ``connection`` is a libvirt connection, or a callable returning one
    (Nova's ``Host.get_connection``). libvirt is not imported here: its
    errors are told apart by their ``get_error_message``.
    """
    try:
        if callable(connection) and not hasattr(connection,
                                                'secretLookupByUUIDString'):
            connection = connection()
        if connection is None:
            return None, ('no libvirt connection to read secret %s'
                          % secret_uuid)
        secret = connection.secretLookupByUUIDString(secret_uuid)
        description = secret.XMLDesc(0)
    except Exception as err:
        return None, ('libvirt secret %s cannot be read: %s'
                      % (secret_uuid, _libvirt_message(err)))
    if "private='yes'" in description or 'private="yes"' in description:
        return None, ("libvirt secret %s is private (private='yes'), so "
                      "its key cannot be read back" % secret_uuid)
    try:
        value = secret.value(0)
    except Exception as err:
        return None, ('libvirt secret %s has no readable value: %s'
                      % (secret_uuid, _libvirt_message(err)))
    if not value:
        return None, 'libvirt secret %s has no value' % secret_uuid
    # libvirt keeps the decoded bytes; librados wants the base64 text.
    return base64.b64encode(bytes(value)).decode('ascii'), None


def resolve(conffile, user, secret_uuid=None, libvirt_connection=None,
            mon_host=None, volume_monitors=False, cluster=DEFAULT_CLUSTER):
    """The Credentials to use for ``client.<user>``.

    ``conffile``: the configuration file of the volume's ``cluster``
    (cluster_conf()); its keyring paths expand ``$cluster`` to it.

    ``mon_host``: the volume's monitors from connection_info; without a
    ceph.conf they are the only way to find the cluster.
    ``volume_monitors``: no volume at hand (the report at start): assume
    each volume names its monitors, as Cinder's RBD driver does.
    """
    if not user:
        return Credentials(
            NONE, None, None,
            'no Ceph user is known: the volume has no auth_username and '
            'neither [shared_cache] ceph_user nor [libvirt] rbd_user is set')
    have_conf = bool(conffile) and os.path.isfile(conffile)
    why = []
    if have_conf:
        try:
            paths, inline = keyring_paths(conffile, user, cluster)
        except exception.CephError as err:
            return Credentials(NONE, user, conffile, str(err),
                               cluster=cluster)
        found = [p for p in paths if _keyring_has(p, user)]
        if inline or found:
            return Credentials(
                KEYRING, user, conffile,
                'client.%s, key from %s' % (
                    user, found[0] if found else '%s (key =)' % conffile),
                cluster=cluster)
        why.append('no keyring for client.%s readable by this process '
                   'through %s' % (user, conffile))
    else:
        why.append('%s does not exist ([shared_cache] ceph_conf%s)' % (
            conffile or 'no ceph.conf', '' if cluster == DEFAULT_CLUSTER
            else ', for Ceph cluster %s' % cluster))
        try:
            cephclient.bindings()
        except exception.CephError as err:
            return Credentials(NONE, user, None, str(err), cluster=cluster)
    if secret_uuid:
        key, problem = libvirt_secret_key(libvirt_connection, secret_uuid)
        if key:
            if not (have_conf or mon_host or volume_monitors):
                why.append('the volume names no monitors and there is no '
                           'ceph.conf')
            else:
                return Credentials(
                    LIBVIRT_SECRET, user, conffile if have_conf else None,
                    'client.%s, key of libvirt secret %s%s' % (
                        user, secret_uuid, '' if have_conf else
                        " (monitors from each volume's connection_info)"),
                    key=key, cluster=cluster)
        else:
            why.append(problem)
    else:
        why.append('the volume names no libvirt secret and [libvirt] '
                   'rbd_secret_uuid is not set')
    return Credentials(NONE, user, conffile if have_conf else None,
                       '; '.join(why), cluster=cluster)


def remedy(user, conffile, secret_uuid):
    """What an operator configures so the guard can check images."""
    return ("give nova-compute a keyring for client.%s named in %s, or "
            "define libvirt secret %s with private='no'"
            % (user or '<rbd user>', conffile or '/etc/ceph/ceph.conf',
               secret_uuid or '<rbd_secret_uuid>'))
