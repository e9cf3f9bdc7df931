//! Forgetting snapshots by retention policy, and protecting snapshots from it.
//!
//! `forget` only deletes `snapshots/<id>` objects; the data they alone used
//! is reclaimed later by GC ([`crate::gc`]). Deleting a snapshot object is the
//! whole operation, so a crash part-way leaves some snapshots forgotten and the
//! rest intact, never a damaged repository.
//!
//! Protection is a sealed marker `protect/<snapshot id>` (see
//! `format-spec/protect.md`); every snapshot with a marker is kept, whatever
//! the policy. A marker that does not open is treated as protecting its
//! snapshot (and logged): forgetting too little is recoverable, too much is not.
//!
//! **`protect` racing `forget`** (issue 17) is linearisable: `protect`
//! never reports a snapshot protected unless it stays, even if `forget` is
//! killed at any moment. The protocol and its argument are in
//! `format-spec/protect.md`: `protect` writes its marker and then checks
//! that the snapshot still exists (otherwise it removes the marker and fails
//! with [`Error::ForgottenWhileProtecting`]); `forget` reads a snapshot's
//! bytes, checks for a marker, copies the bytes to a *tombstone*
//! (`tombstones/<id>`), deletes the snapshot, checks for a marker again
//! (putting the same bytes back, the same id, if one appeared), and only
//! then deletes the tombstone. A tombstone left by a killed `forget` is
//! settled by the next `forget` or `gc` (`Repository::settle_forgets`):
//! the snapshot is put back if it is protected now, and the forget is
//! finished otherwise. `forget` holds the maintenance lease
//! ([`crate::lease`]) so that settling never meets a `forget` in progress.
//! A marker whose snapshot is gone is reported by `check`
//! ([`Repository::orphaned_protect_markers`]) and removed by `unprotect`.
//!
//! The newest snapshot of each group with a good marker (`mark-good`, see
//! [`crate::GoodMarkers`]) is kept too, so `rollback --to last-good` always
//! has a target; a forgotten snapshot's good marker is deleted after it.

mod binlog;
mod wal;

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_format::{ProtectMarker, Snapshot, SnapshotId};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode};

use crate::lease::{LeaseRequest, MaintenanceLease, ReplacedLease};
use crate::objects;
use crate::read::SnapshotEntry;
use crate::retention::{KeepReason, RetentionPolicy};
use crate::{Error, Repository, Result};

pub use binlog::{
    BINLOG_FILE_FACT, BINLOG_GAP_FACT, BINLOG_KIND, BINLOG_STREAM_SUFFIX, DUMP_BINLOG_FILE_FACT, binlog_order,
};
pub use wal::{BASEBACKUP_KIND, BASEBACKUP_START_WAL_FACT, WAL_FILE_FACT, WAL_KIND, WAL_STREAM_SUFFIX};

/// Options for [`Repository::forget`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ForgetOptions {
    /// The policy for sources without one in `per_source`; `None` leaves them alone.
    pub default_policy: Option<RetentionPolicy>,
    /// Policies by source name (from `nfrepo.toml`'s `retention = "NAME"`).
    pub per_source: BTreeMap<String, RetentionPolicy>,
    /// Only consider snapshots of this source.
    pub source: Option<String>,
    /// Group by source *and* host (default), or by source alone.
    pub group_by_source_only: bool,
    /// Decide, but delete nothing.
    pub dry_run: bool,
    /// The term of the maintenance lease a forget that deletes holds.
    pub lease_ttl: std::time::Duration,
    /// Replace another holder's valid maintenance lease (only when that
    /// holder is known to be dead).
    pub break_lease: bool,
}

impl Default for ForgetOptions {
    fn default() -> Self {
        Self {
            default_policy: None,
            per_source: BTreeMap::new(),
            source: None,
            group_by_source_only: false,
            dry_run: false,
            lease_ttl: crate::lease::DEFAULT_LEASE_TERM,
            break_lease: false,
        }
    }
}

impl ForgetOptions {
    /// Options applying `policy` to every source.
    #[must_use]
    pub fn with_policy(policy: RetentionPolicy) -> Self {
        Self {
            default_policy: Some(policy),
            ..Self::default()
        }
    }
}

/// What [`Repository::forget`] decided for one snapshot.
#[derive(Clone, Debug)]
pub struct ForgetDecision {
    /// The snapshot.
    pub entry: SnapshotEntry,
    /// Why it is kept; empty when it is forgotten.
    pub reasons: Vec<KeepReason>,
}

impl ForgetDecision {
    /// Whether the snapshot stays.
    #[must_use]
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The outcome of [`Repository::forget`], grouped, oldest first within a group.
#[derive(Clone, Debug, Default)]
pub struct ForgetReport {
    /// `(source, host)` groups (host empty when grouping by source only) and their decisions.
    pub groups: Vec<((String, String), Vec<ForgetDecision>)>,
    /// Whether snapshots were actually deleted.
    pub deleted: bool,
    /// What this run did with the tombstones an earlier, killed `forget` left.
    pub settled: SettledForgets,
    /// The maintenance lease this run replaced (its holder had exited or it had expired).
    pub replaced_lease: Option<ReplacedLease>,
}

/// What `forget` and `gc` did with the tombstones of killed
/// `forget` runs, each sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettledForgets {
    /// Snapshots put back: they were protected while being forgotten.
    pub restored: Vec<SnapshotId>,
    /// Snapshots whose forget was finished: gone for good.
    pub finished: Vec<SnapshotId>,
    /// Snapshots whose forget never reached the delete: kept, tombstone removed.
    pub abandoned: Vec<SnapshotId>,
}

impl SettledForgets {
    /// Whether there was nothing to settle.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.restored.is_empty() && self.finished.is_empty() && self.abandoned.is_empty()
    }
}

impl ForgetReport {
    /// The snapshots forgotten (or, in a dry run, that would be).
    pub fn removed(&self) -> impl Iterator<Item = &ForgetDecision> {
        self.groups.iter().flat_map(|(_, d)| d.iter()).filter(|d| !d.keep())
    }
}

impl Repository {
    /// Applies retention policies and deletes the snapshots no rule keeps.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a policy with no rule (it would forget every
    /// snapshot); storage and decoding errors.
    pub async fn forget(&self, options: &ForgetOptions) -> Result<ForgetReport> {
        self.require_keys("forget")?;
        for policy in options.default_policy.iter().chain(options.per_source.values()) {
            if policy.is_empty() {
                return Err(Error::Invalid(
                    "refusing a retention policy without any keep rule: it would forget every snapshot".into(),
                ));
            }
        }
        if options.dry_run {
            return self.forget_decided(options).await;
        }
        let mut request = LeaseRequest::new("forget", options.lease_ttl);
        request.break_lease = options.break_lease;
        let lease = MaintenanceLease::acquire_for(self, &request, std::time::SystemTime::now()).await?;
        let replaced = lease.replaced().cloned();
        let result = async {
            let settled = self.settle_forgets().await?;
            let mut report = self.forget_decided(options).await?;
            report.settled = settled;
            Ok(report)
        }
        .await;
        lease.release().await;
        result.map(|mut report| {
            report.replaced_lease = replaced;
            report
        })
    }

    /// Decides, and unless this is a dry run deletes; the caller holds the
    /// maintenance lease when it deletes.
    async fn forget_decided(&self, options: &ForgetOptions) -> Result<ForgetReport> {
        let protected = self.protected_snapshots().await?;
        let good = self.good_markers().await?;
        let mut groups: BTreeMap<(String, String), Vec<SnapshotEntry>> = BTreeMap::new();
        // `--source pg` and `--source pg.wal` both decide a base source and
        // its WAL together (a dump source and its `.binlog` likewise).
        let only = options.source.as_deref().map(|s| {
            s.strip_suffix(WAL_STREAM_SUFFIX)
                .or_else(|| s.strip_suffix(BINLOG_STREAM_SUFFIX))
                .unwrap_or(s)
        });
        let (snapshots, binlog_streams) = binlog::split(self.snapshots().await?);
        let binlog_streams: BTreeMap<String, Vec<SnapshotEntry>> = binlog_streams
            .into_iter()
            .filter(|(base, _)| only.is_none_or(|s| s == base))
            .collect();
        let (snapshots, wal_streams) = wal::split(snapshots);
        let wal_streams: BTreeMap<String, Vec<SnapshotEntry>> = wal_streams
            .into_iter()
            .filter(|(base, _)| only.is_none_or(|s| s == base))
            .collect();
        for entry in snapshots {
            if only.is_some_and(|s| s != entry.snapshot.source) {
                continue;
            }
            let host = if options.group_by_source_only {
                String::new()
            } else {
                entry.snapshot.hostname.clone()
            };
            groups
                .entry((entry.snapshot.source.clone(), host))
                .or_default()
                .push(entry);
        }
        let mut report = ForgetReport::default();
        for (group, entries) in groups {
            let policy = options.per_source.get(&group.0).or(options.default_policy.as_ref());
            let decided = match policy {
                Some(policy) => {
                    let input: Vec<(i64, &[(String, String)])> = entries
                        .iter()
                        .map(|e| (e.snapshot.time_ns, e.snapshot.tags.as_slice()))
                        .collect();
                    policy.apply(&input)
                }
                None => vec![vec![KeepReason::NoPolicy]; entries.len()],
            };
            let last_good = good.newest(&entries).map(|e| e.id);
            let decisions = entries
                .into_iter()
                .zip(decided)
                .map(|(entry, mut reasons)| {
                    if Some(entry.id) == last_good || good.damaged.contains(&entry.id) {
                        reasons.insert(0, KeepReason::LastGood);
                    }
                    if protected.contains(&entry.id) {
                        reasons.insert(0, KeepReason::Protected);
                    }
                    ForgetDecision { entry, reasons }
                })
                .collect();
            report.groups.push((group, decisions));
        }
        decide_wal(&mut report, wal_streams, &protected, options.group_by_source_only);
        decide_binlog(&mut report, binlog_streams, &protected, options.group_by_source_only);
        if !options.dry_run {
            let doomed: Vec<SnapshotId> = report.removed().map(|d| d.entry.id).collect();
            let good = &good;
            let kept: Vec<(SnapshotId, KeepReason)> = stream::iter(doomed)
                .map(|id| async move { self.forget_one(id, good).await.map(|kept| kept.map(|why| (id, why))) })
                .buffer_unordered(8)
                .try_filter_map(|kept| async move { Ok(kept) })
                .try_collect()
                .await?;
            for (_, decisions) in &mut report.groups {
                for decision in decisions.iter_mut() {
                    if let Some((_, why)) = kept.iter().find(|(id, _)| *id == decision.entry.id) {
                        decision.reasons.push(why.clone());
                    }
                }
            }
            report.deleted = true;
        }
        Ok(report)
    }

    /// Deletes one snapshot `forget` decided on, unless a `protect` or a
    /// `mark-good` came in meanwhile; returns why it was kept, if it was.
    /// The steps and why they are linearisable with [`Self::protect`], even
    /// when this process is killed between any two of them, are in
    /// `format-spec/protect.md`.
    async fn forget_one(&self, id: SnapshotId, good: &crate::GoodMarkers) -> Result<Option<KeepReason>> {
        let key = objects::key::<Snapshot>(&id)?;
        let marker = protect_key(&id)?;
        let tombstone = tombstone_key(&id)?;
        // F0: the exact bytes, to put back if a protect wins the race.
        let bytes = match self.store().get(&key).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::store(e)),
        };
        // F1: a `protect` that ran after the markers were listed still wins.
        if self.exists(&marker).await? {
            tracing::info!(snapshot = %id, "protected meanwhile; kept");
            return Ok(Some(KeepReason::Protected));
        }
        // So does a `mark-good` (it may have made this the newest good one).
        if !good.good.contains_key(&id) && self.has_good_marker(&id).await? {
            tracing::info!(snapshot = %id, "marked good meanwhile; kept");
            return Ok(Some(KeepReason::LastGood));
        }
        // T: the bytes survive this process until F3 has looked again.
        // A tombstone already there holds the same bytes (names are hashes).
        self.put_marker(&tombstone, bytes.to_vec()).await?;
        // F2.
        self.store().delete(&key).await.map_err(Error::store)?;
        // F3: a `protect` whose marker and check both fell between F1 and F2
        // has told its caller the snapshot is protected: put it back, same
        // bytes, same id.
        if self.exists(&marker).await? {
            self.put_back(&key, bytes).await?;
            self.delete_tombstone(&tombstone).await?;
            tracing::info!(snapshot = %id, "protected while being forgotten; put back");
            return Ok(Some(KeepReason::Protected));
        }
        tracing::info!(snapshot = %id, "snapshot forgotten");
        if self.remove_good_marker(&id).await? {
            tracing::info!(snapshot = %id, "its good marker removed");
        }
        // F4: the forget is complete.
        self.delete_tombstone(&tombstone).await?;
        Ok(None)
    }

    /// Puts a snapshot's own bytes back under its name; already there is fine.
    async fn put_back(&self, key: &ObjectKey, bytes: Bytes) -> Result<()> {
        match self.store().put(key, bytes, PutMode::CreateNew).await {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(Error::store(e)),
            _ => Ok(()),
        }
    }

    async fn delete_tombstone(&self, key: &ObjectKey) -> Result<()> {
        match self.store().delete(key).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::store(e)),
            _ => Ok(()),
        }
    }

    /// Finishes or undoes every `forget` killed between its tombstone (T)
    /// and its end (F4), as `format-spec/protect.md` sets out: a snapshot
    /// still there keeps it (the forget never deleted it, or put it back);
    /// a snapshot gone but protected now comes back from its tombstone; any
    /// other is gone for good (its good marker is removed, as F4 would).
    ///
    /// The caller holds the maintenance lease, so no `forget` is between
    /// T and F4 now (`forget` and `gc` call this first).
    ///
    /// # Errors
    /// [`Error::Corrupted`] for a tombstone to put back whose bytes are not
    /// its snapshot (it is left in place); storage errors.
    pub(crate) async fn settle_forgets(&self) -> Result<SettledForgets> {
        let mut settled = SettledForgets::default();
        for info in self.store().list(ObjectKind::Tombstone).await.map_err(Error::store)? {
            let Ok(id) = info.key.name().parse::<SnapshotId>() else {
                tracing::warn!(tombstone = %info.key, "ignoring a tombstone whose name is not a snapshot id");
                continue;
            };
            let key = objects::key::<Snapshot>(&id)?;
            if self.exists(&key).await? {
                settled.abandoned.push(id);
            } else if self.exists(&protect_key(&id)?).await? {
                let bytes = match self.store().get(&info.key).await {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::store(e)),
                };
                // Never put back bytes that are not this snapshot.
                Snapshot::decode(&id, &bytes, self.sealer(), &self.id()).map_err(|source| Error::Corrupted {
                    object: info.key.to_string(),
                    source,
                })?;
                self.put_back(&key, bytes).await?;
                tracing::warn!(snapshot = %id, "a killed forget deleted a protected snapshot; put back");
                settled.restored.push(id);
            } else {
                if self.remove_good_marker(&id).await? {
                    tracing::info!(snapshot = %id, "its good marker removed");
                }
                tracing::info!(snapshot = %id, "finished the forget of a killed run");
                settled.finished.push(id);
            }
            self.delete_tombstone(&info.key).await?;
        }
        settled.restored.sort();
        settled.finished.sort();
        settled.abandoned.sort();
        Ok(settled)
    }

    /// Snapshots with a tombstone: being forgotten now, or left so by a
    /// killed `forget` until the next `forget` or `gc` settles them. Sorted.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn unsettled_forgets(&self) -> Result<Vec<SnapshotId>> {
        let mut ids: Vec<SnapshotId> = self
            .store()
            .list(ObjectKind::Tombstone)
            .await
            .map_err(Error::store)?
            .into_iter()
            .filter_map(|info| info.key.name().parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool> {
        match self.store().stat(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::store(e)),
        }
    }

    /// Writes a marker object once; a marker already there (the same
    /// snapshot marked before) is kept as it is.
    pub(crate) async fn put_marker(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<()> {
        match self.store().put(key, Bytes::from(bytes), PutMode::CreateNew).await {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            other => other.map_err(Error::store),
        }
    }

    /// Protects a snapshot from `forget`. Protecting twice is harmless.
    ///
    /// Returns only once the snapshot is protected: after writing the
    /// marker it checks that the snapshot still exists, so a `forget`
    /// racing it either sees the marker or makes this call fail
    /// (`format-spec/protect.md`).
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] and friends for a bad spec;
    /// [`Error::ForgottenWhileProtecting`] if a `forget` deleted the snapshot
    /// meanwhile (the marker is then removed again); storage errors.
    pub async fn protect(&self, spec: &str, note: &str) -> Result<SnapshotId> {
        self.require_keys("protect")?;
        // P1.
        let entry = self.find_snapshot(spec).await?;
        let marker = ProtectMarker {
            snapshot: entry.id,
            created_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            by: crate::host::user_at_host(),
            note: note.to_owned(),
        };
        let bytes = marker.encode(self.sealer(), &self.id()).map_err(Error::Format)?;
        let key = protect_key(&entry.id)?;
        // P2.
        self.put_marker(&key, bytes).await?;
        // P3.
        if self.exists(&objects::key::<Snapshot>(&entry.id)?).await? {
            return Ok(entry.id);
        }
        // A marker without its snapshot protects nothing: take it back.
        if let Err(e) = self.store().delete(&key).await {
            tracing::warn!(marker = %key, error = %e, "could not remove the protect marker of a forgotten snapshot");
        }
        Err(Error::ForgottenWhileProtecting {
            snapshot: entry.id.to_hex(),
        })
    }

    /// Removes a snapshot's protection. A marker whose snapshot no longer
    /// exists (orphaned, see [`Self::orphaned_protect_markers`]) is named by
    /// the snapshot's id or a unique prefix of it, and removed too.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] and friends for a spec that names neither
    /// a snapshot nor an orphaned marker; storage errors.
    pub async fn unprotect(&self, spec: &str) -> Result<Unprotected> {
        self.require_keys("unprotect")?;
        let (snapshot, orphan) = match self.find_snapshot(spec).await {
            Ok(entry) => (entry.id, false),
            Err(Error::SnapshotNotFound(missing)) => {
                let wanted = spec.to_ascii_lowercase();
                let matching: Vec<SnapshotId> = self
                    .orphaned_protect_markers()
                    .await?
                    .into_iter()
                    .filter(|id| !wanted.is_empty() && id.to_hex().starts_with(&wanted))
                    .collect();
                match matching.as_slice() {
                    [id] => (*id, true),
                    [] => return Err(Error::SnapshotNotFound(missing)),
                    _ => return Err(Error::AmbiguousSnapshot(spec.to_owned())),
                }
            }
            Err(e) => return Err(e),
        };
        let key = protect_key(&snapshot)?;
        let was_protected = self.exists(&key).await?;
        self.store().delete(&key).await.map_err(Error::store)?;
        Ok(Unprotected {
            snapshot,
            was_protected,
            orphan,
        })
    }

    /// Protect markers whose snapshot does not exist, sorted: left by a
    /// `protect` that failed part-way (`format-spec/protect.md`). Markers are
    /// listed before snapshots, and a marker is only written for a snapshot
    /// that exists, so a marker listed whose snapshot the later listing
    /// lacks is really orphaned.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn orphaned_protect_markers(&self) -> Result<Vec<SnapshotId>> {
        let markers = objects::list::<ProtectMarker>(self).await?;
        let snapshots: HashSet<SnapshotId> = objects::list::<Snapshot>(self)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut orphans: Vec<SnapshotId> = markers
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !snapshots.contains(id))
            .collect();
        orphans.sort();
        Ok(orphans)
    }

    /// The snapshots with a protection marker. A marker that does not open
    /// still protects (with a warning): keeping a snapshot is the safe side.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn protected_snapshots(&self) -> Result<HashSet<SnapshotId>> {
        self.require_keys("protect")?;
        let loaded = objects::load_all::<ProtectMarker>(self).await?;
        for damaged in &loaded.damaged {
            tracing::warn!(marker = %damaged.key, error = %damaged.error, "keeping a snapshot whose protect marker does not open");
        }
        Ok(loaded
            .good
            .iter()
            .map(|m| m.id)
            .chain(loaded.damaged.iter().map(|m| m.id))
            .collect())
    }
}

/// What [`Repository::unprotect`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unprotected {
    /// The snapshot whose marker was removed.
    pub snapshot: SnapshotId,
    /// Whether there was a marker to remove.
    pub was_protected: bool,
    /// Whether the snapshot no longer exists (an orphaned marker was removed).
    pub orphan: bool,
}

/// Decides the WAL streams once their base sources are decided (see `forget/wal.rs`).
fn decide_wal(
    report: &mut ForgetReport,
    wal_streams: BTreeMap<String, Vec<SnapshotEntry>>,
    protected: &HashSet<SnapshotId>,
    by_source_only: bool,
) {
    for (base, entries) in wal_streams {
        let kept_bases = report
            .groups
            .iter()
            .filter(|((source, _), _)| *source == base)
            .flat_map(|(_, decisions)| decisions.iter().filter(|d| d.keep()).map(|d| &d.entry));
        let oldest = wal::oldest_needed(kept_bases);
        let decisions = entries
            .into_iter()
            .map(|entry| {
                let reasons = wal::decide(&entry, oldest.as_deref());
                (entry, reasons)
            })
            .collect();
        push_by_host(report, decisions, protected, by_source_only);
        tracing::debug!(source = %base, oldest = ?oldest, "WAL retention decided");
    }
}

/// Decides the binlog snapshots of each dump source (see `forget/binlog.rs`)
/// once the dumps are decided.
fn decide_binlog(
    report: &mut ForgetReport,
    streams: BTreeMap<String, Vec<SnapshotEntry>>,
    protected: &HashSet<SnapshotId>,
    by_source_only: bool,
) {
    for (base, entries) in streams {
        let kept_dumps = report
            .groups
            .iter()
            .filter(|((source, _), _)| *source == base)
            .flat_map(|(_, decisions)| decisions.iter().filter(|d| d.keep()).map(|d| &d.entry));
        let oldest = binlog::oldest_needed(kept_dumps);
        let decided = binlog::decide(&entries, oldest.as_ref());
        push_by_host(
            report,
            entries.into_iter().zip(decided).collect(),
            protected,
            by_source_only,
        );
        tracing::debug!(source = %base, oldest = ?oldest, "binlog retention decided");
    }
}

/// Adds a stream's decisions to the report, grouped as `forget` groups
/// (source and host, or source alone), protected snapshots kept.
fn push_by_host(
    report: &mut ForgetReport,
    decided: Vec<(SnapshotEntry, Vec<KeepReason>)>,
    protected: &HashSet<SnapshotId>,
    by_source_only: bool,
) {
    let mut by_host: BTreeMap<(String, String), Vec<ForgetDecision>> = BTreeMap::new();
    for (entry, mut reasons) in decided {
        if protected.contains(&entry.id) {
            reasons.insert(0, KeepReason::Protected);
        }
        let host = if by_source_only {
            String::new()
        } else {
            entry.snapshot.hostname.clone()
        };
        by_host
            .entry((entry.snapshot.source.clone(), host))
            .or_default()
            .push(ForgetDecision { entry, reasons });
    }
    report.groups.extend(by_host);
}

fn protect_key(id: &SnapshotId) -> Result<ObjectKey> {
    objects::key::<ProtectMarker>(id)
}

fn tombstone_key(id: &SnapshotId) -> Result<ObjectKey> {
    ObjectKey::new(ObjectKind::Tombstone, id.to_hex()).map_err(Error::store)
}
