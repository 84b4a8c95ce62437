//! A stable filesystem id for file servers (`mount.fsid`): the mount is made as `fuseblk`
//! on a loop device whose (tiny, private) image carries the configured UUID.
//!
//! Why (docs/architecture.md, "A filesystem id that survives a remount"): a FUSE mount
//! reports `f_fsid` 0 and gets a new anonymous device number at every mount, so a file
//! server that names the filesystem in its handles by either (nfs-ganesha's FSAL_VFS)
//! hands out handles that go stale at the next remount or reboot. nfs-ganesha first asks
//! libblkid for the UUID of the mount's device: a `fuseblk` mount's device is the loop
//! device, and the UUID of its image is the configured one, the same at every mount.
//!
//! The image is a 64 KiB ext2 filesystem (`mke2fs`, label `coldtier-fsid`) made in the
//! daemon's private run directory and unlinked once the loop device holds it; the loop
//! device clears itself (`LO_FLAGS_AUTOCLEAR`) when the mount lets it go. The kernel never
//! reads it: FUSE serves every request.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A UUID in its canonical text form (8-4-4-4-12 hex digits), lowercase; `None` when
/// `s` is not one.
pub fn parse_uuid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != lens.len()
        || groups
            .iter()
            .zip(lens)
            .any(|(g, n)| g.len() != n || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    // The nil UUID names nothing (blkid reports no UUID for it).
    (lower != "00000000-0000-0000-0000-000000000000").then_some(lower)
}

/// The UUID of the image on block device `dev` (an ext2 superblock's `s_uuid`, as
/// [`attach`] writes it), in canonical text form; None if `dev` holds no ext2 superblock.
pub fn uuid_of(dev: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = File::open(dev).ok()?;
    let mut sb = [0u8; 136];
    f.read_exact_at(&mut sb, 1024).ok()?;
    // s_magic at 56, s_uuid at 104 (struct ext2_super_block).
    if u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
        return None;
    }
    let u = &sb[104..120];
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// A loop device attached to an image carrying `uuid`; the mount made on it keeps it, and
/// it detaches itself when the mount is gone (and when this is dropped unmounted).
pub struct FsidDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    _dev: OwnedFd,
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Makes the image of `uuid` in `dir` (private), attaches it to a free loop device and
/// unlinks it. Errors name what failed.
pub fn attach(dir: &Path, uuid: &str) -> io::Result<FsidDevice> {
    let image = dir.join(format!("fsid-{}-{uuid}.img", std::process::id()));
    let made = make_image(&image, uuid);
    let file = made.and_then(|()| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
    });
    let _ = std::fs::remove_file(&image);
    let file = file?;
    attach_file(&file)
}

/// Where mke2fs is: on PATH, else where e2fsprogs installs it (a mount made at boot or by
/// mount(8) may run with a PATH without the sbin directories).
fn mke2fs() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("mke2fs"))
            .find(|c| c.is_file())
    });
    on_path
        .or_else(|| {
            ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
                .iter()
                .map(PathBuf::from)
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("mke2fs"))
}

fn make_image(image: &Path, uuid: &str) -> io::Result<()> {
    // A file left by a crash of an earlier daemon with the same pid: this directory is ours.
    let _ = std::fs::remove_file(image);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(image)?;
        f.set_len(64 << 10)?;
    }
    let out = std::process::Command::new(mke2fs())
        .args(["-t", "ext2", "-q", "-F", "-N", "16", "-m", "0"])
        .args(["-L", "coldtier-fsid", "-U", uuid])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run mke2fs (e2fsprogs): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mke2fs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn attach_file(file: &File) -> io::Result<FsidDevice> {
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/loop-control: {e}")))?;
    // Another process may take the free device between the two calls: ask again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mut name = [0u8; 64];
        let label = b"coldtier-fsid";
        name[..label.len()].copy_from_slice(label);
        let cfg = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: name,
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: cfg is a complete struct loop_config that outlives the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            return Err(io::Error::new(
                e.kind(),
                format!("LOOP_CONFIGURE of {}: {e}", path.display()),
            ));
        }
        return Ok(FsidDevice {
            path,
            _dev: dev.into(),
        });
    }
    Err(io::Error::other("no free loop device (16 tries)"))
}

#[cfg(test)]
mod tests {
    use super::parse_uuid;

    /// The ioctl's argument must be the kernel's `struct loop_config` byte for byte.
    #[test]
    fn the_loop_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<super::LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<super::LoopConfig>(), 304);
    }

    /// The image carries the UUID where libblkid (and `uuid_of`) read it; a file with no
    /// ext2 superblock has none.
    #[test]
    fn the_image_carries_its_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("i.img");
        let uuid = "6f1c2e3a-0b4d-4c5e-8f90-a1b2c3d4e5f6";
        super::make_image(&img, uuid).unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 10);
        assert_eq!(super::uuid_of(&img).as_deref(), Some(uuid));
        let out = std::process::Command::new("blkid")
            .args(["-p", "-s", "UUID", "-o", "value"])
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), uuid);
        // Made again over a leftover file: replaced.
        super::make_image(&img, "1e2d3c4b-5a69-4788-9aab-bccddeeff001").unwrap();
        assert_eq!(
            super::uuid_of(&img).as_deref(),
            Some("1e2d3c4b-5a69-4788-9aab-bccddeeff001")
        );
        let plain = dir.path().join("plain");
        std::fs::write(&plain, vec![0u8; 4096]).unwrap();
        assert_eq!(super::uuid_of(&plain), None);
    }

    #[test]
    fn uuids_are_checked_and_lowercased() {
        assert_eq!(
            parse_uuid("6F1C2E3A-0B4d-4c5e-8f90-a1b2c3d4e5f6").as_deref(),
            Some("6f1c2e3a-0b4d-4c5e-8f90-a1b2c3d4e5f6")
        );
        for bad in [
            "",
            "6f1c2e3a0b4d4c5e8f90a1b2c3d4e5f6",
            "6f1c2e3a-0b4d-4c5e-8f90-a1b2c3d4e5f",
            "6f1c2e3a-0b4d-4c5e-8f90-a1b2c3d4e5f6-",
            "6f1c2e3g-0b4d-4c5e-8f90-a1b2c3d4e5f6",
            "00000000-0000-0000-0000-000000000000",
            "6f1c2e3a-0b4d-4c5e-8f90-a1b2c3d4e5f6 ",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad:?}");
        }
    }
}
