# The tiering benchmark of scripts/bench.sh (`scripts/bench.sh --tier`): coldtier's
# migrate (copy + verify + stub) and recall against `rclone copy` of the same data to and
# from the same local S3 server (s3s-fs), side by side, in one run. docs/benchmarks.md
# ("Tiering") explains every figure.
# shellcheck shell=bash
#
# Sourced by scripts/bench.sh, which calls `bench_tier_main "$@"` and exits with its status.
# It is a benchmark, not a test: exit 0 even when a target is missed (unless --strict).

_bt_usage() {
    cat <<'EOF'
Usage: scripts/bench.sh --tier [options]

Tiering benchmark: `coldtier migrate` (copy + verify + stub) of one large file and of
many small files, and `coldtier recall` of them, against `rclone copy` of the same data
to and from the same s3s-fs server on 127.0.0.1; and the backfill of the small files to a
second s3s-fs (`coldtier replicate`) against `rclone copy` between the two servers. Prints a markdown table (also saved to
$BENCH_TIER_DIR/results.md).

Options:
  --quick          small sizes, 1 repetition (~1 min once the tools are installed)
  --build          run `cargo build --release --locked` first (done anyway if the binary is missing)
  --targets LIST   comma-separated subset of: coldtier,rclone (default: both)
  --keep           keep the data directories (default: delete them at the end)
  --strict         exit 1 if a performance target is missed
  -h, --help       this text

Environment (defaults in brackets; --quick changes the defaults, not explicit values):
  BENCH_TIER_DIR         work dir (data, s3s-fs root, logs)    [/var/tmp/coldtier-bench-tier]
  BENCH_TIER_LARGE       size of the large file                 [1G]    (quick: 128M)
  BENCH_TIER_NSMALL      number of small files                  [2000]  (quick: 200)
  BENCH_TIER_SMALL_SIZE  size of each small file                [64K]
  BENCH_TIER_REPEAT      repetitions (the table shows medians)  [3]     (quick: 1)
  BENCH_TIER_OPEN        1 = also time recall at first read (cat through the mount), 0 = skip [1]
  BENCH_RCLONE_FLAGS     extra flags for every `rclone copy`    []
  BENCH_OP_TIMEOUT       seconds before a single measured command is killed [900]
  COLDTIER_BIN           coldtier binary        [<repo>/target/release/coldtier]
  COLDTIER_S3S_BIN       s3s-fs binary          [/opt/coldtier-tools/bin/s3s-fs, installed if missing]
EOF
}

_bt_log()  { printf '[bench-tier %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
_bt_warn() { printf '[bench-tier %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2
             [[ -n "${BT_WARN_FILE:-}" ]] && printf '%s\n' "$*" >>"$BT_WARN_FILE"; return 0; }
_bt_die()  { printf '[bench-tier] ERROR: %s\n' "$*" >&2; exit 1; }

_bt_now_us() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
_bt_secs() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }
_bt_drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
_bt_tmo() { timeout --foreground --kill-after=10 "$BENCH_OP_TIMEOUT" "$@"; }
# _bt_record TOOL METRIC REP VALUE (seconds, or nan)
_bt_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$BT_RAW"; }
_bt_has() { local x; for x in "${BT_TARGETS[@]}"; do [[ "$x" == "$1" ]] && return 0; done; return 1; }
_bt_shq() {
    if [[ "$1" =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]]; then printf '%s' "$1"
    else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# rclone, configured entirely from the environment (no config file), without
# AWS_CA_BUNDLE (rclone 1.60 refuses to start while it is set). A command, not a shell
# function, so that timeout(1) can run it: `_bt_tmo "${BT_RCLONE[@]}" copy ...`.
_bt_rclone_cmd() {
    BT_RCLONE=(env -u AWS_CA_BUNDLE
        RCLONE_CONFIG_BENCHS3_TYPE=s3
        RCLONE_CONFIG_BENCHS3_PROVIDER=Other
        RCLONE_CONFIG_BENCHS3_ENV_AUTH=false
        "RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID=$S3S_ACCESS_KEY"
        "RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY=$S3S_SECRET_KEY"
        "RCLONE_CONFIG_BENCHS3_ENDPOINT=$S3S_ENDPOINT"
        RCLONE_CONFIG_BENCHS3_REGION=us-east-1
        RCLONE_CONFIG_BENCHS3_FORCE_PATH_STYLE=true
        RCLONE_CONFIG_BENCHS3B_TYPE=s3
        RCLONE_CONFIG_BENCHS3B_PROVIDER=Other
        RCLONE_CONFIG_BENCHS3B_ENV_AUTH=false
        "RCLONE_CONFIG_BENCHS3B_ACCESS_KEY_ID=$S3S_ACCESS_KEY"
        "RCLONE_CONFIG_BENCHS3B_SECRET_ACCESS_KEY=$S3S_SECRET_KEY"
        "RCLONE_CONFIG_BENCHS3B_ENDPOINT=$BT_S3S2_ENDPOINT"
        RCLONE_CONFIG_BENCHS3B_REGION=us-east-1
        RCLONE_CONFIG_BENCHS3B_FORCE_PATH_STYLE=true
        rclone --config /dev/null)
}

# Data: one large file, and the small files 100 to a directory; random bytes (nothing
# compresses or deduplicates), different in every file.
_bt_make_data() { # DIR
    local dir="$1"
    mkdir -p "$dir/large" "$dir/small"
    head -c "$BT_LARGE_BYTES" /dev/urandom >"$dir/large/big.dat"
    python3 - "$dir/small" "$BENCH_TIER_NSMALL" "$BT_SMALL_BYTES" <<'EOF'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = "%s/d%03d" % (root, i // 100)
    if i % 100 == 0:
        os.mkdir(d)
    with open("%s/f%05d.bin" % (d, i), "wb") as f:
        f.write(os.urandom(size))
EOF
}

# _bt_same DIR_A DIR_B: same files with the same bytes (read without any mount).
_bt_same() { diff -r -q "$1" "$2" >>"$BT_LOG_DIR/diff.log" 2>&1; }

# _bt_states MNT: prints "<n> <state>" lines from `coldtier status MNT -r --json`.
_bt_states() {
    "$COLDTIER_BIN" status "$1" -r --json 2>>"$BT_LOG_DIR/status.log" | python3 -c '
import json, sys, collections
c = collections.Counter()
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    o = json.loads(line)
    if o.get("state") is not None:
        c[o["state"]] += 1
print(" ".join("%s=%d" % kv for kv in sorted(c.items())) or "none")'
}

# _bt_count_state MNT STATE NFILES: warn unless exactly NFILES regular files are in STATE.
_bt_check_state() {
    local mnt="$1" want="$2" n="$3" what="$4" got
    got=$(_bt_states "$mnt") || { _bt_warn "$what: 'coldtier status -r --json' failed (see $BT_LOG_DIR/status.log)"; return 1; }
    if [[ " $got " != *" $want=$n "* ]]; then
        _bt_warn "$what: expected $want=$n, coldtier status says: $got"
        return 1
    fi
}

# Waits (up to 300 s) until every file of MNT is in STATE; 1 if they never are.
_bt_wait_state() { # MNT STATE N
    local _
    for _ in $(seq 1 3000); do
        [[ " $(_bt_states "$1" 2>/dev/null) " == *" $2=$3 "* ]] && return 0
        sleep 0.1
    done
    return 1
}

# Reads of the large stub through the mount, each on a freshly released stub with the page
# cache dropped: the time to its first 4 KiB (ttfb_large), and to 1 MiB at its start, at
# its end and in its middle, one after the other (ranges_large). Bytes checked against
# the master copy. The recall each starts is let finish before the next.
_bt_stub_reads() { # MNT TAG REP
    local mnt="$1" tag="$2" r="$3" f mode secs
    f=$(cd "$mnt" && find . -type f | head -n 1)
    for mode in ttfb ranges; do
        if ! "$COLDTIER_BIN" release "$mnt" -r >"$BT_LOG_DIR/$tag.release.$mode.out" 2>&1 \
            || ! _bt_check_state "$mnt" stub 1 "before the $mode probe (rep $r)"; then
            _bt_record coldtier "${mode}_large" "$r" nan
            continue
        fi
        _bt_drop_caches
        if secs=$(python3 - "$mnt/$f" "$BT_DATA/master/large/$f" "$mode" <<'EOF' 2>"$BT_LOG_DIR/$tag.$mode.err"
import os, sys, time
path, master, mode = sys.argv[1:4]
size = os.stat(master).st_size
M = 1 << 20
ranges = [(0, 4096)] if mode == "ttfb" else [(0, M), (size - M, M), (size // 2, M)]
fd = os.open(path, os.O_RDONLY)
got = []
t0 = time.perf_counter()
for off, n in ranges:
    b = b""
    while len(b) < n:
        piece = os.pread(fd, n - len(b), off + len(b))
        if not piece:
            sys.exit("short read at %d" % (off + len(b)))
        b += piece
    got.append(b)
t1 = time.perf_counter()
with open(master, "rb") as m:
    for (off, n), b in zip(ranges, got):
        m.seek(off)
        if m.read(n) != b:
            sys.exit("bytes at %d differ from the master copy" % off)
print("%.6f" % (t1 - t0))
EOF
        ); then
            _bt_record coldtier "${mode}_large" "$r" "$secs"
            _bt_log "  coldtier $mode of the large stub: $secs s"
        else
            _bt_warn "$mode probe (rep $r) failed: $(tail -n 3 "$BT_LOG_DIR/$tag.$mode.err" | tr '\n' ' ')"
            _bt_record coldtier "${mode}_large" "$r" nan
        fi
        _bt_wait_state "$mnt" premigrated 1 || _bt_warn "the recall started by the $mode probe did not finish (rep $r)"
    done
}

_bt_write_config() { # FILE PREFIX CATALOG [PACK]
    if [[ "${4:-0}" == 1 ]]; then
        printf '[pack]\nenabled = true\n\n' >"$1"
    else
        : >"$1"
    fi
    cat >>"$1" <<EOF
# written by scripts/bench.sh --tier
[store]
kind = "s3"
endpoint = "$S3S_ENDPOINT"
region = "us-east-1"
bucket = "$BT_CT_BUCKET"
prefix = "$2"
path_style = true
access_key = "$S3S_ACCESS_KEY"
secret_key = "$S3S_SECRET_KEY"

[policy]
mode = "stub"
atime_older_than = "0s"
min_size = 1
schedule = "off"

[catalog]
path = "$3"

# the second s3s-fs: the target of the backfill measured (coldtier replicate)
[[replica]]
name = "second"
kind = "s3"
endpoint = "$BT_S3S2_ENDPOINT"
region = "us-east-1"
bucket = "$BT_REP_BUCKET"
prefix = "$2"
path_style = true
access_key = "$S3S_ACCESS_KEY"
secret_key = "$S3S_SECRET_KEY"
EOF
}

_bt_mount() { # SRC MNT CONFIG LOGNAME
    BT_MOUNTED+=("$2")
    timeout 120 "$COLDTIER_BIN" mount "$1" "$2" --config "$3" --log-file "$BT_LOG_DIR/$4.daemon.log" \
        </dev/null >>"$BT_LOG_DIR/$4.mount.log" 2>&1 7>&- 8>&- 9>&- \
        || { _bt_warn "coldtier mount $1 $2 failed: $(tail -n 5 "$BT_LOG_DIR/$4.mount.log" | tr '\n' ' ')"; return 1; }
    local _
    for _ in $(seq 1 100); do
        mountpoint -q "$2" && return 0
        sleep 0.1
    done
    _bt_warn "$2 is not a mount point after coldtier mount"
    return 1
}

_bt_umount() { # MNT
    local mnt="$1"
    mountpoint -q "$mnt" 2>/dev/null || return 0
    timeout 120 "$COLDTIER_BIN" umount "$mnt" >>"$BT_LOG_DIR/umount.log" 2>&1 || true
    mountpoint -q "$mnt" 2>/dev/null || return 0
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    ! mountpoint -q "$mnt" 2>/dev/null
}

# ----------------------------------------------------------------------------
# one coldtier round: migrate, recall (CLI), and optionally recall at first read (cat)
# ----------------------------------------------------------------------------
_bt_coldtier_round() { # WORKLOAD(large|small|packed) REP
    local w="$1" r="$2" n
    [[ "$w" == large ]] && n=1 || n=$BENCH_TIER_NSMALL
    local base="$BT_DATA/ct.$w.$r" tag="ct.$w.$r"
    local src="$base/src" mnt="$base/mnt" cfg="$base/config.toml" t0 t1 rc
    # packed: the small files with [pack] enabled (packs of the default 64 MiB)
    local data=$w pack=0
    [[ "$w" == packed ]] && { data=small; pack=1; }
    mkdir -p "$src" "$mnt"
    cp -a "$BT_DATA/master/$data/." "$src/"
    _bt_write_config "$cfg" "$w-$r" "$base/catalog.db" "$pack"
    if ! _bt_mount "$src" "$mnt" "$cfg" "$tag"; then
        _bt_record coldtier "migrate_$w" "$r" nan; _bt_record coldtier "recall_$w" "$r" nan
        return 0
    fi

    _bt_drop_caches
    t0=$(_bt_now_us); rc=0
    _bt_tmo "$COLDTIER_BIN" migrate "$mnt" --json >"$BT_LOG_DIR/$tag.migrate.json" 2>"$BT_LOG_DIR/$tag.migrate.err" || rc=$?
    t1=$(_bt_now_us)
    local summary
    local nbytes=$((n * BT_SMALL_BYTES))
    [[ "$w" == large ]] && nbytes=$BT_LARGE_BYTES
    summary=$(python3 - "$BT_LOG_DIR/$tag.migrate.json" "$n" "$nbytes" <<'EOF' 2>&1
import json, sys
path, n, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    o = json.load(open(path))
except Exception as e:
    print("BAD no JSON summary (%s)" % e); sys.exit()
bad = []
for k, want in (("copied", n), ("stubbed", n), ("failed", 0), ("bytes_copied", nbytes)):
    if o.get(k) != want:
        bad.append("%s=%s (want %s)" % (k, o.get(k), want))
errs = o.get("errors") or []
print(("BAD " if bad or errs else "OK ") + "copied=%s stubbed=%s failed=%s bytes_copied=%s%s%s" % (
    o.get("copied"), o.get("stubbed"), o.get("failed"), o.get("bytes_copied"),
    (" mismatch: " + ", ".join(bad)) if bad else "",
    (" errors: " + json.dumps(errs[:3])) if errs else ""))
EOF
)
    if [[ $rc -ne 0 || "$summary" != OK* ]]; then
        _bt_warn "coldtier migrate ($w, rep $r) exit $rc: ${summary#* }; stderr: $(tail -n 5 "$BT_LOG_DIR/$tag.migrate.err" | tr '\n' ' ')"
        _bt_record coldtier "migrate_$w" "$r" nan
    else
        _bt_record coldtier "migrate_$w" "$r" "$(_bt_secs $((t1 - t0)))"
        _bt_log "  coldtier migrate $w: $(_bt_secs $((t1 - t0))) s (${summary#OK })"
    fi
    _bt_check_state "$mnt" stub "$n" "after migrate ($w, rep $r)" || true

    if [[ "$w" != large ]]; then
        # backfill of the second s3s-fs: every object read from the first, put to the
        # second, proven, recorded (packed: each pack and its index)
        _bt_drop_caches
        t0=$(_bt_now_us); rc=0
        _bt_tmo "$COLDTIER_BIN" replicate "$mnt" --to second --json >"$BT_LOG_DIR/$tag.replicate.json" 2>"$BT_LOG_DIR/$tag.replicate.err" || rc=$?
        t1=$(_bt_now_us)
        local want_copied="\"copied\":$n,"
        [[ "$w" == packed ]] && want_copied='"failed":0,'
        if [[ $rc -ne 0 ]] || ! grep -q "$want_copied" "$BT_LOG_DIR/$tag.replicate.json"; then
            _bt_warn "coldtier replicate ($w, rep $r) exit $rc: $(head -c 300 "$BT_LOG_DIR/$tag.replicate.json") $(tail -n 3 "$BT_LOG_DIR/$tag.replicate.err" | tr '\n' ' ')"
            _bt_record coldtier "replicate_$w" "$r" nan
        else
            _bt_record coldtier "replicate_$w" "$r" "$(_bt_secs $((t1 - t0)))"
            _bt_log "  coldtier replicate $w: $(_bt_secs $((t1 - t0))) s"
        fi
        rm -rf --one-file-system "${BT_S3S2_ROOT:?}/$BT_REP_BUCKET/$w-$r"
    fi

    _bt_drop_caches
    t0=$(_bt_now_us); rc=0
    _bt_tmo "$COLDTIER_BIN" recall "$mnt" -r >"$BT_LOG_DIR/$tag.recall.out" 2>&1 || rc=$?
    t1=$(_bt_now_us)
    if [[ $rc -ne 0 ]]; then
        _bt_warn "coldtier recall -r ($w, rep $r) exit $rc: $(tail -n 5 "$BT_LOG_DIR/$tag.recall.out" | tr '\n' ' ')"
        _bt_record coldtier "recall_$w" "$r" nan
    elif ! _bt_same "$BT_DATA/master/$data" "$src"; then
        _bt_warn "coldtier recall ($w, rep $r): the recalled files differ from the originals (see $BT_LOG_DIR/diff.log)"
        _bt_record coldtier "recall_$w" "$r" nan
    else
        _bt_record coldtier "recall_$w" "$r" "$(_bt_secs $((t1 - t0)))"
        _bt_log "  coldtier recall $w: $(_bt_secs $((t1 - t0))) s"
    fi
    _bt_check_state "$mnt" premigrated "$n" "after recall ($w, rep $r)" || true

    [[ "$w" == large ]] && _bt_stub_reads "$mnt" "$tag" "$r"

    if [[ $BENCH_TIER_OPEN -eq 1 ]]; then
        # stub the files again (their copies are still in S3: nothing is uploaded), then
        # read every file through the mount: each first open recalls it
        if "$COLDTIER_BIN" release "$mnt" -r >"$BT_LOG_DIR/$tag.release.out" 2>&1 \
            && _bt_check_state "$mnt" stub "$n" "after release ($w, rep $r)"; then
            _bt_drop_caches
            t0=$(_bt_now_us); rc=0
            (cd "$mnt" && find . -type f -print0 | sort -z | _bt_tmo xargs -0 cat >/dev/null) \
                2>"$BT_LOG_DIR/$tag.open.err" || rc=$?
            t1=$(_bt_now_us)
            if [[ $rc -ne 0 ]]; then
                _bt_warn "recall at first read ($w, rep $r) failed: $(tail -n 3 "$BT_LOG_DIR/$tag.open.err" | tr '\n' ' ')"
                _bt_record coldtier "open_$w" "$r" nan
            elif ! _bt_same "$BT_DATA/master/$data" "$src"; then
                _bt_warn "recall at first read ($w, rep $r): the recalled files differ from the originals"
                _bt_record coldtier "open_$w" "$r" nan
            else
                _bt_record coldtier "open_$w" "$r" "$(_bt_secs $((t1 - t0)))"
                _bt_log "  coldtier recall at first read (cat) $w: $(_bt_secs $((t1 - t0))) s"
            fi
        else
            _bt_warn "coldtier release -r ($w, rep $r) failed: $(tail -n 3 "$BT_LOG_DIR/$tag.release.out" | tr '\n' ' ')"
            _bt_record coldtier "open_$w" "$r" nan
        fi
    fi

    _bt_umount "$mnt" || _bt_die "cannot unmount $mnt"
    rm -rf --one-file-system "$base" "${BT_S3S_ROOT:?}/$BT_CT_BUCKET/$w-$r"
}

# ----------------------------------------------------------------------------
# one rclone round: copy up, copy back
# ----------------------------------------------------------------------------
_bt_rclone_round() { # WORKLOAD REP
    local w="$1" r="$2"
    local tag="rc.$w.$r" back="$BT_DATA/rc.$w.$r" t0 t1 rc
    _bt_drop_caches
    t0=$(_bt_now_us); rc=0
    # shellcheck disable=SC2086
    _bt_tmo "${BT_RCLONE[@]}" copy $BENCH_RCLONE_FLAGS "$BT_DATA/master/$w" "benchs3:$BT_RC_BUCKET/$w-$r" \
        >"$BT_LOG_DIR/$tag.up.log" 2>&1 || rc=$?
    t1=$(_bt_now_us)
    if [[ $rc -ne 0 ]]; then
        _bt_warn "rclone copy up ($w, rep $r) exit $rc: $(tail -n 3 "$BT_LOG_DIR/$tag.up.log" | tr '\n' ' ')"
        _bt_record rclone "migrate_$w" "$r" nan
    else
        _bt_record rclone "migrate_$w" "$r" "$(_bt_secs $((t1 - t0)))"
        _bt_log "  rclone copy up $w: $(_bt_secs $((t1 - t0))) s"
    fi

    if [[ "$w" == small && $rc -eq 0 ]]; then
        # the same backfill with rclone: first s3s-fs to the second (two remotes: no
        # server-side copy)
        _bt_drop_caches
        t0=$(_bt_now_us); rc=0
        # shellcheck disable=SC2086
        _bt_tmo "${BT_RCLONE[@]}" copy $BENCH_RCLONE_FLAGS "benchs3:$BT_RC_BUCKET/$w-$r/" "benchs3b:$BT_REP_BUCKET/rc-$w-$r" \
            >"$BT_LOG_DIR/$tag.replicate.log" 2>&1 || rc=$?
        t1=$(_bt_now_us)
        if [[ $rc -ne 0 ]]; then
            _bt_warn "rclone copy between the servers ($w, rep $r) exit $rc: $(tail -n 3 "$BT_LOG_DIR/$tag.replicate.log" | tr '\n' ' ')"
            _bt_record rclone "replicate_$w" "$r" nan
        else
            _bt_record rclone "replicate_$w" "$r" "$(_bt_secs $((t1 - t0)))"
            _bt_log "  rclone copy to the second server $w: $(_bt_secs $((t1 - t0))) s"
        fi
        rm -rf --one-file-system "${BT_S3S2_ROOT:?}/$BT_REP_BUCKET/rc-$w-$r"
        rc=0
    fi

    mkdir -p "$back"
    _bt_drop_caches
    t0=$(_bt_now_us); rc=0
    # The trailing "/" tells rclone the source is a directory: without it rclone first
    # HEADs "<bucket>/<prefix>" to see whether it is a file, s3s-fs answers 500 (its
    # directory "Is a directory") and rclone retries that for ~90 s.
    # shellcheck disable=SC2086
    _bt_tmo "${BT_RCLONE[@]}" copy $BENCH_RCLONE_FLAGS "benchs3:$BT_RC_BUCKET/$w-$r/" "$back" \
        >"$BT_LOG_DIR/$tag.down.log" 2>&1 || rc=$?
    t1=$(_bt_now_us)
    if [[ $rc -ne 0 ]]; then
        _bt_warn "rclone copy back ($w, rep $r) exit $rc: $(tail -n 3 "$BT_LOG_DIR/$tag.down.log" | tr '\n' ' ')"
        _bt_record rclone "recall_$w" "$r" nan
    elif ! _bt_same "$BT_DATA/master/$w" "$back"; then
        _bt_warn "rclone copy back ($w, rep $r): the files differ from the originals (see $BT_LOG_DIR/diff.log)"
        _bt_record rclone "recall_$w" "$r" nan
    else
        _bt_record rclone "recall_$w" "$r" "$(_bt_secs $((t1 - t0)))"
        _bt_log "  rclone copy back $w: $(_bt_secs $((t1 - t0))) s"
    fi
    rm -rf --one-file-system "$back" "${BT_S3S_ROOT:?}/$BT_RC_BUCKET/$w-$r"
}

# ----------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------
_bt_report() {
    python3 - "$BT_META" "$BT_RAW" "$BT_WARN_FILE" <<'EOF'
import math, statistics, sys

meta_path, raw_path, warn_path = sys.argv[1:4]
meta = {}
for line in open(meta_path):
    k, _, v = line.rstrip("\n").partition("\t")
    meta[k] = v
samples = {}
for line in open(raw_path):
    t, m, r, v = line.rstrip("\n").split("\t")
    samples.setdefault((t, m), []).append(float(v))
warnings = [w for w in open(warn_path).read().splitlines() if w.strip()]

def iec(n):
    n = float(n)
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if n == int(n) else ("%.1f %s" % (n, unit))
        n /= 1024

large = int(meta["large_bytes"]); nsmall = int(meta["nsmall"]); small = int(meta["small_bytes"])
MIB = 1048576.0
# key, label, kind ("mibs": large file, MiB/s; "files": files/s), target ratio or None
METRICS = [
    ("migrate_large", "Migrate 1 file of %s (MiB/s)" % iec(large), "mibs", 1.50),
    ("migrate_small", "Migrate %d files of %s (files/s)" % (nsmall, iec(small)), "files", 1.00),
    ("recall_large", "Recall 1 file of %s (MiB/s)" % iec(large), "mibs", 1.00),
    ("recall_small", "Recall %d files of %s (files/s)" % (nsmall, iec(small)), "files", 1.50),
    ("open_large", "Recall at first read, `cat` through the mount, %s (MiB/s)" % iec(large), "mibs", None),
    ("open_small", "Recall at first read, `cat` through the mount, %d files (files/s)" % nsmall, "files", None),
    ("replicate_small", "Backfill %d files of %s to a second s3s-fs (files/s; rclone: copy between the two)" % (nsmall, iec(small)), "files", None),
    ("migrate_packed", "Migrate %d files of %s with [pack] enabled (files/s; rclone: the same files)" % (nsmall, iec(small)), "files", 5.00),
    ("recall_packed", "Recall %d packed files of %s (files/s; rclone: copy back of the same files)" % (nsmall, iec(small)), "files", 3.00),
    ("open_packed", "Recall at first read, `cat` through the mount, %d packed files (files/s)" % nsmall, "files", None),
    ("replicate_packed", "Backfill of those packs to a second s3s-fs (files/s; rclone: the files between the two)" % (), "files", None),
]

def rclone_key(key):
    # rclone has no packs: its numbers for the same small files stand beside the packed rows
    return key.replace("_packed", "_small").replace("open_", "recall_")

def med(t, m):
    vals = [v for v in samples.get((t, m), []) if not math.isnan(v)]
    return statistics.median(vals) if vals else None

def rate(t, m, kind):
    v = med(t, m)
    if v is None or v <= 0:
        return None
    return (large / MIB / v) if kind == "mibs" else (nsmall / v)

def cell(t, m, kind):
    if (t, m) not in samples:
        return "n/a"
    v = med(t, m)
    if v is None:
        return "error"
    x = rate(t, m, kind)
    if kind == "mibs":
        return "%.0f (%.2f s)" % (x, v) if x is not None else "%.2f s" % v
    return "%.0f (%.2f s, %.1f MiB/s)" % (x, v, nsmall * small / MIB / v) if x is not None else "%.2f s" % v

out = []
p = out.append
p("## coldtier tiering benchmark: %s" % meta.get("date", "?"))
p("")
p("- command: `%s`" % meta.get("cmdline", "?"))
for k in ("date", "kernel", "machine", "filesystem", "coldtier", "coldtier_git", "s3s", "rclone", "rclone_flags"):
    if k in meta:
        p("- %s: %s" % (k.replace("_", " "), meta[k]))
p("- repetitions: %s (median shown), total run time %s" % (meta.get("repeat"), meta.get("duration", "?")))
p("- load average (1, 5, 15 min) at start: %s, at end: %s" % (meta.get("load_start", "?"), meta.get("load_end", "?")))
p("")
p("| Metric | coldtier | rclone copy | coldtier/rclone | Target | Result |")
p("|---|---:|---:|---:|---|---|")
npass = nfail = nt = 0
for key, label, kind, target in METRICS:
    if ("coldtier", key) not in samples and ("rclone", key) not in samples:
        continue
    c, r = rate("coldtier", key, kind), rate("rclone", rclone_key(key), kind)
    ratio = c / r if c is not None and r is not None else None
    row = [label, cell("coldtier", key, kind), cell("rclone", rclone_key(key), kind)]
    if key.startswith("open_"):
        r2 = rate("rclone", rclone_key(key), kind)
        ratio = c / r2 if c is not None and r2 is not None else None
        row[2] = "(copy back: see above)"
    row.append("%.2f×" % ratio if ratio is not None else "n/a")
    if target is None:
        row += ["—", "—"]
    else:
        nt += 1
        row.append("≥ %.2f× rclone" % target)
        verdict = "n/a" if ratio is None else ("PASS" if ratio >= target else "FAIL")
        if verdict == "PASS": npass += 1
        if verdict == "FAIL": nfail += 1
        row.append("**%s**" % verdict if verdict != "n/a" else verdict)
    p("| " + " | ".join(row) + " |")
p("")
p("Throughput ratios coldtier / rclone (above 1.00× coldtier is faster). Migrate = "
  "`coldtier migrate MOUNT --json` (scan, copy, verify, stub, catalog); recall = "
  "`coldtier recall MOUNT -r`; both against `rclone copy` up and back, same data, same "
  "server, page cache dropped before every measurement. The recall-at-first-read rows "
  "(informational) are compared with rclone's copy back.")
p("")
# Reads of a stub (absolute targets, seconds): streaming recall.
STUB_READS = [
    ("ttfb_large", "Time to the first 4 KiB of a %s stub" % iec(large), 0.050),
    ("ranges_large", "1 MiB at the start, the end and the middle of a %s stub, in all" % iec(large), 0.5),
]
if any(("coldtier", k) in samples for k, _, _ in STUB_READS):
    p("")
    p("| Reading a stub | coldtier | Target | Result |")
    p("|---|---:|---|---|")
    for key, label, target in STUB_READS:
        v = med("coldtier", key)
        nt += 1
        verdict = "n/a" if v is None else ("PASS" if v <= target else "FAIL")
        if verdict == "PASS": npass += 1
        if verdict == "FAIL": nfail += 1
        p("| %s | %s | ≤ %.0f ms | %s |" % (label, "error" if v is None else "%.1f ms" % (v * 1000), target * 1000, "**%s**" % verdict if verdict != "n/a" else verdict))
    p("")
    p("Each on a freshly released stub, page cache dropped: `open` then `pread` through the "
      "mount (scripts/lib/bench_tier.sh `_bt_stub_reads`), bytes checked against the original.")
p("")
p("Targets met: %d PASS, %d FAIL%s" % (npass, nfail, "" if npass + nfail == nt else ", %d not evaluated" % (nt - npass - nfail)))
if warnings:
    p("")
    p("Warnings during the run:")
    p("")
    for w in warnings:
        p("- %s" % w)
p("")
p("<details><summary>Raw samples (seconds, in run order)</summary>")
p("")
p("| Metric | coldtier | rclone |")
p("|---|---|---|")
for key, label, kind, target in METRICS + [(k, l, "s", t) for k, l, t in STUB_READS]:
    cells = []
    for t in ("coldtier", "rclone"):
        vals = samples.get((t, key))
        cells.append(", ".join("%.3f" % v for v in vals) if vals else "n/a")
    if cells != ["n/a", "n/a"]:
        p("| %s | %s |" % (key, " | ".join(cells)))
p("")
p("</details>")
print("\n".join(out))
sys.exit(3 if nfail else 0)
EOF
}

# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
bench_tier_main() {
    local args=("$@") quick=0 build=0 keep=0 strict=0 targets_arg=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --tier) ;;
            --quick) quick=1 ;;
            --build) build=1 ;;
            --keep) keep=1 ;;
            --strict) strict=1 ;;
            --targets) [[ $# -ge 2 ]] || { echo "bench: --targets needs a value" >&2; exit 2; }
                       targets_arg="$2"; shift ;;
            --targets=*) targets_arg="${1#--targets=}" ;;
            -h|--help) _bt_usage; exit 0 ;;
            *) echo "bench --tier: unknown argument: $1 (see --tier --help)" >&2; exit 2 ;;
        esac
        shift
    done
    if [[ $quick -eq 1 ]]; then
        : "${BENCH_TIER_LARGE:=128M}" "${BENCH_TIER_NSMALL:=200}" "${BENCH_TIER_REPEAT:=1}"
    fi
    : "${BENCH_TIER_DIR:=/var/tmp/coldtier-bench-tier}"
    : "${BENCH_TIER_LARGE:=1G}"
    : "${BENCH_TIER_NSMALL:=2000}"
    : "${BENCH_TIER_SMALL_SIZE:=64K}"
    : "${BENCH_TIER_REPEAT:=3}"
    : "${BENCH_TIER_OPEN:=1}"
    : "${BENCH_RCLONE_FLAGS:=}"
    : "${BENCH_OP_TIMEOUT:=900}"
    : "${COLDTIER_BIN:=$REPO_ROOT/target/release/coldtier}"

    [[ $EUID -eq 0 ]] || _bt_die "run as root: dropping the page cache and mounting coldtier need it"
    local v
    for v in BENCH_TIER_NSMALL BENCH_TIER_REPEAT BENCH_OP_TIMEOUT; do
        [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -ge 1 ]] || _bt_die "$v must be a positive integer, got '${!v}'"
    done
    [[ "$BENCH_TIER_OPEN" == 0 || "$BENCH_TIER_OPEN" == 1 ]] || _bt_die "BENCH_TIER_OPEN must be 0 or 1"
    BT_LARGE_BYTES=$(numfmt --from=iec "$BENCH_TIER_LARGE") || _bt_die "bad BENCH_TIER_LARGE '$BENCH_TIER_LARGE'"
    BT_SMALL_BYTES=$(numfmt --from=iec "$BENCH_TIER_SMALL_SIZE") || _bt_die "bad BENCH_TIER_SMALL_SIZE"
    [[ $BT_LARGE_BYTES -ge 1 && $BT_SMALL_BYTES -ge 1 ]] || _bt_die "sizes must be at least 1 byte"
    case "$BENCH_TIER_DIR" in /?*) ;; *) _bt_die "BENCH_TIER_DIR must be an absolute path other than /" ;; esac

    BT_TARGETS=()
    if [[ -n "$targets_arg" ]]; then
        local t req=()
        IFS=', ' read -r -a req <<<"$targets_arg"
        for t in "${req[@]}"; do
            [[ -z "$t" ]] && continue
            [[ "$t" == coldtier || "$t" == rclone ]] || _bt_die "unknown target '$t' (valid: coldtier, rclone)"
            BT_TARGETS+=("$t")
        done
        [[ ${#BT_TARGETS[@]} -gt 0 ]] || _bt_die "--targets selected nothing"
    else
        BT_TARGETS=(coldtier rclone)
    fi

    # dependencies
    # shellcheck source=scripts/lib/deps.sh
    . "$SCRIPT_DIR/lib/deps.sh"
    # shellcheck source=scripts/lib/s3s.sh
    . "$SCRIPT_DIR/lib/s3s.sh"
    command -v python3 >/dev/null 2>&1 || apt_install python3
    _bt_has rclone && { command -v rclone >/dev/null 2>&1 || apt_install rclone; }
    if _bt_has coldtier; then
        ensure_fuse
        if [[ $build -eq 1 || ! -x "$COLDTIER_BIN" ]]; then
            ensure_rust
            _bt_log "building coldtier: (cd $REPO_ROOT && cargo build --release --locked)"
            (cd "$REPO_ROOT" && cargo build --release --locked >&2) || _bt_die "cargo build --release failed"
        fi
        [[ -x "$COLDTIER_BIN" ]] || _bt_die "coldtier binary not found at $COLDTIER_BIN"
        "$COLDTIER_BIN" --help 2>/dev/null | grep -qw migrate \
            || _bt_die "$COLDTIER_BIN has no 'migrate' command (tiering not built in yet?)"
    fi
    s3s_install || _bt_die "installing s3s-fs failed"

    # work dir, lock, cleanup
    BT_DATA="$BENCH_TIER_DIR/data"
    BT_LOG_DIR="$BENCH_TIER_DIR/logs"
    BT_RAW="$BENCH_TIER_DIR/raw.tsv"
    BT_META="$BENCH_TIER_DIR/meta.tsv"
    BT_RESULTS="$BENCH_TIER_DIR/results.md"
    BT_S3S_ROOT="$BT_DATA/s3"
    BT_CT_BUCKET="coldtier-bench"
    BT_RC_BUCKET="rclone-bench"
    BT_REP_BUCKET="replica-bench"
    BT_MOUNTED=()
    BT_KEEP=$keep
    BT_WARN_FILE=""
    mkdir -p "$BENCH_TIER_DIR"
    exec 7>&1 8>&2   # the real stdout/stderr, for the EXIT trap (a signal may come mid-redirection)
    exec 9>"$BENCH_TIER_DIR/.lock"
    flock -n 9 || _bt_die "another bench.sh --tier run holds $BENCH_TIER_DIR/.lock"
    # a run killed hard may have left mounts below the data dir: we hold the lock, they are stale
    local m
    while read -r m; do
        [[ -n "$m" ]] || continue
        _bt_log "unmounting stale mount from an earlier run: $m"
        _bt_umount "$m" || _bt_die "cannot unmount stale $m; unmount it by hand"
    done < <(awk -v p="$BT_DATA/" '{ if (index($5, p) == 1) print $5 }' /proc/self/mountinfo | sort -r)
    # ... and its s3s-fs (the pid it recorded, if that process still serves our data dir)
    local old_pid
    old_pid=$(cat "$BENCH_TIER_DIR/s3s.pid" 2>/dev/null || true)
    if [[ "$old_pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$old_pid/cmdline" 2>/dev/null | grep -q "s3s-fs .*$BT_DATA/s3"; then
        _bt_log "stopping s3s-fs left by an earlier run (pid $old_pid)"
        kill "$old_pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$BENCH_TIER_DIR/s3s.pid"
    rm -rf --one-file-system "$BT_DATA" "$BT_LOG_DIR"
    mkdir -p "$BT_DATA/master" "$BT_LOG_DIR"
    rm -f "$BT_RESULTS"
    : >"$BT_RAW"
    BT_WARN_FILE="$BENCH_TIER_DIR/warnings.txt"
    : >"$BT_WARN_FILE"
    trap _bt_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local need_kib avail_kib
    need_kib=$(( (BT_LARGE_BYTES + BENCH_TIER_NSMALL * (BT_SMALL_BYTES + 4096)) * 4 / 1024 + 1048576 ))
    avail_kib=$(df -Pk "$BENCH_TIER_DIR" | awk 'NR==2 {print $4}')
    [[ $avail_kib -ge $need_kib ]] || _bt_die "not enough free space in $BENCH_TIER_DIR: need ~$((need_kib / 1024)) MiB"

    local cmdline="" a
    for v in BENCH_TIER_DIR BENCH_TIER_LARGE BENCH_TIER_NSMALL BENCH_TIER_SMALL_SIZE BENCH_TIER_REPEAT \
             BENCH_TIER_OPEN BENCH_RCLONE_FLAGS COLDTIER_BIN; do
        if printenv "$v" >/dev/null 2>&1; then cmdline+="$v=$(_bt_shq "$(printenv "$v")") "; fi
    done
    cmdline+="$(_bt_shq "$0")"
    for a in "${args[@]}"; do cmdline+=" $(_bt_shq "$a")"; done

    local start_us
    start_us=$(_bt_now_us)
    {
        printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        printf 'cmdline\t%s\n' "$cmdline"
        printf 'kernel\t%s\n' "$(kernel_desc)"
        printf 'machine\t%s x %s, %s RAM\n' "$(nproc)" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
            "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
        printf 'filesystem\t%s (data, s3s-fs root and restored files all on it)\n' \
            "$(df -PT "$BENCH_TIER_DIR" | awk 'NR==2 {print $2 " on " $1 " (mounted on " $7 ")"}')"
        if _bt_has coldtier; then
            printf 'coldtier\t%s (%s, built %s)\n' "$("$COLDTIER_BIN" --version 2>/dev/null | head -n1)" "$COLDTIER_BIN" \
                "$(date -u -r "$COLDTIER_BIN" '+%Y-%m-%d %H:%M:%S UTC')"
            printf 'coldtier_git\t%s%s (of the source tree)\n' \
                "$(git -C "$REPO_ROOT" rev-parse --verify -q --short HEAD 2>/dev/null || echo '?')" \
                "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty worktree)')"
            printf 'coldtier_config\t[store] kind=s3 (defaults: checksum=crc32c, part_size=16MiB, concurrency=4); [policy] mode=stub atime_older_than=0s min_size=1 schedule=off\n'
        fi
        printf 's3s\ts3s-fs %s on 127.0.0.1 (%s)\n' "$COLDTIER_S3S_VERSION" "$(s3s_bin)"
        if _bt_has rclone; then
            printf 'rclone\t%s\n' "$(env -u AWS_CA_BUNDLE rclone version 2>/dev/null | head -n1)"
            # shellcheck disable=SC2016  # backquotes for markdown
            printf 'rclone_flags\t`rclone copy%s` (defaults otherwise: --transfers 4, --s3-chunk-size 5Mi, --s3-upload-concurrency 4, --multi-thread-streams 4)\n' \
                "${BENCH_RCLONE_FLAGS:+ $BENCH_RCLONE_FLAGS}"
        fi
        printf 'load_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'large_bytes\t%s\n' "$BT_LARGE_BYTES"
        printf 'nsmall\t%s\n' "$BENCH_TIER_NSMALL"
        printf 'small_bytes\t%s\n' "$BT_SMALL_BYTES"
        printf 'repeat\t%s\n' "$BENCH_TIER_REPEAT"
    } >"$BT_META"

    _bt_log "command: $cmdline"
    _bt_log "data: 1 x $BENCH_TIER_LARGE and $BENCH_TIER_NSMALL x $BENCH_TIER_SMALL_SIZE (random bytes), $BENCH_TIER_REPEAT repetition(s); targets: ${BT_TARGETS[*]}"
    _bt_make_data "$BT_DATA/master"
    # (7>&- 8>&- 9>&-: the server must not keep our terminal or the lock)
    # The second s3s-fs (the backfill's target) first; its pid and endpoint kept aside,
    # then the first one (whose variables the rest uses).
    BT_S3S2_ROOT="$BT_DATA/s3b"
    S3S_LOG="$BT_LOG_DIR/s3s-fs-2.log" s3s_start "$BT_S3S2_ROOT" 7>&- 8>&- 9>&- || _bt_die "the second s3s-fs did not start"
    BT_S3S2_PID=$S3S_PID BT_S3S2_ENDPOINT=$S3S_ENDPOINT
    s3s_mkbucket "$BT_REP_BUCKET"
    echo "$BT_S3S2_PID" >"$BENCH_TIER_DIR/s3s2.pid"
    S3S_LOG="$BT_LOG_DIR/s3s-fs.log" s3s_start "$BT_S3S_ROOT" 7>&- 8>&- 9>&- || _bt_die "s3s-fs did not start"
    echo "$S3S_PID" >"$BENCH_TIER_DIR/s3s.pid"
    s3s_mkbucket "$BT_CT_BUCKET"
    s3s_mkbucket "$BT_RC_BUCKET"
    _bt_rclone_cmd
    _bt_log "s3s-fs $COLDTIER_S3S_VERSION on $S3S_ENDPOINT (pid $S3S_PID, root $BT_S3S_ROOT)"
    sync

    # Unmeasured warm-up of both clients and of the server with the small data set.
    _bt_log "warm-up (unmeasured)"
    if _bt_has rclone; then
        { "${BT_RCLONE[@]}" copy "$BT_DATA/master/small" "benchs3:$BT_RC_BUCKET/warmup" \
            && "${BT_RCLONE[@]}" copy "benchs3:$BT_RC_BUCKET/warmup/" "$BT_DATA/warmup"; } >"$BT_LOG_DIR/warmup.rclone.log" 2>&1 \
            || _bt_die "rclone cannot copy to/from s3s-fs: $(tail -n 3 "$BT_LOG_DIR/warmup.rclone.log" | tr '\n' ' ')"
        _bt_same "$BT_DATA/master/small" "$BT_DATA/warmup" || _bt_die "rclone warm-up: files differ after a round trip"
        rm -rf "${BT_S3S_ROOT:?}/$BT_RC_BUCKET/warmup" "$BT_DATA/warmup"
    fi

    local r w tool
    for ((r = 1; r <= BENCH_TIER_REPEAT; r++)); do
        for w in large small packed; do
            _bt_log "rep $r/$BENCH_TIER_REPEAT: $w"
            # alternate which tool goes first
            local order=("${BT_TARGETS[@]}")
            if (( r % 2 == 0 )) && [[ ${#order[@]} -eq 2 ]]; then order=("${order[1]}" "${order[0]}"); fi
            for tool in "${order[@]}"; do
                case "$tool" in
                    coldtier) _bt_coldtier_round "$w" "$r" ;;
                    rclone) [[ "$w" == packed ]] || _bt_rclone_round "$w" "$r" ;;
                esac
            done
        done
    done
    printf 'duration\t%s s\n' "$(( ($(_bt_now_us) - start_us) / 1000000 ))" >>"$BT_META"
    printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$BT_META"

    local rc=0
    _bt_report >"$BT_RESULTS" || rc=$?
    [[ $rc -eq 0 || $rc -eq 3 ]] || _bt_die "report generation failed"
    echo
    cat "$BT_RESULTS"
    echo
    _bt_log "results saved to $BT_RESULTS (raw samples: $BT_RAW, logs: $BT_LOG_DIR)"
    [[ $strict -eq 1 && $rc -eq 3 ]] && return 1
    return 0
}

# shellcheck disable=SC2317  # invoked from the EXIT trap
_bt_cleanup() {
    local rc=$? m leftover=0
    set +e
    exec 1>&7 2>&8
    trap - INT TERM
    for m in "${BT_MOUNTED[@]}"; do
        _bt_umount "$m" || { echo "[bench-tier] could not unmount $m" >&2; leftover=1; }
    done
    s3s_stop
    if [[ -n "${BT_S3S2_PID:-}" ]]; then
        kill "$BT_S3S2_PID" 2>/dev/null; wait "$BT_S3S2_PID" 2>/dev/null
    fi
    rm -f "$BENCH_TIER_DIR/s3s.pid" "$BENCH_TIER_DIR/s3s2.pid"
    if [[ ${BT_KEEP:-0} -eq 1 ]]; then
        echo "[bench-tier] --keep: data left in $BT_DATA" >&2
    elif [[ $leftover -eq 0 ]]; then
        rm -rf --one-file-system "$BT_DATA"
    else
        echo "[bench-tier] NOT deleting $BT_DATA: something below it is still mounted" >&2
    fi
    [[ $rc -ne 0 ]] && echo "[bench-tier] aborted (exit $rc); logs in $BT_LOG_DIR" >&2
}
