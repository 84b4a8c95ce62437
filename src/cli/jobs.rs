//! The commands on tiering jobs: `migrate`, `gc`, `verify`, `jobs` (the runs, `jobs
//! cancel`), `pause` and `resume`.

use anyhow::anyhow;
use serde_json::Value;

use super::args::{GcArgs, JobsArgs, JobsCommand, MigrateArgs, MountpointArgs, VerifyArgs};
use super::output::print_json_line;
use super::request::{call, client_for};
use crate::base::time::format_time;
use crate::base::units::human_bytes;
use crate::control::protocol::Op;

pub(super) fn migrate(a: &MigrateArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let op = Op::Migrate {
        dry_run: a.dry_run,
        mode: a.mode.clone(),
    };
    let r = call(&mut c, op)?;
    if a.json {
        print_json_line(&r);
    } else {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        if r["mode"] == "dry-run" {
            for f in r["files"].as_array().into_iter().flatten() {
                println!(
                    "would {:<9} {:>10}  {}",
                    f["plan"].as_str().unwrap_or(""),
                    human_bytes(f["size"].as_u64().unwrap_or(0)),
                    f["path"].as_str().unwrap_or("")
                );
            }
        }
        println!(
            "job {} ({}): scanned {}, candidates {} (deferred {}), copied {} ({}), stubbed {} (freed {}), busy {}, failed {} in {:.1}s",
            n("job_id"),
            r["mode"].as_str().unwrap_or(""),
            n("scanned"),
            n("candidates"),
            n("deferred"),
            n("copied"),
            human_bytes(n("bytes_copied")),
            n("stubbed"),
            human_bytes(n("bytes_freed")),
            n("busy"),
            n("failed"),
            r["seconds"].as_f64().unwrap_or(0.0)
        );
        for e in r["errors"].as_array().into_iter().flatten() {
            eprintln!("  error: {}", e.as_str().unwrap_or(""));
        }
    }
    if r["failed"].as_u64().unwrap_or(0) > 0 {
        return Err(anyhow!("{} files failed", r["failed"]));
    }
    if r["cancelled"] == true {
        return Err(anyhow!("the run was cancelled"));
    }
    Ok(())
}

pub(super) fn pause(a: &MountpointArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    call(&mut c, Op::Pause)?;
    println!(
        "{}: tiering paused (recalls go on); `coldtier resume` resumes it",
        c.mountpoint.display()
    );
    Ok(())
}

pub(super) fn resume(a: &MountpointArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r = call(&mut c, Op::Resume)?;
    println!(
        "{}: store check passed ({}); tiering resumed",
        c.mountpoint.display(),
        if r["validates_checksums"].as_bool() == Some(true) {
            "the store validates checksums"
        } else {
            "the store does not validate checksums: copies are read back"
        }
    );
    Ok(())
}

pub(super) fn gc(a: &GcArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r = call(&mut c, Op::Gc { dry_run: a.dry_run })?;
    if a.json {
        print_json_line(&r);
    } else {
        for d in r["deleted"].as_array().into_iter().flatten() {
            println!(
                "{} {} ({})",
                if a.dry_run { "would delete" } else { "deleted" },
                d["object_key"].as_str().unwrap_or(""),
                d["reason"].as_str().unwrap_or("")
            );
        }
        println!(
            "{} objects {}, {} kept under retention",
            r["deleted"].as_array().map_or(0, |v| v.len()),
            if a.dry_run { "to delete" } else { "deleted" },
            r["kept_under_retention"]
        );
    }
    let errors = r["errors"].as_array().map_or(0, |v| v.len());
    if errors > 0 {
        for e in r["errors"].as_array().into_iter().flatten() {
            eprintln!("  error: {}", e.as_str().unwrap_or(""));
        }
        return Err(anyhow!("{errors} deletions failed"));
    }
    Ok(())
}

pub(super) fn verify(a: &VerifyArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r = call(&mut c, Op::Verify { deep: a.deep })?;
    let findings = r["findings"].as_array().map_or(0, |v| v.len());
    if a.json {
        print_json_line(&r);
    } else {
        for f in r["findings"].as_array().into_iter().flatten() {
            let mut line = format!("{:<20}", f["kind"].as_str().unwrap_or("?").to_uppercase());
            if let Some(p) = f["path"].as_str() {
                line.push_str(&format!(" {p}"));
            }
            if let Some(k) = f["object_key"].as_str() {
                line.push_str(&format!(" [{k}]"));
            }
            println!("{line}: {}", f["message"].as_str().unwrap_or(""));
        }
        for n in r["notes"].as_array().into_iter().flatten() {
            println!("note: {}", n.as_str().unwrap_or(""));
        }
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        println!(
            "verify{} (job {}): {} files, {} stubs, {} premigrated; {} objects listed, {} checked{}; {} retained for gc; {}",
            if a.deep { " --deep" } else { "" },
            n("job_id"),
            n("files_scanned"),
            n("stubs"),
            n("premigrated"),
            n("objects_listed"),
            n("objects_checked"),
            if a.deep {
                format!(", {} read back ({})", n("objects_reread"), human_bytes(n("bytes_reread")))
            } else {
                String::new()
            },
            n("retained"),
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
    if let Some(JobsCommand::Cancel(a)) = &a.command {
        let mut c = client_for(&a.mountpoint)?;
        let r = call(&mut c, Op::CancelJob { job: a.id })?;
        println!(
            "job {} ({}) cancelled: it finishes the files under way and stops",
            r["cancelled"],
            r["kind"].as_str().unwrap_or("?")
        );
        return Ok(());
    }
    let mp = a.mountpoint.as_deref().expect("clap requires it");
    let mut c = client_for(mp)?;
    let r = call(&mut c, Op::Jobs { limit: a.limit })?;
    let jobs = r["jobs"].as_array().cloned().unwrap_or_default();
    if a.json {
        for j in &jobs {
            print_json_line(j);
        }
    } else {
        print!("{}", jobs_text(&jobs));
    }
    Ok(())
}

pub fn jobs_text(jobs: &[Value]) -> String {
    let mut s = format!(
        "{:>5}  {:<10} {:<9} {:>4}  {:<24} {:<24} {:>8} {:>8} {:>8} {:>10} {:>8} {:>10} {:>7}\n",
        "JOB",
        "KIND",
        "MODE",
        "CFG",
        "STARTED",
        "FINISHED",
        "SECONDS",
        "SCANNED",
        "COPIED",
        "BYTES",
        "STUBBED",
        "FREED",
        "FAILED"
    );
    for j in jobs {
        let u = |k: &str| j[k].as_u64().unwrap_or(0);
        let finished = j["finished_ns"]
            .as_i64()
            .map(format_time)
            .unwrap_or_else(|| "(running or interrupted)".into());
        let secs = j["duration_ms"]
            .as_u64()
            .map(|ms| format!("{:.1}", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{:>5}  {:<10} {:<9} {:>4}  {:<24} {:<24} {:>8} {:>8} {:>8} {:>10} {:>8} {:>10} {:>7}\n",
            u("id"),
            j["kind"].as_str().unwrap_or(""),
            j["mode"].as_str().unwrap_or(""),
            u("config_version"),
            format_time(j["started_ns"].as_i64().unwrap_or(0)),
            finished,
            secs,
            u("files_scanned"),
            u("files_copied"),
            human_bytes(u("bytes_copied")),
            u("files_stubbed"),
            human_bytes(u("bytes_stubbed")),
            u("files_failed"),
        ));
        for e in j["errors"].as_array().into_iter().flatten().take(5) {
            s.push_str(&format!("       error: {}\n", e.as_str().unwrap_or("")));
        }
    }
    s
}
