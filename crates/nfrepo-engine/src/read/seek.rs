//! Seeking in file content: the chunk that covers a byte offset, found by
//! walking the content list's Merkle tree from its root.
//!
//! Every list entry records how many content bytes it covers, so a seek
//! reads one list per level, from the root down, and never the chunks
//! before the offset. A list holds at most
//! [`nfrepo_format::LIST_MAX_ENTRIES`] entries, so a seek costs
//! O(depth) = O(log n) list reads for a file of n chunks; the lists are
//! cached ([`Reader::content_list`]), so the next seek in the same region
//! reads nothing. Nothing per chunk of the whole file is ever held.

use std::sync::Arc;

use futures::stream::{self, BoxStream, Stream, StreamExt};
use nfrepo_format::{BlobId, Content, ContentList, ListEntry};

use super::Reader;
use crate::{Error, Result};

/// One chunk of a file's content and where it lies in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkAt {
    /// The chunk.
    pub id: BlobId,
    /// The file offset of its first byte.
    pub start: u64,
    /// Its length, as its list records it.
    pub len: u64,
}

/// The entry of `entries` that covers `offset` (counted from the first
/// entry's first byte), with the offset at which that entry starts; `None`
/// past the end. Entries covering nothing are never chosen.
#[must_use]
pub fn locate_entry(entries: &[ListEntry], offset: u64) -> Option<(usize, u64)> {
    let mut start = 0u64;
    for (i, entry) in entries.iter().enumerate() {
        let end = start.checked_add(entry.len)?;
        if offset < end {
            return Some((i, start));
        }
        start = end;
    }
    None
}

/// The lists from the root down to the chunk, each with the index of the
/// entry taken.
type Path = Vec<(Arc<ContentList>, usize)>;

impl Reader {
    /// A content list, cached (see [`Reader`]'s list cache).
    ///
    /// # Errors
    /// As [`Reader::read_blob`], or [`Error::Corrupted`] if it does not decode.
    pub async fn content_list(&self, id: &BlobId) -> Result<Arc<ContentList>> {
        if let Some(list) = self
            .lists
            .lock()
            .map_err(|_| Error::Pipeline("content list cache poisoned".into()))?
            .get(id)
        {
            return Ok(list.clone());
        }
        let list = Arc::new(self.read_list(*id).await?);
        if let Ok(mut cache) = self.lists.lock() {
            cache.put(*id, list.clone());
        }
        Ok(list)
    }

    /// The chunk covering byte `offset` of `content`, or `None` at or past its end.
    ///
    /// # Errors
    /// Errors reading the lists on the way down; [`Error::Corrupted`] when
    /// a list's level disagrees with its parent's.
    pub async fn chunk_at(&self, content: &Content, offset: u64) -> Result<Option<ChunkAt>> {
        Ok(self.descend(content, offset).await?.map(|(_, chunk)| chunk))
    }

    async fn descend(&self, content: &Content, offset: u64) -> Result<Option<(Path, ChunkAt)>> {
        let (mut id, mut level) = match content {
            Content::Inline(chunks) => {
                let list = Arc::new(ContentList {
                    level: 1,
                    entries: chunks.clone(),
                });
                return Ok(locate_entry(chunks, offset).and_then(|(i, start)| {
                    let entry = chunks.get(i)?;
                    let chunk = ChunkAt {
                        id: entry.id,
                        start,
                        len: entry.len,
                    };
                    Some((vec![(list, i)], chunk))
                }));
            }
            Content::List { root, depth } => (*root, *depth),
        };
        let mut base = 0u64;
        let mut path = Path::new();
        loop {
            let list = self.content_list(&id).await?;
            if list.level != level || level == 0 {
                return Err(Error::Corrupted {
                    object: format!("content list {id}"),
                    source: nfrepo_format::Error::Malformed {
                        what: "content list",
                        detail: format!("level {} where its parent says {level}", list.level),
                    },
                });
            }
            let Some((i, start)) = locate_entry(&list.entries, offset - base) else {
                return Ok(None);
            };
            let Some(entry) = list.entries.get(i).copied() else {
                return Ok(None);
            };
            base += start;
            path.push((list, i));
            if level == 1 {
                let chunk = ChunkAt {
                    id: entry.id,
                    start: base,
                    len: entry.len,
                };
                return Ok(Some((path, chunk)));
            }
            id = entry.id;
            level -= 1;
        }
    }

    /// The content of a file from the chunk covering `offset` to its end,
    /// as verified chunks, with the file offset of the first one (`offset`
    /// itself, and an empty stream, at or past the end). Reads ahead and
    /// coalesces exactly as [`Reader::content`] does; reaching the start
    /// costs one seek ([`Reader::chunk_at`]), not a read of what lies before.
    ///
    /// # Errors
    /// Errors of the seek; the stream fails as [`Reader::content`] does.
    pub async fn content_from(
        &self,
        content: &Content,
        offset: u64,
    ) -> Result<(u64, impl Stream<Item = Result<Vec<u8>>> + Send + 'static)> {
        let Some((path, chunk)) = self.descend(content, offset).await? else {
            return Ok((offset, self.chunks(stream::empty().boxed()).left_stream()));
        };
        let last = path.len().saturating_sub(1);
        let mut parts: Vec<BoxStream<'static, Result<ListEntry>>> = Vec::with_capacity(path.len());
        for (depth, (list, i)) in path.iter().enumerate().rev() {
            let first = if depth == last { *i } else { i + 1 };
            let rest = list.entries.get(first..).unwrap_or_default().to_vec();
            parts.push(if list.level <= 1 {
                stream::iter(rest.into_iter().map(Ok)).boxed()
            } else {
                self.list_entries(ContentList {
                    level: list.level,
                    entries: rest,
                })
            });
        }
        let entries = stream::iter(parts).flatten().boxed();
        Ok((chunk.start, self.chunks(entries).right_stream()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entries(lens: &[u64]) -> Vec<ListEntry> {
        lens.iter()
            .enumerate()
            .map(|(i, len)| ListEntry {
                id: BlobId([u8::try_from(i % 256).unwrap_or(0); 32]),
                len: *len,
            })
            .collect()
    }

    #[test]
    fn locates_boundaries_and_skips_empty_entries() {
        let list = entries(&[10, 0, 5]);
        assert_eq!(locate_entry(&list, 0), Some((0, 0)));
        assert_eq!(locate_entry(&list, 9), Some((0, 0)));
        assert_eq!(locate_entry(&list, 10), Some((2, 10)));
        assert_eq!(locate_entry(&list, 14), Some((2, 10)));
        assert_eq!(locate_entry(&list, 15), None);
        assert_eq!(locate_entry(&[], 0), None);
    }

    proptest! {
        /// The entry found covers the offset, starts where the entries
        /// before it end, and nothing is found past the end.
        #[test]
        fn located_entry_covers_the_offset(lens in proptest::collection::vec(0u64..5000, 0..200), offset in 0u64..1_000_000) {
            let list = entries(&lens);
            let total: u64 = lens.iter().sum();
            match locate_entry(&list, offset) {
                Some((i, start)) => {
                    prop_assert!(offset < total);
                    prop_assert_eq!(start, lens[..i].iter().sum::<u64>());
                    prop_assert!(start <= offset && offset < start + lens[i]);
                }
                None => prop_assert!(offset >= total),
            }
        }
    }
}
