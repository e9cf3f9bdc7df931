//! `--verify`: the replica against the source's listing, every object (or a
//! rotating subset) re-hashed, without the key.

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt};
use nfrepo_format::{ReplicaObject, ReplicaState};
use nfrepo_store::{ErrorKind, ObjectInfo};

use super::copy::{check_stream, transfer_bytes};
use super::listing::Listings;
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

/// The rotation order of objects: kind in commit order, then name.
fn order_key(info: &ObjectInfo) -> (usize, String) {
    let kind = COPY_ORDER
        .iter()
        .position(|&k| k == info.key.kind())
        .unwrap_or(usize::MAX);
    (kind, info.key.name().to_owned())
}

fn cursor_key(cursor: &str) -> Option<(usize, String)> {
    let (prefix, name) = cursor.split_once('/')?;
    let kind = COPY_ORDER.iter().position(|k| k.prefix() == prefix)?;
    Some((kind, name.to_owned()))
}

/// Verifies the replica: missing objects are `BACKUP_NOT_FOUND`, objects whose
/// bytes do not match their name (or, for the kinds not named by their hash,
/// the source's bytes) `BACKUP_CORRUPTED` and recorded as damaged so that
/// the next pass copies them again; extra objects are listed.
///
/// # Errors
/// Storage failures that are not about one object.
pub(crate) async fn run(
    pass: &Pass<'_>,
    listings: &Listings,
    subset: VerifySubset,
    previous: Option<&ReplicaState>,
    next: &mut ReplicaState,
    report: &mut ReplicateReport,
) -> Result<()> {
    let mut candidates: Vec<&ObjectInfo> = Vec::new();
    for kind in COPY_ORDER {
        let diff = listings.diff(kind);
        // Audit entries newer than the last pass (its own entry among them) are not lost.
        for info in diff.missing.iter().filter(|_| kind != nfrepo_store::ObjectKind::Audit) {
            report.problems.push(ReplicaProblem {
                object: info.key.path(),
                error: Error::Missing {
                    object: info.key.path(),
                    detail: "the source has it, the replica does not".into(),
                },
            });
        }
        for info in &diff.wrong_size {
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
        report.extra.extend(diff.extra.iter().map(|info| info.key.path()));
        let wrong: BTreeSet<&str> = diff.wrong_size.iter().map(|i| i.key.name()).collect();
        let missing: BTreeSet<&str> = diff.missing.iter().map(|i| i.key.name()).collect();
        candidates.extend(
            listings
                .source(kind)
                .iter()
                .filter(|i| !wrong.contains(i.key.name()) && !missing.contains(i.key.name())),
        );
    }
    let chosen = choose(&candidates, subset, previous.and_then(|s| s.verify_cursor.as_deref()));
    if let Some(work) = pass.work() {
        work.phase("verifying", chosen.len() as u64, chosen.iter().map(|i| i.size).sum());
    }
    next.verify_cursor = match subset {
        VerifySubset::All => None,
        VerifySubset::Percent(_) => chosen.last().map(|i| i.key.path_in_order()),
    };
    let checked: BTreeSet<ReplicaObject> = chosen.iter().map(|i| replica_object(i)).collect();
    let mut damaged: Vec<ReplicaObject> = next.damaged.iter().filter(|d| !checked.contains(d)).cloned().collect();
    for info in &listings_wrong(listings) {
        damaged.push(replica_object(info));
    }
    let mut outcomes = stream::iter(chosen)
        .map(|info| async move { (info, check_one(pass, info).await) })
        .buffer_unordered(pass.options.jobs.max(1));
    while let Some((info, outcome)) = outcomes.next().await {
        crate::work::advance(pass.work(), 1, info.size);
        report.verified += 1;
        if let Some(error) = outcome? {
            damaged.push(replica_object(info));
            report.problems.push(ReplicaProblem {
                object: info.key.path(),
                error,
            });
        }
    }
    damaged.sort();
    damaged.dedup();
    next.damaged = damaged;
    Ok(())
}

fn listings_wrong(listings: &Listings) -> Vec<ObjectInfo> {
    COPY_ORDER
        .iter()
        .flat_map(|&kind| listings.diff(kind).wrong_size.into_iter().cloned().collect::<Vec<_>>())
        .collect()
}

fn replica_object(info: &ObjectInfo) -> ReplicaObject {
    ReplicaObject {
        kind: info.key.kind().prefix().to_owned(),
        name: info.key.name().to_owned(),
    }
}

/// The objects to re-hash: all, or the next share after the cursor, wrapping around.
fn choose<'a>(candidates: &[&'a ObjectInfo], subset: VerifySubset, cursor: Option<&str>) -> Vec<&'a ObjectInfo> {
    let VerifySubset::Percent(percent) = subset else {
        return candidates.to_vec();
    };
    let mut ordered = candidates.to_vec();
    ordered.sort_by_key(|i| order_key(i));
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a share of a count, rounded up, never above the count"
    )]
    let count = ((ordered.len() as f64 * percent / 100.0).ceil() as usize).min(ordered.len());
    let start = cursor
        .and_then(cursor_key)
        .map_or(0, |after| ordered.partition_point(|i| order_key(i) <= after));
    ordered.iter().cycle().skip(start).take(count).copied().collect()
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
