# Shared by scripts/lib/s3s.sh and scripts/lib/garage.sh: the test servers that are
# installed with `cargo install` into $COLDTIER_TOOLS, and a free port for them.
# shellcheck shell=bash

COLDTIER_TOOLS="${COLDTIER_TOOLS:-/opt/coldtier-tools}"

_tools_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# tools_cargo_install CRATE VERSION BIN PINNED HOW_LONG [CARGO ARGS...]: installs
# CRATE@VERSION into $COLDTIER_TOOLS unless BIN is there already, either given by hand
# (PINNED non-empty: an override variable was set) or recorded by cargo at that version
# (a binary of another version is replaced).
tools_cargo_install() {
    local crate="$1" want="$2" bin="$3" pinned="$4" how_long="$5"
    shift 5
    if [ -x "$bin" ] && { [ -n "$pinned" ] ||
        grep -q "\"$crate $want " "$COLDTIER_TOOLS/.crates2.json" 2>/dev/null; }; then
        return 0
    fi
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || { echo "error: cargo is needed to install $crate" >&2; return 1; }
    local t0=$SECONDS
    _tools_log "installing $crate@$want into $COLDTIER_TOOLS (cargo install, $how_long)"
    mkdir -p "$COLDTIER_TOOLS"
    cargo install "$crate@$want" --locked "$@" --root "$COLDTIER_TOOLS" >&2 || return 1
    _tools_log "$crate installed in $((SECONDS - t0)) s"
}

# tools_free_port: a port on 127.0.0.1 that the kernel just handed out and nobody holds.
tools_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
