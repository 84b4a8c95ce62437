-- coldtier catalog, schema version 2: what the reporting commands need to answer fast on
-- millions of files (`coldtier find`, `coldtier stats`, `coldtier events`).
-- Applied once, in one transaction, by Catalog::open (PRAGMA user_version goes 1 -> 2).

-- `find --larger-than` and `find --older-than` without a full scan.
CREATE INDEX files_size ON files (size);
CREATE INDEX files_mtime ON files (mtime_ns);
-- `find --state S --older-than D` (the usual question: "stubs not touched for a year"),
-- and its `--count`, from the index alone.
CREATE INDEX files_state_mtime ON files (state, mtime_ns, size);

-- `events --since`, `--type` and `--path` without a full scan of the log.
CREATE INDEX events_time ON events (time_ns);
CREATE INDEX events_kind ON events (kind, id);
CREATE INDEX events_path ON events (path, id) WHERE path IS NOT NULL;

-- `coldtier jobs` shows the bytes a run freed beside the files it stubbed.
ALTER TABLE jobs ADD COLUMN bytes_stubbed INTEGER NOT NULL DEFAULT 0;

-- Running totals of the files table, kept by the triggers below in the same transaction
-- as every change to a file row: `stats` reads a handful of rows instead of a million.
-- storage_class is '' for files without an object.
CREATE TABLE file_totals (
    state         TEXT    NOT NULL,
    storage_class TEXT    NOT NULL,
    pinned        INTEGER NOT NULL,
    files         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    PRIMARY KEY (state, storage_class, pinned)
) STRICT, WITHOUT ROWID;

INSERT INTO file_totals (state, storage_class, pinned, files, bytes)
    SELECT state, coalesce(storage_class, ''), pinned, count(*), coalesce(sum(size), 0)
    FROM files GROUP BY 1, 2, 3;

CREATE TRIGGER files_totals_insert AFTER INSERT ON files
BEGIN
    INSERT INTO file_totals (state, storage_class, pinned, files, bytes)
        VALUES (NEW.state, coalesce(NEW.storage_class, ''), NEW.pinned, 1, NEW.size)
        ON CONFLICT (state, storage_class, pinned)
        DO UPDATE SET files = files + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER files_totals_delete AFTER DELETE ON files
BEGIN
    UPDATE file_totals SET files = files - 1, bytes = bytes - OLD.size
        WHERE state = OLD.state AND storage_class = coalesce(OLD.storage_class, '')
          AND pinned = OLD.pinned;
END;

CREATE TRIGGER files_totals_update AFTER UPDATE OF state, size, storage_class, pinned ON files
BEGIN
    UPDATE file_totals SET files = files - 1, bytes = bytes - OLD.size
        WHERE state = OLD.state AND storage_class = coalesce(OLD.storage_class, '')
          AND pinned = OLD.pinned;
    INSERT INTO file_totals (state, storage_class, pinned, files, bytes)
        VALUES (NEW.state, coalesce(NEW.storage_class, ''), NEW.pinned, 1, NEW.size)
        ON CONFLICT (state, storage_class, pinned)
        DO UPDATE SET files = files + 1, bytes = bytes + excluded.bytes;
END;
