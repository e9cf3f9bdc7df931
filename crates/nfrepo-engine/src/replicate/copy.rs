//! Copying: each object the target lacks, verified against its name, in commit order.

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use nfrepo_format::{ReplicaObject, RepoId, check_content_id, decode_config_header};
use nfrepo_store::{ErrorKind, ObjectInfo, ObjectKey, ObjectKind, PutMode, Store};

use super::listing::Listings;
use super::{
    COPY_ORDER, MEMORY_BUDGET, Pass, ReplicaProblem, ReplicateReport, budget_permits, commits, content_addressed, path,
};
use crate::{Error, Result};

/// What copying one object came to.
#[derive(Debug)]
enum Outcome {
    /// Written, this many bytes.
    Copied(u64),
    /// Written over a damaged copy, this many bytes.
    Repaired(u64),
    /// An identical object was already there.
    Present,
    /// Gone from the source since it was listed.
    Vanished,
    /// Refused or failed; the pass goes on.
    Problem(ReplicaProblem),
}

/// The repository id in the source's config (read without the key).
///
/// # Errors
/// [`Error::RepositoryNotFound`] without a config; [`Error::NotARepository`]
/// if it does not decode; storage errors.
pub(crate) async fn source_repo_id(source: &dyn Store) -> Result<RepoId> {
    let bytes = match source.get(&ObjectKey::config()).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::RepositoryNotFound {
                location: source.location().to_owned(),
            });
        }
        Err(e) => return Err(Error::store(e)),
    };
    config_repo_id(source, &bytes)
}

fn config_repo_id(store: &dyn Store, bytes: &[u8]) -> Result<RepoId> {
    decode_config_header(bytes)
        .map(|(header, _)| header.repo)
        .map_err(|e| Error::NotARepository {
            location: store.location().to_owned(),
            detail: e.to_string(),
        })
}

/// Refuses a target that holds another repository.
async fn check_target(pass: &Pass<'_>, listings: &Listings) -> Result<()> {
    if listings.target(ObjectKind::Config).is_empty() {
        return Ok(());
    }
    match pass.target.get(&ObjectKey::config()).await {
        Ok(bytes) => {
            let id = config_repo_id(pass.target, &bytes)?;
            if id == pass.repo {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "{} holds another repository ({}), not a replica of {} ({})",
                    pass.target.location(),
                    id.short(),
                    pass.source.location(),
                    pass.repo.short()
                )))
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::store(e)),
    }
}

/// Copies every object the target lacks (and re-copies those it holds
/// damaged: another size than the source's, or `damaged` by the last
/// verification), kind by kind in commit order. Returns objects and bytes copied.
///
/// # Errors
/// See [`super::replicate`].
pub(crate) async fn run(
    pass: &Pass<'_>,
    listings: &Listings,
    damaged: &[ReplicaObject],
    report: &mut ReplicateReport,
) -> Result<(u64, u64)> {
    check_target(pass, listings).await?;
    let mut plan = Vec::new();
    let (mut items, mut bytes) = (0, 0);
    for kind in COPY_ORDER {
        let diff = listings.diff(kind);
        let mut todo: Vec<(&ObjectInfo, bool)> = diff.missing.iter().map(|info| (*info, false)).collect();
        todo.extend(diff.wrong_size.iter().map(|info| (*info, true)));
        let flagged = flagged(listings.source(kind), kind, damaged, &todo);
        report.present += diff.common.saturating_sub(flagged.len() as u64);
        todo.extend(flagged);
        items += todo.len() as u64;
        bytes += todo.iter().map(|(info, _)| info.size).sum::<u64>();
        plan.push((kind, todo));
    }
    if let Some(work) = pass.work() {
        work.phase("copying", items, bytes);
    }
    let mut total = (0, 0);
    let mut incomplete = false;
    for (kind, todo) in plan {
        if commits(kind) && incomplete {
            let (repairs, new): (Vec<_>, Vec<_>) = todo.into_iter().partition(|(_, repair)| *repair);
            report.held_back.extend(new.iter().map(|(info, _)| path(info)));
            copy_kind(pass, kind, repairs, report, &mut total).await?;
            continue;
        }
        let problems_before = report.problems.len();
        copy_kind(pass, kind, todo, report, &mut total).await?;
        let failed = report.problems.len() > problems_before;
        if failed && kind == ObjectKind::Config {
            let problem = report.problems.pop();
            return Err(problem.map_or_else(|| Error::Pipeline("the config could not be copied".into()), |p| p.error));
        }
        if failed
            && matches!(
                kind,
                ObjectKind::Key | ObjectKind::Data | ObjectKind::Tree | ObjectKind::Index
            )
        {
            incomplete = true;
        }
    }
    Ok(total)
}

/// The source's entries of the objects of `kind` that the last verification
/// found damaged on the replica and that are not already in `todo`.
fn flagged<'a>(
    source: &'a [ObjectInfo],
    kind: ObjectKind,
    damaged: &[ReplicaObject],
    todo: &[(&ObjectInfo, bool)],
) -> Vec<(&'a ObjectInfo, bool)> {
    let planned: std::collections::HashSet<&str> = todo.iter().map(|(info, _)| info.key.name()).collect();
    damaged
        .iter()
        .filter(|d| d.kind == kind.prefix() && !planned.contains(d.name.as_str()))
        .filter_map(|d| {
            let at = source.binary_search_by(|info| info.key.name().cmp(&d.name)).ok()?;
            source.get(at).map(|info| (info, true))
        })
        .collect()
}

async fn copy_kind(
    pass: &Pass<'_>,
    kind: ObjectKind,
    todo: Vec<(&ObjectInfo, bool)>,
    report: &mut ReplicateReport,
    total: &mut (u64, u64),
) -> Result<()> {
    let mut outcomes = stream::iter(todo)
        .map(|(info, repair)| async move { (info, copy_one(pass, info, repair).await) })
        .buffer_unordered(pass.options.jobs.max(1));
    while let Some((info, outcome)) = outcomes.next().await {
        crate::work::advance(pass.work(), 1, info.size);
        match outcome? {
            Outcome::Copied(n) => {
                let entry = report.copied.entry(kind.prefix()).or_default();
                *entry = (entry.0 + 1, entry.1 + n);
                *total = (total.0 + 1, total.1 + n);
            }
            Outcome::Repaired(n) => {
                report.repaired.push(path(info));
                *total = (total.0 + 1, total.1 + n);
            }
            Outcome::Present => report.present += 1,
            Outcome::Vanished => report.vanished += 1,
            Outcome::Problem(problem) => {
                tracing::warn!(object = %problem.object, error = %problem.error, "not replicated");
                report.problems.push(problem);
            }
        }
    }
    Ok(())
}

/// Whether a storage error stops the whole pass (access refused, storage
/// unreachable after the store's retries) rather than one object.
fn fatal(err: &nfrepo_store::Error) -> bool {
    matches!(err.kind(), ErrorKind::PermissionDenied | ErrorKind::Unreachable)
}

fn problem(object: String, error: Error) -> Outcome {
    Outcome::Problem(ReplicaProblem { object, error })
}

/// Checks `bytes` against the name of a content-addressed object.
pub(crate) fn verify_name(key: &ObjectKey, bytes: &[u8], whose: &str) -> Result<()> {
    if !content_addressed(key.kind()) {
        return Ok(());
    }
    let id: nfrepo_format::PackId = key.name().parse().map_err(|e| Error::decode(key.path(), e))?;
    check_content_id("object", id.as_bytes(), bytes).map_err(|source| Error::Corrupted {
        object: format!("{} on the {whose}", key.path()),
        source,
    })
}

async fn copy_one(pass: &Pass<'_>, info: &ObjectInfo, repair: bool) -> Result<Outcome> {
    let key = &info.key;
    let wanted = budget_permits(info.size.min(MEMORY_BUDGET));
    let _permit = pass
        .budget
        .acquire_many(u32::try_from(wanted).unwrap_or(u32::MAX))
        .await
        .map_err(|_| Error::Pipeline("the transfer budget was closed".into()))?;
    let bytes = match pass.source.get(key).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Outcome::Vanished),
        Err(e) if fatal(&e) => return Err(Error::store(e)),
        Err(e) => return Ok(problem(key.path(), Error::store(e))),
    };
    if let Err(e) = verify_name(key, &bytes, "source") {
        return Ok(problem(key.path(), e));
    }
    if repair && let Err(e) = pass.target.delete(key).await {
        return if fatal(&e) {
            Err(Error::store(e))
        } else {
            Ok(problem(key.path(), Error::store(e)))
        };
    }
    put(pass, key, bytes, repair).await
}

/// Writes verified `bytes` under `key` on the target, write-once.
async fn put(pass: &Pass<'_>, key: &ObjectKey, bytes: Bytes, repair: bool) -> Result<Outcome> {
    pass.count_put()?;
    let len = bytes.len() as u64;
    match pass.target.put(key, bytes.clone(), PutMode::CreateNew).await {
        Ok(()) if repair => Ok(Outcome::Repaired(len)),
        Ok(()) => Ok(Outcome::Copied(len)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => already_there(pass, key, bytes, repair).await,
        Err(e) if fatal(&e) => Err(Error::store(e)),
        Err(e) => Ok(problem(key.path(), Error::store(e))),
    }
}

/// The target already holds `key`: identical is success; a content-addressed
/// object whose bytes do not match its name is replaced (the one overwrite);
/// anything else is left alone and reported.
async fn already_there(pass: &Pass<'_>, key: &ObjectKey, bytes: Bytes, repair: bool) -> Result<Outcome> {
    let existing = match pass.target.get(key).await {
        Ok(existing) => existing,
        Err(e) if fatal(&e) => return Err(Error::store(e)),
        Err(e) => return Ok(problem(key.path(), Error::store(e))),
    };
    if existing == bytes {
        return Ok(Outcome::Present);
    }
    if !repair && content_addressed(key.kind()) && verify_name(key, &existing, "replica").is_err() {
        if let Err(e) = pass.target.delete(key).await {
            return Ok(problem(key.path(), Error::store(e)));
        }
        return Box::pin(put(pass, key, bytes, true)).await;
    }
    let class = if key.kind() == ObjectKind::Config {
        "config"
    } else {
        "write-once object"
    };
    Ok(problem(
        key.path(),
        Error::Invalid(format!(
            "the replica's {class} {} differs from the source's; left as it is",
            key.path()
        )),
    ))
}
