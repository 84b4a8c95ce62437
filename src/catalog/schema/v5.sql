-- coldtier catalog, schema version 5: the objects copied to each [[replica]] target.
-- Applied once, in one transaction, by Catalog::open (PRAGMA user_version goes 4 -> 5).

-- One row per object (the primary's key and version) verified on a replica target, kept
-- in the same transaction as its REPLICATED event. `coldtier replicate` copies what has no
-- row here (so it resumes after a kill and does nothing twice); a recall whose primary
-- fails reads the targets that have a row. The replica's own version id, when its bucket
-- is versioned, is `replica_version`.
CREATE TABLE replicas (
    target          TEXT    NOT NULL,
    object_key      TEXT    NOT NULL,
    version_id      TEXT    NOT NULL DEFAULT '',
    replica_version TEXT,
    size            INTEGER NOT NULL CHECK (size >= 0),
    replicated_ns   INTEGER NOT NULL,
    PRIMARY KEY (target, object_key, version_id)
) STRICT;
CREATE INDEX replicas_object ON replicas (object_key, version_id);
