//! Integration tests of the reporting commands (`ls`, `find`, `stats`, `events`, `jobs`,
//! `config`, `audit`, completions, man page) on a real coldtier FUSE mount whose store is
//! a real moto S3 server; and `find` / `stats` timed on a generated catalog of 1,000,000
//! files, with the daemon's resident memory.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use coldtier::store::testing::MotoServer;
use common::{coldtier, show, Mounted};
use serde_json::Value;

const BUCKET: &str = "reports";
const SECRET: &str = "coldtier-test-secret";

/// Runs coldtier; asserts exit 0; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = coldtier(args);
    assert!(out.status.success(), "coldtier {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs coldtier; asserts the exit code; returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = coldtier(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "coldtier {args:?}: want exit {code}: {}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn one(text: &str) -> Value {
    let v = lines(text);
    assert_eq!(v.len(), 1, "one JSON line expected: {text}");
    v.into_iter().next().unwrap()
}

/// HTTP requests moto has logged so far.
fn moto_requests(moto: &MotoServer) -> usize {
    std::fs::read_to_string(&moto.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" HTTP/1.1\""))
        .count()
}

fn set_mtime(p: &Path, secs: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: NUL-terminated path and two valid timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

fn s3_config(moto: &MotoServer, catalog: &Path, extra: &str) -> String {
    format!(
        r#"[store]
kind = "s3"
endpoint = "{}"
region = "us-east-1"
bucket = "{BUCKET}"
prefix = "t"
path_style = true
access_key = "coldtier-test"
secret_key = "{SECRET}"
storage_class = "STANDARD"
connect_timeout = "2s"
max_attempts = 2

[policy]
mode = "copy-only"
atime_older_than = "0s"
min_size = 1
schedule = "off"

[catalog]
path = "{}"
retention = "1h"
{extra}"#,
        moto.endpoint,
        catalog.display()
    )
}

/// A mount with files in every interesting state:
/// d/big (100 KiB, stub), d/mid (50 KiB, premigrated), d/old (2 KiB, premigrated, mtime
/// in 2020), d/keep (3 B, pinned), d/.hidden (empty), d/link -> big, d/sub/ (a directory).
struct Fixture {
    moto: MotoServer,
    _cat_dir: tempfile::TempDir,
    catalog: PathBuf,
    m: Mounted,
}

impl Fixture {
    fn new() -> Fixture {
        let moto = MotoServer::start().unwrap_or_else(|e| panic!("cannot start moto: {e}"));
        moto.create_bucket(BUCKET, false).unwrap();
        let cat_dir = tempfile::tempdir().unwrap();
        let catalog = cat_dir.path().join("catalog.db");
        let m = Mounted::with_config(Some(&s3_config(&moto, &catalog, "")));
        std::fs::create_dir_all(m.m("d/sub")).unwrap();
        std::fs::write(m.m("d/big"), vec![7u8; 100 << 10]).unwrap();
        std::fs::write(m.m("d/mid"), vec![5u8; 50 << 10]).unwrap();
        std::fs::write(m.m("d/old"), vec![3u8; 2 << 10]).unwrap();
        std::fs::write(m.m("d/keep"), b"abc").unwrap();
        std::fs::write(m.m("d/.hidden"), b"").unwrap();
        std::os::unix::fs::symlink("big", m.m("d/link")).unwrap();
        set_mtime(&m.m("d/old"), 1_600_000_000);
        let f = Fixture {
            moto,
            _cat_dir: cat_dir,
            catalog,
            m,
        };
        f.run(&["pin", "d/keep"]);
        let v = one(&ok(&["migrate", f.mnt(), "--json"]));
        assert_eq!(v["failed"], 0, "{v}");
        f.run(&["release", "d/big"]);
        f
    }

    fn mnt(&self) -> &str {
        self.m.mnt.to_str().unwrap()
    }

    fn p(&self, rel: &str) -> String {
        self.m.m(rel).to_str().unwrap().to_string()
    }

    /// `coldtier VERB PATH` on a path inside the mount.
    fn run(&self, args: &[&str]) -> String {
        let (verb, rel) = (args[0], args[1]);
        ok(&[verb, &self.p(rel)])
    }
}

#[test]
fn ls_shows_states_without_recalling_or_asking_s3() {
    let f = Fixture::new();
    let before = moto_requests(&f.moto);
    let text = ok(&["ls", &f.p("d")]);
    let json = lines(&ok(&["ls", "--json", "-a", &f.p("d")]));
    let one_file = one(&ok(&["ls", "--json", &f.p("d/big")]));
    assert_eq!(moto_requests(&f.moto), before, "ls asked the S3 server");

    let by_name = |n: &str| -> &Value {
        json.iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed: {json:?}"))
    };
    assert_eq!(by_name("big")["state"], "stub");
    assert_eq!(
        by_name("big")["size"],
        100 << 10,
        "a stub shows its real size"
    );
    assert_eq!(by_name("big")["storage_class"], "STANDARD");
    assert_eq!(by_name("mid")["state"], "premigrated");
    assert_eq!(by_name("keep")["pinned"], true);
    assert_eq!(by_name("sub")["type"], "dir");
    assert_eq!(by_name("link")["target"], "big");
    assert!(by_name("link")["state"].is_null());
    assert_eq!(by_name(".hidden")["state"], "resident");
    assert_eq!(one_file["state"], "stub");

    // The text form: like `ls -l`, a state column and P for pinned; no dot files by default.
    let row = |n: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.ends_with(&format!(" {n}")) || l.contains(&format!(" {n} -> ")))
            .unwrap_or_else(|| panic!("{n} not in ls output:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let big = row("big");
    assert!(big[0].starts_with("-rw"), "{big:?}");
    assert_eq!(big[4], (100 << 10).to_string());
    assert_eq!(&big[7..10], ["stub", "-", "big"], "{big:?}");
    assert_eq!(&row("keep")[8..], ["P", "keep"]);
    assert!(row("sub")[0].starts_with('d'));
    assert!(row("link")[0].starts_with('l'));
    assert!(!text.contains(".hidden"), "{text}");

    // Nothing was recalled: the stub is still a stub with no local blocks in the source.
    let st = one(&ok(&["status", "--json", &f.p("d/big")]));
    assert_eq!(st["state"], "stub");
    assert_eq!(std::fs::metadata(f.m.s("d/big")).unwrap().len(), 0);

    // The mount point itself, and the current directory by default.
    let root = lines(&ok(&["ls", "--json", f.mnt()]));
    assert_eq!(root.len(), 1);
    assert_eq!(
        (&root[0]["name"], &root[0]["type"]),
        (&Value::from("d"), &Value::from("dir"))
    );
    let out = std::process::Command::new(common::bin())
        .args(["ls", "--json"])
        .current_dir(f.m.m("d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        lines(&String::from_utf8_lossy(&out.stdout)).len(),
        json.len() - 1
    );

    // Bad input: outside any mount, a missing directory.
    fails(&["ls", "/proc"], 2);
    let e = fails(&["ls", &f.p("d/nope")], 2);
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn find_stats_events_jobs_config_and_audit() {
    let mut f = Fixture::new();
    let mnt = f.mnt().to_string();
    let mnt = mnt.as_str();
    let paths = |text: &str| -> Vec<String> {
        lines(text)
            .iter()
            .map(|v| v["rel_path"].as_str().unwrap().to_string())
            .collect()
    };

    // ---- find
    assert_eq!(
        paths(&ok(&["find", mnt, "--state", "stub", "--json"])),
        ["d/big"]
    );
    assert_eq!(
        paths(&ok(&["find", mnt, "--state", "stub,premigrated", "--json"])),
        ["d/big", "d/mid", "d/old"]
    );
    assert_eq!(
        paths(&ok(&["find", mnt, "--larger-than", "40KiB", "--json"])),
        ["d/big", "d/mid"]
    );
    assert_eq!(
        paths(&ok(&["find", mnt, "--older-than", "365d", "--json"])),
        ["d/old"]
    );
    assert_eq!(paths(&ok(&["find", mnt, "--pinned", "--json"])), ["d/keep"]);
    assert_eq!(
        paths(&ok(&["find", mnt, "--path", "d/?id", "--json"])),
        ["d/mid"]
    );
    // An absolute glob inside the mount works too; --limit stops early.
    let abs = format!("{mnt}/d/*");
    assert_eq!(
        paths(&ok(&[
            "find", mnt, "--path", &abs, "--limit", "2", "--json"
        ])),
        ["d/big", "d/keep"]
    );
    let c = one(&ok(&[
        "find",
        mnt,
        "--state",
        "premigrated",
        "--count",
        "--json",
    ]));
    assert_eq!(
        (c["files"].as_u64(), c["bytes"].as_u64()),
        (Some(2), Some(52 << 10))
    );
    let text = ok(&["find", mnt, "--state", "stub"]);
    assert!(
        text.starts_with("stub") && text.trim_end().ends_with("/d/big"),
        "{text}"
    );
    let e = fails(&["find", mnt, "--older-than", "3 fortnights"], 2);
    assert!(e.contains("--older-than"), "{e}");
    let e = fails(&["find", mnt, "--larger-than", "big"], 2);
    assert!(e.contains("--larger-than"), "{e}");

    // ---- stats
    let s = one(&ok(&["stats", mnt, "--json"]));
    let state = |n: &str| {
        s["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["state"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(state("stub")["files"], 1);
    assert_eq!(state("stub")["bytes"], 100 << 10);
    assert_eq!(state("premigrated")["files"], 2);
    assert_eq!(s["local_bytes_saved"], 100 << 10);
    assert_eq!(s["pinned"]["files"], 1);
    let classes = s["storage_classes"].as_array().unwrap();
    assert_eq!(classes.len(), 1, "{s}");
    assert_eq!(classes[0]["storage_class"], "STANDARD");
    assert_eq!(classes[0]["files"], 3);
    assert_eq!(classes[0]["bytes"], (100 + 50 + 2) << 10);
    assert_eq!(classes[0]["price_key"], "costs.standard");
    let want = ((152u64 << 10) as f64) / (1u64 << 30) as f64 * 0.023;
    assert!(
        (s["monthly_usd"].as_f64().unwrap() - want).abs() < 1e-12,
        "{s}"
    );
    let text = ok(&["stats", mnt]);
    assert!(text.contains("local space saved: 100.0 KiB"), "{text}");
    assert!(text.contains("STANDARD"), "{text}");

    // ---- events
    let all = lines(&ok(&["events", mnt, "--json"]));
    assert!(all.len() >= 8, "{all:?}");
    assert!(all
        .windows(2)
        .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    assert!(all
        .iter()
        .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))));
    let stubbed = lines(&ok(&["events", mnt, "--type", "stubbed", "--json"]));
    assert_eq!(stubbed.len(), 1);
    assert_eq!(stubbed[0]["path"], "d/big");
    let mid = lines(&ok(&["events", mnt, "--path", &f.p("d/mid"), "--json"]));
    assert!(
        !mid.is_empty() && mid.iter().all(|e| e["path"] == "d/mid"),
        "{mid:?}"
    );
    let under_d = lines(&ok(&["events", mnt, "--path", &f.p("d"), "--json"]));
    assert!(under_d.len() > mid.len());
    assert!(lines(&ok(&["events", mnt, "--since", "2200-01-01", "--json"])).is_empty());
    assert_eq!(
        lines(&ok(&["events", mnt, "--since", "1h", "--json"])).len(),
        all.len()
    );
    let last = all.last().unwrap()["id"].as_i64().unwrap();
    let after = (last - 2).to_string();
    assert_eq!(
        lines(&ok(&["events", mnt, "--after", &after, "--json"])).len(),
        2
    );
    assert_eq!(
        lines(&ok(&["events", mnt, "--limit", "3", "--json"])).len(),
        3
    );
    let e = fails(&["events", mnt, "--type", "EXPLODED"], 2);
    assert!(e.contains("EXPLODED") && e.contains("STUBBED"), "{e}");
    let e = fails(&["events", mnt, "--since", "last tuesday"], 2);
    assert!(e.contains("--since"), "{e}");

    // ---- jobs
    let jobs = lines(&ok(&["jobs", mnt, "--json"]));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["mode"], "copy-only");
    assert_eq!(jobs[0]["files_copied"], 3, "{jobs:?}"); // big, mid, old (keep is pinned)
    assert_eq!(jobs[0]["bytes_copied"], 152 << 10);
    assert_eq!(jobs[0]["files_failed"], 0);
    assert!(jobs[0]["finished_ns"].as_i64() >= jobs[0]["started_ns"].as_i64());
    assert_eq!(jobs[0]["files_stubbed"], 0);
    // A stub run frees mid and old: a second job, newest first, with the bytes freed (the
    // blocks the two held on disk).
    let held: u64 = ["d/mid", "d/old"]
        .iter()
        .map(|r| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(f.m.s(r)).unwrap().blocks() * 512
        })
        .sum();
    let v = one(&ok(&["migrate", mnt, "--mode", "stub", "--json"]));
    assert_eq!(v["stubbed"], 2, "{v}");
    let jobs = lines(&ok(&["jobs", mnt, "--json"]));
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0]["mode"], "stub");
    assert_eq!(jobs[0]["files_stubbed"], 2);
    let freed = jobs[0]["bytes_stubbed"].as_u64().unwrap();
    assert!(
        (52 << 10..=held).contains(&freed),
        "{freed} freed, {held} held: {jobs:?}"
    );
    assert_eq!(
        lines(&ok(&["jobs", mnt, "--limit", "1", "--json"])).len(),
        1
    );
    let text = ok(&["jobs", mnt]);
    assert!(
        text.contains("copy-only") && text.contains(&coldtier::base::units::short_bytes(freed)),
        "{text}"
    );

    // ---- config: a second version after a remount with a changed config
    let v1 = one(&ok(&["config", "show", mnt, "--json"]));
    assert_eq!(v1["version"], 1);
    let shown = ok(&["config", "show", mnt]);
    assert!(shown.contains("bucket = \"reports\""), "{shown}");
    assert!(!shown.contains(SECRET), "the secret key was shown: {shown}");
    f.m.umount();
    let cfg = f.m.dir.path().join("coldtier.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("max_attempts = 2", "max_attempts = 3")).unwrap();
    f.m.remount();
    let hist = lines(&ok(&["config", "history", mnt, "--json"]));
    assert_eq!(hist.len(), 2);
    assert!(hist
        .iter()
        .all(|h| h["text"].is_null() && h["hash"].as_str().unwrap().len() == 64));
    assert!(ok(&["config", "history", mnt]).contains("(in force)"));
    let diff = ok(&["config", "diff", mnt, "1", "2"]);
    assert!(diff.contains("\n-max_attempts = 2\n"), "{diff}");
    assert!(diff.contains("\n+max_attempts = 3\n"), "{diff}");
    let d = one(&ok(&["config", "diff", mnt, "1", "2", "--json"]));
    assert_eq!(d["changes"].as_array().unwrap().len(), 2, "{d}");
    let e = fails(&["config", "diff", mnt, "1", "9"], 2);
    assert!(
        e.contains("no config version 9") && e.contains("1 to 2"),
        "{e}"
    );

    // ---- audit: intact, then an event row edited behind coldtier's back
    let a = one(&ok(&["audit", mnt, "--json"]));
    assert_eq!(a["ok"], true);
    assert!(a["checked"].as_u64().unwrap() >= all.len() as u64);
    assert!(ok(&["audit", mnt]).contains("event chain intact"));
    let target = stubbed[0]["id"].as_i64().unwrap();
    {
        // What an attacker with write access to the file would do.
        let db = rusqlite::Connection::open(&f.catalog).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        db.execute_batch("DROP TRIGGER events_no_update").unwrap();
        let n = db
            .execute(
                "UPDATE events SET path = 'd/innocent' WHERE id = ?1",
                [target],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let e = fails(&["audit", mnt], 1);
    assert!(
        e.contains(&format!("event chain broken at event {target}:")),
        "{e}"
    );
    let out = coldtier(&["audit", mnt, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let a = one(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (a["ok"].as_bool(), a["first_bad_id"].as_i64()),
        (Some(false), Some(target))
    );
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let text = ok(&["completions", shell]);
        assert!(text.contains("coldtier"), "{shell}");
        assert!(
            text.contains("older-than"),
            "{shell}: find's options are in it"
        );
    }
    fails(&["completions", "tcsh"], 2);
    let page = ok(&["manpage"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH coldtier 1"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    ok(&["manpage", "--dir", dir.path().to_str().unwrap()]);
    for name in [
        "man1/coldtier.1",
        "man1/coldtier-find.1",
        "man1/coldtier-stats.1",
        "man1/coldtier-audit.1",
        "man1/coldtier-catalog-rebuild.1",
        "man1/coldtier-manpage.1",
        "man5/coldtier.toml.5",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.contains(".TH"), "{name}");
    }
    assert!(
        !dir.path().join("man1/coldtier-help.1").exists(),
        "clap's help subcommand gets no page"
    );
    // One page by name, to read without installing: `coldtier manpage coldtier.toml | man -l -`.
    assert!(ok(&["manpage", "coldtier.toml"]).contains(".TH coldtier.toml 5"));
    assert!(ok(&["manpage", "coldtier-migrate"]).contains("EXIT STATUS"));
    fails(&["manpage", "coldtier-nothing"], 2);
    // completions and manpage are listed in --help.
    let help = ok(&["--help"]);
    for c in ["completions", "manpage"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(c)),
            "{help}"
        );
    }
}

/// Writes a catalog of `n` tracked files (and one event per 1000 files) straight into
/// SQLite, in the schema `Catalog::open` creates.
fn generate_catalog(path: &Path, n: u64) {
    drop(coldtier::catalog::Catalog::open(path).unwrap());
    let mut db = rusqlite::Connection::open(path).unwrap();
    // Bulk load: no journal, no fsync, a cache that holds the indexes; WAL again after.
    let mode: String = db
        .query_row("PRAGMA journal_mode = OFF", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "off");
    db.pragma_update(None, "synchronous", "OFF").unwrap();
    db.pragma_update(None, "cache_size", -262_144).unwrap();
    // Index builds sort in memory, not in temporary files beside the catalog: the test
    // needs no more disk than the catalog itself.
    db.pragma_update(None, "temp_store", "MEMORY").unwrap();
    let tx = db.transaction().unwrap();
    // The files table's indexes go while the rows go in, and come back (the same SQL)
    // after: building an index from sorted rows beats a million random inserts.
    let saved: Vec<(String, String, String)> = tx
        .prepare(
            "SELECT type, name, sql FROM sqlite_schema WHERE tbl_name = 'files' \
             AND type IN ('index', 'trigger') AND sql IS NOT NULL",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(saved.len() >= 6, "{saved:?}");
    for (kind, name, _) in &saved {
        tx.execute_batch(&format!("DROP {} {name}", kind.to_uppercase()))
            .unwrap();
    }
    // Paths in sorted order, so each index is appended to. States: 1 in 5 resident, 1 in 5
    // premigrated, the rest stubs, 1000 of them waiting for a restore. Classes: STANDARD,
    // GLACIER and DEEP_ARCHIVE. Sizes from 1 KiB to ~4 GiB; mtimes over ten years.
    tx.execute(
        "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?1)
         INSERT INTO files (file_id, path, state, size, mtime_ns, ctime_ns, ino, object_key,
                            storage_class, pinned, updated_at)
         SELECT printf('%032x', n),
                printf('dir%04d/file%07d.dat', n / 1000, n),
                CASE WHEN n % 5 = 0 THEN 'resident' WHEN n % 5 = 1 THEN 'premigrated'
                     WHEN n % 1000 = 2 THEN 'restore_pending' ELSE 'stub' END,
                1024 + (n * 2654435761) % 4294967296,
                1300000000000000000 + (n * 7919 % 315360000) * 1000000000,
                0, n,
                CASE WHEN n % 5 = 0 THEN NULL ELSE printf('data/%032x/0000000000000000', n) END,
                CASE WHEN n % 5 = 0 THEN NULL WHEN n % 3 = 0 THEN 'GLACIER'
                     WHEN n % 7 = 0 THEN 'DEEP_ARCHIVE' ELSE 'STANDARD' END,
                n % 97 = 0, 0
         FROM i",
        [n as i64],
    )
    .unwrap();
    for (_, _, sql) in &saved {
        tx.execute_batch(sql).unwrap();
    }
    // What the catalog's writes would have added up (the v7 migration's own statement).
    tx.execute_batch(
        "INSERT INTO file_totals (state, storage_class, pinned, files, bytes) \
         SELECT state, coalesce(storage_class, ''), pinned, count(*), coalesce(sum(size), 0) \
         FROM files GROUP BY 1, 2, 3",
    )
    .unwrap();
    tx.commit().unwrap();
    let mode: String = db
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(db);
    let cat = coldtier::catalog::Catalog::open(path).unwrap();
    for k in 0..(n / 1000).min(200) {
        let p = format!("dir{k:04}/file{:07}.dat", k * 1000 + 2);
        cat.append_event(
            None,
            Some(&p),
            coldtier::catalog::EventKind::Failed,
            serde_json::json!({"generated": true}),
        )
        .unwrap();
    }
}

fn vm_rss_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Times one CLI call (process start, socket, query, output) and returns its stdout.
fn timed(label: &str, args: &[&str]) -> String {
    let t = Instant::now();
    let out = ok(args);
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!("BENCH {label}: {ms:.0} ms (coldtier {})", args.join(" "));
    out
}

#[test]
fn find_and_stats_on_a_million_files() {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("big.db");
    let t = Instant::now();
    generate_catalog(&catalog, N);
    eprintln!(
        "BENCH generated a catalog of {N} files in {:.1} s ({} MiB)",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&catalog).unwrap().len() >> 20
    );
    let cfg = format!(
        "[policy]\nschedule = \"off\"\n\n[catalog]\npath = \"{}\"\n",
        catalog.display()
    );
    let m = Mounted::with_config(Some(&cfg));
    let mnt = m.mnt.to_str().unwrap();
    let mut c = coldtier::control::client::Client::connect(&m.mnt).unwrap();
    let ping = c
        .call(coldtier::control::protocol::Op::Ping, |_| {})
        .unwrap();
    let pid = ping["pid"].as_u64().unwrap();
    let rss_start = vm_rss_kib(pid);

    let s = one(&timed("stats", &["stats", mnt, "--json"]));
    assert_eq!(s["files"], N);
    let by = |st: &str| {
        s["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["state"] == st)
            .unwrap()["files"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(by("resident"), N / 5);
    assert_eq!(by("restore_pending"), N / 1000);
    assert_eq!(
        by("resident") + by("premigrated") + by("stub") + by("restore_pending"),
        N
    );
    assert_eq!(s["storage_classes"].as_array().unwrap().len(), 3);

    let rp = lines(&timed(
        "find --state restore_pending (1,000 rows)",
        &["find", mnt, "--state", "restore_pending", "--json"],
    ));
    assert_eq!(rp.len(), (N / 1000) as usize);
    let one_dir = lines(&timed(
        "find --path 'dir0500/*' (1,000 rows)",
        &["find", mnt, "--path", "dir0500/*", "--json"],
    ));
    assert_eq!(one_dir.len(), 1000);
    let big = lines(&timed(
        "find --larger-than 4000000KiB --state stub --limit 100",
        &[
            "find",
            mnt,
            "--larger-than",
            "4000000KiB",
            "--state",
            "stub",
            "--limit",
            "100",
            "--json",
        ],
    ));
    assert!(!big.is_empty() && big.len() <= 100);
    assert!(big
        .iter()
        .all(|f| f["size"].as_u64().unwrap() > 4_000_000 << 10));
    let old = lines(&timed(
        "find --older-than 5000d --limit 1000",
        &[
            "find",
            mnt,
            "--older-than",
            "5000d",
            "--limit",
            "1000",
            "--json",
        ],
    ));
    assert_eq!(old.len(), 1000);
    let count = one(&timed(
        "find --state stub --older-than 365d --count (full index scan)",
        &[
            "find",
            mnt,
            "--state",
            "stub",
            "--older-than",
            "365d",
            "--count",
            "--json",
        ],
    ));
    assert!(count["files"].as_u64().unwrap() > N / 2);
    let ev = lines(&timed(
        "events --type FAILED --path dir0100",
        &[
            "events",
            mnt,
            "--type",
            "FAILED",
            "--path",
            &format!("{mnt}/dir0100"),
            "--json",
        ],
    ));
    assert_eq!(ev.len(), 1);
    let rss_end = vm_rss_kib(pid);
    eprintln!("BENCH daemon VmRSS: {rss_start} KiB after mount, {rss_end} KiB after the queries");
    // Bounded: SQLite's page caches (2 MiB per connection), not the catalog's size.
    assert!(rss_end < 200 * 1024, "daemon VmRSS {rss_end} KiB");
}

/// A mount without `[store]` tiers nothing and says so: no scheduled policy runs or catalog
/// backups (`jobs workers` tells why), and a dry run notes that nothing can be tiered.
#[test]
fn a_mount_without_a_store_schedules_nothing_and_a_dry_run_says_why() {
    let m = Mounted::new();
    std::fs::write(m.s("a.bin"), vec![1u8; 4096]).unwrap();
    let mnt = m.mnt.to_str().unwrap();
    let workers = ok(&["jobs", "workers", mnt]);
    assert!(
        workers.contains("no [store]: no scheduled runs"),
        "{workers}"
    );
    assert!(
        workers.contains("no [store]: no scheduled backups"),
        "{workers}"
    );
    let out = ok(&["migrate", "--dry-run", mnt]);
    assert!(
        out.contains("note: no [store] is configured: nothing can be tiered"),
        "{out}"
    );
    let v = one(&ok(&["migrate", "--dry-run", "--json", mnt]));
    assert_eq!(v["notes"].as_array().map(Vec::len), Some(1), "{v}");
}
