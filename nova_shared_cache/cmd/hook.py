"""``nova-shared-cache-libvirt-hook``: libvirt's qemu hook protocol.

Installed by ``nova-shared-cache install-hook`` behind a sh wrapper that
runs ``python -I -m nova_shared_cache.cmd.hook [--config-file F]...
[--config-dir D] --
DOMAIN OPERATION SUB-OPERATION EXTRA`` (see nova_shared_cache.hookinstall)
and allows the operation whenever this code does not answer: only exit
status DENY refuses. See nova_shared_cache.libvirt.hook for what it
decides. libvirt runs the hook for every operation of every domain
(prepare, start, started, stopped, release, reconnect, ...); the ones it
never acts on end here, before anything but the standard library is
imported.
"""

import sys

#: The operations nova_shared_cache.libvirt.hook looks at.
ACTS_ON = ('prepare', 'migrate', 'restore')
#: Exit status of a refusal. Anything else, a crash's 1 included, is "could
#: not judge" and the wrapper allows the operation.
DENY = 43
#: Exit status when the answer could not be given completely (the wrapper
#: allows, and passes no output on).
FAILED = 1

REMEDY = ("run 'nova-shared-cache install-hook' again from the Python "
          "environment nova-compute uses, or remove the hook with "
          "'nova-shared-cache install-hook --uninstall'")


#: The nova.conf options the wrapper passes, each with one value.
CONFIG_OPTIONS = ('--config-file', '--config-dir')


def split_args(argv):
    """(nova.conf options, libvirt's arguments).

    ``--config-file F`` and ``--config-dir D`` pairs come first, in the
    order install-hook was given them (oslo.config reads them in that
    order), then ``--``, then libvirt's four arguments, so that a domain
    named ``--config-file`` stays a domain name. Without ``--`` (a wrapper
    written by an older install-hook) everything after the options is
    libvirt's. The options come back as a flat list, as oslo.config takes
    them.
    """
    argv = list(argv)
    config_args = []
    while argv[:1] and argv[0] in CONFIG_OPTIONS and len(argv) > 1:
        config_args += argv[:2]
        argv = argv[2:]
    if argv[:1] == ['--']:
        argv = argv[1:]
    return config_args, argv


def operation(argv):
    """libvirt's OPERATION argument."""
    args = split_args(argv)[1]
    return args[1] if len(args) > 1 else None


def log_warning(message):
    """libvirt keeps a successful hook's stderr only in its debug log."""
    try:
        import syslog
        syslog.openlog('nova-shared-cache-hook', 0, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING, message)
    except Exception:  # no syslog is not an error here
        pass


def _drain(stdin):
    try:
        stdin.read()
    except Exception:  # a closed or odd stdin is not our business
        pass


def main(argv=None, stdin=None, stderr=None):
    argv = sys.argv[1:] if argv is None else argv
    stdin = stdin or sys.stdin.buffer
    stderr = stderr or sys.stderr
    if operation(argv) not in ACTS_ON:
        # libvirt writes the domain XML to every hook: take it, say nothing.
        _drain(stdin)
        return 0
    try:
        from nova_shared_cache.libvirt import hook
    except Exception as err:  # lxml, oslo.config or the package half gone
        args = split_args(argv)[1]
        _drain(stdin)
        message = ('nova-shared-cache hook: %s of domain %s allowed '
                   'unchecked: the hook cannot be loaded (%s: %s); %s'
                   % (args[1], args[0], type(err).__name__, err, REMEDY))
        stderr.write(message + '\n')
        stderr.flush()
        log_warning(message)
        return 0
    return hook.main(argv)


if __name__ == '__main__':
    sys.exit(main())
