//! The listings a pass works from, and their differences, merged as they stream.
//!
//! Both stores list every kind in ascending name order
//! ([`Store::list_stream`]), so the source's and the target's listings of a
//! kind are compared by merging them, one entry of each at a time: a pass
//! never holds the listing of packs (or of audit entries), whatever the
//! repository's size. The other kinds are **held**: key slots, the config,
//! index deltas, snapshots and markers are listed once, in memory, at the
//! start of the pass, because the commit order needs them as of one instant
//! (everything a held snapshot needs was written before the packs are
//! listed), and because their number is bounded by retention and index
//! compaction, not by the amount of data.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::time::SystemTime;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use nfrepo_format::{Backlog, SnapshotId};
use nfrepo_store::{ErrorKind, ListStream, ObjectInfo, ObjectKind, Store};

use super::{COPY_ORDER, nanos};
use crate::{Error, Result};

/// Kinds whose listings are streamed at the time they are compared, never
/// held: packs (millions in a large repository) and audit entries (one per
/// operation, never deleted).
pub(crate) fn streamed(kind: ObjectKind) -> bool {
    matches!(kind, ObjectKind::Data | ObjectKind::Tree | ObjectKind::Audit)
}

/// The two stores of a pass and the held listings, each sorted by name.
pub(crate) struct Listings<'a> {
    source: &'a dyn Store,
    target: &'a dyn Store,
    held: Vec<Held>,
}

struct Held {
    kind: ObjectKind,
    source: Vec<ObjectInfo>,
    target: Vec<ObjectInfo>,
}

/// One object in the comparison of the two listings of a kind.
#[derive(Debug)]
pub(crate) enum Entry {
    /// On the source, not on the target (the source's entry).
    Missing(ObjectInfo),
    /// On both, the target's copy of another size: damaged on the replica (the source's entry).
    WrongSize(ObjectInfo),
    /// On both with the same size (the source's entry).
    Common(ObjectInfo),
    /// On the target, not on the source (the target's entry).
    Extra(ObjectInfo),
}

/// The stream of a kind's [`Entry`]s, in name order.
pub(crate) type Entries<'a> = BoxStream<'a, Result<Entry>>;

impl<'a> Listings<'a> {
    /// Lists the held kinds: the source's in reverse commit order (so every
    /// listed snapshot's index deltas were written before the index was
    /// listed, and its packs before any pack listing a later comparison
    /// streams), then the target's.
    ///
    /// # Errors
    /// A failed listing.
    pub(crate) async fn take(source: &'a dyn Store, target: &'a dyn Store) -> Result<Self> {
        let kinds: Vec<ObjectKind> = COPY_ORDER.iter().copied().filter(|&k| !streamed(k)).collect();
        let mut held = Vec::with_capacity(kinds.len());
        for &kind in kinds.iter().rev() {
            held.push(Held {
                kind,
                source: sorted(source, kind).await?,
                target: Vec::new(),
            });
        }
        for held in &mut held {
            held.target = sorted(target, held.kind).await?;
        }
        Ok(Self { source, target, held })
    }

    /// The source's objects of a held `kind`, sorted by name (empty for a streamed kind).
    pub(crate) fn source(&self, kind: ObjectKind) -> &[ObjectInfo] {
        self.held
            .iter()
            .find(|h| h.kind == kind)
            .map_or(&[][..], |h| h.source.as_slice())
    }

    /// The target's objects of a held `kind`, sorted by name (empty for a streamed kind).
    pub(crate) fn target(&self, kind: ObjectKind) -> &[ObjectInfo] {
        self.held
            .iter()
            .find(|h| h.kind == kind)
            .map_or(&[][..], |h| h.target.as_slice())
    }

    /// How the listings of `kind` differ, entry by entry in name order. A
    /// streamed kind is listed on both stores now, as the stream is polled.
    pub(crate) fn diff(&self, kind: ObjectKind) -> Entries<'_> {
        if streamed(kind) {
            return merge(kind, self.source.list_stream(kind), self.target.list_stream(kind));
        }
        merge(kind, held(self.source(kind)), held(self.target(kind)))
    }
}

/// A held listing as a stream.
fn held(list: &[ObjectInfo]) -> ListStream<'_> {
    stream::iter(list.iter().cloned().map(Ok)).boxed()
}

/// A held listing: the whole listing of `kind`, sorted by name.
async fn sorted(store: &dyn Store, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
    let mut listed = store.list(kind).await.map_err(Error::store)?;
    listed.sort_by(|a, b| a.key.name().cmp(b.key.name()));
    Ok(listed)
}

/// One side of a merge: its listing and the entry read ahead.
struct Side<'a> {
    listing: ListStream<'a>,
    head: Option<ObjectInfo>,
    done: bool,
    /// The name of the last entry taken, to check the order.
    last: Option<String>,
    location: &'static str,
}

impl<'a> Side<'a> {
    fn new(listing: ListStream<'a>, location: &'static str) -> Self {
        Self {
            listing,
            head: None,
            done: false,
            last: None,
            location,
        }
    }

    /// Reads the next entry ahead, if none is; checks that names ascend,
    /// which the merge relies on (an object listed out of order would
    /// otherwise look missing on one side and extra on the other).
    async fn fill(&mut self, kind: ObjectKind) -> Result<()> {
        if self.head.is_some() || self.done {
            return Ok(());
        }
        match self.listing.next().await {
            None => self.done = true,
            Some(Err(e)) => return Err(Error::store(e)),
            Some(Ok(info)) => {
                if let Some(last) = &self.last
                    && info.key.name() <= last.as_str()
                {
                    return Err(Error::store(nfrepo_store::Error::new(
                        ErrorKind::Other,
                        format!(
                            "the {} listing of {kind}/ is not in name order: {} after {last}",
                            self.location,
                            info.key.name()
                        ),
                    )));
                }
                self.last = Some(info.key.name().to_owned());
                self.head = Some(info);
            }
        }
        Ok(())
    }
}

/// Merges two listings of `kind` in name order into their [`Entry`]s.
/// An error of either listing ends the stream with that error.
fn merge<'a>(kind: ObjectKind, source: ListStream<'a>, target: ListStream<'a>) -> Entries<'a> {
    let sides = (Side::new(source, "source"), Side::new(target, "target"));
    stream::try_unfold(sides, move |(mut source, mut target)| async move {
        source.fill(kind).await?;
        target.fill(kind).await?;
        let entry = match (source.head.take(), target.head.take()) {
            (None, None) => return Ok(None),
            (Some(a), None) => Entry::Missing(a),
            (None, Some(b)) => Entry::Extra(b),
            (Some(a), Some(b)) => match a.key.name().cmp(b.key.name()) {
                Ordering::Less => {
                    target.head = Some(b);
                    Entry::Missing(a)
                }
                Ordering::Greater => {
                    source.head = Some(a);
                    Entry::Extra(b)
                }
                Ordering::Equal if a.size == b.size => Entry::Common(a),
                Ordering::Equal => Entry::WrongSize(a),
            },
        };
        Ok(Some((entry, (source, target))))
    })
    .boxed()
}

/// What the replica lacks, counted object by object as a pass meets them.
#[derive(Debug, Default)]
pub(crate) struct Behind {
    backlog: Backlog,
    /// Names of the snapshots the replica lacks.
    snapshots: BTreeSet<String>,
}

impl Behind {
    /// Counts `info` (a source entry) as not on the replica. Audit entries
    /// are not lag: every replicate run logs one on the source after its
    /// pass, so the log is always one entry ahead.
    pub(crate) fn add(&mut self, info: &ObjectInfo) {
        if info.key.kind() == ObjectKind::Audit {
            return;
        }
        self.backlog.objects += 1;
        self.backlog.bytes += info.size;
        if info.key.kind() == ObjectKind::Snapshot {
            self.backlog.snapshots += 1;
            self.snapshots.insert(info.key.name().to_owned());
            let ns = info.last_modified.map(nanos);
            self.backlog.oldest_snapshot_ns = match (self.backlog.oldest_snapshot_ns, ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    /// The backlog, and the newest snapshot (by storage time) the replica has of the source's.
    pub(crate) fn finish(self, listings: &Listings<'_>) -> (Backlog, Option<SnapshotId>) {
        let mut newest: Option<(SystemTime, SnapshotId)> = None;
        for info in listings.source(ObjectKind::Snapshot) {
            let (Some(time), Ok(id)) = (info.last_modified, info.key.name().parse::<SnapshotId>()) else {
                continue;
            };
            if !self.snapshots.contains(info.key.name()) && newest.is_none_or(|(t, _)| time > t) {
                newest = Some((time, id));
            }
        }
        (self.backlog, newest.map(|(_, id)| id))
    }
}

/// Counts everything the replica lacks of the source, kind by kind.
///
/// # Errors
/// A failed listing.
pub(crate) async fn behind(listings: &Listings<'_>) -> Result<(Backlog, Option<SnapshotId>)> {
    let mut behind = Behind::default();
    for kind in COPY_ORDER {
        let mut entries = listings.diff(kind);
        while let Some(entry) = entries.try_next().await? {
            if let Entry::Missing(info) | Entry::WrongSize(info) = &entry {
                behind.add(info);
            }
        }
    }
    Ok(behind.finish(listings))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use bytes::Bytes;
    use nfrepo_store::{MemoryStore, ObjectKey, PutMode};

    use super::*;

    async fn put(store: &MemoryStore, name: &str, len: usize) {
        let key = ObjectKey::new(ObjectKind::Data, name).unwrap();
        store
            .put(&key, Bytes::from(vec![0; len]), PutMode::CreateNew)
            .await
            .unwrap();
    }

    fn describe(entry: &Entry) -> String {
        match entry {
            Entry::Missing(i) => format!("missing {}", i.key.name()),
            Entry::WrongSize(i) => format!("wrong {}", i.key.name()),
            Entry::Common(i) => format!("common {}", i.key.name()),
            Entry::Extra(i) => format!("extra {}", i.key.name()),
        }
    }

    #[tokio::test]
    async fn merging_two_listings_classifies_every_object_once_in_name_order() {
        let (source, target) = (MemoryStore::new(), MemoryStore::new());
        for (name, len) in [("aa1", 1), ("bb1", 2), ("cc1", 3), ("ee1", 5)] {
            put(&source, name, len).await;
        }
        for (name, len) in [("00x", 1), ("bb1", 2), ("cc1", 4), ("dd1", 4), ("ff1", 6)] {
            put(&target, name, len).await;
        }
        let listings = Listings::take(&source, &target).await.unwrap();
        let entries: Vec<String> = listings
            .diff(ObjectKind::Data)
            .map_ok(|e| describe(&e))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            entries,
            [
                "extra 00x",
                "missing aa1",
                "common bb1",
                "wrong cc1",
                "extra dd1",
                "missing ee1",
                "extra ff1"
            ]
        );
    }

    #[tokio::test]
    async fn a_listing_out_of_name_order_stops_the_merge() {
        let unordered = |names: &[&str]| -> ListStream<'static> {
            let infos: Vec<_> = names
                .iter()
                .map(|n| {
                    Ok(ObjectInfo {
                        key: ObjectKey::new(ObjectKind::Data, *n).unwrap(),
                        size: 1,
                        last_modified: None,
                    })
                })
                .collect();
            stream::iter(infos).boxed()
        };
        let mut entries = merge(ObjectKind::Data, unordered(&["bb", "aa"]), unordered(&[]));
        assert_eq!(describe(&entries.try_next().await.unwrap().unwrap()), "missing bb");
        let err = entries.try_next().await.unwrap_err();
        assert!(err.to_string().contains("not in name order: aa after bb"), "{err}");
    }
}
