//! Integration tests of the overlay mount: each operation runs on a plain directory and on a
//! real coldtier FUSE mount, and the results and errnos must match.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{coldtier, fstype_at, is_mountpoint, sh, Mounted};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// Result of one operation: Ok(description) or Err(errno).
type Outcome = Result<String, i32>;

fn io<T>(r: std::io::Result<T>, f: impl FnOnce(T) -> String) -> Outcome {
    r.map(f).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn rc(r: libc::c_int) -> Outcome {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r.to_string())
    }
}

/// The attributes that must match between native and mount (not inode numbers or times).
fn attrs(p: &Path) -> Outcome {
    io(fs::symlink_metadata(p), |m| {
        let size = if m.is_dir() { 0 } else { m.size() };
        format!(
            "mode={:o} size={} nlink={} uid={} gid={}",
            m.mode(),
            size,
            m.nlink(),
            m.uid(),
            m.gid()
        )
    })
}

/// Runs `op` against the native dir and the mount; the outcomes must be identical.
fn same(m: &Mounted, what: &str, op: impl Fn(&Path) -> Outcome) {
    let native = op(&m.native);
    let mounted = op(&m.mnt);
    assert_eq!(mounted, native, "{what}: mount differs from native");
}

fn rename2(from: &Path, to: &Path, flags: u32) -> Outcome {
    // SAFETY: NUL-terminated paths.
    rc(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c(from).as_ptr(),
            libc::AT_FDCWD,
            c(to).as_ptr(),
            flags,
        )
    })
}

fn list(dir: &Path) -> Outcome {
    io(fs::read_dir(dir), |rd| {
        let mut names: Vec<String> = rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.join(",")
    })
}

#[test]
fn file_operations_match_native() {
    let m = Mounted::new();
    same(&m, "create+write", |r| {
        io(fs::write(r.join("f"), b"hello world"), |_| "ok".into())
    });
    same(&m, "read", |r| {
        io(fs::read(r.join("f")), |d| {
            String::from_utf8_lossy(&d).into_owned()
        })
    });
    same(&m, "attrs", |r| attrs(&r.join("f")));
    same(&m, "append", |r| {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(r.join("f"))
            .unwrap();
        f.write_all(b"!!").unwrap();
        io(fs::read(r.join("f")), |d| {
            String::from_utf8_lossy(&d).into_owned()
        })
    });
    same(&m, "O_EXCL on existing", |r| {
        io(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(r.join("f")),
            |_| "opened".into(),
        )
    });
    same(&m, "O_TRUNC", |r| {
        drop(
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(r.join("f"))
                .unwrap(),
        );
        attrs(&r.join("f"))
    });
    same(&m, "truncate grow", |r| {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(r.join("f"))
            .unwrap();
        f.set_len(100_000).unwrap();
        attrs(&r.join("f"))
    });
    same(&m, "pwrite in the middle + read", |r| {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(r.join("f"))
            .unwrap();
        f.seek(SeekFrom::Start(50_000)).unwrap();
        f.write_all(b"middle").unwrap();
        let mut buf = vec![0u8; 8];
        f.seek(SeekFrom::Start(49_999)).unwrap();
        f.read_exact(&mut buf).unwrap();
        Ok(format!("{buf:?}"))
    });
    same(&m, "chmod", |r| {
        fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o4751)).unwrap();
        attrs(&r.join("f"))
    });
    same(&m, "chown", |r| {
        std::os::unix::fs::chown(r.join("f"), Some(1234), Some(4321)).unwrap();
        attrs(&r.join("f"))
    });
    same(&m, "O_RDONLY write fails", |r| {
        let mut f = fs::File::open(r.join("f")).unwrap();
        io(f.write_all(b"x"), |_| "wrote".into())
    });
    same(&m, "open missing", |r| {
        io(fs::File::open(r.join("nope")), |_| "opened".into())
    });
    same(&m, "open dir for write", |r| {
        io(fs::OpenOptions::new().write(true).open(r), |_| {
            "opened".into()
        })
    });
    same(&m, "unlink", |r| {
        io(fs::remove_file(r.join("f")), |_| "ok".into())
    });
    same(&m, "unlink missing", |r| {
        io(fs::remove_file(r.join("f")), |_| "ok".into())
    });
    same(&m, "long name", |r| {
        io(fs::write(r.join("x".repeat(256)), b""), |_| "ok".into())
    });
    same(&m, "255-byte name", |r| {
        io(fs::write(r.join("y".repeat(255)), b"z"), |_| "ok".into())
    });
}

#[test]
fn times_match_native() {
    let m = Mounted::new();
    for r in [&m.native, &m.mnt] {
        fs::write(r.join("t"), b"x").unwrap();
    }
    let set = |r: &Path, a: libc::timespec, b: libc::timespec| -> Outcome {
        let ts = [a, b];
        // SAFETY: NUL-terminated path, two timespecs.
        rc(unsafe { libc::utimensat(libc::AT_FDCWD, c(&r.join("t")).as_ptr(), ts.as_ptr(), 0) })?;
        let md = fs::metadata(r.join("t")).unwrap();
        Ok(format!(
            "{}.{} {}.{}",
            md.atime(),
            md.atime_nsec(),
            md.mtime(),
            md.mtime_nsec()
        ))
    };
    let t = |s, ns| libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    same(&m, "utimens explicit ns", |r| {
        set(
            r,
            t(1_000_000_000, 123_456_789),
            t(1_500_000_000, 987_654_321),
        )
    });
    same(&m, "utimens OMIT atime", |r| {
        set(r, t(0, libc::UTIME_OMIT), t(1_600_000_000, 5))
    });
    same(&m, "utimens pre-1970", |r| {
        set(r, t(-86_400, 0), t(-1, 500))
    });
    // UTIME_NOW: both land within a few seconds of now.
    for r in [&m.native, &m.mnt] {
        let ts = [t(0, libc::UTIME_NOW), t(0, libc::UTIME_NOW)];
        // SAFETY: NUL-terminated path, two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c(&r.join("t")).as_ptr(), ts.as_ptr(), 0) },
            0
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let md = fs::metadata(r.join("t")).unwrap();
        assert!(
            (md.mtime() - now).abs() <= 5 && (md.atime() - now).abs() <= 5,
            "UTIME_NOW on {}",
            r.display()
        );
    }
    // Symlink times change the link, not the target (AT_SYMLINK_NOFOLLOW).
    same(&m, "lutimes", |r| {
        std::os::unix::fs::symlink("t", r.join("l")).unwrap();
        let ts = [t(1_100_000_000, 0), t(1_200_000_000, 0)];
        // SAFETY: NUL-terminated path, two timespecs.
        rc(unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c(&r.join("l")).as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        let l = fs::symlink_metadata(r.join("l")).unwrap();
        let f = fs::metadata(r.join("t")).unwrap();
        Ok(format!("{} {}", l.mtime(), f.mtime() == 1_200_000_000))
    });
}

#[test]
fn directories_links_and_renames_match_native() {
    let m = Mounted::new();
    same(&m, "mkdir", |r| {
        io(fs::create_dir(r.join("d")), |_| "ok".into())
    });
    same(&m, "mkdir exists", |r| {
        io(fs::create_dir(r.join("d")), |_| "ok".into())
    });
    same(&m, "dir attrs", |r| attrs(&r.join("d")));
    same(&m, "populate", |r| {
        for i in 0..50 {
            fs::write(r.join(format!("d/f{i}")), format!("{i}")).unwrap();
        }
        list(&r.join("d"))
    });
    same(&m, "rmdir non-empty", |r| {
        io(fs::remove_dir(r.join("d")), |_| "ok".into())
    });
    same(&m, "rmdir file", |r| {
        io(fs::remove_dir(r.join("d/f1")), |_| "ok".into())
    });
    same(&m, "rename file", |r| {
        io(fs::rename(r.join("d/f1"), r.join("g")), |_| "ok".into())
    });
    same(&m, "rename over file", |r| {
        io(fs::rename(r.join("d/f2"), r.join("g")), |_| "ok".into())
    });
    same(&m, "content after rename", |r| {
        io(fs::read_to_string(r.join("g")), |s| s)
    });
    same(&m, "RENAME_NOREPLACE onto existing", |r| {
        rename2(&r.join("d/f3"), &r.join("g"), libc::RENAME_NOREPLACE)
    });
    same(&m, "RENAME_NOREPLACE onto free", |r| {
        rename2(&r.join("d/f3"), &r.join("h"), libc::RENAME_NOREPLACE)
    });
    same(&m, "RENAME_EXCHANGE", |r| {
        rename2(&r.join("g"), &r.join("h"), libc::RENAME_EXCHANGE)?;
        Ok(format!(
            "{} {}",
            fs::read_to_string(r.join("g")).unwrap(),
            fs::read_to_string(r.join("h")).unwrap()
        ))
    });
    same(&m, "RENAME_EXCHANGE missing", |r| {
        rename2(&r.join("g"), &r.join("zz"), libc::RENAME_EXCHANGE)
    });
    same(&m, "rename dir into itself", |r| {
        io(fs::rename(r.join("d"), r.join("d/sub")), |_| "ok".into())
    });
    same(&m, "hard link", |r| {
        fs::hard_link(r.join("g"), r.join("g2")).unwrap();
        Ok(format!(
            "{:?} {:?}",
            attrs(&r.join("g")),
            attrs(&r.join("g2"))
        ))
    });
    same(&m, "hard link to dir", |r| {
        io(fs::hard_link(r.join("d"), r.join("d2")), |_| "ok".into())
    });
    same(&m, "symlink+readlink", |r| {
        std::os::unix::fs::symlink("d/f4", r.join("s")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", r.join("dangling")).unwrap();
        Ok(format!(
            "{:?} {:?} {}",
            fs::read_link(r.join("s")).unwrap(),
            fs::read_link(r.join("dangling")).unwrap(),
            fs::read_to_string(r.join("s")).unwrap()
        ))
    });
    same(&m, "readlink of file", |r| {
        io(fs::read_link(r.join("g")), |p| p.display().to_string())
    });
    same(&m, "symlink attrs", |r| attrs(&r.join("s")));
    same(&m, "listing", list);
    same(&m, "remove tree", |r| {
        io(fs::remove_dir_all(r.join("d")), |_| "ok".into())
    });
    same(&m, "listing after", list);
    // Inodes: the same file under two names has one inode number, the backing one.
    let a = fs::metadata(m.m("g")).unwrap();
    let b = fs::metadata(m.m("g2")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), fs::metadata(m.s("g")).unwrap().ino());
}

#[test]
fn special_files_match_native() {
    let m = Mounted::new();
    let mknod = |p: &Path, mode: u32, dev: libc::dev_t| -> Outcome {
        // SAFETY: NUL-terminated path.
        rc(unsafe { libc::mknod(c(p).as_ptr(), mode, dev) })
    };
    same(&m, "fifo", |r| {
        mknod(&r.join("fifo"), libc::S_IFIFO | 0o640, 0)?;
        attrs(&r.join("fifo"))
    });
    same(&m, "char device", |r| {
        mknod(&r.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3))?;
        let md = fs::symlink_metadata(r.join("null")).unwrap();
        Ok(format!(
            "{:?} rdev={}:{}",
            attrs(&r.join("null")),
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        ))
    });
    same(&m, "block device big numbers", |r| {
        mknod(
            &r.join("blk"),
            libc::S_IFBLK | 0o600,
            libc::makedev(259, 70_000),
        )?;
        let md = fs::symlink_metadata(r.join("blk")).unwrap();
        Ok(format!(
            "rdev={}:{}",
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        ))
    });
    same(&m, "socket node", |r| {
        mknod(&r.join("sock"), libc::S_IFSOCK | 0o600, 0)?;
        attrs(&r.join("sock"))
    });
    same(&m, "regular via mknod", |r| {
        mknod(&r.join("reg"), libc::S_IFREG | 0o600, 0)?;
        attrs(&r.join("reg"))
    });
    // The device node works through the mount (mounted with dev).
    let mut z = [1u8; 4];
    fs::File::open(m.m("null"))
        .unwrap()
        .read_exact(&mut z)
        .unwrap_err();
    // A fifo through the mount carries data between two processes.
    let (ok, out, err) = sh(&format!(
        "(echo through-fifo > '{0}' &) ; cat '{0}'",
        m.m("fifo").display()
    ));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "through-fifo");
}

fn setx(p: &Path, name: &str, value: &[u8], flags: i32) -> Outcome {
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings, value slice valid.
    rc(unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

fn getx(p: &Path, name: &str, size: usize) -> Outcome {
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: NUL-terminated strings; buf writable for its length.
    let r = unsafe {
        libc::lgetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(if size == 0 { 0 } else { r as usize });
    Ok(format!("{r} {:?}", String::from_utf8_lossy(&buf)))
}

fn listx(p: &Path, size: usize) -> Outcome {
    let mut buf = vec![0u8; size];
    // SAFETY: NUL-terminated path; buf writable for its length.
    let r = unsafe { libc::llistxattr(c(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    if size == 0 {
        return Ok(format!("size {r}"));
    }
    buf.truncate(r as usize);
    let mut names: Vec<_> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names.join(","))
}

/// A file the stub probe listed without xattrs answers getxattr and listxattr from that,
/// without a call to the backing file, for at most `fuse.attr_timeout`: an xattr set
/// through the mount shows at once, one set behind the mount once that time has passed.
#[test]
fn xattrs_of_files_seen_without_any_stay_right() {
    let m = Mounted::with_config(Some(
        "[fuse]\nattr_timeout = \"1s\"\nentry_timeout = \"1s\"\n",
    ));
    for n in ["a", "b", "priv"] {
        fs::write(m.src.join(n), b"data").unwrap();
    }
    fs::write(m.src.join("had"), b"data").unwrap();
    setx(&m.src.join("had"), "user.k", b"h", 0).unwrap();
    // Tiering's own records do not count as xattrs, and stay hidden.
    setx(&m.src.join("priv"), "trusted.coldtier.id", b"0123", 0).unwrap();
    for n in ["a", "b", "priv"] {
        let p = m.mnt.join(n);
        assert_eq!(getx(&p, "user.k", 16), Err(libc::ENODATA), "{n}");
        assert_eq!(getx(&p, "user.k", 0), Err(libc::ENODATA), "{n}");
        assert_eq!(listx(&p, 64), Ok(String::new()), "{n}");
        assert_eq!(listx(&p, 0), Ok("size 0".into()), "{n}");
    }
    assert_eq!(getx(&m.mnt.join("had"), "user.k", 16), Ok("1 \"h\"".into()));
    assert_eq!(listx(&m.mnt.join("had"), 64), Ok("user.k".into()));
    // Set through the mount: seen at once.
    setx(&m.mnt.join("a"), "user.k", b"v", 0).unwrap();
    assert_eq!(getx(&m.mnt.join("a"), "user.k", 16), Ok("1 \"v\"".into()));
    assert_eq!(listx(&m.mnt.join("a"), 64), Ok("user.k".into()));
    // Set behind the mount: seen once the attribute timeout has passed.
    setx(&m.src.join("b"), "user.k", b"w", 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    assert_eq!(getx(&m.mnt.join("b"), "user.k", 16), Ok("1 \"w\"".into()));
    assert_eq!(listx(&m.mnt.join("b"), 64), Ok("user.k".into()));
    assert_eq!(
        getx(&m.mnt.join("priv"), "trusted.coldtier.id", 16),
        Err(libc::ENODATA)
    );
}

#[test]
fn xattrs_match_native_and_private_ones_are_hidden() {
    let m = Mounted::new();
    for r in [&m.native, &m.mnt] {
        fs::write(r.join("x"), b"data").unwrap();
    }
    same(&m, "set", |r| setx(&r.join("x"), "user.color", b"blue", 0));
    same(&m, "set CREATE existing", |r| {
        setx(&r.join("x"), "user.color", b"red", libc::XATTR_CREATE)
    });
    same(&m, "set REPLACE missing", |r| {
        setx(&r.join("x"), "user.size", b"1", libc::XATTR_REPLACE)
    });
    same(&m, "get", |r| getx(&r.join("x"), "user.color", 64));
    same(&m, "get size query", |r| {
        getx(&r.join("x"), "user.color", 0)
    });
    same(&m, "get too small", |r| getx(&r.join("x"), "user.color", 2));
    same(&m, "get missing", |r| getx(&r.join("x"), "user.nope", 64));
    same(&m, "set second", |r| {
        setx(&r.join("x"), "user.shape", b"round", 0)
    });
    same(&m, "list", |r| listx(&r.join("x"), 1024));
    same(&m, "list size", |r| listx(&r.join("x"), 0));
    same(&m, "list too small", |r| listx(&r.join("x"), 3));
    same(&m, "remove", |r| {
        let n = CString::new("user.color").unwrap();
        // SAFETY: NUL-terminated strings.
        rc(unsafe { libc::lremovexattr(c(&r.join("x")).as_ptr(), n.as_ptr()) })?;
        listx(&r.join("x"), 1024)
    });
    same(&m, "user xattr on symlink", |r| {
        std::os::unix::fs::symlink("x", r.join("l")).unwrap();
        setx(&r.join("l"), "user.a", b"b", 0)
    });

    // coldtier's own records on the backing file cannot be seen, forged or removed via the mount.
    setx(&m.s("x"), "trusted.coldtier.stub", b"record", 0)
        .expect("root sets trusted xattrs on the backing file");
    assert_eq!(
        getx(&m.m("x"), "trusted.coldtier.stub", 64),
        Err(libc::ENODATA)
    );
    assert!(!listx(&m.m("x"), 1024).unwrap().contains("coldtier"));
    assert_eq!(
        listx(&m.m("x"), 0),
        listx(&m.n("x"), 0),
        "size query must not count hidden names"
    );
    assert_eq!(
        setx(&m.m("x"), "trusted.coldtier.stub", b"forged", 0),
        Err(libc::EPERM)
    );
    assert_eq!(
        setx(&m.m("new-name"), "trusted.coldtier.x", b"forged", 0),
        Err(libc::ENOENT)
    );
    let n = CString::new("trusted.coldtier.stub").unwrap();
    // SAFETY: NUL-terminated strings.
    assert_eq!(
        rc(unsafe { libc::lremovexattr(c(&m.m("x")).as_ptr(), n.as_ptr()) }),
        Err(libc::ENODATA)
    );
    assert_eq!(
        getx(&m.s("x"), "trusted.coldtier.stub", 64).unwrap(),
        "6 \"record\""
    );
    // Other trusted.* names are root's to use, as on the native filesystem.
    same(&m, "trusted other", |r| {
        setx(&r.join("x"), "trusted.other", b"1", 0)
    });
}

#[test]
fn space_and_range_operations_match_native() {
    let m = Mounted::new();
    same(&m, "fallocate + SEEK_DATA/SEEK_HOLE", |r| {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(r.join("sparse"))
            .unwrap();
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        // SAFETY: plain syscalls on a valid fd.
        unsafe {
            rc(libc::fallocate(fd, 0, 1 << 20, 1 << 20))?;
            rc(libc::ftruncate(fd, 8 << 20))?;
            let data = libc::lseek(fd, 0, libc::SEEK_DATA);
            let hole = libc::lseek(fd, data, libc::SEEK_HOLE);
            let past = libc::lseek(fd, 9 << 20, libc::SEEK_DATA);
            let past_errno = errno();
            rc(libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                1 << 20,
                4096,
            ))?;
            let data2 = libc::lseek(fd, 0, libc::SEEK_DATA);
            Ok(format!(
                "data={data} hole={hole} past={past}/{past_errno} data2={data2}"
            ))
        }
    });
    same(&m, "copy_file_range", |r| {
        fs::write(
            r.join("src"),
            (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        let a = fs::File::open(r.join("src")).unwrap();
        let b = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(r.join("dst"))
            .unwrap();
        use std::os::fd::AsRawFd;
        let mut done = 0usize;
        while done < 200_000 {
            let mut oi = done as i64;
            let mut oo = done as i64;
            // SAFETY: valid fds and offset pointers.
            let n = unsafe {
                libc::copy_file_range(
                    a.as_raw_fd(),
                    &mut oi,
                    b.as_raw_fd(),
                    &mut oo,
                    200_000 - done,
                    0,
                )
            };
            if n <= 0 {
                return Err(errno());
            }
            done += n as usize;
        }
        Ok(format!(
            "{}",
            fs::read(r.join("dst")).unwrap() == fs::read(r.join("src")).unwrap()
        ))
    });
    let df = |p: &Path| {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: NUL-terminated path, s writable.
        assert_eq!(unsafe { libc::statvfs(c(p).as_ptr(), &mut s) }, 0);
        s
    };
    let (a, b) = (df(&m.mnt), df(&m.src));
    assert_eq!(
        (a.f_blocks, a.f_bsize, a.f_namemax, a.f_files),
        (b.f_blocks, b.f_bsize, b.f_namemax, b.f_files)
    );
}

#[test]
fn objects_are_created_with_the_callers_identity() {
    let m = Mounted::new();
    for r in [&m.native, &m.mnt] {
        fs::set_permissions(r, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(r.join("sgid")).unwrap();
        std::os::unix::fs::chown(r.join("sgid"), Some(0), Some(4242)).unwrap();
        fs::set_permissions(r.join("sgid"), fs::Permissions::from_mode(0o2777)).unwrap();
    }
    let as_nobody = |r: &Path, cmd: &str| {
        let (ok, out, err) = sh(&format!(
            "cd '{}' && umask 022 && setpriv --reuid=65534 --regid=65533 --clear-groups bash -c '{cmd}'",
            r.display()
        ));
        if ok {
            Ok(out)
        } else {
            Err(err.len() as i32)
        }
    };
    same(&m, "file by nobody", |r| {
        as_nobody(
            r,
            "echo hi > f && mkdir d && ln -s f s && mkfifo p && touch sgid/inner && mkdir sgid/sub",
        )?;
        let mut out = Vec::new();
        for n in ["f", "d", "s", "p", "sgid/inner", "sgid/sub"] {
            out.push(format!("{n}: {:?}", attrs(&r.join(n))));
        }
        Ok(out.join("; "))
    });
    let md = fs::metadata(m.s("f")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (65534, 65533),
        "owner in the backing tree"
    );
    let sub = fs::metadata(m.s("sgid/sub")).unwrap();
    assert_eq!(sub.gid(), 4242);
    assert!(sub.mode() & 0o2000 != 0, "setgid directories propagate");
    // Permission checks are the kernel's (default_permissions): nobody cannot touch root's file.
    fs::write(m.m("rootonly"), b"secret").unwrap();
    fs::set_permissions(m.m("rootonly"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.n("rootonly"), b"secret").unwrap();
    fs::set_permissions(m.n("rootonly"), fs::Permissions::from_mode(0o600)).unwrap();
    same(
        &m,
        "unprivileged write and truncate clear setuid/setgid",
        |r| {
            for n in ["suid-w", "suid-t"] {
                fs::write(r.join(n), b"x").unwrap();
                fs::set_permissions(r.join(n), fs::Permissions::from_mode(0o6777)).unwrap();
            }
            as_nobody(r, "echo more >> suid-w && truncate -s 0 suid-t")?;
            Ok(format!(
                "{:?} {:?}",
                attrs(&r.join("suid-w")),
                attrs(&r.join("suid-t"))
            ))
        },
    );
    same(&m, "read denied", |r| as_nobody(r, "cat rootonly"));
    same(&m, "sticky dir delete denied", |r| {
        as_nobody(r, "rm -f rootonly")
    });
}

#[test]
fn posix_acls_are_enforced_and_default_acls_beat_the_umask() {
    let m = Mounted::new();
    for r in [&m.native, &m.mnt] {
        fs::set_permissions(r, fs::Permissions::from_mode(0o755)).unwrap();
    }
    same(&m, "access ACL grants read beyond the mode bits", |r| {
        fs::write(r.join("f"), b"secret").unwrap();
        fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        let (ok, _, err) = sh(&format!(
            "setfacl -m u:nobody:r '{}'",
            r.join("f").display()
        ));
        assert!(ok, "setfacl (apt: acl): {err}");
        let (ok, out, err) = sh(&format!(
            "setpriv --reuid=nobody --regid=nogroup --clear-groups cat '{}'",
            r.join("f").display()
        ));
        Ok(format!("{ok} {out} {}", err.contains("denied")))
    });
    same(
        &m,
        "default ACL overrides the umask; plain dirs apply it",
        |r| {
            let (ok, _, err) = sh(&format!(
                "cd '{}' && mkdir dd && setfacl -d -m u:nobody:rwx dd && umask 027 && \
             touch dd/new && mkdir dd/sub && touch plain && mkdir plaind && mkfifo dd/p",
                r.display()
            ));
            assert!(ok, "{err}");
            let (_, acl, _) = sh(&format!(
                "cd '{}' && getfacl -cp dd/new dd/sub",
                r.display()
            ));
            let mut out = vec![acl];
            for n in ["dd/new", "dd/sub", "dd/p", "plain", "plaind"] {
                out.push(format!("{n} {:?}", attrs(&r.join(n))));
            }
            Ok(out.join("\n"))
        },
    );
}

#[test]
fn mount_over_its_own_source() {
    let m = Mounted::over_source(|src| {
        fs::write(src.join("existing.txt"), b"was here before").unwrap();
        fs::create_dir(src.join("dir")).unwrap();
        fs::write(src.join("dir/inner"), b"inner").unwrap();
    });
    assert_eq!(m.src, m.mnt);
    assert_eq!(fstype_at(&m.mnt).as_deref(), Some("fuse.coldtier"));
    assert_eq!(fs::read(m.m("existing.txt")).unwrap(), b"was here before");
    assert_eq!(fs::read(m.m("dir/inner")).unwrap(), b"inner");
    let ino_before = fs::metadata(m.m("existing.txt")).unwrap().ino();
    fs::write(m.m("dir/new"), b"written through the mount").unwrap();
    let mut m = m;
    m.umount();
    // After unmount the directory shows the same data: nothing was hidden or copied.
    assert_eq!(
        fs::read(m.src.join("dir/new")).unwrap(),
        b"written through the mount"
    );
    assert_eq!(
        fs::metadata(m.src.join("existing.txt")).unwrap().ino(),
        ino_before
    );
}

#[test]
fn inode_numbers_and_generations_are_stable_across_restart() {
    let mut m = Mounted::new();
    fs::write(m.s("a"), b"1").unwrap();
    fs::create_dir(m.s("d")).unwrap();
    let first: Vec<u64> = ["a", "d", ""]
        .iter()
        .map(|n| fs::metadata(m.m(n)).unwrap().ino())
        .collect();
    let backing: Vec<u64> = ["a", "d"]
        .iter()
        .map(|n| fs::metadata(m.s(n)).unwrap().ino())
        .collect();
    assert_eq!(&first[..2], &backing[..]);
    m.umount();
    m.remount();
    let second: Vec<u64> = ["a", "d", ""]
        .iter()
        .map(|n| fs::metadata(m.m(n)).unwrap().ino())
        .collect();
    assert_eq!(first, second);
    // Deleting and recreating reuses backing numbers on ext4; the new file must read as new.
    for i in 0..20 {
        fs::remove_file(m.m("a")).unwrap();
        fs::write(m.m("a"), format!("gen{i}")).unwrap();
        assert_eq!(fs::read_to_string(m.m("a")).unwrap(), format!("gen{i}"));
    }
}

/// A walk that stats what it lists (find, `ls -l`, du, Samba) gets every entry's attributes
/// with the listing (READDIRPLUS, `fuse.readdirplus = "always"`, the default), so the
/// kernel needs no LOOKUP round trip per entry. With "auto", find (which lists a directory
/// in several reads before it stats) gets attributes with the first block only.
///
/// What the daemon controls is asserted: the entries it sends with attributes. The LOOKUPs
/// that follow are the kernel's (a loaded machine reclaims dentries, and they come back by
/// LOOKUP): printed here, measured by `scripts/bench.sh` (LOOKUPs per entry of `ls -l`).
#[test]
fn a_walk_that_stats_sends_no_lookup_per_entry() {
    const N: usize = 2000;
    for (mode, all_with_attributes) in [("always", true), ("auto", false)] {
        let port = common::free_port();
        let cfg = format!(
            "[fuse]\nreaddirplus = \"{mode}\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        );
        let m = Mounted::with_config(Some(&cfg));
        // Made behind the mount: the kernel knows none of them.
        std::fs::create_dir(m.src.join("d")).unwrap();
        for i in 0..N {
            std::fs::write(m.src.join(format!("d/f{i:04}")), vec![b'x'; i]).unwrap();
        }
        let walk = |dir: &Path| {
            let out = Command::new("find")
                .arg(dir)
                .args(["-printf", "%P %s %m %u %g %n %T@\\n"])
                .output()
                .unwrap();
            assert!(out.status.success(), "find {dir:?}");
            let mut lines: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            lines
        };
        let count = |op: &str| {
            common::scrape(port)[&format!("coldtier_fuse_requests_total{{op=\"{op}\"}}")]
        };
        let before = count("lookup");
        let sent_before = common::scrape(port)["coldtier_readdirplus_entries_total"];
        let through = walk(&m.mnt.join("d"));
        let lookups = count("lookup") - before;
        let sent = common::scrape(port)["coldtier_readdirplus_entries_total"] - sent_before;
        eprintln!("{mode}: {sent} entries sent with attributes, {lookups} LOOKUPs, {N} entries");
        assert_eq!(
            through,
            walk(&m.src.join("d")),
            "find through the mount ({mode})"
        );
        assert_eq!(through.len(), N + 1);
        assert!(
            count("readdirplus") >= 1.0,
            "{mode}: no READDIRPLUS request"
        );
        if all_with_attributes {
            assert!(
                sent >= N as f64,
                "{mode}: only {sent} of {N} entries sent with their attributes"
            );
        } else {
            assert!(
                sent < N as f64,
                "{mode}: all {sent} entries sent with attributes"
            );
        }
    }
}

/// A second `ls -l` of a directory the kernel holds, fresh: every entry goes by name only
/// (no attributes sent again, so the kernel keeps its cached ACLs) and the listing sends no
/// request per entry (no GETXATTR of ACLs; `security.selinux` answered EOPNOTSUPP once, so
/// ls stops asking). The output is that of the first listing. A file changed behind the
/// mount goes with its new attributes, and the next listing shows them.
#[test]
fn a_cached_ls_l_sends_no_request_per_entry_and_sees_changes_behind_the_mount() {
    const N: usize = 300;
    let port = common::free_port();
    let cfg = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let m = Mounted::with_config(Some(&cfg));
    std::fs::create_dir(m.src.join("d")).unwrap();
    for i in 0..N {
        std::fs::write(m.src.join(format!("d/f{i:04}")), vec![b'x'; i]).unwrap();
    }
    let metric = |name: &str| common::scrape(port).get(name).copied().unwrap_or(0.0);
    let op = |op: &str| metric(&format!("coldtier_fuse_requests_total{{op=\"{op}\"}}"));
    let ls = || {
        let (ok, out, err) = sh(&format!(
            "ls -l --time-style=full-iso '{}'",
            m.m("d").display()
        ));
        assert!(ok, "ls -l: {err}");
        out
    };
    let first = ls();
    assert_eq!(first.lines().count(), N + 1, "{first}");
    let (xattrs, lookups, getattrs) = (op("getxattr"), op("lookup"), op("getattr"));
    let name_only = metric("coldtier_readdirplus_name_only_total");
    let second = ls();
    assert_eq!(second, first, "the cached listing differs");
    let sent = metric("coldtier_readdirplus_name_only_total") - name_only;
    assert_eq!(
        sent, N as f64,
        "entries sent by name only in the cached listing"
    );
    let per_listing = [
        ("getxattr", op("getxattr") - xattrs),
        ("lookup", op("lookup") - lookups),
        ("getattr", op("getattr") - getattrs),
    ];
    for (what, n) in per_listing {
        assert!(
            n <= 3.0,
            "the cached ls -l of {N} entries sent {n} {what} requests"
        );
    }
    // Behind the mount: a file grows. The listing sends its new attributes.
    std::fs::write(m.src.join("d/f0007"), vec![b'y'; 5000]).unwrap();
    let third = ls();
    let line = third.lines().find(|l| l.ends_with(" f0007")).unwrap();
    assert!(
        line.contains(" 5000 "),
        "after a change behind the mount: {line}"
    );
    assert_eq!(std::fs::metadata(m.m("d/f0007")).unwrap().len(), 5000);
}

/// Without SELinux on the host, `security.selinux` of a file without a label is
/// EOPNOTSUPP (the mount has no labels), not ENODATA; a label a file carries is shown.
#[test]
fn security_selinux_is_unsupported_without_selinux_and_labels_show() {
    if Path::new("/sys/fs/selinux/enforce").exists() {
        // Not this machine's case (nor CI's); the rule is for hosts without SELinux.
        eprintln!("SELinux is enabled here: the labels are the kernel's, nothing to check");
        return;
    }
    let m = Mounted::new();
    fs::write(m.s("plain"), b"x").unwrap();
    fs::write(m.s("labelled"), b"x").unwrap();
    let label = b"system_u:object_r:var_t:s0\0";
    assert!(setx(&m.s("labelled"), "security.selinux", label, 0).is_ok());
    assert_eq!(
        getx(&m.m("plain"), "security.selinux", 256),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(
        getx(&m.m("labelled"), "security.selinux", 256),
        getx(&m.s("labelled"), "security.selinux", 256)
    );
    assert!(getx(&m.m("labelled"), "security.selinux", 256).is_ok());
    // Other security.* names are the backing file's, as they are.
    assert_eq!(
        getx(&m.m("plain"), "security.capability", 256),
        getx(&m.s("plain"), "security.capability", 256)
    );
}

/// `coldtier mount -o`: mount(8)'s options apply to the mount (mountinfo shows them),
/// coldtier's own (config=FILE) are taken, mount(8)'s and systemd's are ignored; `ro`
/// refuses writes; an unknown option is refused by name and nothing is mounted.
#[test]
fn mount_options_apply_to_the_mount_and_unknown_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&mnt).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let port = common::free_port();
    let cfg = dir.path().join("c.toml");
    fs::write(&cfg, format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let (s, m) = (src.to_str().unwrap(), mnt.to_str().unwrap());
    let opts = format!(
        "nosuid,nodev,noexec,noatime,_netdev,nofail,x-systemd.automount,config={}",
        cfg.display()
    );
    let out = coldtier(&["mount", s, m, "-o", &opts, "-o", "defaults"]);
    assert!(out.status.success(), "{}", common::show(&out));
    // Either mount of this test, if an assertion fails with it up.
    let _unmount = common::UmountOnDrop(mnt.clone());
    let o = common::mount_options_at(&mnt).expect("not mounted");
    for want in ["rw", "nosuid", "nodev", "noexec", "noatime"] {
        assert!(o.iter().any(|x| x == want), "{want} not in {o:?}");
    }
    assert!(
        common::scrape(port).contains_key("coldtier_readdirplus_entries_total"),
        "config=FILE not read"
    );
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"data");
    let out = coldtier(&["umount", m]);
    assert!(out.status.success(), "{}", common::show(&out));

    let out = coldtier(&["mount", s, m, "-o", "ro"]);
    assert!(out.status.success(), "{}", common::show(&out));
    assert!(common::mount_options_at(&mnt)
        .unwrap()
        .iter()
        .any(|x| x == "ro"));
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"data");
    let e = fs::write(mnt.join("g"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let out = coldtier(&["umount", m]);
    assert!(out.status.success(), "{}", common::show(&out));

    let out = coldtier(&["mount", s, m, "-o", "nosuid,bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mount option `bogus`"), "{err}");
    assert!(!is_mountpoint(&mnt), "mounted despite an unknown option");
}

/// `mount -t fuse.coldtier SOURCE MOUNTPOINT -o ...` and an /etc/fstab-style line
/// (`mount -T FSTAB MOUNTPOINT`) mount through the helper scripts/mount.fuse.coldtier.
#[test]
fn mount_t_fuse_coldtier_and_an_fstab_line_mount_through_the_helper() {
    let helper = Path::new("/sbin/mount.fuse.coldtier");
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mount.fuse.coldtier");
    // Installed for this test when the machine has none (and removed after it).
    struct Installed(bool);
    impl Drop for Installed {
        fn drop(&mut self) {
            if self.0 {
                let _ = fs::remove_file("/sbin/mount.fuse.coldtier");
            }
        }
    }
    let _installed = Installed(if helper.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(&ours, helper).unwrap();
        true
    } else {
        false
    });
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&mnt).unwrap();
    fs::write(src.join("f"), b"through mount(8)").unwrap();
    let port = common::free_port();
    let cfg = dir.path().join("c.toml");
    fs::write(&cfg, format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("mount")
            .args(args)
            .env("COLDTIER_BIN", common::bin())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {args:?}: {}",
            common::show(&out)
        );
    };
    let opts = format!("config={},nosuid", cfg.display());
    run(&[
        "-t",
        "fuse.coldtier",
        src.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "-o",
        &opts,
    ]);
    assert_eq!(fstype_at(&mnt).as_deref(), Some("fuse.coldtier"));
    assert!(common::mount_options_at(&mnt)
        .unwrap()
        .iter()
        .any(|x| x == "nosuid"));
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"through mount(8)");
    assert!(common::scrape(port).contains_key("coldtier_readdirplus_entries_total"));
    let out = coldtier(&["umount", mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::show(&out));

    let fstab = dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# a coldtier mount\n{} {} fuse.coldtier config={},nodev,_netdev,nofail,x-systemd.requires=network-online.target 0 0\n",
            src.display(),
            mnt.display(),
            cfg.display()
        ),
    )
    .unwrap();
    run(&["-T", fstab.to_str().unwrap(), mnt.to_str().unwrap()]);
    assert!(common::mount_options_at(&mnt)
        .unwrap()
        .iter()
        .any(|x| x == "nodev"));
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"through mount(8)");
    let out = coldtier(&["umount", mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::show(&out));
}

/// The file attribute flags (chattr, lsattr) through the mount are the backing file's, with
/// the kernel's rules, as natively: read and set (FS_IOC_GETFLAGS/SETFLAGS, directories
/// too); an append-only file opens for appending only; an immutable file or directory
/// refuses every change; cleared, both behave as before.
#[test]
fn file_attribute_flags_match_native() {
    let m = Mounted::new();
    for r in [&m.native, &m.mnt] {
        fs::write(r.join("a"), b"x\n").unwrap();
        fs::write(r.join("i"), b"y").unwrap();
        fs::create_dir(r.join("d")).unwrap();
    }
    let flags = |p: &Path| -> Outcome {
        let f = fs::File::open(p).map_err(|e| e.raw_os_error().unwrap())?;
        let mut v: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one int.
        rc(unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::FS_IOC_GETFLAGS,
                &mut v,
            )
        })?;
        Ok(format!("{:#x}", v & 0x30)) // append-only, immutable
    };
    let set = |p: &Path, add: i32, remove: i32| -> Outcome {
        let f = fs::File::open(p).map_err(|e| e.raw_os_error().unwrap())?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let mut v: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one int, FS_IOC_SETFLAGS reads one.
        unsafe {
            rc(libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut v))?;
            v = (v | add) & !remove;
            rc(libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &v))
        }
    };
    let open = |p: &Path, flags: i32| -> Outcome {
        let c = c(p);
        // SAFETY: a NUL-terminated path; the fd is closed at once.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(errno());
        }
        unsafe { libc::close(fd) };
        Ok("opened".into())
    };
    const APPEND: i32 = 0x20;
    const IMMUTABLE: i32 = 0x10;
    // Held open across the chattrs: the mount's file for them is opened before the flags
    // are set, and new writers must still be held to the flags the file has now.
    let _held: Vec<fs::File> = [&m.native, &m.mnt]
        .iter()
        .flat_map(|r| ["a", "i"].map(|n| fs::File::open(r.join(n)).unwrap()))
        .collect();
    same(&m, "lsattr", |r| flags(&r.join("a")));
    same(&m, "chattr +a", |r| set(&r.join("a"), APPEND, 0));
    same(&m, "lsattr +a", |r| flags(&r.join("a")));
    same(&m, "append", |r| {
        io(
            fs::OpenOptions::new().append(true).open(r.join("a")),
            |mut f| format!("{:?}", f.write_all(b"more\n").map_err(|e| e.raw_os_error())),
        )
    });
    same(&m, "open for writing, not appending", |r| {
        open(&r.join("a"), libc::O_WRONLY)
    });
    same(&m, "truncate", |r| {
        open(&r.join("a"), libc::O_WRONLY | libc::O_TRUNC)
    });
    same(&m, "contents", |r| {
        io(fs::read(r.join("a")), |b| format!("{b:?}"))
    });
    same(&m, "chattr +i", |r| set(&r.join("i"), IMMUTABLE, 0));
    same(&m, "chattr +i dir", |r| set(&r.join("d"), IMMUTABLE, 0));
    same(&m, "lsattr dir", |r| flags(&r.join("d")));
    same(&m, "write immutable", |r| {
        open(&r.join("i"), libc::O_WRONLY)
    });
    same(&m, "rename immutable", |r| {
        rename2(&r.join("i"), &r.join("j"), 0)
    });
    same(&m, "create in immutable dir", |r| {
        io(fs::write(r.join("d/x"), b"z"), |_| "made".into())
    });
    same(&m, "chattr -a -i", |r| {
        set(&r.join("a"), 0, APPEND)?;
        set(&r.join("i"), 0, IMMUTABLE)?;
        set(&r.join("d"), 0, IMMUTABLE)
    });
    same(&m, "write after", |r| {
        io(fs::write(r.join("i"), b"w"), |_| "written".into())
    });
    same(&m, "create after", |r| {
        io(fs::write(r.join("d/x"), b"z"), |_| "made".into())
    });
}

/// statx's birth time (STX_BTIME) through the mount is the backing file's, for files and
/// directories, as natively; the basic stats statx gives agree with stat's.
#[test]
fn birth_time_matches_native() {
    let m = Mounted::new();
    fs::write(m.s("f"), b"born").unwrap();
    fs::create_dir(m.s("d")).unwrap();
    let sx = |p: &Path| -> (u32, i64, u32, u64, u64) {
        let c = c(p);
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a statx buffer.
        let r = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                c.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                libc::STATX_BASIC_STATS | libc::STATX_BTIME,
                &mut st,
            )
        };
        assert_eq!(
            r,
            0,
            "statx {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        (
            st.stx_mask & libc::STATX_BTIME,
            st.stx_btime.tv_sec,
            st.stx_btime.tv_nsec,
            st.stx_size,
            st.stx_ino,
        )
    };
    for rel in ["f", "d"] {
        let native = sx(&m.s(rel));
        let mounted = sx(&m.m(rel));
        assert_ne!(
            native.0, 0,
            "{rel}: the backing file system has no birth time here"
        );
        assert_eq!(mounted.0, native.0, "{rel}: STATX_BTIME in the mask");
        assert_eq!(
            (mounted.1, mounted.2),
            (native.1, native.2),
            "{rel}: birth time"
        );
        assert_eq!(mounted.3, native.3, "{rel}: size");
        assert_eq!(
            mounted.4,
            fs::metadata(m.m(rel)).unwrap().ino(),
            "{rel}: ino as stat says"
        );
    }
    // Written through the mount: the birth time stays, the size follows.
    fs::write(m.m("f"), b"grown up").unwrap();
    let (_, s, ns, size, _) = sx(&m.m("f"));
    assert_eq!((s, ns), (sx(&m.s("f")).1, sx(&m.s("f")).2));
    assert_eq!(size, 8);
}

/// A write through a shared mapping, then msync(MS_SYNC): stat through the mount shows the
/// new mtime and ctime at once (the backing file's), not after the attribute timeout, also
/// when the attributes were asked after the open; with and without passthrough (with it,
/// the mapping is the backing file's and the daemon hears nothing: a file open for
/// writing has its attributes asked again at every stat).
#[test]
fn mtime_after_a_write_through_a_shared_mapping_and_msync_shows_at_once() {
    for config in [None, Some("[fuse]\npassthrough = false\n")] {
        let m = Mounted::with_config(config);
        fs::write(m.m("f"), vec![b'a'; 8192]).unwrap();
        // Times from the past, so that the mapping's write moves them visibly.
        let past = filetime(1_000_000_000);
        set_times(&m.m("f"), past);
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.m("f"))
            .unwrap();
        // SAFETY: a shared mapping of 8 KiB of a file this test holds, unmapped below.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
            // Attributes asked (and cached by the kernel) after the open, before the write.
            let before = fs::metadata(m.m("f")).unwrap();
            assert_eq!(before.mtime(), 1_000_000_000, "{config:?}");
            *(p as *mut u8).add(100) = b'z';
            assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
            libc::munmap(p, 8192);
        }
        let through = fs::metadata(m.m("f")).unwrap();
        let backing = fs::metadata(m.s("f")).unwrap();
        assert_ne!(
            backing.mtime(),
            1_000_000_000,
            "{config:?}: the backing file kept its mtime"
        );
        assert_eq!(
            (through.mtime(), through.mtime_nsec()),
            (backing.mtime(), backing.mtime_nsec()),
            "{config:?}: mtime through the mount after msync"
        );
        assert_eq!(
            (through.ctime(), through.ctime_nsec()),
            (backing.ctime(), backing.ctime_nsec()),
            "{config:?}: ctime through the mount after msync"
        );
        drop(f);
        assert_eq!(fs::read(m.m("f")).unwrap()[100], b'z');
    }
}

fn filetime(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    }
}

fn set_times(p: &Path, t: libc::timespec) {
    let ts = [t, t];
    // SAFETY: a NUL-terminated path and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c(p).as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
}

/// Set-user-ID and set-group-ID go as on ext4 when an unprivileged caller (nobody, no
/// supplementary groups) changes a file with fallocate (allocate, punch a hole, zero a
/// range), or, as its owner outside the file's group, sets an access ACL; a caller in the
/// group keeps set-group-ID across its ACL change.
#[test]
fn set_id_bits_go_after_writes_truncates_fallocate_and_acl_changes_as_natively() {
    let m = Mounted::new();
    // nobody must reach both trees.
    for d in [m.mnt.parent().unwrap(), &m.native, &m.src] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let as_nobody = |cmd: &[&str]| -> Outcome {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(cmd)
            .output()
            .unwrap();
        if out.status.success() {
            Ok("ok".into())
        } else {
            Err(out.status.code().unwrap_or(-1))
        }
    };
    let mode = |p: &Path| io(fs::metadata(p), |md| format!("{:o}", md.mode() & 0o7777));
    for (i, (start, args)) in [
        (0o2666, vec!["-l", "8192"]),
        (0o6666, vec!["-l", "8192"]),
        (0o2766, vec!["-l", "8192"]),
        (0o2666, vec!["-p", "-o", "0", "-l", "4096"]),
        (0o2666, vec!["-z", "-o", "0", "-l", "4096"]),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("f{i}");
        same(
            &m,
            &format!("fallocate {args:?} of a {start:o} file"),
            |r| {
                let p = r.join(&name);
                fs::write(&p, vec![b'x'; 8192]).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(start)).unwrap();
                let mut cmd = vec!["fallocate"];
                cmd.extend(args.iter().copied());
                let ps = p.to_str().unwrap().to_string();
                cmd.push(&ps);
                as_nobody(&cmd)?;
                mode(&p)
            },
        );
    }
    // Writes (served by kernel passthrough for other writers), truncating opens and
    // truncates, by one outside the file's group and one inside it.
    let ops: [(&str, &str); 3] = [
        (
            "write",
            "printf y | dd of=\"$0\" bs=1 seek=3 conv=notrunc status=none",
        ),
        ("O_TRUNC", ": > \"$0\""),
        ("truncate", "truncate -s 100 \"$0\""),
    ];
    for (op, script) in ops {
        for (start, group) in [
            (0o2666, 0u32),
            (0o6666, 0),
            (0o2766, 0),
            (0o4666, 0),
            (0o2666, 65534),
            (0o2676, 65534),
        ] {
            same(
                &m,
                &format!("{op} by nobody of a {start:o} file of group {group}"),
                |r| {
                    let p = r.join(format!("{op}-{start:o}-{group}"));
                    fs::write(&p, vec![b'x'; 8192]).unwrap();
                    std::os::unix::fs::chown(&p, None, Some(group)).unwrap();
                    fs::set_permissions(&p, fs::Permissions::from_mode(start)).unwrap();
                    as_nobody(&["sh", "-c", script, p.to_str().unwrap()])?;
                    mode(&p)
                },
            );
        }
    }
    // chown by root and chgrp by the owner (nobody, to its own group).
    for start in [0o6755, 0o2745, 0o4755, 0o2666] {
        same(&m, &format!("chown by root of a {start:o} file"), |r| {
            let p = r.join(format!("chown-{start:o}"));
            fs::write(&p, b"x").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(start)).unwrap();
            std::os::unix::fs::chown(&p, Some(1), Some(1)).unwrap();
            mode(&p)
        });
        same(
            &m,
            &format!("chgrp by the owner of a {start:o} file"),
            |r| {
                let p = r.join(format!("chgrp-{start:o}"));
                fs::write(&p, b"x").unwrap();
                std::os::unix::fs::chown(&p, Some(65534), Some(0)).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(start)).unwrap();
                as_nobody(&["chgrp", "65534", p.to_str().unwrap()])?;
                mode(&p)
            },
        );
    }
    for (name, group) in [("outside", 0u32), ("inside", 65534)] {
        same(
            &m,
            &format!("setfacl by the owner, {name} the group"),
            |r| {
                let p = r.join(format!("acl-{name}"));
                fs::write(&p, b"x").unwrap();
                std::os::unix::fs::chown(&p, Some(65534), Some(group)).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o2777)).unwrap();
                as_nobody(&["setfacl", "-m", "u:65534:rw", p.to_str().unwrap()])?;
                mode(&p)
            },
        );
    }
}

#[test]
fn many_inodes_beyond_the_fd_budget() {
    let m = Mounted::with_config(Some("[fuse]\ninode_fds = 16\n"));
    for d in 0..10 {
        fs::create_dir(m.s(&format!("d{d}"))).unwrap();
        for f in 0..200 {
            fs::write(m.s(&format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    // Every file is reachable, stat-able and readable with only 16 O_PATH fds allowed.
    for d in 0..10 {
        for f in 0..200 {
            let p = m.m(&format!("d{d}/f{f}"));
            assert_eq!(fs::read_to_string(&p).unwrap(), format!("{d}/{f}"));
        }
    }
    let (ok, out, err) = sh(&format!("find '{}' -type f | wc -l", m.mnt.display()));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2000");
    // Renames, deletes and recreations (inode number reuse) while inodes are handle-only.
    for f in 0..200 {
        fs::rename(m.m(&format!("d0/f{f}")), m.m(&format!("d1/moved{f}"))).unwrap();
        fs::remove_file(m.m(&format!("d2/f{f}"))).unwrap();
        fs::write(m.m(&format!("d2/g{f}")), format!("new{f}")).unwrap();
    }
    for f in 0..200 {
        assert_eq!(
            fs::read_to_string(m.m(&format!("d1/moved{f}"))).unwrap(),
            format!("0/{f}")
        );
        assert_eq!(
            fs::read_to_string(m.m(&format!("d2/g{f}"))).unwrap(),
            format!("new{f}")
        );
    }
    assert_eq!(fs::read_dir(m.m("d0")).unwrap().count(), 0);
    // An open file outlives its name even when its inode is reached by handle.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.m("d3/f0"))
        .unwrap();
    fs::remove_file(m.m("d3/f0")).unwrap();
    f.write_all(b"after unlink").unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "after unlink");
}

#[test]
fn resident_io_goes_through_kernel_passthrough() {
    for (passthrough, expect_daemon_io) in [(true, false), (false, true)] {
        let dir = tempfile::Builder::new()
            .prefix("coldtier-pt")
            .tempdir()
            .unwrap();
        let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&mnt).unwrap();
        let cfg = dir.path().join("c.toml");
        let port = common::free_port();
        fs::write(
            &cfg,
            format!(
                "[fuse]\npassthrough = {passthrough}\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("log");
        let out = coldtier(&[
            "mount",
            src.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _unmount = common::UmountOnDrop(mnt.clone());
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 256) as u8).collect();
        fs::write(mnt.join("big"), &data).unwrap();
        // Drop the page cache so reads reach the filesystem.
        sh("sync; echo 1 > /proc/sys/vm/drop_caches");
        assert_eq!(fs::read(mnt.join("big")).unwrap(), data);
        // A passthrough file's close needs no FLUSH (FOPEN_NOFLUSH); a served one's does.
        // The kernel sends RELEASE after close(2) has returned: wait for both files'.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let (flushes, releases) = loop {
            let m = common::scrape(port);
            let (flushes, releases) = (
                m["coldtier_fuse_requests_total{op=\"flush\"}"],
                m["coldtier_fuse_requests_total{op=\"release\"}"],
            );
            if releases >= 2.0 || std::time::Instant::now() >= deadline {
                break (flushes, releases);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(releases >= 2.0, "{releases} releases");
        if passthrough {
            assert_eq!(flushes, 0.0, "passthrough files were flushed");
        } else {
            assert!(flushes >= 2.0, "{flushes} flushes");
        }
        let out = coldtier(&["umount", mnt.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = fs::read_to_string(&log).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("coldtier unmounted"))
            .expect("unmount line in the log");
        let zero = line.contains("daemon_reads=0") && line.contains("daemon_writes=0");
        assert_eq!(!zero, expect_daemon_io, "passthrough={passthrough}: {line}");
        if passthrough {
            assert!(text.contains("kernel passthrough enabled"), "{text}");
        } else {
            assert!(
                text.contains("passthrough disabled by configuration"),
                "{text}"
            );
        }
    }
}

fn exit_code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn assert_bad_input(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit_code(out), 2, "exit code for {needle}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one-line error: {err}");
    assert!(err.contains(needle), "`{needle}` in: {err}");
}

/// Mount points under `dir` (tests run in parallel: only count our own).
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!(" {}", dir.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&prefix))
        .map(String::from)
        .collect()
}

#[test]
fn bad_input_is_refused_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let missing = dir.path().join("missing");

    assert_bad_input(
        &coldtier(&["mount", missing.to_str().unwrap()]),
        "does not exist",
    );
    assert_bad_input(
        &coldtier(&["mount", file.to_str().unwrap()]),
        "is not a directory",
    );
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    assert_bad_input(
        &coldtier(&["mount", src.to_str().unwrap(), file.to_str().unwrap()]),
        "is not a directory",
    );
    let cfg = dir.path().join("bad.toml");
    fs::write(&cfg, "[fuse]\nattr_timeout = \"never\"\n").unwrap();
    assert_bad_input(
        &coldtier(&[
            "mount",
            src.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]),
        "fuse.attr_timeout",
    );
    fs::write(&cfg, "[fuse]\nbogus = 1\n").unwrap();
    assert_bad_input(
        &coldtier(&[
            "mount",
            src.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]),
        "bogus",
    );

    // Not root.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::bin())
        .args(["mount", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_bad_input(&out, "must run as root");

    // No /dev/fuse (a private mount namespace with an empty /dev).
    let (ok, _, err) = sh(&format!(
        "unshare --mount --propagation private bash -c 'mount -t tmpfs none /dev && {} mount {}; echo \"exit=$?\" >&2'",
        common::bin().display(),
        src.display()
    ));
    assert!(ok, "{err}");
    assert!(err.contains("/dev/fuse does not exist"), "{err}");
    assert!(err.contains("exit=2"), "{err}");

    // Already a coldtier mount / mount point in use.
    let mut m = Mounted::new();
    assert_bad_input(
        &coldtier(&["mount", m.mnt.to_str().unwrap()]),
        "already a coldtier mount",
    );
    assert_bad_input(
        &coldtier(&["mount", m.m("").join(".").to_str().unwrap()]),
        "already a coldtier mount",
    );
    assert_bad_input(
        &coldtier(&["mount", src.to_str().unwrap(), m.mnt.to_str().unwrap()]),
        "in use",
    );
    fs::create_dir(m.m("sub")).unwrap();
    assert_bad_input(
        &coldtier(&["mount", src.to_str().unwrap(), m.m("sub").to_str().unwrap()]),
        "inside the coldtier mount",
    );
    // A separate file system mounted inside the coldtier mount may hold a coldtier mount:
    // the inner one's path walk ends on that file system, not on a node of the outer.
    fs::create_dir(m.m("scratch")).unwrap();
    assert!(
        sh(&format!(
            "mount -t tmpfs none '{}'",
            m.m("scratch").display()
        ))
        .0
    );
    fs::create_dir(m.m("scratch/inner")).unwrap();
    let inner_src = dir.path().join("inner-src");
    fs::create_dir(&inner_src).unwrap();
    fs::write(inner_src.join("f"), b"inner").unwrap();
    let out = coldtier(&[
        "mount",
        inner_src.to_str().unwrap(),
        m.m("scratch/inner").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(m.m("scratch/inner/f")).unwrap(), b"inner");
    let out = coldtier(&["umount", m.m("scratch/inner").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sh(&format!("umount '{}'", m.m("scratch").display())).0);
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    assert!(sh(&format!("mount -t tmpfs none '{}'", other.display())).0);
    assert_bad_input(
        &coldtier(&["mount", src.to_str().unwrap(), other.to_str().unwrap()]),
        "in use",
    );
    assert!(sh(&format!("umount '{}'", other.display())).0);
    assert_bad_input(
        &coldtier(&["umount", src.to_str().unwrap()]),
        "not a coldtier mount",
    );
    m.umount();
    assert_eq!(
        mounts_under(dir.path()),
        Vec::<String>::new(),
        "nothing left mounted"
    );
    assert_eq!(
        mounts_under(m.dir.path()),
        Vec::<String>::new(),
        "nothing left mounted"
    );
}

#[test]
fn umount_waits_refuses_when_busy_and_sigterm_unmounts() {
    let mut m = Mounted::new();
    fs::write(m.m("f"), b"x").unwrap();
    let held = fs::File::open(m.m("f")).unwrap();
    let out = coldtier(&["umount", m.mnt.to_str().unwrap()]);
    assert_eq!(
        exit_code(&out),
        1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
    assert_eq!(
        fs::read(m.m("f")).unwrap(),
        b"x",
        "still served after a refused unmount"
    );
    drop(held);
    m.umount();
    assert!(!is_mountpoint(&m.mnt));

    // SIGTERM to the daemon unmounts cleanly and the daemon exits.
    m.remount();
    let (ok, pid, _) = sh(&format!(
        "cat /run/coldtier/mounts/*.pid | grep -B2 -x '{}' | head -1",
        m.mnt.display()
    ));
    assert!(ok);
    let pid: i32 = pid
        .trim()
        .parse()
        .expect("daemon pid from the runtime record");
    // SAFETY: sending SIGTERM to the daemon we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while PathBuf::from(format!("/proc/{pid}")).exists() {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.contains(") Z") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not exit on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    m.mark_unmounted();
    assert!(!is_mountpoint(&m.mnt));
    assert_eq!(fs::read(m.s("f")).unwrap(), b"x");
}

#[test]
fn export_support_file_handles_resolve_through_the_mount() {
    let m = Mounted::new();
    fs::write(m.m("exported"), b"via handle").unwrap();
    let keep = fs::File::open(m.m("exported")).unwrap(); // keeps the inode cached
    let mut buf = [0u8; 8 + 128];
    buf[0..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf is a file_handle with handle_bytes set; mount_id is a valid out pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c(&m.m("exported")).as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "name_to_handle_at through the mount: errno {}",
        errno()
    );
    let dir = fs::File::open(&m.mnt).unwrap();
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: buf holds the handle just produced; dir is an open fd on the mount.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            dir.as_raw_fd(),
            buf.as_ptr(),
            libc::O_RDONLY,
        )
    };
    assert!(
        fd >= 0,
        "open_by_handle_at through the mount: errno {}",
        errno()
    );
    // SAFETY: fd was just returned by open_by_handle_at.
    let mut f = unsafe { fs::File::from_raw_fd(fd as i32) };
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "via handle");
    drop(keep);
}

/// O_TMPFILE as natively: an unnamed file, written, then named by linkat (through
/// /proc/self/fd with AT_SYMLINK_FOLLOW, and with AT_EMPTY_PATH), keeping its bytes, mode
/// and owner; O_TMPFILE | O_EXCL cannot be named (ENOENT); an unnamed one leaves nothing
/// behind when closed; as root and as nobody (owner and umask from the caller).
#[test]
fn o_tmpfile_then_linkat_as_natively() {
    let m = Mounted::new();
    for d in [m.mnt.parent().unwrap(), &m.native, &m.src] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let tmpfile = |dir: &Path, flags: i32| -> Result<OwnedFd, i32> {
        // SAFETY: NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c(dir).as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | flags,
                0o640,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: a new fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let link_proc = |fd: &OwnedFd, to: &Path| -> Outcome {
        let from = c(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())));
        // SAFETY: NUL-terminated paths.
        rc(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                c(to).as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })
    };
    same(&m, "O_TMPFILE, write, linkat /proc/self/fd", |r| {
        let fd = tmpfile(r, 0)?;
        let mut f = fs::File::from(fd);
        f.write_all(b"unnamed then named").unwrap();
        let fd = OwnedFd::from(f);
        link_proc(&fd, &r.join("named"))?;
        drop(fd);
        Ok(format!(
            "{} {:?}",
            attrs(&r.join("named"))?,
            fs::read(r.join("named")).unwrap()
        ))
    });
    same(&m, "O_TMPFILE, linkat AT_EMPTY_PATH", |r| {
        let fd = tmpfile(r, 0)?;
        // SAFETY: an empty NUL-terminated path names the fd itself.
        rc(unsafe {
            libc::linkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                c(&r.join("empty-path")).as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        })?;
        attrs(&r.join("empty-path"))
    });
    same(&m, "O_TMPFILE | O_EXCL cannot be named", |r| {
        let fd = tmpfile(r, libc::O_EXCL)?;
        link_proc(&fd, &r.join("excl"))
    });
    same(&m, "an unnamed O_TMPFILE leaves nothing", |r| {
        let fd = tmpfile(r, 0)?;
        fs::File::from(fd).write_all(b"gone").unwrap();
        let mut names: Vec<String> = fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names.join(","))
    });
    // As nobody, in a directory nobody may write: the file is nobody's.
    same(&m, "O_TMPFILE as nobody", |r| {
        let d = r.join("open");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        // linkat with AT_SYMLINK_FOLLOW (os.link calls link(2), which does not follow).
        let script = "import ctypes,os,sys\nfd=os.open(sys.argv[1], os.O_TMPFILE|os.O_RDWR, 0o666)\nos.write(fd,b'x')\nlibc=ctypes.CDLL(None, use_errno=True)\nr=libc.linkat(-100, b'/proc/self/fd/%d' % fd, -100, os.fsencode(sys.argv[1] + '/by-nobody'), 0x400)\nsys.exit(ctypes.get_errno() if r else 0)\n";
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "sh",
                "-c",
                "umask 027; exec python3 -c \"$0\" \"$1\"",
                script,
            ])
            .arg(&d)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(out.status.code().unwrap_or(-1));
        }
        attrs(&d.join("by-nobody"))
    });
    // Not refused alike: the files are there, through the mount too.
    assert_eq!(
        fs::read(m.mnt.join("named")).unwrap(),
        b"unnamed then named"
    );
    assert!(m.mnt.join("empty-path").exists());
    assert_eq!(
        fs::metadata(m.mnt.join("open/by-nobody")).unwrap().uid(),
        65534
    );
    assert_eq!(
        fs::metadata(m.mnt.join("open/by-nobody")).unwrap().mode() & 0o777,
        0o640
    );
}

/// What the kernel's FUSE layer cannot carry, pinned so that a change shows: collapse-range
/// and insert-range (FUSE forwards only keep-size, punch-hole and zero-range fallocate
/// modes) give EOPNOTSUPP, and FS_IOC_FIEMAP (FUSE has no fiemap) gives EOPNOTSUPP, where
/// ext4 does both (docs/semantics.md, "Known differences").
#[test]
fn collapse_and_insert_range_and_fiemap_are_refused_where_fuse_cannot_carry_them() {
    let m = Mounted::new();
    let fallocate = |p: &Path, mode: i32| -> Outcome {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        // SAFETY: a valid fd.
        rc(unsafe { libc::fallocate(f.as_raw_fd(), mode, 0, 4096) })
    };
    let fiemap = |p: &Path| -> Outcome {
        let f = fs::File::open(p).unwrap();
        // struct fiemap (32 bytes) with no room for extents: asks for the count only.
        let mut buf = [0u64; 4];
        buf[1] = u64::MAX; // fm_length
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        // SAFETY: a valid fd and a buffer the size of struct fiemap.
        rc(unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, buf.as_mut_ptr()) })
    };
    for r in [&m.native, &m.mnt] {
        fs::write(r.join("f"), vec![7u8; 64 * 1024]).unwrap();
    }
    for (what, mode) in [
        ("collapse-range", libc::FALLOC_FL_COLLAPSE_RANGE),
        ("insert-range", libc::FALLOC_FL_INSERT_RANGE),
    ] {
        assert!(
            fallocate(&m.native.join("f"), mode).is_ok(),
            "{what} natively"
        );
        assert_eq!(
            fallocate(&m.mnt.join("f"), mode),
            Err(libc::EOPNOTSUPP),
            "{what}"
        );
    }
    assert!(fiemap(&m.native.join("f")).is_ok(), "fiemap natively");
    assert_eq!(fiemap(&m.mnt.join("f")), Err(libc::EOPNOTSUPP), "fiemap");
    // The file through the mount is untouched by the refusals.
    assert_eq!(fs::read(m.mnt.join("f")).unwrap(), vec![7u8; 64 * 1024]);
}
