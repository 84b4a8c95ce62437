//! The daemon's answers to the reporting requests: `ls` (a directory's entries with their
//! tiering state, from the backing tree and the xattrs: no recall, no store request),
//! `find`, `stats`, `events`, `jobs`, `config` and `audit` (from the catalog).

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::catalog::{CatalogError, EventKind, EventQuery, FileQuery, FileState};
use crate::config::Config;
use crate::control::protocol::{ErrorBody, ErrorCode, Op};
use crate::control::reports::{EventsRequest, FindRequest};
use crate::fs::backing::{self, Stat};
use crate::tier::engine::{ns_of, Tiering};

use super::handler::err;

/// Largest page of `find` or `events` one request returns.
pub const MAX_PAGE: u64 = 10_000;

fn cat_err(e: CatalogError) -> ErrorBody {
    err(ErrorCode::Failed, e.to_string())
}

/// Answers a reporting request; `None` if `op` is not one.
pub fn handle(t: &Arc<Tiering>, config: &Config, op: &Op) -> Option<Result<Value, ErrorBody>> {
    Some(match op {
        Op::List { path } => list(t, path),
        Op::Find(r) => find(t, r),
        Op::Stats => stats(t, config),
        Op::Events(r) => events(t, r),
        Op::Jobs { limit } => jobs(t, *limit),
        Op::ConfigVersions => config_versions(t),
        Op::Audit => audit(t),
        _ => return None,
    })
}

fn rel_of(t: &Tiering, p: &Path) -> Result<PathBuf, ErrorBody> {
    super::handler::rel_in(&t.mountpoint, p)
}

fn errno_text(e: backing::Errno) -> String {
    std::io::Error::from_raw_os_error(e.0).to_string()
}

fn kind_of(st: &Stat) -> &'static str {
    match st.file_type() {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "char",
        libc::S_IFBLK => "block",
        _ => "other",
    }
}

/// One entry as `ls` shows it: what `stat` through the mount shows, plus the state.
fn entry(t: &Tiering, dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> Value {
    let name_s = String::from_utf8_lossy(name.as_bytes()).into_owned();
    let st = match backing::stat_at(dir, name) {
        Ok(st) => st,
        Err(e) => return json!({"name": name_s, "error": errno_text(e)}),
    };
    let mut v = json!({
        "name": name_s,
        "type": kind_of(&st),
        "mode": st.mode & 0o7777,
        "nlink": st.nlink,
        "uid": st.uid,
        "gid": st.gid,
        "size": st.size,
        "mtime_ns": ns_of(st.mtime),
    });
    match st.file_type() {
        libc::S_IFREG => {
            let Ok(fd) = backing::open_path_at(dir, name) else {
                return v;
            };
            let (state, pinned, _, rec) = t.state_of(fd.as_fd());
            let state = match (&rec, state) {
                (Some(r), FileState::Stub | FileState::Recalling | FileState::RestorePending) => {
                    v["size"] = json!(r.size);
                    v["storage_class"] = json!(r.storage_class);
                    state
                }
                // A copy record that no longer matches the data: the file changed.
                (Some(r), FileState::Premigrated)
                    if r.size != st.size || r.mtime_ns != ns_of(st.mtime) =>
                {
                    FileState::Resident
                }
                (Some(r), s) => {
                    v["storage_class"] = json!(r.storage_class);
                    s
                }
                (None, s) => s,
            };
            v["state"] = json!(state.as_str());
            v["pinned"] = json!(pinned);
        }
        libc::S_IFLNK => {
            if let Ok(fd) = backing::open_path_at(dir, name) {
                if let Ok(target) = backing::readlink_fd(fd.as_fd()) {
                    v["target"] = json!(String::from_utf8_lossy(&target));
                }
            }
        }
        _ => {}
    }
    v
}

fn list(t: &Tiering, path: &Path) -> Result<Value, ErrorBody> {
    let rel = rel_of(t, path)?;
    let not_found = |e: backing::Errno| {
        err(
            if e.0 == libc::ENOENT {
                ErrorCode::NotFound
            } else {
                ErrorCode::Failed
            },
            format!("{}: {}", path.display(), errno_text(e)),
        )
    };
    let fd = backing::open_beneath(t.root(), &rel, libc::O_PATH | libc::O_NOFOLLOW)
        .map_err(not_found)?;
    let st = backing::stat_fd(fd.as_fd()).map_err(not_found)?;
    if !st.is_dir() {
        // One file: list it from its parent directory.
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().unwrap_or_default();
        let dir = backing::open_beneath(
            t.root(),
            parent,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(not_found)?;
        return Ok(json!({"path": path, "dir": false, "entries": [entry(t, dir.as_fd(), name)]}));
    }
    let dir = backing::open_beneath(
        t.root(),
        &rel,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .map_err(not_found)?;
    let mut names = Vec::new();
    backing::for_each_dirent(dir.as_fd(), &mut vec![0u8; 64 * 1024], |r| {
        names.push(r.name.to_os_string())
    })
    .map_err(not_found)?;
    names.sort();
    let entries: Vec<Value> = names.iter().map(|n| entry(t, dir.as_fd(), n)).collect();
    Ok(json!({"path": path, "dir": true, "entries": entries}))
}

fn parse_states(names: &[String]) -> Result<Vec<FileState>, ErrorBody> {
    names
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                err(
                    ErrorCode::BadRequest,
                    format!(
                        "unknown state `{s}` (resident, premigrated, stub, recalling, restore_pending)"
                    ),
                )
            })
        })
        .collect()
}

fn find(t: &Tiering, r: &FindRequest) -> Result<Value, ErrorBody> {
    // A glob given as an absolute path inside the mount is made relative to it.
    let path_glob = r.path_glob.as_ref().map(|g| {
        let mp = t.mountpoint.to_string_lossy();
        g.strip_prefix(&format!("{}/", mp.trim_end_matches('/')))
            .unwrap_or(g)
            .to_owned()
    });
    let q = FileQuery {
        states: parse_states(&r.states)?,
        modified_before_ns: r.modified_before_ns,
        larger_than: r.larger_than,
        path_glob,
        pinned: r.pinned,
    };
    if r.count_only {
        let (files, bytes) = t.catalog.count_files(&q).map_err(cat_err)?;
        return Ok(json!({"files": files, "bytes": bytes}));
    }
    let limit = r.limit.clamp(1, MAX_PAGE) as usize;
    let rows = t
        .catalog
        .find_files(&q, r.after.as_deref(), limit)
        .map_err(cat_err)?;
    let next_after = (rows.len() == limit).then(|| rows[rows.len() - 1].path.clone());
    let files: Vec<Value> = rows
        .into_iter()
        .map(|f| {
            json!({
                "path": t.mountpoint.join(&f.path),
                "rel_path": f.path,
                "state": f.state.as_str(),
                "size": f.size,
                "mtime_ns": f.mtime_ns,
                "pinned": f.pinned,
                "file_id": f.file_id,
                "storage_class": f.storage_class,
                "object_key": f.object_key.as_deref().map(|k| t.full_key(k)),
            })
        })
        .collect();
    Ok(json!({"files": files, "next_after": next_after}))
}

fn stats(t: &Tiering, config: &Config) -> Result<Value, ErrorBody> {
    let totals = t.catalog.totals().map_err(cat_err)?;
    let costs = &config.costs;
    let mut states: BTreeMap<&str, (u64, u64)> = FileState::ALL
        .iter()
        .map(|s| (s.as_str(), (0, 0)))
        .collect();
    let mut classes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let (mut files, mut bytes, mut pinned_files, mut pinned_bytes, mut saved) = (0, 0, 0, 0, 0);
    for tot in &totals {
        let s = states.entry(tot.state.as_str()).or_default();
        s.0 += tot.files;
        s.1 += tot.bytes;
        files += tot.files;
        bytes += tot.bytes;
        if tot.pinned {
            pinned_files += tot.files;
            pinned_bytes += tot.bytes;
        }
        if matches!(tot.state, FileState::Stub | FileState::RestorePending) {
            saved += tot.bytes;
        }
        if let Some(class) = &tot.storage_class {
            let c = classes.entry(class.clone()).or_default();
            c.0 += tot.files;
            c.1 += tot.bytes;
        }
    }
    let mut monthly_total = 0.0;
    let classes: Vec<Value> = classes
        .into_iter()
        .map(|(class, (files, bytes))| {
            let (key, price) = costs.price_of(&class);
            let monthly = costs.monthly(&class, bytes);
            monthly_total += monthly;
            json!({
                "storage_class": class,
                "files": files,
                "bytes": bytes,
                "price_key": format!("costs.{key}"),
                "usd_per_gb_month": price,
                "monthly_usd": monthly,
            })
        })
        .collect();
    let states: Vec<Value> = FileState::ALL
        .iter()
        .map(|s| {
            let (files, bytes) = states[s.as_str()];
            json!({"state": s.as_str(), "files": files, "bytes": bytes})
        })
        .collect();
    Ok(json!({
        "mountpoint": t.mountpoint,
        "files": files,
        "bytes": bytes,
        "states": states,
        "pinned": {"files": pinned_files, "bytes": pinned_bytes},
        "local_bytes_saved": saved,
        "storage_classes": classes,
        "monthly_usd": monthly_total,
        "events": t.catalog.event_count().map_err(cat_err)?,
        "store": t.store_opt().map(|s| json!({
            "describe": s.describe(),
            "validates_checksums": t.store_validates(),
            "copies_proven_by": if t.store_validates() && config.policy.verify == crate::config::Verify::Checksum {
                "the store's checksum"
            } else {
                "reading them back"
            },
            "tiering_paused": t.paused(),
        })),
    }))
}

fn events(t: &Tiering, r: &EventsRequest) -> Result<Value, ErrorBody> {
    let kinds = r
        .kinds
        .iter()
        .map(|k| {
            k.to_ascii_uppercase().parse::<EventKind>().map_err(|_| {
                let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                err(
                    ErrorCode::BadRequest,
                    format!("unknown event type `{k}` (one of {})", all.join(", ")),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let path = match &r.path {
        None => None,
        Some(p) => Some(rel_of(t, p)?.to_string_lossy().into_owned()),
    };
    let q = EventQuery {
        since_ns: r.since_ns,
        kinds,
        path,
    };
    let limit = r.limit.clamp(1, MAX_PAGE) as usize;
    let events = t
        .catalog
        .find_events(&q, r.after_id, limit)
        .map_err(cat_err)?;
    let next_after_id = (events.len() == limit).then(|| events[events.len() - 1].id);
    Ok(json!({"events": events, "next_after_id": next_after_id}))
}

fn jobs(t: &Tiering, limit: u64) -> Result<Value, ErrorBody> {
    let limit = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    let jobs = t.catalog.jobs(limit).map_err(cat_err)?;
    Ok(json!({ "jobs": jobs }))
}

fn config_versions(t: &Tiering) -> Result<Value, ErrorBody> {
    let versions = t.catalog.config_history().map_err(cat_err)?;
    let current = t
        .catalog
        .current_config()
        .map_err(cat_err)?
        .map(|c| c.version);
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|v| {
            json!({
                "version": v.version,
                "hash": v.hash,
                "time_ns": v.time_ns,
                // Recorded redacted; redacted again for versions an older
                // coldtier recorded before it redacted them.
                "text": crate::config::redact_secrets(&v.text),
            })
        })
        .collect();
    Ok(json!({"versions": versions, "current": current}))
}

fn audit(t: &Tiering) -> Result<Value, ErrorBody> {
    let head = t.catalog.last_event().map_err(cat_err)?;
    let head = head.map(|e| json!({"id": e.id, "hash": e.hash, "time_ns": e.time_ns}));
    match t.catalog.verify_chain() {
        Ok(n) => Ok(json!({"ok": true, "checked": n, "head": head})),
        Err(CatalogError::ChainBroken(e)) => Ok(json!({
            "ok": false,
            "checked": (e.first_bad_id - 1).max(0),
            "first_bad_id": e.first_bad_id,
            "reason": e.reason,
            "head": head,
        })),
        Err(e) => Err(cat_err(e)),
    }
}
