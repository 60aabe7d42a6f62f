"""nova-shared-cache: coherent Ceph RBD multiattach disks for Nova."""
