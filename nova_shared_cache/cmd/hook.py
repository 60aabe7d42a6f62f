"""``nova-shared-cache-libvirt-hook``: libvirt's qemu hook protocol.

Installed by ``nova-shared-cache install-hook``; see
nova_shared_cache.libvirt.hook for what it does. libvirt runs the hook for
every operation of every domain (prepare, start, started, stopped,
release, ...); the ones it never acts on end here, before anything but the
standard library is imported.
"""

import sys

#: The operations nova_shared_cache.libvirt.hook looks at (ACTS_ON there).
ACTS_ON = ('prepare', 'migrate', 'restore')


def operation(argv):
    """libvirt's OPERATION argument, after any --config-file options."""
    while argv[:1] == ['--config-file'] and len(argv) > 1:
        argv = argv[2:]
    return argv[1] if len(argv) > 1 else None


def main():
    if operation(sys.argv[1:]) not in ACTS_ON:
        # libvirt writes the domain XML to every hook: take it, say nothing.
        sys.stdin.buffer.read()
        sys.exit(0)
    from nova_shared_cache.libvirt import hook
    sys.exit(hook.main())


if __name__ == '__main__':
    main()
