-- coldtier catalog, schema version 6: pack objects (small files gathered into one object).
-- Applied once, in one transaction, by Catalog::open (PRAGMA user_version goes 5 -> 6).

-- One row per pack object a policy run wrote and verified (docs/architecture.md "Packs"),
-- written before any member's record names it. Its members are the files whose
-- object_key is this key (their own offsets and checksums are in their stub records and
-- in the pack's index object, `index_key`). gc deletes a pack once no file names it, like
-- any object; replicate copies it whole, checked against `checksum`.
CREATE TABLE packs (
    object_key    TEXT    PRIMARY KEY NOT NULL,
    pack_id       TEXT    NOT NULL,
    version_id    TEXT,
    size          INTEGER NOT NULL CHECK (size >= 0),
    members       INTEGER NOT NULL CHECK (members >= 0),
    checksum_algo TEXT    NOT NULL,
    checksum      TEXT    NOT NULL,
    storage_class TEXT    NOT NULL,
    index_key     TEXT    NOT NULL,
    -- The pack gc's repack wrote this one for (its live members are this one's).
    repack_of     TEXT,
    created_ns    INTEGER NOT NULL
) STRICT;
CREATE INDEX packs_repack_of ON packs (repack_of);

-- The files naming an object (a pack's live members; gc's "still named" check).
CREATE INDEX files_object_key ON files (object_key);
