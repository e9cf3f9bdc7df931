//! Whether a backup lists every pack at its start.
//!
//! The listing finds two things: packs no index names, left by an
//! interrupted run, which the backup adopts (resume, not redo); and indexed
//! packs that are gone (issue 17), whose blobs it then stores again and
//! whose snapshot it does not take as parent. On a healthy repository it
//! finds neither, and with a long history it is most of a small backup's
//! cost: a 5-minute schedule leaves two packs per snapshot, 20,000 packs at
//! 10,000 snapshots. So a backup with a local cache directory lists them only
//! when the host's [`SessionRecord`] says the listing may find something:
//!
//! - a session of this host ended without committing (aborted, failed, or
//!   its process is gone), so it may have left packs to adopt;
//! - the host's last listing that found every indexed pack is older than
//!   [`PACK_LISTING_INTERVAL`], or there is none (a new cache, another host);
//! - the last listing found an indexed pack missing (none is recorded then).
//!
//! What makes deduplication safe does not depend on this: just before its
//! commit point every backup checks that each pack it deduplicated against
//! is still stored (`crate::session`, [`Error::DedupPackMissing`] otherwise,
//! which aborts the session: the next run then lists, and stores the data
//! again). Between full listings a backup may therefore fail once where one
//! that listed would have stored the data again, and a parent whose packs
//! were lost outside any nfrepo command (GC never deletes a live snapshot's
//! packs) is reused until the next full listing notices; `nfrepo check`
//! reports both. Without a cache directory every backup lists, as before.
//!
//! The same record decides, with the snapshot cache, whether a backup lists
//! the snapshots and the index deltas (10,000 names each at 10,000
//! snapshots; ten pages each on S3): see [`ListingPlan::index_fresh`] and
//! `crate::snapshot_cache::parent`.
//!
//! [`Error::DedupPackMissing`]: crate::Error::DedupPackMissing

use std::sync::Arc;
use std::time::Duration;

use nfrepo_store::{OpenSession, SessionRecord};

use crate::Repository;

/// How long a host trusts its last full pack listing that found every
/// indexed pack: past this, a backup lists them all again. With a 5-minute
/// schedule, one run an hour pays for the listing.
pub const PACK_LISTING_INTERVAL: Duration = Duration::from_secs(3600);

/// What a starting backup decided about the full pack listing, and the
/// record its session is kept in.
pub(super) struct ListingPlan {
    record: Option<Arc<SessionRecord>>,
    /// List every pack at the start.
    pub(super) full: bool,
    /// Sessions of this host that may have left packs: forgotten once a
    /// listing has adopted them.
    leftovers: Vec<String>,
    /// When the decision was taken: the listing's time, if it finds every pack.
    now_ns: i64,
    /// The host's last full listing of the index deltas, and the GC plans
    /// listed just before it.
    index_listing: Option<(i64, Vec<[u8; 32]>)>,
}

/// Reads the host's record (when the repository has a cache directory) and
/// decides whether this backup lists every pack. A record that cannot be
/// used means a full listing, with a warning.
pub(super) async fn plan(repo: &Repository, now_ns: i64) -> ListingPlan {
    let no_record = ListingPlan {
        record: None,
        full: true,
        leftovers: Vec::new(),
        now_ns,
        index_listing: None,
    };
    let Some(dir) = repo.index_cache_dir().map(std::path::Path::to_path_buf) else {
        return no_record;
    };
    let repo_id = repo.id().to_hex();
    let opened = tokio::task::spawn_blocking(move || {
        let record = SessionRecord::open(&dir, &repo_id)?;
        let complete = record.packs_complete_ns()?;
        let open = record.open_sessions()?;
        let index_listing = record.index_listing()?;
        Ok::<_, nfrepo_store::Error>((record, complete, open, index_listing))
    })
    .await;
    let (record, complete, open, index_listing) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "local session record unusable; listing every pack");
            return no_record;
        }
        Err(e) => {
            tracing::warn!(error = %e, "local session record unusable; listing every pack");
            return no_record;
        }
    };
    let leftovers: Vec<String> = open
        .into_iter()
        .filter(OpenSession::left_packs)
        .map(|s| s.name)
        .collect();
    let stale = !complete.is_some_and(|at| recent(at, now_ns, PACK_LISTING_INTERVAL));
    ListingPlan {
        record: Some(Arc::new(record)),
        full: stale || !leftovers.is_empty(),
        leftovers,
        now_ns,
        index_listing,
    }
}

/// Whether `at` (ns) is within `interval` before `now` (not after it: a
/// clock set back is not trusted).
fn recent(at: i64, now: i64, interval: Duration) -> bool {
    let interval = i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX);
    at <= now && now.saturating_sub(at) <= interval
}

impl ListingPlan {
    /// Whether the host's snapshot cache, last brought up to date by a
    /// full listing of the snapshots begun at `listed_ns`, may name the
    /// backup's parent without a listing (`crate::snapshot_cache::parent`):
    /// no full start is due, and that listing is within
    /// [`PACK_LISTING_INTERVAL`].
    pub(super) fn snapshots_fresh(&self, listed_ns: i64) -> bool {
        !self.full && recent(listed_ns, self.now_ns, PACK_LISTING_INTERVAL)
    }

    /// Whether the backup may take the index from the host's index cache
    /// as it stands, without listing the deltas (format-spec/gc.md, "A
    /// backup", step 3): no full start is due (above), the host listed the
    /// deltas within [`PACK_LISTING_INTERVAL`], and the GC plans just listed
    /// (`plans`, sorted) are exactly those listed before that listing.
    /// (The caller also lists when the cache lacks the parent's root tree:
    /// a parent another host wrote since.)
    ///
    /// Why that is enough: what makes an index out of date in a harmful
    /// way is a pack it names being deleted, and only a GC sweep deletes
    /// indexed packs, each of them named by a plan that was listed before
    /// the sweep began and is deleted only once its packs are done. While
    /// the plans are those seen at the listing, every pack deleted since
    /// was in a plan this backup has just read, and the backup neither
    /// deduplicates against a planned pack nor needs the index to say so.
    /// A plan written and swept entirely between two runs of this host
    /// (possible only with a grace period shorter than the interval
    /// between them) is not seen: a blob deduplicated against one of its
    /// packs fails the commit check (every deduplicated pack is checked
    /// before the commit point; the next run lists), and a tree read from
    /// one makes the index reload from the repository (`Index::recover`).
    /// New deltas of other hosts are only missed deduplication: their
    /// blobs are stored again. Nothing is lost either way.
    pub(super) fn index_fresh(&self, plans: &[[u8; 32]]) -> bool {
        !self.full
            && self
                .index_listing
                .as_ref()
                .is_some_and(|(at, seen)| recent(*at, self.now_ns, PACK_LISTING_INTERVAL) && seen.as_slice() == plans)
    }

    /// Records a full listing of the index deltas begun at `at_ns`, after
    /// the plans `plans` (sorted) were listed. A failure is a warning.
    pub(super) async fn index_listed(&self, at_ns: i64, plans: &[[u8; 32]]) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let plans = plans.to_vec();
        let done = tokio::task::spawn_blocking(move || record.set_index_listing(Some((at_ns, &plans)))).await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::warn!("cannot update the local session record");
        }
    }

    /// Records a full listing, once its orphans are adopted: its time if it
    /// found every indexed pack (none otherwise, so the next backup lists
    /// again), and the sessions whose packs it adopted are forgotten.
    pub(super) async fn listed(&self, every_pack_present: bool) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let at = every_pack_present.then_some(self.now_ns);
        let leftovers = self.leftovers.clone();
        let done = tokio::task::spawn_blocking(move || {
            record.set_packs_complete_ns(at)?;
            record.forget(&leftovers)
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::warn!("cannot update the local session record");
        }
    }

    /// Records that session `name` of this process started, and returns
    /// the record for [`end`].
    pub(super) async fn begin(&self, name: String) -> Option<Arc<SessionRecord>> {
        let record = self.record.clone()?;
        let stamp = nfrepo_store::ProcessStamp::current();
        let writer = record.clone();
        let done = tokio::task::spawn_blocking(move || writer.begin(&name, stamp.as_ref())).await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::warn!("cannot update the local session record");
        }
        Some(record)
    }
}

/// Records the end of session `name`: forgotten once committed, kept as
/// abandoned otherwise (the next backup of this host lists and adopts its
/// packs). A failure is a warning.
pub(super) async fn end(record: Option<Arc<SessionRecord>>, name: String, committed: bool) {
    let Some(record) = record else {
        return;
    };
    let done = tokio::task::spawn_blocking(move || record.end(&name, committed)).await;
    if !matches!(done, Ok(Ok(()))) {
        tracing::warn!("cannot update the local session record");
    }
}
