//! Starting a backup: the session marker, the GC plans, the index, the
//! parent snapshot, and the packs an interrupted run left behind.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nfrepo_format::{Chunker, IndexDelta, IndexedPack, PackId, PackKind};
use nfrepo_store::{ObjectInfo, ObjectKind};

use super::writer::BackupWriter;
use super::{BackupOptions, BackupSession, Claims, upload};
use crate::{Error, Repository, Result};

impl Repository {
    /// Starts a backup: loads snapshots and the index, adopts packs left by
    /// interrupted runs, and starts the uploader.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown profile; storage and decoding errors.
    pub async fn begin_backup(&self, mut options: BackupOptions) -> Result<BackupSession> {
        // Nothing new is sealed under a key epoch a rotation retires.
        self.require_current_ring()?;
        // A repository made before a built-in profile existed uses the one
        // it replaces; the snapshot records the profile actually used, which
        // is also what its parent is looked up by.
        let (name, profile) = self
            .config()
            .resolve_profile(&options.profile)
            .ok_or_else(|| Error::Invalid(format!("unknown chunking profile {:?}", options.profile)))?;
        if name != options.profile {
            tracing::debug!(asked = %options.profile, used = name, "chunking profile falls back");
            options.profile = name.to_owned();
        }
        let chunker = Chunker::new(profile, self.keys().chunker_seed).map_err(Error::Format)?;
        let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        // Whether to list every pack (see `listing`), decided before anything
        // of this session is written.
        let listing = super::listing::plan(self, time_ns).await;
        // Marker, then GC plans, then snapshots and index: see crate::session.
        let live = crate::session::LiveSession::start(self, &options.source, time_ns).await?;
        // Recorded before any upload, so that a killed run's packs are adopted.
        let record = listing.begin(live.name().to_owned()).await;
        // A put-only session reads no GC plan, snapshot or pack trailer (it
        // has no key to): it has no parent and adopts no orphaned pack, and
        // deduplicates only against the deltas of its index key, checking
        // as every backup does that the packs it reuses still exist.
        let put_only = self.is_put_only();
        let (plan_ids, planned) = if put_only {
            Default::default()
        } else {
            crate::gc::planned_packs(self).await?
        };
        // Snapshots before the index: see crate::index. The parent comes
        // from the host's snapshot cache, without listing, when its last
        // listing is recent and no full start is due (crate::snapshot_cache).
        let candidate = if put_only || !options.use_parent {
            None
        } else {
            let fresh = |listed_ns| listing.snapshots_fresh(listed_ns);
            match crate::snapshot_cache::parent(self, &options.source, &options.profile, fresh).await? {
                crate::snapshot_cache::ParentLookup::Found(parent) => parent.map(|p| *p),
                crate::snapshot_cache::ParentLookup::List => self
                    .readable_snapshots()
                    .await?
                    .into_iter()
                    .rfind(|e| e.snapshot.source == options.source && e.snapshot.profile == options.profile),
            }
        };
        // The index as the host's cache holds it when no GC can have
        // deleted a pack it names since the host last listed the deltas
        // (`listing`); otherwise listed and brought up to date.
        let mut sorted_plans = plan_ids.clone();
        sorted_plans.sort_unstable();
        let cached_index = if put_only || !listing.index_fresh(&sorted_plans) {
            None
        } else {
            // A parent written since the host last listed the deltas (by
            // another host) may have blobs the cache lacks: then list.
            self.load_index_unlisted()
                .await
                .filter(|index| candidate.as_ref().is_none_or(|p| index.contains(&p.snapshot.root)))
        };
        let mut index = match cached_index {
            Some(index) => index,
            None => {
                let listed_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
                let index = self.load_index().await?;
                // Only a listing the cache took in lets the next run skip one.
                if !put_only && index.is_cached() {
                    listing.index_listed(listed_ns, &sorted_plans).await;
                }
                index
            }
        };
        // Listed after the index was loaded: an indexed pack the listing
        // lacks is gone (issue 17), never a pack not yet uploaded. Skipped
        // when it can find nothing (`listing`): the packs this session
        // deduplicates against are checked before its commit point anyway.
        let (absent, adopted) = if listing.full {
            let listed = self.list_pack_objects().await?;
            let absent = absent_packs(&index, &listed);
            let adopted = if put_only {
                Vec::new()
            } else {
                self.adopt_orphan_packs(&index, &planned, listed).await?
            };
            (absent, adopted)
        } else {
            (Vec::new(), Vec::new())
        };
        let adopted_packs = adopted.len();
        if !adopted.is_empty() {
            let delta = IndexDelta {
                packs: adopted,
                supersedes: Vec::new(),
            };
            let id = self.write_index_delta(&delta).await?;
            if !index.absorb(id, &delta) {
                for pack in &delta.packs {
                    index.add_pack(pack);
                }
                index.finish();
            }
        }
        if listing.full {
            listing.listed(absent.is_empty()).await;
        }
        let index = Arc::new(index);
        if !absent.is_empty() {
            tracing::warn!(
                packs = absent.len(),
                first = %absent[0],
                "the index names packs that are not in the repository; their blobs are stored again \
                 and the parent snapshot is not reused (run `nfrepo check`)"
            );
            index.exclude_packs(absent.iter().copied());
        }
        // A parent's unchanged files are reused without looking at their
        // chunks, which may be in the packs that are gone.
        let parent = if options.use_parent && absent.is_empty() {
            candidate
        } else {
            None
        };
        live.confirm(plan_ids, parent.as_ref().map(|p| p.snapshot.root)).await?;
        let claims = Arc::new(Claims {
            index: index.clone(),
            planned,
            claimed: Mutex::new(HashSet::new()),
            own: Mutex::new(HashSet::new()),
            deduplicated: Mutex::new(std::collections::HashMap::new()),
        });
        let (queue, uploader) = upload::start(
            self.clone(),
            claims.clone(),
            options.upload_concurrency,
            options.index_flush_blobs,
        );
        tracing::info!(
            source = %options.source,
            parent = ?parent.as_ref().map(|p| p.id),
            adopted_packs,
            "backup started"
        );
        let known = if put_only {
            super::known::open(self, &options.source).await
        } else {
            None
        };
        let streams = super::writer::Streams {
            chunker,
            sha256: options.sha256,
        };
        let writer = BackupWriter::new(self, claims, queue, streams, parent, index, known);
        Ok(BackupSession {
            writer,
            options,
            uploader: Mutex::new(Some(uploader)),
            live,
            record,
            started: Instant::now(),
            time_ns,
        })
    }

    /// Every pack object in storage, with its family.
    async fn list_pack_objects(&self) -> Result<Vec<(PackId, ObjectInfo, PackKind)>> {
        let mut listed = Vec::new();
        for (kind, pack_kind) in [(ObjectKind::Data, PackKind::Data), (ObjectKind::Tree, PackKind::Tree)] {
            for info in self.store().list(kind).await.map_err(Error::store)? {
                if let Ok(id) = info.key.name().parse::<PackId>() {
                    listed.push((id, info, pack_kind));
                }
            }
        }
        Ok(listed)
    }

    /// Packs present in storage (`listed`) but in no index: left by interrupted backups.
    async fn adopt_orphan_packs(
        &self,
        index: &crate::index::Index,
        planned: &HashSet<PackId>,
        listed: Vec<(PackId, ObjectInfo, PackKind)>,
    ) -> Result<Vec<IndexedPack>> {
        use futures::stream::{self, StreamExt};
        let indexed: HashSet<PackId> = index.packs().map(|(id, _, _)| id).collect();
        let orphans: Vec<(ObjectInfo, PackKind)> = listed
            .into_iter()
            .filter(|(id, _, _)| !indexed.contains(id) && !planned.contains(id))
            .map(|(_, info, kind)| (info, kind))
            .collect();
        let results: Vec<Option<IndexedPack>> = stream::iter(orphans)
            .map(|(info, kind)| async move {
                match self.read_pack_trailer(&info).await {
                    Ok(pack) if pack.kind == kind => Some(pack),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(pack = %info.key, error = %e, "not reusing a pack whose trailer does not read");
                        None
                    }
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        Ok(results.into_iter().flatten().collect())
    }

    /// Reads a pack's trailer with two range requests.
    ///
    /// # Errors
    /// Storage errors, or [`Error::Corrupted`] if the trailer does not open.
    pub async fn read_pack_trailer(&self, info: &ObjectInfo) -> Result<IndexedPack> {
        let id: nfrepo_format::PackId = info
            .key
            .name()
            .parse()
            .map_err(|e| Error::decode(info.key.to_string(), e))?;
        let size = info.size;
        let corrupt = |e| Error::decode(format!("pack {id}"), e);
        if size < (nfrepo_format::PACK_HEADER_LEN + 4) as u64 {
            return Err(corrupt(nfrepo_format::Error::Malformed {
                what: "pack",
                detail: format!("{size} bytes is too short"),
            }));
        }
        let tail = self
            .store()
            .get_range(&info.key, size - 4..size)
            .await
            .map_err(Error::store)?;
        let tlen = nfrepo_format::trailer_len(&tail).map_err(corrupt)? as u64;
        let start = size
            .checked_sub(4 + tlen)
            .filter(|s| *s >= nfrepo_format::PACK_HEADER_LEN as u64);
        let start = start.ok_or_else(|| {
            corrupt(nfrepo_format::Error::Malformed {
                what: "pack",
                detail: "trailer longer than the pack".into(),
            })
        })?;
        let head = self
            .store()
            .get_range(&info.key, 0..nfrepo_format::PACK_HEADER_LEN as u64)
            .await
            .map_err(Error::store)?;
        let kind = nfrepo_format::decode_pack_header(&head).map_err(corrupt)?;
        let sealed = self
            .store()
            .get_range(&info.key, start..size - 4)
            .await
            .map_err(Error::store)?;
        let blobs = nfrepo_format::decode_trailer(&sealed, size, self.sealer(), &self.id()).map_err(corrupt)?;
        nfrepo_format::check_entry_kinds(kind, &blobs).map_err(corrupt)?;
        Ok(IndexedPack {
            id,
            kind,
            size,
            blobs,
            sealing: None,
        })
    }
}

/// Indexed packs that `listed` (made after the index was loaded) lacks,
/// sorted: gone from storage although the index names them.
fn absent_packs(index: &crate::index::Index, listed: &[(PackId, ObjectInfo, PackKind)]) -> Vec<PackId> {
    let present: HashSet<PackId> = listed.iter().map(|(id, _, _)| *id).collect();
    let mut absent: Vec<PackId> = index
        .packs()
        .map(|(id, _, _)| id)
        .filter(|id| !present.contains(id))
        .collect();
    absent.sort_unstable();
    absent.dedup();
    absent
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;
    use crate::{CommitDetails, InitOptions};
    use nfrepo_format::{ChunkerProfile, ConfigBody, KdfParams, Metadata, Node, Snapshot, SnapshotId, Tree};

    async fn repo(profiles: &[&str]) -> Repository {
        let store: Arc<dyn nfrepo_store::Store> = Arc::new(nfrepo_store::MemoryStore::new());
        let options = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        let repo = Repository::init(store, b"pw", options).await.unwrap();
        let config = ConfigBody {
            profiles: profiles
                .iter()
                .map(|&n| (n.to_owned(), ChunkerProfile::named(n).unwrap()))
                .collect(),
            ..repo.config().clone()
        };
        repo.with_config(config)
    }

    /// Backs up `data` as one stream of source `db` with profile `profile`.
    async fn backup(repo: &Repository, profile: &str, data: Vec<u8>) -> Result<(SnapshotId, Snapshot)> {
        let session = repo.begin_backup(BackupOptions::new("db", "mysql", profile)).await?;
        let writer = session.writer();
        let root = tokio::task::spawn_blocking(move || {
            let kind = writer.store_stream(&data[..], true)?.file_kind();
            let node = Node {
                name: b"dump.sql".to_vec(),
                kind,
                meta: Metadata::default(),
            };
            writer.store_tree(&Tree { nodes: vec![node] })
        })
        .await
        .unwrap()?;
        session.commit(root, CommitDetails::default()).await
    }

    #[tokio::test]
    async fn rows_falls_back_to_dump_in_a_repository_made_before_it_and_keeps_the_parent() {
        let data = nfrepo_testing::pseudo_random(3 << 20, 7);
        let mut changed = data.clone();
        changed[1 << 20] ^= 0xff;

        let old = repo(&["files", "dump"]).await;
        // Its sources backed up with `dump` before the upgrade.
        let (before, _) = backup(&old, "dump", data.clone()).await.unwrap();
        let (after, snapshot) = backup(&old, "rows", changed.clone()).await.unwrap();
        assert_eq!(snapshot.profile, "dump", "the profile actually used is recorded");
        assert_eq!(
            snapshot.parent,
            Some(before),
            "the parent is found under the profile used"
        );
        // One changed byte in 3 MiB: only the chunk holding it is new, or two
        // if it moved a cut point (each at most 64 KiB), besides the new
        // content list and tree node (a few KiB). Cut points depend on the
        // repository's random chunker key, so a bound of one chunk alone
        // failed whenever that chunk came out near 64 KiB.
        assert!(
            snapshot.summary.bytes_added_raw <= (2 * 64 + 8) << 10,
            "{:?}",
            snapshot.summary
        );
        let (_, next) = backup(&old, "rows", changed).await.unwrap();
        assert_eq!((next.profile.as_str(), next.parent), ("dump", Some(after)));

        let new = repo(&["files", "dump", "rows"]).await;
        let (_, snapshot) = backup(&new, "rows", data).await.unwrap();
        assert_eq!(snapshot.profile, "rows");
        let unknown = backup(&new, "tiny", Vec::new()).await.unwrap_err();
        assert!(
            matches!(&unknown, Error::Invalid(m) if m.contains("unknown chunking profile \"tiny\"")),
            "{unknown}"
        );
    }
}
