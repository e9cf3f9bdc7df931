//! Starting a backup: the session marker, the GC plans, the index, the
//! parent snapshot, and the packs an interrupted run left behind.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nfrepo_format::{Chunker, IndexDelta, IndexedPack, PackKind};
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
    pub async fn begin_backup(&self, options: BackupOptions) -> Result<BackupSession> {
        // Nothing new is sealed under a key epoch a rotation retires.
        self.require_current_ring()?;
        let profile = self
            .config()
            .profile(&options.profile)
            .ok_or_else(|| Error::Invalid(format!("unknown chunking profile {:?}", options.profile)))?;
        let chunker = Chunker::new(profile, self.keys().chunker_seed).map_err(Error::Format)?;
        let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        // Marker, then GC plans, then snapshots and index: see crate::session.
        let live = crate::session::LiveSession::start(self, &options.source, time_ns).await?;
        let (plan_ids, planned) = crate::gc::planned_packs(self).await?;
        // Snapshots before the index: see crate::index.
        let snapshots = self.readable_snapshots().await?;
        let mut index = self.load_index().await?;
        let adopted = self.adopt_orphan_packs(&index, &planned).await?;
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
        let index = Arc::new(index);
        let parent = if options.use_parent {
            snapshots
                .into_iter()
                .rfind(|e| e.snapshot.source == options.source && e.snapshot.profile == options.profile)
        } else {
            None
        };
        live.confirm(plan_ids, parent.as_ref().map(|p| p.snapshot.root)).await?;
        let claims = Arc::new(Claims {
            index: index.clone(),
            planned,
            claimed: Mutex::new(HashSet::new()),
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
        let writer = BackupWriter::new(self, claims, queue, chunker, parent, index);
        Ok(BackupSession {
            writer,
            options,
            uploader: Mutex::new(Some(uploader)),
            live,
            started: Instant::now(),
            time_ns,
        })
    }

    /// Packs present in storage but in no index: left by interrupted backups.
    async fn adopt_orphan_packs(
        &self,
        index: &crate::index::Index,
        planned: &HashSet<nfrepo_format::PackId>,
    ) -> Result<Vec<IndexedPack>> {
        use futures::stream::{self, StreamExt};
        let indexed: HashSet<nfrepo_format::PackId> = index.packs().map(|(id, _, _)| id).collect();
        let mut orphans: Vec<(ObjectInfo, PackKind)> = Vec::new();
        for (kind, pack_kind) in [(ObjectKind::Data, PackKind::Data), (ObjectKind::Tree, PackKind::Tree)] {
            for info in self.store().list(kind).await.map_err(Error::store)? {
                match info.key.name().parse::<nfrepo_format::PackId>() {
                    Ok(id) if !indexed.contains(&id) && !planned.contains(&id) => orphans.push((info, pack_kind)),
                    _ => {}
                }
            }
        }
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
        Ok(IndexedPack { id, kind, size, blobs })
    }
}
