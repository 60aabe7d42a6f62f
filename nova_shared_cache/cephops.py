"""RBD images and the OSD blocklist, through the bindings.

Functions here take a connected ``rados.Rados`` (see cephclient); the RBD
backend's guard and the operator tools share them.
"""

import collections
import contextlib
import errno
import fnmatch
import json
import struct

from nova_shared_cache import cephclient
from nova_shared_cache import exception

#: Feature name (as ``rbd info`` prints it) -> attribute of the rbd module.
SINGLE_CLIENT_FEATURES = (
    ('exclusive-lock', 'RBD_FEATURE_EXCLUSIVE_LOCK'),
    ('object-map', 'RBD_FEATURE_OBJECT_MAP'),
    ('fast-diff', 'RBD_FEATURE_FAST_DIFF'),
    ('journaling', 'RBD_FEATURE_JOURNALING'),
)


def single_client_features(features, rbd_mod):
    """Names of the single-client features set in a feature bit mask."""
    return [name for name, attr in SINGLE_CLIENT_FEATURES
            if features & getattr(rbd_mod, attr)]


def feature_mask(names, rbd_mod):
    mask = 0
    for name, attr in SINGLE_CLIENT_FEATURES:
        if name in names:
            mask |= getattr(rbd_mod, attr)
    return mask


_ImageSpec = collections.namedtuple('ImageSpec', 'pool namespace image')


class ImageSpec(_ImageSpec):
    """An RBD image: its pool, RBD namespace ('' the default) and name."""

    __slots__ = ()

    def __str__(self):
        return '/'.join(p for p in self if p)


def parse_image_spec(spec, source="connection_info data 'name'",
                     what='find the RBD image of the volume'):
    """'pool/image' or 'pool/namespace/image' -> ImageSpec.

    The one parser of image specs: the guard (``source`` the volume's
    connection_info) and the commands (``source`` their POOL/IMAGE
    argument) both check through it, before any Ceph connection. The
    three-part form is how libvirt and QEMU name an image in an RBD
    namespace.
    """
    text = str(spec or '')
    parts = text.split('/')
    reason = None
    if len(parts) not in (2, 3) or not all(parts):
        reason = 'expected POOL/IMAGE or POOL/NAMESPACE/IMAGE'
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        reason = 'it holds a control character'
    if reason:
        raise exception.CephError(
            what=what, reason="%s is %r, %s" % (source, spec, reason))
    if len(parts) == 2:
        return ImageSpec(parts[0], '', parts[1])
    return ImageSpec(*parts)


@contextlib.contextmanager
def open_image(cluster, pool, name, read_only=True, namespace=''):
    """An open ``rbd.Image`` (and its pool's ioctx), closed on exit.

    ``namespace``: the image's RBD namespace ('' the pool's default one).
    """
    _, rbd_mod = cephclient.bindings()
    ioctx = cluster.open_ioctx(pool)
    try:
        if namespace:
            ioctx.set_namespace(namespace)
        image = rbd_mod.Image(ioctx, name, read_only=read_only)
        try:
            yield image
        finally:
            image.close()
    finally:
        ioctx.close()


#: A format-2 image's objects (see Ceph's cls_rbd): ``rbd_id.<name>`` holds
#: the image id as an encoded string (little-endian u32 length, bytes);
#: ``rbd_header.<id>`` keeps the feature bits under the omap key
#: ``features`` (a little-endian u64).
ID_PREFIX = 'rbd_id.'
HEADER_PREFIX = 'rbd_header.'


def header_features(cluster, ref):
    """The feature bits of image ``ref`` read from its header object.

    Two reads (the id object, one omap key of the header) instead of
    opening the image, which costs librbd a dozen requests to the OSDs.
    None when the objects are not what a format-2 image has (no id
    object: a missing or format-1 image; no ``features`` key): the
    caller then opens the image, which says what is wrong in librbd's
    words. Errors of the connection (timeouts, permissions) propagate.
    """
    rados_mod, _ = cephclient.bindings()
    ioctx = cluster.open_ioctx(ref.pool)
    try:
        if ref.namespace:
            ioctx.set_namespace(ref.namespace)
        try:
            raw = ioctx.read(ID_PREFIX + ref.image, 4096)
        except rados_mod.ObjectNotFound:
            return None
        if len(raw) < 4:
            return None
        (length,) = struct.unpack_from('<I', raw)
        image_id = raw[4:4 + length]
        try:
            image_id = image_id.decode('ascii')
        except UnicodeDecodeError:
            return None
        if not length or len(image_id) != length:
            return None
        with rados_mod.ReadOpCtx() as op:
            values, _ = ioctx.get_omap_vals_by_keys(op, ('features',))
            try:
                ioctx.operate_read_op(op, HEADER_PREFIX + image_id)
            except rados_mod.ObjectNotFound:
                return None
            found = dict(values)
        features = found.get('features')
        if features is None or len(features) != 8:
            return None
        return struct.unpack('<Q', features)[0]
    finally:
        ioctx.close()


def other_watchers(cluster, image):
    """The image's watchers other than this connection's own client."""
    own = str(cluster.get_instance_id())
    return [{'address': str(w.get('addr')),
             'client': 'client.%s' % w.get('id'),
             'cookie': w.get('cookie')}
            for w in image.watchers_list() if str(w.get('id')) != own]


def _mon_json(cluster, command, target=None, timeout=0):
    """(JSON reply, None) or (None, why not) for a read-only mon command."""
    kwargs = {'target': target} if target is not None else {}
    if timeout:
        kwargs['timeout'] = timeout
    try:
        ret, out, err = cluster.mon_command(
            json.dumps(dict(command, format='json')), b'', **kwargs)
    except Exception as error:      # a binding error: never fatal here
        return None, '%s: %s' % (type(error).__name__, error)
    if ret == -errno.EACCES:
        return None, 'access denied'
    if ret != 0:
        return None, '%s (error %d)' % (str(err or '').strip(), ret)
    try:
        return json.loads(out or b'null'), None
    except ValueError as error:
        return None, 'unreadable reply: %s' % error


def _address_key(address):
    """'v1:127.0.0.1:0/123' -> '127.0.0.1:0/123' (no protocol prefix)."""
    text = str(address or '')
    for prefix in ('v1:', 'v2:', 'any:'):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _dicts(value, key=None):
    """The dicts in a JSON list (or in ``value[key]``); nothing else."""
    if key is not None:
        value = value.get(key) if isinstance(value, dict) else None
    return [v for v in value if isinstance(v, dict)] \
        if isinstance(value, list) else []


def _mgr_module_clients(mgr):
    """{address: (entity, module)} of the active mgr's module clients."""
    found = {}
    if not isinstance(mgr, dict):
        return found
    entity = 'mgr.%s' % mgr.get('active_name')
    for client in _dicts(mgr, 'active_clients'):
        for addr in _dicts(client, 'addrvec'):
            found[_address_key('%s/%s' % (addr.get('addr'),
                                          addr.get('nonce')))] = (
                entity, client.get('name'))
    return found


def _monitors(cluster, timeout):
    """Names of the monitors in quorum (else all in the monmap)."""
    status, _ = _mon_json(cluster, {'prefix': 'quorum_status'},
                          timeout=timeout)
    names = status.get('quorum_names') if isinstance(status, dict) else None
    if isinstance(names, list) and names:
        return [str(n) for n in names], None
    monmap, why = _mon_json(cluster, {'prefix': 'mon dump'}, timeout=timeout)
    names = [str(m.get('name')) for m in _dicts(monmap, 'mons')
             if m.get('name')]
    return names, None if names else "'mon dump': %s" % (why or 'no mons')


def watcher_names(cluster, watchers, timeout=0):
    """Name the Ceph entity behind each watcher, where Ceph lets us.

    A watcher shows only its global id and address. ``mgr dump`` names
    the active mgr's module clients by address (rbd_support holds watches
    on the images it works on), and ``sessions`` on every monitor in
    quorum names every client by global id; each needs a mon cap beyond
    ``profile rbd`` (``allow command "mgr dump"``, ``allow command
    sessions``). ``timeout``: seconds for each monitor command.

    Fills ``watcher['name']`` (None when unknown); returns the reasons the
    names could not all be read (empty: all read, or nothing to read).
    Never raises for what the monitors answer.
    """
    if not watchers:
        return []
    for watcher in watchers:
        watcher['name'] = None
    problems = []
    mgr, why = _mon_json(cluster, {'prefix': 'mgr dump'}, timeout=timeout)
    if why:
        problems.append("'mgr dump': %s" % why)
    by_address = _mgr_module_clients(mgr)
    by_id = {}
    monitors, why = _monitors(cluster, timeout)
    if why:
        problems.append(why)
    for mon in monitors:
        sessions, why = _mon_json(cluster, {'prefix': 'sessions'},
                                  target=mon, timeout=timeout)
        if why:
            problems.append("'sessions' on mon.%s: %s" % (mon, why))
            if why == 'access denied':
                break           # the same caps on every monitor
            continue
        for session in _dicts(sessions):
            try:
                by_id[int(session.get('global_id'))] = str(
                    session.get('entity_name'))
            except (TypeError, ValueError):
                continue
    for watcher in watchers:
        module = by_address.get(_address_key(watcher.get('address')))
        if module:
            watcher['name'], watcher['module'] = module
            continue
        number = str(watcher.get('client', '')).rpartition('.')[2]
        if number.isdigit() and int(number) in by_id:
            watcher['name'] = by_id[int(number)]
    return problems if any(w['name'] is None for w in watchers) else []


def names_hint(problems, who):
    """What to grant ``who`` to name watchers, when caps are the cause."""
    if not any('access denied' in p for p in problems):
        return ''
    return ("; give %s mon caps 'allow command sessions' and "
            "'allow command \"mgr dump\"' to name it" % who)


def ignored(watcher, patterns):
    """Does ``watcher``'s entity name match one of ``patterns``?"""
    name = watcher.get('name')
    return bool(name) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


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


def image_status(cluster, spec, names=False):
    """Features, size and the other clients of ``pool/image``.

    ``names``: also name each client (watcher_names); ``names_error``
    then says why some could not be named.
    """
    _, rbd_mod = cephclient.bindings()
    ref = parse_image_spec(spec)
    with open_image(cluster, ref.pool, ref.image,
                    namespace=ref.namespace) as image:
        mask = image.features()
        status = {
            'image': spec,
            'size': image.size(),
            'features': feature_names(mask, rbd_mod),
            'single_client_features': single_client_features(mask, rbd_mod),
            'watchers': other_watchers(cluster, image),
        }
    if names:
        problems = watcher_names(cluster, status['watchers'])
        if problems:
            status['names_error'] = '; '.join(problems)
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
