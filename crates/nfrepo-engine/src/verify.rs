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
use nfrepo_format::{BlobId, BlobKind, Node, NodeKind};

use crate::check::{CheckOptions, CheckReport, Finding};
use crate::read::SnapshotEntry;
use crate::walk::{self, LoadFailure, Pending, Visitor, WalkOptions};
use crate::{Repository, Result};

/// The files of a snapshot, and the subtrees that could not be read.
#[derive(Default)]
struct FileNodes {
    files: Vec<(Vec<u8>, Node)>,
    unreadable: Vec<(String, String)>,
}

impl Visitor for FileNodes {
    fn visit_node(&mut self, path: &[u8], _parent: &BlobId, node: &Node) -> Result<()> {
        if matches!(node.kind, NodeKind::File { .. }) {
            self.files.push((path.to_vec(), node.clone()));
        }
        Ok(())
    }

    /// A damaged subtree's files cannot be read: it is a content problem
    /// (and a finding of the check); the other files are still read.
    fn damaged(&mut self, path: &[u8], blob: &Pending, failure: LoadFailure) -> Result<()> {
        let error = failure.into_error(path, blob);
        if !error.is_damage() {
            return Err(error);
        }
        let shown = if path.is_empty() {
            "/".to_owned()
        } else {
            format!("{}/", String::from_utf8_lossy(path))
        };
        self.unreadable.push((shown, crate::check::one_line(&error)));
        Ok(())
    }
}

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
        self.require_keys("verify")?;
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
            let mut files = FileNodes::default();
            walk::walk(&reader, [(Vec::new(), stored_root)], WalkOptions::default(), &mut files).await?;
            report.content_problems.extend(files.unreadable);
            for (path, node) in files.files {
                let path = String::from_utf8_lossy(&path).into_owned();
                let mut chunks = std::pin::pin!(reader.file_content(&node, path.clone()));
                let mut failed = None;
                while let Some(chunk) = chunks.next().await {
                    match chunk {
                        Ok(chunk) => report.bytes_read += chunk.len() as u64,
                        Err(e) => {
                            failed = Some(crate::check::one_line(&e));
                            break;
                        }
                    }
                }
                report.files_read += 1;
                if let Some(problem) = failed {
                    report.content_problems.push((path, problem));
                }
            }
        }
        Ok(report)
    }
}
