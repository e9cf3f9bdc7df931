//! Streaming one file's content out (`cat`), verified or salvaging.

use std::io::Write;
use std::path::PathBuf;

use futures::StreamExt;
use nfrepo_engine::Reader;
use nfrepo_format::{Node, NodeKind};

use crate::{Error, Result};

/// Writes a file's content to `out` (for `cat`). Returns the bytes written.
///
/// # Errors
/// [`Error::NotAFile`] for anything but a file; engine errors, including a
/// corrupted blob, stop the output at the last verified chunk. The file's
/// last chunk is written only once its size and hashes match its node
/// ([`Reader::file_content`]).
pub async fn write_content(reader: &Reader, node: &Node, mut out: impl Write) -> Result<u64> {
    if !matches!(node.kind, NodeKind::File { .. }) {
        return Err(Error::NotAFile(node.name_lossy().into_owned()));
    }
    let mut chunks = std::pin::pin!(reader.file_content(node, node.name_lossy().into_owned()));
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).map_err(|e| Error::Io {
            path: PathBuf::from("<stdout>"),
            source: e,
        })?;
        written += chunk.len() as u64;
    }
    out.flush().map_err(|e| Error::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    })?;
    Ok(written)
}

/// A byte range of a file that `cat --skip-damaged` filled with zeros, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    /// Offset of the first zero byte.
    pub offset: u64,
    /// Number of zero bytes written in place of the damaged content.
    pub len: u64,
    /// What was wrong with the stored content.
    pub reason: String,
}

/// Like [`write_content`], but a chunk that is damaged or missing is
/// written as zeros of its recorded length, and listed, instead of ending
/// the output: every non-zero byte written still passed authentication,
/// and every offset after a damaged range stays where it belongs (what a
/// database dump being salvaged needs). If a content list itself is
/// damaged, the rest of the file (up to its recorded size) is zeros.
///
/// # Errors
/// [`Error::NotAFile`]; I/O errors writing `out`; storage failures that are not damage.
pub async fn write_content_skipping_damage(
    reader: &Reader,
    node: &Node,
    mut out: impl Write,
) -> Result<(u64, Vec<DamagedRange>)> {
    let NodeKind::File { content, size, .. } = &node.kind else {
        return Err(Error::NotAFile(node.name_lossy().into_owned()));
    };
    let io = |e| Error::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    };
    let mut damaged = Vec::new();
    let mut written = 0u64;
    let write_zeros = |out: &mut dyn Write, len: u64| -> Result<()> {
        let zeros = [0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            out.write_all(zeros.get(..n).unwrap_or_default()).map_err(io)?;
            left -= n as u64;
        }
        Ok(())
    };
    let entries = reader.content_chunks(content);
    let mut chunks = std::pin::pin!(
        entries
            .map(|entry| {
                let reader = reader.clone();
                async move {
                    match entry {
                        Ok(entry) => {
                            let read = reader.read_blob(&entry.id, nfrepo_format::BlobKind::Data).await;
                            Ok((entry, read))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(8)
    );
    while let Some(next) = chunks.next().await {
        match next {
            Ok((_, Ok(chunk))) => {
                out.write_all(&chunk).map_err(io)?;
                written += chunk.len() as u64;
            }
            Ok((entry, Err(e))) if e.is_damage() => {
                write_zeros(&mut out, entry.len)?;
                damaged.push(DamagedRange {
                    offset: written,
                    len: entry.len,
                    reason: e.to_string(),
                });
                written += entry.len;
            }
            Err(e) if e.is_damage() => {
                let rest = size.saturating_sub(written);
                write_zeros(&mut out, rest)?;
                damaged.push(DamagedRange {
                    offset: written,
                    len: rest,
                    reason: e.to_string(),
                });
                written += rest;
                break;
            }
            Ok((_, Err(e))) | Err(e) => return Err(e.into()),
        }
    }
    out.flush().map_err(io)?;
    Ok((written, damaged))
}
