# Shared by scripts/*.sh: install what coldtier's scripts need, idempotently.
# shellcheck shell=bash

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt_install PKG... : installs the Debian packages that are missing (runs apt-get update once).
apt_install() {
    local missing=()
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
    log "installing ${missing[*]}"
    if [ -z "${COLDTIER_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        export COLDTIER_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_fuse: /dev/fuse present and usable.
ensure_fuse() {
    apt_install fuse3
    if [ ! -e /dev/fuse ]; then
        modprobe fuse 2>/dev/null || true
    fi
    [ -c /dev/fuse ] || die "/dev/fuse is missing: load the fuse module (modprobe fuse)"
}

# The oldest Rust that builds coldtier (Cargo.toml's rust-version).
COLDTIER_RUST_MIN=1.85

# ensure_rust: cargo and rustc >= COLDTIER_RUST_MIN on PATH (or in ~/.cargo/bin); else one
# message saying what is missing and how to get it. Installs nothing.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    local get="Install a current toolchain with rustup (https://rustup.rs), as the user who builds:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . \"\$HOME/.cargo/env\"
Debian 12's own rustc (apt-get install rustc cargo) is 1.63: too old for coldtier.
To run coldtier without Rust, install its Debian package instead (README.md, \"Install\")."
    if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
        die "building coldtier needs Rust $COLDTIER_RUST_MIN or newer (cargo and rustc), and $(
            command -v cargo >/dev/null 2>&1 && echo "rustc" || echo "cargo") is not installed.
$get"
    fi
    local have
    have=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n%s\n' "$COLDTIER_RUST_MIN" "${have%%-*}" | sort -V | head -n 1)" != "$COLDTIER_RUST_MIN" ]; then
        die "building coldtier needs Rust $COLDTIER_RUST_MIN or newer; $(command -v rustc) is $have.
$get
(With rustup already installed: rustup update stable.)"
    fi
}

# apt_install_services_off PKG... : apt_install for packages that ship system services
# (samba: smbd, nmbd, samba-ad-dc; nfs-ganesha: nfs-ganesha, nfs-ganesha-lock; rpcbind,
# which nfs-ganesha depends on). The share tests and `bench.sh --share` run their own
# smbd and ganesha.nfsd on 127.0.0.1 with configs of their own; the system's copies would
# listen on every address (445, 2049, 111). So the install starts none of them: unless
# the machine already has a /usr/sbin/policy-rc.d, one that denies every start (exit 101,
# honoured by invoke-rc.d and deb-systemd-invoke) is in place for the install only. Then
# the units of the packages this call installed (not of those already there: the
# machine's own services are left alone) are disabled, and stopped where systemd runs.
apt_install_services_off() {
    local watched=(samba nfs-ganesha rpcbind) fresh=() p
    for p in "${watched[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || fresh+=("$p")
    done
    local policy=/usr/sbin/policy-rc.d
    if [ -e "$policy" ]; then
        apt_install "$@"
    else
        # In a subshell whose EXIT trap removes the policy however the install ends.
        (
            trap 'rm -f "$policy"' EXIT
            printf '#!/bin/sh\n# coldtier scripts/lib/deps.sh: no service starts during this install\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            apt_install "$@"
        ) || return 1
    fi
    local u
    for p in "${fresh[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || continue
        for u in $(_service_units_of "$p"); do
            _service_off "$u"
        done
    done
}

# _service_units_of PKG: the units of PKG that apt_install_services_off keeps off.
_service_units_of() {
    case "$1" in
        samba) echo "smbd.service nmbd.service samba-ad-dc.service" ;;
        nfs-ganesha) echo "nfs-ganesha.service nfs-ganesha-lock.service" ;;
        rpcbind) echo "rpcbind.service rpcbind.socket" ;;
    esac
}

# _service_off UNIT: disabled (systemd links and SysV rc links); stopped if systemd runs.
_service_off() {
    local unit="$1" name="${1%.*}"
    if command -v systemctl >/dev/null 2>&1; then
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        else
            systemctl disable "$unit" >/dev/null 2>&1 || true
        fi
    fi
    if [ "${unit##*.}" = service ] && [ -x "/etc/init.d/$name" ] && command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d "$name" disable >/dev/null 2>&1 || true
    fi
}
