//! Snapshot headers for tests that need a listing, not content
//! (feature `format`): retention, catalogs, layouts.

use nfrepo_format::{BlobId, Snapshot, Summary};

/// A snapshot of `source` (kind `kind`) taken at `time_ns`, with an empty
/// root and no facts or tags: set `extra` and `tags` as the test needs.
#[must_use]
pub fn snapshot(source: &str, kind: &str, time_ns: i64) -> Snapshot {
    Snapshot {
        time_ns,
        source: source.into(),
        source_kind: kind.into(),
        hostname: "h".into(),
        username: "u".into(),
        paths: Vec::new(),
        tags: Vec::new(),
        profile: "files".into(),
        parent: None,
        root: BlobId([0; 32]),
        summary: Summary::default(),
        command: None,
        skipped: Vec::new(),
        extra: Vec::new(),
        program_version: "test".into(),
    }
}
