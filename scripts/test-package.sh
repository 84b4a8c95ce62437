#!/usr/bin/env bash
# The package test: builds the .deb (scripts/package.sh) and installs it with apt into a
# clean Debian 12 root (debootstrap --variant=minbase, no Rust in it), so that apt has to
# resolve the package's Depends from the archive. Then, in that chroot:
#   coldtier --version and --help (completions and manpage listed);
#   every file the package installs: present, root's, writable by nobody else;
#   the conffile; the mount helper; the bash completions load;
#   man -w for every page, each page rendered by man without a warning, with EXIT STATUS,
#   FILES, ENVIRONMENT, EXAMPLES, and a SEE ALSO whose pages all exist;
#   systemd-analyze verify of the unit and of an instance (it checks that ExecStart's
#   binary and the Documentation= man pages exist);
#   the unit's assertion: an instance without its config fails, one with it passes;
#   apt-get purge removes the package's files and leaves the admin's config.
# The minbase root is cached as a tarball in /var/cache/coldtier-test (COLDTIER_TEST_CACHE),
# and the .debs apt downloads into it beside, so a second run needs no debootstrap.
# Usage: scripts/test-package.sh [--dev | DEB]
#   default: build the release package (scripts/package.sh: cargo build --release, minutes
#   the first time); --dev: package the dev-profile build instead (scripts/package.sh --dev:
#   what scripts/test.sh does, right after its own build); DEB: test that package.
# Needs root (debootstrap, chroot, mounts) and deb.debian.org (COLDTIER_TEST_MIRROR).
set -euo pipefail
# A command that fails under set -e says where, instead of ending the script silently.
trap 'echo "error: scripts/test-package.sh: line $LINENO: exit $?" >&2' ERR
# shellcheck disable=SC2016 # dpkg-query -f formats: ${Package} is dpkg's, not the shell's
cd "$(dirname "$0")/.."
# shellcheck source=lib/deps.sh
. scripts/lib/deps.sh

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap, chroot and mounts need it"
t0=$SECONDS
mirror=${COLDTIER_TEST_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
cache=${COLDTIER_TEST_CACHE:-/var/cache/coldtier-test}
tarball="$cache/$suite-minbase.tar.zst"

deb=${1:-}
case "$deb" in
    "") deb=$(scripts/package.sh) ;;
    --dev) deb=$(scripts/package.sh --dev) ;;
esac
[ -f "$deb" ] || die "no package at $deb"
deb=$(readlink -f "$deb")
version=$(dpkg-deb --field "$deb" Version)
log "testing $(basename "$deb") in a clean $suite root"

apt_install debootstrap zstd
mkdir -p "$cache/archives/partial"
chmod 0755 "$cache"
if [ ! -f "$tarball" ]; then
    log "debootstrap --variant=minbase $suite (cached in $tarball)"
    fresh=$(mktemp -d /var/tmp/coldtier-debootstrap.XXXXXX)
    if ! debootstrap --variant=minbase --cache-dir="$cache/archives" "$suite" "$fresh/root" "$mirror" >"$fresh/log" 2>&1; then
        tail -n 30 "$fresh/log" >&2
        rm -rf --one-file-system "$fresh"
        die "debootstrap failed"
    fi
    tar --zstd -C "$fresh/root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf --one-file-system "$fresh"
fi

work=$(mktemp -d /var/tmp/coldtier-pkgtest.XXXXXX)
root="$work/root"
mounts=()
cleanup() {
    local i ok=1
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || ok=0
    done
    # Never delete through a mount that is still there (/dev is bound into the root).
    if [ "$ok" = 1 ] && ! grep -q " $work/" /proc/self/mounts; then
        rm -rf --one-file-system "$work"
    else
        echo "warning: left $work (something is still mounted there)" >&2
    fi
}
trap cleanup EXIT
bind() { # bind SOURCE TARGET (in the root)
    mkdir -p "$root$2"
    mount --bind "$1" "$root$2"
    mounts+=("$root$2")
}
mkdir -p "$root"
tar --zstd -C "$root" -xf "$tarball"
mkdir -p "$root/proc" "$root/sys"
mount -t proc proc "$root/proc"
mounts+=("$root/proc")
mount -t sysfs -o ro sysfs "$root/sys"
mounts+=("$root/sys")
bind /dev /dev
bind "$cache/archives" /var/cache/apt/archives
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No service starts in the chroot (the usual policy-rc.d of build roots).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "$deb" "$root/tmp/coldtier.deb"

in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
fail() { die "package test: $*"; }

log "apt-get install ./coldtier.deb (apt resolves its Depends)"
in_root apt-get update -qq
before=$(in_root dpkg-query -W -f='${Package}\n' | sort)
in_root apt-get install -y -qq --no-install-recommends /tmp/coldtier.deb >"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; fail "apt-get install of the package failed"; }
after=$(in_root dpkg-query -W -f='${Package}\n' | sort)
log "installed with it: $(comm -13 <(echo "$before") <(echo "$after") | tr '\n' ' ')"
in_root dpkg-query -W -f='${Status}' coldtier | grep -q "install ok installed" || fail "coldtier is not installed"
in_root dpkg-query -W -f='${Status}' fuse3 | grep -q "install ok installed" || fail "fuse3 (a Depends) was not installed"
! in_root sh -c 'command -v cargo || command -v rustc' >/dev/null || fail "the root has Rust in it"

# The binary runs: its libraries are there.
got=$(in_root coldtier --version)
[ "$got" = "coldtier ${version%-*}" ] || fail "coldtier --version: $got"
help=$(in_root coldtier --help)
for word in mount migrate status completions manpage; do
    grep -qE "^  $word " <<<"$help" || fail "coldtier --help does not list $word: $help"
done
in_root coldtier migrate --help | grep -q -- '--dry-run' || fail "coldtier migrate --help"

# Every installed file: present, root's, writable by its owner alone.
in_root dpkg -L coldtier >"$work/files"
n=0
while IFS= read -r f; do
    [ -e "$root$f" ] || [ -L "$root$f" ] || fail "$f is listed but missing"
    [ -L "$root$f" ] && continue
    perms=$(stat -c '%U:%G %A' "$root$f")
    case "$perms" in
        root:root\ ?????-??-?) ;;
        *) fail "$f: $perms (want root:root, writable by its owner only)" ;;
    esac
    n=$((n + 1))
done <"$work/files"
bad=$(find "$root/usr/bin/coldtier" "$root/usr/sbin/mount.fuse.coldtier" "$root/lib/systemd/system" \
    "$root/etc/coldtier" "$root/usr/share/doc/coldtier" "$root/usr/share/man" -perm -o+w ! -type l)
[ -z "$bad" ] || fail "writable by others: $bad"
for f in /usr/bin/coldtier /usr/sbin/mount.fuse.coldtier /lib/systemd/system/coldtier@.service \
    /etc/coldtier/coldtier.toml.example /usr/share/man/man1/coldtier.1.gz \
    /usr/share/man/man1/coldtier-migrate.1.gz /usr/share/man/man1/coldtier-catalog-rebuild.1.gz \
    /usr/share/man/man5/coldtier.toml.5.gz /usr/share/bash-completion/completions/coldtier \
    /usr/share/zsh/vendor-completions/_coldtier /usr/share/fish/vendor_completions.d/coldtier.fish \
    /usr/share/doc/coldtier/copyright /usr/share/doc/coldtier/README.md \
    /usr/share/doc/coldtier/operations.md; do
    grep -qxF "$f" "$work/files" || fail "the package does not install $f"
done
in_root dpkg-query -W -f='${Conffiles}' coldtier | grep -q '/etc/coldtier/coldtier.toml.example' ||
    fail "the example config is not a conffile"
[ -x "$root/sbin/mount.fuse.coldtier" ] || fail "mount(8) looks in /sbin: no mount.fuse.coldtier there"
if in_root mount.fuse.coldtier >/dev/null 2>"$work/helper"; then fail "the mount helper without arguments succeeded"; fi
grep -q usage "$work/helper" || fail "the mount helper: $(cat "$work/helper")"
in_root bash -c '. /usr/share/bash-completion/completions/coldtier && complete -p coldtier' >/dev/null ||
    fail "the bash completions do not load"
grep -q "ExecStart=/usr/bin/coldtier mount --foreground --config /etc/coldtier/%i.toml" \
    "$root/lib/systemd/system/coldtier@.service" || fail "the unit's ExecStart"
log "$n files installed, all root's and writable by root alone"

log "apt-get install man-db systemd (to read the pages and check the unit)"
in_root apt-get install -y -qq --no-install-recommends man-db systemd >"$work/apt2.log" 2>&1 ||
    { cat "$work/apt2.log" >&2; fail "apt-get install man-db systemd"; }

# The man pages: found by name, rendered without a warning, with the sections.
pages=$(grep -E '^/usr/share/man/man[15]/.*\.gz$' "$work/files")
for f in $pages; do
    base=$(basename "$f" .gz)
    name=${base%.*} section=${base##*.}
    where=$(in_root man -w "$section" "$name") || fail "man -w $section $name"
    [ "$where" = "$f" ] || fail "man -w $section $name: $where"
    in_root env MANWIDTH=200 man --warnings "$section" "$name" >"$work/page" 2>"$work/warnings" ||
        fail "man $section $name failed: $(cat "$work/warnings")"
    [ ! -s "$work/warnings" ] || fail "man $section $name warns: $(cat "$work/warnings")"
    for heading in NAME SYNOPSIS DESCRIPTION FILES EXAMPLES "SEE ALSO"; do
        grep -q "^$heading" "$work/page" || fail "$name($section) has no $heading"
    done
    if [ "$section" = 1 ]; then
        for heading in OPTIONS "EXIT STATUS" ENVIRONMENT; do
            grep -q "^$heading" "$work/page" || fail "$name($section) has no $heading"
        done
    fi
    # Every page SEE ALSO names is installed.
    refs=$(sed -n '/^SEE ALSO/,/^[A-Z]/p' "$work/page" | grep -oE '[a-z][a-z.-]*\([0-9]\)' || true)
    [ -n "$refs" ] || fail "$name($section): SEE ALSO names no page"
    for ref in $refs; do
        ref_section=${ref#*(}
        in_root man -w "${ref_section%)}" "${ref%(*}" >/dev/null 2>&1 ||
            fail "$name($section) names $ref, which is not installed"
    done
done
log "$(wc -w <<<"$pages") man pages: found by man -w, no warnings, every SEE ALSO installed"

# The unit: no warning from verify (it checks ExecStart's binary and the man: pages exist).
for unit in coldtier@.service coldtier@srv-share.service; do
    if ! in_root env SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$unit" >"$work/verify" 2>&1 ||
        grep -q coldtier "$work/verify"; then
        fail "systemd-analyze verify $unit: $(cat "$work/verify")"
    fi
done
# A mistyped instance fails loudly (an assertion), one with its config passes.
if in_root systemd-analyze condition --unit coldtier@srv-shaer.service >"$work/cond" 2>&1; then
    fail "coldtier@srv-shaer.service (no config) passes its start conditions: $(cat "$work/cond")"
fi
grep -q "AssertPathExists=/etc/coldtier/srv-shaer.toml failed" "$work/cond" ||
    fail "no failed assertion naming the missing config: $(cat "$work/cond")"
install -m 0600 "$root/etc/coldtier/coldtier.toml.example" "$root/etc/coldtier/srv-share.toml"
in_root systemd-analyze condition --unit coldtier@srv-share.service >"$work/cond" 2>&1 ||
    fail "coldtier@srv-share.service with its config fails: $(cat "$work/cond")"
log "systemd-analyze verify: clean; a missing config fails the unit's assertion"

# Purge: the package's files go, the admin's config stays.
in_root apt-get purge -y -qq coldtier >"$work/apt3.log" 2>&1 || { cat "$work/apt3.log" >&2; fail "apt-get purge coldtier"; }
for f in /usr/bin/coldtier /lib/systemd/system/coldtier@.service /etc/coldtier/coldtier.toml.example; do
    [ ! -e "$root$f" ] || fail "$f is still there after purge"
done
[ -f "$root/etc/coldtier/srv-share.toml" ] || fail "purge removed the admin's /etc/coldtier/srv-share.toml"

log "package test passed ($((SECONDS - t0)) s): $(basename "$deb"), $(du -h "$deb" | cut -f1)"
