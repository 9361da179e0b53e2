# shellcheck shell=bash
# Workload prerequisites (sourced by the setup script): podman with runc, gocryptfs on FUSE,
# nginx for the attested-TLS front, a static busybox for the test image, and OpenSSH's client
# for the SSH tests. Idempotent.
# Needs root (or sudo); Debian 12.

_tdx_setup_workload() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi

    local packages=(
        podman runc conmon catatonit uidmap slirp4netns containernetworking-plugins
        gocryptfs fuse3 busybox-static openssh-client nginx
    )
    local missing=()
    local pkg
    for pkg in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "workload: installing ${missing[*]}"
        $sudo apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" || return 1
    fi

    # runc: crun fails on some kernels' cgroup layouts. cgroupfs: works with and without
    # systemd as PID 1. file events: no journald needed.
    local conf_dir=/etc/containers/containers.conf.d
    local conf="$conf_dir/50-tdx-identity.conf"
    local wanted
    wanted='# Written by scripts/setup.d/20-workload.sh (tdx-identity).
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
    if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$(printf '%s' "$wanted")" ]; then
        $sudo mkdir -p "$conf_dir" || return 1
        printf '%s' "$wanted" | $sudo tee "$conf" >/dev/null || return 1
        echo "workload: wrote $conf"
    fi

    # nginx: identity-svc runs it itself, with its own config in TD memory. Debian's package
    # enables a default site on port 80: keep that service off (a server nobody measured).
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        if systemctl is-enabled --quiet nginx 2>/dev/null || systemctl is-active --quiet nginx 2>/dev/null; then
            $sudo systemctl disable --now nginx >/dev/null 2>&1 || return 1
            echo "workload: disabled Debian's nginx service (identity-svc runs its own nginx)"
        fi
    fi

    if [ ! -e /dev/fuse ]; then
        $sudo modprobe fuse 2>/dev/null || true
    fi
    if [ ! -e /dev/fuse ]; then
        echo "workload: /dev/fuse is missing: gocryptfs cannot mount (run with --device /dev/fuse)" >&2
        return 1
    fi

    local runtime
    runtime="$($sudo podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null)"
    if [ "$runtime" != "runc" ]; then
        echo "workload: podman uses OCI runtime '${runtime:-unknown}', expected runc" >&2
        return 1
    fi
    echo "workload: podman $($sudo podman version --format '{{.Client.Version}}') with runc," \
        "$(gocryptfs -version 2>/dev/null | cut -d';' -f1)," \
        "$({ nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1; } | sed 's/^nginx version: //')"
}

_tdx_setup_workload
_tdx_setup_workload_status=$?
unset -f _tdx_setup_workload
if [ "$_tdx_setup_workload_status" -ne 0 ]; then
    unset _tdx_setup_workload_status
    return 1 2>/dev/null || exit 1
fi
unset _tdx_setup_workload_status
