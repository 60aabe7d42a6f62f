"""Helpers shared by the integration tests."""

from nova_shared_cache_lab import probe


def boot_pair(compute, connection_info):
    vms = []
    for _ in range(2):
        instance = compute.boot(compute.new_instance())
        console = compute.console(instance)
        console.wait_ready()
        compute.attach(instance, connection_info)
        dev = probe.find_disk(console, connection_info['serial'])
        vms.append((instance, console, dev))
    return vms


def shutdown(compute, vms):
    for instance, console, _ in vms:
        console.close()
        compute.destroy(instance)
