#!/bin/bash
# Stand-ins for the devstack functions the plugin uses, with the behaviour
# devstack gives them (functions-common, inc/ini-config, inc/python), and
# written here for the harness. Calls that would reach the outside world
# (pip, apt, the openstack CLI) are recorded in $NSC_DEVSTACK_CALLS; the
# ini functions really edit the files, as devstack's do.

function _record {
    printf '%s\n' "$*" >> "$NSC_DEVSTACK_CALLS"
}

# -- inc/ini-config ------------------------------------------------------

# ini_has_option file section option: true if "option =" is in the section
function ini_has_option {
    local file=$1 section=$2 option=$3 found
    found=$(sed -ne "/^\[${section}\]/,/^\[.*\]/ { /^${option}[ \t]*=/ p; }" "$file")
    [ -n "$found" ]
}

# iniget file section option: the value after the first "=", or nothing
function iniget {
    local file=$1 section=$2 option=$3 line
    line=$(sed -ne "/^\[${section}\]/,/^\[.*\]/ { /^${option}[ \t]*=/ p; }" "$file")
    # Unquoted on purpose: word splitting trims the blanks around the value,
    # which is what devstack's iniget returns.
    # shellcheck disable=SC2086
    echo ${line#*=}
}

# iniset file section option value: creates the file and the section (at
# the end, after a blank line), adds the option right under the header or
# replaces its value in place
function iniset {
    local file=$1 section=$2 option=$3 value=$4 sep
    [[ -z $section || -z $option ]] && return
    # Unquoted like devstack's: runs of blanks in a value become one.
    # shellcheck disable=SC2086
    value=$(echo $value | sed -e 's/\\/\\\\/g' -e 's/&/\\&/g')
    if ! grep -q "^\[$section\]" "$file" 2>/dev/null; then
        printf '\n[%s]\n' "$section" >> "$file"
    fi
    if ! ini_has_option "$file" "$section" "$option"; then
        sed -i -e "/^\[$section\]/ a\\
$option = $value
" "$file"
    else
        sep=$(echo -ne "\x01")
        sed -i -e '/^\['"${section}"'\]/,/^\[.*\]/ s'"${sep}"'^\('"${option}"'[ \t]*=[ \t]*\).*$'"${sep}"'\1'"${value}${sep}" "$file"
    fi
}

# inidelete file section option: removes the option lines of that section
function inidelete {
    local file=$1 section=$2 option=$3
    [[ -z $section || -z $option ]] && return
    sed -i -e "/^\[${section}\]/,/^\[.*\]/ { /^${option}[ \t]*=/ d; }" "$file"
}

# -- functions-common -----------------------------------------------------

# trueorfalse default VARNAME
function trueorfalse {
    local default=$1
    local value=${!2:-}
    case "$value" in
        1|[yY]es|YES|[tT]rue|TRUE) echo True ;;
        0|[nN]o|NO|[fF]alse|FALSE) echo False ;;
        *) echo "$default" ;;
    esac
}

# is_service_enabled service...: any of them in ENABLED_SERVICES; "nova"
# for any n-* service (functions-common) and "cinder" for any c-* service
# (is_cinder_enabled from lib/cinder, which devstack consults)
function is_service_enabled {
    local service
    for service in "$@"; do
        [[ ,${ENABLED_SERVICES}, =~ ,${service}, ]] && return 0
        [[ ${service} == "nova" && ,${ENABLED_SERVICES} =~ ,"n-" ]] && return 0
        [[ ${service} == "cinder" && ,${ENABLED_SERVICES} =~ ,"c-" ]] && return 0
    done
    return 1
}

function echo_summary {
    echo "$@" >&2
    _record "echo_summary $*"
}

# die LINENO message: devstack prints and exits the whole stack.sh
function die {
    local line=$1
    shift
    echo "[ERROR] line $line: $*" >&2
    _record "die $*"
    exit 1
}

function plugin_requires {
    _record "plugin_requires $*"
}

function install_package {
    _record "install_package $*"
}

# -- inc/python ------------------------------------------------------------

function setup_develop {
    _record "setup_develop $*"
}

function pip_install {
    _record "pip_install $*"
}

function get_python_exec_prefix {
    echo "$NSC_DEVSTACK_BIN"
}

# -- the plugin loader (functions-common run_phase and friends) ------------

function run_phase {
    local mode=$1 phase=$2 plugin dir
    for plugin in ${DEVSTACK_PLUGINS//,/ }; do
        dir=${GITDIR[$plugin]}
        case $mode in
            override_defaults)
                [[ -f $dir/devstack/override-defaults ]] && source "$dir/devstack/override-defaults" ;;
            source)
                [[ -f $dir/devstack/settings ]] && source "$dir/devstack/settings" ;;
            *)
                [[ -f $dir/devstack/plugin.sh ]] && source "$dir/devstack/plugin.sh" "$mode" "$phase" ;;
        esac
    done
}

# -- commands ----------------------------------------------------------------

# sudo: the harness runs as root; run the command (with VAR=value words)
function sudo {
    _record "sudo $*"
    env "$@"
}

# openstack: only the volume type commands the plugin uses, on a JSON
# file of types ({name: {property: value}}), printing what the real client
# prints for "-f json -c properties" and "-f value -c properties"
function openstack {
    _record "openstack $*"
    python3 - "$NSC_DEVSTACK_TYPES" "$@" <<'PY'
import json, sys
path, args = sys.argv[1], [a for a in sys.argv[2:]
                           if not a.startswith('--os-region-name')]
types = json.load(open(path)) if __import__('os').path.exists(path) else {}
if args[:3] == ['volume', 'type', 'show']:
    name = args[-1]
    if name not in types:
        sys.stderr.write('No volumetype with a name or ID of %s exists.\n'
                         % name)
        sys.exit(1)
    # What python-openstackclient 10.5 prints: a JSON object with -f json,
    # the dict's repr with -f value.
    if '-f' in args and args[args.index('-f') + 1] == 'json':
        print(json.dumps({'properties': types[name]}, indent=2))
    else:
        print(repr(types[name]))
elif args[:3] == ['volume', 'type', 'create']:
    props = {}
    rest = args[3:]
    while rest[0] == '--property':
        key, value = rest[1].split('=', 1)
        props[key] = value
        rest = rest[2:]
    types[rest[0]] = props
    json.dump(types, open(path, 'w'))
else:
    sys.exit('openstack double: unsupported %s' % args)
PY
}
