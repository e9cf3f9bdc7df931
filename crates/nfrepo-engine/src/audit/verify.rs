//! Reading every entry of `audit/` and checking every chain.
//!
//! A storage-level attacker (no key) can delete, alter, reorder, copy or
//! add objects. Each entry is checked on its own (layout, name against
//! header, MAC, body), against its neighbours (its `prev` must be the hash
//! of the entry before it; an authenticated successor vouches for its
//! predecessor), and against every head a checkpoint recorded (and this
//! host's own last head): a chain shorter than a recorded head lost its tail.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt, stream};
use nfrepo_format::{AuditAccess, AuditAuth, AuditRecord, ParsedAuditEntry, WriterId, parse_audit_entry_name};
use nfrepo_store::{ErrorKind, ObjectKind};

use super::writer::Head;
use crate::{Error, Repository, Result};

/// Entries fetched at once.
const FETCH_JOBS: usize = 16;

/// What is wrong with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AuditProblemKind {
    /// The entry should exist (a later entry or a checkpoint needs it) and does not.
    Missing,
    /// The entry exists but its bytes are not those that were written.
    Altered,
    /// The entry is stored under another entry's name.
    Reordered,
    /// No key holder wrote this entry (it fails authentication and nothing
    /// vouches for an entry at its place, or it claims what a writer without
    /// a key cannot do).
    Forged,
}

impl AuditProblemKind {
    /// Lowercase name for output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Altered => "altered",
            Self::Reordered => "reordered",
            Self::Forged => "forged",
        }
    }
}

/// One bad entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditProblem {
    /// The entry's object path (`audit/<writer>-<seq>`).
    pub object: String,
    /// Its writer and sequence number; `None` for an object under `audit/`
    /// whose name is no entry name.
    pub entry: Option<(WriterId, u64)>,
    /// What is wrong.
    pub kind: AuditProblemKind,
    /// Why, one line.
    pub detail: String,
}

/// One entry that opened.
#[derive(Clone, Debug)]
pub struct AuditLogEntry {
    /// Its writer.
    pub writer: WriterId,
    /// Its sequence number.
    pub seq: u64,
    /// Whether a key holder wrote it (it carries a valid MAC).
    pub authenticated: bool,
    /// Its body.
    pub record: AuditRecord,
}

/// Every entry that opened and every problem found, in (writer, seq) order.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct AuditReport {
    /// The entries that opened, oldest first by time.
    pub entries: Vec<AuditLogEntry>,
    /// The writers (chains) seen, in entries or checkpoints.
    pub writers: usize,
    /// Objects under `audit/`.
    pub objects: u64,
    /// Entries without a MAC (written by a writer holding no key).
    pub unauthenticated: u64,
    /// Checkpoint entries among the authenticated ones.
    pub checkpoints: u64,
    /// Authenticated entries of key epochs a reseal retired: their MAC
    /// verifies under the retired audit key, their body opens no more.
    pub retired: u64,
    /// Problems, first bad entry first.
    pub problems: Vec<AuditProblem>,
    /// A problem with `keys/public`, if any.
    pub public_key_problem: Option<String>,
}

struct Checked {
    hash: Option<[u8; 32]>,
    prev: Option<[u8; 32]>,
    authenticated: bool,
    problem: Option<(AuditProblemKind, String)>,
    record: Option<AuditRecord>,
}

/// Reads and checks the whole log; `local` is this host's last known head.
pub(crate) async fn read_and_verify(repo: &Repository, local: Option<(WriterId, Head)>) -> Result<AuditReport> {
    let store = repo.store().clone();
    let listed = store.list(ObjectKind::Audit).await.map_err(Error::store)?;
    let mut report = AuditReport {
        objects: listed.len() as u64,
        ..AuditReport::default()
    };
    let mut stray = Vec::new();
    let mut named = Vec::new();
    for info in listed {
        match parse_audit_entry_name(info.key.name()) {
            Some(entry) => named.push((entry, info.key)),
            None => stray.push(info.key.path()),
        }
    }
    let epochs = repo.audit_keys();
    let epochs = epochs.as_slice();
    let checked: Vec<((WriterId, u64), Checked)> = stream::iter(named)
        .map(|(entry, key)| {
            let store = store.clone();
            async move {
                match store.get(&key).await {
                    Ok(bytes) => Ok(Some((entry, check_one(repo, epochs, entry, &bytes)))),
                    // Deleted between the listing and the read: as if never listed.
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::store(e)),
                }
            }
        })
        .buffer_unordered(FETCH_JOBS)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;
    let chains: BTreeMap<(WriterId, u64), Checked> = checked.into_iter().collect();
    let mut problems: BTreeMap<(WriterId, u64), AuditProblem> = BTreeMap::new();
    let mut flag = |writer: WriterId, seq: u64, kind, detail: String| {
        problems.entry((writer, seq)).or_insert_with(|| AuditProblem {
            object: format!("audit/{}", nfrepo_format::audit_entry_name(&writer, seq)),
            entry: Some((writer, seq)),
            kind,
            detail,
        });
    };
    // The longest head recorded for each writer (checkpoints, this host).
    let mut recorded: BTreeMap<WriterId, (u64, [u8; 32], String)> = BTreeMap::new();
    for ((writer, seq), c) in &chains {
        let Some(record) = c.record.as_ref().filter(|_| c.authenticated && c.problem.is_none()) else {
            continue;
        };
        if !record.heads.is_empty() {
            report.checkpoints += 1;
        }
        for head in &record.heads {
            let by = format!("the checkpoint {}", nfrepo_format::audit_entry_name(writer, *seq));
            let slot = recorded.entry(head.writer).or_insert((head.seq, head.hash, by.clone()));
            if head.seq > slot.0 {
                *slot = (head.seq, head.hash, by);
            }
        }
    }
    if let Some((writer, head)) = local {
        let slot = recorded
            .entry(writer)
            .or_insert((head.seq, head.hash, "this host's audit state".into()));
        if head.seq > slot.0 {
            *slot = (head.seq, head.hash, "this host's audit state".into());
        }
    }
    // Entries on their own, and each link.
    for (&(writer, seq), c) in &chains {
        if !c.authenticated && c.problem.is_none() {
            report.unauthenticated += 1;
        }
        if c.authenticated && c.record.is_none() && c.problem.is_none() {
            report.retired += 1;
        }
        let vouched = chains.range((writer, seq + 1)..=(writer, u64::MAX)).next().is_some()
            || recorded.get(&writer).is_some_and(|r| r.0 >= seq);
        if let Some((kind, detail)) = &c.problem {
            let kind = match kind {
                AuditProblemKind::Forged if vouched => AuditProblemKind::Altered,
                other => *other,
            };
            flag(writer, seq, kind, detail.clone());
            continue;
        }
        if seq > 0 {
            match chains.get(&(writer, seq - 1)) {
                None => flag(
                    writer,
                    seq - 1,
                    AuditProblemKind::Missing,
                    format!("entry {seq} follows it"),
                ),
                Some(before) if before.hash.is_some() && before.hash != c.prev => {
                    // An authenticated entry vouches for its predecessor's bytes.
                    let (at, why) = if c.authenticated {
                        (seq - 1, format!("entry {seq} names other bytes as its predecessor"))
                    } else {
                        (seq, "it names other bytes as its predecessor".to_owned())
                    };
                    flag(writer, at, AuditProblemKind::Altered, why);
                }
                Some(_) => {}
            }
        } else if c.prev != Some([0; 32]) {
            flag(
                writer,
                0,
                AuditProblemKind::Altered,
                "the first entry names a predecessor".into(),
            );
        }
    }
    // Gaps, and tails cut after a recorded head.
    let mut writers: BTreeMap<WriterId, u64> = BTreeMap::new();
    for &(writer, seq) in chains.keys() {
        let last = writers.entry(writer).or_insert(seq);
        *last = (*last).max(seq);
    }
    for (&writer, &last) in &writers {
        for seq in 0..last {
            if !chains.contains_key(&(writer, seq)) {
                flag(
                    writer,
                    seq,
                    AuditProblemKind::Missing,
                    format!("entry {last} of its writer exists"),
                );
                break;
            }
        }
    }
    for (&writer, (seq, hash, by)) in &recorded {
        let stored = writers.get(&writer).copied();
        if stored.is_none_or(|last| last < *seq) {
            let first = stored.map_or(0, |last| last + 1);
            flag(
                writer,
                first,
                AuditProblemKind::Missing,
                format!("{by} recorded this writer's head at entry {seq}: the tail was deleted"),
            );
        } else if let Some(c) = chains.get(&(writer, *seq))
            && c.hash.is_some()
            && c.hash != Some(*hash)
        {
            flag(
                writer,
                *seq,
                AuditProblemKind::Altered,
                format!("{by} recorded other bytes for it"),
            );
        }
    }
    report.writers = writers
        .keys()
        .chain(recorded.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    report.problems = problems.into_values().collect();
    report.problems.extend(stray.into_iter().map(|object| AuditProblem {
        object,
        entry: None,
        kind: AuditProblemKind::Forged,
        detail: "not an audit entry name".into(),
    }));
    report.entries = chains
        .into_iter()
        .filter(|(_, c)| c.problem.is_none())
        .filter_map(|((writer, seq), c)| {
            c.record.map(|record| AuditLogEntry {
                writer,
                seq,
                authenticated: c.authenticated,
                record,
            })
        })
        .collect();
    report.entries.sort_by_key(|e| (e.record.time_ns, e.writer, e.seq));
    report.public_key_problem = super::check_public_key(repo, report.objects > 0).await?;
    Ok(report)
}

/// Checks one entry; `epochs` are the key pairs and audit keys of the
/// live key epochs, current first: an entry written before a key rotation
/// opens under the epoch it was written in.
fn check_one(
    repo: &Repository,
    epochs: &[(&nfrepo_format::RepoKeyPair, &nfrepo_format::SecretKey)],
    (writer, seq): (WriterId, u64),
    bytes: &[u8],
) -> Checked {
    let mut checked = Checked {
        hash: None,
        prev: None,
        authenticated: false,
        problem: None,
        record: None,
    };
    let parsed = match ParsedAuditEntry::parse(bytes) {
        Ok(parsed) => parsed,
        Err(e) => {
            checked.problem = Some((AuditProblemKind::Forged, e.to_string()));
            return checked;
        }
    };
    checked.hash = Some(parsed.hash());
    checked.prev = Some(parsed.header.prev);
    if (parsed.header.writer, parsed.header.seq) != (writer, seq) {
        checked.problem = Some((
            AuditProblemKind::Reordered,
            format!(
                "it holds entry {} of writer {}",
                parsed.header.seq,
                parsed.header.writer.short()
            ),
        ));
        return checked;
    }
    let mut opened = Err(None);
    for (pair, audit_key) in epochs {
        match parsed.open(&repo.id(), repo.cipher(), pair, audit_key) {
            Ok(record) => {
                opened = Ok(record);
                break;
            }
            // Reported as the current epoch saw it.
            Err(e) if matches!(opened, Err(None)) => opened = Err(Some(e)),
            Err(_) => {}
        }
    }
    let opened = opened.map_err(|e| e.map_or_else(|| "no key epoch to open it with".to_owned(), |e| e.to_string()));
    match opened {
        Ok(record) => {
            checked.authenticated = parsed.header.auth == AuditAuth::Mac;
            if !checked.authenticated && matches!(record.access, AuditAccess::KeySlot(_)) {
                checked.problem = Some((
                    AuditProblemKind::Forged,
                    "it has no MAC yet claims a key slot was used".into(),
                ));
            }
            checked.record = Some(record);
        }
        Err(e) => {
            let retired = &repo.keys().retired_audit_keys;
            if parsed.header.auth == AuditAuth::Mac
                && retired
                    .iter()
                    .any(|(_, key)| parsed.verify_mac(&repo.id(), key).is_ok())
            {
                // Written under a key epoch a reseal retired: its MAC still
                // verifies, its body opens under no key any more.
                checked.authenticated = true;
            } else if parsed.header.auth == AuditAuth::None && !retired.is_empty() {
                // Written without a key to a public key that may be a retired
                // epoch's: a claim nobody can read, counted as unauthenticated.
                tracing::debug!(writer = %writer.short(), seq, "an unauthenticated audit entry opens under no live key epoch");
            } else {
                checked.problem = Some((AuditProblemKind::Forged, e));
            }
        }
    }
    checked
}
