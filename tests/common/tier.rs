//! Harness for the tiering tests: a real coldtier FUSE mount whose store is a real moto S3
//! server on 127.0.0.1, with its own temp dirs, config and catalog; the CLI calls the tests
//! make (migrate, status, history ...); and what the S3 server saw (its request log, the
//! objects in the bucket). Everything a `TierMount` starts is stopped on drop.
//!
//! tests/tiering.rs and tests/reconcile.rs include it as `#[path = "common/tier.rs"] mod
//! tier;`, beside `mod common;` (it is not a submodule of `common`, so the other test
//! binaries do not build it).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coldtier::store::testing::MotoServer;
use serde_json::Value;

use crate::common::{bin, coldtier};
pub use crate::common::{data, is_mountpoint, show};

/// The object key prefix every test config uses.
pub const PREFIX: &str = "t";
/// Retention the test configs use (the minimum coldtier accepts).
pub const RETENTION_SECS: u64 = 3600;
/// Failpoint variable read by the daemon (docs: /tmp/tier-spec.md).
pub const FAILPOINT_ENV: &str = "COLDTIER_TEST_FAILPOINT";
/// gc clock skew variable read by the daemon.
pub const GC_SKEW_ENV: &str = "COLDTIER_TEST_GC_SKEW";

/// Starts a moto server, or fails the test saying how to install moto.
pub fn start_moto() -> Arc<MotoServer> {
    Arc::new(MotoServer::start().unwrap_or_else(|e| panic!("cannot start moto: {e}")))
}

/// Test files: (path relative to the source, content).
pub type Files = Vec<(String, Vec<u8>)>;

/// Builds `Files` from (path, length) pairs, each with its own content.
pub fn files(spec: &[(&str, usize)]) -> Files {
    spec.iter()
        .enumerate()
        .map(|(i, (p, len))| (p.to_string(), data(i as u64 + 17, *len)))
        .collect()
}

/// Writes `files` under `root`, creating parent directories.
pub fn write_files(root: &Path, files: &Files) {
    for (rel, content) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
}

/// Panics, with the first differing offset rather than the bytes, if `got != want`.
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: content differs: got {} bytes, want {} bytes, first difference at offset {first}",
            got.len(),
            want.len()
        );
    }
}

/// Quotes a string as a TOML basic string.
pub fn q(s: &str) -> String {
    format!("{s:?}")
}

/// A config file under construction: section -> key -> raw TOML value.
#[derive(Clone, Debug)]
pub struct Config {
    sections: BTreeMap<String, BTreeMap<String, String>>,
    /// TOML appended after the sections (arrays of tables: `[[replica]]`).
    tail: String,
}

impl Config {
    /// The tests' base config: S3 at `endpoint` (path style, moto's credentials), every
    /// file of at least 1 byte cold at once, no schedule, 1 s restore polls, the catalog at
    /// `catalog`, retention 1 h.
    pub fn s3(endpoint: &str, bucket: &str, catalog: &Path) -> Self {
        let c = Config {
            sections: BTreeMap::new(),
            tail: String::new(),
        };
        c.set("store", "kind", &q("s3"))
            .set("store", "endpoint", &q(endpoint))
            .set("store", "region", &q("us-east-1"))
            .set("store", "bucket", &q(bucket))
            .set("store", "prefix", &q(PREFIX))
            .set("store", "path_style", "true")
            .set("store", "access_key", &q("coldtier-test"))
            .set("store", "secret_key", &q("coldtier-test-secret"))
            .set("store", "storage_class", &q("STANDARD"))
            .set("store", "checksum", &q("crc32c"))
            .set("store", "connect_timeout", &q("2s"))
            .set("store", "max_attempts", "2")
            .set("policy", "mode", &q("stub"))
            .set("policy", "atime_older_than", &q("0s"))
            .set("policy", "min_size", "1")
            .set("policy", "schedule", &q("off"))
            .set("recall", "on_archived", &q("fail"))
            .set("recall", "poll_interval", &q("1s"))
            .set("recall", "wait_timeout", &q("30s"))
            .set("catalog", "path", &q(catalog.to_str().unwrap()))
            .set("catalog", "retention", &q("1h"))
    }

    /// Sets `[section] key = value` (`value` is raw TOML: quote strings with [`q`]).
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Self {
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Appends raw TOML after the sections (an array of tables such as `[[replica]]`).
    pub fn raw(mut self, text: &str) -> Self {
        self.tail.push_str(text);
        self.tail.push('\n');
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (section, keys) in &self.sections {
            out.push_str(&format!("[{section}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        out.push_str(&self.tail);
        out
    }
}

/// One line of moto's request log: `"GET /bucket/key?x HTTP/1.1" 200`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub status: u16,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

/// Every HTTP request moto has logged so far, in order (its own control API included).
pub fn requests(moto: &MotoServer) -> Vec<Request> {
    let text = strip_ansi(&std::fs::read_to_string(&moto.log).unwrap_or_default());
    text.lines()
        .filter_map(|l| {
            let start = l.find("] \"")? + 3;
            let rest = &l[start..];
            let end = rest.find('"')?;
            let mut parts = rest[..end].split(' ');
            let method = parts.next()?.to_string();
            let target = parts.next()?.to_string();
            let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
            Some(Request {
                method,
                target,
                status,
            })
        })
        .collect()
}

/// `text` without ANSI escape sequences (werkzeug colours the lines of non-200 answers).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ params letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The request log once it has stopped growing (no new line for 500 ms; at most 10 s),
/// so that the requests of an operation that just returned are all in it.
pub fn settled_requests(moto: &MotoServer) -> Vec<Request> {
    let t0 = Instant::now();
    let mut last = requests(moto);
    let mut stable_since = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        let now = requests(moto);
        if now.len() != last.len() {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    last
}

/// Requests that touch objects (`/bucket/<key>`), not the bucket itself or moto's API, nor
/// the probe objects of the store check at mount (`<prefix>/probe/...`).
pub fn object_requests<'a>(reqs: &'a [Request], bucket: &str) -> Vec<&'a Request> {
    let pre = format!("/{bucket}/");
    reqs.iter()
        .filter(|r| r.path().starts_with(&pre) && r.path().len() > pre.len())
        .filter(|r| !r.path().contains("/probe/"))
        .collect()
}

/// GETs of object data (not tagging, acl ... sub-resources) of `key`, or of any object if
/// `key` is None.
pub fn data_gets(reqs: &[Request], bucket: &str, key: Option<&str>) -> usize {
    object_requests(reqs, bucket)
        .into_iter()
        .filter(|r| r.method == "GET")
        .filter(|r| {
            ![
                "tagging",
                "acl",
                "attributes",
                "uploadId",
                "legal-hold",
                "retention",
            ]
            .iter()
            .any(|s| r.query().contains(s))
        })
        .filter(|r| key.is_none_or(|k| r.path() == format!("/{bucket}/{k}")))
        .count()
}

/// RestoreObject requests (`POST /bucket/key?restore`).
pub fn restore_posts(reqs: &[Request], bucket: &str) -> usize {
    object_requests(reqs, bucket)
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && r.query()
                    .split('&')
                    .any(|p| p == "restore" || p.starts_with("restore="))
        })
        .count()
}

/// A raw HTTP request to moto that also returns the response headers (lowercased names).
pub fn http_full(
    moto: &MotoServer,
    method: &str,
    target: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", moto.port)).expect("connect to moto");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=coldtier-test/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n",
        moto.port
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, resp[split + 4..].to_vec())
}

/// Every key in `bucket` (ListObjectsV2; the test buckets hold far fewer than 1000).
pub fn bucket_keys(moto: &MotoServer, bucket: &str) -> Vec<String> {
    let (st, body) = moto
        .http("GET", &format!("/{bucket}?list-type=2"), &[], b"")
        .expect("list bucket");
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(st, 200, "list {bucket}: {body}");
    let mut keys = Vec::new();
    let mut rest = body.as_str();
    while let Some(i) = rest.find("<Key>") {
        rest = &rest[i + 5..];
        let j = rest.find("</Key>").expect("</Key>");
        keys.push(rest[..j].replace("&amp;", "&"));
        rest = &rest[j..];
    }
    keys.sort();
    keys
}

/// The `x-amz-meta-*` metadata of an object (names without the prefix, values
/// percent-decoded), from a raw HEAD.
pub fn object_metadata(moto: &MotoServer, bucket: &str, key: &str) -> BTreeMap<String, String> {
    let (st, headers, _) = http_full(moto, "HEAD", &format!("/{bucket}/{key}"));
    assert_eq!(st, 200, "HEAD {key}");
    headers
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("x-amz-meta-")
                .map(|n| (n.to_string(), percent_decode(&v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A path as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// An extended attribute of `p` itself (not following symlinks): None if it has none by
/// that name.
pub fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated strings; buf is valid for buf.len() bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENODATA),
            "getxattr {name} on {}: {e}",
            p.display()
        );
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// The stub record's xattr on backing files.
pub const STUB_XATTR: &str = "trusted.coldtier.stub";

/// Sets a file's atime and mtime (seconds, nanoseconds), not following symlinks.
pub fn set_times(p: &Path, secs: i64, nsec: i64) {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: NUL-terminated path, two valid timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// A coldtier mount of a temp source tree at a temp mount point, configured for a store
/// (normally a moto server). Unmounted on drop (lazily, so a test that fails with files
/// open still cleans up); the moto server stops when its last `Arc` goes.
pub struct TierMount {
    pub bucket: String,
    pub src: PathBuf,
    pub mnt: PathBuf,
    pub catalog: PathBuf,
    pub config_path: PathBuf,
    pub log_file: PathBuf,
    pub config: Config,
    mounted: bool,
    pub moto: Option<Arc<MotoServer>>,
    pub dir: tempfile::TempDir,
}

impl TierMount {
    /// A mount whose store is `bucket` (created now, unversioned) on `moto`; `files` are
    /// written into the source before mounting; `tweak` adjusts the base config.
    pub fn new(
        moto: &Arc<MotoServer>,
        bucket: &str,
        files: &Files,
        tweak: impl FnOnce(Config) -> Config,
    ) -> Self {
        let mut t = Self::prepared(moto, &moto.endpoint, bucket, files, tweak);
        t.mount_with_env(&[]);
        t
    }

    /// Like `new`, with the store at `endpoint` (no moto server, e.g. a closed port).
    pub fn at_endpoint(
        endpoint: &str,
        bucket: &str,
        files: &Files,
        tweak: impl FnOnce(Config) -> Config,
    ) -> Self {
        let mut t = Self::unmounted(None, bucket, endpoint, tweak);
        write_files(&t.src, files);
        t.mount_with_env(&[]);
        t
    }

    fn unmounted(
        moto: Option<Arc<MotoServer>>,
        bucket: &str,
        endpoint: &str,
        tweak: impl FnOnce(Config) -> Config,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("coldtier-tier")
            .tempdir()
            .unwrap();
        let src = dir.path().join("src");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        // In a directory of its own (the daemon creates it), so that tests can tell the
        // catalog's files from everything else under `dir`.
        let catalog = dir.path().join("cat/catalog.db");
        let config = tweak(Config::s3(endpoint, bucket, &catalog));
        let config_path = dir.path().join("coldtier.toml");
        std::fs::write(&config_path, config.render()).unwrap();
        TierMount {
            bucket: bucket.to_string(),
            src,
            mnt,
            catalog,
            config_path,
            log_file: dir.path().join("daemon.log"),
            config,
            mounted: false,
            moto,
            dir,
        }
    }

    /// The moto server of this mount.
    pub fn moto(&self) -> &MotoServer {
        self.moto.as_deref().expect("this mount has no moto server")
    }

    /// Mounts with exactly these test variables in the daemon's environment (the
    /// failpoint and gc skew variables are removed unless given here).
    pub fn mount_with_env(&mut self, env: &[(&str, &str)]) {
        let out = self.try_mount(env, &[]);
        assert!(
            out.status.success(),
            "mount failed: {}\n{}",
            show(&out),
            self.daemon_log_tail()
        );
    }

    /// Mounts with failpoint `fp` (a kill there) and `env`, runs the CLI with `args`, which
    /// fails as the daemon dies at it, and detaches the dead mount; the caller remounts.
    pub fn dies_running(&mut self, env: &[(&str, &str)], fp: &str, args: &[&str]) {
        let mut all = env.to_vec();
        all.push((FAILPOINT_ENV, fp));
        self.mount_with_env(&all);
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "{fp}: the daemon was to die: {}",
            show(&out)
        );
        assert!(
            self.wait_dead(Duration::from_secs(15)),
            "{fp}: the daemon did not die\n{}",
            self.daemon_log_tail()
        );
        self.detach_dead();
    }

    /// Mounts with failpoint `fp` (e.g. `"migrate-after-put:hold=PATH"`: the run goes on
    /// once the test creates PATH), starts a stub run in a thread and returns once the
    /// daemon says it is pausing there; the run's output comes from joining the thread.
    pub fn stub_run_paused_at(&mut self, fp: &str) -> std::thread::JoinHandle<Output> {
        self.mount_with_env(&[(FAILPOINT_ENV, fp)]);
        let args = vec![
            "migrate".to_string(),
            self.mnt_str(),
            "--mode".to_string(),
            "stub".to_string(),
        ];
        let bin = bin();
        let migrate = std::thread::spawn(move || Command::new(bin).args(&args).output().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.daemon_log_tail().contains("pausing") {
            assert!(
                Instant::now() < deadline,
                "the run never paused at {fp}\n{}",
                self.daemon_log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        migrate
    }

    /// `coldtier mount` with these variables and extra arguments (e.g. `--paused`); the
    /// outcome, whatever it is.
    pub fn try_mount(&mut self, env: &[(&str, &str)], args: &[&str]) -> Output {
        assert!(!self.mounted, "already mounted");
        let mut cmd = Command::new(bin());
        cmd.arg("mount")
            .arg(&self.src)
            .arg(&self.mnt)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--log-file")
            .arg(&self.log_file)
            .args(args)
            .env_remove(FAILPOINT_ENV)
            .env_remove(GC_SKEW_ENV);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run coldtier mount");
        self.mounted = out.status.success();
        out
    }

    /// A mount like `new`'s whose files are written but which is not mounted yet.
    pub fn prepared(
        moto: &Arc<MotoServer>,
        endpoint: &str,
        bucket: &str,
        files: &Files,
        tweak: impl FnOnce(Config) -> Config,
    ) -> Self {
        moto.create_bucket(bucket, false)
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
        let t = Self::unmounted(Some(moto.clone()), bucket, endpoint, tweak);
        write_files(&t.src, files);
        t
    }

    /// Deletes the catalog (and its WAL and shared-memory files), as a lost disk would.
    pub fn remove_catalog(&self) {
        for s in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{s}", self.catalog.display()));
            if p.exists() {
                std::fs::remove_file(p).unwrap();
            }
        }
    }

    /// The mount was taken away by other means (`umount(8)`).
    pub fn set_unmounted(&mut self) {
        self.mounted = false;
    }

    /// Mounts again without test variables.
    pub fn remount(&mut self) {
        self.mount_with_env(&[]);
    }

    /// Clean unmount; panics if it fails.
    pub fn umount(&mut self) {
        if self.mounted {
            let out = coldtier(&["umount", self.mnt.to_str().unwrap()]);
            assert!(out.status.success(), "umount failed: {}", show(&out));
            self.mounted = false;
        }
    }

    /// Detaches a mount whose daemon died: `coldtier umount --lazy`, then `umount -l` if
    /// it is still mounted. Panics if the mount point is still a mount after that.
    pub fn detach_dead(&mut self) {
        let out = Command::new(bin())
            .args(["umount", "--lazy", "--timeout", "10"])
            .arg(&self.mnt)
            .output()
            .expect("coldtier umount");
        if is_mountpoint(&self.mnt) {
            eprintln!("coldtier umount --lazy left the mount: {}", show(&out));
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        assert!(
            !is_mountpoint(&self.mnt),
            "{} is still mounted",
            self.mnt.display()
        );
        self.mounted = false;
    }

    /// Waits (up to `limit`) until the mount answers ENOTCONN (its daemon is gone).
    pub fn wait_dead(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            match std::fs::metadata(&self.mnt) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return true,
                _ if t0.elapsed() > limit => return false,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The last 60 lines of the daemon's log, for failure messages.
    pub fn daemon_log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- daemon log ({}) ---\n{}",
            self.log_file.display(),
            lines[from..].join("\n")
        )
    }

    /// Path inside the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
    /// Path inside the backing tree.
    pub fn s(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }
    pub fn ms(&self, rel: &str) -> String {
        self.m(rel).to_str().unwrap().to_string()
    }
    pub fn mnt_str(&self) -> String {
        self.mnt.to_str().unwrap().to_string()
    }

    /// Runs `coldtier ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        coldtier(args)
    }

    /// Runs `coldtier ARGS`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = coldtier(args);
        assert!(
            out.status.success(),
            "coldtier {args:?} failed: {}\n{}",
            show(&out),
            self.daemon_log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `coldtier migrate MNT --json EXTRA...`: the output and its parsed JSON summary.
    pub fn migrate(&self, extra: &[&str]) -> (Output, Value) {
        let mnt = self.mnt_str();
        let mut args = vec!["migrate", mnt.as_str(), "--json"];
        args.extend_from_slice(extra);
        let out = coldtier(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "coldtier {args:?}: stdout is not one JSON object ({e}): {}\n{}",
                show(&out),
                self.daemon_log_tail()
            )
        });
        (out, v)
    }

    /// `migrate` that must exit 0 with no failed file.
    pub fn migrate_ok(&self, extra: &[&str]) -> Value {
        let (out, v) = self.migrate(extra);
        assert!(
            out.status.success(),
            "migrate {extra:?} failed: {}\n{}",
            show(&out),
            self.daemon_log_tail()
        );
        assert_eq!(v["failed"].as_u64(), Some(0), "migrate summary: {v}");
        v
    }

    /// `coldtier status --json` of one path inside the mount.
    pub fn status(&self, rel: &str) -> Value {
        let p = self.ms(rel);
        let text = self.ok(&["status", "--json", p.as_str()]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "status --json {p}: one line expected: {text}"
        );
        serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("status --json {p}: bad JSON ({e}): {text}"))
    }

    /// The state `status` reports for a path inside the mount.
    pub fn state(&self, rel: &str) -> String {
        let v = self.status(rel);
        v["state"]
            .as_str()
            .unwrap_or_else(|| panic!("status of {rel} has no state: {v}"))
            .to_string()
    }

    /// The full object key `status` reports.
    pub fn object_key(&self, rel: &str) -> String {
        let v = self.status(rel);
        v["object_key"]
            .as_str()
            .unwrap_or_else(|| panic!("status of {rel} has no object_key: {v}"))
            .to_string()
    }

    /// `coldtier history --json` of a path inside the mount, parsed.
    pub fn history(&self, rel: &str) -> Vec<Value> {
        let p = self.ms(rel);
        let text = self.ok(&["history", "--json", p.as_str()]);
        parse_lines(&text)
    }

    /// The event kinds of a path's history, oldest first.
    pub fn kinds(&self, rel: &str) -> Vec<String> {
        kinds_of(&self.history(rel))
    }

    /// Reads the catalog directly (read-only): (kind, config_version) of each event of
    /// `file_id`, oldest first. For files whose path no longer exists.
    pub fn catalog_events(&self, file_id: &str) -> Vec<(String, i64)> {
        let db = rusqlite::Connection::open_with_flags(
            &self.catalog,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| panic!("open catalog {}: {e}", self.catalog.display()));
        let mut st = db
            .prepare("SELECT kind, config_version FROM events WHERE file_id = ?1 ORDER BY id")
            .unwrap();
        let rows = st
            .query_map([file_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    /// The objects now in this mount's bucket.
    pub fn objects(&self) -> Vec<String> {
        bucket_keys(self.moto(), &self.bucket)
    }

    /// `coldtier verify MNT --json [--deep]`: exit code and report.
    pub fn verify(&self, deep: bool) -> (i32, Value) {
        let mnt = self.mnt_str();
        let mut args = vec!["verify", mnt.as_str(), "--json"];
        if deep {
            args.push("--deep");
        }
        let out = coldtier(&args);
        let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or_else(|e| {
                panic!(
                    "verify: not JSON ({e}): {}\n{}",
                    show(&out),
                    self.daemon_log_tail()
                )
            });
        (out.status.code().unwrap_or(-1), v)
    }

    /// Polls `status` until `rel` is in `state` (at most `limit`); returns the last state.
    pub fn wait_state(&self, rel: &str, state: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.state(rel);
            if s == state || t0.elapsed() > limit {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TierMount {
    fn drop(&mut self) {
        if self.mounted {
            let out = Command::new(bin())
                .args(["umount", "--lazy", "--timeout", "20"])
                .arg(&self.mnt)
                .output();
            let still = is_mountpoint(&self.mnt);
            if still {
                eprintln!("umount on drop failed: {out:?}; detaching");
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.daemon_log_tail());
        }
    }
}

/// Parses JSON lines (blank lines skipped); panics on a line that is not JSON.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The `kind` of each event.
pub fn kinds_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("event without kind: {e}"))
                .to_string()
        })
        .collect()
}

/// How many times `kind` occurs.
pub fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// `kinds` restricted to those in `of`, in order.
pub fn only(kinds: &[String], of: &[&str]) -> Vec<String> {
    kinds
        .iter()
        .filter(|k| of.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// What a stub must keep showing through the mount.
#[derive(Debug, PartialEq, Eq)]
pub struct Shown {
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

pub fn shown(p: &Path) -> Shown {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    Shown {
        size: m.size(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    }
}

/// The errno of a call that must fail.
pub fn errno_of<T>(r: std::io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(_) => panic!("{what}: expected an error, it succeeded"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Reads a file that must be readable.
pub fn read_ok(p: &Path) -> Vec<u8> {
    std::fs::read(p)
        .unwrap_or_else(|e| panic!("read {}: {e} (errno {:?})", p.display(), e.raw_os_error()))
}

/// Every file reads back through the mount byte-identical.
pub fn assert_all_read_back(t: &TierMount, files: &Files) {
    for (rel, content) in files {
        let got = std::fs::read(t.m(rel)).unwrap_or_else(|e| {
            panic!(
                "read {rel} through the mount: {e} (errno {:?})\n{}",
                e.raw_os_error(),
                t.daemon_log_tail()
            )
        });
        assert_bytes(&format!("{rel} through the mount"), &got, content);
    }
}

/// `verify` is clean, and after `gc` past the retention the bucket holds exactly the
/// objects the files' records name: no object written before a crash is left unknown.
pub fn assert_bucket_is_exactly_what_is_referenced(t: &mut TierMount, fs_: &Files, what: &str) {
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{what}: verify: {v}");
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, &(RETENTION_SECS + 60).to_string())]);
    t.ok(&["gc", &t.mnt_str()]);
    let named: std::collections::BTreeSet<String> =
        fs_.iter().map(|(rel, _)| t.object_key(rel)).collect();
    let held: std::collections::BTreeSet<String> = t
        .objects()
        .into_iter()
        .filter(|k| k.contains("/data/"))
        .collect();
    assert_eq!(
        held, named,
        "{what}: the bucket after gc past the retention"
    );
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{what}: verify after gc: {v}");
    t.umount();
    t.remount();
}
