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

# ensure_rust: cargo on PATH.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
}
