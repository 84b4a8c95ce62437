//! The tiering CLI commands: each finds the mount of its path, sends one request over the
//! control socket, and prints the answer (text for people, `--json` for scripts).
//! Exit codes: 0 done, 1 something failed (the output says what), 2 bad input.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde_json::Value;

use crate::cli::Command;
use crate::control::client::{mount_of, Client, ClientError};
use crate::control::protocol::{ErrorCode, Op};
use crate::daemon::BadInput;

/// An absolute path with its directories resolved (the last component is kept as is, so
/// a symlink is reported as a symlink, not followed).
pub(crate) fn resolve(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| BadInput(format!("{}: {e}", p.display())))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    let parent = std::fs::canonicalize(parent)
        .map_err(|e| BadInput(format!("{}: {e}", parent.display())))?;
    let full = parent.join(name);
    std::fs::symlink_metadata(&full).map_err(|e| BadInput(format!("{}: {e}", p.display())))?;
    Ok(full)
}

pub(crate) fn client_for(p: &Path) -> anyhow::Result<Client> {
    let mount = mount_of(p).map_err(|e| match e {
        ClientError::NotInMount(_) | ClientError::Resolve(..) => BadInput(e.to_string()).into(),
        e => anyhow!(e),
    })?;
    Ok(Client::connect(&mount)?)
}

pub(crate) fn call(client: &mut Client, op: Op) -> anyhow::Result<Value> {
    let mut bar = crate::progress::Bar::new();
    let r = client.call(op, |msg, files, bytes| bar.update(msg, files, bytes));
    bar.finish();
    r.map_err(|e| match e {
        ClientError::Daemon(b)
            if b.code == ErrorCode::BadRequest || b.code == ErrorCode::NotInMount =>
        {
            BadInput(b.message).into()
        }
        e => anyhow!(e),
    })
}

pub use crate::base::units::human_bytes;

pub(crate) fn print_json_line(v: &Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// Prints per-file results; fails (exit 1) if any file failed.
fn finish_paths(
    result: &Value,
    json: bool,
    verb: &str,
    text: impl Fn(&Value) -> String,
) -> anyhow::Result<()> {
    let empty = Vec::new();
    let results = result["results"].as_array().unwrap_or(&empty);
    for r in results {
        if json {
            print_json_line(r);
        } else if r["ok"].as_bool() == Some(true) {
            println!("{}", text(r));
        } else {
            eprintln!(
                "coldtier {verb}: {}: {}",
                r["path"].as_str().unwrap_or("?"),
                r["error"].as_str().unwrap_or("failed")
            );
        }
    }
    let failed = result["failed"].as_u64().unwrap_or(0);
    if failed > 0 {
        return Err(anyhow!("{failed} of {} paths failed", results.len()));
    }
    Ok(())
}

pub fn run(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate(a) => {
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
        Command::Status(a)
        | Command::Pin(a)
        | Command::Unpin(a)
        | Command::Recall(a)
        | Command::Release(a) => {
            let paths: Vec<PathBuf> = a
                .paths
                .iter()
                .map(|p| resolve(p))
                .collect::<Result<_, _>>()?;
            let mut c = client_for(&paths[0])?;
            let (verb, op) = match command {
                Command::Status(_) => (
                    "status",
                    Op::Status {
                        paths,
                        recursive: a.recursive,
                    },
                ),
                Command::Pin(_) => (
                    "pin",
                    Op::Pin {
                        paths,
                        recursive: a.recursive,
                    },
                ),
                Command::Unpin(_) => (
                    "unpin",
                    Op::Unpin {
                        paths,
                        recursive: a.recursive,
                    },
                ),
                Command::Recall(_) => (
                    "recall",
                    Op::Recall {
                        paths,
                        recursive: a.recursive,
                    },
                ),
                _ => (
                    "release",
                    Op::Release {
                        paths,
                        recursive: a.recursive,
                    },
                ),
            };
            let r = call(&mut c, op)?;
            finish_paths(&r, a.json, verb, |v| {
                let path = v["path"].as_str().unwrap_or("");
                match verb {
                    "status" => format!(
                        "{:<15} {} {:>10}  {}{}",
                        v["state"].as_str().unwrap_or("?"),
                        if v["pinned"].as_bool() == Some(true) {
                            "P"
                        } else {
                            "-"
                        },
                        human_bytes(v["size"].as_u64().unwrap_or(0)),
                        path,
                        v["object_key"]
                            .as_str()
                            .map(|k| format!(
                                "  [{} {}]",
                                v["storage_class"].as_str().unwrap_or(""),
                                k
                            ))
                            .unwrap_or_default()
                    ),
                    "recall" if v["recalled"] == true => format!("recalled {path}"),
                    "release" if v["released"] == true => format!("released {path}"),
                    "pin" => format!("pinned {path}"),
                    "unpin" => format!("unpinned {path}"),
                    _ => format!("{path}: {}", v["note"].as_str().unwrap_or("ok")),
                }
            })
        }
        Command::History(a) => {
            let p = resolve(&a.path)
                .or_else(|_| std::path::absolute(&a.path).map_err(anyhow::Error::from))?;
            let mut c = client_for(p.parent().unwrap_or(&p))?;
            let r = call(&mut c, Op::History { path: p.clone() })?;
            for e in r["events"].as_array().into_iter().flatten() {
                if a.json {
                    print_json_line(e);
                } else {
                    let t = e["time_ns"].as_i64().unwrap_or(0);
                    println!(
                        "{:>6}  {}  {:<17} config v{}  {}  {}",
                        e["id"],
                        format_time(t),
                        e["kind"].as_str().unwrap_or(""),
                        e["config_version"],
                        e["path"].as_str().unwrap_or(""),
                        e["detail"]
                    );
                }
            }
            Ok(())
        }
        Command::Pause(a) => {
            let mut c = client_for(&a.mountpoint)?;
            call(&mut c, Op::Pause)?;
            println!(
                "{}: tiering paused (recalls go on); `coldtier resume` resumes it",
                c.mountpoint.display()
            );
            Ok(())
        }
        Command::Resume(a) => {
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
        Command::Gc(a) => {
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
        Command::Verify(a) => {
            let mut c = client_for(&a.mountpoint)?;
            let r = call(&mut c, Op::Verify { deep: a.deep })?;
            let findings = r["findings"].as_array().map_or(0, |v| v.len());
            if a.json {
                print_json_line(&r);
            } else {
                for f in r["findings"].as_array().into_iter().flatten() {
                    let mut line =
                        format!("{:<20}", f["kind"].as_str().unwrap_or("?").to_uppercase());
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
        Command::Catalog(crate::cli::CatalogCommand::Backup(a)) => {
            let to = match a.to.as_deref() {
                None | Some("s3") => a.to.clone(),
                Some(d) => Some(
                    std::path::absolute(d)
                        .map_err(|e| BadInput(format!("--to {d}: {e}")))?
                        .to_string_lossy()
                        .into_owned(),
                ),
            };
            let mut c = client_for(&a.mountpoint)?;
            let r = call(&mut c, Op::CatalogBackup { to })?;
            if a.json {
                print_json_line(&r);
            } else {
                println!(
                    "catalog backup {}: {} ({} files, {} events, head event {})",
                    r["file"].as_str().unwrap_or(""),
                    human_bytes(r["bytes"].as_u64().unwrap_or(0)),
                    r["files"],
                    r["events"],
                    r["last_event_id"]
                );
                if let Some(p) = r["local_path"].as_str() {
                    println!("  local: {p}");
                }
                if let Some(k) = r["object_key"].as_str() {
                    println!("  store: {k}");
                }
                for k in ["pruned_local", "pruned_store"] {
                    for p in r[k].as_array().into_iter().flatten() {
                        println!("  pruned: {}", p.as_str().unwrap_or(""));
                    }
                }
            }
            let errors = r["errors"].as_array().map_or(0, |v| v.len());
            if errors > 0 {
                for e in r["errors"].as_array().into_iter().flatten() {
                    eprintln!("  error: {}", e.as_str().unwrap_or(""));
                }
                return Err(anyhow!(
                    "the backup is taken locally, but {errors} steps failed"
                ));
            }
            Ok(())
        }
        Command::Catalog(crate::cli::CatalogCommand::Rebuild(a)) => crate::daemon::rebuild::run(a),
        c @ (Command::Ls(_)
        | Command::Find(_)
        | Command::Stats(_)
        | Command::Events(_)
        | Command::Jobs(_)
        | Command::Config(_)
        | Command::Audit(_)
        | Command::Completions(_)
        | Command::Manpage(_)) => crate::inspect::run(c),
        Command::Mount(_) | Command::Umount(_) => unreachable!("handled by main"),
    }
}

pub use crate::base::time::format_time;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_print_as_people_read_them() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_time(1_764_547_200_123_000_000),
            "2025-12-01T00:00:00.123Z"
        );
        assert_eq!(format_time(-1_000_000_000), "1969-12-31T23:59:59.000Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
