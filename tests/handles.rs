//! File handles of the mount (what an NFS server such as nfs-ganesha hands its clients:
//! `name_to_handle_at` on the mount) keep naming the same file after the kernel dropped
//! its inodes, after an unmount and mount, and after the daemon was killed; a deleted
//! file's handle gives ESTALE (docs/architecture.md, "NFS handles").

mod common;

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{coldtier, is_mountpoint, show, Mounted};

const MAX_HANDLE_SZ: usize = 128;

/// `name_to_handle_at(path)`: the handle bytes (header included).
fn handle_of(path: &Path) -> Vec<u8> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[0..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf is a file_handle with handle_bytes set to the space after its header.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "name_to_handle_at {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    let n = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
    buf.truncate(8 + n);
    buf
}

/// `open_by_handle_at(mount, handle, flags)`.
fn open_by_handle(mount: &Path, handle: &[u8], flags: i32) -> std::io::Result<std::fs::File> {
    let m = std::fs::File::open(mount)?;
    // SAFETY: handle is a complete file_handle from handle_of; m is an open directory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            std::os::fd::AsRawFd::as_raw_fd(&m),
            handle.as_ptr(),
            flags | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: r is a new fd this process owns.
    Ok(std::fs::File::from(unsafe {
        OwnedFd::from_raw_fd(r as i32)
    }))
}

fn read_by_handle(mount: &Path, handle: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut f = open_by_handle(mount, handle, libc::O_RDONLY)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Drops the kernel's unused dentries and inodes (those of the mount among them): the
/// daemon gets FORGET for them.
fn drop_caches() {
    // SAFETY: sync() takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

fn daemon_pid(mnt: &Path) -> i32 {
    common::runtime_record(mnt)[0].trim().parse().unwrap()
}

/// Kills the daemon with SIGKILL and detaches its dead mount.
fn kill_daemon(m: &mut Mounted) {
    let pid = daemon_pid(&m.mnt);
    // SAFETY: killing the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t0 = Instant::now();
    while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the daemon lives");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = coldtier(&[
        "umount",
        "--lazy",
        "--timeout",
        "10",
        m.mnt.to_str().unwrap(),
    ]);
    if is_mountpoint(&m.mnt) {
        eprintln!("coldtier umount --lazy left the mount: {}", show(&out));
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&m.mnt)
            .status();
    }
    assert!(!is_mountpoint(&m.mnt));
    m.mark_unmounted();
}

#[test]
fn handles_name_the_same_file_after_cache_drops_remounts_and_a_killed_daemon() {
    let mut m = Mounted::new();
    std::fs::create_dir_all(m.m("d/e")).unwrap();
    let files = [
        ("a", common::data(1, 5000)),
        ("d/b", common::data(2, 70_000)),
        ("d/e/c", b"c".to_vec()),
    ];
    for (name, body) in &files {
        std::fs::write(m.m(name), body).unwrap();
    }
    std::fs::write(m.m("gone"), b"x").unwrap();
    let handles: Vec<Vec<u8>> = files.iter().map(|(n, _)| handle_of(&m.m(n))).collect();
    let dir = handle_of(&m.m("d/e"));
    let gone = handle_of(&m.m("gone"));
    std::fs::remove_file(m.m("gone")).unwrap();

    let check = |m: &Mounted, when: &str| {
        for ((name, body), h) in files.iter().zip(&handles) {
            let got = read_by_handle(&m.mnt, h).unwrap_or_else(|e| panic!("{when}: {name}: {e}"));
            assert_eq!(&got, body, "{when}: {name}");
        }
        let d = open_by_handle(&m.mnt, &dir, libc::O_RDONLY | libc::O_DIRECTORY)
            .unwrap_or_else(|e| panic!("{when}: d/e: {e}"));
        // The directory opened is d/e: its entry `c` is there.
        let c = std::fs::read(format!(
            "/proc/self/fd/{}/c",
            std::os::fd::AsRawFd::as_raw_fd(&d)
        ))
        .unwrap_or_else(|e| panic!("{when}: d/e/c through the directory's handle: {e}"));
        assert_eq!(c, b"c");
        let e = read_by_handle(&m.mnt, &gone).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ESTALE),
            "{when}: a deleted file's handle: {e}"
        );
    };

    check(&m, "mounted");
    drop_caches();
    check(&m, "after a cache drop");
    m.umount();
    m.remount();
    check(&m, "after a remount");
    kill_daemon(&mut m);
    m.remount();
    check(
        &m,
        "after the daemon was killed and the source mounted again",
    );
    drop_caches();
    check(&m, "after a cache drop on the new mount");
    // The map is private to root, beside the catalog.
    let maps: Vec<_> = std::fs::read_dir("/var/lib/coldtier")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".db.handles"))
        .collect();
    assert!(!maps.is_empty());
    for e in maps {
        let mode = std::os::unix::fs::PermissionsExt::mode(&e.metadata().unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{}: {mode:o}", e.path().display());
    }
}

/// A file replaced by another under the same name: the old handle does not open the new
/// file (another inode, or the same number with another generation).
#[test]
fn a_handle_never_opens_another_file() {
    let mut m = Mounted::new();
    std::fs::write(m.m("f"), b"first").unwrap();
    let old = handle_of(&m.m("f"));
    std::fs::remove_file(m.m("f")).unwrap();
    std::fs::write(m.m("f"), b"second").unwrap();
    let new = handle_of(&m.m("f"));
    assert_ne!(old, new);
    m.umount();
    m.remount();
    assert_eq!(read_by_handle(&m.mnt, &new).unwrap(), b"second");
    let e = read_by_handle(&m.mnt, &old).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
}
