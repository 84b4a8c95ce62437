//! The CLI side of the control socket: finds the mount that holds a path, connects to its
//! daemon, sends a request and collects the replies.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{ErrorBody, Op, Progress, Reply, Request, PROTOCOL_VERSION};
use crate::base::mountinfo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not inside a coldtier mount")]
    NotInMount(PathBuf),
    #[error("cannot resolve {0}: {1}")]
    Resolve(PathBuf, std::io::Error),
    #[error(
        "cannot reach the coldtier daemon of {mount} at {socket}: {source} (is the mount running?)"
    )]
    Connect {
        mount: PathBuf,
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad reply from the daemon: {0}")]
    Protocol(String),
    #[error("{0}")]
    Daemon(ErrorBody),
}

/// The coldtier mount point that contains `path` (absolute, symlinks resolved).
pub fn mount_of(path: &Path) -> Result<PathBuf, ClientError> {
    let abs =
        std::fs::canonicalize(path).map_err(|e| ClientError::Resolve(path.to_path_buf(), e))?;
    let mounts = mountinfo::read()?;
    match mountinfo::containing(&mounts, &abs) {
        Some(m) if crate::base::mountinfo::is_coldtier(&m.fstype) => Ok(m.mount_point.clone()),
        _ => Err(ClientError::NotInMount(abs)),
    }
}

/// A connection to one daemon.
pub struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    pub mountpoint: PathBuf,
}

impl Client {
    /// Connects to the daemon serving `mountpoint`.
    pub fn connect(mountpoint: &Path) -> Result<Client, ClientError> {
        Self::connect_at(mountpoint, &super::socket_path(mountpoint))
    }

    /// Connects through an explicit socket path (tests).
    pub fn connect_at(mountpoint: &Path, socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            mount: mountpoint.to_path_buf(),
            socket: socket.to_path_buf(),
            source,
        })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client {
            stream,
            reader,
            next_id: 1,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Sends `op`; `on_progress` sees each progress line; returns the final result as
    /// JSON (the envelope: [`Client::call_typed`] reads it as the op's reply type).
    pub fn call(
        &mut self,
        op: Op,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<serde_json::Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&Request {
            v: PROTOCOL_VERSION,
            id,
            op,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.stream.write_all(&line)?;
        loop {
            let mut buf = String::new();
            if self.reader.read_line(&mut buf)? == 0 {
                return Err(ClientError::Protocol(
                    "the daemon closed the connection".into(),
                ));
            }
            let reply: Reply =
                serde_json::from_str(&buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
            match reply {
                Reply::Progress {
                    message,
                    files,
                    bytes,
                    totals,
                    ..
                } => on_progress(&Progress {
                    message,
                    files,
                    bytes,
                    totals,
                }),
                Reply::Done { result, .. } => return Ok(result),
                Reply::Error { error, .. } => return Err(ClientError::Daemon(error)),
            }
        }
    }

    /// Sends `op` and reads its final result as `T`, the op's reply type
    /// (`control::replies`; the `Op` variant names it).
    pub fn call_typed<T: serde::de::DeserializeOwned>(
        &mut self,
        op: Op,
        on_progress: impl FnMut(&Progress),
    ) -> Result<T, ClientError> {
        let v = self.call(op, on_progress)?;
        serde_json::from_value(v).map_err(|e| {
            ClientError::Protocol(format!(
                "the answer is not what this coldtier expects ({e}): use the coldtier binary the daemon runs"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::control::protocol::{ErrorCode, Op};
    use crate::control::server::{Handler, Server};

    struct Echo;
    impl Handler for Echo {
        fn handle(
            &self,
            op: Op,
            progress: &mut dyn FnMut(Progress),
            _ctx: &crate::control::server::Ctx,
        ) -> Result<serde_json::Value, ErrorBody> {
            match op {
                Op::Ping => {
                    progress(Progress::new("pinging", 1, 2));
                    // Within the throttle's 100 ms, but it says what there is to do: sent.
                    progress(Progress {
                        totals: Some(crate::control::protocol::Totals { files: 4, bytes: 8 }),
                        ..Progress::new("4 candidates, 8 bytes", 0, 0)
                    });
                    Ok(serde_json::json!({"pong": true}))
                }
                _ => Err(ErrorBody {
                    code: ErrorCode::Unsupported,
                    message: "not here".into(),
                }),
            }
        }
    }

    #[test]
    fn request_progress_and_errors_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl/s.sock");
        let server = Server::bind(&sock).unwrap();
        // A second daemon cannot take a live socket.
        server.spawn(Arc::new(Echo)).unwrap();
        assert!(Server::bind(&sock).is_err());
        let mut c = Client::connect_at(dir.path(), &sock).unwrap();
        let mut seen = Vec::new();
        let r = c.call(Op::Ping, |p| seen.push(p.clone())).unwrap();
        assert_eq!(r, serde_json::json!({"pong": true}));
        assert_eq!(
            seen.iter()
                .map(|p| (
                    p.message.as_str(),
                    p.files,
                    p.bytes,
                    p.totals.map(|t| t.files)
                ))
                .collect::<Vec<_>>(),
            vec![
                ("pinging", 1, 2, None),
                ("4 candidates, 8 bytes", 0, 0, Some(4))
            ]
        );
        #[derive(Debug, serde::Deserialize)]
        struct Pong {
            pong: bool,
        }
        #[derive(Debug, serde::Deserialize)]
        struct Other {
            #[allow(dead_code)]
            other: u64,
        }
        assert!(c.call_typed::<Pong>(Op::Ping, |_| {}).unwrap().pong);
        let e = c
            .call_typed::<Pong>(Op::Stats { since_ns: None }, |_| {})
            .unwrap_err();
        assert!(matches!(e, ClientError::Daemon(_)), "{e}");
        // An answer of another shape is a clear protocol error, not a panic or a default.
        let e = c.call_typed::<Other>(Op::Ping, |_| {}).unwrap_err();
        assert!(
            matches!(e, ClientError::Protocol(_)) && e.to_string().contains("other"),
            "{e}"
        );
        let e = c.call(Op::Gc { dry_run: true }, |_| {}).unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Daemon(ErrorBody {
                    code: ErrorCode::Unsupported,
                    ..
                })
            ),
            "{e}"
        );
        // Same connection keeps working after an error.
        assert!(c.call(Op::Ping, |_| {}).is_ok());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_missing_one_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap()); // stale file, nobody listening
        let server = Server::bind(&sock).unwrap();
        drop(server);
        assert!(!sock.exists(), "the socket goes with its server");
        let e = Client::connect_at(dir.path(), &sock).err().unwrap();
        assert!(e.to_string().contains("is the mount running"), "{e}");
    }
}
