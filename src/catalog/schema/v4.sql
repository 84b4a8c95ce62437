-- coldtier catalog, schema version 4: last opens the daemon saw.
-- Applied once, in one transaction, by Catalog::open (PRAGMA user_version goes 3 -> 4).

-- When a file (by backing inode number) was last opened through the mount, as the daemon
-- saw it (to the hour): the policy's "last use" is the latest of this, atime and mtime, so
-- that it stays right when the backing file system is mounted noatime (atime never moves)
-- or the coldtier mount is (reads through it move no atime). Not an event: nothing changed
-- state. A row outlives a deleted file; a new file given the same inode number then looks
-- used, which only delays its tiering.
CREATE TABLE used (
    ino     INTEGER PRIMARY KEY NOT NULL,
    used_ns INTEGER NOT NULL
) STRICT;
