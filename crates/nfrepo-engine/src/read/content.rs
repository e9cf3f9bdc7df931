//! File content: the chunks of a file in order, fetched with coalesced range
//! reads and a bounded read-ahead.

use futures::FutureExt;
use futures::stream::{self, BoxStream, Stream, StreamExt, TryStreamExt};
use nfrepo_format::{BlobKind, Content, ContentList, ListEntry};

use super::{Reader, pack_key};
use crate::index::BlobLocation;
use crate::{Error, Result};

/// Content bytes read ahead while streaming one file: many small dump
/// chunks at once, or a few large file chunks, at the same memory cost.
const READ_AHEAD_BYTES: u64 = 4 << 20;
/// Content lists read ahead under one list of lists (at most 48 KiB
/// each decoded): a deep list tree holds at most this many per level.
const LIST_AHEAD: usize = 16;
/// At most this many range reads in flight per file, however small.
const READ_AHEAD_MAX: usize = 64;
/// The longest run of adjacent blobs fetched with one range request: long
/// enough to make per-request costs vanish against 16 KiB dump chunks, short
/// enough that several runs decode in parallel within the read-ahead.
const COALESCE_BYTES: u64 = 1 << 20;

impl Reader {
    /// The chunks of a file's content in order, without fetching them.
    ///
    /// Content lists are read ahead: the children of a list of lists are
    /// read 16 at a time (`LIST_AHEAD`), in order, each through
    /// [`Reader::read_blob`], which cuts them out of the blocks of their
    /// tree pack it keeps (`read/windows.rs`): a backup stores a file's
    /// lists near each other in one tree pack, so a long dump's hundreds of
    /// lists cost a request or two to S3, not one each, in whatever order
    /// they were sealed.
    ///
    /// # Errors
    /// Errors reading list blobs, in the position of the list that failed.
    pub fn content_chunks(&self, content: &Content) -> impl Stream<Item = Result<ListEntry>> + Send + 'static {
        match content {
            Content::Inline(chunks) => stream::iter(chunks.clone().into_iter().map(Ok)).boxed(),
            Content::List { root, .. } => {
                let (reader, root) = (self.clone(), *root);
                stream::once(async move { reader.read_list(root).await.map(|list| reader.list_entries(list)) })
                    .try_flatten()
                    .boxed()
            }
        }
    }

    pub(super) async fn read_list(&self, id: nfrepo_format::BlobId) -> Result<ContentList> {
        let bytes = self.read_blob(&id, BlobKind::ContentList).await?;
        ContentList::decode(&bytes).map_err(|e| Error::decode(format!("content list {id}"), e))
    }

    /// The chunks under a decoded list, its child lists read ahead.
    pub(super) fn list_entries(&self, list: ContentList) -> BoxStream<'static, Result<ListEntry>> {
        if list.level <= 1 {
            return stream::iter(list.entries.into_iter().map(Ok)).boxed();
        }
        let reader = self.clone();
        stream::iter(list.entries)
            .map(move |entry| {
                let reader = reader.clone();
                async move { reader.read_list(entry.id).await.map(|child| reader.list_entries(child)) }
            })
            .buffered(LIST_AHEAD)
            .try_flatten()
            .boxed()
    }

    /// A file's content as a stream of verified chunks, in order.
    ///
    /// Consecutive chunks stored back to back in one pack (the common case:
    /// a backup packs a file's new chunks in order) are fetched with one
    /// range request of up to 1 MiB, then opened one by one on
    /// the blocking pool. Reads ahead are bounded by bytes (4 MiB) and by
    /// count (64 requests).
    pub fn content(&self, content: &Content) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
        self.chunks(self.content_chunks(content).boxed())
    }

    /// The chunks `entries` names, verified, in order (see [`Self::content`]).
    pub(super) fn chunks(
        &self,
        entries: BoxStream<'static, Result<ListEntry>>,
    ) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
        type Pending = futures::stream::FuturesOrdered<futures::future::BoxFuture<'static, Result<Vec<Vec<u8>>>>>;
        struct State {
            reader: Reader,
            entries: futures::stream::BoxStream<'static, Result<ListEntry>>,
            lookahead: Option<(ListEntry, BlobLocation)>,
            pending: Pending,
            ready: std::collections::VecDeque<Vec<u8>>,
            bytes: u64,
            exhausted: bool,
        }
        impl State {
            async fn next_located(&mut self) -> Result<Option<(ListEntry, BlobLocation)>> {
                if let Some(next) = self.lookahead.take() {
                    return Ok(Some(next));
                }
                match self.entries.next().await {
                    Some(entry) => {
                        let entry = entry?;
                        let location = match self.reader.locate_kind(&entry.id, BlobKind::Data) {
                            Err(e) if self.reader.index.may_recover(&e) => {
                                self.reader.index.recover(&self.reader.repo).await?;
                                self.reader.locate_kind(&entry.id, BlobKind::Data)?
                            }
                            other => other?,
                        };
                        Ok(Some((entry, location)))
                    }
                    None => Ok(None),
                }
            }

            /// Collects the next run of chunks that are adjacent in one pack.
            async fn next_run(&mut self) -> Result<Option<Vec<(ListEntry, BlobLocation)>>> {
                let Some(first) = self.next_located().await? else {
                    return Ok(None);
                };
                let start = u64::from(first.1.offset);
                let mut end = start + u64::from(first.1.sealed_len);
                let mut run = vec![first];
                while end - start < COALESCE_BYTES {
                    let Some(next) = self.next_located().await? else {
                        break;
                    };
                    if !follows(&run[0].1, end, &next.1) {
                        self.lookahead = Some(next);
                        break;
                    }
                    end += u64::from(next.1.sealed_len);
                    run.push(next);
                }
                Ok(Some(run))
            }
        }
        let state = State {
            reader: self.clone(),
            entries,
            lookahead: None,
            pending: Pending::new(),
            ready: std::collections::VecDeque::new(),
            bytes: 0,
            exhausted: false,
        };
        stream::try_unfold(state, |mut state| async move {
            loop {
                while !state.exhausted
                    && (state.pending.is_empty() || state.bytes < READ_AHEAD_BYTES)
                    && state.pending.len() < READ_AHEAD_MAX
                {
                    match state.next_run().await? {
                        Some(run) => {
                            let len: u64 = run.iter().map(|(entry, _)| entry.len).sum();
                            state.bytes += len;
                            let reader = state.reader.clone();
                            state
                                .pending
                                .push_back(async move { reader.read_run(run).await }.boxed());
                        }
                        None => state.exhausted = true,
                    }
                }
                // Opened chunks count against the read-ahead until handed
                // out, so fetched-but-unread data stays within the bound.
                if let Some(chunk) = state.ready.pop_front() {
                    state.bytes = state.bytes.saturating_sub(chunk.len() as u64);
                    return Ok(Some((chunk, state)));
                }
                match state.pending.next().await {
                    Some(done) => state.ready.extend(done?),
                    None => return Ok(None),
                }
            }
        })
    }

    /// Fetches blobs stored back to back in one pack with one range request,
    /// and opens each; fails on the first that does not verify.
    async fn read_run(&self, run: Vec<(ListEntry, BlobLocation)>) -> Result<Vec<Vec<u8>>> {
        let ids: Vec<nfrepo_format::BlobId> = run.iter().map(|(entry, _)| entry.id).collect();
        let pack = run.first().map(|(_, location)| location.pack);
        match self.read_run_once(run).await {
            // The pack is gone: each blob from another copy, if one is indexed.
            Err(e) if super::pack_gone(&e) && pack.is_some() => {
                if let Some(pack) = pack {
                    self.index.mark_absent(pack);
                }
                if ids.iter().any(|id| self.index.get(id).is_none()) {
                    return Err(e);
                }
                let mut blobs = Vec::with_capacity(ids.len());
                for id in &ids {
                    blobs.push(self.read_blob(id, BlobKind::Data).await?);
                }
                Ok(blobs)
            }
            // Located through a local cache that may be wrong: each blob
            // again, through the repository's index (crate::index).
            Err(e) if self.index.may_recover(&e) => {
                self.index.recover(&self.repo).await?;
                let mut blobs = Vec::with_capacity(ids.len());
                for id in &ids {
                    blobs.push(self.read_blob_once(id, BlobKind::Data).await?);
                }
                Ok(blobs)
            }
            other => other,
        }
    }

    async fn read_run_once(&self, run: Vec<(ListEntry, BlobLocation)>) -> Result<Vec<Vec<u8>>> {
        let Some((_, first)) = run.first() else {
            return Ok(Vec::new());
        };
        let start = u64::from(first.offset);
        let end = run
            .iter()
            .map(|(_, l)| u64::from(l.offset) + u64::from(l.sealed_len))
            .max()
            .unwrap_or(start);
        let object = pack_key(first)?;
        let sealed = self
            .repo
            .store()
            .get_range_pieces(&object, start..end)
            .await
            .map_err(Error::store)?;
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || {
            crate::codec::with_codec(&repo, |codec| {
                run.iter()
                    .map(|(entry, location)| {
                        let from = usize::try_from(u64::from(location.offset) - start).unwrap_or(usize::MAX);
                        let to = from.saturating_add(location.sealed_len as usize);
                        let bytes = sealed.slice(from..to).ok_or_else(|| Error::Missing {
                            object: format!("blob {} in pack {}", entry.id, location.pack),
                            detail: "the pack is shorter than its index says".into(),
                        })?;
                        let what = || format!("blob {} in pack {}", entry.id, location.pack);
                        let sealer = nfrepo_format::pack_sealer(repo.sealer(), location.sealing.as_ref())
                            .map_err(|e| Error::decode(what(), e))?;
                        codec
                            .open_with(&sealer, location.kind, &entry.id, location.raw_len, &bytes)
                            .map_err(|e| Error::decode(what(), e))
                    })
                    .collect()
            })
        })
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
    }
}

/// Whether the chunk at `next` joins the run that `first` started and that
/// ends at `end`: it follows the run directly in the same pack, as a
/// backup packs a file's new chunks.
fn follows(first: &BlobLocation, end: u64, next: &BlobLocation) -> bool {
    next.pack == first.pack && u64::from(next.offset) == end
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::at;
    use super::*;

    /// Folds each location into the run the first starts, as `next_run`
    /// does, and returns how many of them one request covers.
    fn joined(locations: &[BlobLocation]) -> usize {
        let mut end = u64::from(locations[0].offset) + u64::from(locations[0].sealed_len);
        for (i, next) in locations.iter().enumerate().skip(1) {
            if !follows(&locations[0], end, next) {
                return i;
            }
            end += u64::from(next.sealed_len);
        }
        locations.len()
    }

    #[test]
    fn chunks_join_only_when_they_follow_each_other() {
        let chunks = [at(1, 0, 100), at(1, 100, 100), at(1, 300, 100)];
        assert_eq!(joined(&chunks), 2, "a gap ends a run of chunks");
        let backwards = [at(1, 100, 100), at(1, 0, 100)];
        assert_eq!(joined(&backwards), 1, "so does going back");
        let other_pack = [at(1, 0, 100), at(2, 100, 100)];
        assert_eq!(joined(&other_pack), 1, "and another pack");
    }
}
