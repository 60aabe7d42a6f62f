"""``nova-shared-cache-libvirt-hook``: libvirt's qemu hook protocol.

Installed by ``nova-shared-cache install-hook``; see
nova_shared_cache.libvirt.hook for what it does.
"""

import sys

from nova_shared_cache.libvirt import hook


def main():
    sys.exit(hook.main())


if __name__ == '__main__':
    main()
