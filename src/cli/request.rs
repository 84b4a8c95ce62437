//! Reaching the daemon: resolve the paths a command names, connect to the daemon of their
//! mount, send one request (with a progress bar on a terminal), read its answer as the op's
//! reply type (`control::replies`) and map its errors to exit codes (bad input: 2).

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde::de::DeserializeOwned;

use super::BadInput;
use crate::control::client::{mount_of, Client, ClientError};
use crate::control::protocol::{ErrorCode, Op};

/// An absolute path with its directories resolved (the last component is kept as is, so
/// a symlink is reported as a symlink, not followed).
pub(super) fn resolve(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| BadInput(format!("{}: {e}", p.display())))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    let parent = std::fs::canonicalize(parent)
        .map_err(|e| BadInput(format!("{}: {e}", parent.display())))?;
    let full = parent.join(name);
    std::fs::symlink_metadata(&full).map_err(|e| BadInput(format!("{}: {e}", p.display())))?;
    Ok(full)
}

/// A connection to the daemon of the mount that holds `p`.
pub(super) fn client_for(p: &Path) -> anyhow::Result<Client> {
    let mount = mount_of(p).map_err(|e| match e {
        ClientError::NotInMount(_) | ClientError::Resolve(..) => BadInput(e.to_string()).into(),
        e => anyhow!(e),
    })?;
    Ok(Client::connect(&mount)?)
}

/// Sends `op`, drawing its progress; its answer as `T`, the op's reply type.
pub(super) fn call_typed<T: DeserializeOwned>(client: &mut Client, op: Op) -> anyhow::Result<T> {
    call_typed_bar(client, op, super::progress::Bar::new())
}

/// [`call_typed`] drawing its progress on `bar` (`Bar::hidden()` for none).
pub(super) fn call_typed_bar<T: DeserializeOwned>(
    client: &mut Client,
    op: Op,
    mut bar: super::progress::Bar,
) -> anyhow::Result<T> {
    let r = client.call_typed(op, |p| bar.update(p));
    bar.finish();
    r.map_err(|e| match e {
        ClientError::Daemon(b)
            if b.code == ErrorCode::BadRequest || b.code == ErrorCode::NotInMount =>
        {
            BadInput(b.message).into()
        }
        e => anyhow!(e),
    })
}

/// Resolves `paths` (each inside a coldtier mount), sends the request `op` makes of them to
/// the daemon of the first, and draws its progress on `bar`.
pub(super) fn call_on_paths<T: DeserializeOwned>(
    paths: &[PathBuf],
    op: impl FnOnce(Vec<PathBuf>) -> Op,
    bar: super::progress::Bar,
) -> anyhow::Result<T> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| resolve(p)).collect::<Result<_, _>>()?;
    let mut c = client_for(&paths[0])?;
    call_typed_bar(&mut c, op(paths), bar)
}
