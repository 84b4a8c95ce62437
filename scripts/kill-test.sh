#!/usr/bin/env bash
# Runs the random-kill test (tests/faults.rs: random_kills_during_migrate_and_recall_lose_nothing)
# for longer than CI does: the daemon is killed with SIGKILL at random moments of policy runs
# and recalls, ROUNDS times, and after each kill every file must read back byte-identical,
# `verify` and `audit` must pass; at the end the bucket must hold exactly what the files' records
# name. A failure prints its round and seed: run again with that seed to reproduce.
# Usage: scripts/kill-test.sh [ROUNDS (default 50)] [SEED (default: random)]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/deps.sh
. scripts/lib/deps.sh
[ "$(id -u)" -eq 0 ] || die "run as root: the test mounts FUSE filesystems"
ensure_rust
ensure_fuse
# shellcheck source=lib/moto.sh
. scripts/lib/moto.sh
apt_install python3-venv
moto_install
rounds="${1:-50}"
seed="${2:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
log "killing the daemon $rounds times (seed $seed)"
COLDTIER_KILL_ROUNDS="$rounds" COLDTIER_KILL_SEED="$seed" \
    cargo test --locked --test faults random_kills_during_migrate_and_recall_lose_nothing -- --nocapture
