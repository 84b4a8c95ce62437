#!/usr/bin/env bash
# scripts/bench.sh: side-by-side benchmark of
#   native directory | coldtier (passthrough) | coldtier (no passthrough) | bindfs
# on the same kind of files, on the same disk filesystem, in one run.
#
# This is a benchmark, not a test: it prints numbers and compares them against
# the performance targets, but exits 0 even when a target is missed (unless
# --strict is given).
#
# Usage: scripts/bench.sh [--quick] [--build] [--targets LIST] [--keep] [--strict]
#        scripts/bench.sh --tier [...]   the tiering benchmark instead (scripts/lib/bench_tier.sh):
#                                        migrate/recall vs rclone copy on a local s3s-fs server
#        scripts/bench.sh --share [...]  the file-server benchmark instead (scripts/lib/bench_share.sh):
#                                        a coldtier export vs a native one through nfs-ganesha and smbd
# Run as root (dropping the page cache and FUSE passthrough both need it).
# See docs/benchmarks.md for what each figure means.

set -euo pipefail
export LC_ALL=C

CMDLINE_ARGS=("$@")
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

# The kernel line of every report: the release, and whether idle vCPUs poll before they
# halt (a FUSE round trip's cost on a VM depends on it: docs/operations.md).
kernel_desc() {
    local d=/sys/devices/system/cpu/cpuidle/current_driver p=/sys/module/haltpoll/parameters/guest_halt_poll_ns
    printf '%s; cpuidle %s' "$(uname -srm)" "$(cat "$d" 2>/dev/null || echo none)"
    if [[ -r "$p" ]]; then printf ', guest_halt_poll_ns=%s' "$(cat "$p")"; fi
}

# --tier, --share: the tiering and file-server benchmarks, separate runs with their own
# options and work dirs.
for _arg in "$@"; do
    if [[ "$_arg" == --tier ]]; then
        # shellcheck source=scripts/lib/bench_tier.sh
        . "$SCRIPT_DIR/lib/bench_tier.sh"
        bench_tier_main "$@"
        exit $?
    fi
    if [[ "$_arg" == --share ]]; then
        # shellcheck source=scripts/lib/bench_share.sh
        . "$SCRIPT_DIR/lib/bench_share.sh"
        bench_share_main "$@"
        exit $?
    fi
done

usage() {
    cat <<'EOF'
Usage: scripts/bench.sh [options]

Benchmarks a native directory, coldtier (default config = kernel passthrough),
coldtier with [fuse] passthrough = false, and bindfs, side by side, and prints a
markdown table (also saved to $BENCH_DIR/results.md).

Options:
  --quick          small sizes, 1 repetition per metric, for smoke-testing (~1 min)
  --build          run `cargo build --release` first (done anyway if the binary is missing)
  --targets LIST   comma-separated subset of: native,coldtier-pt,coldtier-nopt,bindfs
                   (default: all four)
  --keep           keep the data directories (default: delete them at the end)
  --strict         exit 1 if a performance target is missed
  --tier           run the tiering benchmark instead (coldtier migrate/recall vs rclone
                   copy on a local s3s-fs server); `--tier --help` lists its options
  --share          run the file-server benchmark instead (a coldtier export and a native
                   one, side by side, through nfs-ganesha and smbd on 127.0.0.1: reading
                   a 512 MiB file, listing a 10,000-entry directory cold and warm);
                   `--share --help` lists its options
  -h, --help       this text

Environment (defaults in brackets; --quick changes the defaults, not explicit values):
  BENCH_DIR          work dir; every source dir lives below it   [/var/tmp/coldtier-bench]
  BENCH_SEQ_SIZE     sequential/random I/O file size              [1G]      (quick: 128M)
  BENCH_NFILES       files in the stat tree                       [100000]  (quick: 2000)
  BENCH_NDIRS        directories in the stat tree                 [100]     (quick: 20)
  BENCH_LSDIR_FILES  entries in the single `ls -l` directory      [BENCH_NFILES]
  BENCH_SMALL        small files created through the mount        [10000]   (quick: 500)
  BENCH_SMALL_SIZE   size of each small file                      [4K]
  BENCH_RUNTIME      seconds per random-read run                  [15]      (quick: 3)
  BENCH_REPEAT       repetitions of every other metric (median)   [3]       (quick: 1)
  BENCH_OP_TIMEOUT   seconds before a single measured command is killed [900]
  BENCH_TARGETS      same as --targets
  COLDTIER_BIN       coldtier binary        [<repo>/target/release/coldtier]
EOF
}

# ----------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------
QUICK=0 BUILD=0 KEEP=0 STRICT=0
TARGETS_ARG="${BENCH_TARGETS:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --build) BUILD=1 ;;
        --keep) KEEP=1 ;;
        --strict) STRICT=1 ;;
        --targets) [[ $# -ge 2 ]] || { echo "bench: --targets needs a value" >&2; exit 2; }
                   TARGETS_ARG="$2"; shift ;;
        --targets=*) TARGETS_ARG="${1#--targets=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [[ $QUICK -eq 1 ]]; then
    : "${BENCH_SEQ_SIZE:=128M}" "${BENCH_NFILES:=2000}" "${BENCH_NDIRS:=20}"
    : "${BENCH_SMALL:=500}" "${BENCH_RUNTIME:=3}" "${BENCH_REPEAT:=1}"
fi
: "${BENCH_DIR:=/var/tmp/coldtier-bench}"
: "${BENCH_SEQ_SIZE:=1G}"
: "${BENCH_NFILES:=100000}"
: "${BENCH_NDIRS:=100}"
: "${BENCH_LSDIR_FILES:=$BENCH_NFILES}"
: "${BENCH_SMALL:=10000}"
: "${BENCH_SMALL_SIZE:=4K}"
: "${BENCH_RUNTIME:=15}"
: "${BENCH_REPEAT:=3}"
: "${BENCH_OP_TIMEOUT:=900}"
: "${COLDTIER_BIN:=$REPO_ROOT/target/release/coldtier}"

ALL_TARGETS=(native coldtier-pt coldtier-nopt bindfs)
declare -A TARGET_TITLE=(
    [native]="native"
    [coldtier-pt]="coldtier (passthrough)"
    [coldtier-nopt]="coldtier (no passthrough)"
    [bindfs]="bindfs"
)

# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
log()  { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2
         [[ -n "${WARN_FILE:-}" ]] && printf '%s\n' "$*" >>"$WARN_FILE"; return 0; }
die()  { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
to_bytes() { numfmt --from=iec "$1" 2>/dev/null || die "cannot parse size '$1' (use e.g. 512M, 1G)"; }

# EPOCHREALTIME -> integer microseconds
now_us() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
us_to_s() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# record TARGET METRIC REP VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW_TSV"; }

# Runs an external command under a timeout so that a hung FUSE daemon cannot
# hang the benchmark forever.
tmo() { timeout --foreground --kill-after=10 "$BENCH_OP_TIMEOUT" "$@"; }

# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------
[[ $EUID -eq 0 ]] || die "run as root: dropping the page cache (/proc/sys/vm/drop_caches) and FUSE passthrough need it"

for v in BENCH_NFILES BENCH_NDIRS BENCH_LSDIR_FILES BENCH_SMALL BENCH_RUNTIME BENCH_REPEAT BENCH_OP_TIMEOUT; do
    is_uint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
[[ $BENCH_NDIRS -ge 1 && $BENCH_REPEAT -ge 1 && $BENCH_RUNTIME -ge 1 ]] \
    || die "BENCH_NDIRS, BENCH_REPEAT and BENCH_RUNTIME must be >= 1"
SEQ_BYTES=$(to_bytes "$BENCH_SEQ_SIZE")
SMALL_BYTES=$(to_bytes "$BENCH_SMALL_SIZE")
[[ $SEQ_BYTES -ge 1048576 ]] || die "BENCH_SEQ_SIZE must be at least 1M"

TARGETS=()
if [[ -n "$TARGETS_ARG" ]]; then
    IFS=', ' read -r -a req <<<"$TARGETS_ARG"
    for t in "${req[@]}"; do
        [[ -z "$t" ]] && continue
        [[ -n "${TARGET_TITLE[$t]+x}" ]] || die "unknown target '$t' (valid: ${ALL_TARGETS[*]})"
        TARGETS+=("$t")
    done
    [[ ${#TARGETS[@]} -gt 0 ]] || die "--targets selected nothing"
else
    TARGETS=("${ALL_TARGETS[@]}")
fi
has_target() { local x; for x in "${TARGETS[@]}"; do [[ "$x" == "$1" ]] && return 0; done; return 1; }
NEED_COLDTIER=0
{ has_target coldtier-pt || has_target coldtier-nopt; } && NEED_COLDTIER=1

case "$BENCH_DIR" in
    /*) ;;
    *) die "BENCH_DIR must be an absolute path, got '$BENCH_DIR'" ;;
esac
[[ "$(realpath -m "$BENCH_DIR")" != "/" ]] || die "BENCH_DIR must not be /"

# ----------------------------------------------------------------------------
# dependencies
# ----------------------------------------------------------------------------
APT_UPDATED=0
ensure_cmd() { # ensure_cmd COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "'$1' is missing and apt-get is not available; install package '$2'"
    log "installing $2 (for '$1')"
    if [[ $APT_UPDATED -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2 || die "apt-get install $2 failed"
    command -v "$1" >/dev/null 2>&1 || die "'$1' still missing after installing $2"
}
ensure_cmd python3 python3
ensure_cmd fio fio
ensure_cmd find findutils
if has_target bindfs || [[ $NEED_COLDTIER -eq 1 ]]; then
    ensure_cmd fusermount3 fuse3
    [[ -c /dev/fuse ]] || die "/dev/fuse is missing (FUSE not available in this kernel/container)"
fi
has_target bindfs && ensure_cmd bindfs bindfs

if [[ $NEED_COLDTIER -eq 1 ]]; then
    if [[ $BUILD -eq 1 || ! -x "$COLDTIER_BIN" ]]; then
        [[ -f "$REPO_ROOT/Cargo.toml" ]] || die "coldtier binary '$COLDTIER_BIN' missing and no Cargo.toml in $REPO_ROOT"
        if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        fi
        command -v cargo >/dev/null 2>&1 || die "coldtier binary missing and cargo not found (install Rust via rustup)"
        log "building coldtier: (cd $REPO_ROOT && cargo build --release)"
        (cd "$REPO_ROOT" && cargo build --release >&2) || die "cargo build --release failed"
    fi
    [[ -x "$COLDTIER_BIN" ]] || die "coldtier binary not found at $COLDTIER_BIN"
    COLDTIER_VERSION="$("$COLDTIER_BIN" --version 2>/dev/null | head -n1 || true)"
    # pass --log-file only if this build of coldtier knows it
    COLDTIER_HAS_LOGFILE=0
    "$COLDTIER_BIN" mount --help 2>/dev/null | grep -q -- '--log-file' && COLDTIER_HAS_LOGFILE=1
fi

# ----------------------------------------------------------------------------
# work dir, lock, cleanup
# ----------------------------------------------------------------------------
DATA_DIR="$BENCH_DIR/data"
LOG_DIR="$BENCH_DIR/logs"
RAW_TSV="$BENCH_DIR/raw.tsv"
META_TSV="$BENCH_DIR/meta.tsv"
WARN_FILE=""
RESULTS_MD="$BENCH_DIR/results.md"
NOPT_CONFIG="$BENCH_DIR/coldtier-nopt.toml"

mkdir -p "$BENCH_DIR"
exec 7>&1 8>&2   # the script's real stdout/stderr, for messages from the EXIT trap
exec 9>"$BENCH_DIR/.lock"
flock -n 9 || die "another bench.sh run holds $BENCH_DIR/.lock"

declare -A SRC MNT MOUNTED=()

# Mount points under DATA_DIR, deepest first (read from /proc/self/mountinfo).
mounts_under() {
    local prefix="$1"
    awk -v p="$prefix/" '{ m=$5; gsub(/\\040/, " ", m); if (index(m, p) == 1) print m }' /proc/self/mountinfo | sort -r
}

force_unmount() { # force_unmount MOUNTPOINT [coldtier]
    local mnt="$1" kind="${2:-}"
    mountpoint -q "$mnt" 2>/dev/null || return 0
    if [[ "$kind" == coldtier && -x "${COLDTIER_BIN:-}" ]]; then
        timeout 90 "$COLDTIER_BIN" umount "$mnt" >>"$LOG_DIR/umount.log" 2>&1 || true
        mountpoint -q "$mnt" 2>/dev/null || return 0
    fi
    fusermount3 -u "$mnt" 2>/dev/null || true
    mountpoint -q "$mnt" 2>/dev/null || return 0
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    mountpoint -q "$mnt" 2>/dev/null && return 1
    return 0
}

CLEANED=0
# shellcheck disable=SC2317  # invoked from the EXIT trap
cleanup() {
    local rc=$?
    [[ $CLEANED -eq 1 ]] && return
    CLEANED=1
    set +e
    # A signal may arrive while a function runs with its output redirected to a
    # log file; put the script's own stdout/stderr back first.
    exec 1>&7 2>&8
    trap - INT TERM
    local t m leftover=0
    for t in "${!MOUNTED[@]}"; do
        case "$t" in coldtier-*) force_unmount "${MOUNTED[$t]}" coldtier ;; *) force_unmount "${MOUNTED[$t]}" ;; esac \
            || { echo "[bench] could not unmount ${MOUNTED[$t]}" >&2; leftover=1; }
    done
    # anything else still mounted below the data dir (e.g. a half-done remount)
    while read -r m; do
        [[ -n "$m" ]] || continue
        force_unmount "$m" || { echo "[bench] could not unmount $m" >&2; leftover=1; }
    done < <(mounts_under "$DATA_DIR")
    if [[ $KEEP -eq 1 ]]; then
        echo "[bench] --keep: data left in $DATA_DIR" >&2
    elif [[ $leftover -eq 0 && -d "$DATA_DIR" ]]; then
        rm -rf --one-file-system "$DATA_DIR"
    elif [[ $leftover -ne 0 ]]; then
        echo "[bench] NOT deleting $DATA_DIR because something below it is still mounted" >&2
    fi
    rm -f "$NOPT_CONFIG"
    if [[ $rc -ne 0 ]]; then
        echo "[bench] aborted (exit $rc); logs in $LOG_DIR" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$LOG_DIR"
# A previous run that was killed hard may have left mounts behind; we hold the
# lock, so anything mounted below DATA_DIR is ours and stale.
while read -r m; do
    [[ -n "$m" ]] || continue
    log "unmounting stale mount from an earlier run: $m"
    force_unmount "$m" coldtier || die "cannot unmount stale $m; unmount it by hand"
done < <(mounts_under "$DATA_DIR")
rm -rf --one-file-system "$DATA_DIR" "$LOG_DIR"
mkdir -p "$DATA_DIR" "$LOG_DIR"
rm -f "$RESULTS_MD"
: >"$RAW_TSV"
WARN_FILE="$BENCH_DIR/warnings.txt"
: >"$WARN_FILE"
printf '[fuse]\npassthrough = false\n' >"$NOPT_CONFIG"

# ----------------------------------------------------------------------------
# mounting
# ----------------------------------------------------------------------------
do_mount() { # do_mount TARGET
    local t="$1" src="${SRC[$1]}" mnt="${MNT[$1]}"
    local -a extra=()
    case "$t" in
        native) return 0 ;;
        coldtier-pt|coldtier-nopt)
            [[ "$t" == coldtier-nopt ]] && extra+=(--config "$NOPT_CONFIG")
            [[ $COLDTIER_HAS_LOGFILE -eq 1 ]] && extra+=(--log-file "$LOG_DIR/$t.daemon.log")
            MOUNTED[$t]="$mnt"
            # (7>&- 8>&- 9>&-: the daemon must not inherit our terminal or the lock)
            timeout 120 "$COLDTIER_BIN" mount "$src" "$mnt" "${extra[@]}" \
                </dev/null >>"$LOG_DIR/$t.mount.log" 2>&1 7>&- 8>&- 9>&- \
                || die "coldtier mount failed for $t (see $LOG_DIR/$t.mount.log)"
            ;;
        bindfs)
            MOUNTED[$t]="$mnt"
            bindfs -o allow_other "$src" "$mnt" </dev/null >>"$LOG_DIR/$t.mount.log" 2>&1 7>&- 8>&- 9>&- \
                || die "bindfs mount failed (see $LOG_DIR/$t.mount.log)"
            ;;
    esac
    local i
    for i in $(seq 1 100); do
        mountpoint -q "$mnt" && return 0
        sleep 0.1
    done
    die "$t: $mnt is not a mount point after mounting"
}

do_umount() { # do_umount TARGET
    local t="$1" mnt="${MNT[$1]}"
    case "$t" in
        native) return 0 ;;
        coldtier-*)
            if ! timeout 120 "$COLDTIER_BIN" umount "$mnt" >>"$LOG_DIR/$t.mount.log" 2>&1; then
                warn "$t: 'coldtier umount' failed; falling back to fusermount3 -u / umount -l"
            fi
            force_unmount "$mnt" coldtier || die "$t: cannot unmount $mnt"
            ;;
        bindfs) force_unmount "$mnt" || die "bindfs: cannot unmount $mnt" ;;
    esac
    unset 'MOUNTED[$t]'
    sleep 0.2   # let the daemon go away before the next mount
}

remount() { do_umount "$1"; do_mount "$1"; }

# Rotate the target order for every repetition so slow drifts of the (virtual)
# disk do not always hit the same target.
targets_for_rep() { # targets_for_rep REP
    local n=${#TARGETS[@]} r=$1 i
    for ((i = 0; i < n; i++)); do printf '%s\n' "${TARGETS[$(((i + r - 1) % n))]}"; done
}

# ----------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------
fio_json_field() { # fio_json_field FILE read|write bw|iops
    python3 - "$@" <<'EOF'
import json, sys
path, direction, field = sys.argv[1:4]
with open(path) as f:
    text = f.read()
# fio may print warnings before the JSON object
data = json.loads(text[text.index("{"):])
job = data["jobs"][0]
if job.get("error"):
    sys.exit("fio job error %s" % job["error"])
d = job[direction]
if field == "bw":
    print("%.3f" % (d["bw_bytes"] / 1048576.0))
else:
    print("%.1f" % d["iops"])
EOF
}

run_fio() { # run_fio TARGET NAME JSON fio-args...
    local t="$1" name="$2" json="$3"; shift 3
    if ! tmo fio --name="$name" --output-format=json --output="$json" "$@" >>"$LOG_DIR/$t.fio.log" 2>&1; then
        warn "$t: fio $name failed (see $LOG_DIR/$t.fio.log)"
        return 1
    fi
}

m_seq_write() { # TARGET REP
    # A new file per repetition: deleting the previous one right before the write
    # would let its block freeing (and, with the "discard" mount option, the
    # discards) land inside the measurement, at a moment that depends on how
    # long the filesystem under test keeps the unlinked inode alive.
    local t=$1 r=$2 f="${MNT[$1]}/seq.$2.dat" json="$LOG_DIR/$1.seqwrite.$2.json" v
    drop_caches
    if run_fio "$t" seqwrite "$json" --filename="$f" --rw=write --bs=1M --size="$SEQ_BYTES" \
        --end_fsync=1 --ioengine=psync --fallocate=none --invalidate=0 \
        && v=$(fio_json_field "$json" write bw); then
        record "$t" seq_write "$r" "$v"; log "  $t seq write: $v MiB/s"
    else record "$t" seq_write "$r" nan; fi
}

m_seq_read() {
    local t=$1 r=$2 f="${MNT[$1]}/seq.1.dat" json="$LOG_DIR/$1.seqread.$2.json" v
    drop_caches
    if run_fio "$t" seqread "$json" --filename="$f" --rw=read --bs=1M --size="$SEQ_BYTES" \
        --ioengine=psync --invalidate=0 \
        && v=$(fio_json_field "$json" read bw); then
        record "$t" seq_read_cold "$r" "$v"; log "  $t seq read (cold): $v MiB/s"
    else record "$t" seq_read_cold "$r" nan; fi
}

m_randread() { # TARGET REP cold|cached
    local t=$1 r=$2 mode=$3 f="${MNT[$1]}/seq.1.dat" json="$LOG_DIR/$1.randread-$3.$2.json" v
    drop_caches
    if [[ $mode == cached ]]; then
        # warm the page cache through the mount
        tmo cat "$f" >/dev/null || warn "$t: warming $f failed"
    fi
    if run_fio "$t" "randread-$mode" "$json" --filename="$f" --rw=randread --bs=4k --direct=0 \
        --ioengine=psync --size="$SEQ_BYTES" --runtime="$BENCH_RUNTIME" --time_based \
        --invalidate=0 --randrepeat=1 \
        && v=$(fio_json_field "$json" read iops); then
        record "$t" "randread_$mode" "$r" "$v"; log "  $t random 4k read ($mode): $v IOPS"
    else record "$t" "randread_$mode" "$r" nan; fi
}

# The stat walker: find(1) stats every entry for %s (one fstatat per entry,
# i.e. LOOKUP+GETATTR on FUSE). The same command runs on every target.
stat_walk() { # DIR -> prints entry count
    tmo find "$1" -printf '%s\n' | wc -l
}
ls_long() { # DIR -> prints line count
    tmo ls -l "$1" | wc -l
}

m_stat() { # TARGET REP: first pass after a fresh mount + cold cache, then a cached pass
    local t=$1 r=$2 dir="${MNT[$1]}/tree" pass n t0 t1 s
    local expect=$((BENCH_NFILES + BENCH_NDIRS + 1))
    remount "$t"
    drop_caches
    for pass in first cached; do
        t0=$(now_us)
        if n=$(stat_walk "$dir"); then
            t1=$(now_us); s=$(us_to_s $((t1 - t0)))
            [[ "$n" -eq "$expect" ]] || warn "$t: stat walk ($pass) saw $n entries, expected $expect"
            record "$t" "stat_$pass" "$r" "$s"; log "  $t stat walk ($pass): ${s}s for $n entries"
        else
            warn "$t: stat walk ($pass) failed"; record "$t" "stat_$pass" "$r" nan
        fi
    done
}

m_ls() {
    local t=$1 r=$2 dir="${MNT[$1]}/bigdir" pass n t0 t1 s
    local expect=$((BENCH_LSDIR_FILES + 1))   # + the "total" line
    remount "$t"
    drop_caches
    for pass in first cached; do
        t0=$(now_us)
        if n=$(ls_long "$dir"); then
            t1=$(now_us); s=$(us_to_s $((t1 - t0)))
            [[ "$n" -eq "$expect" ]] || warn "$t: ls -l ($pass) printed $n lines, expected $expect"
            record "$t" "ls_$pass" "$r" "$s"; log "  $t ls -l ($pass): ${s}s"
        else
            warn "$t: ls -l ($pass) failed"; record "$t" "ls_$pass" "$r" nan
        fi
    done
}

m_create_small() {
    local t=$1 r=$2 dir="${MNT[$1]}/small.$2" s
    drop_caches
    if s=$(tmo python3 - "$dir" "$BENCH_SMALL" "$SMALL_BYTES" <<'EOF'
import os, sys, time
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.mkdir(d)
buf = os.urandom(size)
flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
t0 = time.perf_counter()
for i in range(n):
    fd = os.open("%s/s%06d" % (d, i), flags, 0o644)
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)
print("%.6f" % (time.perf_counter() - t0))
EOF
    ); then
        record "$t" create_small "$r" "$s"; log "  $t create $BENCH_SMALL small files: ${s}s"
    else
        warn "$t: small-file creation failed"; record "$t" create_small "$r" nan
    fi
}

make_fixtures() { # SRC_DIR: stat tree and the big directory, created directly in the backing dir
    python3 - "$1" "$BENCH_NDIRS" "$BENCH_NFILES" "$BENCH_LSDIR_FILES" <<'EOF'
import os, sys
src, ndirs, nfiles, nls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
tree = os.path.join(src, "tree")
os.mkdir(tree)
per, extra = divmod(nfiles, ndirs)
for d in range(ndirs):
    dp = "%s/d%04d" % (tree, d)
    os.mkdir(dp)
    for i in range(per + (1 if d < extra else 0)):
        os.close(os.open("%s/f%06d" % (dp, i), flags, 0o644))
big = os.path.join(src, "bigdir")
os.mkdir(big)
for i in range(nls):
    os.close(os.open("%s/e%07d" % (big, i), flags, 0o644))
EOF
}

# ----------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------
# Shell-quote one word, leaving harmless words readable.
shq() {
    if [[ "$1" =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]]; then printf '%s' "$1"
    else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
quote_cmdline() {
    local out="" v a
    for v in BENCH_DIR BENCH_SEQ_SIZE BENCH_NFILES BENCH_NDIRS BENCH_LSDIR_FILES BENCH_SMALL \
             BENCH_SMALL_SIZE BENCH_RUNTIME BENCH_REPEAT BENCH_TARGETS COLDTIER_BIN; do
        # only variables the caller set in the environment
        if printenv "$v" >/dev/null 2>&1; then out+="$v=$(shq "$(printenv "$v")") "; fi
    done
    out+="$(shq "$0")"
    for a in "${CMDLINE_ARGS[@]}"; do out+=" $(shq "$a")"; done
    printf '%s' "$out"
}

START_US=$(now_us)
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'cmdline\t%s\n' "$(quote_cmdline)"
    printf 'kernel\t%s\n' "$(kernel_desc)"
    printf 'cpu\t%s x %s\n' "$(nproc)" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    printf 'filesystem\t%s\n' "$(df -PT "$BENCH_DIR" | awk 'NR==2 {print $2 " on " $1 " (mounted on " $7 ")"}')"
    printf 'bench_dir\t%s\n' "$BENCH_DIR"
    printf 'fio\t%s\n' "$(fio --version 2>/dev/null)"
    if has_target bindfs; then printf 'bindfs\t%s\n' "$(bindfs --version 2>/dev/null | head -n1)"; fi
    if [[ $NEED_COLDTIER -eq 1 ]]; then
        printf 'coldtier\t%s (%s, built %s)\n' "${COLDTIER_VERSION:-unknown version}" "$COLDTIER_BIN" \
            "$(date -u -r "$COLDTIER_BIN" '+%Y-%m-%d %H:%M:%S UTC')"
        if git -C "$REPO_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
            printf 'coldtier_git\t%s%s (of the source tree, not necessarily of the binary)\n' "$(git -C "$REPO_ROOT" rev-parse --verify -q --short HEAD 2>/dev/null || echo 'no commits')" \
                "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty worktree)')"
        fi
    fi
    printf 'targets\t%s\n' "${TARGETS[*]}"
    printf 'seq_bytes\t%s\n' "$SEQ_BYTES"
    printf 'nfiles\t%s\n' "$BENCH_NFILES"
    printf 'ndirs\t%s\n' "$BENCH_NDIRS"
    printf 'lsdir_files\t%s\n' "$BENCH_LSDIR_FILES"
    printf 'small\t%s\n' "$BENCH_SMALL"
    printf 'small_bytes\t%s\n' "$SMALL_BYTES"
    printf 'runtime\t%s\n' "$BENCH_RUNTIME"
    printf 'repeat\t%s\n' "$BENCH_REPEAT"
} >"$META_TSV"

log "command: $(quote_cmdline)"
log "kernel $(uname -r); targets: ${TARGETS[*]}; work dir $BENCH_DIR"
log "sizes: seq $BENCH_SEQ_SIZE, stat tree $BENCH_NFILES files/$BENCH_NDIRS dirs, ls dir $BENCH_LSDIR_FILES, small $BENCH_SMALL x $BENCH_SMALL_SIZE, randread ${BENCH_RUNTIME}s, repeat $BENCH_REPEAT"

# Free space check: every target holds BENCH_REPEAT sequential files at the same time,
# plus the fixtures (empty files: ~1 KiB of directory/inode space each, generously)
# and the small files of every repetition.
small_blocks=$(( (SMALL_BYTES + 4095) / 4096 ))
small_kib=$(( small_blocks * 4 + 1 ))
need_kib=$(( (BENCH_REPEAT * SEQ_BYTES / 1024 + BENCH_NFILES + BENCH_LSDIR_FILES + BENCH_REPEAT * BENCH_SMALL * small_kib) * ${#TARGETS[@]} + 1048576 ))
avail_kib=$(df -Pk "$BENCH_DIR" | awk 'NR==2 {print $4}')
[[ $avail_kib -ge $need_kib ]] || die "not enough free space in $BENCH_DIR: need ~$((need_kib / 1024)) MiB, have $((avail_kib / 1024)) MiB"

log "preparing source dirs and fixtures (created directly in the backing dirs)"
for t in "${TARGETS[@]}"; do
    SRC[$t]="$DATA_DIR/$t/src"
    if [[ $t == native ]]; then MNT[$t]="${SRC[$t]}"; else MNT[$t]="$DATA_DIR/$t/mnt"; fi
    mkdir -p "${SRC[$t]}" "${MNT[$t]}"
    make_fixtures "${SRC[$t]}"
done
sync
for t in "${TARGETS[@]}"; do
    do_mount "$t"
    [[ -d "${MNT[$t]}/tree" && -d "${MNT[$t]}/bigdir" ]] || die "$t: fixtures not visible through ${MNT[$t]}"
done

# Unmeasured warm-up: the first large write after the fixtures (fresh blocks on a
# thin-provisioned virtual disk, ext4 allocator state) is often much slower than
# later ones, which would penalize whichever target happens to go first.
log "warm-up: one unmeasured $BENCH_SEQ_SIZE write in $DATA_DIR"
tmo fio --name=warmup --filename="$DATA_DIR/warmup.dat" --rw=write --bs=1M --size="$SEQ_BYTES" \
    --end_fsync=1 --ioengine=psync --fallocate=none --output="$LOG_DIR/warmup.txt" >/dev/null 2>&1 \
    || warn "warm-up write failed"
rm -f "$DATA_DIR/warmup.dat"
sync

log "1/6 sequential write ($BENCH_SEQ_SIZE, fio bs=1M psync, end_fsync)"
for ((r = 1; r <= BENCH_REPEAT; r++)); do
    for t in $(targets_for_rep "$r"); do m_seq_write "$t" "$r"; done
done
log "2/6 sequential read, cold cache"
for ((r = 1; r <= BENCH_REPEAT; r++)); do
    for t in $(targets_for_rep "$r"); do m_seq_read "$t" "$r"; done
done
log "3/6 random 4 KiB reads, ${BENCH_RUNTIME}s each (cold, then cached)"
for t in "${TARGETS[@]}"; do m_randread "$t" 1 cold; done
for t in "${TARGETS[@]}"; do m_randread "$t" 1 cached; done
for t in "${TARGETS[@]}"; do rm -f "${MNT[$t]}"/seq.*.dat; done
sync
log "4/6 stat walk of $BENCH_NFILES files (fresh mount + dropped caches, then cached)"
for ((r = 1; r <= BENCH_REPEAT; r++)); do
    for t in $(targets_for_rep "$r"); do m_stat "$t" "$r"; done
done
log "5/6 ls -l of one $BENCH_LSDIR_FILES-entry directory (fresh mount + dropped caches, then cached)"
for ((r = 1; r <= BENCH_REPEAT; r++)); do
    for t in $(targets_for_rep "$r"); do m_ls "$t" "$r"; done
done
log "6/6 create+write+close of $BENCH_SMALL files of $BENCH_SMALL_SIZE"
for ((r = 1; r <= BENCH_REPEAT; r++)); do
    for t in $(targets_for_rep "$r"); do m_create_small "$t" "$r"; done
done

for t in "${TARGETS[@]}"; do do_umount "$t"; done
printf 'duration\t%s s\n' "$(( ($(now_us) - START_US) / 1000000 ))" >>"$META_TSV"

# coldtier logs "coldtier unmounted ... daemon_reads=N daemon_writes=M" at every
# unmount; summed over the run they show whether file I/O really bypassed the
# daemon (passthrough) or went through it. Informational only.
for t in coldtier-pt coldtier-nopt; do
    has_target "$t" || continue
    f="$LOG_DIR/$t.daemon.log"
    [[ -f "$f" ]] || continue
    counters=$(awk '/coldtier unmounted/ {
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^daemon_reads=/)  { split($i, a, "="); r += a[2]; n++ }
                if ($i ~ /^daemon_writes=/) { split($i, a, "="); w += a[2] }
            } }
        END { if (n) printf "daemon_reads=%d daemon_writes=%d over %d mount sessions", r, w, n }' "$f")
    [[ -n "$counters" ]] && printf 'counters_%s\t%s\n' "$t" "$counters" >>"$META_TSV"
done

# ----------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------
REPORT_RC=0
python3 - "$META_TSV" "$RAW_TSV" "$WARN_FILE" >"$RESULTS_MD" <<'EOF' || REPORT_RC=$?
import math, statistics, sys

meta_path, raw_path, warn_path = sys.argv[1:4]
meta = {}
with open(meta_path) as f:
    for line in f:
        k, _, v = line.rstrip("\n").partition("\t")
        meta[k] = v
samples = {}
with open(raw_path) as f:
    for line in f:
        t, m, r, v = line.rstrip("\n").split("\t")
        samples.setdefault((t, m), []).append(float(v))
warnings = [w for w in open(warn_path).read().splitlines() if w.strip()]

TARGETS = ["native", "coldtier-pt", "coldtier-nopt", "bindfs"]
TITLE = {"native": "native", "coldtier-pt": "coldtier (passthrough)",
         "coldtier-nopt": "coldtier (no passthrough)", "bindfs": "bindfs"}
CT = "coldtier-pt"
SEQ_TARGET = 0.90

def iec(n):
    n = float(n)
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if n == int(n) else ("%.1f %s" % (n, unit))
        n /= 1024

def si(x):
    if x >= 1e6: return "%.2fM" % (x / 1e6)
    if x >= 1e4: return "%.1fk" % (x / 1e3)
    if x >= 1e3: return "%.2fk" % (x / 1e3)
    return "%.0f" % x

seq = iec(int(meta["seq_bytes"]))
nfiles, ndirs = int(meta["nfiles"]), int(meta["ndirs"])
nls, nsmall = int(meta["lsdir_files"]), int(meta["small"])
small = iec(int(meta["small_bytes"]))
# (key, label, kind, count-for-rates, target)
METRICS = [
    ("seq_write", "Sequential write, %s file (MiB/s)" % seq, "mibs", None, "seq"),
    ("seq_read_cold", "Sequential read, %s, cold cache (MiB/s)" % seq, "mibs", None, "seq"),
    ("randread_cold", "Random 4 KiB read, cold cache (IOPS)", "iops", None, None),
    ("randread_cached", "Random 4 KiB read, cached (IOPS)", "iops", None, None),
    ("stat_first", "stat %d files / %d dirs, first pass after mount (s, stats/s)" % (nfiles, ndirs),
     "time", nfiles + ndirs + 1, "meta"),
    ("stat_cached", "stat %d files / %d dirs, cached pass (s, stats/s)" % (nfiles, ndirs),
     "time", nfiles + ndirs + 1, "meta"),
    ("ls_first", "ls -l of a %d-entry dir, first after mount (s, entries/s)" % nls, "time", nls, "meta"),
    ("ls_cached", "ls -l of a %d-entry dir, cached (s, entries/s)" % nls, "time", nls, "meta"),
    ("create_small", "create+write+close %d x %s files (s, files/s)" % (nsmall, small),
     "time", nsmall, "meta"),
]

NTARGETS = sum(1 for m in METRICS if m[4])

def median(t, m):
    vals = [v for v in samples.get((t, m), []) if not math.isnan(v)]
    return statistics.median(vals) if vals else None

def rate(t, key, kind, count):
    v = median(t, key)
    if v is None:
        return None
    if kind == "time":
        return count / v if v > 0 else None
    return v

def cell(t, key, kind, count):
    v = median(t, key)
    if (t, key) not in samples:
        return "n/a"
    if v is None:
        return "error"
    if kind == "mibs":
        return "%.0f" % v if v >= 100 else "%.1f" % v
    if kind == "iops":
        return si(v)
    secs = ("%.3f" % v) if v < 10 else ("%.1f" % v)
    return "%s s (%s/s)" % (secs, si(count / v)) if v > 0 else "%s s" % secs

def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b

present = [t for t in TARGETS if any(k[0] == t for k in samples)]
targets_listed = meta.get("targets", "").split()

out = []
p = out.append
p("## coldtier benchmark: %s" % meta.get("date", "?"))
p("")
p("- command: `%s`" % meta.get("cmdline", "?"))
p("- date: %s" % meta.get("date", "?"))
p("- kernel: %s" % meta.get("kernel", "?"))
p("- machine: %s CPU(s), %s RAM" % (meta.get("cpu", "?"), meta.get("memory", "?")))
p("- filesystem under test: %s, work dir `%s`" % (meta.get("filesystem", "?"), meta.get("bench_dir", "?")))
for k in ("coldtier", "coldtier_git", "bindfs", "fio"):
    if k in meta:
        p("- %s: %s" % (k.replace("_", " "), meta[k]))
for t in ("coldtier-pt", "coldtier-nopt"):
    if "counters_" + t in meta:
        p("- %s, I/O requests served by the daemon (from its log): %s" % (TITLE[t], meta["counters_" + t]))
p("- repetitions: %s (median shown; random reads: one %s s run each), total run time %s"
  % (meta.get("repeat"), meta.get("runtime"), meta.get("duration", "?")))
p("")
cols = ["Metric"] + [TITLE[t] for t in TARGETS] + ["coldtier/native", "coldtier/bindfs", "Target", "Result"]
p("| " + " | ".join(cols) + " |")
p("|" + "|".join(["---"] + ["---:"] * (len(TARGETS) + 2) + ["---", "---"]) + "|")
npass = nfail = 0
for key, label, kind, count, target in METRICS:
    row = [label] + [cell(t, key, kind, count) for t in TARGETS]
    ct = rate(CT, key, kind, count)
    rn = ratio(ct, rate("native", key, kind, count))
    rb = ratio(ct, rate("bindfs", key, kind, count))
    row.append("%.2f×" % rn if rn is not None else "n/a")
    row.append("%.2f×" % rb if rb is not None else "n/a")
    if target == "seq":
        row.append("≥ 0.90× native")
        verdict = "n/a" if rn is None else ("PASS" if rn >= SEQ_TARGET else "FAIL")
    elif target == "meta":
        row.append("≥ 1.00× bindfs")
        verdict = "n/a" if rb is None else ("PASS" if rb >= 1.0 else "FAIL")
    else:
        row.append("—")
        verdict = "—"
    if verdict == "PASS": npass += 1
    if verdict == "FAIL": nfail += 1
    row.append("**%s**" % verdict if verdict in ("PASS", "FAIL") else verdict)
    p("| " + " | ".join(row) + " |")
p("")
p("Ratios are throughput ratios of coldtier (passthrough, the default config) to the reference "
  "(for timed metrics: reference time / coldtier time), so above 1.00× means coldtier is faster. "
  "Targets: sequential read and write ≥ 90% of native with passthrough; every metadata figure "
  "at least as good as bindfs.")
p("")
p("Targets met: %d PASS, %d FAIL%s" % (npass, nfail,
  "" if npass + nfail == NTARGETS else ", %d not evaluated (missing targets or errors)" % (NTARGETS - npass - nfail)))
if warnings:
    p("")
    p("Warnings during the run:")
    p("")
    for w in warnings:
        p("- %s" % w)
p("")
p("<details><summary>Raw samples (all repetitions, in run order)</summary>")
p("")
p("| Metric | " + " | ".join(TITLE[t] for t in TARGETS) + " |")
p("|---|" + "---|" * len(TARGETS))
for key, label, kind, count, target in METRICS:
    unit = {"mibs": "MiB/s", "iops": "IOPS", "time": "s"}[kind]
    cells = []
    for t in TARGETS:
        vals = samples.get((t, key))
        cells.append(", ".join("%.3f" % v if kind == "time" else "%.1f" % v for v in vals) if vals else "n/a")
    p("| %s [%s] | %s |" % (key, unit, " | ".join(cells)))
p("")
p("</details>")
print("\n".join(out))
sys.exit(3 if nfail else 0)
EOF
[[ $REPORT_RC -eq 0 || $REPORT_RC -eq 3 ]] || die "report generation failed"

echo
cat "$RESULTS_MD"
echo
log "results saved to $RESULTS_MD (raw samples: $RAW_TSV, logs: $LOG_DIR)"
if [[ $STRICT -eq 1 && $REPORT_RC -eq 3 ]]; then
    exit 1
fi
exit 0
