# Shared by scripts/*.sh and the store tests: install, start and stop a moto S3 server
# (moto[server] from PyPI, in its own venv) on 127.0.0.1.
# shellcheck shell=bash
#
#   moto_install            idempotent: venv at $COLDTIER_MOTO_VENV + pip install moto[server], crc32c
#   moto_start [PORT]       starts moto_server on 127.0.0.1 (a free port if none given);
#                           sets MOTO_PID, MOTO_PORT, MOTO_ENDPOINT and waits until it answers
#   moto_stop               stops the server moto_start started (by its pid)
#   moto_bin                prints the moto_server path the Rust tests use (COLDTIER_MOTO_BIN)

# shellcheck source=tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

COLDTIER_MOTO_VERSION="${COLDTIER_MOTO_VERSION:-5.2.5}"
COLDTIER_MOTO_VENV="${COLDTIER_MOTO_VENV:-/opt/coldtier-tools/moto-venv}"
# moto computes CRC32 where CRC32C is asked for unless the crc32c module is there.
COLDTIER_CRC32C_VERSION="${COLDTIER_CRC32C_VERSION:-2.9.post0}"

_moto_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

moto_bin() { printf '%s\n' "${COLDTIER_MOTO_BIN:-$COLDTIER_MOTO_VENV/bin/moto_server}"; }

moto_install() {
    local want="$COLDTIER_MOTO_VERSION"
    if [ -x "$COLDTIER_MOTO_VENV/bin/moto_server" ] &&
        "$COLDTIER_MOTO_VENV/bin/python" -c "import importlib.metadata as m, sys, crc32c; sys.exit(m.version('moto') != '$want')" 2>/dev/null; then
        return 0
    fi
    local py
    py="$(command -v python3)" || { echo "error: python3 is needed for moto" >&2; return 1; }
    local t0=$SECONDS
    _moto_log "installing moto[server]==$want into $COLDTIER_MOTO_VENV"
    mkdir -p "$(dirname "$COLDTIER_MOTO_VENV")"
    "$py" -m venv "$COLDTIER_MOTO_VENV" || return 1
    "$COLDTIER_MOTO_VENV/bin/pip" install -q "moto[server]==$want" "crc32c==$COLDTIER_CRC32C_VERSION" || return 1
    _moto_log "moto installed in $((SECONDS - t0)) s"
}

moto_start() {
    local port="${1:-$(tools_free_port)}"
    local bin
    bin="$(moto_bin)"
    [ -x "$bin" ] || { echo "error: $bin missing: run moto_install (scripts/lib/moto.sh)" >&2; return 1; }
    local log="${MOTO_LOG:-/tmp/coldtier-moto-$port.log}"
    "$bin" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    MOTO_PID=$!
    MOTO_PORT=$port
    MOTO_ENDPOINT="http://127.0.0.1:$port"
    local i
    for i in $(seq 1 100); do
        if "$(dirname "$bin")/python" -c "import urllib.request as u; u.urlopen('$MOTO_ENDPOINT/moto-api/data.json', timeout=2)" 2>/dev/null; then
            export MOTO_PID MOTO_PORT MOTO_ENDPOINT
            return 0
        fi
        kill -0 "$MOTO_PID" 2>/dev/null || { echo "error: moto_server exited; see $log" >&2; return 1; }
        sleep 0.2
    done
    echo "error: moto_server did not answer on $MOTO_ENDPOINT within 20 s; see $log" >&2
    kill "$MOTO_PID" 2>/dev/null
    return 1
}

moto_stop() {
    [ -n "${MOTO_PID:-}" ] || return 0
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    unset MOTO_PID MOTO_PORT MOTO_ENDPOINT
}
