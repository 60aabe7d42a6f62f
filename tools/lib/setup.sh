# Shared by tools/run-tests and tools/demo: Debian packages and venvs.
# shellcheck shell=bash

# The real stack: Ceph, libvirt/QEMU, guest image tools, fio (the data-path
# benchmark), and what the venvs need to build.
NSC_DEB_PACKAGES=(
    python3 python3-venv python3-dev python3-pip build-essential git
    ceph-mon ceph-osd ceph-mgr ceph-common python3-rbd python3-rados
    qemu-system-x86 qemu-block-extra qemu-utils
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
    python3-libvirt cpio busybox-static fio
    syslinux syslinux-common mtools dosfstools
)

function nsc_say {
    echo "==> $*" >&2
}

function nsc_install_debian_packages {
    local missing=() pkg
    for pkg in "${NSC_DEB_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null \
                | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        nsc_say "missing Debian packages: ${missing[*]}; run as root"
        return 1
    fi
    nsc_say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
