//! The commands on files: `status`, `pin`, `unpin`, `recall`, `release`, `history` and
//! `ls` (a directory like `ls -l`, with each file's tiering state; never recalls).

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use serde::{de::DeserializeOwned, Serialize};

use super::args::{BulkOutput, HistoryArgs, LsArgs, PathsArgs, RecallArgs, ReleaseArgs};
use super::output::{local_minute, print_json_line};
use super::request::{call_on_paths, call_typed, client_for, resolve};
use crate::base::time::format_time;
use crate::base::units::human_bytes;
use crate::control::protocol::Op;
use crate::control::replies::{
    EntryStat, HistoryReply, ListReply, PathResults, PinResult, RecallResult, ReleaseResult,
    StatusEntry,
};

/// Sends the request `op` makes of the resolved paths; prints each file's result (`text`
/// for one that succeeded); fails (exit 1) if any file failed.
fn paths_command<T: Serialize + DeserializeOwned>(
    a: &PathsArgs,
    verb: &str,
    op: impl FnOnce(Vec<PathBuf>, bool) -> Op,
    text: impl Fn(&str, &T) -> String,
) -> anyhow::Result<()> {
    let r: PathResults<T> = call_on_paths(
        &a.paths,
        |p| op(p, a.recursive),
        super::progress::Bar::new(),
    )?;
    for f in &r.results {
        let path = f.path.display().to_string();
        if a.json {
            print_json_line(f);
        } else if let (true, Some(v)) = (f.ok, &f.result) {
            println!("{}", text(&path, v));
        } else {
            eprintln!(
                "coldtier {verb}: {path}: {}",
                f.error.as_deref().unwrap_or("failed")
            );
        }
    }
    if r.failed > 0 {
        return Err(anyhow!("{} of {} paths failed", r.failed, r.results.len()));
    }
    Ok(())
}

/// The text of a result that did nothing (`recall` of resident data, `release` of a stub).
fn note(path: &str, note: Option<&str>) -> String {
    format!("{path}: {}", note.unwrap_or("ok"))
}

pub(super) fn status(a: &PathsArgs) -> anyhow::Result<()> {
    paths_command(
        a,
        "status",
        |paths, recursive| Op::Status { paths, recursive },
        |path, v: &StatusEntry| {
            format!(
                "{:<15} {} {:>10}  {}{}",
                v.state,
                if v.pinned { "P" } else { "-" },
                human_bytes(v.size),
                path,
                v.object_key
                    .as_deref()
                    .map(|k| format!(
                        "  [{} {}{}]",
                        v.storage_class.as_deref().unwrap_or(""),
                        k,
                        v.pack_offset.map(|o| format!(" @{o}")).unwrap_or_default()
                    ))
                    .unwrap_or_default()
            )
        },
    )
}

pub(super) fn pin(a: &PathsArgs, pin: bool) -> anyhow::Result<()> {
    if pin {
        paths_command(
            a,
            "pin",
            |paths, recursive| Op::Pin { paths, recursive },
            |path, _: &PinResult| format!("pinned {path}"),
        )
    } else {
        paths_command(
            a,
            "unpin",
            |paths, recursive| Op::Unpin { paths, recursive },
            |path, _: &PinResult| format!("unpinned {path}"),
        )
    }
}

pub(super) fn recall(a: &RecallArgs) -> anyhow::Result<()> {
    bulk_command(
        &a.paths,
        a.out,
        "recall",
        |paths, recursive| Op::Recall { paths, recursive },
        |path, v: &RecallResult| {
            if v.recalled {
                format!("recalled {path}")
            } else {
                note(path, v.note.as_deref())
            }
        },
        |results: &[&RecallResult], failed| {
            let done: Vec<_> = results.iter().filter(|v| v.recalled).collect();
            let bytes: u64 = done.iter().map(|v| v.bytes.unwrap_or(0)).sum();
            format!(
                "recalled {} files ({}), {} local already, {failed} failed",
                done.len(),
                human_bytes(bytes),
                results.len() - done.len()
            )
        },
    )
}

pub(super) fn release(a: &ReleaseArgs) -> anyhow::Result<()> {
    let dry_run = a.dry_run;
    bulk_command(
        &a.paths,
        a.out,
        "release",
        move |paths, recursive| Op::Release {
            paths,
            recursive,
            dry_run,
        },
        |path, v: &ReleaseResult| {
            if v.released {
                format!("released {path}")
            } else {
                note(path, v.note.as_deref())
            }
        },
        move |results: &[&ReleaseResult], failed| {
            // A dry run's "would release" files carry the bytes they would free.
            let done: Vec<_> = results
                .iter()
                .filter(|v| v.released || (dry_run && v.bytes_freed.is_some()))
                .collect();
            let freed: u64 = done.iter().map(|v| v.bytes_freed.unwrap_or(0)).sum();
            let (verb, free) = if dry_run {
                ("would release", "would free")
            } else {
                ("released", "freed")
            };
            format!(
                "{verb} {} files ({free} {}), {} left as they were, {failed} failed",
                done.len(),
                human_bytes(freed),
                results.len() - done.len()
            )
        },
    )
}

/// `recall` and `release`: a progress bar of the files that need the work, then a summary
/// (`summary` of the results that succeeded and the number that failed); a line per file
/// with -v (`text`), nothing but the errors with -q. Errors always, on stderr; exit 1 if
/// any file failed. `--json`: one object per file, as before.
fn bulk_command<T: Serialize + DeserializeOwned>(
    a: &PathsArgs,
    out: BulkOutput,
    verb: &str,
    op: impl FnOnce(Vec<PathBuf>, bool) -> Op,
    text: impl Fn(&str, &T) -> String,
    summary: impl Fn(&[&T], u64) -> String,
) -> anyhow::Result<()> {
    let bar = if out.quiet || a.json {
        super::progress::Bar::hidden()
    } else {
        super::progress::Bar::new()
    };
    let r: PathResults<T> = call_on_paths(&a.paths, |p| op(p, a.recursive), bar)?;
    let mut ok = Vec::new();
    for f in &r.results {
        let path = f.path.display().to_string();
        if a.json {
            print_json_line(f);
            continue;
        }
        match (f.ok, &f.result) {
            (true, Some(v)) => {
                if out.verbose {
                    println!("{}", text(&path, v));
                }
                ok.push(v);
            }
            _ => eprintln!(
                "coldtier {verb}: {path}: {}",
                f.error.as_deref().unwrap_or("failed")
            ),
        }
    }
    if !a.json && !out.quiet {
        println!("{}", summary(&ok, r.failed));
    }
    if r.failed > 0 {
        return Err(anyhow!("{} of {} paths failed", r.failed, r.results.len()));
    }
    Ok(())
}

pub(super) fn history(a: &HistoryArgs) -> anyhow::Result<()> {
    let p =
        resolve(&a.path).or_else(|_| std::path::absolute(&a.path).map_err(anyhow::Error::from))?;
    let mut c = client_for(p.parent().unwrap_or(&p))?;
    let r: HistoryReply = call_typed(&mut c, Op::History { path: p.clone() })?;
    for e in &r.events {
        if a.json {
            print_json_line(e);
        } else {
            // The id is not padded: the line has always printed it so (it went through
            // serde_json's Display, which ignores a width), and scripts may read it.
            println!(
                "{}  {}  {:<17} config v{}  {}  {}",
                e.id,
                format_time(e.time_ns),
                e.kind,
                e.config_version,
                e.path.as_deref().unwrap_or(""),
                super::output::detail_text(&e.detail, &r.key_prefix)
            );
        }
    }
    Ok(())
}

// ---- ls --------------------------------------------------------------------------------

fn name_of(cache: &mut HashMap<(bool, u32), String>, group: bool, id: u32) -> String {
    cache
        .entry((group, id))
        .or_insert_with(|| {
            let mut buf = vec![0u8; 16384];
            // SAFETY: the out-structs are zeroed plain C structs; buf outlives the calls
            // and the pointers they leave in the structs, which are read before it goes.
            unsafe {
                let mut res: *mut libc::c_void = std::ptr::null_mut();
                if group {
                    let mut g: libc::group = std::mem::zeroed();
                    let rc = libc::getgrgid_r(
                        id,
                        &mut g,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        (&mut res as *mut *mut libc::c_void).cast(),
                    );
                    if rc == 0 && !res.is_null() && !g.gr_name.is_null() {
                        return CStr::from_ptr(g.gr_name).to_string_lossy().into_owned();
                    }
                } else {
                    let mut p: libc::passwd = std::mem::zeroed();
                    let rc = libc::getpwuid_r(
                        id,
                        &mut p,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        (&mut res as *mut *mut libc::c_void).cast(),
                    );
                    if rc == 0 && !res.is_null() && !p.pw_name.is_null() {
                        return CStr::from_ptr(p.pw_name).to_string_lossy().into_owned();
                    }
                }
            }
            id.to_string()
        })
        .clone()
}

/// `drwxr-xr-x`, with setuid/setgid/sticky as `ls` shows them.
pub fn mode_string(kind: &str, mode: u32) -> String {
    let t = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "fifo" => 'p',
        "socket" => 's',
        "char" => 'c',
        "block" => 'b',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    for (i, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> i) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

pub(super) fn ls(a: &LsArgs) -> anyhow::Result<()> {
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let path = resolve(&dir)?;
    let mut c = client_for(&path)?;
    let r: ListReply = call_typed(&mut c, Op::List { path: path.clone() })?;
    let entries: Vec<_> = r
        .entries
        .iter()
        .filter(|e| a.all || !r.dir || !e.name.starts_with('.'))
        .collect();
    if a.json {
        for e in entries {
            print_json_line(e);
        }
        return Ok(());
    }
    let mut names = HashMap::new();
    let size_of = |st: &EntryStat| {
        if a.human {
            human_bytes(st.size)
        } else {
            st.size.to_string()
        }
    };
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            let name = if r.dir {
                e.name.clone()
            } else {
                dir.display().to_string()
            };
            let st = match (&e.error, &e.stat) {
                (None, Some(st)) => st,
                (err, _) => {
                    let err = err.as_deref().unwrap_or("no attributes");
                    return [
                        "?".repeat(10),
                        "?".into(),
                        "?".into(),
                        "?".into(),
                        "?".into(),
                        "?".into(),
                        "?".into(),
                        "?".into(),
                        format!("{name}  ({err})"),
                    ];
                }
            };
            let name = match &st.target {
                Some(t) => format!("{name} -> {t}"),
                None => name,
            };
            [
                mode_string(&st.kind, st.mode),
                st.nlink.to_string(),
                name_of(&mut names, false, st.uid),
                name_of(&mut names, true, st.gid),
                size_of(st),
                local_minute(st.mtime_ns),
                st.state.as_deref().unwrap_or("-").to_string(),
                if st.pinned == Some(true) { "P" } else { "-" }.to_string(),
                name,
            ]
        })
        .collect();
    let mut w = [0usize; 9];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in rows {
        writeln!(
            out,
            "{} {:>w1$} {:<w2$} {:<w3$} {:>w4$} {} {:<w6$} {} {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
            w6 = w[6],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string("dir", 0o755), "drwxr-xr-x");
        assert_eq!(mode_string("file", 0o4644), "-rwSr--r--");
        assert_eq!(mode_string("dir", 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string("symlink", 0o777), "lrwxrwxrwx");
    }
}
