//! systemd integration and observability, against the real things: `systemd-analyze verify`
//! on the shipped unit; `coldtier mount --foreground --config F` (what the unit runs) with
//! a real datagram socket as `NOTIFY_SOCKET` (READY=1 only once the mount serves and the
//! control socket answers, STOPPING=1 on SIGTERM, a clean unmount); the log format under
//! the journal; a restart after a crash; and the Prometheus endpoint scraped while a real
//! mount migrates and recalls against a real moto S3 server.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use coldtier::store::testing::MotoServer;
use common::{bin, coldtier, free_port, fstype_at, is_mountpoint, scrape, show};
use serde_json::Value;

const UNIT: &str = "systemd/coldtier@.service";

// ------------------------------------------------------------------------------------------
// The unit file

/// Runs `systemd-analyze verify` on `unit` (a copy whose ExecStart names the binary under
/// test: verify checks that the command exists); the combined output.
fn verify(dir: &Path, name: &str, text: &str) -> Output {
    let text = text.replace("/usr/local/bin/coldtier", bin().to_str().unwrap());
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    Command::new("systemd-analyze")
        .arg("verify")
        // The unit's man: Documentation= pages are installed by the package, not here
        // (scripts/test-package.sh verifies the installed unit with them).
        .arg("--man=no")
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze (apt install systemd; scripts/test.sh does)")
}

#[test]
fn the_unit_passes_systemd_analyze_verify_without_a_warning() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(UNIT)).unwrap();
    assert!(text.contains(
        "ExecStart=/usr/local/bin/coldtier mount --foreground --config /etc/coldtier/%i.toml"
    ));
    let dir = tempfile::tempdir().unwrap();
    // The template, and an instance of it (what `systemctl start coldtier@srv-share` loads).
    for name in ["coldtier@.service", "coldtier@srv-share.service"] {
        let out = verify(dir.path(), name, &text);
        assert!(out.status.success(), "verify {name}: {}", show(&out));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Only what concerns this unit: a host's own broken units are not ours to judge.
        let ours: Vec<&str> = said.lines().filter(|l| l.contains("coldtier")).collect();
        assert!(
            ours.is_empty(),
            "verify {name} warns (unknown key or bad value): {said}"
        );
    }
    // The check has teeth: a misspelled key and a bad value are reported.
    let broken = text
        .replace("KillMode=mixed", "KillMode=gently")
        .replace("Restart=on-failure", "Restart=on-failure\nRestartSecs=5");
    let out = verify(dir.path(), "coldtier@broken.service", &broken);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("KillMode") || said.contains("kill mode"),
        "{said}"
    );
    assert!(said.contains("RestartSecs"), "{said}");
}

/// `systemd-analyze condition --unit NAME` with the unit search path starting at `dir`:
/// the unit's Condition*= and Assert*= evaluated, as `systemctl start` would.
fn conditions(dir: &Path, name: &str) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(["condition", "--unit", name])
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .expect("systemd-analyze (apt install systemd; scripts/test.sh does)");
    (out.status.success(), show(&out))
}

#[test]
fn a_mistyped_instance_fails_its_start_loudly_instead_of_being_skipped() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(UNIT)).unwrap();
    // A failed Condition*= makes `systemctl start` succeed and do nothing; a failed
    // Assert*= fails the start (and marks the unit failed) naming what is missing.
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    assert!(
        !settings.iter().any(|l| l.starts_with("Condition")),
        "no Condition*=: {settings:?}"
    );
    assert!(settings.contains(&"AssertPathExists=/etc/coldtier/%i.toml"));

    // Evaluated by systemd itself, on a copy whose config directory is a temporary one.
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let copy = text.replace("/etc/coldtier/", &format!("{}/", etc.display()));
    std::fs::write(dir.path().join("coldtier@.service"), &copy).unwrap();
    std::fs::write(etc.join("srv-share.toml"), "").unwrap();
    let (ok, said) = conditions(dir.path(), "coldtier@srv-share.service");
    assert!(ok, "the instance with its config may start: {said}");
    let (ok, said) = conditions(dir.path(), "coldtier@srv-shaer.service");
    assert!(!ok, "the mistyped instance must not start: {said}");
    assert!(
        said.contains(&format!(
            "AssertPathExists={}/srv-shaer.toml failed",
            etc.display()
        )) && said.contains("Asserts failed"),
        "{said}"
    );
    // The check tells the two apart: the old Condition form fails as a condition (which
    // `systemctl start` treats as success).
    let old = copy.replace("AssertPathExists=", "ConditionPathExists=");
    std::fs::write(dir.path().join("coldtier@.service"), old).unwrap();
    let (_, said) = conditions(dir.path(), "coldtier@srv-shaer.service");
    assert!(said.contains("Conditions failed"), "{said}");

    // Should the assertion be bypassed, ExecStart itself refuses the missing file, with
    // exit status 2, which the unit does not restart on.
    assert!(settings.contains(&"RestartPreventExitStatus=2"));
    let missing = etc.join("srv-shaer.toml");
    let out = coldtier(&[
        "mount",
        "--foreground",
        "--config",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()),
        "{}",
        show(&out)
    );
}

#[test]
fn the_unit_has_no_mount_namespacing_and_leaves_devices_alone() {
    // A service with its own mount namespace would mount the share where nobody sees it.
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(UNIT)).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProtectClock",
        "MountFlags",
        "RestrictSUIDSGID",
        "DevicePolicy",
        "DeviceAllow",
        "ProtectHostname",
        "User",
        "DynamicUser",
    ] {
        assert!(
            !settings.iter().any(|l| l.starts_with(&format!("{key}="))),
            "{key}= must not be set (see the comment in the unit)"
        );
    }
    assert!(settings.contains(&"Type=notify"));
    assert!(settings.contains(&"Restart=on-failure"));
}

// ------------------------------------------------------------------------------------------
// A foreground daemon, as systemd runs it

/// The socket the test listens on as the service manager.
struct Notify {
    sock: UnixDatagram,
    /// The `NOTIFY_SOCKET` value: a path, or "@name" for an abstract socket.
    env: String,
    got: Vec<String>,
}

impl Notify {
    fn at_path(dir: &Path) -> Notify {
        let p = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&p).unwrap();
        Notify {
            sock,
            env: p.to_str().unwrap().to_string(),
            got: Vec::new(),
        }
    }

    fn abstract_name() -> Notify {
        let name = format!(
            "coldtier-test-notify-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        Notify {
            sock,
            env: format!("@{name}"),
            got: Vec::new(),
        }
    }

    /// Waits (up to `limit`) for a message with the line `line`; returns that message.
    fn wait_for(&mut self, line: &str, limit: Duration) -> Option<String> {
        let t0 = Instant::now();
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(m) = self.got.iter().find(|m| m.lines().any(|l| l == line)) {
                return Some(m.clone());
            }
            let left = limit.checked_sub(t0.elapsed())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => self
                    .got
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) if t0.elapsed() >= limit => return None,
                Err(_) => {}
            }
        }
    }
}

/// A `coldtier mount --foreground` child; stopped (SIGTERM, then SIGKILL and a lazy
/// unmount) on drop.
struct Foreground {
    child: Option<Child>,
    mnt: PathBuf,
    stderr: PathBuf,
}

impl Foreground {
    /// Starts `coldtier mount --foreground --config CONFIG` (SOURCE and MOUNTPOINT come
    /// from the config's [mount]), with `NOTIFY_SOCKET` and stderr into `stderr`; with
    /// `journal`, `JOURNAL_STREAM` names that stderr file as systemd's would.
    fn start(config: &Path, mnt: &Path, notify: &Notify, stderr: &Path, journal: bool) -> Self {
        Self::start_wrapped(&[], config, mnt, notify, stderr, journal)
    }

    /// Like `start`, with the daemon run by `wrapper` (a command that execs its
    /// arguments, e.g. `setpriv ...`).
    fn start_wrapped(
        wrapper: &[String],
        config: &Path,
        mnt: &Path,
        notify: &Notify,
        stderr: &Path,
        journal: bool,
    ) -> Self {
        let err = File::create(stderr).unwrap();
        let meta = err.metadata().unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(["mount", "--foreground", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &notify.env)
            .env_remove("JOURNAL_STREAM")
            .env_remove("COLDTIER_TEST_FAILPOINT")
            .env("COLDTIER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        Foreground {
            child: Some(cmd.spawn().expect("spawn coldtier mount --foreground")),
            mnt: mnt.to_path_buf(),
            stderr: stderr.to_path_buf(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for the child to exit (up to `limit`); its exit status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "the daemon did not exit within {limit:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mountpoint(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon stderr ---\n{}", self.log());
        }
    }
}

/// A temp source, mount point, catalog and config with `[mount]` set.
struct Setup {
    dir: tempfile::TempDir,
    src: PathBuf,
    mnt: PathBuf,
    config: PathBuf,
}

fn setup(extra: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("coldtier-sd")
        .tempdir()
        .unwrap();
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let config = dir.path().join("share.toml");
    std::fs::write(
        &config,
        format!(
            "[mount]\nsource = {:?}\nmountpoint = {:?}\n\n[catalog]\npath = {:?}\n\n[policy]\nschedule = \"off\"\n\n{extra}",
            src.to_str().unwrap(),
            mnt.to_str().unwrap(),
            dir.path().join("catalog.db").to_str().unwrap(),
        ),
    )
    .unwrap();
    Setup {
        dir,
        src,
        mnt,
        config,
    }
}

const START: Duration = Duration::from_secs(30);

#[test]
fn ready_once_the_mount_serves_stopping_on_sigterm_and_a_clean_unmount() {
    let s = setup("");
    std::fs::write(s.src.join("hello.txt"), b"hello\n").unwrap();
    let mut notify = Notify::at_path(s.dir.path());
    let stderr = s.dir.path().join("stderr.log");
    let mut d = Foreground::start(&s.config, &s.mnt, &notify, &stderr, true);
    let ready = notify.wait_for("READY=1", START).unwrap_or_else(|| {
        panic!(
            "no READY=1 within {START:?}; got {:?}\n{}",
            notify.got,
            d.log()
        )
    });
    // READY means: mounted, serving, and the control socket answers.
    assert_eq!(fstype_at(&s.mnt).as_deref(), Some("fuse.coldtier"));
    assert_eq!(std::fs::read(s.mnt.join("hello.txt")).unwrap(), b"hello\n");
    let out = coldtier(&[
        "status",
        "--json",
        s.mnt.join("hello.txt").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "status: {}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "resident", "{v}");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY without STATUS: {ready:?}"));
    assert!(
        status.contains(s.src.to_str().unwrap()) && status.contains(s.mnt.to_str().unwrap()),
        "{status}"
    );
    // Exactly one READY, sent by the daemon (the supervisor's child: NotifyAccess=all).
    assert_eq!(
        notify
            .got
            .iter()
            .filter(|m| m.lines().any(|l| l == "READY=1"))
            .count(),
        1
    );

    d.signal(libc::SIGTERM);
    notify
        .wait_for("STOPPING=1", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no STOPPING=1; got {:?}\n{}", notify.got, d.log()));
    let st = d.wait(Duration::from_secs(20));
    assert!(st.success(), "exit status {st:?}\n{}", d.log());
    assert!(!is_mountpoint(&s.mnt), "still mounted after SIGTERM");
    // The data stays where it was.
    assert_eq!(std::fs::read(s.src.join("hello.txt")).unwrap(), b"hello\n");

    // Logs as the journal wants them: a priority prefix, no timestamp, no colours.
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(!l.contains('\x1b'), "ANSI escape in {l:?}");
        let rest = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .filter(|(p, _)| p.len() == 1 && p.as_bytes()[0].is_ascii_digit())
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no <N> priority prefix: {l:?}"));
        assert!(
            !rest.trim_start().starts_with(|c: char| c.is_ascii_digit()),
            "timestamp in {l:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("coldtier mounted")),
        "{log}"
    );
}

#[test]
fn abstract_notify_socket_and_plain_foreground_logs() {
    let s = setup("");
    let mut notify = Notify::abstract_name();
    let stderr = s.dir.path().join("stderr.log");
    let mut d = Foreground::start(&s.config, &s.mnt, &notify, &stderr, false);
    notify
        .wait_for("READY=1", START)
        .unwrap_or_else(|| panic!("no READY=1 on an abstract socket\n{}", d.log()));
    assert_eq!(fstype_at(&s.mnt).as_deref(), Some("fuse.coldtier"));
    d.signal(libc::SIGINT);
    assert!(d.wait(Duration::from_secs(20)).success(), "{}", d.log());
    assert!(!is_mountpoint(&s.mnt));
    // Not the journal's stream: no priority prefix; still no timestamp and no colours.
    let log = d.log();
    assert!(log.contains("coldtier mounted"), "{log}");
    for l in log.lines().filter(|l| !l.is_empty()) {
        assert!(!l.contains('\x1b') && !l.starts_with('<'), "{l:?}");
        assert!(
            !l.trim_start().starts_with(|c: char| c.is_ascii_digit()),
            "timestamp in {l:?}"
        );
    }
}

#[test]
fn after_a_crash_the_next_start_detaches_the_dead_mount_and_serves_again() {
    let s = setup("");
    std::fs::write(s.src.join("a.txt"), b"data").unwrap();
    let mut notify = Notify::at_path(s.dir.path());
    let stderr = s.dir.path().join("stderr-1.log");
    let mut d = Foreground::start(&s.config, &s.mnt, &notify, &stderr, false);
    notify.wait_for("READY=1", START).expect("first READY");
    d.signal(libc::SIGKILL);
    let st = d.wait(Duration::from_secs(10));
    assert!(!st.success());
    // What systemd finds when it restarts the unit: a dead mount. (The daemon, the
    // supervisor's child, dies with it: a request it was serving then fails with
    // ECONNABORTED; every one after that with ENOTCONN.)
    let t0 = std::time::Instant::now();
    let e = loop {
        let e = std::fs::metadata(&s.mnt).unwrap_err();
        if e.raw_os_error() != Some(libc::ECONNABORTED) || t0.elapsed() > Duration::from_secs(10) {
            break e;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    assert!(is_mountpoint(&s.mnt));

    let second = s.dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let mut notify = Notify::at_path(&second);
    let stderr2 = s.dir.path().join("stderr-2.log");
    let mut d2 = Foreground::start(&s.config, &s.mnt, &notify, &stderr2, false);
    notify
        .wait_for("READY=1", START)
        .unwrap_or_else(|| panic!("no READY after the crash\n{}", d2.log()));
    assert_eq!(std::fs::read(s.mnt.join("a.txt")).unwrap(), b"data");
    assert!(d2.log().contains("detached the dead mount"), "{}", d2.log());
    d2.signal(libc::SIGTERM);
    assert!(d2.wait(Duration::from_secs(20)).success(), "{}", d2.log());
    assert!(!is_mountpoint(&s.mnt), "a mount is left");
}

/// The unit's `CapabilityBoundingSet=~...` and `NoNewPrivileges=yes`, applied with
/// setpriv (systemd applies the same two kernel mechanisms): the mount still does what
/// root's file operations and tiering need.
#[test]
fn the_units_capability_drops_and_no_new_privileges_keep_everything_working() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(UNIT)).unwrap();
    let drops: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet=~"))
        .expect("CapabilityBoundingSet=~ in the unit")
        .split_whitespace()
        .map(|c| format!("-{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert!(drops.len() >= 10, "{drops:?}");
    assert!(text.lines().any(|l| l == "NoNewPrivileges=yes"));
    let store = tempfile::tempdir().unwrap();
    let s = setup(&format!(
        "[store]\nkind = \"posix\"\nroot = {:?}\n",
        store.path().to_str().unwrap()
    ));
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "[policy]\n",
        &format!("[policy]\nmode = \"stub\"\n{POLICY}"),
    );
    std::fs::write(&s.config, text).unwrap();
    let data = vec![3u8; 50_000];
    std::fs::write(s.src.join("big.bin"), &data).unwrap();
    let wrapper = vec![
        "setpriv".to_string(),
        "--no-new-privs".to_string(),
        "--bounding-set".to_string(),
        drops.join(","),
    ];
    let mut notify = Notify::at_path(s.dir.path());
    let stderr = s.dir.path().join("stderr.log");
    let mut d = Foreground::start_wrapped(&wrapper, &s.config, &s.mnt, &notify, &stderr, false);
    notify
        .wait_for("READY=1", START)
        .unwrap_or_else(|| panic!("no READY=1 with the unit's privileges\n{}", d.log()));
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    let bnd = u64::from_str_radix(&bnd, 16).unwrap();
    assert_eq!(
        bnd & (1u64 << 16), // CAP_SYS_MODULE,
        0,
        "sys_module still in the bounding set"
    );
    assert!(status
        .lines()
        .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')));

    let (ok, _, err) = common::sh(&format!(
        "set -e; cd '{m}'; echo hi > f; chown 1000:1000 f; chmod 4755 f; \
         test \"$(stat -c %a:%u f)\" = 4755:1000; mknod dev c 1 3; mkfifo fifo; \
         setfattr -n user.k -v v f; test \"$(getfattr --only-values -n user.k f)\" = v; \
         mkdir -m 1777 pub; setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'echo u > pub/u'; \
         test \"$(stat -c %u pub/u)\" = 1000; mv f g; ln g h; rm h",
        m = s.mnt.display()
    ));
    assert!(
        ok,
        "file operations under the unit's privileges: {err}\n{}",
        d.log()
    );
    // Tiering: trusted.* records, the store, a stub, a recall.
    let v = migrate(&s.mnt);
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}\n{}", d.log());
    assert_eq!(status_of(&s.mnt.join("big.bin"))["state"], "stub", "{v}");
    assert_eq!(std::fs::read(s.mnt.join("big.bin")).unwrap(), data);
    assert_eq!(status_of(&s.mnt.join("big.bin"))["state"], "premigrated");
    d.signal(libc::SIGTERM);
    assert!(d.wait(Duration::from_secs(20)).success(), "{}", d.log());
    assert!(!is_mountpoint(&s.mnt));
}

#[test]
fn mount_paths_from_the_config_and_conflicts_are_bad_input() {
    let s = setup("");
    let other = s.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let cfg = s.config.to_str().unwrap();
    let out = coldtier(&["mount", other.to_str().unwrap(), "--config", cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("differs from mount.source") && err.lines().count() == 1,
        "{err}"
    );
    let out = coldtier(&[
        "mount",
        s.src.to_str().unwrap(),
        other.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("differs from mount.mountpoint"));
    let out = coldtier(&["mount"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SOURCE"));
    // SOURCE alone, agreeing with the config: the config's mount point is used.
    let out = coldtier(&["mount", s.src.to_str().unwrap(), "--config", cfg]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(fstype_at(&s.mnt).as_deref(), Some("fuse.coldtier"));
    let out = coldtier(&["umount", s.mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!is_mountpoint(&s.mnt));
    // A non-loopback metrics address is refused before anything is mounted.
    std::fs::write(
        &s.config,
        format!(
            "{}\n[metrics]\nlisten = \"0.0.0.0:9464\"\n",
            std::fs::read_to_string(&s.config).unwrap()
        ),
    )
    .unwrap();
    let out = coldtier(&["mount", "--config", cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.listen") && err.contains("loopback"),
        "{err}"
    );
    assert!(!is_mountpoint(&s.mnt));
}

// ------------------------------------------------------------------------------------------
// Metrics

fn m(metrics: &BTreeMap<String, f64>, key: &str) -> f64 {
    *metrics
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {metrics:#?}"))
}

fn s3_config(moto: &MotoServer, bucket: &str, port: u16, extra: &str) -> String {
    format!(
        "[store]\nkind = \"s3\"\nendpoint = {:?}\nregion = \"us-east-1\"\nbucket = {bucket:?}\n\
         prefix = \"t\"\npath_style = true\naccess_key = \"coldtier-test\"\n\
         secret_key = \"coldtier-test-secret\"\nchecksum = \"crc32c\"\nconnect_timeout = \"2s\"\n\
         max_attempts = 2\n{extra}\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [recall]\non_archived = \"fail\"\npoll_interval = \"1s\"\nwait_timeout = \"30s\"\n",
        moto.endpoint
    )
}

fn status_of(path: &Path) -> Value {
    let out = coldtier(&["status", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "status: {}", show(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn migrate(mnt: &Path) -> Value {
    let out = coldtier(&["migrate", mnt.to_str().unwrap(), "--json", "--mode", "stub"]);
    assert!(out.status.success(), "migrate: {}", show(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The policy section of the metrics tests: everything of at least 1 byte is cold now.
const POLICY: &str = "atime_older_than = \"0s\"\nmin_size = 1\n";

fn setup_s3(moto: &MotoServer, bucket: &str, port: u16, store_extra: &str) -> Setup {
    let s = setup("");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("[policy]\n", &format!("[policy]\n{POLICY}"));
    std::fs::write(
        &s.config,
        format!("{text}{}", s3_config(moto, bucket, port, store_extra)),
    )
    .unwrap();
    s
}

/// The daemon of `s` in the foreground, once it said READY=1 (and that line).
fn serve_ready(s: &Setup) -> (Foreground, Notify, String) {
    let mut notify = Notify::at_path(s.dir.path());
    let stderr = s.dir.path().join("stderr.log");
    let d = Foreground::start(&s.config, &s.mnt, &notify, &stderr, false);
    let ready = notify
        .wait_for("READY=1", START)
        .unwrap_or_else(|| panic!("no READY=1\n{}", d.log()));
    (d, notify, ready)
}

#[test]
fn metrics_count_migrations_recalls_bytes_latency_and_store_errors() {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("cannot start moto: {e}"));
    moto.create_bucket("metrics", false).unwrap();
    let port = free_port();
    let s = setup_s3(&moto, "metrics", port, "");
    let a = vec![7u8; 100_000];
    let b = vec![9u8; 30_000];
    std::fs::write(s.src.join("a.bin"), &a).unwrap();
    std::fs::write(s.src.join("b.bin"), &b).unwrap();
    let (d, _notify, ready) = serve_ready(&s);
    assert!(
        ready.contains(&format!("metrics on http://127.0.0.1:{port}/metrics")),
        "{ready}"
    );

    let before = scrape(port);
    assert_eq!(m(&before, "coldtier_migrated_bytes_total"), 0.0);
    assert_eq!(m(&before, "coldtier_recalls_total{result=\"ok\"}"), 0.0);
    assert_eq!(m(&before, "coldtier_restores_pending"), 0.0);
    assert_eq!(m(&before, "coldtier_recalls_in_flight"), 0.0);
    let writes_before = m(&before, "coldtier_catalog_write_duration_seconds_count");
    assert!(
        writes_before >= 1.0,
        "the config version is a catalog write"
    );

    let v = migrate(&s.mnt);
    assert_eq!(
        (v["stubbed"].as_u64(), v["failed"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    let after_migrate = scrape(port);
    assert_eq!(
        m(&after_migrate, "coldtier_migrated_bytes_total"),
        130_000.0
    );
    assert_eq!(m(&after_migrate, "coldtier_migrated_files_total"), 2.0);
    assert_eq!(m(&after_migrate, "coldtier_migrations_in_flight"), 0.0);
    assert_eq!(m(&after_migrate, "coldtier_files{state=\"stub\"}"), 2.0);
    assert_eq!(
        m(&after_migrate, "coldtier_file_bytes{state=\"stub\"}"),
        130_000.0
    );
    // Each file: COPIED, VERIFIED and STUBBED in one write (and the job's own rows).
    assert!(
        m(
            &after_migrate,
            "coldtier_catalog_write_duration_seconds_count"
        ) >= writes_before + 2.0
    );

    // A recall through the mount.
    assert_eq!(std::fs::read(s.mnt.join("a.bin")).unwrap(), a);
    // A recall whose object is gone: the open fails, the GET error is counted by kind.
    let key = status_of(&s.mnt.join("b.bin"))["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = moto
        .http("DELETE", &format!("/metrics/{key}"), &[], b"")
        .unwrap();
    assert_eq!(st, 204);
    let e = std::fs::read(s.mnt.join("b.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");

    let after = scrape(port);
    assert_eq!(m(&after, "coldtier_recalls_total{result=\"ok\"}"), 1.0);
    assert_eq!(m(&after, "coldtier_recalls_total{result=\"failed\"}"), 1.0);
    assert_eq!(
        m(&after, "coldtier_recalls_total{result=\"archived_wait\"}"),
        0.0
    );
    assert_eq!(m(&after, "coldtier_recalls_total{result=\"timeout\"}"), 0.0);
    assert_eq!(m(&after, "coldtier_recalled_bytes_total"), 100_000.0);
    assert_eq!(m(&after, "coldtier_recall_duration_seconds_count"), 1.0);
    assert_eq!(
        m(
            &after,
            "coldtier_recall_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        1.0
    );
    let sum = m(&after, "coldtier_recall_duration_seconds_sum");
    assert!(sum > 0.0 && sum < 30.0, "{sum}");
    assert_eq!(m(&after, "coldtier_recalls_in_flight"), 0.0);
    assert_eq!(
        m(
            &after,
            "coldtier_store_errors_total{op=\"get\",kind=\"not_found\"}"
        ),
        1.0
    );
    assert_eq!(
        m(
            &after,
            "coldtier_store_errors_total{op=\"put\",kind=\"not_found\"}"
        ),
        0.0
    );
    assert_eq!(m(&after, "coldtier_files{state=\"premigrated\"}"), 1.0);
    assert_eq!(m(&after, "coldtier_files{state=\"stub\"}"), 1.0);
    // Anything but /metrics is 404.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    drop(d);
}

#[test]
fn metrics_count_an_archived_recall_and_the_pending_restore() {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("cannot start moto: {e}"));
    moto.create_bucket("metrics-glacier", false).unwrap();
    let restore_secs = 3;
    moto.set_restore_seconds(restore_secs).unwrap();
    let port = free_port();
    let s = setup_s3(
        &moto,
        "metrics-glacier",
        port,
        "storage_class = \"GLACIER\"\n",
    );
    let data = vec![5u8; 20_000];
    std::fs::write(s.src.join("cold.bin"), &data).unwrap();
    let mut notify = Notify::at_path(s.dir.path());
    let stderr = s.dir.path().join("stderr.log");
    let d = Foreground::start(&s.config, &s.mnt, &notify, &stderr, false);
    notify
        .wait_for("READY=1", START)
        .unwrap_or_else(|| panic!("no READY=1\n{}", d.log()));
    let v = migrate(&s.mnt);
    assert_eq!(v["stubbed"].as_u64(), Some(1), "{v}");
    let migrated = Instant::now();
    // moto treats a fresh object as restored for `restore_secs`.
    std::thread::sleep(
        Duration::from_millis(restore_secs * 1000 + 500).saturating_sub(migrated.elapsed()),
    );
    let e = std::fs::read(s.mnt.join("cold.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}\n{}", d.log());
    let pending = scrape(port);
    assert_eq!(
        m(&pending, "coldtier_recalls_total{result=\"archived_wait\"}"),
        1.0
    );
    assert_eq!(m(&pending, "coldtier_restores_pending"), 1.0);
    assert_eq!(
        m(
            &pending,
            "coldtier_store_errors_total{op=\"get\",kind=\"invalid_object_state\"}"
        ),
        1.0
    );
    // The background recall finishes once the restore is done.
    let t0 = Instant::now();
    let done = loop {
        let now = scrape(port);
        if m(&now, "coldtier_recalls_total{result=\"ok\"}") == 1.0 || t0.elapsed() > START * 2 {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        m(&done, "coldtier_recalls_total{result=\"ok\"}"),
        1.0,
        "{}",
        d.log()
    );
    assert_eq!(m(&done, "coldtier_restores_pending"), 0.0);
    assert_eq!(m(&done, "coldtier_recalled_bytes_total"), 20_000.0);
    assert_eq!(std::fs::read(s.mnt.join("cold.bin")).unwrap(), data);
    drop(d);
}

/// The metrics an on-call admin alerts on follow what happened: the end of the last policy
/// run and of the last clean one, its failed files, the last catalog backup, whether the
/// store answers and the kind of its last error, the recall queues; and the shipped
/// Prometheus rules (docs/prometheus-alerts.yml) pass `promtool check rules` and use only
/// metrics the daemon exports.
#[test]
fn alert_metrics_follow_runs_backups_and_the_store_and_the_shipped_rules_check() {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("cannot start moto: {e}"));
    moto.create_bucket("alerts", false).unwrap();
    let port = free_port();
    let s = setup_s3(&moto, "alerts", port, "");
    std::fs::write(s.src.join("a.bin"), vec![7u8; 50_000]).unwrap();
    let (d, _notify, _) = serve_ready(&s);

    let before = scrape(port);
    for name in [
        "coldtier_last_policy_run_timestamp_seconds",
        "coldtier_last_policy_run_success_timestamp_seconds",
        "coldtier_last_policy_run_failed_files",
        "coldtier_last_catalog_backup_timestamp_seconds",
        "coldtier_recall_queue_depth{queue=\"deferred\"}",
        "coldtier_recall_queue_depth{queue=\"budget\"}",
    ] {
        assert_eq!(m(&before, name), 0.0, "{name} before anything ran");
    }
    assert_eq!(
        m(&before, "coldtier_store_last_error_info{kind=\"none\"}"),
        1.0
    );
    // The probe (a LIST of an empty prefix at start, then every minute) says the store is up.
    let t0 = Instant::now();
    while m(&scrape(port), "coldtier_store_up") != 1.0 {
        assert!(
            t0.elapsed() < START,
            "the store probe never ran\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let v = migrate(&s.mnt);
    assert_eq!(v["stubbed"].as_u64(), Some(1), "{v}");
    let after = scrape(port);
    let ok_at = m(&after, "coldtier_last_policy_run_success_timestamp_seconds");
    assert!(
        ok_at >= now - 1.0 && ok_at < now + 600.0,
        "{ok_at} vs {now}"
    );
    assert_eq!(
        m(&after, "coldtier_last_policy_run_timestamp_seconds"),
        ok_at
    );
    assert_eq!(m(&after, "coldtier_last_policy_run_failed_files"), 0.0);
    // A dry run is not a run.
    let out = coldtier(&["migrate", "--dry-run", s.mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        m(&scrape(port), "coldtier_last_policy_run_timestamp_seconds"),
        ok_at
    );

    let backups = s.dir.path().join("alert-backups");
    std::fs::create_dir(&backups).unwrap();
    let out = coldtier(&[
        "catalog",
        "backup",
        s.mnt.to_str().unwrap(),
        "--to",
        backups.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let backup_at = m(
        &scrape(port),
        "coldtier_last_catalog_backup_timestamp_seconds",
    );
    assert!(backup_at >= ok_at, "{backup_at} vs {ok_at}");

    // The store goes away: the next run fails its file, the store is down, and the last
    // error's kind says why.
    drop(moto);
    std::fs::write(s.src.join("b.bin"), vec![9u8; 50_000]).unwrap();
    let out = coldtier(&[
        "migrate",
        s.mnt.to_str().unwrap(),
        "--json",
        "--mode",
        "stub",
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let down = scrape(port);
    assert_eq!(m(&down, "coldtier_last_policy_run_failed_files"), 1.0);
    assert!(m(&down, "coldtier_last_policy_run_timestamp_seconds") >= ok_at);
    assert_eq!(
        m(&down, "coldtier_last_policy_run_success_timestamp_seconds"),
        ok_at,
        "the last clean run is still the first"
    );
    assert_eq!(m(&down, "coldtier_store_up"), 0.0);
    assert_eq!(
        m(
            &down,
            "coldtier_store_last_error_info{kind=\"unreachable\"}"
        ),
        1.0
    );
    assert!(
        m(
            &down,
            "coldtier_store_last_error_timestamp_seconds{kind=\"unreachable\"}"
        ) >= now - 1.0
    );
    assert_eq!(
        m(
            &down,
            "coldtier_store_last_error_timestamp_seconds{kind=\"not_found\"}"
        ),
        0.0,
        "the probe's empty LIST is no error"
    );

    // The shipped rules: valid for Prometheus, and only about metrics that exist.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e} (scripts/test.sh installs it: apt-get install prometheus)")
        });
    assert!(out.status.success(), "promtool check rules: {}", show(&out));
    let text = std::fs::read_to_string(&rules).unwrap();
    let exported: std::collections::BTreeSet<String> = down
        .keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .collect();
    let mut used = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("coldtier_") && !word.ends_with('_') {
            used += 1;
            assert!(
                exported.contains(word),
                "the rules use {word}, which the daemon does not export"
            );
        }
    }
    assert!(used >= 7, "the rules name {used} metrics");
    drop(d);
}
