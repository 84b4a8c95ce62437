# Shared by scripts/*.sh: install, start and stop an s3s-fs S3 server on 127.0.0.1
# (the server for benchmarks of the STANDARD data path; see ../shared/DESIGN.md).
# shellcheck shell=bash
#
#   s3s_install               idempotent: cargo install s3s-fs@$COLDTIER_S3S_VERSION --locked
#                             --features binary --root $COLDTIER_TOOLS (~2.5 min on 2 cores)
#   s3s_start ROOT [PORT]     starts s3s-fs on 127.0.0.1 serving directory ROOT (created if
#                             missing; a free port if none given); sets S3S_PID, S3S_PORT,
#                             S3S_ENDPOINT and waits until it answers
#   s3s_mkbucket NAME         creates bucket NAME (s3s-fs keeps a bucket as a directory of ROOT)
#   s3s_stop                  stops the server s3s_start started (by its pid)
#   s3s_bin                   prints the s3s-fs path (COLDTIER_S3S_BIN overrides it)
#
# s3s-fs checks SigV4 signatures: clients must use S3S_ACCESS_KEY / S3S_SECRET_KEY
# (region us-east-1, path-style addressing). Bucket names need 3+ characters.
# It has no storage classes, no restore and no tagging (501).

# shellcheck source=tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

COLDTIER_S3S_VERSION="${COLDTIER_S3S_VERSION:-0.14.1}"
S3S_ACCESS_KEY="${S3S_ACCESS_KEY:-coldtierbench}"
S3S_SECRET_KEY="${S3S_SECRET_KEY:-coldtierbenchsecret}"

s3s_bin() { printf '%s\n' "${COLDTIER_S3S_BIN:-$COLDTIER_TOOLS/bin/s3s-fs}"; }

s3s_install() {
    tools_cargo_install s3s-fs "$COLDTIER_S3S_VERSION" "$(s3s_bin)" "${COLDTIER_S3S_BIN:-}" \
        "~2.5 min" --features binary
}

# _s3s_answers URL: true once an HTTP server answers there (any status: an unsigned
# request gets 403 from s3s-fs).
_s3s_answers() {
    python3 - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
EOF
}

s3s_start() {
    local root="${1:?s3s_start ROOT [PORT]}" port="${2:-$(tools_free_port)}"
    local bin
    bin="$(s3s_bin)"
    [ -x "$bin" ] || { echo "error: $bin missing: run s3s_install (scripts/lib/s3s.sh)" >&2; return 1; }
    mkdir -p "$root" || return 1
    local log="${S3S_LOG:-/tmp/coldtier-s3s-$port.log}"
    # RUST_LOG unset on purpose: s3s-fs logs every request at debug level
    env -u RUST_LOG "$bin" --host 127.0.0.1 --port "$port" \
        --access-key "$S3S_ACCESS_KEY" --secret-key "$S3S_SECRET_KEY" \
        "$root" >"$log" 2>&1 &
    S3S_PID=$!
    S3S_PORT=$port
    S3S_ENDPOINT="http://127.0.0.1:$port"
    S3S_ROOT="$root"
    local _
    for _ in $(seq 1 100); do
        if _s3s_answers "$S3S_ENDPOINT/"; then
            export S3S_PID S3S_PORT S3S_ENDPOINT S3S_ROOT S3S_ACCESS_KEY S3S_SECRET_KEY
            return 0
        fi
        kill -0 "$S3S_PID" 2>/dev/null || { echo "error: s3s-fs exited; see $log" >&2; unset S3S_PID; return 1; }
        sleep 0.2
    done
    echo "error: s3s-fs did not answer on $S3S_ENDPOINT within 20 s; see $log" >&2
    s3s_stop
    return 1
}

s3s_mkbucket() {
    local name="${1:?s3s_mkbucket NAME}"
    [ ${#name} -ge 3 ] || { echo "error: s3s-fs bucket names need 3+ characters: '$name'" >&2; return 1; }
    [ -n "${S3S_ROOT:-}" ] || { echo "error: s3s_mkbucket: no server started" >&2; return 1; }
    mkdir -p "$S3S_ROOT/$name"
}

s3s_stop() {
    [ -n "${S3S_PID:-}" ] || return 0
    kill "$S3S_PID" 2>/dev/null || true
    wait "$S3S_PID" 2>/dev/null || true
    unset S3S_PID S3S_PORT S3S_ENDPOINT
}
