"""The embedded stack: single-node Ceph, libvirtd and tiny guests, on loopback.

The distribution nova-shared-cache-lab, apart from the product (nothing in
nova_shared_cache imports it). Used by the integration tests, ``tools/demo``
and the devstack plugin's embedded mode. Everything lives under one private
directory (``NSC_STACK_DIR``, default ``/var/tmp/nova-shared-cache``);
daemons listen on 127.0.0.1 only. Only Debian's command-line tools are used
here, so the stack itself needs no Python bindings.
"""
