-- coldtier catalog, schema version 7: the running totals of the files table are kept by
-- the catalog's own writes instead of triggers.
-- Applied once, in one transaction, by Catalog::open (PRAGMA user_version goes 6 -> 7).
--
-- The triggers of version 2 ran two statements on file_totals for every changed row and
-- made each such UPDATE open a statement journal: measured on a bulk recall's records
-- (2,000 files, RECALL_STARTED then RECALLED in batches of 64), about 9 % of its time.
-- Each write now adds up what its rows change, per (state, storage class, pinned), and
-- applies the sums once, in the same transaction (src/catalog/totals.rs): a batch of 64
-- recalls changes two or three totals rows, not 128. A process that changes file rows
-- with plain SQL must now change file_totals too (coldtier never does).
DROP TRIGGER files_totals_insert;
DROP TRIGGER files_totals_delete;
DROP TRIGGER files_totals_update;

-- Made again from the rows: whatever wrote the catalog before, the totals start right.
DELETE FROM file_totals;
INSERT INTO file_totals (state, storage_class, pinned, files, bytes)
    SELECT state, coalesce(storage_class, ''), pinned, count(*), coalesce(sum(size), 0)
    FROM files GROUP BY 1, 2, 3;
