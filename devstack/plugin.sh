#!/bin/bash
# nova-shared-cache devstack plugin: the phases, each calling
# lib/nova-shared-cache (sourced by settings).

if [[ "$1" == "stack" && "$2" == "pre-install" ]]; then
    if [[ "$NOVA_SHARED_CACHE_CEPH" == "embedded" ]]; then
        echo_summary "Installing the embedded Ceph packages for nova-shared-cache"
        install_nova_shared_cache_ceph
    fi

elif [[ "$1" == "stack" && "$2" == "install" ]]; then
    echo_summary "Installing nova-shared-cache"
    install_nova_shared_cache
    if [[ "$NOVA_SHARED_CACHE_CEPH" == "embedded" ]]; then
        echo_summary "Installing nova-shared-cache-lab (the embedded stack)"
        install_nova_shared_cache_lab
        echo_summary "Starting the embedded Ceph for nova-shared-cache"
        start_nova_shared_cache_ceph
    fi

elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    echo_summary "Configuring nova-shared-cache"
    if is_service_enabled n-cpu; then
        configure_nova_shared_cache
    fi
    if [[ "$NOVA_SHARED_CACHE_CEPH" == "embedded" ]] && is_service_enabled c-vol; then
        configure_nova_shared_cache_cinder
    fi

elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
    check_nova_shared_cache_volume_type
    if is_service_enabled n-cpu && [[ "$NOVA_SHARED_CACHE_INSTALL_HOOK" == "True" ]]; then
        echo_summary "Installing the nova-shared-cache libvirt hook"
        install_nova_shared_cache_hook
    fi

elif [[ "$1" == "stack" && "$2" == "test-config" ]]; then
    configure_tempest_nova_shared_cache

elif [[ "$1" == "unstack" ]]; then
    unstack_nova_shared_cache

elif [[ "$1" == "clean" ]]; then
    clean_nova_shared_cache
fi
