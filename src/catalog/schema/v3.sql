-- coldtier catalog, schema version 3: upload intents.
-- Applied once, in one transaction, by Catalog::open (PRAGMA user_version goes 2 -> 3).

-- An object coldtier is about to write, recorded (durably) before the upload starts, so
-- that no object in the bucket is ever unknown to the catalog: a crash mid-copy leaves
-- the row, and the next start resolves it (the file's records name the object: its copy
-- is recorded; they do not: a FAILED event names the object for gc). The event that
-- records an upload's outcome (VERIFIED or FAILED naming the object) deletes the row in
-- the same transaction (Catalog's event writer does it).
CREATE TABLE uploads (
    object_key TEXT    PRIMARY KEY NOT NULL,
    file_id    TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    started_ns INTEGER NOT NULL
) STRICT;
