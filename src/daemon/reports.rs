//! The daemon's answers to the reporting requests: `ls` (a directory's entries with their
//! tiering state, from the backing tree and the xattrs: no recall, no store request),
//! `find`, `stats`, `events`, `jobs`, `config` and `audit` (from the catalog). Each is
//! built as its wire type (`control::replies`), converted from the catalog's rows here.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::catalog::{CatalogError, Event, EventKind, EventQuery, FileQuery, FileState, Job};
use crate::config::Config;
use crate::control::protocol::{ErrorBody, ErrorCode, Op};
use crate::control::queries::{EventsRequest, FindRequest};
use crate::control::replies::{
    AuditReply, ChainHead, ClassTotal, ConfigVersionRow, ConfigVersionsReply, Count, EntryStat,
    EventRow, EventsReply, FindCount, FindReply, FoundFile, JobRow, JobsReply, ListEntry,
    ListReply, RecallStats, RecallTally, StateTotal, StatsReply, StoreSummary,
};
use crate::fs::backing::{self, Stat};
use crate::tier::context::{ns_of, Tiering};

use super::handler::{err, reply};

/// Largest page of `find` or `events` one request returns.
pub const MAX_PAGE: u64 = 10_000;

fn cat_err(e: CatalogError) -> ErrorBody {
    err(ErrorCode::Failed, e.to_string())
}

/// Answers a reporting request; `None` if `op` is not one.
pub fn handle(t: &Arc<Tiering>, config: &Config, op: &Op) -> Option<Result<Value, ErrorBody>> {
    Some(match op {
        Op::List { path } => list(t, path).and_then(reply),
        Op::Find(r) if r.count_only => count(t, r).and_then(reply),
        Op::Find(r) => find(t, r).and_then(reply),
        Op::Stats { since_ns } => stats(t, config, *since_ns).and_then(reply),
        Op::Events(r) => events(t, r).and_then(reply),
        Op::Jobs { limit } => jobs(t, *limit).and_then(reply),
        Op::ConfigVersions => config_versions(t).and_then(reply),
        Op::Audit => audit(t).and_then(reply),
        _ => return None,
    })
}

/// A catalog event as the protocol says it (`history`, `events`).
pub(crate) fn event_row(e: Event) -> EventRow {
    EventRow {
        id: e.id,
        time_ns: e.time_ns,
        file_id: e.file_id,
        path: e.path,
        kind: e.kind.as_str().into(),
        detail: e.detail,
        config_version: e.config_version,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

fn job_row(j: Job) -> JobRow {
    JobRow {
        id: j.id,
        kind: j.kind,
        mode: j.mode,
        config_version: j.config_version,
        started_ns: j.started_ns,
        finished_ns: j.finished_ns,
        files_scanned: j.files_scanned,
        files_copied: j.files_copied,
        bytes_copied: j.bytes_copied,
        files_stubbed: j.files_stubbed,
        files_failed: j.files_failed,
        errors: j.errors,
        duration_ms: j.duration_ms,
        bytes_stubbed: j.bytes_stubbed,
    }
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
fn entry(t: &Tiering, dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> ListEntry {
    let name_s = String::from_utf8_lossy(name.as_bytes()).into_owned();
    let st = match backing::stat_at(dir, name) {
        Ok(st) => st,
        Err(e) => {
            return ListEntry {
                name: name_s,
                error: Some(errno_text(e)),
                stat: None,
            }
        }
    };
    let mut v = EntryStat {
        kind: kind_of(&st).into(),
        mode: st.mode & 0o7777,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        size: st.size,
        mtime_ns: ns_of(st.mtime),
        state: None,
        pinned: None,
        storage_class: None,
        target: None,
    };
    match st.file_type() {
        libc::S_IFREG => {
            let Ok(fd) = backing::open_path_at(dir, name) else {
                return ListEntry {
                    name: name_s,
                    error: None,
                    stat: Some(v),
                };
            };
            let (state, pinned, _, rec) = t.state_of(fd.as_fd());
            let state = match (&rec, state) {
                (Some(r), FileState::Stub | FileState::Recalling | FileState::RestorePending) => {
                    v.size = r.size;
                    v.storage_class = Some(r.storage_class.clone());
                    state
                }
                // A copy record that no longer matches the data: the file changed.
                (Some(r), FileState::Premigrated)
                    if r.size != st.size || r.mtime_ns != ns_of(st.mtime) =>
                {
                    FileState::Resident
                }
                (Some(r), s) => {
                    v.storage_class = Some(r.storage_class.clone());
                    s
                }
                (None, s) => s,
            };
            v.state = Some(state.as_str().into());
            v.pinned = Some(pinned);
        }
        libc::S_IFLNK => {
            if let Ok(fd) = backing::open_path_at(dir, name) {
                if let Ok(target) = backing::readlink_fd(fd.as_fd()) {
                    v.target = Some(String::from_utf8_lossy(&target).into_owned());
                }
            }
        }
        _ => {}
    }
    ListEntry {
        name: name_s,
        error: None,
        stat: Some(v),
    }
}

fn list(t: &Tiering, path: &Path) -> Result<ListReply, ErrorBody> {
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
        return Ok(ListReply {
            path: path.to_path_buf(),
            dir: false,
            entries: vec![entry(t, dir.as_fd(), name)],
        });
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
    Ok(ListReply {
        path: path.to_path_buf(),
        dir: true,
        entries: names.iter().map(|n| entry(t, dir.as_fd(), n)).collect(),
    })
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

/// The catalog query of a `find` request.
fn file_query(t: &Tiering, r: &FindRequest) -> Result<FileQuery, ErrorBody> {
    // A glob given as an absolute path inside the mount is made relative to it.
    let path_glob = r.path_glob.as_ref().map(|g| {
        let mp = t.mountpoint.to_string_lossy();
        g.strip_prefix(&format!("{}/", mp.trim_end_matches('/')))
            .unwrap_or(g)
            .to_owned()
    });
    let pack = match r.pack.as_deref() {
        None => None,
        Some("any") => Some(None),
        Some(id) if crate::tier::stub::is_valid_file_id(id) => Some(Some(id.to_owned())),
        Some(id) => {
            return Err(err(
                ErrorCode::BadRequest,
                format!("--pack: `{id}` is neither `any` nor a pack id (32 hex digits)"),
            ))
        }
    };
    Ok(FileQuery {
        states: parse_states(&r.states)?,
        modified_before_ns: r.modified_before_ns,
        larger_than: r.larger_than,
        path_glob,
        pinned: r.pinned,
        pack,
    })
}

/// `find --count`.
fn count(t: &Tiering, r: &FindRequest) -> Result<FindCount, ErrorBody> {
    let (files, bytes) = t.catalog.count_files(&file_query(t, r)?).map_err(cat_err)?;
    Ok(FindCount { files, bytes })
}

fn find(t: &Tiering, r: &FindRequest) -> Result<FindReply, ErrorBody> {
    let q = file_query(t, r)?;
    let limit = r.limit.clamp(1, MAX_PAGE) as usize;
    let rows = t
        .catalog
        .find_files(&q, r.after.as_deref(), limit)
        .map_err(cat_err)?;
    let next_after = (rows.len() == limit).then(|| rows[rows.len() - 1].path.clone());
    let files = rows
        .into_iter()
        .map(|f| FoundFile {
            path: t.mountpoint.join(&f.path),
            state: f.state.as_str().into(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            pinned: f.pinned,
            file_id: f.file_id,
            storage_class: f.storage_class,
            pack_id: f
                .object_key
                .as_deref()
                .and_then(crate::tier::stub::parse_pack_key)
                .map(|(_, id)| id.to_owned()),
            object_key: f.object_key.as_deref().map(|k| t.full_key(k)),
            rel_path: f.path,
        })
        .collect();
    Ok(FindReply { files, next_after })
}

/// Recalls, stream reads and refusals since `since_ns`, by program and by uid, from the
/// events that name who (RECALL_STARTED's `who`, RECALL_REFUSED, STREAMED).
fn recall_stats(t: &Tiering, since_ns: i64) -> Result<RecallStats, ErrorBody> {
    use crate::catalog::EventKind;
    let events = t
        .catalog
        .events_of_kinds_since(
            &[
                EventKind::RecallStarted,
                EventKind::RecallRefused,
                EventKind::Streamed,
            ],
            since_ns,
        )
        .map_err(cat_err)?;
    let mut by_program: BTreeMap<String, RecallTally> = BTreeMap::new();
    let mut by_uid: BTreeMap<u64, RecallTally> = BTreeMap::new();
    for e in &events {
        let d = &e.detail;
        let who = if e.kind == EventKind::RecallStarted {
            &d["who"]
        } else {
            d
        };
        let program = who["program"].as_str().unwrap_or("-").to_string();
        let uid = who["uid"].as_u64();
        let bytes = d["bytes"].as_u64().unwrap_or(0);
        let add = |x: &mut RecallTally| match e.kind {
            EventKind::RecallStarted => {
                x.recalls += 1;
                x.recalled_bytes += bytes;
            }
            EventKind::Streamed => {
                x.streamed += 1;
                x.streamed_bytes += bytes;
            }
            _ => x.refused += 1,
        };
        add(by_program
            .entry(program.clone())
            .or_insert_with(|| RecallTally {
                program: Some(program),
                ..Default::default()
            }));
        if let Some(u) = uid {
            add(by_uid.entry(u).or_insert_with(|| RecallTally {
                uid: Some(u as u32),
                ..Default::default()
            }));
        }
    }
    let sorted = |m: Vec<RecallTally>| {
        let mut v = m;
        v.sort_by(|a, b| {
            (b.recalls + b.streamed + b.refused).cmp(&(a.recalls + a.streamed + a.refused))
        });
        v
    };
    Ok(RecallStats {
        since_ns,
        by_program: sorted(by_program.into_values().collect()),
        by_uid: sorted(by_uid.into_values().collect()),
    })
}

fn stats(t: &Tiering, config: &Config, since_ns: Option<i64>) -> Result<StatsReply, ErrorBody> {
    let since_ns = since_ns.unwrap_or_else(|| {
        crate::base::time::system_now_ns().saturating_sub(86_400 * 1_000_000_000)
    });
    let recalls = recall_stats(t, since_ns)?;
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
    let classes: Vec<ClassTotal> = classes
        .into_iter()
        .map(|(class, (files, bytes))| {
            let (key, price) = costs.price_of(&class);
            let monthly = costs.monthly(&class, bytes);
            monthly_total += monthly;
            ClassTotal {
                storage_class: class,
                files,
                bytes,
                price_key: format!("costs.{key}"),
                usd_per_gb_month: price,
                monthly_usd: monthly,
            }
        })
        .collect();
    let states: Vec<StateTotal> = FileState::ALL
        .iter()
        .map(|s| {
            let (files, bytes) = states[s.as_str()];
            StateTotal {
                state: s.as_str().into(),
                files,
                bytes,
            }
        })
        .collect();
    Ok(StatsReply {
        mountpoint: t.mountpoint.clone(),
        files,
        bytes,
        states,
        pinned: Count {
            files: pinned_files,
            bytes: pinned_bytes,
        },
        local_bytes_saved: saved,
        storage_classes: classes,
        monthly_usd: monthly_total,
        events: t.catalog.event_count().map_err(cat_err)?,
        store: t.store_opt().map(|s| StoreSummary {
            describe: s.describe(),
            validates_checksums: t.store_validates(),
            copies_proven_by: if t.store_validates()
                && config.policy.verify == crate::config::Verify::Checksum
            {
                "the store's checksum"
            } else {
                "reading them back"
            }
            .into(),
            tiering_paused: t.paused(),
        }),
        recalls: Some(recalls),
        packs: pack_stats(t)?,
    })
}

/// The packs some file still names.
fn pack_stats(t: &Tiering) -> Result<Option<crate::control::replies::PackStats>, ErrorBody> {
    let mut s = crate::control::replies::PackStats::default();
    for p in t.catalog.packs().map_err(cat_err)? {
        if p.members > 0 {
            s.packs += 1;
            s.bytes += p.pack.size;
            s.members += p.members;
            s.live_bytes += p.bytes;
        }
    }
    Ok((s.packs > 0).then_some(s))
}

fn events(t: &Tiering, r: &EventsRequest) -> Result<EventsReply, ErrorBody> {
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
    Ok(EventsReply {
        events: events.into_iter().map(event_row).collect(),
        next_after_id,
        key_prefix: t.store_prefix.clone(),
    })
}

fn jobs(t: &Tiering, limit: u64) -> Result<JobsReply, ErrorBody> {
    let limit = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    let jobs = t.catalog.jobs(limit).map_err(cat_err)?;
    Ok(JobsReply {
        jobs: jobs.into_iter().map(job_row).collect(),
    })
}

fn config_versions(t: &Tiering) -> Result<ConfigVersionsReply, ErrorBody> {
    let versions = t.catalog.config_history().map_err(cat_err)?;
    let current = t
        .catalog
        .current_config()
        .map_err(cat_err)?
        .map(|c| c.version);
    let versions = versions
        .into_iter()
        .map(|v| ConfigVersionRow {
            version: v.version,
            hash: v.hash,
            time_ns: v.time_ns,
            // Recorded redacted; redacted again for versions an older
            // coldtier recorded before it redacted them.
            text: crate::config::redact_secrets(&v.text),
        })
        .collect();
    Ok(ConfigVersionsReply { versions, current })
}

fn audit(t: &Tiering) -> Result<AuditReply, ErrorBody> {
    let head = t.catalog.last_event().map_err(cat_err)?;
    let head = head.map(|e| ChainHead {
        id: e.id,
        hash: e.hash,
        time_ns: e.time_ns,
    });
    match t.catalog.verify_chain() {
        Ok(n) => Ok(AuditReply {
            ok: true,
            checked: n,
            first_bad_id: None,
            reason: None,
            head,
        }),
        Err(CatalogError::ChainBroken(e)) => Ok(AuditReply {
            ok: false,
            checked: (e.first_bad_id - 1).max(0) as u64,
            first_bad_id: Some(e.first_bad_id),
            reason: Some(e.reason),
            head,
        }),
        Err(e) => Err(cat_err(e)),
    }
}
