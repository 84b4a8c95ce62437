# Shared by scripts/*.sh: install garage, and start and stop a 3-node garage cluster on
# 127.0.0.1 (a distributed S3 store; see ../shared/DESIGN.md). The Rust tests start their own
# cluster (src/store/testing.rs: GarageCluster); these helpers are for scripts and by hand.
# shellcheck shell=bash
#
#   garage_install            idempotent: cargo install garage@$COLDTIER_GARAGE_VERSION --locked
#                             --root $COLDTIER_TOOLS (10-20 min on 2 cores)
#   garage_bin                prints the garage path (COLDTIER_GARAGE_BIN overrides it)
#   garage_cluster_start DIR  starts 3 nodes on 127.0.0.1 (free ports) with their configs,
#                             metadata, data and logs under DIR; connects them, assigns each
#                             a zone (dc1..dc3) and 1 GB in a layout, applies it, creates an
#                             S3 key and waits until the cluster is healthy. Sets GARAGE_DIR,
#                             GARAGE_PIDS, GARAGE_ENDPOINT (node 1's S3 API),
#                             GARAGE_ACCESS_KEY and GARAGE_SECRET_KEY (never printed)
#   garage_mkbucket NAME      creates bucket NAME and allows the key to read, write and own it
#   garage_cli N ARGS...      runs `garage ARGS` against node N (1..3)
#   garage_cluster_stop       stops the nodes garage_cluster_start started (by their pids)
#
# Replication factor 3, consistency mode "consistent": read and write quorums of 2, so the
# cluster serves reads and writes with one node down. db_engine sqlite (bundled in garage:
# no system library). Clients: region us-east-1, path-style addressing; request checksums
# "when required" (coldtier: store.request_checksum = "when_required") for clients that
# would otherwise stream uploads with trailing checksums over plain http (DESIGN.md).
# garage has no storage classes, no restore, no object tagging and no versioning (501 for
# the tagging and ListObjectVersions calls).

# shellcheck source=tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

COLDTIER_GARAGE_VERSION="${COLDTIER_GARAGE_VERSION:-2.5.0}"

garage_bin() { printf '%s\n' "${COLDTIER_GARAGE_BIN:-$COLDTIER_TOOLS/bin/garage}"; }

garage_install() {
    tools_cargo_install garage "$COLDTIER_GARAGE_VERSION" "$(garage_bin)" "${COLDTIER_GARAGE_BIN:-}" \
        "10-20 min"
}

_garage_hex32() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

garage_cli() {
    local n="${1:?garage_cli N ARGS...}"
    shift
    [ -n "${GARAGE_DIR:-}" ] || { echo "error: garage_cli: no cluster started" >&2; return 1; }
    RUST_LOG=warn "$(garage_bin)" -c "$GARAGE_DIR/node$n/garage.toml" "$@"
}

# _garage_health N: the cluster's health as node N sees it (healthy, degraded, unavailable).
_garage_health() {
    garage_cli "$1" json-api GetClusterHealth 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null
}

garage_cluster_start() {
    local dir="${1:?garage_cluster_start DIR}"
    local bin
    bin="$(garage_bin)"
    [ -x "$bin" ] || { echo "error: $bin missing: run garage_install (scripts/lib/garage.sh)" >&2; return 1; }
    mkdir -p "$dir" || return 1
    GARAGE_DIR="$(cd "$dir" && pwd)"
    GARAGE_PIDS=""
    local secret n rpc s3 nd
    secret="$(_garage_hex32)"
    for n in 1 2 3; do
        nd="$GARAGE_DIR/node$n"
        mkdir -p "$nd"
        rpc="$(tools_free_port)"
        s3="$(tools_free_port)"
        [ "$n" = 1 ] && GARAGE_ENDPOINT="http://127.0.0.1:$s3"
        # the config holds the cluster's RPC secret: owner-only
        (
            umask 077
            cat >"$nd/garage.toml" <<EOF
metadata_dir = "$nd/meta"
data_dir = "$nd/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$s3"
EOF
        )
        RUST_LOG="garage=info,netapp=warn" "$bin" -c "$nd/garage.toml" server >"$nd/garage.log" 2>&1 &
        GARAGE_PIDS="$GARAGE_PIDS $!"
    done
    export GARAGE_DIR GARAGE_PIDS GARAGE_ENDPOINT
    local _ ok ids=()
    for n in 1 2 3; do
        ok=""
        for _ in $(seq 1 300); do
            if garage_cli "$n" status >/dev/null 2>&1; then ok=1; break; fi
            sleep 0.2
        done
        [ -n "$ok" ] || { echo "error: garage node $n did not answer in 60 s; see $GARAGE_DIR/node$n/garage.log" >&2; garage_cluster_stop; return 1; }
        ids[n]="$(garage_cli "$n" node id -q)" || { garage_cluster_stop; return 1; }
    done
    for n in 2 3; do
        garage_cli 1 node connect "${ids[n]}" >/dev/null || { garage_cluster_stop; return 1; }
    done
    for n in 1 2 3; do
        garage_cli 1 layout assign -z "dc$n" -c 1GB "${ids[n]%%@*}" >/dev/null || { garage_cluster_stop; return 1; }
    done
    garage_cli 1 layout apply --version 1 >/dev/null || { garage_cluster_stop; return 1; }
    for n in 1 2 3; do
        ok=""
        for _ in $(seq 1 300); do
            if [ "$(_garage_health "$n")" = healthy ]; then ok=1; break; fi
            sleep 0.2
        done
        [ -n "$ok" ] || { echo "error: garage cluster not healthy after 60 s (node $n); see $GARAGE_DIR/node*/garage.log" >&2; garage_cluster_stop; return 1; }
    done
    local key
    key="$(garage_cli 1 json-api CreateKey '{"name":"coldtier"}')" || { echo "error: garage CreateKey failed" >&2; garage_cluster_stop; return 1; }
    GARAGE_ACCESS_KEY="$(printf '%s' "$key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessKeyId"])')"
    GARAGE_SECRET_KEY="$(printf '%s' "$key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secretAccessKey"])')"
    export GARAGE_ACCESS_KEY GARAGE_SECRET_KEY
}

garage_mkbucket() {
    local name="${1:?garage_mkbucket NAME}"
    [ -n "${GARAGE_ACCESS_KEY:-}" ] || { echo "error: garage_mkbucket: no cluster started" >&2; return 1; }
    garage_cli 1 bucket create "$name" >/dev/null &&
        garage_cli 1 bucket allow --read --write --owner "$name" --key "$GARAGE_ACCESS_KEY" >/dev/null
}

garage_cluster_stop() {
    [ -n "${GARAGE_PIDS:-}" ] || return 0
    local pid
    for pid in $GARAGE_PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $GARAGE_PIDS; do wait "$pid" 2>/dev/null || true; done
    unset GARAGE_PIDS GARAGE_ENDPOINT GARAGE_ACCESS_KEY GARAGE_SECRET_KEY
}
