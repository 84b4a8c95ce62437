//! Reads /proc/self/mountinfo: which mounts exist, where, of which type.

use std::path::{Path, PathBuf};

/// The type of a coldtier mount as the kernel lists it (`fuse.coldtier`).
pub const FS_TYPE: &str = "fuse.coldtier";
/// The type of a coldtier mount made on a block device (`mount.fsid`: `fuseblk.coldtier`).
pub const FS_TYPE_BLK: &str = "fuseblk.coldtier";

/// Whether a mount the kernel lists with type `fstype` is a coldtier mount (either kind).
pub fn is_coldtier(fstype: &str) -> bool {
    fstype == FS_TYPE || fstype == FS_TYPE_BLK
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    /// The device of the mount's filesystem, `major:minor` (a fuseblk mount's is its block
    /// device's).
    pub dev: String,
}

impl MountEntry {
    /// The name of the mount's FUSE connection in the fusectl filesystem
    /// (`/sys/fs/fuse/connections/<name>`): the kernel's encoding of its device number.
    pub fn fuse_connection(&self) -> Option<String> {
        let (major, minor) = self.dev.split_once(':')?;
        let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
        Some(((major << 20) | minor).to_string())
    }
}

/// Undoes the kernel's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(out)
        .to_string_lossy()
        .into_owned()
}

/// Parses mountinfo text.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let dev = left.split(' ').nth(2)?;
            let mp = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mp)),
                fstype: fstype.into(),
                source: unescape(source),
                dev: dev.into(),
            })
        })
        .collect()
}

/// All mounts of this mount namespace, in mount order.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount at exactly `path`, if any.
pub fn at<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// The mount that contains `path` (the last-mounted one with the longest matching prefix).
pub fn containing<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point) {
            let longer = best
                .is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
            if longer {
                best = Some(m);
            }
        }
    }
    best
}

/// Where the catalog of a mount lives unless `catalog.path` says otherwise:
/// `/var/lib/coldtier/<name>.db` with the [`mount_name`] of the mount point.
pub fn default_catalog_path(mountpoint: &Path) -> PathBuf {
    PathBuf::from(format!("/var/lib/coldtier/{}.db", mount_name(mountpoint)))
}

/// A mount point as one file name, escaped like `systemd-escape --path` (so it is also
/// the instance name of a `coldtier@.service`): `/srv/share` -> `srv-share`, `/` -> `-`,
/// `-` and bytes other than `[A-Za-z0-9:_.]` (and a leading `.`) -> `\xNN`.
pub fn mount_name(mountpoint: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    use std::path::Component;
    let parts: Vec<&[u8]> = mountpoint
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            Component::ParentDir => Some(b"..".as_slice()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    if parts.is_empty() {
        return "-".into();
    }
    let joined = parts.join(&b'/');
    let mut out = String::with_capacity(joined.len());
    for (i, &b) in joined.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:40 / /srv/share rw,nosuid,nodev,relatime shared:5 - nfs4 host:/export rw
41 40 0:41 / /srv/share rw,nosuid,nodev,relatime shared:6 - fuse.coldtier coldtier:/srv/share rw,user_id=0
42 22 0:42 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_and_finds() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(
            at(&m, Path::new("/srv/share")).unwrap().fstype,
            "fuse.coldtier"
        );
        assert_eq!(
            containing(&m, Path::new("/srv/share/a/b")).unwrap().fstype,
            "fuse.coldtier"
        );
        assert_eq!(
            containing(&m, Path::new("/srv/other")).unwrap().fstype,
            "ext4"
        );
        assert_eq!(
            at(&m, Path::new("/mnt/with space")).unwrap().fstype,
            "tmpfs"
        );
        assert!(at(&m, Path::new("/nope")).is_none());
    }

    #[test]
    fn a_mounts_fuse_connection_is_its_device_in_the_kernels_encoding() {
        let m = parse(
            "\
41 40 0:41 / /srv/share rw - fuse.coldtier coldtier:/srv/share rw
43 22 7:0 / /srv/blk rw - fuseblk.coldtier /dev/loop0 rw
44 22 259:65539 / /srv/big rw - fuseblk.coldtier /dev/loop9 rw
",
        );
        let conn = |p: &str| at(&m, Path::new(p)).unwrap().fuse_connection();
        assert_eq!(conn("/srv/share").as_deref(), Some("41"));
        // loop0: MKDEV(7, 0), as /sys/fs/fuse/connections names it.
        assert_eq!(conn("/srv/blk").as_deref(), Some("7340032"));
        assert_eq!(
            conn("/srv/big").as_deref(),
            Some(((259u64 << 20) | 65539).to_string().as_str())
        );
    }
}
