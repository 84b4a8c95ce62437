//! `coldtier catalog rebuild SOURCE --config FILE`, the offline command: checks that no
//! daemon serves SOURCE, keeps an existing catalog aside, opens the store and runs the
//! engine's rebuild (`crate::tier::rebuild`), then reports.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde_json::json;

use super::bad;
use crate::catalog::{Catalog, EventKind};
use crate::cli::args::CatalogRebuildArgs;
use crate::config::Config;
use crate::fs::backing;
use crate::tier::rebuild::{list_objects, rebuild, record_replica_copies, walk};

/// Refuses to run while a coldtier daemon serves `source`.
fn check_offline(source: &Path) -> anyhow::Result<()> {
    let want = format!("coldtier:{}", source.display());
    let mounts = crate::base::mountinfo::read()
        .map_err(|e| anyhow!("cannot read /proc/self/mountinfo: {e}"))?;
    if let Some(m) = mounts.iter().find(|m| {
        crate::base::mountinfo::is_coldtier(&m.fstype)
            && (m.source == want || m.mount_point == source)
    }) {
        return Err(bad(format!(
            "a coldtier daemon serves {} (mounted at {}): rebuild runs offline; unmount it first \
             (coldtier umount {})",
            source.display(),
            m.mount_point.display(),
            m.mount_point.display()
        )));
    }
    if let Ok(dir) = std::fs::read_dir("/run/coldtier/mounts") {
        for e in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let mut lines = text.lines();
            let pid = lines
                .next()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            if lines.next() == Some(source.to_str().unwrap_or("")) && super::process_alive(pid) {
                return Err(bad(format!(
                    "coldtier daemon pid {pid} serves {}: rebuild runs offline; unmount it first",
                    source.display()
                )));
            }
        }
    }
    Ok(())
}

/// Moves an existing catalog (and its -wal/-shm) aside; returns where it went.
fn move_aside(path: &Path) -> anyhow::Result<PathBuf> {
    let stamp = crate::catalog::backup::file_name("x", crate::catalog::system_now_ns());
    let stamp = stamp.trim_start_matches("x-").trim_end_matches(".db");
    let aside = PathBuf::from(format!("{}.before-rebuild-{stamp}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to)
                .map_err(|e| anyhow!("cannot move {} to {}: {e}", from.display(), to.display()))?;
        }
    }
    Ok(aside)
}

/// `coldtier catalog rebuild`.
pub fn run(a: &CatalogRebuildArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(bad(
            "coldtier catalog rebuild must run as root (the records are trusted.* xattrs)",
        ));
    }
    let config = Config::load(&a.config).map_err(|e| bad(e.to_string()))?;
    let source = std::fs::canonicalize(&a.source)
        .map_err(|e| bad(format!("SOURCE {}: {e}", a.source.display())))?;
    if !source.is_dir() {
        return Err(bad(format!(
            "SOURCE {} is not a directory",
            source.display()
        )));
    }
    check_offline(&source)?;
    let mountpoint = match &a.mountpoint {
        Some(m) => std::path::absolute(m).map_err(|e| bad(format!("{}: {e}", m.display())))?,
        None => source.clone(),
    };
    let catalog_path = config.catalog_path(&mountpoint);
    let exists = ["", "-wal"]
        .iter()
        .any(|s| PathBuf::from(format!("{}{s}", catalog_path.display())).exists());
    if exists && !a.force {
        return Err(bad(format!(
            "the catalog {} exists: rebuild writes a new one; restore a backup instead \
             (coldtier catalog backup), or pass --force to keep the old file aside and rebuild",
            catalog_path.display()
        )));
    }
    let store_cfg = match &a.from {
        None => config.store_config().map_err(bad)?.ok_or_else(|| {
            bad(format!(
                "{}: no [store] section: rebuild reads the bucket",
                a.config.display()
            ))
        })?,
        Some(name) => {
            let replicas = config.replica_configs().map_err(bad)?;
            let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
            match replicas.iter().find(|r| &r.name == name) {
                Some(r) => r.store.clone(),
                None => {
                    return Err(bad(format!(
                        "--from {name}: {} has no [[replica]] of that name ({})",
                        a.config.display(),
                        if names.is_empty() {
                            "it has none".to_string()
                        } else {
                            names.join(", ")
                        }
                    )))
                }
            }
        }
    };
    let prefix = store_cfg.prefix().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store = rt
        .block_on(crate::store::open(&store_cfg))
        .map_err(|e| anyhow!("store: {e}"))?;
    let root = backing::open_dir_path(&source)
        .map_err(|e| bad(format!("cannot open SOURCE {}: {e}", source.display())))?;

    let t0 = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let say = |m: &str| {
        if tty {
            eprintln!("{m}");
        }
    };
    say("listing the bucket");
    let listed = rt
        .block_on(list_objects(store.as_ref()))
        .map_err(|e| anyhow!("cannot list the bucket: {e}"))?;
    say("walking SOURCE");
    let mut report = Vec::new();
    let (scanned, disk) = walk(root.as_fd(), &mut report)
        .map_err(|e| anyhow!("walking {}: {e}", source.display()))?;

    let aside = if exists {
        Some(move_aside(&catalog_path)?)
    } else {
        None
    };
    let catalog = Catalog::open(&catalog_path)
        .map_err(|e| anyhow!("catalog {}: {e}", catalog_path.display()))?;
    catalog.record_config(&config.recorded_text())?;
    let out = rebuild(
        &rt,
        store,
        &prefix,
        &catalog,
        &listed,
        &disk,
        &mut report,
        &say,
    )?;
    // What the replica targets hold, as the new catalog records: rebuilt from one, what it
    // listed (so that recalls fall back to it while the store is away); each other, listed
    // now. A target that cannot be listed is a problem, not the rebuild's end.
    let mut replica_copies = 0u64;
    if let Some(name) = &a.from {
        replica_copies += record_replica_copies(&catalog, name, &listed)?;
    }
    for r in config.replica_configs().map_err(bad)? {
        if a.from.as_deref() == Some(r.name.as_str()) {
            continue;
        }
        say(&format!("listing replica {}", r.name));
        let found = match rt.block_on(crate::store::open(&r.store)) {
            Ok(target) => rt
                .block_on(list_objects(target.as_ref()))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match found {
            Ok(l) => replica_copies += record_replica_copies(&catalog, &r.name, &l)?,
            Err(e) => report.push(format!(
                "REPLICA {}: cannot be listed ({e}): the new catalog records no copy on it \
                 (coldtier replicate --to {} finds them again)",
                r.name, r.name
            )),
        }
    }
    let summary = json!({
        "catalog": catalog_path,
        "from_replica": a.from,
        "replica_copies": replica_copies,
        "previous_catalog": aside,
        "source": source,
        "files_scanned": scanned,
        "objects_listed": listed.len(),
        "stubs": out.stubs,
        "premigrated": out.premigrated,
        "superseded_recorded": out.superseded,
        "deleted_recorded": out.deleted,
        "problems": report,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    catalog.append_event(None, None, EventKind::CatalogRebuilt, summary.clone())?;
    if a.json {
        println!("{summary}");
    } else {
        for l in &report {
            println!("{l}");
        }
        println!(
            "rebuilt {}: {} stubs, {} premigrated files; {} superseded and {} deleted objects \
             recorded for gc; {} problems; {} files and {} objects looked at in {:.1}s",
            catalog_path.display(),
            out.stubs,
            out.premigrated,
            out.superseded,
            out.deleted,
            report.len(),
            scanned,
            listed.len(),
            t0.elapsed().as_secs_f64()
        );
        if let Some(a) = &summary["previous_catalog"].as_str() {
            println!("the previous catalog is kept at {a}");
        }
    }
    if !report.is_empty() {
        return Err(anyhow!(
            "{} problems (listed above): those files or objects are not in the new catalog",
            report.len()
        ));
    }
    Ok(())
}
