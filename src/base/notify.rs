//! sd_notify without libsystemd: one datagram to `$NOTIFY_SOCKET` (a path, or an abstract
//! socket when it starts with '@') per state change (`READY=1`, `STATUS=...`,
//! `STOPPING=1`). Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the service manager.
/// Errors are logged, never fatal: the mount works the same without systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(socket = ?path, "sd_notify {state:?}: {e}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let sock = UnixDatagram::unbound()?;
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(b'/') => {
            sock.send_to(state.as_bytes(), std::path::Path::new(path))?;
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract name ('@...')",
            ))
        }
    }
    Ok(())
}

/// `STATUS=` text: one line (systemd shows it in `systemctl status`).
pub fn status(text: &str) {
    notify(&format!("STATUS={}", text.replace('\n', " ")));
}
