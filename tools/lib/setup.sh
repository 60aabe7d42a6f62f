# Shared by tools/run-tests and tools/demo: Debian packages and venvs.
# shellcheck shell=bash

# The real stack: Ceph, libvirt/QEMU, guest image tools, fio (the data-path
# benchmark), graphviz (the docs' diagrams), and what the venvs need to
# build.
NSC_DEB_PACKAGES=(
    python3 python3-venv python3-dev python3-pip build-essential git
    ceph-mon ceph-osd ceph-mgr ceph-common python3-rbd python3-rados
    qemu-system-x86 qemu-block-extra qemu-utils
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
    python3-libvirt cpio busybox-static fio graphviz
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

# The lab cloud (tools/cloud): a database, a message queue, a WSGI server,
# and genisoimage, which nova-compute runs to make config drives
# ([DEFAULT] mkisofs_cmd; verify's probe servers boot with one).
# shellcheck disable=SC2034  # used by tools/cloud and tools/demo
NSC_CLOUD_DEB_PACKAGES=(
    mariadb-server mariadb-client rabbitmq-server uwsgi uwsgi-plugin-python3
    genisoimage
)

# nsc_cloud_venv VENV TOP - the cloud's venv: the services at the versions
# of constraints/cloud.txt, this checkout's product and lab packages, and
# Debian's libvirt/rbd/rados bindings.
function nsc_cloud_venv {
    local venv=$1 top=$2
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -I -c \
            'import nova.virt.libvirt, cinder, keystone, glance, neutron, placement, tempest' \
            2>/dev/null; then
        nsc_say "creating $venv with the OpenStack 2026.2 services (a few minutes)"
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv"
        "$venv/bin/pip" install -q -c "$top/constraints/cloud.txt" \
            keystone openstack-placement glance nova cinder neutron \
            python-openstackclient tempest PyMySQL python-memcached \
            > "$venv.pip.log" 2>&1 || {
            nsc_say "pip install failed; see $venv.pip.log"
            return 1
        }
    fi
    # This checkout's packages, again whenever a file of them changed.
    local stamp="$venv/.nsc-checkout-installed"
    if [ ! -e "$stamp" ] || [ -n "$(find "$top/nova_shared_cache" \
            "$top/nova" "$top/lab" "$top/setup.cfg" "$top/requirements.txt" \
            -newer "$stamp" -print -quit)" ]; then
        "$venv/bin/pip" install -q --no-deps --force-reinstall "$top" \
            "$top/lab" > "$venv.pip.log" 2>&1 || {
            nsc_say "pip install of this checkout failed; see $venv.pip.log"
            return 1
        }
        "$venv/bin/python" "$top/tools/link-system-bindings"
        touch "$stamp"
    fi
}
