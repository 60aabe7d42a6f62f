"""Every RBD disk of the local libvirt domains, and what is wrong with it.

A disk is *shared* when its definition says ``<shareable/>`` (Nova marks
every multiattach volume so), when another local domain uses the same image,
or when Ceph shows the image open by a client on another host. For a shared
disk the audit reports:

- ``caching``: QEMU runs it with librbd's cache on (``cache.direct`` false),
  or its definition asks for a caching mode (it comes back at the next cold
  start);
- ``not-shareable``: its definition lacks ``<shareable/>``;
- ``live-differs``: QEMU's state is not what the definition says (edited
  definition, or a live switch whose definition was not fixed);
- ``features``: the image has single-client features (exclusive-lock...).

The definition is the persistent one when the domain has it, else the live
XML. After ``fix --live`` libvirt's live XML still shows the old cache mode
(libvirt has no way to be told); QEMU's state is what counts.

The questions that wait on someone else, one QMP query per running domain
and one Ceph status per image, run up to ``workers`` at a time (a bounded
pool of threads; ``audit --workers``). Each keeps its own bound (the QMP
timeout, ``[shared_cache] ceph_timeout``), so a hung QEMU or a slow Ceph
costs its own row an error after that bound and holds nothing else. The
answers are used in the order the domains and images were found, so the
report (rows, findings and errors, in order) is the one a sequential scan
(``workers`` 1, no thread at all) makes.
"""

import concurrent.futures
import copy
import dataclasses
import time
from typing import Optional

from nova_shared_cache import cephclient
from nova_shared_cache import cephops
from nova_shared_cache import exception
from nova_shared_cache import hostnet
from nova_shared_cache.libvirt import domxml
from nova_shared_cache.libvirt import livefix
from nova_shared_cache.libvirt import qmp


@dataclasses.dataclass
class DiskRow:
    domain: str
    uuid: str
    running: bool
    persistent: bool
    target: Optional[str]
    image: str
    serial: Optional[str]
    cache: Optional[str]          # the definition's cache mode
    shareable: bool               # the definition's <shareable/>
    readonly: bool = False        # <readonly/>: the domain never writes
    snapshot: Optional[str] = None  # an RBD snapshot: never written
    #: The cache mode ``fix --live`` recorded for it in the domain's
    #: metadata: it is shared, whatever the live XML still says.
    recorded: Optional[str] = None
    live_xml_cache: Optional[str] = None
    qemu: Optional[dict] = None   # QEMU's cache state (running domains)
    shared_by: list = dataclasses.field(default_factory=list)
    features: Optional[list] = None
    other_host_clients: Optional[list] = None
    ceph_user: Optional[str] = None   # who read the image's Ceph status
    #: Why some clients on other hosts could not be named, so that
    #: [shared_cache] ignored_watchers could not apply to them.
    names_error: Optional[str] = None
    findings: list = dataclasses.field(default_factory=list)
    # What the fixes need, not reported.
    live: object = dataclasses.field(default=None, repr=False)
    config: object = dataclasses.field(default=None, repr=False)
    handle: object = dataclasses.field(default=None, repr=False)

    @property
    def shared(self):
        return bool(self.shared_by)

    def finding(self, code):
        return [f for f in self.findings if f['code'] == code]

    def report(self):
        data = {f.name: copy.deepcopy(getattr(self, f.name))
                for f in dataclasses.fields(self) if f.repr}
        data['shared'] = self.shared
        return data


@dataclasses.dataclass
class Report:
    domains: int = 0
    disks: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)
    #: What made the scan less sure than usual, with the remedy; no
    #: effect on the exit status.
    warnings: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def findings(self):
        return sum(len(d.findings) for d in self.disks)

    @property
    def exit_code(self):
        return 2 if self.errors else 1 if self.findings else 0

    def report(self):
        return {'domains': self.domains,
                'disks': [d.report() for d in self.disks],
                'findings': self.findings, 'errors': self.errors,
                'warnings': self.warnings,
                'seconds': round(self.seconds, 3)}


#: QMP queries and Ceph status calls at a time, unless told otherwise
#: (``audit --workers``).
WORKERS = 8
#: The most ``audit --workers`` accepts: every worker is a thread, and with
#: a hung QEMU a second, bounded one.
MAX_WORKERS = 64


def in_order(function, items, workers):
    """``[function(item) for item in items]``, ``workers`` at a time.

    The results come back in the order of ``items`` whatever order the
    calls end in. With one worker (or one item) the calls run one after
    the other in this thread, as a plain loop. An exception of a call is
    raised here (the first in ``items``' order) once no call runs any
    more; calls not started yet are dropped then.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(workers, len(items)),
        thread_name_prefix='nsc-audit')
    try:
        return list(pool.map(function, items))
    finally:
        # Every call is bounded: waiting for the ones under way is too.
        pool.shutdown(wait=True, cancel_futures=True)


def qmp_shares_warning(why):
    return ('QMP queries went over the connection the domains were read '
            'on (%s): a QEMU that does not answer could then have held up '
            'the reads of other domains; check that libvirtd accepts one '
            'more connection from this host (libvirtd.conf max_clients)'
            % why)


class Auditor:
    """Reads the host once; ``scan()`` builds the Report."""

    def __init__(self, connection, settings, libvirt_user=None, ceph=True,
                 registry=None, local_addresses=None, workers=1,
                 qmp_connection=None):
        self.connection = connection
        #: A second connection to the same libvirtd for the QMP commands
        #: alone. A command QEMU leaves unanswered stays pending on its
        #: connection, and calls made on that connection meanwhile (the
        #: reads of the domains' XML) can wait for it: measured with
        #: libvirt 9.0 and three such commands, sometimes for as long as
        #: QEMU does not answer. None: QMP goes over ``connection``.
        self.qmp_connection = qmp_connection
        self._qmp_domains = None
        #: Warnings for the report (Report.warnings).
        self.warnings = []
        self.settings = settings
        self.libvirt_user = libvirt_user
        self.ceph = ceph
        self.registry = registry or cephclient.REGISTRY
        self._local = local_addresses
        #: QMP queries and Ceph status calls at a time (1: sequential).
        self.workers = max(1, int(workers))

    # -- libvirt ---------------------------------------------------------

    def _listed(self, names):
        """The domains to audit: all, or those ``names`` (each must exist)."""
        domains = self.connection.listAllDomains()
        if names:
            known = {d.name(): d for d in domains}
            missing = sorted(set(names) - set(known))
            if missing:
                raise exception.LibvirtError(
                    what='find domain(s) %s' % ', '.join(missing),
                    reason='no such domain on %s' % self.connection.getURI())
            # Each once, in the order given (--domain a --domain a).
            domains = [known[n] for n in dict.fromkeys(names)]
        return domains

    @staticmethod
    def _read_domain(domain):
        """(domain, running, persistent, live, config), or None if gone."""
        import libvirt
        try:
            running = bool(domain.isActive())
            persistent = bool(domain.isPersistent())
            live = domxml.parse(domain.XMLDesc(0))
            config = live
            if running and persistent:
                config = domxml.parse(domain.XMLDesc(
                    libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as err:
            # Gone between listing and reading: not this host's anymore.
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        return domain, running, persistent, live, config

    def _domains(self, names):
        for found in in_order(self._read_domain, self._listed(names),
                              self.workers):
            if found is not None:
                yield found

    def _read_and_query(self, domain):
        """(the domain read, (QEMU's block nodes, errors)): one pool task."""
        found = self._read_domain(domain)
        if found is None:
            return None, (None, [])
        return found, self._query_qemu(found)

    def _query_qemu(self, found):
        """(QEMU's block nodes or None, errors) of one domain read.

        Only a running domain with an RBD disk in its live XML is asked.
        """
        domain, running, _, live, _ = found
        errors = []
        if running and domxml.rbd_disks(live):
            return self._qemu_nodes(domain, errors), errors
        return None, errors

    def _rows(self, domain, running, persistent, live, config, nodes=None):
        """The rows of one domain; ``nodes``: its QEMU's (_query_qemu)."""
        live_disks = {d.target: d for d in domxml.rbd_disks(live)}
        config_disks = {d.target: d for d in domxml.rbd_disks(config)}
        if not (live_disks or config_disks):
            return []
        rows = []
        name = domain.name()
        recorded = dict(domxml.recorded_disks(config))
        recorded.update(domxml.recorded_disks(live))
        for target in list(config_disks) + [
                t for t in live_disks if t not in config_disks]:
            defined = config_disks.get(target) or live_disks[target]
            live_disk = live_disks.get(target) if running else None
            rows.append(DiskRow(
                domain=name, uuid=domain.UUIDString(), running=running,
                persistent=persistent, target=target, image=defined.spec,
                serial=defined.serial, cache=defined.cache,
                shareable=defined.shareable, readonly=defined.readonly,
                snapshot=defined.snapshot,
                recorded=domxml.recorded_mode(recorded,
                                              live_disk or defined),
                live_xml_cache=live_disk.cache if live_disk else None,
                qemu=(qmp.live_cache(nodes, live_disk)
                      if nodes is not None and live_disk else None),
                live=live_disk, config=config_disks.get(target),
                handle=domain))
        return rows

    def _qmp_domain(self, domain):
        """``domain`` on the QMP connection (itself without one)."""
        if self._qmp_domains is None:
            return domain
        return self._qmp_domains.get(domain.UUIDString(), domain)

    def _list_qmp_domains(self):
        """Every domain on the QMP connection, listed before any command.

        Listed once, while nothing is pending on that connection yet; a
        domain started since (not in the list) is asked through the main
        connection.
        """
        if self.qmp_connection is None or self._qmp_domains is not None:
            return
        import libvirt
        try:
            self._qmp_domains = {d.UUIDString(): d for d in
                                 self.qmp_connection.listAllDomains()}
        except libvirt.libvirtError as err:
            self._qmp_domains = None
            self.warnings.append(qmp_shares_warning(
                'could not list the domains on the second libvirt '
                'connection: %s' % err.get_error_message()))

    def _qemu_nodes(self, domain, errors):
        import libvirt
        try:
            return qmp.Monitor(self._qmp_domain(domain)).block_nodes()
        except qmp.QmpError as err:
            # libvirt's test driver (and other non-QEMU drivers) have no
            # monitor: QEMU's state is then simply not known.
            if 'not supported' in str(err.reason):
                return None
            errors.append({'domain': domain.name(), 'error': str(err)})
        except libvirt.libvirtError as err:
            errors.append({'domain': domain.name(),
                           'error': err.get_error_message()})
        return None

    # -- Ceph -----------------------------------------------------------------

    def _ceph_user(self, disk):
        """The Ceph user to read ``disk``'s image as; None: nobody named.

        As Nova chooses it (the disk's own user, else ``[libvirt]
        rbd_user``), unless ``[shared_cache] ceph_user`` or --ceph-user
        says otherwise. Never a silent ``client.admin``.
        """
        return (self.settings.ceph_user or disk.user or self.libvirt_user
                or None)

    def _read_status(self, key):
        """(image status or None, error or None) of one (spec, mons, user).

        Bounded by ``[shared_cache] ceph_timeout`` (cephclient).
        """
        spec, mon_host, user = key
        if user is None:
            return None, {'image': spec, 'error': (
                'no Ceph user to read %s as: the disk names no '
                '<auth username> and neither --ceph-user, '
                '[shared_cache] ceph_user nor [libvirt] rbd_user is '
                'set (client.admin is never assumed)' % spec)}
        try:
            client = self.registry.get(
                self.settings.ceph_conf, user, self.settings.ceph_timeout,
                mon_host=mon_host)
            return client.call(
                'read the status of %s as client.%s' % (spec, user),
                lambda c: self._image_status(c, spec)), None
        except exception.SharedCacheError as err:
            return None, {'image': spec, 'error': str(err)}

    def _ceph_status(self, rows, errors):
        keys = {}       # in the order found
        for row in rows:
            disk = row.live or row.config
            key = (disk.image_spec, disk.mon_host, self._ceph_user(disk))
            row.ceph_user = key[2]
            keys[key] = None
        keys = list(keys)
        # One call per image; errors in the order the images were found.
        seen = {}
        for key, (status, error) in zip(keys, in_order(
                self._read_status, keys, self.workers)):
            seen[key] = status
            if error is not None:
                errors.append(error)
        for row in rows:
            disk = row.live or row.config
            status = seen[(disk.image_spec, disk.mon_host, row.ceph_user)]
            if status is None:
                continue
            row.features = status['single_client_features']
            row.other_host_clients = [
                w['address'] for w in status['watchers']
                if not hostnet.is_local(w['address'], self._local)
                and not cephops.ignored(w, self.settings.ignored_watchers)]
            row.names_error = status.get('names_error')

    def _image_status(self, cluster, spec):
        """image_status, naming only the clients on other hosts.

        This host's QEMUs always watch the images they use: naming them
        would cost monitor commands for every disk and tell nothing.
        """
        status = cephops.image_status(cluster, spec)
        remote = [w for w in status['watchers']
                  if not hostnet.is_local(w['address'], self._local)]
        if remote and self.settings.ignored_watchers:
            problems = cephops.watcher_names(cluster, remote)
            if problems:
                status['names_error'] = '; '.join(problems) + (
                    cephops.names_hint(problems, 'the Ceph user'))
        return status

    # -- the audit ------------------------------------------------------------

    def scan(self, names=None):
        started = time.monotonic()
        report = Report()
        rows = []
        # Each domain's XML and its QEMU's block nodes, ``workers`` domains
        # at a time; the report keeps libvirt's order.
        self._list_qmp_domains()
        read = [(found, queried) for found, queried in in_order(
            self._read_and_query, self._listed(names), self.workers)
            if found is not None]
        report.domains = len(read)
        report.warnings.extend(self.warnings)
        for found, (nodes, errors) in read:
            report.errors.extend(errors)
            rows.extend(self._rows(*found, nodes=nodes))
        if self.ceph and rows:
            if self._local is None:
                # Raises when they cannot be read: with every client taken
                # for a remote one, unshared disks would look shared.
                self._local = hostnet.local_addresses()
            self._ceph_status(rows, report.errors)
        users = {}

        def add(spec, domain, writes):
            image = users.setdefault(spec, {})
            image[domain] = image.get(domain, False) or writes
        for row in rows:
            add((row.live or row.config).key, row.domain, not row.readonly)
        if names:
            # Sharing is a host-wide question even when only some domains
            # are asked about.
            for _, _, _, live, config in self._domains(None):
                name = (live.findtext('name') or '')
                for disk in domxml.rbd_disks(live) + domxml.rbd_disks(config):
                    add(disk.key, name, disk.writes)
        for row in rows:
            judge(row, users)
        report.disks = rows
        report.seconds = time.monotonic() - started
        return report


def judge(row, users):
    """Fill ``shared_by`` and ``findings`` of one disk.

    ``users``: {spec: {domain: writes}} of every local domain. Local
    domains that only read an image (``<readonly/>``, or a snapshot
    ``pool/image@snap``, which never changes) do not share it in a way a
    cache can break.
    """
    row.shared_by = []
    if row.snapshot:
        return          # a snapshot: nobody writes it, no cache goes stale
    if row.shareable or (row.live is not None and row.live.shareable):
        row.shared_by.append('shareable')
    if row.recorded:
        row.shared_by.append("switched to cache='%s' by fix --live"
                             % row.recorded)
    disk = row.live or row.config
    others = {d: w for d, w in users.get(disk.key if disk else row.image,
                                         {}).items() if d != row.domain}
    if others and (any(others.values()) or not row.readonly):
        row.shared_by.append('local domains: %s' % ', '.join(
            '%s%s' % (d, '' if w else ' (read-only)')
            for d, w in sorted(others.items())))
    if row.other_host_clients:
        row.shared_by.append('clients on other hosts: %s'
                             % ', '.join(row.other_host_clients))
    row.findings = []
    if not row.shared:
        return
    defined_caches = domxml.caches(row.cache)
    if row.qemu is not None and not row.qemu['direct']:
        row.findings.append({'code': 'caching', 'where': 'qemu',
                             'detail': "QEMU runs it with librbd's cache on"})
    elif (row.qemu is None and row.running
          and domxml.caches(row.live_xml_cache)):
        row.findings.append({'code': 'caching', 'where': 'live-xml',
                             'detail': "libvirt runs it with cache='%s'"
                                       % (row.live_xml_cache or 'default')})
    if defined_caches:
        row.findings.append({'code': 'caching', 'where': 'definition',
                             'detail': "the definition has cache='%s'"
                                       % (row.cache or 'default')})
    if not row.shareable:
        row.findings.append({'code': 'not-shareable', 'where': 'definition',
                             'detail': 'the definition lacks <shareable/>'})
    if (row.qemu is not None and defined_caches is not None
            and row.qemu['direct'] == defined_caches):
        row.findings.append({
            'code': 'live-differs', 'where': 'qemu',
            'detail': "QEMU runs it %s, the definition says cache='%s'" % (
                'uncached' if row.qemu['direct'] else 'cached',
                row.cache or 'default')})
    if row.features:
        row.findings.append({'code': 'features', 'where': 'ceph',
                             'detail': 'single-client features %s'
                                       % ', '.join(row.features)})


# -- repairs -----------------------------------------------------------

def fix_config(row, cache_mode):
    """Rewrite one disk of a persistent definition; a result dict."""
    import libvirt
    result = {'domain': row.domain, 'disk': row.target, 'image': row.image,
              'action': 'config'}
    if not row.persistent or row.config is None:
        result.update(state='skipped', detail='transient domain: no '
                      'persistent definition to fix')
        return result
    element = copy.deepcopy(row.config.element)
    changes = domxml.fix_disk(element, cache_mode)
    if not changes:
        result.update(state='unchanged', changes=[])
        return result
    try:
        row.handle.updateDeviceFlags(domxml.to_text(element),
                                     libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError as err:
        raise exception.LibvirtError(
            what='update the definition of disk %s of domain %s'
                 % (row.target, row.domain),
            reason=err.get_error_message())
    result.update(state='fixed', changes=changes)
    return result


def fix_live(row, cache_mode, **switch_args):
    """Switch one running disk to direct I/O, then fix its definition.

    The definition is fixed only when the switch finished cleanly; any
    other outcome (not-switched, rolled-back, partial, interrupted) is
    reported with what QEMU was left with, and the definition waits for
    the next ``fix --live``.
    """
    try:
        result = livefix.switch(row.handle, row.live, **switch_args)
    except livefix.NotSwitched as err:
        return {'domain': row.domain, 'disk': row.target, 'image': row.image,
                'action': 'live', 'state': 'not-switched', 'error': str(err),
                'leftover': [], 'interrupted': None,
                'config': {'state': 'skipped',
                           'detail': 'the live switch was not done'}}
    done = dataclasses.asdict(result)
    done['action'] = 'live'
    if not result.ok:
        done['config'] = {'state': 'skipped', 'detail': (
            'interrupted by %s' % result.interrupted if result.interrupted
            else 'the live switch did not finish')}
    elif row.persistent:
        done['config'] = fix_config(row, cache_mode)
    else:
        done['config'] = {'state': 'skipped', 'detail': 'transient domain'}
    if result.ok:
        done['recorded'] = record_live_fix(row, cache_mode)
    return done


def record_live_fix(row, cache_mode):
    """Record the switched disk in the domain's metadata (livefix.record).

    libvirt's live XML keeps the old cache mode after the switch; the
    record travels with the domain, so the hook corrects a restore,
    managed save or incoming migration of it and the audit keeps judging
    it shared. A failure here is reported; the switch stands.
    """
    return livefix.record(row.handle, row.live, cache_mode, row.persistent)


def needs_config_fix(row):
    return any(f['where'] == 'definition' for f in row.findings)


def needs_live_fix(row):
    return any(f['code'] == 'caching' and f['where'] == 'qemu'
               for f in row.findings)
