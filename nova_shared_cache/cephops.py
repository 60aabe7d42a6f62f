"""Read-only views of an RBD image and the OSD blocklist (fencing).

Functions here take a connected ``rados.Rados`` (see cephclient) and use
only the bindings; the operator tools and the guard share them.
"""

import errno
import json

from nova_shared_cache.backends import rbd as rbd_backend
from nova_shared_cache import cephclient
from nova_shared_cache import exception


def feature_names(mask, rbd_mod):
    """Every feature bit set in ``mask``, with rbd's names for them."""
    names = []
    for attr in sorted(a for a in dir(rbd_mod)
                       if a.startswith('RBD_FEATURE_')
                       and isinstance(getattr(rbd_mod, a), int)):
        bit = getattr(rbd_mod, attr)
        if mask & bit:
            names.append(attr[len('RBD_FEATURE_'):].lower().replace(
                '_', '-'))
    return names


def image_status(cluster, spec):
    """Features, size and watchers of ``pool/image``."""
    _, rbd_mod = cephclient.bindings()
    pool, name = rbd_backend.parse_image_spec(spec)
    ioctx = cluster.open_ioctx(pool)
    try:
        image = rbd_mod.Image(ioctx, name, read_only=True)
        try:
            mask = image.features()
            status = {
                'image': spec,
                'size': image.size(),
                'features': feature_names(mask, rbd_mod),
                'single_client_features':
                    rbd_backend.single_client_features(mask, rbd_mod),
                'watchers': [{'address': str(w.get('addr')),
                              'client': 'client.%s' % w.get('id'),
                              'cookie': w.get('cookie')}
                             for w in image.watchers_list()],
            }
        finally:
            image.close()
    finally:
        ioctx.close()
    own = 'client.%s' % cluster.get_instance_id()
    status['watchers'] = [w for w in status['watchers']
                          if w['client'] != own]
    return status


def _mon(cluster, command, what, user=None):
    ret, out, err = cluster.mon_command(json.dumps(command), b'')
    if ret == -errno.EACCES:
        raise exception.CephError(
            what=what,
            reason="access denied: the monitor caps of client.%s do not "
                   "allow '%s' (Ceph's 'profile rbd' may add blocklist "
                   "entries but not remove them; use a user with mon 'allow "
                   "command \"osd blocklist\"', for example with "
                   "--ceph-user admin)" % (user or '?', command['prefix']))
    if ret != 0:
        raise exception.CephError(what=what,
                                  reason='%s (error %d)' % (err.strip(), ret))
    return out


def blocklist(cluster):
    """The OSD blocklist: [{'address': ..., 'until': ...}]."""
    out = _mon(cluster, {'prefix': 'osd blocklist ls', 'format': 'json'},
               'list the OSD blocklist')
    return [{'address': e.get('addr'), 'until': e.get('until')}
            for e in _json_arrays(out)]


def _json_arrays(data):
    """Every entry of the JSON arrays in ``data``, one after the other.

    Ceph 16 prints ``osd blocklist ls`` as two arrays back to back (the
    address entries, then the range entries): not one JSON document.
    """
    text = (data or b'').decode() if isinstance(data, bytes) else data or ''
    decoder = json.JSONDecoder()
    entries, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return entries
        value, position = decoder.raw_decode(text, position)
        entries.extend(value if isinstance(value, list) else [value])


def blocklist_add(cluster, address, expire, user=None):
    _mon(cluster, {'prefix': 'osd blocklist', 'blocklistop': 'add',
                   'addr': address, 'expire': float(expire)},
         'blocklist client %s' % address, user)
    return _entry(cluster, address)


def blocklist_rm(cluster, address, user=None):
    _mon(cluster, {'prefix': 'osd blocklist', 'blocklistop': 'rm',
                   'addr': address},
         'remove client %s from the blocklist' % address, user)
    return _entry(cluster, address)


def _entry(cluster, address):
    for entry in blocklist(cluster):
        if entry['address'] == address:
            return entry
    return None
