//! Shared harness for integration tests: a real coldtier FUSE mount over a temp tree.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Path of the coldtier binary built by cargo for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coldtier"))
}

/// Runs `coldtier ARGS...` and returns its output (never panics on a non-zero exit).
pub fn coldtier(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run coldtier")
}

/// A live coldtier mount. `src` is the backing tree, `mnt` the mount point
/// (equal to `src` when mounted over its own source). Unmounted on drop.
pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub mnt: PathBuf,
    /// A plain directory beside the mount, for side-by-side comparisons.
    pub native: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// Mounts a fresh empty source at a separate mount point.
    pub fn new() -> Self {
        Self::with_config(None)
    }

    /// Mounts with the given TOML configuration text.
    pub fn with_config(config: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("coldtier-it")
            .tempdir()
            .unwrap();
        let src = dir.path().join("src");
        let mnt = dir.path().join("mnt");
        let native = dir.path().join("native");
        for d in [&src, &mnt, &native] {
            std::fs::create_dir(d).unwrap();
        }
        let mut m = Mounted {
            dir,
            src,
            mnt,
            native,
            mounted: false,
        };
        m.mount(config);
        m
    }

    /// Mounts over the source directory itself (MOUNTPOINT omitted), after `prepare` fills it.
    pub fn over_source(prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("coldtier-it")
            .tempdir()
            .unwrap();
        let src = dir.path().join("share");
        let native = dir.path().join("native");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&native).unwrap();
        prepare(&src);
        let mut m = Mounted {
            dir,
            mnt: src.clone(),
            src,
            native,
            mounted: false,
        };
        let out = coldtier(&["mount", m.src.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.mounted = true;
        m
    }

    fn mount(&mut self, config: Option<&str>) {
        let mut args = vec![
            "mount".to_string(),
            self.src.to_str().unwrap().to_string(),
            self.mnt.to_str().unwrap().to_string(),
        ];
        if let Some(text) = config {
            let path = self.dir.path().join("coldtier.toml");
            std::fs::write(&path, text).unwrap();
            args.push("--config".into());
            args.push(path.to_str().unwrap().into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = coldtier(&args);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    /// Mounts again (same source, mount point and config) after `umount`.
    pub fn remount(&mut self) {
        assert!(!self.mounted, "already mounted");
        let cfg = self.dir.path().join("coldtier.toml");
        let text = cfg.exists().then(|| std::fs::read_to_string(&cfg).unwrap());
        if self.src == self.mnt {
            let out = coldtier(&["mount", self.src.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.mounted = true;
        } else {
            self.mount(text.as_deref());
        }
    }

    /// Records that the mount went away by other means (a signal to the daemon).
    pub fn mark_unmounted(&mut self) {
        self.mounted = false;
    }

    /// Unmounts now (also done on drop); panics if the unmount fails.
    pub fn umount(&mut self) {
        if self.mounted {
            let out = coldtier(&["umount", self.mnt.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "umount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.mounted = false;
        }
    }

    /// `path` inside the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
    /// `path` inside the backing tree.
    pub fn s(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }
    /// `path` inside the native comparison directory.
    pub fn n(&self, rel: &str) -> PathBuf {
        self.native.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let out = coldtier(&["umount", "--lazy", self.mnt.to_str().unwrap()]);
            if !out.status.success() {
                eprintln!(
                    "umount on drop failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Unmounts (lazily) the mount point it holds when dropped: a test that mounts by hand and
/// fails an assertion before its own unmount leaves no mount behind. Nothing is done if
/// it is no longer mounted.
pub struct UmountOnDrop(pub PathBuf);

impl Drop for UmountOnDrop {
    fn drop(&mut self) {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == self.0.to_str());
        if mounted {
            let _ = coldtier(&["umount", "--lazy", self.0.to_str().unwrap()]);
        }
    }
}

/// Runs a shell command line, returning (status success, stdout, stderr).
pub fn sh(cmd: &str) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free TCP port on the loopback address (for a daemon's metrics listener).
pub fn free_port() -> u16 {
    // A port is free again once probed: never hand the same one out twice in a process
    // (two servers of one test were once given the same port).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&p) {
            given.push(p);
            return p;
        }
    }
}

/// GET /metrics: each sample line as "name{labels}" -> value.
pub fn scrape(port: u16) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read as _, Write as _};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (
                k.to_string(),
                v.parse()
                    .unwrap_or_else(|_| panic!("bad sample value: {l}")),
            )
        })
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift64), different for each seed.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Output of a command as text, for panic messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The file system type of the mount at `p` (e.g. `fuse.coldtier`), if `p` is a mount
/// point now.
pub fn fstype_at(p: &Path) -> Option<String> {
    after_separator_at(p, 1)
}

/// The source of the mount at `p` (`coldtier:SOURCE`, or the block device of a `fuseblk`
/// mount), if `p` is a mount point now.
pub fn source_at(p: &Path) -> Option<String> {
    after_separator_at(p, 2)
}

/// Field `n` after the ` - ` separator (1: the type, 2: the source) of the mount at `p`,
/// per /proc/self/mountinfo (field 5 is the mount point, with spaces as `\040`).
fn after_separator_at(p: &Path, n: usize) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_str().unwrap();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4)?.replace("\\040", " ") != want {
            return None;
        }
        let dash = f.iter().position(|x| *x == "-")?;
        f.get(dash + n).map(|s| s.to_string())
    })
}

/// The per-mount options (mountinfo field 6: `rw,nosuid,nodev,...`) of the mount at `p`,
/// if `p` is a mount point now.
pub fn mount_options_at(p: &Path) -> Option<Vec<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_str().unwrap();
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4)?.replace("\\040", " ") != want {
            return None;
        }
        Some(f.get(5)?.split(',').map(str::to_string).collect())
    })
}

/// Whether `p` is a mount point now.
pub fn is_mountpoint(p: &Path) -> bool {
    fstype_at(p).is_some()
}

/// The runtime record of the mount at `mnt` (`/run/coldtier/mounts/<hex>.pid`: the daemon's
/// pid first, the supervisor's fourth), its lines; empty if there is none.
pub fn runtime_record(mnt: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let hex: String = mnt
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::read_to_string(format!("/run/coldtier/mounts/{hex}.pid"))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

/// Kills the daemon of `mnt` with SIGKILL and waits for the next one to serve.
pub fn kill_and_wait_for_the_next(mnt: &Path) -> i32 {
    let old = runtime_record(mnt)[0].parse::<i32>().unwrap();
    // SAFETY: killing the daemon this test started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for_new_daemon(mnt, old)
}

pub fn wait_for_new_daemon(mnt: &Path, old: i32) -> i32 {
    let t0 = Instant::now();
    loop {
        let r = runtime_record(mnt);
        if let Some(p) = r.first().and_then(|p| p.parse::<i32>().ok()) {
            if p != old && alive(p) && std::fs::metadata(mnt).is_ok() {
                return p;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no new daemon after pid {old}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
