//! Copying: each object the target lacks, verified against its name, in commit order.

use std::collections::HashSet;
use std::sync::OnceLock;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use nfrepo_format::{ReplicaObject, RepoId, decode_config_header};
use nfrepo_store::{
    ByteStream, ErrorKind, ObjectInfo, ObjectKey, ObjectKind, PutMode, RetryPolicy, STREAM_PUT_BUFFER, Store,
};

use super::listing::{Behind, Entry, Listings};
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
async fn check_target(pass: &Pass<'_>, listings: &Listings<'_>) -> Result<()> {
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

/// What the copy phase leaves for the rest of the pass.
#[derive(Debug, Default)]
pub(crate) struct Copied {
    /// Objects copied (or repaired).
    pub(crate) objects: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// Objects on the replica that the source does not list, kind by kind in
    /// commit order (audit entries left out: the replica keeps them all).
    pub(crate) extra: Vec<ObjectInfo>,
    /// What the replica still lacks after the copy.
    pub(crate) behind: Behind,
}

/// What became of one entry of the comparison.
enum Step {
    /// On both, nothing to do.
    Present,
    /// On the replica only.
    Extra,
    /// A new object of a kind held back in this pass.
    HeldBack,
    /// Copied, or tried; `lacking` if the replica did not have it (rather than a damaged copy).
    Done { outcome: Outcome, lacking: bool },
}

/// Copies every object the target lacks (and re-copies those it holds
/// damaged: another size than the source's, or `damaged` by the last
/// verification), kind by kind in commit order, streaming the comparison
/// of the listings ([`Listings::diff`]).
///
/// # Errors
/// See [`super::replicate`]; a listing that fails midway stops the pass
/// (what was copied until then stays, valid).
pub(crate) async fn run(
    pass: &Pass<'_>,
    listings: &Listings<'_>,
    damaged: &[ReplicaObject],
    report: &mut ReplicateReport,
) -> Result<Copied> {
    check_target(pass, listings).await?;
    if let Some(work) = pass.work() {
        // The totals are not known before the listings have streamed by.
        work.phase("copying", 0, 0);
    }
    let mut copied = Copied::default();
    let mut incomplete = false;
    for kind in COPY_ORDER {
        let problems_before = report.problems.len();
        let hold_back = commits(kind) && incomplete;
        copy_kind(pass, listings, kind, damaged, hold_back, report, &mut copied).await?;
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
    Ok(copied)
}

/// Copies what the target lacks of `kind`, [`ReplicateOptions::jobs`](super::ReplicateOptions::jobs)
/// transfers at a time, as the comparison of the listings streams by. With
/// `hold_back`, new objects are not copied (reported as held back); repairs are.
async fn copy_kind(
    pass: &Pass<'_>,
    listings: &Listings<'_>,
    kind: ObjectKind,
    damaged: &[ReplicaObject],
    hold_back: bool,
    report: &mut ReplicateReport,
    copied: &mut Copied,
) -> Result<()> {
    let damaged: HashSet<&str> = damaged
        .iter()
        .filter(|d| d.kind == kind.prefix())
        .map(|d| d.name.as_str())
        .collect();
    let damaged = &damaged;
    let mut steps = listings
        .diff(kind)
        .map(|entry| async move {
            let (info, repair) = match entry? {
                Entry::Missing(info) => (info, false),
                Entry::WrongSize(info) => (info, true),
                Entry::Common(info) if damaged.contains(info.key.name()) => (info, true),
                // Key slots and `keys/public` are rewritten in place under
                // their names (`key rotate`, a new key epoch's public key),
                // often at the same size: each one on both sides is compared
                // by its bytes (they are few and small) and the source's wins.
                Entry::Common(info) if kind == ObjectKind::Key => (info, false),
                Entry::Common(info) => return Ok((info, Step::Present)),
                Entry::Extra(info) => return Ok((info, Step::Extra)),
            };
            if hold_back && !repair {
                return Ok((info, Step::HeldBack));
            }
            let lacking = !repair;
            let outcome = copy_one(pass, &info, repair).await?;
            Ok::<_, Error>((info, Step::Done { outcome, lacking }))
        })
        .buffer_unordered(pass.options.jobs.max(1));
    while let Some(step) = steps.next().await {
        let (info, step) = step?;
        let outcome = match step {
            Step::Present => {
                report.present += 1;
                continue;
            }
            Step::Extra => {
                if kind != ObjectKind::Audit {
                    copied.extra.push(info);
                }
                continue;
            }
            Step::HeldBack => {
                report.held_back.push(path(&info));
                copied.behind.add(&info);
                continue;
            }
            Step::Done { outcome, lacking } => {
                if lacking && matches!(outcome, Outcome::Problem(_)) {
                    copied.behind.add(&info);
                }
                outcome
            }
        };
        crate::work::advance(pass.work(), 1, info.size);
        match outcome {
            Outcome::Copied(n) => {
                let entry = report.copied.entry(kind.prefix()).or_default();
                *entry = (entry.0 + 1, entry.1 + n);
                copied.objects += 1;
                copied.bytes += n;
            }
            Outcome::Repaired(n) => {
                report.repaired.push(path(&info));
                copied.objects += 1;
                copied.bytes += n;
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

async fn copy_one(pass: &Pass<'_>, info: &ObjectInfo, repair: bool) -> Result<Outcome> {
    let key = &info.key;
    let wanted = budget_permits(transfer_bytes(info));
    let _permit = pass
        .budget
        .acquire_many(u32::try_from(wanted).unwrap_or(u32::MAX))
        .await
        .map_err(|_| Error::Pipeline("the transfer budget was closed".into()))?;
    if repair && key.kind() == ObjectKind::Audit {
        // The one kind never rewritten, not even by a repair (audit.md): a
        // differing entry on the replica is evidence, reported, kept.
        return Ok(problem(
            key.path(),
            Error::Invalid(format!(
                "the replica's audit entry {} differs from the source's; left as it is",
                key.path()
            )),
        ));
    }
    if repair && let Err(e) = pass.target.delete(key).await {
        return if fatal(&e) {
            Err(Error::store(e))
        } else {
            Ok(problem(key.path(), Error::store(e)))
        };
    }
    if content_addressed(key.kind()) {
        return stream_with_retries(pass, key, repair).await;
    }
    let bytes = match pass.source.get(key).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Outcome::Vanished),
        Err(e) if fatal(&e) => return Err(Error::store(e)),
        Err(e) => return Ok(problem(key.path(), Error::store(e))),
    };
    put(pass, key, bytes, repair).await
}

/// The bytes of the pass's budget one transfer of `info` holds: a
/// content-addressed object is streamed, so at most the store's streaming
/// buffer ([`STREAM_PUT_BUFFER`]) of it is in memory; other kinds (key
/// slots, the config, markers: small) are read whole.
pub(crate) fn transfer_bytes(info: &ObjectInfo) -> u64 {
    if content_addressed(info.key.kind()) {
        info.size.min(STREAM_PUT_BUFFER)
    } else {
        info.size.min(MEMORY_BUDGET)
    }
}

/// [`stream_one`], retried with the store layer's backoff while it fails
/// with a retryable error (a streamed transfer cannot be retried inside
/// the store, which has consumed its body).
async fn stream_with_retries(pass: &Pass<'_>, key: &ObjectKey, repair: bool) -> Result<Outcome> {
    let policy = RetryPolicy::default();
    let mut retry = 0;
    loop {
        match stream_one(pass, key, repair).await {
            Err(Transfer::Retryable(e)) if retry + 1 < policy.attempts => {
                tracing::debug!(object = %key.path(), error = %e, retry = retry + 1, "retrying a streamed copy");
                tokio::time::sleep(policy.delay(retry)).await;
                retry += 1;
            }
            Err(Transfer::Retryable(e)) => return Ok(problem(key.path(), Error::store(e))),
            Err(Transfer::Fatal(e)) => return Err(e),
            Ok(outcome) => return Ok(outcome),
        }
    }
}

/// Why a streamed transfer did not come to an [`Outcome`].
enum Transfer {
    /// Worth another attempt (the store said so).
    Retryable(nfrepo_store::Error),
    /// Stops the pass.
    Fatal(Error),
}

/// Streams a content-addressed object from the source to the target,
/// hashing it as it passes: the target's upload is committed only if the
/// bytes match the name, and aborted otherwise, so a mismatching object is
/// never visible on the target (see [`nfrepo_store::Store::put_stream`]).
async fn stream_one(pass: &Pass<'_>, key: &ObjectKey, repair: bool) -> std::result::Result<Outcome, Transfer> {
    let body = match pass.source.get_stream(key).await {
        Ok(body) => body,
        Err(e) => return store_failure(key, e),
    };
    let refused = OnceLock::new();
    pass.count_put().map_err(Transfer::Fatal)?;
    let put = pass
        .target
        .put_stream(key, verified(body, key, "source", &refused), PutMode::CreateNew)
        .await;
    if let Some(mismatch) = refused.into_inner() {
        return Ok(problem(key.path(), mismatch));
    }
    match put {
        Ok(n) if repair => Ok(Outcome::Repaired(n)),
        Ok(n) => Ok(Outcome::Copied(n)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Box::pin(already_there_streamed(pass, key, repair)).await,
        Err(e) => store_failure(key, e),
    }
}

fn store_failure(key: &ObjectKey, e: nfrepo_store::Error) -> std::result::Result<Outcome, Transfer> {
    match e.kind() {
        ErrorKind::NotFound => Ok(Outcome::Vanished),
        _ if fatal(&e) => Err(Transfer::Fatal(Error::store(e))),
        _ if e.is_retryable() => Err(Transfer::Retryable(e)),
        _ => Ok(problem(key.path(), Error::store(e))),
    }
}

/// The target already holds the content-addressed `key`: if its bytes match
/// the name it is the same object (success); otherwise it is damaged and
/// replaced, once.
async fn already_there_streamed(
    pass: &Pass<'_>,
    key: &ObjectKey,
    repair: bool,
) -> std::result::Result<Outcome, Transfer> {
    let existing = match pass.target.get_stream(key).await {
        Ok(existing) => existing,
        Err(e) => return store_failure(key, e),
    };
    match check_stream(key, existing, "replica").await {
        Ok(Ok(())) => Ok(Outcome::Present),
        Ok(Err(_damaged)) if !repair => {
            if let Err(e) = pass.target.delete(key).await {
                return Ok(problem(key.path(), Error::store(e)));
            }
            Box::pin(stream_one(pass, key, true)).await
        }
        Ok(Err(damaged)) => Ok(problem(key.path(), damaged)),
        Err(e) => store_failure(key, e),
    }
}

/// `body`, hashed as it passes; after its last chunk, an error instead of
/// the end if the bytes do not match the name of `key` (the mismatch itself
/// is left in `refused`). The target's `put_stream` then aborts the upload.
pub(crate) fn verified<'a>(
    body: ByteStream<'a>,
    key: &'a ObjectKey,
    whose: &'static str,
    refused: &'a OnceLock<Error>,
) -> ByteStream<'a> {
    stream::unfold(Some((body, blake3::Hasher::new())), move |state| async move {
        let (mut body, mut hasher) = state?;
        match body.next().await {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                Some((Ok(chunk), Some((body, hasher))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => match name_matches(key, hasher.finalize(), whose) {
                Ok(()) => None,
                Err(mismatch) => {
                    let message = mismatch.to_string();
                    let _ = refused.set(mismatch);
                    Some((
                        Err(nfrepo_store::Error::new(ErrorKind::Corrupted, message).with_key(key)),
                        None,
                    ))
                }
            },
        }
    })
    .boxed()
}

/// Reads `body` to its end, hashing it: `Ok(Err(mismatch))` if the bytes do
/// not match the name of `key`; `Err` if reading failed.
pub(crate) async fn check_stream(
    key: &ObjectKey,
    mut body: ByteStream<'_>,
    whose: &str,
) -> std::result::Result<Result<()>, nfrepo_store::Error> {
    let mut hasher = blake3::Hasher::new();
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk?);
    }
    Ok(name_matches(key, hasher.finalize(), whose))
}

/// Checks a content hash against the name of a content-addressed object.
fn name_matches(key: &ObjectKey, hash: blake3::Hash, whose: &str) -> Result<()> {
    let id: nfrepo_format::PackId = key.name().parse().map_err(|e| Error::decode(key.path(), e))?;
    if hash.as_bytes() == id.as_bytes() {
        return Ok(());
    }
    Err(Error::Corrupted {
        object: format!("{} on the {whose}", key.path()),
        source: nfrepo_format::Error::HashMismatch {
            what: "object",
            expected: hex_of(id.as_bytes()),
            actual: hash.to_hex().to_string(),
        },
    })
}

fn hex_of(bytes: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*bytes).to_hex().to_string()
}

/// Writes `bytes` (of an object that is not content-addressed) under `key` on the target, write-once.
async fn put(pass: &Pass<'_>, key: &ObjectKey, bytes: Bytes, repair: bool) -> Result<Outcome> {
    pass.count_put()?;
    let len = bytes.len() as u64;
    match pass.target.put(key, bytes.clone(), PutMode::CreateNew).await {
        Ok(()) if repair => Ok(Outcome::Repaired(len)),
        Ok(()) => Ok(Outcome::Copied(len)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => already_there(pass, key, bytes).await,
        Err(e) if fatal(&e) => Err(Error::store(e)),
        Err(e) => Ok(problem(key.path(), Error::store(e))),
    }
}

/// The target already holds the (not content-addressed) `key`: identical is
/// success; anything else is left alone and reported.
async fn already_there(pass: &Pass<'_>, key: &ObjectKey, bytes: Bytes) -> Result<Outcome> {
    let existing = match pass.target.get(key).await {
        Ok(existing) => existing,
        Err(e) if fatal(&e) => return Err(Error::store(e)),
        Err(e) => return Ok(problem(key.path(), Error::store(e))),
    };
    if existing == bytes {
        return Ok(Outcome::Present);
    }
    if key.kind() == ObjectKind::Key {
        // Rewritten on the source (keys.md): the replica follows.
        return match pass.target.put(key, bytes.clone(), PutMode::Overwrite).await {
            Ok(()) => Ok(Outcome::Repaired(bytes.len() as u64)),
            Err(e) if fatal(&e) => Err(Error::store(e)),
            Err(e) => Ok(problem(key.path(), Error::store(e))),
        };
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
