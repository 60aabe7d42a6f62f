"""libvirt and QEMU: domain XML, QMP block-node state, the live cache switch
and the qemu hook."""
