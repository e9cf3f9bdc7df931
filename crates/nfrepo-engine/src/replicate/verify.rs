//! `--verify`: the replica against the source's listing, every object (or a
//! rotating subset) re-hashed, without the key.

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_format::{ReplicaObject, ReplicaState};
use nfrepo_store::{ErrorKind, ObjectInfo, ObjectKind};

use super::copy::{check_stream, transfer_bytes};
use super::listing::{Behind, Entries, Entry, Listings};
use super::{COPY_ORDER, MEMORY_BUDGET, Pass, ReplicaProblem, ReplicateReport, budget_permits, content_addressed};
use crate::{Error, Result};

/// How much of the replica `--verify` re-hashes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum VerifySubset {
    /// Every object.
    All,
    /// This percentage (0 < p ≤ 100) of the objects, continuing where the
    /// last partial verification stopped, so successive runs cover the replica.
    Percent(f64),
}

impl VerifySubset {
    /// Parses `x%` (e.g. `5%`, `0.5%`; `100%` is [`Self::All`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "invalid verify subset {text:?}: expected a percentage such as 5%"
            ))
        };
        let number: f64 = text
            .trim()
            .strip_suffix('%')
            .ok_or_else(bad)?
            .trim()
            .parse()
            .map_err(|_| bad())?;
        if !(number > 0.0 && number <= 100.0) {
            return Err(bad());
        }
        Ok(if number >= 100.0 {
            Self::All
        } else {
            Self::Percent(number)
        })
    }
}

/// The rotation order of objects: kind in commit order, then name. The
/// comparison streams kind by kind in commit order, each in name order, so
/// it meets objects in this order.
fn order_key(info: &ObjectInfo) -> (usize, &str) {
    let kind = COPY_ORDER
        .iter()
        .position(|&k| k == info.key.kind())
        .unwrap_or(usize::MAX);
    (kind, info.key.name())
}

fn cursor_key(cursor: &str) -> Option<(usize, String)> {
    let (prefix, name) = cursor.split_once('/')?;
    let kind = COPY_ORDER.iter().position(|k| k.prefix() == prefix)?;
    Some((kind, name.to_owned()))
}

/// Which objects on both sides a verification re-hashes: all, or the next
/// share after the cursor in [`order_key`] order, wrapping around to the
/// start. Decided object by object as the comparison streams by, from the
/// counts of a first comparison.
struct Selector {
    cursor: Option<(usize, String)>,
    /// Objects to take after the cursor, and then from the start.
    take_after: u64,
    take_before: u64,
    taken_after: u64,
    taken_before: u64,
    /// The last object taken after the cursor and from the start, as `kind/name`.
    last_after: Option<String>,
    last_before: Option<String>,
}

impl Selector {
    fn all() -> Self {
        Self {
            cursor: None,
            take_after: u64::MAX,
            take_before: 0,
            taken_after: 0,
            taken_before: 0,
            last_after: None,
            last_before: None,
        }
    }

    /// `percent` of `candidates` objects, of which `after` come after `cursor`.
    fn share(percent: f64, candidates: u64, after: u64, cursor: Option<(usize, String)>) -> Self {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a share of a count, rounded up, never above the count"
        )]
        let count = ((candidates as f64 * percent / 100.0).ceil() as u64).min(candidates);
        let take_after = count.min(after);
        Self {
            cursor,
            take_after,
            take_before: count - take_after,
            ..Self::all()
        }
    }

    fn after_cursor(cursor: Option<&(usize, String)>, info: &ObjectInfo) -> bool {
        cursor.is_none_or(|(kind, name)| order_key(info) > (*kind, name.as_str()))
    }

    fn take(&mut self, info: &ObjectInfo) -> bool {
        let (taken, limit, last) = if Self::after_cursor(self.cursor.as_ref(), info) {
            (&mut self.taken_after, self.take_after, &mut self.last_after)
        } else {
            (&mut self.taken_before, self.take_before, &mut self.last_before)
        };
        if *taken >= limit {
            return false;
        }
        *taken += 1;
        *last = Some(info.key.path_in_order());
        true
    }

    /// Where the next partial verification starts: after the last object taken in rotation order.
    fn next_cursor(self) -> Option<String> {
        if self.taken_before > 0 {
            self.last_before
        } else {
            self.last_after
        }
    }
}

/// What one entry of the comparison came to.
enum Seen {
    /// Nothing to record.
    Skip,
    /// The source has it, the replica does not.
    Missing(ObjectInfo),
    /// The replica's copy has another size.
    WrongSize(ObjectInfo),
    /// The replica has it, the source does not.
    Extra(ObjectInfo),
    /// To re-hash.
    ToCheck(ObjectInfo),
    /// Re-hashed: `Some(error)` if damaged.
    Checked(ObjectInfo, Result<Option<Error>>),
}

/// Records an entry of the comparison that is not a re-hash.
fn record(seen: Seen, behind: &mut Behind, damaged: &mut Vec<ReplicaObject>, report: &mut ReplicateReport) {
    match seen {
        Seen::Missing(info) => {
            behind.add(&info);
            // Audit entries newer than the last pass (its own entry among them) are not lost.
            if info.key.kind() != ObjectKind::Audit {
                report.problems.push(ReplicaProblem {
                    object: info.key.path(),
                    error: Error::Missing {
                        object: info.key.path(),
                        detail: "the source has it, the replica does not".into(),
                    },
                });
            }
        }
        Seen::WrongSize(info) => {
            behind.add(&info);
            damaged.push(replica_object(&info));
            report.problems.push(ReplicaProblem {
                object: info.key.path(),
                error: Error::Corrupted {
                    object: format!("{} on the replica", info.key.path()),
                    source: nfrepo_format::Error::Malformed {
                        what: "object",
                        detail: format!("the source's copy has {} bytes, the replica's another size", info.size),
                    },
                },
            });
        }
        Seen::Extra(info) => report.extra.push(info.key.path()),
        Seen::Skip | Seen::ToCheck(_) | Seen::Checked(..) => {}
    }
}

/// Verifies the replica: missing objects are `BACKUP_NOT_FOUND`, objects whose
/// bytes do not match their name (or, for the kinds not named by their hash,
/// the source's bytes) `BACKUP_CORRUPTED` and recorded as damaged so that
/// the next pass copies them again; extra objects are listed. Returns what
/// the replica lacks.
///
/// The listings are compared as they stream; a partial verification
/// compares them twice (first to count the objects on both sides, then to
/// re-hash its share of them), so that neither listing is ever held.
///
/// # Errors
/// Storage failures that are not about one object; a failed listing.
pub(crate) async fn run(
    pass: &Pass<'_>,
    listings: &Listings<'_>,
    subset: VerifySubset,
    previous: Option<&ReplicaState>,
    next: &mut ReplicaState,
    report: &mut ReplicateReport,
) -> Result<Behind> {
    let mut behind = Behind::default();
    let mut damaged: Vec<ReplicaObject> = Vec::new();
    let compared = matches!(subset, VerifySubset::Percent(_));
    let mut selector = match subset {
        VerifySubset::All => Selector::all(),
        VerifySubset::Percent(percent) => {
            let cursor = previous.and_then(|s| s.verify_cursor.as_deref()).and_then(cursor_key);
            let (mut candidates, mut after) = (0u64, 0u64);
            let mut entries = every_entry(listings);
            while let Some(entry) = entries.try_next().await? {
                let seen = match entry {
                    Entry::Common(info) => {
                        candidates += 1;
                        after += u64::from(Selector::after_cursor(cursor.as_ref(), &info));
                        continue;
                    }
                    Entry::Missing(info) => Seen::Missing(info),
                    Entry::WrongSize(info) => Seen::WrongSize(info),
                    Entry::Extra(info) => Seen::Extra(info),
                };
                record(seen, &mut behind, &mut damaged, report);
            }
            Selector::share(percent, candidates, after, cursor)
        }
    };
    if let Some(work) = pass.work() {
        work.phase("verifying", 0, 0);
    }
    // The objects the last verification found damaged that this one re-hashes.
    let previously: BTreeSet<ReplicaObject> = next.damaged.iter().cloned().collect();
    let mut rechecked: BTreeSet<ReplicaObject> = BTreeSet::new();
    let selected = &mut selector;
    let rechecking = &mut rechecked;
    let previously = &previously;
    let mut steps = every_entry(listings)
        .map(move |entry| {
            let seen = match entry {
                Ok(Entry::Common(info)) if selected.take(&info) => {
                    let object = replica_object(&info);
                    if previously.contains(&object) {
                        rechecking.insert(object);
                    }
                    Ok(Seen::ToCheck(info))
                }
                Ok(Entry::Common(_)) => Ok(Seen::Skip),
                // A partial verification recorded these in its first comparison.
                Ok(_) if compared => Ok(Seen::Skip),
                Ok(Entry::Missing(info)) => Ok(Seen::Missing(info)),
                Ok(Entry::WrongSize(info)) => Ok(Seen::WrongSize(info)),
                Ok(Entry::Extra(info)) => Ok(Seen::Extra(info)),
                Err(e) => Err(e),
            };
            async move {
                match seen? {
                    Seen::ToCheck(info) => {
                        let outcome = check_one(pass, &info).await;
                        Ok::<_, Error>(Seen::Checked(info, outcome))
                    }
                    other => Ok(other),
                }
            }
        })
        .buffer_unordered(pass.options.jobs.max(1));
    while let Some(seen) = steps.next().await {
        let (info, outcome) = match seen? {
            Seen::Checked(info, outcome) => (info, outcome),
            // Not a re-hash: a difference of the listings, recorded as it is met.
            other => {
                record(other, &mut behind, &mut damaged, report);
                continue;
            }
        };
        crate::work::advance(pass.work(), 1, info.size);
        report.verified += 1;
        if let Some(error) = outcome? {
            damaged.push(replica_object(&info));
            report.problems.push(ReplicaProblem {
                object: info.key.path(),
                error,
            });
        }
    }
    drop(steps);
    next.verify_cursor = match subset {
        VerifySubset::All => None,
        VerifySubset::Percent(_) => selector.next_cursor(),
    };
    damaged.extend(next.damaged.iter().filter(|d| !rechecked.contains(d)).cloned());
    damaged.sort();
    damaged.dedup();
    next.damaged = damaged;
    Ok(behind)
}

fn replica_object(info: &ObjectInfo) -> ReplicaObject {
    ReplicaObject {
        kind: info.key.kind().prefix().to_owned(),
        name: info.key.name().to_owned(),
    }
}

/// The comparison of every replicated kind, in commit order.
fn every_entry<'a>(listings: &'a Listings<'_>) -> Entries<'a> {
    stream::iter(COPY_ORDER)
        .map(|kind| listings.diff(kind))
        .flatten()
        .boxed()
}

/// Re-hashes one replica object; `Some(error)` if it is damaged or gone.
/// A content-addressed object is hashed as it streams; others (small) are
/// read whole and compared with the source's copy.
async fn check_one(pass: &Pass<'_>, info: &ObjectInfo) -> Result<Option<Error>> {
    let key = &info.key;
    let wanted = if content_addressed(key.kind()) {
        transfer_bytes(info)
    } else {
        info.size.min(MEMORY_BUDGET).saturating_mul(2).min(MEMORY_BUDGET)
    };
    let _permit = pass
        .budget
        .acquire_many(u32::try_from(budget_permits(wanted)).unwrap_or(u32::MAX))
        .await
        .map_err(|_| Error::Pipeline("the transfer budget was closed".into()))?;
    let gone = || {
        Some(Error::Missing {
            object: key.path(),
            detail: "listed on the replica but gone when read".into(),
        })
    };
    let unreadable = |e: nfrepo_store::Error| match e.kind() {
        ErrorKind::NotFound => Ok(gone()),
        _ if crate::ErrorClass::of_store(&e).is_damage() => Ok(Some(Error::store(e))),
        _ => Err(Error::store(e)),
    };
    if content_addressed(key.kind()) {
        let checked = match pass.target.get_stream(key).await {
            Ok(body) => check_stream(key, body, "replica").await,
            Err(e) => Err(e),
        };
        return match checked {
            Ok(result) => Ok(result.err()),
            Err(e) => unreadable(e),
        };
    }
    let replica = match pass.target.get(key).await {
        Ok(bytes) => bytes,
        Err(e) => return unreadable(e),
    };
    let source = match pass.source.get(key).await {
        Ok(bytes) => bytes,
        // Gone from the source since the listing: its deletion is timed, not damage.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store(e)),
    };
    if source == replica {
        return Ok(None);
    }
    Ok(Some(Error::Corrupted {
        object: format!("{} on the replica", key.path()),
        source: nfrepo_format::Error::HashMismatch {
            what: "object (compared with the source's copy)",
            expected: blake3::hash(&source).to_hex().to_string(),
            actual: blake3::hash(&replica).to_hex().to_string(),
        },
    }))
}

/// `kind/name`, the cursor's spelling.
trait PathInOrder {
    fn path_in_order(&self) -> String;
}

impl PathInOrder for nfrepo_store::ObjectKey {
    fn path_in_order(&self) -> String {
        format!("{}/{}", self.kind().prefix(), self.name())
    }
}
