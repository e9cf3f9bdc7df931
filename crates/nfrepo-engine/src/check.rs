//! `check`: proving that every snapshot can be restored, and naming what can't.
//!
//! A check runs in up to four passes, each cheaper than the next:
//!
//! 1. **Load** ([`load`]): every snapshot and index delta is fetched and
//!    opened on its own, so one damaged object is a finding, not the end of
//!    the check; every indexed pack is compared with the storage listing
//!    (present, and of the size the index records).
//! 2. **Walk** ([`walk`]): the trees and content lists of the selected
//!    snapshots are read breadth-first with many range reads in flight,
//!    each subtree once however many snapshots share it. Opening a blob
//!    authenticates it and re-hashes its plaintext against its id, so every
//!    tree and list read is a Merkle step; every referenced blob must be
//!    indexed with the right kind in a pack that is present. With `merkle`
//!    the byte counts are proven too: chunk lengths against the index, list
//!    lengths and levels against their parents, file sizes against their
//!    content. Data packs are never read here.
//! 3. **Read data** ([`data`], optional): whole packs are downloaded, their
//!    BLAKE3 name checked, and every blob opened, decompressed and re-hashed.
//!    Which packs are read is recorded in the local [`Cache`], so successive
//!    partial runs cover every pack before any is read twice.
//! 4. **Attribute** ([`attribute`], only when something is damaged): the
//!    selected snapshots are walked again to name every file and directory
//!    that the damage reaches.
//!
//! A check writes nothing to the repository.
//!
//! **Memory is flat in the size of the repository** (issue 14). The load pass
//! streams the deltas, four in flight, into an index of 49-byte blob records
//! that keeps 8 MiB in memory and spills the rest to sorted runs in a private
//! directory under the local cache directory (else the system's temporary
//! directory), merged into one file of which only every 64th id prefix stays in
//! memory (`crate::runs`; 1.2 MB at 10 M blobs, 490 MB on disk, twice that
//! while merging). It is built from the repository's deltas, never from the
//! local cache. Per pack only a summary is kept (id, kind, size, blob count,
//! the delta that lists it), no blob list: the read-data pass takes a pack's
//! entries from its own trailer, checked against the index, and reads the delta
//! again only when they disagree. What grows is per pack (summaries, the
//! listing, the packs referenced) and per tree and list blob (the walk's
//! seen-set), not per data blob. Measured with `scripts/bench-scale.sh`: see
//! README, "Memory against the size of the repository".

mod attribute;
mod data;
pub(crate) mod load;
mod walk;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use nfrepo_format::{BlobId, PackId, SnapshotId};
use nfrepo_store::Cache;

use crate::{Error, ErrorCode, Repository, Result};

/// Which packs `--read-data-subset` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ReadDataSubset {
    /// Every pack.
    All,
    /// Part `n` (1-based) of `of` equal parts, by pack id: running 1/t to t/t covers everything.
    Part {
        /// Which part.
        n: u32,
        /// How many parts.
        of: u32,
    },
    /// This share of the packs, in percent (0 < p ≤ 100), least recently verified first.
    Percent(f64),
    /// Packs adding up to at least this many bytes, least recently verified first.
    Bytes(u64),
}

impl ReadDataSubset {
    /// Parses `n/t`, `x%` or a size such as `500M`, `2G`, `1024` (bytes).
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] describing the accepted forms.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            crate::Error::Invalid(format!(
                "bad --read-data-subset {text:?}: use n/t (e.g. 2/5), x% (e.g. 10%) or a size (e.g. 500M, 2G)"
            ))
        };
        let text = text.trim();
        if let Some((n, of)) = text.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            let of: u32 = of.trim().parse().map_err(|_| bad())?;
            if n == 0 || of == 0 || n > of {
                return Err(bad());
            }
            return Ok(Self::Part { n, of });
        }
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Self::Percent(p));
        }
        let upper = text.to_ascii_uppercase();
        let upper = upper
            .strip_suffix("IB")
            .or_else(|| upper.strip_suffix('B'))
            .unwrap_or(&upper);
        let (digits, shift) = match upper.chars().last() {
            Some('K') => (&upper[..upper.len() - 1], 10),
            Some('M') => (&upper[..upper.len() - 1], 20),
            Some('G') => (&upper[..upper.len() - 1], 30),
            Some('T') => (&upper[..upper.len() - 1], 40),
            _ => (upper, 0),
        };
        let n: u64 = digits.trim().parse().map_err(|_| bad())?;
        let bytes = n
            .checked_shl(shift)
            .filter(|b| *b >> shift == n && *b > 0)
            .ok_or_else(bad)?;
        Ok(Self::Bytes(bytes))
    }
}

/// Options for [`Repository::check`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Also prove byte counts: chunk, list and file lengths (see the module docs).
    pub merkle: bool,
    /// Read data packs: `None` reads none.
    pub read_data: Option<ReadDataSubset>,
    /// Only these snapshots (specs as for `find_snapshot`); every snapshot if empty.
    /// Damage to packs they do not use is then left out of the report
    /// (damaged index deltas and snapshot objects are always reported).
    pub snapshots: Vec<String>,
    /// With `read_data`, skip packs verified cleanly less than this many seconds ago.
    pub max_age_secs: Option<u64>,
    /// Where verification progress is recorded; without one every run starts afresh.
    pub cache: Option<Arc<Cache>>,
    /// Progress counters (the read-data pass counts packs and bytes).
    pub work: Option<Arc<crate::Work>>,
    /// This host's audit writer: its last head is checked too (audit.md).
    pub audit_writer: Option<crate::AuditWriter>,
}

/// One problem: what is damaged, where, and what it reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The stable code: `BACKUP_CORRUPTED` (bytes damaged), `BACKUP_NOT_FOUND`
    /// (an object is missing) or `SNAPSHOT_INVALID` (a snapshot refers to
    /// something the repository does not hold, or does not add up).
    pub code: ErrorCode,
    /// The stored object concerned, as a path (`data/ab/<pack>`, `index/<id>`, `snapshots/<id>`).
    pub object: String,
    /// The pack, when the damage is in one.
    pub pack: Option<PackId>,
    /// The blobs that cannot be read because of it (referenced ones, or all failing ones with read-data).
    pub blobs: Vec<BlobId>,
    /// What is wrong, one line.
    pub message: String,
    /// The snapshots and paths the damage reaches (filled by attribution).
    pub affected: Vec<Affected>,
}

/// A file or directory of a snapshot that a finding reaches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Affected {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// The path in it (`/` for the root).
    pub path: String,
}

/// What a check did and found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Snapshots walked.
    pub snapshots: Vec<SnapshotId>,
    /// The Merkle root (root tree id) of each walked snapshot that proved sound.
    pub roots: Vec<(SnapshotId, BlobId)>,
    /// Distinct trees read.
    pub trees: u64,
    /// Distinct content lists read.
    pub lists: u64,
    /// Data blob references checked (a chunk shared by files counts once per distinct list or tree).
    pub data_refs: u64,
    /// Packs the index names.
    pub packs_indexed: u64,
    /// Packs downloaded and verified.
    pub packs_read: u64,
    /// Bytes downloaded by the read-data pass.
    pub bytes_read: u64,
    /// Packs the read-data selection skipped because they were verified recently (`max_age_secs`).
    pub packs_fresh: u64,
    /// Packs present in storage but in no index and in no GC plan (left by an interrupted
    /// backup; the next backup adopts them, and `repair index` indexes them).
    pub stray_packs: Vec<PackId>,
    /// Packs present in storage but in no index that a GC plan names: planned for deletion
    /// by a GC that was interrupted (or is running) after rewriting the index. Re-running
    /// `nfrepo gc` deletes them; `repair index` must not index them (issue 17: a GC deleting
    /// them afterwards leaves the index naming packs that are gone).
    pub planned_packs: Vec<PackId>,
    /// Protect markers whose snapshot does not exist (format-spec/protect.md): a warning, not
    /// a finding; `nfrepo unprotect ID` removes each.
    pub orphaned_protect_markers: Vec<SnapshotId>,
    /// Snapshots with a tombstone (format-spec/protect.md): a `forget` runs now, or one was
    /// killed and the next `forget` or `gc` settles it (putting the snapshot back if it is
    /// protected). A warning, not a finding; their protect markers are not called orphaned.
    pub unsettled_forgets: Vec<SnapshotId>,
    /// Blobs stored in more than one pack (harmless; a later compaction drops the extra copies).
    pub duplicate_blobs: u64,
    /// The problems.
    pub findings: Vec<Finding>,
    /// Audit log entries that verified.
    pub audit_entries: u64,
    /// Audit log writers (chains).
    pub audit_writers: usize,
}

impl CheckReport {
    /// The code the check as a whole fails with, if any: corruption outranks
    /// missing objects, which outrank invalid snapshots.
    #[must_use]
    pub fn failure_code(&self) -> Option<ErrorCode> {
        let has = |code| self.findings.iter().any(|f| f.code == code);
        [
            ErrorCode::BackupCorrupted,
            ErrorCode::BackupNotFound,
            ErrorCode::SnapshotInvalid,
        ]
        .into_iter()
        .find(|code| has(*code))
    }

    /// Snapshots any finding reaches.
    #[must_use]
    pub fn damaged_snapshots(&self) -> BTreeSet<SnapshotId> {
        self.findings
            .iter()
            .flat_map(|f| f.affected.iter().map(|a| a.snapshot))
            .collect()
    }
}

/// Collects findings, merging those about the same object.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    list: Vec<Finding>,
    by_object: HashMap<String, usize>,
    /// (finding, blob) pairs already recorded: a lost pack can name millions of blobs.
    blobs: HashSet<(usize, BlobId)>,
}

impl Findings {
    /// Adds a finding about `object`, or adds `blob` to the existing one.
    pub(crate) fn add(
        &mut self,
        code: ErrorCode,
        object: String,
        pack: Option<PackId>,
        blob: Option<BlobId>,
        message: String,
    ) {
        let i = *self.by_object.entry(object.clone()).or_insert_with(|| {
            self.list.push(Finding {
                code,
                object,
                pack,
                blobs: Vec::new(),
                message,
                affected: Vec::new(),
            });
            self.list.len() - 1
        });
        if let (Some(blob), Some(finding)) = (blob, self.list.get_mut(i))
            && self.blobs.insert((i, blob))
        {
            finding.blobs.push(blob);
        }
    }

    /// Every blob named by a finding, with the finding's position.
    pub(crate) fn damaged_blobs(&self) -> HashMap<BlobId, usize> {
        let mut out = HashMap::new();
        for (i, f) in self.list.iter().enumerate() {
            for b in &f.blobs {
                out.entry(*b).or_insert(i);
            }
        }
        out
    }

    /// Keeps only the findings `keep` accepts.
    pub(crate) fn retain(&mut self, keep: impl Fn(&Finding) -> bool) {
        let old = std::mem::take(&mut self.list);
        self.by_object.clear();
        self.blobs.clear();
        for finding in old.into_iter().filter(|f| keep(f)) {
            let i = self.list.len();
            self.by_object.insert(finding.object.clone(), i);
            self.blobs.extend(finding.blobs.iter().map(|b| (i, *b)));
            self.list.push(finding);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<Finding> {
        self.list
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Finding> {
        self.list.get_mut(i)
    }
}

/// An error and its causes on one line, each cause once.
pub(crate) fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

impl Repository {
    /// Checks the repository (see the module docs). Problems are findings in
    /// the report, never errors: only a failure to run the check at all
    /// (storage unreachable, the cache unusable) is an `Err`.
    ///
    /// # Errors
    /// Storage errors other than missing or damaged objects; an unknown `--snapshot`.
    pub async fn check(&self, options: &CheckOptions) -> Result<CheckReport> {
        self.require_keys("check")?;
        let mut findings = Findings::default();
        let unsettled_forgets = self.unsettled_forgets().await?;
        // Markers before snapshots: see `orphaned_protect_markers`.
        let mut orphaned_protect_markers = self.orphaned_protect_markers().await?;
        orphaned_protect_markers.retain(|id| unsettled_forgets.binary_search(id).is_err());
        let planned = planned_packs(self, &mut findings).await?;
        let loaded = load::load(self, &mut findings).await?;
        let selected = loaded.select(&options.snapshots)?;
        let reader = crate::Reader::new(self.clone(), loaded.index.clone());
        let walked = walk::walk(
            &reader,
            &loaded,
            options.merkle,
            &selected,
            &mut findings,
            options.work.as_deref(),
        )
        .await?;
        if !options.snapshots.is_empty() {
            // Damage to packs the selected snapshots do not use is not theirs.
            findings.retain(|f| f.pack.is_none_or(|p| walked.packs_referenced.contains(&p)) || !f.blobs.is_empty());
        }

        let mut report = CheckReport {
            snapshots: selected.iter().map(|e| e.id).collect(),
            trees: walked.trees,
            lists: walked.lists,
            data_refs: walked.data_refs,
            packs_indexed: loaded.packs.len() as u64,
            stray_packs: loaded.stray.iter().filter(|p| !planned.contains(p)).copied().collect(),
            planned_packs: loaded.stray.iter().filter(|p| planned.contains(p)).copied().collect(),
            orphaned_protect_markers,
            unsettled_forgets,
            duplicate_blobs: loaded.duplicate_blobs,
            ..CheckReport::default()
        };
        if let Some(subset) = options.read_data {
            // With a snapshot filter, read only the packs those snapshots use.
            let scope: Option<&HashSet<PackId>> = (!options.snapshots.is_empty()).then_some(&walked.packs_referenced);
            let read = data::read_data(self, &loaded, scope, subset, options, &mut findings).await?;
            report.packs_read = read.packs;
            report.bytes_read = read.bytes;
            report.packs_fresh = read.fresh;
        }
        if !findings.is_empty() {
            attribute::attribute(&reader, &selected, &loaded, &mut findings).await?;
        }
        if let Some(failure) = loaded.index.cache_failure() {
            // A lookup that failed on local disk may have made a false finding.
            return Err(Error::Pipeline(format!(
                "check's index on local disk failed: {failure}"
            )));
        }
        report.findings = findings.into_vec();
        let audit = crate::audit::read_audit(self, options.audit_writer.as_ref()).await?;
        report.audit_entries = audit.entries.len() as u64;
        report.audit_writers = audit.writers;
        report.findings.extend(audit_findings(&audit));
        let damaged = report.damaged_snapshots();
        report.roots = selected
            .iter()
            .filter(|e| !damaged.contains(&e.id))
            .map(|e| (e.id, e.snapshot.root))
            .collect();
        Ok(report)
    }
}

/// The packs every GC plan that opens names; a plan that does not open is a
/// finding (it stops every backup until it is removed or repaired).
async fn planned_packs(repo: &Repository, findings: &mut Findings) -> Result<HashSet<PackId>> {
    let loaded = crate::objects::load_all::<nfrepo_format::GcPlan>(repo).await?;
    for damaged in &loaded.damaged {
        findings.add(
            load::object_problem(&damaged.error).unwrap_or(ErrorCode::BackupCorrupted),
            damaged.key.path(),
            None,
            None,
            format!("gc plan does not open: {}", one_line(&damaged.error)),
        );
    }
    Ok(loaded
        .good
        .iter()
        .flat_map(|p| p.object.packs.iter().map(|pack| pack.id))
        .collect())
}

/// The audit log's problems as check findings (`BACKUP_CORRUPTED`), first bad entry first.
fn audit_findings(audit: &crate::AuditReport) -> impl Iterator<Item = Finding> + '_ {
    let public = audit.public_key_problem.iter().map(|message| Finding {
        code: ErrorCode::BackupCorrupted,
        object: format!("keys/{}", crate::PUBLIC_KEY_OBJECT),
        pack: None,
        blobs: Vec::new(),
        message: message.clone(),
        affected: Vec::new(),
    });
    audit
        .problems
        .iter()
        .map(|p| Finding {
            code: ErrorCode::BackupCorrupted,
            object: p.object.clone(),
            pack: None,
            blobs: Vec::new(),
            message: format!("audit entry {}: {}", p.kind.as_str(), p.detail),
            affected: Vec::new(),
        })
        .chain(public)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn subsets_parse() {
        assert_eq!(
            ReadDataSubset::parse("2/5").unwrap(),
            ReadDataSubset::Part { n: 2, of: 5 }
        );
        assert_eq!(ReadDataSubset::parse("10%").unwrap(), ReadDataSubset::Percent(10.0));
        assert_eq!(ReadDataSubset::parse("500M").unwrap(), ReadDataSubset::Bytes(500 << 20));
        assert_eq!(ReadDataSubset::parse("2GiB").unwrap(), ReadDataSubset::Bytes(2 << 30));
        assert_eq!(ReadDataSubset::parse("1024").unwrap(), ReadDataSubset::Bytes(1024));
        for bad in ["0/3", "4/3", "0%", "101%", "x", "", "-1", "99999999999T"] {
            assert!(ReadDataSubset::parse(bad).is_err(), "{bad}");
        }
    }
}
