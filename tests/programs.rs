//! Real programs through a coldtier mount: git, SQLite (WAL and rollback journal, several
//! concurrent processes), tar, rsync -aHAX, cp (copy_file_range / sparse), fio with verify,
//! and mmap. Each run is compared with the same work on a plain native directory where that
//! makes sense, and the backing tree is checked to hold what the mount showed.
//!
//! Every test checks the programs it needs first and fails (never skips) naming the apt
//! package when one is missing. Needed on Debian 12:
//!   apt-get install -y git sqlite3 python3 rsync fio tar acl attr coreutils diffutils findutils
//!
//! Data-path tests run twice: with the default configuration (kernel FUSE passthrough for
//! resident files) and with `passthrough = false`, where every read and write is served by
//! the daemon.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::Mounted;

/// Configuration that turns kernel passthrough off, so the daemon serves all file I/O.
const NO_PASSTHROUGH: &str = "[fuse]\npassthrough = false\n";

/// Seconds any single external command may take before it is killed (a hang is a failure).
const CMD_TIMEOUT: u32 = 120;

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// Fails the test (never skips) when a program is missing, naming its apt package.
fn require(tools: &[(&str, &str)]) {
    let mut missing = Vec::new();
    let mut pkgs = Vec::new();
    for (bin, pkg) in tools {
        let ok = Command::new("bash")
            .arg("-c")
            .arg(format!("command -v {bin} >/dev/null 2>&1"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            missing.push(format!("`{bin}` (apt package `{pkg}`)"));
            if !pkgs.contains(pkg) {
                pkgs.push(*pkg);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "required program(s) not installed: {}. Install with: apt-get install -y {}",
        missing.join(", "),
        pkgs.join(" ")
    );
}

/// Fails the test when python3 lacks one of the modules (Debian's `python3` ships them all).
fn require_python(modules: &[&str]) {
    require(&[("python3", "python3")]);
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 cannot import {:?} (apt package `python3`, which provides the sqlite3/mmap/fcntl modules): {}",
        modules,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Single-quotes a path for bash.
fn q(p: impl AsRef<Path>) -> String {
    let s = p.as_ref().to_str().expect("utf-8 path");
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs a bash command line under `timeout`, with a fixed locale and a hermetic git setup.
/// Returns (success, stdout, stderr); a timeout is reported in stderr.
fn shell(cmd: &str) -> (bool, String, String) {
    let out = Command::new("timeout")
        .args(["-k", "5", &CMD_TIMEOUT.to_string(), "bash", "-c", cmd])
        .env("LC_ALL", "C.UTF-8")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05+0000")
        .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05+0000")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("spawn timeout/bash");
    let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() == Some(124) {
        err.push_str(&format!("\n*** TIMED OUT after {CMD_TIMEOUT}s (hang?) ***"));
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

/// Runs a command line that must succeed; returns its stdout.
fn run(cmd: &str) -> String {
    let (ok, out, err) = shell(cmd);
    assert!(
        ok,
        "command failed: {cmd}\n--- stdout:\n{out}\n--- stderr:\n{err}"
    );
    out
}

/// A bash function `g` running git with a hermetic identity and `safe.directory=*`.
const GIT: &str =
    "g() { git -c 'safe.directory=*' -c user.name=Coldtier -c user.email=ct@example.com \
     -c init.defaultBranch=main -c commit.gpgsign=false -c core.autocrlf=false \
     -c gc.auto=0 -c maintenance.auto=false \"$@\"; }; set -e; ";

fn git(cmd: &str) -> String {
    run(&format!("{GIT}{cmd}"))
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Sets atime and mtime (nanoseconds) without following a final symlink.
fn set_times(p: &Path, sec: i64, nsec: i64) {
    let mut ts: [libc::timespec; 2] = unsafe { std::mem::zeroed() };
    for t in ts.iter_mut() {
        t.tv_sec = sec as _;
        t.tv_nsec = nsec as _;
    }
    let c = cstr(p);
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn mkfifo(p: &Path, mode: u32) {
    let c = cstr(p);
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Hard-linked names in the generated tree.
const HARDLINKS: [&str; 3] = ["hl1", "a/hl2", "dir with space/hl3"];
/// Sparse files in the generated tree.
const SPARSE: [&str; 3] = ["sparse", "allhole", "a/b/leading"];

/// Builds a tree exercising what archivers care about: files of many sizes (empty, 1 byte,
/// page, page+1, multi-MiB), sparse files, symlinks (relative, dangling, to a dir), three
/// hard links, a fifo, nested dirs, special modes (setuid, sticky, 0700, 0444), odd names
/// (spaces, unicode, quotes, backslash, tab, newline, leading dash, 200 bytes, deep path)
/// and explicit nanosecond mtimes on everything.
fn make_tree(root: &Path) {
    let p = |r: &str| root.join(r);
    let deep = format!("deep/{}/{}", "d".repeat(120), "e".repeat(100));
    for d in [
        "a/b/c",
        "dir with space",
        "ünï cødé/子目录",
        "empty dir",
        deep.as_str(),
    ] {
        fs::create_dir_all(p(d)).unwrap();
    }
    let files: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("one".into(), b"x".to_vec()),
        ("a/b/c/page".into(), prng_bytes(1, 4096)),
        ("a/b/c/page+1".into(), prng_bytes(2, 4097)),
        ("a/big".into(), prng_bytes(3, 3 * 1024 * 1024 + 17)),
        ("a/text.txt".into(), b"line one\nline two\n".repeat(500)),
        ("dir with space/file name.txt".into(), b"spaces\n".to_vec()),
        (
            "ünï cødé/日本語.txt".into(),
            "こんにちは\n".as_bytes().to_vec(),
        ),
        ("ünï cødé/子目录/ß€.bin".into(), prng_bytes(4, 70_000)),
        ("-leading-dash".into(), b"dash\n".to_vec()),
        ("quote'single\"double".into(), b"q\n".to_vec()),
        ("back\\slash".into(), b"b\n".to_vec()),
        ("tab\there".into(), b"t\n".to_vec()),
        ("new\nline".into(), b"n\n".to_vec()),
        ("n".repeat(200), b"long name\n".to_vec()),
        (format!("{deep}/deepfile"), b"deep\n".to_vec()),
        ("run.sh".into(), b"#!/bin/sh\necho hi\n".to_vec()),
        ("readonly".into(), b"ro\n".to_vec()),
        ("hl1".into(), b"hard link payload\n".to_vec()),
    ];
    for (name, data) in &files {
        fs::write(p(name), data).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    // Sparse: 10 MiB with data in the middle and at the end; 1 MiB with no data at all;
    // 3 MiB with data only in the first page.
    let f = fs::File::create(p("sparse")).unwrap();
    f.set_len(10 << 20).unwrap();
    f.write_all_at(b"middle", 5_000_000).unwrap();
    f.write_all_at(b"tail", (10 << 20) - 4).unwrap();
    let f = fs::File::create(p("allhole")).unwrap();
    f.set_len(1 << 20).unwrap();
    let f = fs::File::create(p("a/b/leading")).unwrap();
    f.write_all_at(&prng_bytes(5, 4096), 0).unwrap();
    f.set_len(3 << 20).unwrap();
    drop(f);
    for h in &HARDLINKS[1..] {
        fs::hard_link(p(HARDLINKS[0]), p(h)).unwrap();
    }
    std::os::unix::fs::symlink("a/big", p("link_rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", p("dangling")).unwrap();
    std::os::unix::fs::symlink("ünï cødé", p("dirlink")).unwrap();
    std::os::unix::fs::symlink("../../one", p("a/b/up")).unwrap();
    mkfifo(&p("fifo"), 0o640);
    chmod(&p("one"), 0o640);
    chmod(&p("run.sh"), 0o755);
    chmod(&p("readonly"), 0o444);
    chmod(&p("a/big"), 0o4755);
    chmod(&p("dir with space"), 0o1777);
    chmod(&p("a/b"), 0o700);
    // Explicit times, children before parents so directory times stick.
    let mut all = walk(root);
    all.reverse();
    for (i, rel) in all.iter().enumerate() {
        set_times(
            &root.join(rel),
            1_000_000_000 + 3600 * i as i64,
            123_456_789 + i as i64,
        );
    }
}

/// All paths under `root` (relative, root itself as ""), sorted, not following symlinks.
fn walk(root: &Path) -> Vec<PathBuf> {
    fn rec(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        out.push(rel.to_path_buf());
        let full = root.join(rel);
        let md =
            fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("lstat {}: {e}", full.display()));
        if md.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&full)
                .unwrap_or_else(|e| panic!("readdir {}: {e}", full.display()))
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                rec(root, &rel.join(n), out);
            }
        }
    }
    let mut v = Vec::new();
    rec(root, Path::new(""), &mut v);
    v
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Size for files and symlinks (directory sizes are filesystem-specific).
    size: Option<u64>,
    mtime: (i64, i64),
    nlink: u64,
    target: Option<PathBuf>,
}

fn meta(p: &Path) -> Meta {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "device"
    };
    Meta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if ft.is_dir() { None } else { Some(md.size()) },
        mtime: (md.mtime(), md.mtime_nsec()),
        nlink: md.nlink(),
        target: if ft.is_symlink() {
            Some(fs::read_link(p).unwrap())
        } else {
            None
        },
    }
}

fn listing(root: &Path) -> BTreeMap<PathBuf, Meta> {
    walk(root)
        .into_iter()
        .map(|r| {
            let m = meta(&root.join(&r));
            (r, m)
        })
        .collect()
}

/// Asserts two trees hold the same names, types, modes, owners, sizes, mtimes (ns unless
/// `mtime_secs_only`), link counts, symlink targets and regular-file bytes.
fn assert_same_tree(a: &Path, b: &Path, mtime_secs_only: bool) {
    let la = listing(a);
    let lb = listing(b);
    let mut problems = Vec::new();
    for k in la
        .keys()
        .chain(lb.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (la.get(k), lb.get(k)) {
            (Some(x), Some(y)) => {
                let (mut x, mut y) = (x.clone(), y.clone());
                if mtime_secs_only {
                    x.mtime.1 = 0;
                    y.mtime.1 = 0;
                }
                if x != y {
                    problems.push(format!(
                        "{k:?}:\n    {}: {x:?}\n    {}: {y:?}",
                        a.display(),
                        b.display()
                    ));
                } else if x.kind == "file"
                    && fs::read(a.join(k)).unwrap() != fs::read(b.join(k)).unwrap()
                {
                    problems.push(format!("{k:?}: contents differ"));
                }
            }
            (Some(_), None) => problems.push(format!("{k:?}: only in {}", a.display())),
            (None, Some(_)) => problems.push(format!("{k:?}: only in {}", b.display())),
            (None, None) => unreachable!(),
        }
    }
    assert!(
        problems.is_empty(),
        "trees differ ({} vs {}):\n{}",
        a.display(),
        b.display(),
        problems.join("\n")
    );
}

/// The generated tree's hard links are one inode with link count 3 under `root`.
fn assert_hardlinks(root: &Path) {
    let ids: Vec<(u64, u64, u64)> = HARDLINKS
        .iter()
        .map(|h| {
            let md = fs::symlink_metadata(root.join(h)).unwrap();
            (md.dev(), md.ino(), md.nlink())
        })
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]) && ids[0].2 == HARDLINKS.len() as u64,
        "hard links not preserved under {}: (dev, ino, nlink) of {HARDLINKS:?} = {ids:?}",
        root.display()
    );
}

fn allocated(p: &Path) -> u64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .blocks()
        * 512
}

/// The generated tree's sparse files occupy far less than their size under `root`.
fn assert_sparse(root: &Path) {
    for f in SPARSE {
        let p = root.join(f);
        let (alloc, size) = (allocated(&p), fs::metadata(&p).unwrap().len());
        assert!(
            alloc * 4 < size,
            "{} is not sparse: {alloc} bytes allocated for size {size}",
            p.display()
        );
    }
}

/// `sha256sum` of every regular file under `root`, as one sorted text.
fn sha_listing(root: &Path) -> String {
    run(&format!(
        "cd {} && find . -type f -print0 | sort -z | xargs -0 sha256sum",
        q(root)
    ))
}

/// `getfattr` dump of all xattrs (user.*, ACLs) under `root`: file -> sorted attribute lines.
fn xattr_dump(root: &Path) -> BTreeMap<String, Vec<String>> {
    let out = run(&format!(
        "cd {} && getfattr -R -P -h -d -m - -e hex .",
        q(root)
    ));
    let mut map = BTreeMap::new();
    for block in out.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.is_empty());
        if let Some(head) = lines.next() {
            let file = head
                .strip_prefix("# file: ")
                .unwrap_or_else(|| panic!("getfattr output: {head:?}"))
                .to_string();
            let mut attrs: Vec<String> = lines.map(str::to_string).collect();
            attrs.sort();
            map.insert(file, attrs);
        }
    }
    map
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    eprintln!("[timing] {what}: {:.2?}", t.elapsed());
    r
}

fn mount(config: Option<&str>) -> Mounted {
    Mounted::with_config(config)
}

// ---------------------------------------------------------------------------------------
// 1. git
// ---------------------------------------------------------------------------------------

#[test]
fn git_clone_status_commit_fsck() {
    require(&[("git", "git"), ("diff", "diffutils"), ("sort", "coreutils")]);
    let m = mount(None);
    let origin = m.n("origin");
    let clone = m.m("clone");
    let native_clone = m.n("clone");

    // A native repository with several commits: exec bit, symlink, binary, spaces, rename.
    git(&format!(
        "g init -q {o}; cd {o}
         printf 'hello\\n' > README; mkdir -p src docs bin
         printf 'int main(void){{return 0;}}\\n' > src/main.c
         printf '#!/bin/sh\\necho run\\n' > bin/run.sh; chmod 755 bin/run.sh
         ln -s README readme.link
         head -c 300000 /dev/urandom > data.bin
         g add -A; g commit -q -m c1
         for i in 2 3 4 5; do echo \"rev $i\" >> README; printf 'doc %s\\n' $i > \"docs/file $i.txt\"; g add -A; g commit -q -m c$i; done
         g mv src/main.c src/app.c; g commit -q -m rename",
        o = q(&origin)
    ));
    let origin_head = git(&format!("cd {} && g rev-parse HEAD", q(&origin)));

    // Clone into the mount (pack transfer + index-pack + checkout through FUSE).
    timed("git clone into mount", || {
        git(&format!(
            "g clone -q --no-local {} {}",
            q(&origin),
            q(&clone)
        ))
    });
    let c = q(&clone);
    assert_eq!(
        git(&format!("cd {c} && g status --porcelain")),
        "",
        "fresh clone not clean"
    );
    let (ok, out, err) = shell(&format!("{GIT}cd {c} && g fsck --full --strict"));
    assert!(
        ok && !err.contains("error") && !err.contains("missing"),
        "git fsck in mount failed:\n{out}\n{err}"
    );
    assert_eq!(git(&format!("cd {c} && g rev-parse HEAD")), origin_head);
    assert_eq!(
        git(&format!("cd {c} && g ls-files -s")),
        git(&format!("cd {} && g ls-files -s", q(&origin))),
        "index (modes/blobs) differs from origin"
    );
    run(&format!(
        "diff -r --no-dereference -x .git {} {c}",
        q(&origin)
    ));
    assert!(
        fs::metadata(clone.join("bin/run.sh")).unwrap().mode() & 0o111 != 0,
        "exec bit lost"
    );
    assert_eq!(
        fs::read_link(clone.join("readme.link")).unwrap(),
        Path::new("README")
    );

    // Check out an old commit and come back (unlink/create/rename in the worktree).
    git(&format!(
        "cd {c} && g checkout -q HEAD~4 && test ! -e src/app.c && g checkout -q main"
    ));
    assert_eq!(
        git(&format!("cd {c} && g status --porcelain")),
        "",
        "not clean after checkout round trip"
    );

    // Modify, see it in status, commit; the same work natively must give the same commit id.
    git(&format!(
        "g clone -q --no-local {} {}",
        q(&origin),
        q(&native_clone)
    ));
    let work = "echo change >> README; echo new > untracked.txt";
    git(&format!("cd {c} && {work}"));
    git(&format!("cd {} && {work}", q(&native_clone)));
    assert_eq!(
        git(&format!("cd {c} && g status --porcelain")),
        " M README\n?? untracked.txt\n"
    );
    let commit = "g add -A && g commit -q -m 'change from mount' && g rev-parse HEAD";
    let head = git(&format!("cd {c} && {commit}"));
    let native_head = git(&format!("cd {} && {commit}", q(&native_clone)));
    assert_eq!(
        head, native_head,
        "commit made in the mount differs from the same commit made natively"
    );
    assert_eq!(git(&format!("cd {c} && g status --porcelain")), "");
    assert_eq!(
        git(&format!("cd {c} && g rev-list --count HEAD")).trim(),
        "7"
    );
    assert_eq!(
        git(&format!("cd {c} && g log --oneline | wc -l")).trim(),
        "7"
    );

    // Objects: mount, backing tree and native clone hold the same set.
    let objects = |gitdir: &Path| {
        git(&format!(
            "g --git-dir={} cat-file --batch-all-objects --batch-check | sort",
            q(gitdir)
        ))
    };
    let in_mount = objects(&clone.join(".git"));
    assert!(
        in_mount.lines().count() > 20,
        "suspiciously few objects:\n{in_mount}"
    );
    assert_eq!(
        objects(&m.s("clone/.git")),
        in_mount,
        "backing tree objects differ from the mount's"
    );
    assert_eq!(
        objects(&native_clone.join(".git")),
        in_mount,
        "native clone objects differ"
    );
    assert_same_tree(
        &clone.join(".git/objects"),
        &m.s("clone/.git/objects"),
        false,
    );
    git(&format!(
        "g --git-dir={} fsck --full --strict",
        q(m.s("clone/.git"))
    ));
    assert_eq!(
        git(&format!(
            "g --git-dir={} rev-parse HEAD",
            q(m.s("clone/.git"))
        )),
        head
    );

    // gc (repack, prune, rename, unlink) in the mount, then everything still holds.
    timed("git gc in mount", || {
        git(&format!("cd {c} && g gc -q --prune=now"))
    });
    git(&format!("cd {c} && g fsck --full --strict"));
    assert_eq!(git(&format!("cd {c} && g status --porcelain")), "");
    assert_eq!(
        objects(&clone.join(".git")),
        in_mount,
        "object set changed by gc"
    );

    // Clone back out of the mount.
    let back = m.n("back");
    git(&format!("g clone -q --no-local {c} {}", q(&back)));
    assert_eq!(git(&format!("cd {} && g rev-parse HEAD", q(&back))), head);
    git(&format!("cd {} && g fsck --full --strict", q(&back)));
}

// ---------------------------------------------------------------------------------------
// 2. SQLite under concurrent load (POSIX locks through the mount)
// ---------------------------------------------------------------------------------------

const SQL_WRITER: &str = r#"
import sqlite3, sys
db, wid, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = sqlite3.connect(db, timeout=30, isolation_level=None)
c.execute("PRAGMA busy_timeout=30000")
for start in range(0, n, batch):
    c.execute("BEGIN IMMEDIATE")
    c.executemany("INSERT INTO t(w, i, payload) VALUES (?, ?, ?)",
                  [(wid, k, ("w%d-%d;" % (wid, k)) * (k % 50)) for k in range(start, start + batch)])
    c.execute("COMMIT")
c.close()
"#;

const SQL_READER: &str = r#"
import sqlite3, sys, time
db, total, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db, timeout=30, isolation_level=None)
c.execute("PRAGMA busy_timeout=30000")
last, reads, deadline = -1, 0, time.time() + 90
while True:
    c.execute("BEGIN")
    n = c.execute("SELECT count(*) FROM t").fetchone()[0]
    per = c.execute("SELECT w, count(*), max(i) FROM t GROUP BY w").fetchall()
    c.execute("COMMIT")
    reads += 1
    if n % batch:
        sys.exit("torn transaction visible: count %d not a multiple of %d" % (n, batch))
    for w, cnt, mx in per:
        if cnt != mx + 1:
            sys.exit("writer %d rows are not a prefix: count %d max %d" % (w, cnt, mx))
    if n < last:
        sys.exit("row count went backwards: %d -> %d" % (last, n))
    last = n
    if n == total:
        break
    if time.time() > deadline:
        sys.exit("reader gave up at %d of %d rows" % (n, total))
    time.sleep(0.003)
print(reads)
"#;

/// Byte-range and whole-file lock semantics between two processes.
const LOCK_PROBE: &str = r#"
import fcntl, os, subprocess, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"x" * 100)
def other(kind):
    code = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\ntry:\n"
            "    %s\n    print('acquired')\nexcept OSError as e:\n    print('errno', e.errno)\n") % kind
    return subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True).stdout.strip()
res = []
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 20)           # bytes 20..29
res.append(other("fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 25)"))  # overlaps
res.append(other("fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 40)"))  # disjoint
res.append(other("fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 29)"))   # last byte
fcntl.lockf(fd, fcntl.LOCK_UN, 10, 20)
res.append(other("fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 25)"))  # now free
fcntl.flock(fd, fcntl.LOCK_EX)
res.append(other("fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"))
fcntl.flock(fd, fcntl.LOCK_UN)
res.append(other("fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"))
print(" | ".join(res))
"#;

fn sqlite_under_load(config: Option<&str>) {
    require(&[("sqlite3", "sqlite3")]);
    require_python(&["sqlite3", "fcntl"]);
    let m = mount(config);
    let scripts = m.dir.path();
    for (name, text) in [
        ("writer.py", SQL_WRITER),
        ("reader.py", SQL_READER),
        ("locks.py", LOCK_PROBE),
    ] {
        fs::write(scripts.join(name), text).unwrap();
    }

    // Locks behave exactly as on the native filesystem.
    let native_locks = run(&format!(
        "python3 {} {}",
        q(scripts.join("locks.py")),
        q(m.n("lockfile"))
    ));
    let mount_locks = run(&format!(
        "python3 {} {}",
        q(scripts.join("locks.py")),
        q(m.m("lockfile"))
    ));
    assert_eq!(
        native_locks.trim(),
        "errno 11 | acquired | errno 11 | acquired | errno 11 | acquired",
        "unexpected native lock semantics"
    );
    assert_eq!(
        mount_locks, native_locks,
        "lock semantics through the mount differ from native"
    );

    const WRITERS: u64 = 4;
    const ROWS: u64 = 2000;
    const BATCH: u64 = 10;
    for mode in ["wal", "delete"] {
        let db = m.m(&format!("{mode}.db"));
        let out = run(&format!(
            "sqlite3 {} 'PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, w INT, i INT, payload TEXT, UNIQUE(w, i));'",
            q(&db)
        ));
        assert_eq!(out.trim(), mode, "journal_mode not set");
        let t = Instant::now();
        let py = |args: Vec<String>| {
            Command::new("timeout")
                .args(["-k", "5", "120", "python3"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn python3")
        };
        let reader = py(vec![
            scripts.join("reader.py").display().to_string(),
            db.display().to_string(),
            (WRITERS * ROWS).to_string(),
            BATCH.to_string(),
        ]);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                py(vec![
                    scripts.join("writer.py").display().to_string(),
                    db.display().to_string(),
                    w.to_string(),
                    ROWS.to_string(),
                    BATCH.to_string(),
                ])
            })
            .collect();
        let mut failures = Vec::new();
        for (w, child) in writers.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            if !out.status.success() {
                failures.push(format!(
                    "writer {w} ({:?}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let out = reader.wait_with_output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "reader ({:?}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        } else if String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            < 2
        {
            failures.push(format!(
                "reader saw no intermediate snapshot: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        assert!(
            failures.is_empty(),
            "[{mode}] concurrent SQLite processes failed:\n{}",
            failures.join("\n")
        );
        eprintln!(
            "[timing] sqlite {mode} {WRITERS}x{ROWS} rows + reader ({} snapshots) ({}): {:.2?}",
            String::from_utf8_lossy(&out.stdout).trim(),
            if config.is_some() {
                "no passthrough"
            } else {
                "passthrough"
            },
            t.elapsed()
        );

        let check = |path: &Path| {
            run(&format!(
                "sqlite3 {} 'PRAGMA integrity_check; SELECT count(*) FROM t; \
                 SELECT w || \":\" || count(*) || \":\" || sum(i) || \":\" || sum(length(payload)) FROM t GROUP BY w ORDER BY w;'",
                q(path)
            ))
        };
        let mut expected = format!("ok\n{}\n", WRITERS * ROWS);
        for w in 0..WRITERS {
            let payload: u64 = (0..ROWS)
                .map(|k| format!("w{w}-{k};").len() as u64 * (k % 50))
                .sum();
            expected.push_str(&format!("{w}:{ROWS}:{}:{payload}\n", ROWS * (ROWS - 1) / 2));
        }
        assert_eq!(
            check(&db),
            expected,
            "[{mode}] database content through the mount is wrong"
        );
        // All connections are closed: the backing file alone holds the whole database.
        // The last connection to close checkpoints and removes the WAL / the journal.
        for suffix in ["-journal", "-wal"] {
            let left = m.s(&format!("{mode}.db{suffix}"));
            assert!(
                !left.exists(),
                "[{mode}] {} left behind after all connections closed",
                left.display()
            );
        }
        assert_eq!(
            check(&m.s(&format!("{mode}.db"))),
            expected,
            "[{mode}] backing database differs"
        );
        assert_eq!(
            fs::read(&db).unwrap(),
            fs::read(m.s(&format!("{mode}.db"))).unwrap(),
            "[{mode}] mount and backing bytes differ"
        );
    }
}

#[test]
fn sqlite_concurrent_wal_and_rollback() {
    sqlite_under_load(None);
}

#[test]
fn sqlite_concurrent_wal_and_rollback_no_passthrough() {
    sqlite_under_load(Some(NO_PASSTHROUGH));
}

// ---------------------------------------------------------------------------------------
// 3. tar
// ---------------------------------------------------------------------------------------

#[test]
fn tar_extract_into_and_create_from_mount() {
    require(&[
        ("tar", "tar"),
        ("diff", "diffutils"),
        ("sha256sum", "coreutils"),
        ("find", "findutils"),
    ]);
    let m = mount(None);
    let native = m.n("tree");
    make_tree(&native);
    let pax = m.dir.path().join("tree.pax");
    run(&format!(
        "tar -C {} --format=posix --sparse -cpf {} tree",
        q(&m.native),
        q(&pax)
    ));

    // Extract into the mount.
    timed("tar -xpf into mount", || {
        run(&format!("tar -C {} -xpf {}", q(&m.mnt), q(&pax)))
    });
    let mounted = m.m("tree");
    run(&format!(
        "diff -r --no-dereference -x fifo {} {}",
        q(&native),
        q(&mounted)
    ));
    let cmp = run(&format!("tar -C {} --compare -f {}", q(&m.mnt), q(&pax)));
    assert_eq!(cmp, "", "tar --compare reported differences");
    assert_same_tree(&native, &mounted, false);
    assert_same_tree(&native, &m.s("tree"), false);
    assert_eq!(sha_listing(&mounted), sha_listing(&native));
    assert_eq!(meta(&mounted.join("fifo")).kind, "fifo");
    assert_hardlinks(&mounted);
    assert_hardlinks(&m.s("tree"));
    assert_sparse(&m.s("tree"));
    assert_sparse(&mounted);

    // Create from the mount (archive written into the mount too): byte-identical to the
    // same archive made from the native tree (GNU format, sorted, sparse maps included).
    let native_tar = m.dir.path().join("native.tar");
    let mount_tar = m.m("from-mount.tar");
    let create = "--format=gnu --sort=name --sparse --numeric-owner -cpf";
    run(&format!(
        "tar -C {} {create} {} tree",
        q(&m.native),
        q(&native_tar)
    ));
    timed("tar -cf from mount", || {
        run(&format!(
            "tar -C {} {create} {} tree",
            q(&m.mnt),
            q(&mount_tar)
        ))
    });
    let (a, b) = (
        fs::read(&native_tar).unwrap(),
        fs::read(&mount_tar).unwrap(),
    );
    assert!(a == b, "archive made from the mount differs from the native one ({} vs {} bytes); listing diff:\n{}",
        a.len(), b.len(),
        shell(&format!("diff <(tar -tvf {}) <(tar -tvf {})", q(&native_tar), q(&mount_tar))).1);
    assert_eq!(
        fs::read(m.s("from-mount.tar")).unwrap(),
        b,
        "backing archive differs"
    );

    // And it restores the native tree (modes, times to the second, links, contents).
    let native2 = m.dir.path().join("native2");
    fs::create_dir(&native2).unwrap();
    run(&format!("tar -C {} -xpf {}", q(&native2), q(&mount_tar)));
    assert_same_tree(&native, &native2.join("tree"), true);
    assert_hardlinks(&native2.join("tree"));
    assert_eq!(
        run(&format!(
            "tar -C {} --compare -f {}",
            q(&m.native),
            q(&mount_tar)
        )),
        ""
    );
}

// ---------------------------------------------------------------------------------------
// 4. rsync -aHAX
// ---------------------------------------------------------------------------------------

#[test]
fn rsync_ahax_round_trip() {
    require(&[
        ("rsync", "rsync"),
        ("getfattr", "attr"),
        ("setfattr", "attr"),
        ("setfacl", "acl"),
        ("getfacl", "acl"),
    ]);
    let m = mount(None);
    let native = m.n("tree");
    make_tree(&native);
    let n = q(&native);
    // user.* xattrs (text, binary, 2 KiB, on a dir, on a hard-linked inode) and ACLs.
    run(&format!(
        "cd {n} && setfattr -n user.color -v blue one && setfattr -n user.bin -v 0x00010203ff a/big \
         && setfattr -n user.long -v \"$(head -c 2000 /dev/zero | tr '\\0' z)\" a/text.txt \
         && setfattr -n user.dir -v yes 'dir with space' && setfattr -n user.hl -v linked hl1 \
         && setfattr -n user.empty readonly \
         && setfacl -m u:nobody:r,g:daemon:rw a/b/c/page && setfacl -d -m u:nobody:rx 'ünï cødé'"
    ));
    let mnt_r = m.m("r");
    let native2 = m.dir.path().join("native2");
    let rs = "rsync -aHAX";

    timed("rsync native -> mount", || {
        run(&format!("{rs} {n}/ {}/", q(&mnt_r)))
    });
    for flags in ["-n --itemize-changes", "-n --itemize-changes --checksum"] {
        let out = run(&format!("{rs} {flags} {n}/ {}/", q(&mnt_r)));
        assert_eq!(
            out, "",
            "rsync {flags} native -> mount still sees changes after a sync:\n{out}"
        );
    }
    timed("rsync mount -> native2", || {
        run(&format!("{rs} {}/ {}/", q(&mnt_r), q(&native2)))
    });
    assert_eq!(
        run(&format!("{rs} -n -i -c {}/ {}/", q(&mnt_r), q(&native2))),
        "",
        "mount -> native2 not in sync"
    );
    assert_eq!(
        run(&format!("{rs} -n -i -c {n}/ {}/", q(&native2))),
        "",
        "round trip native -> mount -> native2 lost something"
    );

    // Metadata, contents, links, sparseness, xattrs and ACLs all made it.
    assert_same_tree(&native, &mnt_r, false);
    assert_same_tree(&native, &m.s("r"), false);
    assert_same_tree(&native, &native2, false);
    assert_hardlinks(&mnt_r);
    assert_hardlinks(&m.s("r"));
    let xa_native = xattr_dump(&native);
    let keys: Vec<&String> = xa_native.keys().collect();
    assert!(
        xa_native
            .get("one")
            .is_some_and(|a| a.iter().any(|l| l.starts_with("user.color="))),
        "getfattr dump: {keys:?}"
    );
    assert!(
        xa_native
            .values()
            .flatten()
            .any(|l| l.starts_with("system.posix_acl_default")),
        "getfattr dump: {keys:?}"
    );
    let xa_mount = xattr_dump(&mnt_r);
    assert_eq!(
        xa_mount, xa_native,
        "xattrs/ACLs through the mount differ from the source"
    );
    assert_eq!(
        xattr_dump(&m.s("r")),
        xa_native,
        "xattrs/ACLs in the backing tree differ from the source"
    );
    assert_eq!(
        xattr_dump(&native2),
        xa_native,
        "xattrs/ACLs after the round trip differ"
    );

    // Incremental update: change one file's middle, delete one, add one; rsync reports
    // exactly those and the trees match again.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(native.join("a/big"))
        .unwrap();
    f.write_all_at(b"CHANGED IN THE MIDDLE", 1_500_000).unwrap();
    drop(f);
    set_times(&native.join("a/big"), 1_700_000_000, 5);
    fs::remove_file(native.join("one")).unwrap();
    fs::write(native.join("a/b/c/added"), b"added\n").unwrap();
    let out = run(&format!(
        "{rs} --delete --itemize-changes {n}/ {}/",
        q(&mnt_r)
    ));
    let names: std::collections::BTreeSet<&str> = out
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |x| x.1).trim_start())
        .collect();
    let want: std::collections::BTreeSet<&str> = ["./", "one", "a/big", "a/b/c/", "a/b/c/added"]
        .into_iter()
        .collect();
    assert_eq!(names, want, "rsync itemized unexpected changes:\n{out}");
    assert!(
        out.contains("*deleting   one"),
        "deletion not reported:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(">f") && l.ends_with(" a/big")),
        "changed file not reported:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(">f+++++++++") && l.ends_with(" a/b/c/added")),
        "new file not reported:\n{out}"
    );
    assert_eq!(
        run(&format!("{rs} -n -i -c --delete {n}/ {}/", q(&mnt_r))),
        "",
        "not in sync after incremental update"
    );
    // Seconds only: rsync itself leaves the sub-second part of the touched directories' mtimes
    // at the time of the update (it happens natively too, and rsync then calls them equal).
    assert_same_tree(&native, &mnt_r, true);
}

// ---------------------------------------------------------------------------------------
// 5. cp --reflink=auto and --sparse=always
// ---------------------------------------------------------------------------------------

fn cp_reflink_and_sparse(config: Option<&str>) {
    require(&[("cp", "coreutils"), ("cmp", "diffutils")]);
    let m = mount(config);
    let big = m.m("big");
    fs::write(&big, prng_bytes(42, 20 << 20)).unwrap();

    timed("cp --reflink=auto 20 MiB within mount", || {
        run(&format!(
            "cp --reflink=auto {} {}",
            q(&big),
            q(m.m("big.copy"))
        ))
    });
    run(&format!("cmp {} {}", q(&big), q(m.m("big.copy"))));
    run(&format!("cmp {} {}", q(m.s("big")), q(m.s("big.copy"))));
    assert_eq!(fs::metadata(m.s("big.copy")).unwrap().len(), 20 << 20);

    // --reflink=always (FICLONE): FUSE cannot forward that ioctl, so "Operation not supported"
    // is an acceptable answer; a success must be a correct copy. The native outcome is logged.
    fs::write(m.n("big"), prng_bytes(42, 1 << 20)).unwrap();
    let (native_ok, _, native_err) = shell(&format!(
        "cp --reflink=always {} {}",
        q(m.n("big")),
        q(m.n("big.r"))
    ));
    let (mount_ok, _, mount_err) = shell(&format!(
        "cp --reflink=always {} {}",
        q(&big),
        q(m.m("big.r"))
    ));
    if mount_ok {
        run(&format!("cmp {} {}", q(&big), q(m.m("big.r"))));
    } else {
        assert!(
            mount_err.contains("Operation not supported") || mount_err.contains("Invalid cross-device link"),
            "cp --reflink=always failed oddly in the mount: {mount_err} (native: ok={native_ok} {native_err})"
        );
    }
    eprintln!("[info] cp --reflink=always: native ok={native_ok} {native_err:?}; mount ok={mount_ok} {mount_err:?}");

    // A sparse 64 MiB file with three data islands, made in the mount.
    let sparse = m.m("sparse");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(&prng_bytes(7, 8192), 0).unwrap();
    f.write_all_at(&prng_bytes(8, 4096), 30_000_000).unwrap();
    f.write_all_at(b"end", (64 << 20) - 3).unwrap();
    drop(f);
    assert!(
        allocated(&m.s("sparse")) < 1 << 20,
        "sparse file written through the mount is not sparse in the backing tree"
    );
    timed("cp --sparse=always 64 MiB sparse within mount", || {
        run(&format!(
            "cp --sparse=always {} {}",
            q(&sparse),
            q(m.m("sparse.copy"))
        ))
    });
    run(&format!("cmp {} {}", q(&sparse), q(m.m("sparse.copy"))));
    let a = allocated(&m.s("sparse.copy"));
    assert!(
        a < 1 << 20,
        "cp --sparse=always copy is not sparse in the backing tree: {a} bytes allocated"
    );
    assert_eq!(fs::metadata(m.s("sparse.copy")).unwrap().len(), 64 << 20);
    run(&format!(
        "test $(du -k {} | cut -f1) -lt 1024",
        q(m.s("sparse.copy"))
    ));

    // A fully written 8 MiB of zeros becomes holes with --sparse=always, natively and in the mount.
    fs::write(m.m("zeros"), vec![0u8; 8 << 20]).unwrap();
    fs::write(m.n("zeros"), vec![0u8; 8 << 20]).unwrap();
    run(&format!(
        "cp --sparse=always {} {}",
        q(m.m("zeros")),
        q(m.m("zeros.sp"))
    ));
    run(&format!(
        "cp --sparse=always {} {}",
        q(m.n("zeros")),
        q(m.n("zeros.sp"))
    ));
    run(&format!("cmp {} {}", q(m.m("zeros")), q(m.m("zeros.sp"))));
    assert!(
        allocated(&m.s("zeros")) >= 8 << 20,
        "dense file unexpectedly sparse"
    );
    assert_eq!(
        allocated(&m.s("zeros.sp")),
        allocated(&m.n("zeros.sp")),
        "cp --sparse=always of zeros: backing allocation differs from native"
    );
    assert!(allocated(&m.s("zeros.sp")) < 64 << 10);

    // Across the mount boundary both ways.
    run(&format!(
        "cp --sparse=always {} {}",
        q(&sparse),
        q(m.n("sparse.out"))
    ));
    run(&format!(
        "cp --sparse=always {} {}",
        q(m.n("sparse.out")),
        q(m.m("sparse.in"))
    ));
    run(&format!("cmp {} {}", q(&sparse), q(m.n("sparse.out"))));
    run(&format!("cmp {} {}", q(&sparse), q(m.m("sparse.in"))));
    assert!(
        allocated(&m.n("sparse.out")) < 1 << 20,
        "copy out of the mount lost sparseness"
    );
    assert!(
        allocated(&m.s("sparse.in")) < 1 << 20,
        "copy into the mount lost sparseness"
    );
}

#[test]
fn cp_reflink_auto_and_sparse() {
    cp_reflink_and_sparse(None);
}

#[test]
fn cp_reflink_auto_and_sparse_no_passthrough() {
    cp_reflink_and_sparse(Some(NO_PASSTHROUGH));
}

// ---------------------------------------------------------------------------------------
// 6. fio random read/write with verify
// ---------------------------------------------------------------------------------------

fn fio_verify(config: Option<&str>) {
    require(&[("fio", "fio")]);
    let m = mount(config);
    let label = if config.is_some() {
        "no passthrough"
    } else {
        "passthrough"
    };
    for (name, engine) in [
        ("psync-buffered", "--ioengine=psync --direct=0"),
        ("libaio-direct", "--ioengine=libaio --direct=1 --iodepth=8"),
    ] {
        let file = m.m(&format!("{name}.dat"));
        // Run from the temp dir with state saving off: fio otherwise drops
        // `local-v-0-verify.state` into the working directory (the repository).
        let cmd = format!(
            "cd {} && fio --name=v --filename={} --size=64M --rw=randrw --bs=4k --verify=crc32c --do_verify=1 \
             --verify_fatal=1 --verify_state_save=0 {engine}",
            q(m.dir.path()),
            q(&file)
        );
        let t = Instant::now();
        let (ok, out, err) = shell(&cmd);
        eprintln!("[timing] fio {name} ({label}): {:.2?}", t.elapsed());
        assert!(ok, "fio {name} failed through the mount ({label}).\ncommand: {cmd}\n--- stdout:\n{out}\n--- stderr:\n{err}");
        assert!(
            out.contains("err= 0"),
            "fio {name} reported an error:\n{out}\n{err}"
        );
        for bad in [
            "verify:",
            "bad magic",
            "crc32c: wanted",
            "Input/output error",
            "Invalid argument",
        ] {
            assert!(
                !out.contains(bad) && !err.contains(bad),
                "fio {name}: {bad:?} in output:\n{out}\n{err}"
            );
        }
        assert!(
            out.contains("READ:") && out.contains("WRITE:"),
            "fio {name} did no I/O?\n{out}"
        );
        assert_eq!(
            fs::metadata(m.s(&format!("{name}.dat"))).unwrap().len(),
            64 << 20,
            "backing file size"
        );
        assert_eq!(
            fs::read(&file).unwrap(),
            fs::read(m.s(&format!("{name}.dat"))).unwrap(),
            "fio file differs between the mount and the backing tree"
        );
    }
}

#[test]
fn fio_randrw_verify() {
    fio_verify(None);
}

#[test]
fn fio_randrw_verify_no_passthrough() {
    fio_verify(Some(NO_PASSTHROUGH));
}

// ---------------------------------------------------------------------------------------
// 7. mmap
// ---------------------------------------------------------------------------------------

/// Page `p` of generation `g`: "g{g}p{p};" repeated to 4096 bytes.
fn mm_page(g: u32, p: usize) -> Vec<u8> {
    let unit = format!("g{g}p{p};").into_bytes();
    unit.iter().cycle().take(4096).copied().collect()
}

const MM_SIZE: usize = 8 * 1024 * 1024 + 123;

/// Expected file: generation `g` on pages where `pick(page)`, else generation 1.
fn mm_expected(g: u32, pick: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(MM_SIZE + 4096);
    let mut p = 0;
    while v.len() < MM_SIZE {
        v.extend(mm_page(if pick(p) { g } else { 1 }, p));
        p += 1;
    }
    v.truncate(MM_SIZE);
    v
}

/// Writer: maps the file shared, fills generation 1, msyncs, reports; on "next" writes
/// generation 2 on even pages WITHOUT msync, reports; on "next" msyncs, unmaps, exits.
const MM_WRITER: &str = r#"
import mmap, os, sys
path, size = sys.argv[1], int(sys.argv[2])
def page(g, p): return (("g%dp%d;" % (g, p)).encode() * 4096)[:4096]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, size)
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
npages = (size + 4095) // 4096
for p in range(npages):
    end = min(size, (p + 1) * 4096)
    m[p * 4096:end] = page(1, p)[:end - p * 4096]
m.flush()
print("synced", flush=True)
sys.stdin.readline()
for p in range(0, npages, 2):
    end = min(size, (p + 1) * 4096)
    m[p * 4096:end] = page(2, p)[:end - p * 4096]
print("dirty", flush=True)
sys.stdin.readline()
m.flush(); m.close(); os.close(fd)
print("done", flush=True)
"#;

/// Reader: maps the file shared read-only in a separate process and dumps it to argv[2].
const MM_READER: &str = r#"
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
open(sys.argv[2], "wb").write(m[:])
"#;

/// One process: a shared mapping must see a pwrite() made through another descriptor, and
/// a store through the mapping must be seen by pread().
const MM_COHERENCE: &str = r#"
import mmap, os, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
_ = m[:]  # fault every page in first
fd2 = os.open(path, os.O_RDWR)
os.pwrite(fd2, b"WRITTEN-BY-PWRITE", 4096 * 3 + 10)
seen = m[4096 * 3 + 10:4096 * 3 + 27]
m[4096 * 5 + 1:4096 * 5 + 17] = b"STORED-BY-MMAP!!"
got = os.pread(fd2, 16, 4096 * 5 + 1)
m.flush(); m.close(); os.close(fd); os.close(fd2)
print(seen.decode(), got.decode())
"#;

fn mmap_two_processes(config: Option<&str>) {
    require_python(&["mmap"]);
    let m = mount(config);
    let dir = m.dir.path();
    for (name, text) in [
        ("mmw.py", MM_WRITER),
        ("mmr.py", MM_READER),
        ("mmc.py", MM_COHERENCE),
    ] {
        fs::write(dir.join(name), text).unwrap();
    }
    let gen1 = mm_expected(1, |_| false);
    let gen2 = mm_expected(2, |p| p % 2 == 0);
    let read_other_process = |path: &Path| -> Vec<u8> {
        let dump = dir.join("dump");
        run(&format!(
            "python3 {} {} {}",
            q(dir.join("mmr.py")),
            q(path),
            q(&dump)
        ));
        fs::read(&dump).unwrap()
    };
    let t = Instant::now();
    for (base, backing) in [
        (m.native.clone(), None),
        (m.mnt.clone(), Some(m.s("mm.dat"))),
    ] {
        let path = base.join("mm.dat");
        let where_ = if backing.is_some() { "mount" } else { "native" };
        let mut child = Command::new("timeout")
            .args(["-k", "5", "120", "python3"])
            .arg(dir.join("mmw.py"))
            .arg(&path)
            .arg(MM_SIZE.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut expect_line = |want: &str| {
            let mut l = String::new();
            stdout.read_line(&mut l).unwrap();
            assert_eq!(l.trim(), want, "[{where_}] mmap writer protocol");
        };
        expect_line("synced");
        // After msync, with the writer still mapping it: visible to a second process, to
        // read(2), and in the backing file.
        assert!(
            read_other_process(&path) == gen1,
            "[{where_}] second process mmap does not see msynced data"
        );
        assert!(
            fs::read(&path).unwrap() == gen1,
            "[{where_}] read() does not see msynced data"
        );
        if let Some(b) = &backing {
            assert!(
                fs::read(b).unwrap() == gen1,
                "msynced mmap data not in the backing file"
            );
        }
        writeln!(stdin, "next").unwrap();
        expect_line("dirty");
        // Stores not yet msynced are visible to other processes (shared page cache).
        assert!(
            read_other_process(&path) == gen2,
            "[{where_}] second process does not see unsynced MAP_SHARED stores"
        );
        assert!(
            fs::read(&path).unwrap() == gen2,
            "[{where_}] read() does not see unsynced MAP_SHARED stores"
        );
        writeln!(stdin, "next").unwrap();
        expect_line("done");
        assert!(child.wait().unwrap().success(), "[{where_}] writer failed");
        assert!(
            fs::read(&path).unwrap() == gen2,
            "[{where_}] final content wrong"
        );
        if let Some(b) = &backing {
            assert!(
                fs::read(b).unwrap() == gen2,
                "final mmap data not in the backing file"
            );
        }
        let out = run(&format!("python3 {} {}", q(dir.join("mmc.py")), q(&path)));
        assert_eq!(
            out.trim(),
            "WRITTEN-BY-PWRITE STORED-BY-MMAP!!",
            "[{where_}] mmap/read/write coherence"
        );
    }
    eprintln!(
        "[timing] mmap ({}): {:.2?}",
        if config.is_some() {
            "no passthrough"
        } else {
            "passthrough"
        },
        t.elapsed()
    );
    assert!(
        fs::read(m.n("mm.dat")).unwrap() == fs::read(m.m("mm.dat")).unwrap(),
        "native and mount results differ"
    );
    assert!(
        fs::read(m.s("mm.dat")).unwrap() == fs::read(m.m("mm.dat")).unwrap(),
        "backing differs from mount"
    );
}

#[test]
fn mmap_write_then_read_in_other_process() {
    mmap_two_processes(None);
}

#[test]
fn mmap_write_then_read_in_other_process_no_passthrough() {
    mmap_two_processes(Some(NO_PASSTHROUGH));
}
