//! Schema migrations, embedded: `schema/vN.sql` takes `PRAGMA user_version` from N-1 to N.

use super::error::{CatalogError, Context};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// The migrations, in order; migration i takes user_version from i to i + 1.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("schema/v1.sql"),
    include_str!("schema/v2.sql"),
    include_str!("schema/v3.sql"),
    include_str!("schema/v4.sql"),
    include_str!("schema/v5.sql"),
    include_str!("schema/v6.sql"),
    include_str!("schema/v7.sql"),
];

/// The schema version this build writes (the number of migrations).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA application_id` of a coldtier catalog: "cold" in ASCII.
pub const APPLICATION_ID: i64 = 0x636f_6c64;

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Refuses a catalog written by a newer coldtier, or a file that is not a catalog.
pub(crate) fn check_version(conn: &Connection, path: &Path) -> Result<i64, CatalogError> {
    let found = user_version(conn).ctx("reading the schema version")?;
    if found > SCHEMA_VERSION {
        return Err(CatalogError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .ctx("reading the application id")?;
    let not_ours = |reason: String| CatalogError::NotACatalog {
        path: path.to_owned(),
        reason,
    };
    if found < 0 {
        return Err(not_ours(format!("schema version {found}")));
    }
    if found == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .ctx("looking for existing tables")?;
        if tables > 0 {
            return Err(not_ours(format!(
                "an SQLite database with {tables} schema objects and no coldtier schema version"
            )));
        }
    } else if app_id != APPLICATION_ID {
        return Err(not_ours(format!("application_id is {app_id:#x}")));
    }
    Ok(found)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one immediate transaction; idempotent, and
/// safe against another process migrating at the same time.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), CatalogError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("starting the schema migration")?;
    let found = check_version(&tx, path)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql).ctx("applying a schema migration")?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .ctx("recording the schema version")?;
    }
    tx.commit().ctx("committing the schema migration")
}
