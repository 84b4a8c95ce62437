-- coldtier catalog, schema version 1.
-- Applied once, in one transaction, by Catalog::open (PRAGMA user_version goes 0 -> 1).

PRAGMA application_id = 1668246628;  -- "cold": marks the file as a coldtier catalog

-- Each config the daemon ran with, numbered 1, 2, 3 ...; append-only.
CREATE TABLE config_versions (
    version INTEGER PRIMARY KEY CHECK (version >= 1),
    hash    TEXT    NOT NULL CHECK (length(hash) = 64),
    text    TEXT    NOT NULL,
    time_ns INTEGER NOT NULL
) STRICT;

CREATE TRIGGER config_versions_no_update BEFORE UPDATE ON config_versions
BEGIN
    SELECT RAISE(ABORT, 'config versions are append-only');
END;

CREATE TRIGGER config_versions_no_delete BEFORE DELETE ON config_versions
BEGIN
    SELECT RAISE(ABORT, 'config versions are append-only');
END;

-- Tracked files, one row per identity. file_id survives renames; path is current.
CREATE TABLE files (
    file_id       TEXT    PRIMARY KEY NOT NULL,
    path          TEXT    NOT NULL UNIQUE,
    state         TEXT    NOT NULL CHECK (state IN
                      ('resident', 'premigrated', 'stub', 'recalling', 'restore_pending')),
    size          INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns      INTEGER NOT NULL,
    ctime_ns      INTEGER NOT NULL,
    ino           INTEGER NOT NULL,          -- u64 stored bit-for-bit as i64
    object_key    TEXT,
    version_id    TEXT,
    checksum_algo TEXT,
    checksum      TEXT,
    md5           TEXT,
    storage_class TEXT,
    pinned        INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    updated_at    INTEGER NOT NULL
) STRICT;

-- files_by_state (ordered by path) and count-by-state / bytes-by-state without touching
-- the table. Lookups by path use the UNIQUE index on path.
CREATE INDEX files_state_path ON files (state, path);
CREATE INDEX files_state_size ON files (state, size);

-- The audit trail: append-only, hash-chained (docs/catalog.md).
CREATE TABLE events (
    id             INTEGER PRIMARY KEY CHECK (id >= 1),
    time_ns        INTEGER NOT NULL,
    file_id        TEXT,
    path           TEXT,
    kind           TEXT    NOT NULL,
    detail         TEXT    NOT NULL,          -- canonical JSON
    config_version INTEGER NOT NULL CHECK (config_version >= 0),
    prev_hash      TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash           TEXT    NOT NULL CHECK (length(hash) = 64)
) STRICT;

CREATE INDEX events_file ON events (file_id, id) WHERE file_id IS NOT NULL;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- A new event must extend the chain: next id, linked to the current head. (The hash
-- itself is computed and checked in Rust; see Catalog::verify_chain.)
CREATE TRIGGER events_extend_chain BEFORE INSERT ON events
WHEN NEW.id IS NOT (SELECT coalesce(max(id), 0) + 1 FROM events)
  OR NEW.prev_hash IS NOT coalesce(
         (SELECT hash FROM events ORDER BY id DESC LIMIT 1),
         '0000000000000000000000000000000000000000000000000000000000000000')
BEGIN
    SELECT RAISE(ABORT, 'an event must extend the chain (next id, prev_hash = hash of the last event)');
END;

-- One row per policy run.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL,
    mode           TEXT    NOT NULL,
    config_version INTEGER NOT NULL,
    started_ns     INTEGER NOT NULL,
    finished_ns    INTEGER,
    files_scanned  INTEGER NOT NULL DEFAULT 0,
    files_copied   INTEGER NOT NULL DEFAULT 0,
    bytes_copied   INTEGER NOT NULL DEFAULT 0,
    files_stubbed  INTEGER NOT NULL DEFAULT 0,
    files_failed   INTEGER NOT NULL DEFAULT 0,
    errors         TEXT    NOT NULL DEFAULT '[]',   -- JSON array of strings
    duration_ms    INTEGER
) STRICT;
