//! The control socket: a root-only Unix socket per mount over which the CLI asks the daemon
//! to act (status, pin, recall, migrate ...). `protocol` is the wire format (requests,
//! progress, the reply envelope), `reports` the reporting requests' parameters, `replies`
//! the typed final answers; `server` runs in the daemon, `client` in the CLI.

pub mod client;
pub mod protocol;
pub mod queries;
pub mod replies;
pub mod server;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Directory of the control sockets (0700, root).
pub const SOCKET_DIR: &str = "/run/coldtier";

/// The control socket of the mount at `mountpoint`.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let hex: String = mountpoint
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Unix socket paths are limited to 107 bytes: long mount points get a hashed name.
    let name = if hex.len() > 80 {
        let h = mountpoint
            .as_os_str()
            .as_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |acc, &b| {
                (acc ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        format!("h{h:016x}.sock")
    } else {
        format!("{hex}.sock")
    };
    Path::new(SOCKET_DIR).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_fit_sun_path() {
        let short = socket_path(Path::new("/srv/share"));
        assert!(short.to_str().unwrap().ends_with(".sock"));
        let long = socket_path(&Path::new("/").join("x".repeat(300)));
        assert!(long.as_os_str().len() < 108, "{}", long.display());
        assert_ne!(socket_path(Path::new("/a")), socket_path(Path::new("/b")));
    }
}
