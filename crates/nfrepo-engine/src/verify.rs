//! `verify SNAPSHOT`: proof that one snapshot is what its stored root says.
//!
//! A snapshot's root tree id is a Merkle root: it is the keyed BLAKE3 of the
//! root tree's plaintext, which holds the ids of its subtrees and of its
//! files' content lists and chunks, and so on down. Verifying recomputes the
//! root from the root tree's bytes, then proves every tree and content list
//! below (each re-hashed against the id its parent names, with lengths and
//! levels adding up: the check walk with `merkle`). With `read_data` it also
//! reads every file's content, re-hashing each chunk and comparing each
//! file's size and whole-content BLAKE3 with its tree node.

use futures::StreamExt;
use nfrepo_format::{BlobId, BlobKind, NodeKind};

use crate::check::{CheckOptions, CheckReport, Finding};
use crate::read::SnapshotEntry;
use crate::{Repository, Result};

/// What verifying a snapshot found.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The snapshot.
    pub snapshot: SnapshotEntry,
    /// The root its snapshot object names.
    pub stored_root: BlobId,
    /// The root recomputed from the stored root tree, if it could be read.
    pub computed_root: Option<BlobId>,
    /// The structure and Merkle walk of this snapshot.
    pub check: CheckReport,
    /// Files whose content was read (with `read_data`).
    pub files_read: u64,
    /// Content bytes read and re-hashed (with `read_data`).
    pub bytes_read: u64,
    /// Files whose content does not match their node: (path, what is wrong).
    pub content_problems: Vec<(String, String)>,
}

impl VerifyReport {
    /// The findings that concern this snapshot.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        let id = self.snapshot.id;
        self.check
            .findings
            .iter()
            .filter(move |f| f.affected.iter().any(|a| a.snapshot == id))
    }

    /// Whether the snapshot is proven intact.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.computed_root == Some(self.stored_root)
            && self.findings().next().is_none()
            && self.content_problems.is_empty()
    }
}

impl Repository {
    /// Verifies the snapshot `spec` names (see the module docs).
    ///
    /// # Errors
    /// An unknown snapshot, or storage failures other than damaged or missing objects.
    pub async fn verify_snapshot(&self, spec: &str, read_data: bool) -> Result<VerifyReport> {
        let options = CheckOptions {
            merkle: true,
            snapshots: vec![spec.to_owned()],
            ..CheckOptions::default()
        };
        let snapshot = self.find_snapshot(spec).await?;
        let check = self.check(&options).await?;
        let reader = self.reader().await?;
        let stored_root = snapshot.snapshot.root;
        let computed_root = match reader.read_blob(&stored_root, BlobKind::Tree).await {
            Ok(plaintext) => Some(self.keys().blob_id(&plaintext)),
            Err(_) => None,
        };
        let mut report = VerifyReport {
            snapshot,
            stored_root,
            computed_root,
            check,
            files_read: 0,
            bytes_read: 0,
            content_problems: Vec::new(),
        };
        if read_data {
            let mut files = Vec::new();
            reader
                .walk(&stored_root, b"", true, |entry| {
                    if matches!(entry.node.kind, NodeKind::File { .. }) {
                        files.push(entry);
                    }
                    Ok(())
                })
                .await
                .ok();
            for entry in files {
                let NodeKind::File {
                    size, content, blake3, ..
                } = &entry.node.kind
                else {
                    continue;
                };
                let mut hasher = blake3::Hasher::new();
                let mut read = 0u64;
                let mut chunks = std::pin::pin!(reader.content(content));
                let mut failed = None;
                while let Some(chunk) = chunks.next().await {
                    match chunk {
                        Ok(chunk) => {
                            hasher.update(&chunk);
                            read += chunk.len() as u64;
                        }
                        Err(e) => {
                            failed = Some(crate::check::one_line(&e));
                            break;
                        }
                    }
                }
                report.files_read += 1;
                report.bytes_read += read;
                let problem = match failed {
                    Some(e) => Some(e),
                    None if read != *size => Some(format!("content is {read} bytes, the node says {size}")),
                    None if hasher.finalize().as_bytes() != blake3 => {
                        Some("content BLAKE3 differs from the node's".to_owned())
                    }
                    None => None,
                };
                if let Some(problem) = problem {
                    report.content_problems.push((entry.path_lossy(), problem));
                }
            }
        }
        Ok(report)
    }
}
