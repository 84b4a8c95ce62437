#!/usr/bin/env bash
# pjdfstest.sh - run the pjdfstest POSIX conformance suite (Rust port, crate
# `pjdfstest` 0.2.2) against any directory, and compare two result files
# (typically: a native directory vs. a coldtier FUSE mount).
#
#   scripts/pjdfstest.sh install
#       Build/install the pjdfstest binary (once) into $PJDFSTEST_ROOT
#       (default /opt/coldtier-tools) and create the dummy user/group the
#       suite switches to (`tests`; `nobody` is expected to exist).
#
#   scripts/pjdfstest.sh run DIR OUTFILE
#       Run every test of the suite, as root, inside a fresh scratch
#       directory under DIR. Writes one line per test to OUTFILE:
#           test_name<TAB>passed|failed|skipped<TAB>short reason
#       (sorted by name), keeps pjdfstest's raw output in OUTFILE.log, and
#       prints `pjdfstest DIR: N passed, N failed, N skipped`.
#       Exit status: 0 when OUTFILE was written (even if tests failed - use
#       `compare` to judge), 2 on usage/setup errors.
#       A test that hangs (no output for $PJDFSTEST_STALL_TIMEOUT s) or that
#       crashes pjdfstest is recorded as failed and the suite resumes after
#       it; the whole run is bounded by $PJDFSTEST_TIMEOUT s.
#
#   scripts/pjdfstest.sh compare NATIVE_RESULTS MOUNT_RESULTS
#       Prints every test whose status differs. Exits 1 if a test passes
#       natively but not (failed/skipped/missing) on the mount and is not
#       listed in tests/pjdfstest-known.txt; 0 otherwise; 2 on bad input.
#
# Environment knobs (all optional):
#   PJDFSTEST_ROOT           install root             (/opt/coldtier-tools)
#   PJDFSTEST_BIN            binary to use            ($PJDFSTEST_ROOT/bin/pjdfstest)
#   PJDFSTEST_TIMEOUT        bound for a whole run, s (900)
#   PJDFSTEST_STALL_TIMEOUT  no-progress limit, s     (60)
#   PJDFSTEST_NAPTIME        sleep between timestamp changes, s (0.01; must
#                            exceed the timestamp granularity of the fs)
#   PJDFSTEST_FEATURES       opt-in features          ("posix_fallocate utime_now utimensat rename_ctime")
#   PJDFSTEST_SECONDARY_FS   dir on another fs for the EXDEV tests
#                            (default: auto-pick among /dev/shm /run /tmp /var/tmp;
#                            "none" disables, the 2 exdev tests are then skipped)
#   PJDFSTEST_CONFIG         use this pjdfstest TOML config verbatim instead
#                            of the generated one (then NAPTIME/FEATURES are ignored)
#   PJDFSTEST_KNOWN          known-differences file   (<repo>/tests/pjdfstest-known.txt)
#
# The erofs tests are always skipped: they remount the file system holding DIR
# read-only (allow_remount), which is never safe here. The chflags and NFSv4
# ACL tests do not exist on Linux builds of the suite.
set -euo pipefail

readonly PJDFSTEST_VERSION=0.2.2
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_DIR
readonly ROOT="${PJDFSTEST_ROOT:-/opt/coldtier-tools}"
readonly BIN="${PJDFSTEST_BIN:-$ROOT/bin/pjdfstest}"
readonly KNOWN="${PJDFSTEST_KNOWN:-$REPO_DIR/tests/pjdfstest-known.txt}"
readonly RUN_TIMEOUT="${PJDFSTEST_TIMEOUT:-900}"
readonly STALL_TIMEOUT="${PJDFSTEST_STALL_TIMEOUT:-60}"
readonly NAPTIME="${PJDFSTEST_NAPTIME:-0.01}"
readonly FEATURES="${PJDFSTEST_FEATURES:-posix_fallocate utime_now utimensat rename_ctime}"
readonly TEST_USER=tests
readonly TEST_GROUP=tests

log() { printf 'pjdfstest.sh: %s\n' "$*" >&2; }
die() { printf 'pjdfstest.sh: error: %s\n' "$*" >&2; exit 2; }

usage() {
    cat >&2 <<EOF
usage: $0 install
       $0 run DIR OUTFILE
       $0 compare NATIVE_RESULTS MOUNT_RESULTS
(see the header of $0 for details and environment knobs)
EOF
    exit 2
}

# ---------------------------------------------------------------- cleanup ---
# Everything temporary is registered here and removed on any exit.
CLEANUP_PATHS=()   # removed with rm -rf (bounded by timeout)
CHILD_PID=""       # running pjdfstest (via timeout), killed on exit
WORK_DIR=""        # scratch dir inside the directory under test
FS_HUNG=0          # set when the filesystem under test stopped answering

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD_PID" ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 15; i++)); do
            kill -0 "$CHILD_PID" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$CHILD_PID" 2>/dev/null; then
            kill -KILL "$CHILD_PID" 2>/dev/null || true
            log "warning: pjdfstest (pid $CHILD_PID) did not exit; it is probably stuck in a hung filesystem request"
        fi
    fi
    local p
    for p in "${CLEANUP_PATHS[@]+"${CLEANUP_PATHS[@]}"}"; do
        if ((FS_HUNG)) && [[ "$p" == "$WORK_DIR" ]]; then
            # Any access would block (unkillably) like pjdfstest did.
            log "warning: left $p behind: its filesystem is hung"
            continue
        fi
        # Bounded, and never touch the paths from this shell itself (a
        # stat on a hung FUSE mount cannot be interrupted).
        timeout -k 5 60 rm -rf -- "$p" 2>/dev/null ||
            log "warning: could not remove $p"
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (the suite's privileged tests chown, mknod and switch users)"
}

# ---------------------------------------------------------------- install ---
installed_version_ok() {
    [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -qx "pjdfstest $PJDFSTEST_VERSION"
}

ensure_users() {
    # The default [dummy_auth] entries are the user `nobody` with its primary
    # group and the user `tests` with its primary group `tests`.
    getent passwd nobody >/dev/null ||
        die "user 'nobody' does not exist (it is part of base Debian; create it with: useradd --system --no-create-home --shell /usr/sbin/nologin nobody)"
    if ! getent group "$TEST_GROUP" >/dev/null; then
        groupadd --system "$TEST_GROUP"
        log "created group $TEST_GROUP"
    fi
    if ! getent passwd "$TEST_USER" >/dev/null; then
        useradd --system --gid "$TEST_GROUP" --no-create-home --home-dir / \
            --shell /usr/sbin/nologin --comment "Dummy user for pjdfstest" "$TEST_USER"
        log "created user $TEST_USER"
    fi
    [[ "$(id -gn "$TEST_USER")" == "$TEST_GROUP" ]] ||
        die "user $TEST_USER exists but its primary group is $(id -gn "$TEST_USER"), not $TEST_GROUP"
}

cmd_install() {
    [[ $# -eq 0 ]] || usage
    need_root
    if installed_version_ok; then
        log "pjdfstest $PJDFSTEST_VERSION already installed at $BIN"
    else
        command -v cargo >/dev/null || die "cargo not found in PATH (needed to build pjdfstest)"
        command -v cc >/dev/null || die "no C compiler/linker 'cc' found (apt-get install -y build-essential)"
        log "building pjdfstest $PJDFSTEST_VERSION into $ROOT (takes ~1.5 min on 2 cores)"
        local start=$SECONDS
        CARGO_TARGET_DIR="${CARGO_TARGET_DIR_PJDFSTEST:-/tmp/pjdfstest-build}" \
            cargo install "pjdfstest@$PJDFSTEST_VERSION" --locked --root "$ROOT" ||
            die "cargo install pjdfstest@$PJDFSTEST_VERSION failed"
        installed_version_ok || die "installed $BIN does not report version $PJDFSTEST_VERSION"
        log "installed $BIN in $((SECONDS - start)) s"
    fi
    ensure_users
    log "ready: $BIN; dummy users nobody:$(id -gn nobody) and $TEST_USER:$TEST_GROUP"
}

# -------------------------------------------------------------------- run ---
# Parse pjdfstest's stdout into "name<TAB>status<TAB>reason" lines, in the
# order the tests ran. The runner prints one line per finished test
# ("NAME<spaces>ok|FAILED|skipped|..."), followed by tab-indented details
# (skip reasons, the panic message of a failure; multi-line assertion
# messages continue unindented).
parse_raw() {
    awk '
    function flush() {
        if (name != "") {
            r = reason
            gsub(/[\t\r]/, " ", r); gsub(/  +/, " ", r)
            sub(/^ /, "", r); sub(/ $/, "", r)
            if (r == "") r = (status == "passed" ? "ok" : "no details")
            if (length(r) > 300) r = substr(r, 1, 297) "..."
            print name "\t" status "\t" r
        }
        name = ""; reason = ""; inbt = 0
    }
    /^[^ \t]+ +(ok|FAILED|skipped|PASSED UNEXPECTEDLY|failed as expected)$/ {
        flush()
        name = $1
        if ($0 ~ / ok$/) status = "passed"
        else if ($0 ~ / skipped$/) status = "skipped"
        else if ($0 ~ /PASSED UNEXPECTEDLY$/) { status = "passed"; reason = "passed but listed in expected_failures" }
        else status = "failed"
        next
    }
    /^Summary: / { flush(); next }
    /^Backtrace:/ { inbt = 1; next }
    name != "" && !inbt && NF > 0 {
        line = $0; sub(/^[ \t]+/, "", line)
        reason = (reason == "" ? line : reason " | " line)
    }
    END { flush() }'
}

# fstype of the filesystem holding a path (for the log only)
fstype_of() { findmnt -n -o FSTYPE -T "$1" 2>/dev/null || stat -f -c %T "$1" 2>/dev/null || echo unknown; }

# Run a command as the dummy user, without any supplementary group.
as_test_user() { setpriv --reuid="$TEST_USER" --regid="$TEST_GROUP" --clear-groups -- "$@" 2>/dev/null; }

pick_secondary_fs() {
    # Prints a fresh directory on a different filesystem than $1, or nothing.
    local dir=$1 dev cand
    case "${PJDFSTEST_SECONDARY_FS-}" in
    none) return 0 ;;
    "") ;;
    *)
        [[ -d "$PJDFSTEST_SECONDARY_FS" ]] || die "PJDFSTEST_SECONDARY_FS=$PJDFSTEST_SECONDARY_FS is not a directory"
        [[ "$(stat -c %d "$PJDFSTEST_SECONDARY_FS")" != "$(stat -c %d "$dir")" ]] ||
            die "PJDFSTEST_SECONDARY_FS=$PJDFSTEST_SECONDARY_FS is on the same filesystem as $dir"
        mktemp -d -p "$PJDFSTEST_SECONDARY_FS" pjdfstest-secondary.XXXXXX
        return 0
        ;;
    esac
    dev=$(stat -c %d "$dir")
    for cand in /dev/shm /run /tmp /var/tmp; do
        [[ -d "$cand" && -w "$cand" ]] || continue
        [[ "$(stat -c %d "$cand")" != "$dev" ]] || continue
        mktemp -d -p "$cand" pjdfstest-secondary.XXXXXX 2>/dev/null && return 0
    done
    return 0
}

write_config() {
    local cfg=$1 f
    local nobody_group
    nobody_group=$(id -gn nobody)
    {
        echo "# generated by scripts/pjdfstest.sh"
        echo "[features]"
        for f in $FEATURES; do echo "$f = {}"; done
        echo "[settings]"
        echo "naptime = $NAPTIME"
        echo "allow_remount = false"
        echo "[dummy_auth]"
        echo "entries = [[\"nobody\", \"$nobody_group\"], [\"$TEST_USER\", \"$TEST_GROUP\"]]"
    } >"$cfg"
}

# Ordered list of all test names of this binary: only needed to find out
# which test was running when pjdfstest hung or died, so it is computed
# lazily, by a complete run on a scratch dir under /tmp (a few seconds).
# Sets ALL_TESTS_FILE; returns 1 if that run did not complete.
ALL_TESTS_FILE=""
list_tests() {
    [[ -z "$ALL_TESTS_FILE" ]] || return 0
    local d
    d=$(mktemp -d /tmp/pjdfstest-list.XXXXXX)
    CLEANUP_PATHS+=("$d")
    chmod 755 "$d"
    mkdir -m 755 "$d/work"
    (cd "$d" && exec env NO_COLOR=1 RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
        timeout -k 10 300 "$BIN" -c "$CFG" -p "$d/work" >"$d/raw" 2>&1 </dev/null) || true
    if ! grep -q '^Summary: ' "$d/raw"; then
        log "could not list the suite's tests: a reference run on $d/work did not complete"
        return 1
    fi
    parse_raw <"$d/raw" | cut -f1 >"$d/list"
    ALL_TESTS_FILE="$d/list"
}

cmd_run() {
    [[ $# -eq 2 ]] || usage
    local dir=$1 out=$2
    need_root
    installed_version_ok || die "pjdfstest $PJDFSTEST_VERSION not found at $BIN; run: $0 install"
    { getent passwd "$TEST_USER" >/dev/null && getent passwd nobody >/dev/null; } ||
        die "dummy users missing; run: $0 install"
    [[ -d "$dir" ]] || die "$dir is not a directory"
    dir=$(cd "$dir" && pwd -P)
    [[ "$RUN_TIMEOUT" =~ ^[0-9]+$ && "$STALL_TIMEOUT" =~ ^[0-9]+$ ]] ||
        die "PJDFSTEST_TIMEOUT and PJDFSTEST_STALL_TIMEOUT must be integers (seconds)"
    local outdir
    outdir=$(dirname -- "$out")
    [[ -d "$outdir" && -w "$outdir" ]] || die "cannot write $out (directory $outdir missing or not writable)"
    out="$(cd "$outdir" && pwd -P)/$(basename -- "$out")"
    case "$out/" in "$dir"/*) die "OUTFILE must not be inside the directory under test" ;; esac

    local tmp
    tmp=$(mktemp -d /tmp/pjdfstest-run.XXXXXX)
    CLEANUP_PATHS+=("$tmp")

    if [[ -n "${PJDFSTEST_CONFIG-}" ]]; then
        [[ -r "$PJDFSTEST_CONFIG" ]] || die "PJDFSTEST_CONFIG=$PJDFSTEST_CONFIG is not readable"
        CFG=$PJDFSTEST_CONFIG
    else
        CFG="$tmp/pjdfstest.toml"
        write_config "$CFG"
    fi

    # Scratch dir inside DIR so nothing is left in DIR itself even if
    # pjdfstest is killed; removed on exit.
    local work dir_dev
    dir_dev=$(stat -c %d "$dir")
    work=$(mktemp -d -p "$dir" pjdfstest.XXXXXX) || die "cannot create a scratch directory in $dir (read-only? full?)"
    WORK_DIR=$work
    CLEANUP_PATHS+=("$work")
    chmod 755 "$work"

    # Many tests switch to the dummy users and need to reach the scratch dir:
    # DIR and all its parents must be searchable by them (mktemp -d makes 0700
    # dirs; a FUSE mount without allow_other is not reachable either).
    if ! as_test_user test -x "$work"; then
        if ! as_test_user test -x "$dir" && as_test_user test -x "$(dirname "$dir")"; then
            log "note: $dir was not searchable by others; running chmod go+x on it"
            chmod go+x "$dir"
        fi
        as_test_user test -x "$work" ||
            die "user $TEST_USER cannot reach $work: $dir and all its parent directories must be searchable by others (chmod go+x), and a FUSE mount needs -o allow_other"
    fi

    local sfs
    sfs=$(pick_secondary_fs "$dir")
    if [[ -n "$sfs" ]]; then
        CLEANUP_PATHS+=("$sfs")
        chmod 755 "$sfs"
    fi

    local fstype
    fstype=$(fstype_of "$dir")
    log "running pjdfstest $PJDFSTEST_VERSION in $dir ($fstype); secondary fs: ${sfs:-none}; timeout ${RUN_TIMEOUT}s, stall limit ${STALL_TIMEOUT}s"

    local rawlog="$out.log"
    : >"$rawlog"
    : >"$tmp/results"          # accumulated parsed results (run order)
    local deadline=$((SECONDS + RUN_TIMEOUT))
    local attempt=0 complete=0
    local -a todo=()           # empty = the whole suite (first attempt)

    while :; do
        attempt=$((attempt + 1))
        local left=$((deadline - SECONDS))
        local chunk="$tmp/raw.$attempt"
        # Created here: the background job below opens it asynchronously, and the
        # watchdog must not stat it before that (a race that shows under load).
        : >"$chunk"
        local -a sargs=()
        [[ -n "$sfs" ]] && sargs=(-s "$sfs")
        local -a pats=()
        # -e matches the full internal names, which carry this prefix
        # (stripped from what the runner prints).
        ((${#todo[@]})) && pats=(-e -- "${todo[@]/#/pjdfstest::tests::}")
        (
            cd "$work"
            exec env NO_COLOR=1 RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
                timeout -k 10 "$left" "$BIN" -c "$CFG" -p "$work" "${sargs[@]+"${sargs[@]}"}" "${pats[@]+"${pats[@]}"}"
        ) >"$chunk" 2>"$chunk.stderr" </dev/null &
        CHILD_PID=$!

        # Watchdog: pjdfstest prints a line as each test finishes.
        local last_size=-1 last_change=$SECONDS stalled=0 size
        while kill -0 "$CHILD_PID" 2>/dev/null; do
            size=$(stat -c %s "$chunk" 2>/dev/null || echo 0)
            if [[ "$size" != "$last_size" ]]; then
                last_size=$size
                last_change=$SECONDS
            elif ((SECONDS - last_change >= STALL_TIMEOUT)); then
                stalled=1
                log "no progress for ${STALL_TIMEOUT}s: killing pjdfstest"
                kill -TERM "$CHILD_PID" 2>/dev/null || true
                break
            fi
            sleep 1
        done
        local stuck=0 rc=0 i
        if ((stalled)); then
            # timeout(1) forwards the TERM and sends KILL 10 s later.
            for ((i = 0; i < 30; i++)); do
                kill -0 "$CHILD_PID" 2>/dev/null || break
                sleep 1
            done
            if kill -0 "$CHILD_PID" 2>/dev/null; then
                stuck=1
                FS_HUNG=1
                log "pjdfstest does not die even on SIGKILL: it is blocked in a filesystem request that never completes (hung FUSE daemon?)"
                if [[ -d /sys/fs/fuse/connections/$((((dir_dev >> 12) & 0xfff00) | (dir_dev & 0xff))) ]]; then
                    log "hint: if $dir is a FUSE mount, 'echo 1 > /sys/fs/fuse/connections/$((((dir_dev >> 12) & 0xfff00) | (dir_dev & 0xff)))/abort' unblocks it"
                fi
            fi
        fi
        if ((!stuck)); then
            wait "$CHILD_PID" && rc=0 || rc=$?
            CHILD_PID=""
        fi

        {
            printf '===== attempt %d%s: exit status %s%s\n' "$attempt" \
                "${todo[0]:+ (resuming at ${todo[0]})}" "$( ((stuck)) && echo '?' || echo "$rc")" \
                "$(if ((stalled)); then echo ', killed after no progress'; fi)"
            cat "$chunk"
            if [[ -s "$chunk.stderr" ]]; then
                echo "----- stderr"
                cat "$chunk.stderr"
            fi
        } >>"$rawlog"
        parse_raw <"$chunk" >>"$tmp/results"

        if grep -q '^Summary: ' "$chunk" && ((!stalled)); then
            complete=1
            break
        fi
        if ((!stalled)) && ((rc != 124)) && [[ ! -s "$tmp/results" ]] && ((attempt == 1)); then
            # Died before running a single test: a setup problem, not a test result.
            sed 's/^/    /' "$chunk.stderr" "$chunk" | head -20 >&2
            die "pjdfstest exited with status $rc before running any test (see $rawlog)"
        fi

        # Which test was running? The first one of the suite's order that
        # has no result yet.
        local why
        if ((stuck)); then
            why="hung: no progress for ${STALL_TIMEOUT}s and pjdfstest unkillable (blocked in the filesystem)"
        elif ((stalled)); then
            why="hung: no progress for ${STALL_TIMEOUT}s, pjdfstest killed"
        elif ((rc == 124)); then
            why="killed: whole-run timeout of ${RUN_TIMEOUT}s reached while it ran"
        elif ((rc > 128)); then
            why="crashed: pjdfstest died of signal $((rc - 128)) during this test"
        else
            why="crashed: pjdfstest exited with status $rc during this test without reporting it"
        fi
        cut -f1 "$tmp/results" | sort -u >"$tmp/done"
        if ! list_tests; then
            log "cannot tell which test was running ($why); stopping"
            printf '%s\tfailed\t%s\n' "pjdfstest::unidentified" "$why (test unidentified; the suite was aborted)" >>"$tmp/results"
            break
        fi
        mapfile -t todo < <(awk 'NR == FNR { done[$0] = 1; next } !($0 in done)' "$tmp/done" "$ALL_TESTS_FILE")
        ((${#todo[@]})) || { complete=1; break; }
        log "${todo[0]}: $why"
        printf '%s\tfailed\t%s\n' "${todo[0]}" "$why" >>"$tmp/results"
        todo=("${todo[@]:1}")
        ((${#todo[@]})) || { complete=1; break; }
        if ((stuck)) || ((rc == 124)) || ((SECONDS >= deadline - 5)); then
            local reason="not run: the suite was aborted (previous test hung/timed out)"
            printf '%s\tfailed\t'"$reason"'\n' "${todo[@]}" >>"$tmp/results"
            log "aborting: ${#todo[@]} remaining tests recorded as failed"
            break
        fi
        log "resuming with the ${#todo[@]} remaining tests"
    done

    # Safety net: every test of the suite must have a result.
    if [[ -n "$ALL_TESTS_FILE" ]]; then
        cut -f1 "$tmp/results" | sort -u >"$tmp/done"
        awk 'NR == FNR { done[$0] = 1; next } !($0 in done) { print $0 "\tfailed\tno result reported by pjdfstest" }' \
            "$tmp/done" "$ALL_TESTS_FILE" >>"$tmp/results"
    fi

    # One line per test, sorted by name (the first result wins if a test was
    # somehow reported twice).
    LC_ALL=C sort -t $'\t' -k1,1 -s "$tmp/results" | awk -F'\t' '!seen[$1]++' >"$tmp/final"
    mv -f "$tmp/final" "$out"
    local np nf ns
    np=$(awk -F'\t' '$2 == "passed"' "$out" | wc -l)
    nf=$(awk -F'\t' '$2 == "failed"' "$out" | wc -l)
    ns=$(awk -F'\t' '$2 == "skipped"' "$out" | wc -l)
    ((complete)) || log "warning: the run was incomplete (see $rawlog)"
    log "results: $out (raw output: $rawlog)"
    echo "pjdfstest $dir: $np passed, $nf failed, $ns skipped"
}

# ---------------------------------------------------------------- compare ---
check_results_file() {
    local f=$1
    [[ -r "$f" ]] || die "cannot read results file $f"
    [[ -s "$f" ]] || die "results file $f is empty"
    local bad
    bad=$(awk -F'\t' 'NF < 2 || $2 !~ /^(passed|failed|skipped)$/ { print FNR ": " $0; exit }' "$f")
    [[ -z "$bad" ]] || die "$f is not a pjdfstest.sh results file (line $bad)"
}

cmd_compare() {
    [[ $# -eq 2 ]] || usage
    local native=$1 mount=$2
    check_results_file "$native"
    check_results_file "$mount"
    local known_list
    known_list=$(mktemp /tmp/pjdfstest-known.XXXXXX)
    CLEANUP_PATHS+=("$known_list")
    if [[ -f "$KNOWN" ]]; then
        sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$KNOWN" | grep -v '^$' >"$known_list" || true
    else
        log "note: no known-differences file at $KNOWN"
    fi

    # Join on test name; a test missing from one side counts as "missing".
    awk -F'\t' -v known="$known_list" '
    BEGIN {
        while ((getline k < known) > 0) isknown[k] = 1
    }
    FNR == NR { ns[$1] = $2; nr[$1] = $3; names[$1] = 1; next }
    { ms[$1] = $2; mr[$1] = $3; names[$1] = 1 }
    END {
        ndiff = 0; nreg = 0; nknown = 0; nimp = 0
        n = 0
        for (t in names) list[++n] = t
        # insertion sort keeps this awk-portable (mawk has no asort)
        for (i = 2; i <= n; i++) { v = list[i]; j = i - 1
            while (j > 0 && list[j] > v) { list[j + 1] = list[j]; j-- }
            list[j + 1] = v }
        for (i = 1; i <= n; i++) {
            t = list[i]
            a = (t in ns) ? ns[t] : "missing"
            b = (t in ms) ? ms[t] : "missing"
            if (a == b) {
                if (t in isknown && a == "passed") stale[++nstale] = t
                continue
            }
            ndiff++
            tag = "DIFF"
            if (a == "passed") {
                if (t in isknown) { tag = "KNOWN"; nknown++ } else { tag = "REGRESSION"; nreg++ }
            } else if (b == "passed") { tag = "BETTER"; nimp++ }
            why = (b != "passed" && b != "missing") ? mr[t] : ((a != "passed" && a != "missing") ? "native: " nr[t] : "")
            printf "%-10s %-60s native=%-7s mount=%-7s %s\n", tag, t, a, b, why
        }
        for (k in isknown) if (!(k in names)) printf "note: known entry %s is not a test name in either results file\n", k
        for (i = 1; i <= nstale; i++) printf "note: known entry %s now passes on the mount; remove it from the known list\n", stale[i]
        printf "pjdfstest compare: %d tests differ: %d regressions (pass natively, not on the mount), %d known, %d better on the mount, %d other\n", ndiff, nreg, nknown, nimp, ndiff - nreg - nknown - nimp
        exit (nreg > 0 ? 1 : 0)
    }' "$native" "$mount"
}

# ------------------------------------------------------------------- main ---
[[ $# -ge 1 ]] || usage
cmd=$1
shift
case "$cmd" in
install) cmd_install "$@" ;;
run) cmd_run "$@" ;;
compare) cmd_compare "$@" ;;
-h | --help | help) usage ;;
*) log "unknown command: $cmd"; usage ;;
esac
