"""libvirt's qemu hook: the last check before a domain's QEMU starts.

libvirt runs ``/etc/libvirt/hooks/qemu`` and ``/etc/libvirt/hooks/qemu.d/*``
as ``HOOK DOMAIN OPERATION SUB-OPERATION EXTRA`` with the domain XML on
stdin. A non-zero exit of ``prepare`` stops the start and libvirt shows the
hook's stderr; for ``migrate`` (incoming) and ``restore`` libvirt uses what
the hook prints on stdout as the domain XML (nothing printed: unchanged).

A hook must not call libvirt (it runs under libvirt's locks). Which other
domains run is read from libvirt's status files instead.

The installed wrapper (nova_shared_cache.hookinstall) runs this under a time
limit and refuses only on exit status DENY: whatever this code cannot judge
exits 0 with a note, and any other failure is allowed by the wrapper.

Safety rules:
- only a shared RBD disk (``<shareable/>``, one that ``fix --live``
  recorded in the domain's metadata, or an image another running domain
  uses, when one of them writes it) in a caching mode is acted on;
  read-only sharing, every other domain, and any XML the hook cannot read,
  are allowed untouched;
- nothing heavier than lxml is imported unless such a disk is found, so the
  hook costs one small Python start per start, restore or incoming
  migration (the wrapper starts no Python for other operations).
"""

import glob
import os
import sys

from lxml import etree

from nova_shared_cache.cmd import hook as cmd_hook
from nova_shared_cache.libvirt import domxml

#: Where libvirtd keeps the live XML of each running QEMU domain.
STATUS_DIR = '/run/libvirt/qemu'
NOVA_CONF = '/etc/nova/nova.conf'
ACTS_ON = cmd_hook.ACTS_ON
DENY = cmd_hook.DENY
#: Operations whose stdout libvirt reads as the domain XML.
REWRITES = ('migrate', 'restore')


def other_running_images(name, status_dir=STATUS_DIR):
    """RBD images of the other running domains, from libvirt's status.

    {spec: {domain: writes}}, ``writes`` False for a read-only disk.
    """
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
            users = images.setdefault(disk.key, {})
            key = other or path
            users[key] = users.get(key, False) or disk.writes
    return images


def unsafe_disks(doc, name, status_dir=STATUS_DIR):
    """[(RbdDisk, why shared)] for shared RBD disks that cache.

    Read-only sharing (every user ``<readonly/>``, or a snapshot) is not a
    hazard and is allowed.
    """
    caching = [d for d in domxml.rbd_disks(doc)
               if d.caches and not d.snapshot]
    if not caching:
        return []
    others = None
    recorded = domxml.recorded_disks(doc)
    found = []
    for disk in caching:
        if disk.shareable:
            found.append((disk, '<shareable/>'))
            continue
        mode = domxml.recorded_mode(recorded, disk)
        if mode:
            found.append((disk, "switched to cache='%s' by nova-shared-cache "
                                "fix --live" % mode))
            continue
        if others is None:
            others = other_running_images(name, status_dir)
        users = others.get(disk.key, {})
        if domxml.sharing_hazard(disk, any(users.values()), bool(users)):
            found.append((disk, 'also used by running domain(s) %s' % (
                ', '.join('%s%s' % (n, '' if w else ' (read-only)')
                          for n, w in sorted(users.items())))))
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
                               'read: %s; fix it, or %s'
                               % (name, err, cmd_hook.REMEDY))
    problem = describe(found)
    if settings.hook_mode == 'warn':
        return Outcome(message='nova-shared-cache hook: WARNING: domain %s '
                               'starts with a caching shared disk: %s'
                               % (name, problem))
    if settings.hook_mode == 'fix' and operation in REWRITES:
        changes = []
        for disk, why in found:
            changes += ['%s (%s): %s' % (disk.target, why, c)
                        for c in domxml.fix_disk(disk.element,
                                                 settings.cache_mode)]
        return Outcome(stdout=etree.tostring(doc),
                       message='nova-shared-cache hook: domain %s (%s): %s'
                               % (name, operation, '; '.join(changes)))
    return Outcome(code=DENY, message=(
        'nova-shared-cache refuses %s of domain %s: %s. Two VMs caching one '
        'RBD image read stale data and lose writes. Fix the definition with '
        "'nova-shared-cache fix --config --domain %s' (cache='%s' and "
        "<shareable/>), or set [shared_cache] hook_mode = warn to allow it"
        % ({'prepare': 'the start'}.get(operation, 'the ' + operation),
           name, problem, name, settings.cache_mode)))


def load_settings(config_args):
    """[shared_cache] from nova.conf (oslo.config: imported only here).

    ``config_args``: the ``--config-file``/``--config-dir`` options the
    wrapper passed, as oslo.config takes them. No nova.conf at all is an
    error, not the defaults: a host without its configuration cannot say
    what the operator chose.
    """
    if not config_args:
        raise RuntimeError('no nova.conf: %s does not exist and the hook was '
                           'installed without --config-file or --config-dir'
                           % NOVA_CONF)
    from oslo_config import cfg

    from nova_shared_cache import conf as sc_conf
    conf = cfg.ConfigOpts()
    sc_conf.register_opts(conf)
    # oslo.config still reads its default nova.conf.d directories, as
    # nova-compute does.
    conf(list(config_args), project='nova', default_config_files=[])
    return sc_conf.load(conf)


log_warning = cmd_hook.log_warning


def main(argv=None, stdin=None, stdout=None, stderr=None,
         status_dir=STATUS_DIR):
    """Answer libvirt; returns the exit status.

    0 allowed (stdout: XML or nothing), DENY refused, FAILED the answer
    could not be written (the wrapper allows and passes nothing on).
    """
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr
    config_args, argv = cmd_hook.split_args(
        sys.argv[1:] if argv is None else argv)
    if not config_args and os.path.exists(NOVA_CONF):
        config_args = ['--config-file', NOVA_CONF]
    try:
        # libvirt writes the whole XML; read it even when it is not needed.
        xml = stdin.read()
        outcome = decide(argv, xml, lambda: load_settings(config_args),
                         status_dir)
    except Exception as err:  # never block on our own bug
        outcome = Outcome(message='nova-shared-cache hook: unexpected %s: '
                                  '%s (domain allowed); please report it'
                                  % (type(err).__name__, err))
    try:
        if outcome.message:
            stderr.write(outcome.message + '\n')
            stderr.flush()
            if outcome.code == 0:
                log_warning(outcome.message)
        if outcome.stdout:
            stdout.write(outcome.stdout)
            stdout.flush()
    except Exception:  # the wrapper passes no partial XML on
        return cmd_hook.FAILED
    return outcome.code
