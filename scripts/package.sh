#!/usr/bin/env bash
# Builds the Debian package of coldtier, for Debian 12 (bookworm):
#   cargo build --release --locked, then a staged tree packed by dpkg-deb.
# Usage: scripts/package.sh [--out DIR] [--dev | --binary FILE]
#   --out DIR      where the .deb goes (default: TARGET_DIR/debian, TARGET_DIR being cargo's;
#                  with --dev, TARGET_DIR/debian-dev)
#   --dev          package the dev-profile build (cargo build --locked: unoptimized, but
#                  no release build; for tests: scripts/test.sh uses it)
#   --binary FILE  package this coldtier binary instead of building one
# Prints the path of the .deb on stdout. Install it with
#   apt-get install ./coldtier_VERSION_ARCH.deb   (or dpkg -i, then apt-get install -f)
#
# What it installs:
#   /usr/bin/coldtier                          the binary, stripped of debug info
#   /usr/sbin/mount.fuse.coldtier              mount(8) helper: mount -t fuse.coldtier, fstab
#   /lib/systemd/system/coldtier@.service      the unit, ExecStart=/usr/bin/coldtier ...
#   /etc/coldtier/coldtier.toml.example        every config key, explained (a conffile)
#   /usr/share/man/man1/coldtier*.1.gz         one page per command: coldtier-migrate(1) ...
#   /usr/share/man/man5/coldtier.toml.5.gz     the config file, made from the example
#   bash, zsh and fish completions             in the shells' Debian vendor directories
#   /usr/share/doc/coldtier/                   copyright, README.md, docs/*.md
# Depends: fuse3; procps (/bin/kill, the unit's ExecReload=: not in a minimal Debian); and
# the shared libraries the binary links (dpkg-shlibdeps).
# Nothing is started or enabled: a mount is `systemctl enable --now coldtier@NAME`.
# Removing or purging the package leaves /var/lib/coldtier (the catalogs) alone.
set -euo pipefail
# A command that fails under set -e says where, instead of ending the script silently.
trap 'echo "error: scripts/package.sh: line $LINENO: exit $?" >&2' ERR
cd "$(dirname "$0")/.."
# shellcheck source=lib/deps.sh
. scripts/lib/deps.sh

out="" binary="" profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --dev) profile=dev; shift ;;
        --binary) binary=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see scripts/package.sh --help)" ;;
    esac
done

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null 2>&1 && continue
    # dpkg-shlibdeps is in dpkg-dev, strip in binutils.
    apt_install dpkg-dev binutils gzip
    break
done

if [ -z "$binary" ]; then
    ensure_rust
    target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    if [ "$profile" = release ]; then
        log "building coldtier (cargo build --release --locked)"
        cargo build --release --locked >&2
        binary="$target_dir/release/coldtier"
    else
        log "building coldtier (cargo build --locked: the dev profile)"
        cargo build --locked --bin coldtier >&2
        binary="$target_dir/debug/coldtier"
    fi
fi
[ -x "$binary" ] || die "no coldtier binary at $binary"
if [ -z "$out" ]; then
    target_dir=${target_dir:-$(cargo metadata --format-version 1 --no-deps --locked |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
    out="$target_dir/debian"
    # A dev-profile package never lands where a release one is expected.
    [ "$profile" = release ] || out="$target_dir/debian-dev"
fi
mkdir -p "$out"

version=$("$binary" --version | awk '{print $2}')
[ -n "$version" ] || die "$binary --version printed no version"
cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "$version" = "$cargo_version" ] || die "$binary is version $version, Cargo.toml says $cargo_version: build it again"
deb_version="$version-1"
arch=$(dpkg --print-architecture)
maintainer=${COLDTIER_DEB_MAINTAINER:-"$(git config user.name 2>/dev/null || echo coldtier maintainers) <$(git config user.email 2>/dev/null || echo root@localhost)>"}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
umask 022
root="$stage/root"
mkdir -p "$root/DEBIAN"

log "staging coldtier $deb_version ($arch)"
install -D -m 0755 "$binary" "$root/usr/bin/coldtier"
# The release profile keeps line tables for backtraces (debug = 1): not in the package.
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/coldtier"
install -D -m 0755 scripts/mount.fuse.coldtier "$root/usr/sbin/mount.fuse.coldtier"

# The unit as shipped names /usr/local/bin (a hand install); the package's binary is in /usr/bin.
install -d -m 0755 "$root/lib/systemd/system"
sed 's#/usr/local/bin/coldtier#/usr/bin/coldtier#g' systemd/coldtier@.service \
    >"$root/lib/systemd/system/coldtier@.service"
chmod 0644 "$root/lib/systemd/system/coldtier@.service"
grep -q '^ExecStart=/usr/bin/coldtier ' "$root/lib/systemd/system/coldtier@.service" ||
    die "coldtier@.service: ExecStart does not name /usr/bin/coldtier"

install -D -m 0644 systemd/coldtier.example.toml "$root/etc/coldtier/coldtier.toml.example"
echo /etc/coldtier/coldtier.toml.example >"$root/DEBIAN/conffiles"

# Man pages and completions, from the binary being packaged (its clap definitions).
"$root/usr/bin/coldtier" manpage --dir "$root/usr/share/man"
find "$root/usr/share/man" -type f -exec gzip -9n {} +
[ -f "$root/usr/share/man/man1/coldtier-migrate.1.gz" ] || die "no coldtier-migrate(1)"
[ -f "$root/usr/share/man/man5/coldtier.toml.5.gz" ] || die "no coldtier.toml(5)"
install -d -m 0755 "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$root/usr/bin/coldtier" completions bash >"$root/usr/share/bash-completion/completions/coldtier"
"$root/usr/bin/coldtier" completions zsh >"$root/usr/share/zsh/vendor-completions/_coldtier"
"$root/usr/bin/coldtier" completions fish >"$root/usr/share/fish/vendor_completions.d/coldtier.fish"

doc="$root/usr/share/doc/coldtier"
install -d -m 0755 "$doc"
install -m 0644 README.md docs/*.md "$doc/"
{
    cat <<END
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: coldtier

Files: *
Copyright: the coldtier authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

Comment: /usr/bin/coldtier also contains these Rust crates (name, version, license),
 compiled in statically (SQLite, public domain, in libsqlite3-sys):
END
    cargo tree --locked -e normal,no-proc-macro --prefix none --format '{p} {l}' 2>/dev/null |
        sed 's/ (\*)$//; s# (/[^)]*)##' | grep -v '^coldtier ' |
        sort -u | sed 's/^/ /'
} >"$doc/copyright"
chmod 0644 "$doc/copyright"
grep -q '^ tokio ' "$doc/copyright" || die "copyright: the crate list is missing (cargo tree failed)"

# Debhelper's daemon-reload, by hand: the unit is a template, nothing to enable or start.
cat >"$root/DEBIAN/postinst" <<'END'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
END
cat >"$root/DEBIAN/postrm" <<'END'
#!/bin/sh
# /var/lib/coldtier (the catalogs) and /var/log/coldtier stay, even on purge.
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
END
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"

# Shared-library dependencies of the binary, as dpkg-shlibdeps computes them (it wants
# a debian/control beside it; an empty one will do).
mkdir -p "$stage/shlibs/debian"
: >"$stage/shlibs/debian/control"
shlibs=$(cd "$stage/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/coldtier" |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies"

installed_size=$(du -s -k --apparent-size --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<END
Package: coldtier
Version: $deb_version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: fuse3, procps, $shlibs
Section: admin
Priority: optional
Description: FUSE overlay that tiers cold files of a file share to S3
 coldtier mounts over a file share's directory (an NFS or SMB export path). Resident
 files are served at native speed (kernel passthrough). Cold files, chosen by policy,
 are copied to S3 (or a directory), verified by checksum, and only then replaced by
 stubs that keep their name, size, times, owner and mode; reading a stub recalls its
 data transparently, Glacier restores included. Every step is an event in an
 append-only, hash-chained SQLite catalog.
 .
 One mount per instance of coldtier@.service, configured in /etc/coldtier/NAME.toml
 (see coldtier.toml(5) and /etc/coldtier/coldtier.toml.example).
END

# Nothing the package installs may be writable by others (or by a group).
bad=$(find "$root" ! -type l \( -perm -o+w -o -perm -g+w \) -print)
[ -z "$bad" ] || die "writable by group or others: $bad"

deb="$out/coldtier_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
log "built $deb ($(du -h "$deb" | cut -f1))"
echo "$deb"
