//! gc's repack: a pack whose live members (the files that still name it) hold less than
//! `pack.repack_below` of its bytes is rewritten with only those members
//! (docs/architecture.md "Packs").
//!
//! The order keeps every file readable at each point, whatever is killed when:
//! 1. the old pack's index is read and checked (untrusted input), the live members' bytes
//!    fetched (one GET of the span that covers them) and each checked against its own
//!    checksum;
//! 2. the new pack and its index are uploaded, proven and recorded (PACKED, `repack_of`)
//!    like any pack: a crash before the record leaves an intent that gc later deletes;
//! 3. each member, one by one, under its gate, if its record still names the old pack at
//!    that offset: its record (stub or copy) is rewritten to name the new pack, then its
//!    row, with a REPACKED event. Until then it names the old pack, which still exists;
//! 4. once no member names the old pack, a SUPERSEDED event names it: gc deletes it (and
//!    its index) after the retention, as any superseded content.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use serde_json::{json, Value};

use super::context::{StepError, Tiering};
use super::pack::{fetch_index, IndexMember};
use crate::catalog::{EventKind, FileRow, PackRow};
use crate::fs::backing;
use crate::store::{Checksum, GetRequest};
use crate::tier::marks;
use crate::tier::stub::PackRef;

/// Whether `p` is worth rewriting with only its live members: some are live, some are not,
/// and what the live ones take in it (their headers and padding included: a pack of files
/// of a few bytes is mostly headers) is less than `below` of its bytes. Counted by bytes
/// alone, a pack of small files would be under the line with every member live, and be
/// rewritten by every gc into a pack no smaller.
fn worth_repacking(p: &crate::catalog::PackLive, below: f64) -> bool {
    let taken = super::pack::live_footprint(p.members, p.blocks);
    p.members > 0 && p.members < p.pack.members && (taken as f64) < below * p.pack.size as f64
}

impl Tiering {
    /// Repacks every pack whose live members hold less than `pack.repack_below` of its
    /// bytes. One line of the report each (done, or why not).
    pub(super) async fn repack_packs(&self, dry_run: bool) -> Result<Vec<Value>, StepError> {
        let below = self.settings().pack.repack_below;
        let mut out = Vec::new();
        if below <= 0.0 {
            return Ok(out);
        }
        let catalog = self.catalog.clone();
        let packs = tokio::task::spawn_blocking(move || catalog.packs())
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("catalog task: {e}")))??;
        for p in packs {
            if !worth_repacking(&p, below) {
                continue;
            }
            let (pack, live_bytes) = (p.pack, p.bytes);
            let rows = self.catalog.files_naming(&pack.object_key)?;
            let mut line = json!({
                "object_key": self.full_key(&pack.object_key),
                "live_members": rows.len(),
                "live_bytes": live_bytes,
                "pack_bytes": pack.size,
            });
            if dry_run {
                line["repack"] = json!("would repack");
                out.push(line);
                continue;
            }
            match self.repack_one(&pack, rows).await {
                Ok((new_key, switched, left)) => {
                    line["repacked_into"] = json!(self.full_key(&new_key));
                    line["switched"] = json!(switched);
                    line["left"] = json!(left);
                }
                Err(e) => line["error"] = json!(e.message),
            }
            out.push(line);
        }
        Ok(out)
    }

    /// Repacks `pack`'s live members `rows`: the new pack's key, the members switched to
    /// it, and those left on the old one (changed meanwhile: a later gc tries again).
    async fn repack_one(
        &self,
        pack: &PackRow,
        rows: Vec<FileRow>,
    ) -> Result<(String, usize, usize), StepError> {
        let store = self.store()?;
        let eio = |m: String| StepError::new(libc::EIO, m);
        let ix = fetch_index(store.as_ref(), &pack.object_key, &pack.pack_id, pack.size)
            .await
            .map_err(|e| eio(format!("repack: {e}")))?;
        let by_id: HashMap<&str, &IndexMember> =
            ix.members.iter().map(|m| (m.file_id.as_str(), m)).collect();
        // The live members, as the index has them (a row the index does not know is left
        // alone: verify reports it).
        let mut live: Vec<(FileRow, IndexMember)> = Vec::new();
        for r in rows {
            match by_id.get(r.file_id.as_str()) {
                Some(m)
                    if Some(m.checksum.split_once(':').map_or("", |c| c.1))
                        == r.checksum.as_deref() =>
                {
                    live.push((r, (*m).clone()))
                }
                _ => {
                    tracing::warn!(path = %r.path, key = %pack.object_key, "repack: the pack's index does not list this member as the catalog has it; left on the old pack")
                }
            }
        }
        if live.is_empty() {
            return Err(eio("no live member is in the pack's index".into()));
        }
        // An earlier repack of this pack cut short (a kill): its pack holds these members
        // already; they are switched to it, nothing is uploaded again.
        if let Some(done) = self.earlier_repack(pack, &live).await? {
            return self.switch_all(pack, &live, &done.0, &done.1).await;
        }
        let start = live.iter().map(|(_, m)| m.offset).min().expect("members");
        let end = live
            .iter()
            .map(|(_, m)| m.offset + m.size)
            .max()
            .expect("members");
        // Within a part, the old pack's span and the new pack are in memory (gc works on a
        // full source, as packing does); larger ones in unnamed files on the source.
        let span = self.scratch_file(end - start)?;
        store
            .get(GetRequest {
                key: &pack.object_key,
                version_id: pack.version_id.as_deref(),
                dest: Some(&span),
                expected_size: pack.size,
                checksum: crate::store::ChecksumAlgo::Crc32c,
                extents: None,
                range: (end - start != pack.size).then_some((start, end - start)),
                dest_base: start,
                progress: None,
            })
            .await
            .map_err(|e| {
                eio(format!(
                    "repack: GET {}: {e}",
                    self.full_key(&pack.object_key)
                ))
            })?;
        let algo = self.settings().uploads.checksum;
        let mut tar = self.pack_writer(end - start)?;
        let mut entries = Vec::with_capacity(live.len());
        for (row, m) in &live {
            let want = Checksum::parse(&m.checksum).map_err(eio)?;
            let (offset, sum, whole) = tar
                .add(m, &span, m.offset - start, want.algo)
                .map_err(|e| eio(format!("repack: writing the new pack: {e}")))?;
            if !whole || sum != want {
                return Err(eio(format!(
                    "repack: {}'s bytes in {} read back as {sum}, the index says {}: nothing repacked",
                    row.path, pack.object_key, m.checksum
                )));
            }
            let mut e = m.clone();
            e.offset = offset;
            entries.push(e);
        }
        let (size, body) = tar
            .finish()
            .map_err(|e| eio(format!("repack: writing the new pack: {e}")))?;
        let refs: Vec<&IndexMember> = entries.iter().collect();
        let proven = self
            .upload_pack(&body, size, &refs, &live[0].0, algo, Some(&pack.object_key))
            .await?;
        self.failpoint("repack-after-record");
        let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
        let r = self.switch_all(pack, &live, &proven, &offsets).await;
        self.catalog.end_upload(&proven.key)?;
        r
    }

    /// The pack an earlier, unfinished repack of `pack` wrote, if it holds every member
    /// of `live` (same file, same checksum): it and each member's offset in it.
    async fn earlier_repack(
        &self,
        pack: &PackRow,
        live: &[(FileRow, IndexMember)],
    ) -> Result<Option<(super::pack::Proven, Vec<u64>)>, StepError> {
        let Some(row) = self.catalog.repack_of(&pack.object_key)? else {
            return Ok(None);
        };
        let store = self.store()?;
        let Ok(ix) = fetch_index(store.as_ref(), &row.object_key, &row.pack_id, row.size).await
        else {
            return Ok(None);
        };
        let by_id: HashMap<&str, &IndexMember> =
            ix.members.iter().map(|m| (m.file_id.as_str(), m)).collect();
        let mut offsets = Vec::with_capacity(live.len());
        for (_, m) in live {
            match by_id.get(m.file_id.as_str()) {
                Some(n) if n.checksum == m.checksum && n.size == m.size => offsets.push(n.offset),
                _ => return Ok(None),
            }
        }
        let cv = self.catalog.config_version_in_force();
        Ok(super::pack::Proven::of_row(&row, cv).map(|p| (p, offsets)))
    }

    /// Switches each member of `live` to `new` (at `offsets`); a SUPERSEDED for `pack`
    /// once no file names it. The new pack's key, members switched, members left.
    async fn switch_all(
        &self,
        pack: &PackRow,
        live: &[(FileRow, IndexMember)],
        proven: &super::pack::Proven,
        offsets: &[u64],
    ) -> Result<(String, usize, usize), StepError> {
        let mut switched = 0;
        for ((row, old), &offset) in live.iter().zip(offsets) {
            match self.switch_member(row, pack, old, proven, offset) {
                Ok(true) => {
                    switched += 1;
                    self.failpoint("repack-after-switch");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(path = %row.path, "repack: {}", e.message),
            }
        }
        let left = self.catalog.files_naming(&pack.object_key)?.len();
        if left == 0 {
            self.supersede_repacked(pack, &proven.key)?;
        }
        Ok((proven.key.clone(), switched, left))
    }

    /// The SUPERSEDED that ends a repack of `pack` into `into`: gc deletes the old pack
    /// after the retention.
    fn supersede_repacked(
        &self,
        pack: &PackRow,
        into: &str,
    ) -> Result<crate::catalog::Event, StepError> {
        Ok(self.catalog.append_event(
            None,
            None,
            EventKind::Superseded,
            json!({
                "object_key": pack.object_key,
                "version_id": pack.version_id,
                "reason": "repacked",
                "into": into,
            }),
        )?)
    }

    /// Ends the repacks that a crash cut short after their last member's switch, before
    /// the SUPERSEDED of the old pack: a pack no file names, that a newer pack was written
    /// for, and that no event of `named` (the keys gc's events name) says is dead. Without
    /// this such a pack would stay in the bucket for good when none of its members' own
    /// events names it (a member that died after the pack was written, as a repack's pack,
    /// names the pack it then had). The events written, for gc to act on.
    pub(super) fn supersede_cut_repacks(
        &self,
        named: &std::collections::HashSet<String>,
    ) -> Result<Vec<crate::catalog::Event>, StepError> {
        let mut out = Vec::new();
        for p in self.catalog.packs()? {
            if p.members > 0 || named.contains(p.pack.object_key.as_str()) {
                continue;
            }
            if let Some(into) = self.catalog.repack_of(&p.pack.object_key)? {
                tracing::info!(pack = %p.pack.object_key, into = %into.object_key, "gc: ending a repack cut short: the old pack is superseded");
                out.push(self.supersede_repacked(&p.pack, &into.object_key)?);
            }
        }
        Ok(out)
    }

    /// Switches one member's record from `pack` (at `old.offset`) to the new pack (at
    /// `offset`), if its record on disk still names the old one there. False: it changed
    /// (recalled and written, deleted, renamed away ...): left as it is.
    fn switch_member(
        &self,
        row: &FileRow,
        pack: &PackRow,
        old: &IndexMember,
        new: &super::pack::Proven,
        offset: u64,
    ) -> Result<bool, StepError> {
        let Ok(fd) = backing::open_beneath(
            self.root(),
            Path::new(&row.path),
            libc::O_RDONLY | libc::O_NOFOLLOW,
        ) else {
            return Ok(false);
        };
        let st = backing::stat_fd(fd.as_fd())?;
        let node = self.node_id(&st);
        let _held = self.gate.lock(node);
        let copy = marks::record(fd.as_fd(), marks::COPY)?;
        let (mark, rec) = match (marks::record(fd.as_fd(), marks::STUB)?, &copy) {
            (Some(r), _) => (marks::STUB, r),
            (None, Some(r)) => (marks::COPY, r.clone()),
            _ => return Ok(false),
        };
        let names_it = rec.object_key == pack.object_key
            && rec.file_id == row.file_id
            && rec.pack.as_ref().is_some_and(|p| p.offset == old.offset);
        if !names_it {
            return Ok(false);
        }
        let mut rec2 = rec.clone();
        rec2.object_key = new.key.clone();
        rec2.version_id = new.version_id.clone();
        rec2.storage_class = new.class.clone();
        rec2.pack = Some(PackRef {
            id: new.pack_id.clone(),
            offset,
            pack_size: new.size,
        });
        if mark == marks::STUB {
            // A stub step cut short after its truncate leaves the copy record beside the
            // stub record (removing it is the step's last act). Switched with the stub
            // record, it would go on naming the old pack, which gc then keeps for as long
            // as the file stays a stub: it goes first (a crash before the stub record is
            // switched leaves a plain stub of the old pack, which the next gc repacks).
            if copy.is_some() {
                marks::remove(fd.as_fd(), marks::COPY)?;
            }
            marks::set_stub(fd.as_fd(), &rec2, || {})?;
        } else {
            marks::set_record(fd.as_fd(), mark, &rec2)?;
        }
        self.reset_mark(node);
        let mut r = row.clone();
        r.object_key = Some(rec2.object_key.clone());
        r.version_id = rec2.version_id.clone();
        r.storage_class = Some(rec2.storage_class.clone());
        r.ctime_ns = super::context::ns_of(backing::stat_fd(fd.as_fd())?.ctime);
        let detail = json!({
            "object_key": rec2.object_key,
            "version_id": rec2.version_id,
            "offset": offset,
            "from": pack.object_key,
            "from_version_id": pack.version_id,
            "from_offset": old.offset,
        });
        self.catalog
            .transition_batch_with(&[(r, EventKind::Repacked, detail)], false)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::worth_repacking;
    use crate::catalog::{PackLive, PackRow};
    use crate::tier::pack::member_footprint;

    /// A pack of `sizes` (as the tar writer lays them out: three header blocks each, the
    /// data in whole blocks, two end blocks) of which the members `live` are live.
    fn pack(sizes: &[u64], live: &[usize]) -> PackLive {
        let size = sizes
            .iter()
            .map(|s| 1536 + s.div_ceil(512) * 512)
            .sum::<u64>()
            + 1024;
        PackLive {
            pack: PackRow {
                object_key: "packs/x.tar".into(),
                pack_id: "x".into(),
                version_id: None,
                size,
                members: sizes.len() as u64,
                checksum_algo: "crc32c".into(),
                checksum: String::new(),
                storage_class: "STANDARD".into(),
                index_key: "packs/x.index.json".into(),
                repack_of: None,
            },
            members: live.len() as u64,
            bytes: live.iter().map(|&i| sizes[i]).sum(),
            blocks: live.iter().map(|&i| sizes[i].div_ceil(512)).sum(),
        }
    }

    #[test]
    fn a_pack_is_repacked_for_its_dead_bytes_not_for_its_headers() {
        // Files of a few bytes: their data is a tiny fraction of the pack, all live.
        let tiny = [1, 7, 100, 300];
        assert!(!worth_repacking(&pack(&tiny, &[0, 1, 2, 3]), 0.5));
        assert!(!worth_repacking(&pack(&tiny, &[0, 1, 2, 3]), 0.99));
        // Three of four dead: a new pack would be a third of this one.
        assert!(worth_repacking(&pack(&tiny, &[2]), 0.5));
        // Half dead, at a line of a half: not below it.
        assert!(!worth_repacking(&pack(&[4096, 4096], &[0]), 0.5));
        assert!(worth_repacking(&pack(&[4096, 4096], &[0]), 0.6));
        // Nothing live: gc deletes it (its members' events name it), no repack.
        assert!(!worth_repacking(&pack(&tiny, &[]), 0.5));
        // Large members, one of ten dead, line at 0.95.
        let big = [1 << 20; 10];
        assert!(worth_repacking(
            &pack(&big, &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
            0.95
        ));
        assert!(!worth_repacking(
            &pack(&big, &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
            0.9
        ));
        // The footprint never exceeds what `member_footprint` plans for a member.
        let p = pack(&tiny, &[0, 1, 2, 3]);
        let planned: u64 = tiny.iter().map(|&s| member_footprint(s)).sum::<u64>() + 1024;
        assert!(super::super::pack::live_footprint(p.members, p.blocks) <= planned);
    }
}
