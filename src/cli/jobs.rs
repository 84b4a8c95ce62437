//! The commands on tiering jobs: `migrate`, `gc`, `verify`, `jobs` (the runs, `jobs
//! cancel`, `jobs workers`), `recalls` (and `recalls cancel`), `pause` and `resume`.

use anyhow::anyhow;

use super::args::{
    ArchiveArgs, GcArgs, JobsArgs, JobsCancelArgs, JobsCommand, JobsWorkersArgs, MigrateArgs,
    MountpointArgs, MountsArgs, RecallsArgs, RecallsCommand, ReplicasArgs, ReplicateArgs,
    VerifyArgs,
};
use super::output::print_json_line;
use super::request::{call_typed, client_for};
use crate::base::time::format_time;
use crate::base::units::human_bytes;
use crate::control::protocol::Op;
use crate::control::replies::{
    CancelJobReply, CancelWorkerReply, GcReport, JobRow, JobsReply, MigrateReport, PauseReply,
    PingReply, RecallRow, RecallsReply, ReplicasReply, ReplicateReport, ResumeReply, VerifyReport,
    WorkerRow, WorkersReply,
};

pub(super) fn migrate(a: &MigrateArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    // A path inside the mount runs the policy on that tree only.
    let under = Some(super::request::resolve(&a.mountpoint)?);
    let op = Op::Migrate {
        dry_run: a.dry_run,
        mode: a.mode.clone(),
        under,
    };
    let r: MigrateReport = call_typed(&mut c, op)?;
    run_report(&r, a.json, "migrate")
}

/// `coldtier archive PATH... [-r] [--release] [--dry-run]`.
pub(super) fn archive(a: &ArchiveArgs) -> anyhow::Result<()> {
    let op = |paths| Op::Archive {
        paths,
        recursive: a.recursive,
        release: a.release,
        dry_run: a.dry_run,
    };
    let r: MigrateReport =
        super::request::call_on_paths(&a.paths, op, super::progress::Bar::new())?;
    run_report(&r, a.json, "archive")
}

/// Prints what a policy run (or an archive) did, and fails when files failed.
fn run_report(r: &MigrateReport, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        print_json_line(r);
    } else {
        for k in &r.skipped {
            println!("left alone {}: {}", k.path, k.reason);
        }
        if r.mode == "dry-run" {
            for f in &r.files {
                println!(
                    "would {:<9} {:>10}  {}",
                    f.plan,
                    human_bytes(f.size),
                    f.path
                );
            }
        }
        let freed = if r.mode == "dry-run" {
            format!("would free {}", human_bytes(r.bytes_to_free))
        } else {
            format!("freed {}", human_bytes(r.bytes_freed))
        };
        let skipped = if r.skipped.is_empty() {
            String::new()
        } else {
            format!(", left alone {}", r.skipped.len())
        };
        println!(
            "job {} ({}): scanned {}, candidates {} (deferred {}), copied {} ({}), stubbed {} ({freed}){skipped}, busy {}, failed {} in {:.1}s",
            r.job_id,
            r.mode,
            r.scanned,
            r.candidates,
            r.deferred,
            r.copied,
            human_bytes(r.bytes_copied),
            r.stubbed,
            r.busy,
            r.failed,
            r.seconds
        );
        for n in &r.notes {
            println!("note: {n}");
        }
        if let Some(why) = &r.stopped {
            println!("stopped early: {why}; the next run goes on with the rest");
        }
        for e in &r.errors {
            eprintln!("coldtier {verb}: {e}");
        }
    }
    if r.failed > 0 {
        return Err(anyhow!("{} files failed", r.failed));
    }
    if r.cancelled {
        return Err(anyhow!("the run was cancelled"));
    }
    // A path named that cannot be archived at all (missing, a directory without -r, not a
    // regular file) is an error; files left alone by a pin or an exclude are not.
    let refused = r
        .skipped
        .iter()
        .filter(|k| matches!(k.kind.as_str(), "missing" | "directory" | "not-regular"))
        .count();
    if refused > 0 {
        return Err(anyhow!("{refused} of the paths named cannot be archived"));
    }
    Ok(())
}

/// `coldtier replicate MOUNTPOINT --to NAME [--dry-run] [--json]`.
pub(super) fn replicate(a: &ReplicateArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r: ReplicateReport = call_typed(
        &mut c,
        Op::Replicate {
            to: a.to.clone(),
            dry_run: a.dry_run,
        },
    )?;
    if a.json {
        print_json_line(&r);
    } else {
        for p in &r.paths {
            println!("would copy  {p}");
        }
        println!(
            "job {} (replicate to {}{}): {} objects missing ({}), copied {} ({}), found there already {}, restoring {}, failed {} in {:.1}s",
            r.job_id,
            r.target,
            if r.dry_run { ", dry run" } else { "" },
            r.missing,
            human_bytes(r.missing_bytes),
            r.copied,
            human_bytes(r.bytes_copied),
            r.found,
            r.restoring,
            r.failed,
            r.seconds
        );
        if r.restoring > 0 {
            println!(
                "{} archived objects are being restored on the primary: run replicate again once they are (the archive tier's time: minutes to 48 hours)",
                r.restoring
            );
        }
        for e in &r.errors {
            eprintln!("coldtier replicate: {e}");
        }
    }
    if r.failed > 0 {
        return Err(anyhow!("{} objects failed", r.failed));
    }
    if r.cancelled {
        return Err(anyhow!("the replication was cancelled"));
    }
    Ok(())
}

/// `coldtier replicas MOUNTPOINT [--all] [--json]`.
pub(super) fn replicas(a: &ReplicasArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r: ReplicasReply = call_typed(&mut c, Op::Replicas)?;
    if a.json {
        for t in &r.targets {
            print_json_line(t);
        }
        return Ok(());
    }
    if r.targets.is_empty() {
        println!("no [[replica]] targets are configured");
    }
    for t in &r.targets {
        let last = match (t.last_job, t.last_finished_ns) {
            (Some(id), Some(ns)) => format!(
                "last run: job {id} at {}, copied {}, failed {}",
                super::output::local_minute(ns),
                t.last_copied,
                t.last_failed
            ),
            _ => "never replicated".into(),
        };
        println!(
            "{}  {}\n  replicated {} of {} objects ({} of {}), missing {} ({}){}; {last}",
            t.name,
            t.store,
            t.replicated,
            t.objects,
            human_bytes(t.replicated_bytes),
            human_bytes(t.bytes),
            t.missing,
            human_bytes(t.missing_bytes),
            if t.in_flight { ", a run in flight" } else { "" },
        );
        let shown = if a.all { t.missing_paths.len() } else { 20 };
        for p in t.missing_paths.iter().take(shown) {
            println!("  missing  {p}");
        }
        if t.missing_paths.len() > shown {
            println!(
                "  ... and {} more (--all or --json for every one)",
                t.missing_paths.len() - shown
            );
        }
    }
    Ok(())
}

pub(super) fn pause(a: &MountpointArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let _: PauseReply = call_typed(&mut c, Op::Pause)?;
    println!(
        "{}: tiering paused (recalls go on); `coldtier resume` resumes it",
        c.mountpoint.display()
    );
    Ok(())
}

pub(super) fn resume(a: &MountpointArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r: ResumeReply = call_typed(&mut c, Op::Resume)?;
    println!(
        "{}: store check passed ({}); tiering resumed",
        c.mountpoint.display(),
        if r.validates_checksums {
            "the store validates checksums"
        } else {
            "the store does not validate checksums: copies are read back"
        }
    );
    Ok(())
}

pub(super) fn gc(a: &GcArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r: GcReport = call_typed(&mut c, Op::Gc { dry_run: a.dry_run })?;
    if a.json {
        print_json_line(&r);
    } else {
        for d in &r.deleted {
            println!(
                "{} {}{} ({})",
                if a.dry_run { "would delete" } else { "deleted" },
                d.object_key,
                d.target
                    .as_deref()
                    .map(|t| format!(
                        " on replica {t}{}",
                        if d.unrecorded {
                            " (a copy the catalog did not record)"
                        } else {
                            ""
                        }
                    ))
                    .unwrap_or_default(),
                d.reason
            );
        }
        for p in &r.repacked {
            let live = format!(
                "{} live members, {} of {} bytes",
                p.live_members, p.live_bytes, p.pack_bytes
            );
            match (&p.repacked_into, &p.error) {
                (Some(new), _) => println!(
                    "repacked {} into {new} ({live}; {} switched, {} left)",
                    p.object_key,
                    p.switched.unwrap_or(0),
                    p.left.unwrap_or(0)
                ),
                (None, Some(e)) => println!("cannot repack {} ({live}): {e}", p.object_key),
                (None, None) => println!("would repack {} ({live})", p.object_key),
            }
        }
        for k in &r.kept_named_on_disk {
            println!(
                "kept {}: {} names it, though the catalog does not (its backing file copied \
                 with its xattrs outside the mount?)",
                k.object_key, k.path
            );
        }
        println!(
            "{} objects {}, {} kept under retention, {} kept as files on disk name them",
            r.deleted.len(),
            if a.dry_run { "to delete" } else { "deleted" },
            r.kept_under_retention,
            r.kept_named_on_disk.len()
        );
    }
    if !r.errors.is_empty() {
        for e in &r.errors {
            eprintln!("coldtier gc: {e}");
        }
        return Err(anyhow!("{} deletions failed", r.errors.len()));
    }
    Ok(())
}

pub(super) fn verify(a: &VerifyArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r: VerifyReport = call_typed(&mut c, Op::Verify { deep: a.deep })?;
    let findings = r.findings.len();
    if a.json {
        print_json_line(&r);
    } else {
        for f in &r.findings {
            let mut line = format!("{:<20}", f.kind.to_uppercase());
            if let Some(p) = &f.path {
                line.push_str(&format!(" {p}"));
            }
            if let Some(k) = &f.object_key {
                line.push_str(&format!(" [{k}]"));
            }
            println!("{line}: {}", f.message);
        }
        for n in &r.notes {
            println!("note: {n}");
        }
        println!(
            "verify{} (job {}): {} files, {} stubs, {} premigrated; {} objects listed, {} checked{}{}; {} retained for gc; {}",
            if a.deep { " --deep" } else { "" },
            r.job_id,
            r.files_scanned,
            r.stubs,
            r.premigrated,
            r.objects_listed,
            r.objects_checked,
            if a.deep {
                format!(", {} read back ({})", r.objects_reread, human_bytes(r.bytes_reread))
            } else {
                String::new()
            },
            if r.replica_copies_checked > 0 {
                format!("; {} replica copies checked", r.replica_copies_checked)
            } else {
                String::new()
            },
            r.retained,
            if findings == 0 {
                "clean".to_string()
            } else {
                format!("{findings} findings")
            }
        );
    }
    if findings > 0 {
        return Err(anyhow!(
            "verify found {findings} problems (each one is a VERIFY_FINDING event)"
        ));
    }
    Ok(())
}

pub(super) fn jobs(a: &JobsArgs) -> anyhow::Result<()> {
    match &a.command {
        Some(JobsCommand::Cancel(a)) => return cancel(a),
        Some(JobsCommand::Workers(a)) => return workers(a),
        None => {}
    }
    let mp = a.mountpoint.as_deref().expect("clap requires it");
    let mut c = client_for(mp)?;
    let r: JobsReply = call_typed(&mut c, Op::Jobs { limit: a.limit })?;
    if a.json {
        for j in &r.jobs {
            print_json_line(j);
        }
    } else {
        print!("{}", jobs_text(&r.jobs));
    }
    Ok(())
}

fn cancel(a: &JobsCancelArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    if let Some(id) = a.worker {
        let r: CancelWorkerReply = call_typed(&mut c, Op::CancelWorker { worker: id })?;
        if r.state == "busy" {
            println!(
                "worker {} ({}) cancelled: its work in progress stops; it then waits for its next",
                r.worker, r.name
            );
        } else {
            println!(
                "worker {} ({}) is {}: nothing was in progress to cancel",
                r.worker, r.name, r.state
            );
        }
        return Ok(());
    }
    let r: CancelJobReply = call_typed(&mut c, Op::CancelJob { job: a.id })?;
    println!(
        "job {} ({}) cancelled: it finishes the files under way and stops",
        r.cancelled, r.kind
    );
    Ok(())
}

pub(super) fn recalls(a: &RecallsArgs) -> anyhow::Result<()> {
    let (mp, op, json) = match &a.command {
        Some(RecallsCommand::Cancel(c)) => (
            c.mountpoint.as_path(),
            Op::CancelRecalls {
                recall: c.id,
                uid: c.uid,
                all: c.all,
            },
            false,
        ),
        None => (
            a.mountpoint.as_deref().expect("clap requires it"),
            Op::Recalls,
            a.json,
        ),
    };
    let cancel = matches!(op, Op::CancelRecalls { .. });
    let mut c = client_for(mp)?;
    let r: RecallsReply = call_typed(&mut c, op)?;
    if json {
        for row in &r.recalls {
            print_json_line(row);
        }
    } else if cancel {
        for row in &r.recalls {
            println!("cancelled: {} ({})", row.path, row.state);
        }
    } else {
        print!("{}", recalls_text(&r.recalls));
    }
    Ok(())
}

/// `coldtier mounts`: every coldtier mount in the mount table, and what its daemon says.
pub(super) fn mounts(a: &MountsArgs) -> anyhow::Result<()> {
    let table = crate::base::mountinfo::read()?;
    let mut rows = Vec::new();
    for m in table
        .iter()
        .filter(|m| crate::base::mountinfo::is_coldtier(&m.fstype))
    {
        let answer = crate::control::client::Client::connect(&m.mount_point)
            .map_err(anyhow::Error::from)
            .and_then(|mut c| call_typed::<PingReply>(&mut c, Op::Ping));
        rows.push(match answer {
            Ok(p) => serde_json::json!({
                "mountpoint": m.mount_point,
                "state": "serving",
                "pid": p.pid,
                "source": p.detail.as_ref().map(|d| &d.source),
                "version": p.detail.as_ref().map(|d| &d.version),
                "config": p.detail.as_ref().and_then(|d| d.config.as_ref()),
                "config_version": p.detail.as_ref().map(|d| d.config_version),
                "store": p.detail.as_ref().and_then(|d| d.store.as_ref()),
                "catalog": p.detail.as_ref().map(|d| &d.catalog),
                "metrics": p.detail.as_ref().and_then(|d| d.metrics.as_ref()),
                "paused": p.detail.as_ref().map(|d| d.paused),
            }),
            Err(e) => serde_json::json!({
                "mountpoint": m.mount_point,
                "state": "not answering",
                "error": e.to_string(),
            }),
        });
    }
    if a.json {
        for r in &rows {
            print_json_line(r);
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("no coldtier mounts");
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(x) => x.clone(),
        x => x.to_string(),
    };
    for r in &rows {
        println!("{}  ({})", s(&r["mountpoint"]), s(&r["state"]));
        for k in [
            "source",
            "pid",
            "version",
            "config",
            "config_version",
            "store",
            "catalog",
            "metrics",
            "paused",
            "error",
        ] {
            if r.get(k).is_some() {
                println!("  {k:<15} {}", s(&r[k]));
            }
        }
    }
    Ok(())
}

/// The `coldtier recalls` table.
pub fn recalls_text(rows: &[RecallRow]) -> String {
    if rows.is_empty() {
        return "no recalls in flight, queued or waiting for a restore\n".into();
    }
    let mut s = format!(
        "{:>20}  {:<10} {:>10} {:>10} {:>6} {:>8}  {:<16} {:<19}  {}\n",
        "ID", "STATE", "SIZE", "DONE", "UID", "PID", "PROGRAM", "SINCE", "PATH"
    );
    for r in rows {
        let who = |k: &str| {
            r.who
                .as_ref()
                .and_then(|w| w.get(k))
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_else(|| "-".into())
        };
        s.push_str(&format!(
            "{:>20}  {:<10} {:>10} {:>10} {:>6} {:>8}  {:<16} {:<19}  {}\n",
            r.id,
            r.state,
            r.size,
            r.done,
            who("uid"),
            who("pid"),
            who("program"),
            format_time(r.since_ns),
            r.path
        ));
    }
    s
}

fn workers(a: &JobsWorkersArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r: WorkersReply = call_typed(&mut c, Op::Workers)?;
    if a.json {
        for w in &r.workers {
            print_json_line(w);
        }
    } else {
        print!("{}", workers_text(&r.workers));
    }
    Ok(())
}

/// The `jobs workers` table: columns as wide as their widest cell (STATUS, the last, as
/// long as it is).
pub fn workers_text(workers: &[WorkerRow]) -> String {
    let rows: Vec<[String; 7]> = workers
        .iter()
        .map(|w| {
            [
                w.id.to_string(),
                w.name.clone(),
                w.state.clone(),
                w.runs.to_string(),
                w.errors.to_string(),
                match (&w.last_error, w.last_error_ns) {
                    (Some(e), Some(t)) => format!("{} {e}", format_time(t)),
                    (Some(e), None) => e.clone(),
                    (None, _) => "-".into(),
                },
                if w.status.is_empty() {
                    "-".into()
                } else {
                    w.status.clone()
                },
            ]
        })
        .collect();
    let head = [
        "ID",
        "NAME",
        "STATE",
        "RUNS",
        "ERRORS",
        "LAST ERROR",
        "STATUS",
    ];
    let mut wd = head.map(str::len);
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            wd[i] = wd[i].max(cell.chars().count());
        }
    }
    let line = |c: [&str; 7]| {
        format!(
            "{:>w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {:<w5$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            w0 = wd[0],
            w1 = wd[1],
            w2 = wd[2],
            w3 = wd[3],
            w4 = wd[4],
            w5 = wd[5],
        )
        .trim_end()
        .to_string()
            + "\n"
    };
    let mut s = line(head);
    for row in &rows {
        s.push_str(&line(row.each_ref().map(String::as_str)));
    }
    s
}

/// A duration in at most seven columns: "12.3s", "59:59", "1:05:03".
fn short_duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        super::progress::clock(std::time::Duration::from_millis(ms))
    }
}

/// The jobs table: one line of at most 100 columns per job (started in local time; the
/// config version, the end time and all errors are in `--json`), its first errors below
/// it, cut to the same width.
pub fn jobs_text(jobs: &[JobRow]) -> String {
    const WIDTH: usize = 100;
    let row = |c: [&str; 11]| {
        format!(
            "{:>5} {:<9} {:<9} {:<16} {:>7} {:>8} {:>7} {:>6} {:>7} {:>6} {:>6}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
        )
    };
    let mut s = row([
        "JOB", "KIND", "MODE", "STARTED", "TOOK", "SCANNED", "COPIED", "BYTES", "STUBBED", "FREED",
        "FAILED",
    ]);
    for j in jobs {
        let took = match (j.finished_ns, j.duration_ms) {
            (Some(_), Some(ms)) => short_duration(ms),
            _ => "running".into(),
        };
        s.push_str(&row([
            &j.id.to_string(),
            &j.kind,
            &j.mode,
            &super::output::local_minute(j.started_ns),
            &took,
            &j.files_scanned.to_string(),
            &j.files_copied.to_string(),
            &crate::base::units::short_bytes(j.bytes_copied),
            &j.files_stubbed.to_string(),
            &crate::base::units::short_bytes(j.bytes_stubbed),
            &j.files_failed.to_string(),
        ]));
        for e in j.errors.iter().take(5) {
            let line = format!("      error: {e}");
            if line.chars().count() > WIDTH {
                let cut: String = line.chars().take(WIDTH - 3).collect();
                s.push_str(&format!("{cut}...\n"));
            } else {
                s.push_str(&format!("{line}\n"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jobs_table_fits_100_columns() {
        let job = |id, kind: &str, mode: &str, err: Option<String>| JobRow {
            id,
            kind: kind.into(),
            mode: mode.into(),
            config_version: 12,
            started_ns: 1_764_000_000_000_000_000,
            finished_ns: Some(1_764_000_003_723_000_000),
            duration_ms: Some(3_723_000),
            files_scanned: 12_345_678,
            files_copied: 1_234_567,
            bytes_copied: 1023 * (1 << 30),
            files_stubbed: 1_234_567,
            bytes_stubbed: 999 * (1 << 40),
            files_failed: 123_456,
            errors: err.into_iter().collect(),
        };
        let t = jobs_text(&[
            job(99_999, "scheduled", "copy-only", Some("x".repeat(300))),
            job(1, "archive", "stub", None),
        ]);
        for l in t.lines() {
            assert!(
                l.chars().count() <= 100,
                "{} columns: {l}",
                l.chars().count()
            );
        }
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].contains("scheduled copy-only"), "{t}");
        assert!(lines[1].contains("1:02:03"), "{t}");
        assert!(lines[1].contains(" 1.0T "), "{t}");
        assert!(lines[1].contains("999T"), "{t}");
        assert!(lines[2].ends_with("..."), "{t}");
        assert_eq!(crate::base::units::short_bytes(512), "512B");
        assert_eq!(crate::base::units::short_bytes(1536), "1.5K");
        assert_eq!(short_duration(12_345), "12.3s");
    }

    #[test]
    fn the_workers_table_lines_up() {
        let w = |id, name: &str, state: &str, err: Option<&str>| WorkerRow {
            id,
            name: name.into(),
            state: state.into(),
            status: if id == 1 {
                "next run at 03:00".into()
            } else {
                String::new()
            },
            runs: id * 10,
            errors: u64::from(err.is_some()),
            last_error: err.map(Into::into),
            last_error_ns: err.map(|_| 0),
        };
        let t = workers_text(&[
            w(1, "policy scheduler", "idle", None),
            w(12, "tagger", "busy", Some("tagging failed")),
        ]);
        assert_eq!(
            t,
            "ID  NAME              STATE  RUNS  ERRORS  LAST ERROR                               STATUS\n\
             \x201  policy scheduler  idle     10       0  -                                        next run at 03:00\n\
             12  tagger            busy    120       1  1970-01-01T00:00:00.000Z tagging failed  -\n"
        );
    }
}
