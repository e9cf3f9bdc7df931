//! The listings a pass works from, and their differences.

use std::cmp::Ordering;

use nfrepo_store::{ObjectInfo, ObjectKind, Store};

use super::COPY_ORDER;
use crate::{Error, Result};

/// Source and target listings of every replicated kind, each sorted by name.
#[derive(Debug, Default)]
pub(crate) struct Listings {
    source: Vec<(ObjectKind, Vec<ObjectInfo>)>,
    target: Vec<(ObjectKind, Vec<ObjectInfo>)>,
}

/// How the two listings of one kind differ.
#[derive(Debug, Default)]
pub(crate) struct KindDiff<'a> {
    /// On the source, not on the target.
    pub(crate) missing: Vec<&'a ObjectInfo>,
    /// On both, the target's copy of another size (damaged on the replica).
    pub(crate) wrong_size: Vec<&'a ObjectInfo>,
    /// On both with the same size.
    pub(crate) common: u64,
    /// On the target, not on the source.
    pub(crate) extra: Vec<&'a ObjectInfo>,
}

impl Listings {
    /// Lists the source in reverse commit order (so every listed snapshot's
    /// packs were written before the packs were listed), then the target.
    ///
    /// # Errors
    /// A failed listing.
    pub(crate) async fn take(source: &dyn Store, target: &dyn Store) -> Result<Self> {
        let mut listings = Self::default();
        for &kind in COPY_ORDER.iter().rev() {
            let mut listed = source.list(kind).await.map_err(Error::store)?;
            listed.sort_by(|a, b| a.key.name().cmp(b.key.name()));
            listings.source.push((kind, listed));
        }
        for kind in COPY_ORDER {
            let mut listed = target.list(kind).await.map_err(Error::store)?;
            listed.sort_by(|a, b| a.key.name().cmp(b.key.name()));
            listings.target.push((kind, listed));
        }
        Ok(listings)
    }

    /// The source's objects of `kind`, sorted by name.
    pub(crate) fn source(&self, kind: ObjectKind) -> &[ObjectInfo] {
        find(&self.source, kind)
    }

    /// The target's objects of `kind`, sorted by name.
    pub(crate) fn target(&self, kind: ObjectKind) -> &[ObjectInfo] {
        find(&self.target, kind)
    }

    /// How the listings of `kind` differ.
    pub(crate) fn diff(&self, kind: ObjectKind) -> KindDiff<'_> {
        let (source, target) = (self.source(kind), self.target(kind));
        let mut diff = KindDiff::default();
        let (mut s, mut t) = (source.iter().peekable(), target.iter().peekable());
        loop {
            match (s.peek(), t.peek()) {
                (None, None) => break,
                (Some(a), None) => {
                    diff.missing.push(a);
                    s.next();
                }
                (None, Some(b)) => {
                    diff.extra.push(b);
                    t.next();
                }
                (Some(a), Some(b)) => match a.key.name().cmp(b.key.name()) {
                    Ordering::Less => {
                        diff.missing.push(a);
                        s.next();
                    }
                    Ordering::Greater => {
                        diff.extra.push(b);
                        t.next();
                    }
                    Ordering::Equal => {
                        if a.size == b.size {
                            diff.common += 1;
                        } else {
                            diff.wrong_size.push(a);
                        }
                        s.next();
                        t.next();
                    }
                },
            }
        }
        diff
    }
}

fn find(lists: &[(ObjectKind, Vec<ObjectInfo>)], kind: ObjectKind) -> &[ObjectInfo] {
    lists
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[][..], |(_, list)| list.as_slice())
}
