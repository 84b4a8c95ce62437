# The file-server benchmark of scripts/bench.sh (`scripts/bench.sh --share`): a coldtier
# mount and a native directory holding the same data, exported side by side through one
# nfs-ganesha (FSAL_VFS, NFSv3) and one smbd on 127.0.0.1, in one run: read a large
# resident file through each server, and list a directory of many entries through each,
# after a cache drop and warm. docs/benchmarks.md ("File servers") explains every figure.
# shellcheck shell=bash
#
# Sourced by scripts/bench.sh, which calls `bench_share_main "$@"` and exits with its status.
# It is a benchmark, not a test: exit 0 even when a target is missed (unless --strict).
# The servers are set up as tests/common/share.rs sets them up (own configs, state and
# logs under the work dir; NFSv3 through tests/rpcbind_stub.py in a mount namespace of
# ganesha's own), and everything started here is stopped by the EXIT trap.

# shellcheck source=tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

_bs_usage() {
    cat <<'EOF'
Usage: scripts/bench.sh --share [options]

File-server benchmark: one nfs-ganesha (FSAL_VFS, NFSv3, libnfs-utils clients) and one smbd
(smbclient) on 127.0.0.1, each exporting a coldtier mount (a posix store, tiering on, all
files resident) and a native directory with the same data. Measures, for each export
through each server: reading one large file (nfs-cat / smbclient get to /dev/null, page
cache dropped first, ganesha restarted) and listing one directory of many files (after a
cache drop: page cache dropped, ganesha restarted; then warm: the same listing again).
Prints a markdown table (also saved to $BENCH_SHARE_DIR/results.md) with coldtier/native
ratios.

Options:
  --quick          small sizes, 1 repetition (~1 min once the packages are installed)
  --build          run `cargo build --release --locked` first (done anyway if the binary is missing)
  --keep           keep the data directories (default: delete them at the end)
  --strict         exit 1 if a performance target is missed
  -h, --help       this text

Environment (defaults in brackets; --quick changes the defaults, not explicit values):
  BENCH_SHARE_DIR     work dir (data, server state, logs)         [/var/tmp/coldtier-bench-share]
  BENCH_SHARE_SIZE    size of the large file                       [512M]   (quick: 64M)
  BENCH_SHARE_NFILES  entries in the listed directory              [10000]  (quick: 1000)
  BENCH_SHARE_REPEAT  repetitions (the table shows medians)        [5]      (quick: 1)
  BENCH_OP_TIMEOUT    seconds before a single measured command is killed [900]
  COLDTIER_BIN        coldtier binary        [<repo>/target/release/coldtier]
EOF
}

_bs_log()  { printf '[bench-share %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
_bs_warn() { printf '[bench-share %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2
             [[ -n "${BS_WARN_FILE:-}" ]] && printf '%s\n' "$*" >>"$BS_WARN_FILE"; return 0; }
_bs_die()  { printf '[bench-share] ERROR: %s\n' "$*" >&2; exit 1; }

_bs_now_us() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
_bs_secs() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }
_bs_drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
_bs_tmo() { timeout --foreground --kill-after=10 "$BENCH_OP_TIMEOUT" "$@"; }
# _bs_record TARGET METRIC REP VALUE (seconds, or nan)
_bs_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$BS_RAW"; }
_bs_shq() {
    if [[ "$1" =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]]; then printf '%s' "$1"
    else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
# The same files in DIR: the large file, and list/ with the many small ones (100 random
# bytes each, different in every file).
_bs_make_data() { # DIR
    local dir="$1"
    mkdir -p "$dir/list"
    head -c "$BS_SIZE_BYTES" /dev/urandom >"$dir/big.dat"
    python3 - "$dir/list" "$BENCH_SHARE_NFILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open("%s/f%06d.dat" % (root, i), "wb") as f:
        f.write(os.urandom(100))
EOF
}

# ----------------------------------------------------------------------------
# coldtier
# ----------------------------------------------------------------------------
_bs_mount() {
    mkdir -p "$BS_DATA/ct-mnt" "$BS_DATA/ct-store"
    # The posix store needs no server; tiering is on (hooks, stub probes), nothing is
    # migrated: every file stays resident.
    cat >"$BS_DATA/coldtier.toml" <<EOF
# written by scripts/bench.sh --share
[store]
kind = "posix"
root = "$BS_DATA/ct-store"

[policy]
schedule = "off"

[catalog]
path = "$BS_DATA/catalog/catalog.db"
EOF
    BS_MOUNTED=1
    timeout 120 "$COLDTIER_BIN" mount "$BS_DATA/ct-src" "$BS_DATA/ct-mnt" --config "$BS_DATA/coldtier.toml" \
        --log-file "$BS_LOG_DIR/coldtier.daemon.log" </dev/null >>"$BS_LOG_DIR/coldtier.mount.log" 2>&1 7>&- 8>&- 9>&- \
        || _bs_die "coldtier mount failed: $(tail -n 5 "$BS_LOG_DIR/coldtier.mount.log" | tr '\n' ' ')"
    mountpoint -q "$BS_DATA/ct-mnt" || _bs_die "$BS_DATA/ct-mnt is not a mount point after coldtier mount"
}

_bs_umount() {
    local mnt="$BS_DATA/ct-mnt"
    mountpoint -q "$mnt" 2>/dev/null || return 0
    timeout 120 "$COLDTIER_BIN" umount "$mnt" >>"$BS_LOG_DIR/umount.log" 2>&1 || true
    mountpoint -q "$mnt" 2>/dev/null || return 0
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    ! mountpoint -q "$mnt" 2>/dev/null
}

# ----------------------------------------------------------------------------
# nfs-ganesha: /native and /coldtier, NFSv3 (and v4) on 127.0.0.1
# ----------------------------------------------------------------------------
_bs_ganesha_config() {
    local export_id=1 name path
    cat <<EOF
# written by scripts/bench.sh --share (as tests/common/share.rs, two exports, default
# attribute expiry)
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = $BS_NFS_PORT;
    MNT_Port = $BS_MNT_PORT;
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    mount_path_pseudo = true;
}
NFSv4 {
    Graceless = true;
    Lease_Lifetime = 15;
    Grace_Period = 15;
    RecoveryBackend = fs;
    RecoveryRoot = $BS_SRV/ganesha/recovery;
    Only_Numeric_Owners = true;
}
NFS_KRB5 {
    Active_krb5 = false;
}
LOG {
    Default_Log_Level = EVENT;
}
EOF
    for name in native coldtier; do
        [[ $name == native ]] && path="$BS_DATA/native" || path="$BS_DATA/ct-mnt"
        cat <<EOF
EXPORT {
    Export_Id = $export_id;
    Path = "$path";
    Pseudo = "/$name";
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 3, 4;
    Transports = TCP;
    FSAL {
        Name = VFS;
    }
}
EOF
        export_id=$((export_id + 1))
    done
}

_bs_nfs_url() { # EXPORT REL
    printf 'nfs://127.0.0.1/%s/%s?version=3&nfsport=%s&mountport=%s' "$1" "$2" "$BS_NFS_PORT" "$BS_MNT_PORT"
}

_bs_ganesha_start() {
    local g="$BS_SRV/ganesha"
    mkdir -p "$g/run" "$g/recovery"
    if [[ -z "${BS_RPCBIND_PID:-}" ]]; then
        python3 "$REPO_ROOT/tests/rpcbind_stub.py" "$g/run/rpcbind.sock" --ready-file "$g/rpcbind.ready" \
            </dev/null >/dev/null 2>>"$BS_LOG_DIR/rpcbind.log" 7>&- 8>&- 9>&- &
        BS_RPCBIND_PID=$!
        local i
        for i in $(seq 1 200); do [[ -e "$g/rpcbind.ready" ]] && break; sleep 0.05; done
        [[ -e "$g/rpcbind.ready" ]] || _bs_die "tests/rpcbind_stub.py did not start"
    fi
    _bs_ganesha_config >"$g/ganesha.conf"
    # In a mount namespace of its own: /run is ours (the rpcbind stub), and FUSE mounts
    # other than the coldtier export are detached there (see tests/common/share.rs).
    RUNDIR="$g/run" KEEP="$BS_DATA/ct-mnt" CONF="$g/ganesha.conf" LOG="$BS_LOG_DIR/ganesha.log" PIDFILE="$g/ganesha.pid" \
        setsid unshare -m --propagation private sh -c '
set -e
mount --bind "$RUNDIR" /run
awk "/ - fuse/ { print \$5 }" /proc/self/mountinfo | sort -r | while read -r m; do
    [ "$m" = "$KEEP" ] || umount -l "$m" 2>/dev/null || true
done
exec ganesha.nfsd -F -f "$CONF" -L "$LOG" -p "$PIDFILE"' </dev/null >>"$BS_LOG_DIR/ganesha.out" 2>&1 7>&- 8>&- 9>&- &
    BS_GANESHA_PID=$!
    local t0=$SECONDS
    while ! { timeout 20 nfs-ls "$(_bs_nfs_url native "")" >/dev/null 2>&1 &&
              timeout 20 nfs-ls "$(_bs_nfs_url coldtier "")" >/dev/null 2>&1; }; do
        kill -0 "$BS_GANESHA_PID" 2>/dev/null || _bs_die "ganesha.nfsd exited at start: $(tail -n 5 "$BS_LOG_DIR/ganesha.log" | tr '\n' ' ')"
        (( SECONDS - t0 < 90 )) || _bs_die "ganesha did not serve both exports within 90 s (see $BS_LOG_DIR/ganesha.log)"
        sleep 0.1
    done
}

_bs_ganesha_stop() {
    [[ -n "${BS_GANESHA_PID:-}" ]] || return 0
    kill -TERM -- "-$BS_GANESHA_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 300); do kill -0 "$BS_GANESHA_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$BS_GANESHA_PID" 2>/dev/null || true
    wait "$BS_GANESHA_PID" 2>/dev/null || true
    BS_GANESHA_PID=""
}

# ----------------------------------------------------------------------------
# smbd: [native] and [coldtier] on 127.0.0.1
# ----------------------------------------------------------------------------
_bs_smb_start() {
    local s="$BS_SRV/samba" d name path
    for d in private lock state cache pid ncalrpc log; do mkdir -p "$s/$d"; done
    {
        cat <<EOF
# written by scripts/bench.sh --share (as tests/common/share.rs, two shares)
[global]
    server role = standalone server
    workgroup = WORKGROUP
    netbios name = COLDTIERBENCH
    smb ports = $BS_SMB_PORT
    interfaces = 127.0.0.1
    bind interfaces only = yes
    disable netbios = yes
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    private dir = $s/private
    lock directory = $s/lock
    state directory = $s/state
    cache directory = $s/cache
    pid directory = $s/pid
    ncalrpc dir = $s/ncalrpc
    log file = $BS_LOG_DIR/smbd.log
    max log size = 0
    log level = 1
    passdb backend = tdbsam:$s/private/passdb.tdb
    usershare path =
    map to guest = never
    kernel oplocks = no
    kernel share modes = no
    posix locking = yes
EOF
        for name in native coldtier; do
            [[ $name == native ]] && path="$BS_DATA/native" || path="$BS_DATA/ct-mnt"
            cat <<EOF

[$name]
    path = $path
    read only = no
    valid users = root
    store dos attributes = yes
    ea support = yes
EOF
        done
    } >"$s/smb.conf"
    printf '%s\n%s\n' "$BS_SMB_PASS" "$BS_SMB_PASS" | smbpasswd -c "$s/smb.conf" -a -s root >>"$BS_LOG_DIR/smbpasswd.log" 2>&1 \
        || _bs_die "smbpasswd -a root failed (see $BS_LOG_DIR/smbpasswd.log)"
    setsid smbd --foreground --no-process-group --debug-stdout -s "$s/smb.conf" \
        </dev/null >>"$BS_LOG_DIR/smbd.out" 2>&1 7>&- 8>&- 9>&- &
    BS_SMBD_PID=$!
    local t0=$SECONDS
    while ! { _bs_smbclient native "ls" >/dev/null 2>&1 && _bs_smbclient coldtier "ls" >/dev/null 2>&1; }; do
        kill -0 "$BS_SMBD_PID" 2>/dev/null || _bs_die "smbd exited at start: $(tail -n 5 "$BS_LOG_DIR/smbd.out" | tr '\n' ' ')"
        (( SECONDS - t0 < 90 )) || _bs_die "smbd did not serve both shares within 90 s (see $BS_LOG_DIR/smbd.out)"
        sleep 0.1
    done
}

_bs_smbclient() { # SHARE COMMANDS
    smbclient "//127.0.0.1/$1" -s "$BS_SRV/samba/smb.conf" -p "$BS_SMB_PORT" -U "root%$BS_SMB_PASS" -c "$2"
}

_bs_smb_stop() {
    [[ -n "${BS_SMBD_PID:-}" ]] || return 0
    kill -TERM -- "-$BS_SMBD_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 200); do kill -0 "$BS_SMBD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$BS_SMBD_PID" 2>/dev/null || true
    wait "$BS_SMBD_PID" 2>/dev/null || true
    BS_SMBD_PID=""
}

# ----------------------------------------------------------------------------
# measurements: each prints nothing, records seconds (or nan) and checks the result
# ----------------------------------------------------------------------------
_bs_m_nfs_read() { # TARGET REP
    local t="$1" r="$2" t0 t1 rc=0
    # The caches are dropped while ganesha is down: a handle it holds for a coldtier inode
    # that the kernel then forgets is stale, and the read fails (`Failed to read from
    # file`, NFS3ERR_STALE: docs/benchmarks.md). Both exports get the same.
    _bs_ganesha_stop
    _bs_drop_caches
    _bs_ganesha_start
    # (nfs-cp cannot write to /dev/null: "Failed to open /dev/null"; the bytes were
    # compared with the source once, in the warm-up)
    t0=$(_bs_now_us)
    _bs_tmo nfs-cat "$(_bs_nfs_url "$t" big.dat)" >/dev/null 2>"$BS_LOG_DIR/nfs-cat.err" || rc=$?
    t1=$(_bs_now_us)
    if [[ $rc -ne 0 ]]; then
        _bs_warn "nfs read ($t, rep $r) exit $rc: $(tail -n 2 "$BS_LOG_DIR/nfs-cat.err" | tr '\n' ' ')"
        _bs_record "$t" nfs_read "$r" nan
    else
        _bs_record "$t" nfs_read "$r" "$(_bs_secs $((t1 - t0)))"
        _bs_log "  $t: read through ganesha (NFSv3) $(_bs_secs $((t1 - t0))) s"
    fi
}

_bs_m_smb_read() { # TARGET REP
    local t="$1" r="$2" out t0 t1 rc=0
    _bs_drop_caches
    t0=$(_bs_now_us)
    out=$(_bs_tmo smbclient "//127.0.0.1/$t" -s "$BS_SRV/samba/smb.conf" -p "$BS_SMB_PORT" \
        -U "root%$BS_SMB_PASS" -c "get big.dat /dev/null" 2>&1) || rc=$?
    t1=$(_bs_now_us)
    if [[ $rc -ne 0 || "$out" != *"of size $BS_SIZE_BYTES as"* || "$out" == *NT_STATUS_* ]]; then
        _bs_warn "smb read ($t, rep $r) exit $rc: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
        _bs_record "$t" smb_read "$r" nan
    else
        _bs_record "$t" smb_read "$r" "$(_bs_secs $((t1 - t0)))"
        _bs_log "  $t: read through smbd $(_bs_secs $((t1 - t0))) s"
    fi
}

# _bs_m_list TARGET REP SERVER(nfs|smb) PHASE(cold|warm)
_bs_m_list() {
    local t="$1" r="$2" srv="$3" phase="$4" n t0 t1 rc=0 lst="$BS_LOG_DIR/list.$3.$1.txt"
    if [[ $phase == cold ]]; then
        # ganesha keeps its own cache of entries and attributes: a restart empties it. The
        # kernel's caches are dropped while it is down: a handle ganesha holds to a FUSE
        # inode the kernel then forgets is stale (NFS3ERR_STALE, see docs/benchmarks.md).
        if [[ $srv == nfs ]]; then
            _bs_ganesha_stop
            _bs_drop_caches
            _bs_ganesha_start
        else
            _bs_drop_caches
        fi
    fi
    t0=$(_bs_now_us)
    if [[ $srv == nfs ]]; then
        _bs_tmo nfs-ls "$(_bs_nfs_url "$t" list)" >"$lst" 2>&1 || rc=$?
    else
        _bs_tmo smbclient "//127.0.0.1/$t" -s "$BS_SRV/samba/smb.conf" -p "$BS_SMB_PORT" \
            -U "root%$BS_SMB_PASS" -c "cd list; ls" >"$lst" 2>&1 || rc=$?
    fi
    t1=$(_bs_now_us)
    n=$(grep -c ' f[0-9]\{6\}\.dat' "$lst" || true)
    if [[ $rc -ne 0 || "$n" -ne "$BENCH_SHARE_NFILES" ]]; then
        _bs_warn "$srv listing ($t, $phase, rep $r) exit $rc, $n of $BENCH_SHARE_NFILES entries: $(tail -n 2 "$lst" | tr '\n' ' ')"
        _bs_record "$t" "${srv}_list_$phase" "$r" nan
    else
        _bs_record "$t" "${srv}_list_$phase" "$r" "$(_bs_secs $((t1 - t0)))"
        _bs_log "  $t: $srv listing ($phase) $(_bs_secs $((t1 - t0))) s"
    fi
}

# ----------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------
_bs_report() {
    python3 - "$BS_META" "$BS_RAW" "$BS_WARN_FILE" <<'EOF'
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

size = int(meta["size_bytes"]); nfiles = int(meta["nfiles"])
MIB = 1048576.0
# key, label, kind ("read": MiB/s; "list": entries/s), target ratio coldtier/native or None
METRICS = [
    ("nfs_read", "Read 1 file of %s through ganesha (NFSv3, nfs-cat to /dev/null)" % iec(size), "read", None),
    ("smb_read", "Read 1 file of %s through smbd (smbclient get to /dev/null)" % iec(size), "read", None),
    ("nfs_list_cold", "List %d entries through ganesha (nfs-ls), after a cache drop" % nfiles, "list", 0.90),
    ("nfs_list_warm", "List %d entries through ganesha (nfs-ls), warm" % nfiles, "list", 0.90),
    ("smb_list_cold", "List %d entries through smbd (smbclient ls), after a cache drop" % nfiles, "list", 0.50),
    ("smb_list_warm", "List %d entries through smbd (smbclient ls), warm" % nfiles, "list", 0.50),
]

def med(t, m):
    vals = [v for v in samples.get((t, m), []) if not math.isnan(v)]
    return statistics.median(vals) if vals else None

def cell(t, m, kind):
    if (t, m) not in samples:
        return "n/a"
    v = med(t, m)
    if v is None:
        return "error"
    if kind == "read":
        return "%.2f s (%.0f MiB/s)" % (v, size / MIB / v)
    return "%.3f s (%.0f entries/s)" % (v, nfiles / v)

out = []
p = out.append
p("## coldtier file-server benchmark: %s" % meta.get("date", "?"))
p("")
p("- command: `%s`" % meta.get("cmdline", "?"))
for k in ("kernel", "machine", "filesystem", "coldtier", "coldtier_git", "coldtier_config", "ganesha", "samba", "libnfs"):
    if k in meta:
        p("- %s: %s" % (k.replace("_", " "), meta[k]))
p("- repetitions: %s (median shown), total run time %s" % (meta.get("repeat"), meta.get("duration", "?")))
p("- load average (1, 5, 15 min) at start: %s, at end: %s" % (meta.get("load_start", "?"), meta.get("load_end", "?")))
p("")
p("| Metric | native | coldtier | coldtier/native | Target | Result |")
p("|---|---:|---:|---:|---|---|")
npass = nfail = nt = 0
for key, label, kind, target in METRICS:
    n, c = med("native", key), med("coldtier", key)
    ratio = n / c if n is not None and c is not None and c > 0 else None
    row = [label, cell("native", key, kind), cell("coldtier", key, kind), "%.2f×" % ratio if ratio is not None else "n/a"]
    if target is None:
        row += ["—", "—"]
    else:
        nt += 1
        row.append("≥ %.2f× native" % target)
        verdict = "n/a" if ratio is None else ("PASS" if ratio >= target else "FAIL")
        if verdict == "PASS": npass += 1
        if verdict == "FAIL": nfail += 1
        row.append("**%s**" % verdict if verdict != "n/a" else verdict)
    p("| " + " | ".join(row) + " |")
p("")
p("coldtier/native = native seconds / coldtier seconds: the speed of the coldtier export "
  "relative to the native one (1.00× = as fast; below, slower). Every figure includes the "
  "client's own start, connection and (NFS) MOUNT or (SMB) session setup, the same for both "
  "exports. Reads and listings after a cache drop: page cache, dentries and inodes "
  "dropped (for ganesha while it is down: the restart empties its own cache of entries "
  "and handles); warm: the same listing again right after.")
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
p("| Metric | native | coldtier |")
p("|---|---|---|")
for key, label, kind, target in METRICS:
    cells = []
    for t in ("native", "coldtier"):
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
bench_share_main() {
    local args=("$@") quick=0 build=0 keep=0 strict=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --share) ;;
            --quick) quick=1 ;;
            --build) build=1 ;;
            --keep) keep=1 ;;
            --strict) strict=1 ;;
            -h|--help) _bs_usage; exit 0 ;;
            *) echo "bench --share: unknown argument: $1 (see --share --help)" >&2; exit 2 ;;
        esac
        shift
    done
    if [[ $quick -eq 1 ]]; then
        : "${BENCH_SHARE_SIZE:=64M}" "${BENCH_SHARE_NFILES:=1000}" "${BENCH_SHARE_REPEAT:=1}"
    fi
    : "${BENCH_SHARE_DIR:=/var/tmp/coldtier-bench-share}"
    : "${BENCH_SHARE_SIZE:=512M}"
    : "${BENCH_SHARE_NFILES:=10000}"
    : "${BENCH_SHARE_REPEAT:=5}"
    : "${BENCH_OP_TIMEOUT:=900}"
    : "${COLDTIER_BIN:=$REPO_ROOT/target/release/coldtier}"

    [[ $EUID -eq 0 ]] || _bs_die "run as root: dropping the page cache, mounting coldtier and running the servers need it"
    local v
    for v in BENCH_SHARE_NFILES BENCH_SHARE_REPEAT BENCH_OP_TIMEOUT; do
        [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -ge 1 ]] || _bs_die "$v must be a positive integer, got '${!v}'"
    done
    BS_SIZE_BYTES=$(numfmt --from=iec "$BENCH_SHARE_SIZE") || _bs_die "bad BENCH_SHARE_SIZE '$BENCH_SHARE_SIZE'"
    [[ $BS_SIZE_BYTES -ge 1 ]] || _bs_die "BENCH_SHARE_SIZE must be at least 1 byte"
    case "$BENCH_SHARE_DIR" in /?*) ;; *) _bs_die "BENCH_SHARE_DIR must be an absolute path other than /" ;; esac

    # dependencies (the servers' system services are kept off: scripts/lib/deps.sh)
    # shellcheck source=scripts/lib/deps.sh
    . "$SCRIPT_DIR/lib/deps.sh"
    command -v python3 >/dev/null 2>&1 || apt_install python3
    apt_install_services_off nfs-ganesha nfs-ganesha-vfs samba smbclient libnfs-utils
    ensure_fuse
    if [[ $build -eq 1 || ! -x "$COLDTIER_BIN" ]]; then
        ensure_rust
        _bs_log "building coldtier: (cd $REPO_ROOT && cargo build --release --locked)"
        (cd "$REPO_ROOT" && cargo build --release --locked >&2) || _bs_die "cargo build --release failed"
    fi
    [[ -x "$COLDTIER_BIN" ]] || _bs_die "coldtier binary not found at $COLDTIER_BIN"

    # work dir, lock, cleanup
    BS_DATA="$BENCH_SHARE_DIR/data"
    BS_SRV="$BENCH_SHARE_DIR/servers"
    BS_LOG_DIR="$BENCH_SHARE_DIR/logs"
    BS_RAW="$BENCH_SHARE_DIR/raw.tsv"
    BS_META="$BENCH_SHARE_DIR/meta.tsv"
    BS_RESULTS="$BENCH_SHARE_DIR/results.md"
    BS_KEEP=$keep
    BS_MOUNTED=0
    BS_WARN_FILE=""
    BS_SMB_PASS="coldtier-bench"
    BS_GANESHA_PID="" BS_SMBD_PID="" BS_RPCBIND_PID=""
    mkdir -p "$BENCH_SHARE_DIR"
    exec 7>&1 8>&2   # the real stdout/stderr, for the EXIT trap
    exec 9>"$BENCH_SHARE_DIR/.lock"
    flock -n 9 || _bs_die "another bench.sh --share run holds $BENCH_SHARE_DIR/.lock"
    # a run killed hard may have left the mount: we hold the lock, it is stale
    if mountpoint -q "$BS_DATA/ct-mnt" 2>/dev/null; then
        _bs_log "unmounting a stale mount from an earlier run: $BS_DATA/ct-mnt"
        BS_LOG_DIR="$BENCH_SHARE_DIR" _bs_umount || _bs_die "cannot unmount stale $BS_DATA/ct-mnt; unmount it by hand"
    fi
    rm -rf --one-file-system "$BS_DATA" "$BS_SRV" "$BS_LOG_DIR"
    mkdir -p "$BS_DATA/native" "$BS_DATA/ct-src" "$BS_SRV" "$BS_LOG_DIR"
    rm -f "$BS_RESULTS"
    : >"$BS_RAW"
    BS_WARN_FILE="$BENCH_SHARE_DIR/warnings.txt"
    : >"$BS_WARN_FILE"
    trap _bs_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local need_kib avail_kib
    need_kib=$(( (BS_SIZE_BYTES + BENCH_SHARE_NFILES * 4096) * 2 / 1024 + 1048576 ))
    avail_kib=$(df -Pk "$BENCH_SHARE_DIR" | awk 'NR==2 {print $4}')
    [[ $avail_kib -ge $need_kib ]] || _bs_die "not enough free space in $BENCH_SHARE_DIR: need ~$((need_kib / 1024)) MiB"

    local cmdline="" a
    for v in BENCH_SHARE_DIR BENCH_SHARE_SIZE BENCH_SHARE_NFILES BENCH_SHARE_REPEAT COLDTIER_BIN; do
        if printenv "$v" >/dev/null 2>&1; then cmdline+="$v=$(_bs_shq "$(printenv "$v")") "; fi
    done
    cmdline+="$(_bs_shq "$0")"
    for a in "${args[@]}"; do cmdline+=" $(_bs_shq "$a")"; done

    local start_us
    start_us=$(_bs_now_us)
    {
        printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        printf 'cmdline\t%s\n' "$cmdline"
        printf 'kernel\t%s\n' "$(kernel_desc)"
        printf 'machine\t%s x %s, %s RAM\n' "$(nproc)" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
            "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
        printf 'filesystem\t%s (both exports and the coldtier source on it)\n' \
            "$(df -PT "$BENCH_SHARE_DIR" | awk 'NR==2 {print $2 " on " $1 " (mounted on " $7 ")"}')"
        printf 'coldtier\t%s (%s, built %s)\n' "$("$COLDTIER_BIN" --version 2>/dev/null | head -n1)" "$COLDTIER_BIN" \
            "$(date -u -r "$COLDTIER_BIN" '+%Y-%m-%d %H:%M:%S UTC')"
        printf 'coldtier_git\t%s%s (of the source tree)\n' \
            "$(git -C "$REPO_ROOT" rev-parse --verify -q --short HEAD 2>/dev/null || echo '?')" \
            "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty worktree)')"
        printf 'coldtier_config\t[store] kind=posix, [policy] schedule=off, defaults otherwise (passthrough, readdirplus=always); all files resident\n'
        printf 'ganesha\tnfs-ganesha %s (FSAL_VFS, two exports, default Attr_Expiration_Time; clients: NFSv3)\n' \
            "$(dpkg-query -W -f='${Version}' nfs-ganesha 2>/dev/null)"
        printf 'samba\tsmbd %s (two shares, store dos attributes, ea support; smbclient %s, SMB3)\n' \
            "$(smbd --version 2>/dev/null | awk '{print $2}')" "$(dpkg-query -W -f='${Version}' smbclient 2>/dev/null)"
        printf 'libnfs\tlibnfs-utils %s\n' "$(dpkg-query -W -f='${Version}' libnfs-utils 2>/dev/null)"
        printf 'load_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'size_bytes\t%s\n' "$BS_SIZE_BYTES"
        printf 'nfiles\t%s\n' "$BENCH_SHARE_NFILES"
        printf 'repeat\t%s\n' "$BENCH_SHARE_REPEAT"
    } >"$BS_META"

    _bs_log "command: $cmdline"
    _bs_log "data: 1 x $BENCH_SHARE_SIZE and a directory of $BENCH_SHARE_NFILES files, twice (native, coldtier source); $BENCH_SHARE_REPEAT repetition(s)"
    _bs_make_data "$BS_DATA/native"
    cp -a "$BS_DATA/native/." "$BS_DATA/ct-src/"
    _bs_mount
    BS_NFS_PORT=$(tools_free_port); BS_MNT_PORT=$(tools_free_port); BS_SMB_PORT=$(tools_free_port)
    _bs_ganesha_start
    _bs_smb_start
    _bs_log "ganesha on 127.0.0.1:$BS_NFS_PORT (MOUNT $BS_MNT_PORT), smbd on 127.0.0.1:$BS_SMB_PORT; exports native and coldtier"
    sync

    # Unmeasured warm-up of the clients and both servers, and a check that the large file
    # reads back byte-identical through each.
    _bs_log "warm-up (unmeasured), checking the large file through each server and export"
    local t
    for t in native coldtier; do
        nfs-ls "$(_bs_nfs_url "$t" list)" >/dev/null 2>&1 || _bs_die "warm-up: nfs-ls of $t failed"
        _bs_smbclient "$t" "cd list; ls" >/dev/null 2>&1 || _bs_die "warm-up: smbclient ls of $t failed"
        nfs-cat "$(_bs_nfs_url "$t" big.dat)" 2>>"$BS_LOG_DIR/warmup.log" | cmp -s - "$BS_DATA/native/big.dat" \
            || _bs_die "warm-up: big.dat through ganesha ($t) differs from the source"
        _bs_smbclient "$t" "get big.dat $BS_DATA/smb-check.dat" >>"$BS_LOG_DIR/warmup.log" 2>&1 \
            && cmp -s "$BS_DATA/smb-check.dat" "$BS_DATA/native/big.dat" \
            || _bs_die "warm-up: big.dat through smbd ($t) differs from the source"
        rm -f "$BS_DATA/smb-check.dat"
    done

    local r
    for ((r = 1; r <= BENCH_SHARE_REPEAT; r++)); do
        _bs_log "rep $r/$BENCH_SHARE_REPEAT"
        # alternate which export goes first
        local order=(native coldtier)
        (( r % 2 == 0 )) && order=(coldtier native)
        for t in "${order[@]}"; do _bs_m_nfs_read "$t" "$r"; done
        for t in "${order[@]}"; do _bs_m_smb_read "$t" "$r"; done
        for t in "${order[@]}"; do _bs_m_list "$t" "$r" nfs cold; _bs_m_list "$t" "$r" nfs warm; done
        for t in "${order[@]}"; do _bs_m_list "$t" "$r" smb cold; _bs_m_list "$t" "$r" smb warm; done
    done
    printf 'duration\t%s s\n' "$(( ($(_bs_now_us) - start_us) / 1000000 ))" >>"$BS_META"
    printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$BS_META"

    local rc=0
    _bs_report >"$BS_RESULTS" || rc=$?
    [[ $rc -eq 0 || $rc -eq 3 ]] || _bs_die "report generation failed"
    echo
    cat "$BS_RESULTS"
    echo
    _bs_log "results saved to $BS_RESULTS (raw samples: $BS_RAW, logs: $BS_LOG_DIR)"
    [[ $strict -eq 1 && $rc -eq 3 ]] && return 1
    return 0
}

# shellcheck disable=SC2317  # invoked from the EXIT trap
_bs_cleanup() {
    local rc=$? leftover=0
    set +e
    exec 1>&7 2>&8
    trap - INT TERM
    # the servers first: ganesha's namespace holds the coldtier mount until it exits
    _bs_ganesha_stop
    _bs_smb_stop
    if [[ -n "${BS_RPCBIND_PID:-}" ]]; then
        kill "$BS_RPCBIND_PID" 2>/dev/null
        wait "$BS_RPCBIND_PID" 2>/dev/null
    fi
    if [[ ${BS_MOUNTED:-0} -eq 1 ]]; then
        _bs_umount || { echo "[bench-share] could not unmount $BS_DATA/ct-mnt" >&2; leftover=1; }
    fi
    if [[ ${BS_KEEP:-0} -eq 1 ]]; then
        echo "[bench-share] --keep: data left in $BS_DATA" >&2
    elif [[ $leftover -eq 0 ]]; then
        rm -rf --one-file-system "$BS_DATA" "$BS_SRV"
    else
        echo "[bench-share] NOT deleting $BS_DATA: something below it is still mounted" >&2
    fi
    [[ $rc -ne 0 ]] && echo "[bench-share] aborted (exit $rc); logs in $BS_LOG_DIR" >&2
}
