#!/usr/bin/env bash
# The whole story on a sample tree: installs what it needs, starts a local S3 server (moto on
# 127.0.0.1), mounts coldtier over the very directory it serves, runs the policy as a dry run
# and then for real (copy, verify, stub), shows the space freed, reads a stub (transparent
# recall), and prints that file's audit trail. Run as root on Debian. Stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/deps.sh
. scripts/lib/deps.sh
# shellcheck source=lib/moto.sh
. scripts/lib/moto.sh

[ "$(id -u)" -eq 0 ] || die "run as root (coldtier mounts a FUSE filesystem)"
ensure_rust
ensure_fuse
apt_install python3 python3-venv curl
moto_install

log "building coldtier (release)"
cargo build --release --locked -q
BIN=$PWD/target/release/coldtier

DEMO=${DEMO_DIR:-/var/tmp/coldtier-demo}
SHARE=$DEMO/share
LOG=$DEMO/coldtier.log
cleanup() {
    if grep -q " $SHARE .* - fuse.coldtier " /proc/self/mountinfo 2>/dev/null; then
        "$BIN" umount --lazy "$SHARE" >/dev/null 2>&1 || umount -l "$SHARE" 2>/dev/null || true
    fi
    moto_stop
}
trap cleanup EXIT
cleanup
rm -rf "$DEMO"
mkdir -p "$SHARE/projects/alpha" "$SHARE/archive/2019" "$SHARE/archive/2020"
echo "quarterly numbers" > "$SHARE/projects/alpha/report.txt"
head -c 8M /dev/urandom > "$SHARE/archive/2019/scan.bin"
head -c 5M /dev/urandom > "$SHARE/archive/2019/survey.dat"
head -c 3M /dev/urandom > "$SHARE/archive/2020/notes.pdf"
head -c 2M /dev/urandom > "$SHARE/projects/alpha/model.bin"
# The checksum first: reading a file is a use (atime), the touch below makes it old again.
SUM_BEFORE=$(sha256sum "$SHARE/archive/2019/scan.bin" | cut -d' ' -f1)
touch -d '2019-03-01' "$SHARE/archive/2019/scan.bin" "$SHARE/archive/2019/survey.dat"
touch -d '2020-06-15' "$SHARE/archive/2020/notes.pdf"
ln -s ../../archive/2019/scan.bin "$SHARE/projects/alpha/scan-link"

log "starting a local S3 server (moto) on 127.0.0.1"
MOTO_LOG=$DEMO/moto.log moto_start
AUTH="Authorization: AWS4-HMAC-SHA256 Credential=demo/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"
curl -fsS -X PUT -H "$AUTH" "$MOTO_ENDPOINT/coldtier-demo" >/dev/null
echo "    $MOTO_ENDPOINT, bucket coldtier-demo"

cat > "$DEMO/coldtier.toml" <<EOF
# Files unused for 365 days and at least 1 MiB go to S3; model.bin and report.txt are recent.
[store]
kind = "s3"
endpoint = "$MOTO_ENDPOINT"
bucket = "coldtier-demo"
prefix = "share"
path_style = true
access_key = "demo"
secret_key = "demo-secret"
storage_class = "STANDARD_IA"

[policy]
atime_older_than = "365d"
min_size = "1MiB"
mode = "stub"
schedule = "off"

[catalog]
path = "$DEMO/catalog.db"
EOF

log "mounting coldtier over $SHARE (the mount sits on the directory it serves)"
"$BIN" mount "$SHARE" --config "$DEMO/coldtier.toml" --log-file "$LOG"
grep " $SHARE " /proc/self/mountinfo | sed 's/^/    /'

log "du before tiering"
du -sh "$SHARE" | sed 's/^/    /'

log "coldtier migrate --dry-run: what a policy run would do (changes nothing)"
"$BIN" migrate "$SHARE" --dry-run | sed 's/^/    /'

log "coldtier migrate: copy to S3, verify the checksum S3 reports, then stub"
"$BIN" migrate "$SHARE" | sed 's/^/    /'

log "the tree through the mount: same names, sizes, times; stubs have 0 blocks"
ls -ls --time-style=long-iso "$SHARE/archive/2019" "$SHARE/archive/2020" | sed 's/^/    /'
log "du after tiering (stat, ls and du sent no request to S3)"
du -sh "$SHARE" | sed 's/^/    /'
"$BIN" status -r "$SHARE" | sed 's/^/    /'

log "cat of a stub (through the symlink): recalled from S3 at its first read, transparently"
SUM_MOUNT=$(sha256sum "$SHARE/projects/alpha/scan-link" | cut -d' ' -f1)
echo "    sha256 before tiering: $SUM_BEFORE"
echo "    sha256 after recall:   $SUM_MOUNT"
[ "$SUM_MOUNT" = "$SUM_BEFORE" ] || die "content differs after the recall"
"$BIN" status "$SHARE/archive/2019/scan.bin" | sed 's/^/    /'

log "coldtier history archive/2019/scan.bin: every transition, with the config version"
"$BIN" history "$SHARE/archive/2019/scan.bin" | cut -c1-160 | sed 's/^/    /'

log "unmounting (waits for the daemon to finish)"
"$BIN" umount "$SHARE"
echo "    without the mount, a stub is an empty file (never silent zeros):"
ls -ls "$SHARE/archive/2019/survey.dat" | sed 's/^/    /'

log "what the daemon logged"
sed 's/^/    /' "$LOG"
