//! What the daemon keeps for itself on disk (catalog and its directory, backups, runtime
//! records, locks, logs) is root's alone: directories are made 0700 and files 0600, and a
//! directory that another user could write to (or that another user owns) is refused,
//! since whoever can write a directory can replace what is in it. And the locks that
//! keep a source and a catalog to one daemon at a time.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Creates `dir` and any missing parent, each 0700 (root's alone).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Why `dir` (which exists) is no safe place for the daemon's own files, if it is not:
/// the directory itself must belong to root and be writable by no one else; each of its
/// parents must belong to root and be writable by no one else unless it has the sticky
/// bit (like /tmp, where only an entry's owner may rename or remove it).
pub fn unsafe_dir(dir: &Path) -> Option<String> {
    let mut first = true;
    let mut p = Some(dir);
    while let Some(d) = p {
        let m = match std::fs::metadata(d) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: {e}", d.display())),
        };
        let mode = m.mode() & 0o7777;
        if m.uid() != 0 {
            return Some(format!(
                "{} belongs to uid {}, not root: that user could replace what is in it",
                d.display(),
                m.uid()
            ));
        }
        let writable = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        if writable && (first || !sticky) {
            return Some(format!(
                "{} is writable by {} (mode {mode:04o}): another user could replace what is in it; `chmod go-w {}`",
                d.display(),
                if mode & 0o002 != 0 { "everyone" } else { "its group" },
                d.display()
            ));
        }
        first = false;
        p = d.parent();
    }
    None
}

/// Creates `dir` privately if missing, else checks it ([`unsafe_dir`]); `what` names it
/// in the error ("the catalog directory").
pub fn ensure_private_dir(dir: &Path, what: &str) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(format!("{what} {}: not a directory", dir.display()));
        }
        Ok(_) => {}
        Err(_) => create_private_dir(dir).map_err(|e| format!("{what} {}: {e}", dir.display()))?,
    }
    match unsafe_dir(dir) {
        Some(why) => Err(format!("{what} {}: refused: {why}", dir.display())),
        None => Ok(()),
    }
}

/// Makes an existing file of the daemon's root's alone (0600), if it is readable or
/// writable by others (a catalog made by an older coldtier); says so once.
pub fn make_file_private(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            tracing::warn!(
                path = %path.display(),
                "was readable or writable by other users (mode {:04o}): made 0600",
                m.mode() & 0o7777
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens (creating it 0600) a file of the daemon's own, without following a symlink.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if append {
        o.append(true);
    } else {
        o.read(true).write(true);
    }
    let f = o.open(path)?;
    make_file_private(path)?;
    Ok(f)
}

/// An exclusive lock held for the life of the process (`flock` on a file of its own:
/// released by the kernel when the process ends, however it ends). The file names the
/// holder: pid, then what it serves.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Who holds a lock, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub what: String,
}

fn read_holder(f: &mut File) -> Option<Holder> {
    let mut s = String::new();
    f.rewind().ok()?;
    f.read_to_string(&mut s).ok()?;
    let mut lines = s.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    Some(Holder {
        pid,
        what: lines.next().unwrap_or("").to_string(),
    })
}

/// Takes the lock at `path` for this process, naming `what` it holds it for. If another
/// process holds it, waits up to `wait` for it to let go when `gone(holder)` says the
/// holder is on its way out (its mount is gone); else fails at once, naming the holder.
pub fn lock(
    path: &Path,
    what: &str,
    wait: Duration,
    gone: &dyn Fn(&Holder) -> bool,
) -> Result<Lock, Result<Holder, String>> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir).map_err(|e| Err(format!("{}: {e}", dir.display())))?;
    }
    let mut f = open_private(path, false).map_err(|e| Err(format!("{}: {e}", path.display())))?;
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Err(format!("lock {}: {e}", path.display())));
        }
        let holder = read_holder(&mut f).unwrap_or(Holder {
            pid: 0,
            what: String::new(),
        });
        if Instant::now() >= deadline || !gone(&holder) {
            return Err(Ok(holder));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let record = format!("{}\n{what}\n", std::process::id());
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| f.write_all(record.as_bytes()))
        .map_err(|e| Err(format!("{}: {e}", path.display())))?;
    Ok(Lock {
        _file: f,
        path: path.to_path_buf(),
    })
}

/// Rewrites the holder record of a lock this process holds (the pid after a fork).
pub fn relabel(lock: &Lock, what: &str) -> std::io::Result<()> {
    let mut f = &lock._file;
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(format!("{}\n{what}\n", std::process::id()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_once_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locks/x.lock");
        let a = lock(&p, "the mount at /a", Duration::ZERO, &|_| false).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        // flock locks belong to open file descriptions: a second open conflicts, as
        // another process's would.
        let held = lock(&p, "the mount at /b", Duration::ZERO, &|_| false).unwrap_err();
        assert_eq!(
            held,
            Ok(Holder {
                pid: std::process::id() as i32,
                what: "the mount at /a".into()
            })
        );
        // A holder on its way out is waited for, within the bound.
        let t0 = Instant::now();
        let held = lock(&p, "b", Duration::from_millis(200), &|_| true).unwrap_err();
        assert!(held.is_ok() && t0.elapsed() >= Duration::from_millis(200));
        drop(a);
        let b = lock(&p, "the mount at /b", Duration::ZERO, &|_| false).unwrap();
        relabel(&b, "again").unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("\nagain\n"));
    }

    #[test]
    fn private_dirs_are_0700_and_writable_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        ensure_private_dir(&d, "the catalog directory").unwrap();
        for p in [dir.path().join("a"), d.clone()] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().mode() & 0o777,
                0o700,
                "{p:?}"
            );
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&d, "the catalog directory").unwrap_err();
        assert!(
            e.contains("writable by everyone") && e.contains("chmod go-w"),
            "{e}"
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = ensure_private_dir(&d, "the catalog directory").unwrap_err();
        assert!(e.contains("writable by its group"), "{e}");
        // A sticky, world-writable parent (like /tmp) is fine; a plain one is not.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let parent = dir.path().join("a");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(unsafe_dir(&d), None);
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(unsafe_dir(&d).is_some_and(|w| w.contains("writable by everyone")));
        // Owned by another user.
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
        assert!(unsafe_dir(&d).is_some_and(|w| w.contains("uid 65534")));
    }

    #[test]
    fn open_private_makes_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_private(&p, true).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(
            open_private(&link, true).is_err(),
            "a symlink is not followed"
        );
    }
}
