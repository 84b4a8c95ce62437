#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite: unit tests (the object stores
# against a real moto S3 server among them), integration tests on a real FUSE mount (also
# exported through nfs-ganesha and Samba), and the pjdfstest POSIX suite on the mount
# compared with native ext4.
# Usage: scripts/test.sh [extra nextest/cargo-test filter args]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/deps.sh
. scripts/lib/deps.sh

[ "$(id -u)" -eq 0 ] || die "run as root: the tests mount FUSE filesystems and change ownership"
ensure_rust
ensure_fuse
# Tools the integration tests drive through the mount.
apt_install git sqlite3 rsync fio tar attr acl util-linux python3 procps coreutils diffutils findutils e2fsprogs
scripts/pjdfstest.sh install
# tests/share.rs serves a mount through its own nfs-ganesha (FSAL_VFS) and smbd on
# 127.0.0.1, driven with libnfs-utils and smbclient; the packages' system services are
# never started and are disabled (scripts/lib/deps.sh: apt_install_services_off).
apt_install_services_off nfs-ganesha nfs-ganesha-vfs samba smbclient libnfs-utils
# promtool, for tests/systemd.rs: `promtool check rules` of docs/prometheus-alerts.yml
# (Debian ships it in the prometheus package; its service is never started).
command -v promtool >/dev/null 2>&1 || apt_install_services_off prometheus
# systemd-analyze, for tests/systemd.rs (`verify` of the shipped unit; PID 1 need not be systemd).
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
# The object-store tests run S3 against a real moto server they start themselves.
# shellcheck source=lib/moto.sh
. scripts/lib/moto.sh
apt_install python3-venv
moto_install
# One store test signs against s3s-fs, which checks SigV4 signatures (moto does not):
# cargo install, ~2.5 min the first time.
# shellcheck source=lib/s3s.sh
. scripts/lib/s3s.sh
s3s_install
# The store conformance suite and tests/garage.rs also run on a 3-node garage cluster that
# they start and stop themselves (src/store/testing.rs: GarageCluster): cargo install,
# 10-20 min the first time, cached in /opt/coldtier-tools.
# shellcheck source=lib/garage.sh
. scripts/lib/garage.sh
garage_install

export RUST_BACKTRACE=1
# A CI run builds once from a clean clone: incremental state would only cost disk and time.
[ -z "${CI:-}" ] || export CARGO_INCREMENTAL=0
log "building"
cargo build --all-targets --locked
if cargo nextest --version >/dev/null 2>&1; then
    log "running the test suite (nextest)"
    cargo nextest run --locked --no-fail-fast --test-threads 2 "$@"
else
    log "running the test suite (cargo test)"
    cargo test --locked --no-fail-fast "$@" -- --test-threads 2
fi

# The Debian package: scripts/test-package.sh builds it (--dev: from the dev-profile build,
# no release build), installs it with apt into a clean Debian 12 chroot made by debootstrap
# (its root cached in /var/cache/coldtier-test) and checks it there.
apt_install debootstrap zstd dpkg-dev binutils
log "the package test (scripts/test-package.sh --dev)"
scripts/test-package.sh --dev
