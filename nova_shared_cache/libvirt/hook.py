"""libvirt's qemu hook: the last check before a domain's QEMU starts.

libvirt runs ``/etc/libvirt/hooks/qemu`` and ``/etc/libvirt/hooks/qemu.d/*``
as ``HOOK DOMAIN OPERATION SUB-OPERATION EXTRA`` with the domain XML on
stdin. A non-zero exit of ``prepare`` stops the start and libvirt shows the
hook's stderr; for ``migrate`` (incoming) and ``restore`` libvirt uses what
the hook prints on stdout as the domain XML (nothing printed: unchanged).

A hook must not call libvirt (it runs under libvirt's locks). Which other
domains run is read from libvirt's status files instead.

Safety rules:
- only a shared RBD disk (``<shareable/>``, or an image another running
  domain uses) in a caching mode is acted on; every other domain, and any
  XML the hook cannot read, is allowed untouched;
- nothing heavier than lxml is imported unless such a disk is found, so the
  hook costs one small Python start per domain operation.
"""

import glob
import os
import sys

from lxml import etree

from nova_shared_cache.libvirt import domxml

#: Where libvirtd keeps the live XML of each running QEMU domain.
STATUS_DIR = '/run/libvirt/qemu'
ACTS_ON = ('prepare', 'migrate', 'restore')
#: Operations whose stdout libvirt reads as the domain XML.
REWRITES = ('migrate', 'restore')


def other_running_images(name, status_dir=STATUS_DIR):
    """RBD images of the other running domains, from libvirt's status."""
    images = {}
    for path in glob.glob(os.path.join(status_dir, '*.xml')):
        if os.path.basename(path) == name + '.xml':
            continue
        try:
            with open(path, 'rb') as f:
                doc = domxml.parse(f.read())
        except Exception:  # a status file being rewritten
            continue
        domain = doc.find('domain') if doc.tag == 'domstatus' else doc
        other = domain.findtext('name') if domain is not None else None
        for disk in domxml.rbd_disks(doc):
            images.setdefault(disk.spec, set()).add(other or path)
    return images


def unsafe_disks(doc, name, status_dir=STATUS_DIR):
    """[(RbdDisk, why shared)] for shared RBD disks that cache."""
    caching = [d for d in domxml.rbd_disks(doc) if d.caches]
    if not caching:
        return []
    others = None
    found = []
    for disk in caching:
        if disk.shareable:
            found.append((disk, '<shareable/>'))
            continue
        if others is None:
            others = other_running_images(name, status_dir)
        if disk.spec in others:
            found.append((disk, 'also used by running domain(s) %s'
                          % ', '.join(sorted(others[disk.spec]))))
    return found


def describe(found):
    return '; '.join(
        "disk %s (rbd %s, %s) has cache='%s'" % (
            disk.target, disk.spec, why, disk.cache or 'default')
        for disk, why in found)


class Outcome:
    def __init__(self, code=0, stdout=b'', message=None):
        self.code = code
        self.stdout = stdout
        self.message = message


def decide(argv, xml, load_settings, status_dir=STATUS_DIR):
    """What to answer libvirt. Never raises for the domain's sake."""
    if len(argv) < 2 or argv[1] not in ACTS_ON:
        return Outcome()
    name, operation = argv[0], argv[1]
    subop = argv[2] if len(argv) > 2 else '-'
    if operation in REWRITES and subop != 'begin':
        return Outcome()
    try:
        doc = domxml.parse(xml)
        found = unsafe_disks(doc, name, status_dir)
    except Exception as err:  # odd XML is never blocked
        return Outcome(message='nova-shared-cache hook: domain %s allowed, '
                               'its XML could not be read (%s)'
                               % (name, err))
    if not found:
        return Outcome()
    try:
        settings = load_settings()
    except Exception as err:
        return Outcome(message='nova-shared-cache hook: domain %s allowed '
                               'unchecked, the configuration could not be '
                               'read: %s' % (name, err))
    problem = describe(found)
    if settings.hook_mode == 'warn':
        return Outcome(message='nova-shared-cache hook: WARNING: domain %s '
                               'starts with a caching shared disk: %s'
                               % (name, problem))
    if settings.hook_mode == 'fix' and operation in REWRITES:
        changes = []
        for disk, _ in found:
            changes += ['%s: %s' % (disk.target, c)
                        for c in domxml.fix_disk(disk.element,
                                                 settings.cache_mode)]
        return Outcome(stdout=etree.tostring(doc),
                       message='nova-shared-cache hook: domain %s (%s): %s'
                               % (name, operation, '; '.join(changes)))
    return Outcome(code=1, message=(
        'nova-shared-cache refuses %s of domain %s: %s. Two VMs caching one '
        'RBD image read stale data and lose writes. Fix the definition with '
        "'nova-shared-cache fix --config --domain %s' (cache='%s' and "
        "<shareable/>), or set [shared_cache] hook_mode = warn to allow it"
        % ({'prepare': 'the start'}.get(operation, 'the ' + operation),
           name, problem, name, settings.cache_mode)))


def load_settings(config_files):
    """[shared_cache] from nova.conf (oslo.config: imported only here)."""
    from oslo_config import cfg

    from nova_shared_cache import conf as sc_conf
    conf = cfg.ConfigOpts()
    sc_conf.register_opts(conf)
    conf([], project='nova', default_config_files=config_files)
    return sc_conf.load(conf)


def log_warning(message):
    try:
        import syslog
        syslog.openlog('nova-shared-cache-hook', 0, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING, message)
    except Exception:  # no syslog is not an error here
        pass


def main(argv=None, stdin=None, stdout=None, stderr=None,
         status_dir=STATUS_DIR):
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr
    config_files = []
    while argv[:1] == ['--config-file'] and len(argv) > 1:
        config_files.append(argv[1])
        argv = argv[2:]
    if not config_files and os.path.exists('/etc/nova/nova.conf'):
        config_files = ['/etc/nova/nova.conf']
    try:
        # libvirt writes the whole XML; read it even when it is not needed.
        xml = stdin.read()
        outcome = decide(argv, xml, lambda: load_settings(config_files),
                         status_dir)
    except Exception as err:  # never block on our own bug
        outcome = Outcome(message='nova-shared-cache hook: unexpected %s: '
                                  '%s (domain allowed)'
                                  % (type(err).__name__, err))
    if outcome.message:
        stderr.write(outcome.message + '\n')
        stderr.flush()
        if outcome.code == 0:
            log_warning(outcome.message)
    if outcome.stdout:
        stdout.write(outcome.stdout)
        stdout.flush()
    return outcome.code
