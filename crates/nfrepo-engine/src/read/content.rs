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
/// Encoded list bytes read ahead under one list of lists: one coalesced
/// read's worth, a few hundred lists of a dump (about 40 bytes an entry),
/// so a deep list tree holds at most this much per level.
const LIST_READ_AHEAD_BYTES: u64 = 1 << 20;
/// At most this many range reads in flight per file, however small.
const READ_AHEAD_MAX: usize = 64;
/// The longest run of adjacent blobs fetched with one range request: long
/// enough to make per-request costs vanish against 16 KiB dump chunks, short
/// enough that several runs decode in parallel within the read-ahead.
const COALESCE_BYTES: u64 = 1 << 20;

impl Reader {
    /// The chunks of a file's content in order, without fetching them.
    ///
    /// Content lists are read ahead as file chunks are ([`Self::content`]):
    /// the children of a list of lists, which a backup stores back to back
    /// in one tree pack, are fetched with range requests of up to 1 MiB
    /// (a few dozen lists each), so a long dump's lists cost a round trip
    /// or two to S3, not one each.
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
        decode_list(id, &self.read_blob(&id, BlobKind::ContentList).await?)
    }

    /// The chunks under a decoded list, its child lists read ahead.
    pub(super) fn list_entries(&self, list: ContentList) -> BoxStream<'static, Result<ListEntry>> {
        if list.level <= 1 {
            return stream::iter(list.entries.into_iter().map(Ok)).boxed();
        }
        let reader = self.clone();
        self.blobs(
            stream::iter(list.entries.into_iter().map(Ok)).boxed(),
            BlobKind::ContentList,
        )
        .map(move |child| {
            let (id, bytes) = child?;
            Ok(reader.list_entries(decode_list(id, &bytes)?))
        })
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
        self.blobs(entries, BlobKind::Data).map_ok(|(_, bytes)| bytes)
    }

    /// The blobs of `kind` that `entries` names, verified, in order, each
    /// with its id: runs of blobs stored back to back in one pack are
    /// fetched with one range request each, within the read-ahead bounds of
    /// [`Self::content`] (counted in plaintext bytes; 1 MiB for lists).
    fn blobs(
        &self,
        entries: BoxStream<'static, Result<ListEntry>>,
        kind: BlobKind,
    ) -> impl Stream<Item = Result<(nfrepo_format::BlobId, Vec<u8>)>> + Send + 'static {
        type Opened = Vec<(nfrepo_format::BlobId, Vec<u8>)>;
        type Pending = futures::stream::FuturesOrdered<futures::future::BoxFuture<'static, Result<Opened>>>;
        struct State {
            reader: Reader,
            kind: BlobKind,
            entries: futures::stream::BoxStream<'static, Result<ListEntry>>,
            lookahead: Option<(ListEntry, BlobLocation)>,
            pending: Pending,
            ready: std::collections::VecDeque<(nfrepo_format::BlobId, Vec<u8>)>,
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
                        let location = match self.reader.locate_kind(&entry.id, self.kind) {
                            Err(e) if self.reader.index.may_recover(&e) => {
                                self.reader.index.recover(&self.reader.repo).await?;
                                self.reader.locate_kind(&entry.id, self.kind)?
                            }
                            other => other?,
                        };
                        Ok(Some((entry, location)))
                    }
                    None => Ok(None),
                }
            }

            /// Collects the next run of blobs to fetch with one request:
            /// chunks adjacent in one pack, in order; lists anywhere in a
            /// window of one pack ([`run_joins`]).
            async fn next_run(&mut self) -> Result<Option<Vec<(ListEntry, BlobLocation)>>> {
                let Some(first) = self.next_located().await? else {
                    return Ok(None);
                };
                let mut span = blob_span(&first.1);
                let mut run = vec![first];
                while span.end - span.start < COALESCE_BYTES {
                    let Some(next) = self.next_located().await? else {
                        break;
                    };
                    match run_joins(self.kind, &run[0].1, &span, &next.1) {
                        Some(wider) => {
                            span = wider;
                            run.push(next);
                        }
                        None => {
                            self.lookahead = Some(next);
                            break;
                        }
                    }
                }
                Ok(Some(run))
            }
        }
        let ahead = match kind {
            BlobKind::ContentList => LIST_READ_AHEAD_BYTES,
            _ => READ_AHEAD_BYTES,
        };
        let state = State {
            reader: self.clone(),
            kind,
            entries,
            lookahead: None,
            pending: Pending::new(),
            ready: std::collections::VecDeque::new(),
            bytes: 0,
            exhausted: false,
        };
        stream::try_unfold(state, move |mut state| async move {
            loop {
                while !state.exhausted
                    && (state.pending.is_empty() || state.bytes < ahead)
                    && state.pending.len() < READ_AHEAD_MAX
                {
                    match state.next_run().await? {
                        Some(run) => {
                            let len: u64 = run.iter().map(|(_, location)| u64::from(location.raw_len)).sum();
                            state.bytes += len;
                            let (reader, kind) = (state.reader.clone(), state.kind);
                            state
                                .pending
                                .push_back(async move { reader.read_run(run, kind).await }.boxed());
                        }
                        None => state.exhausted = true,
                    }
                }
                // Opened chunks count against the read-ahead until handed
                // out, so fetched-but-unread data stays within the bound.
                if let Some(blob) = state.ready.pop_front() {
                    state.bytes = state.bytes.saturating_sub(blob.1.len() as u64);
                    return Ok(Some((blob, state)));
                }
                match state.pending.next().await {
                    Some(done) => state.ready.extend(done?),
                    None => return Ok(None),
                }
            }
        })
    }

    /// Fetches blobs of `kind` stored back to back in one pack with one
    /// range request, and opens each; fails on the first that does not
    /// verify.
    async fn read_run(
        &self,
        run: Vec<(ListEntry, BlobLocation)>,
        kind: BlobKind,
    ) -> Result<Vec<(nfrepo_format::BlobId, Vec<u8>)>> {
        let ids: Vec<nfrepo_format::BlobId> = run.iter().map(|(entry, _)| entry.id).collect();
        let pack = run.first().map(|(_, location)| location.pack);
        let opened = match self.read_run_once(run).await {
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
                    blobs.push(self.read_blob(id, kind).await?);
                }
                Ok(blobs)
            }
            // Located through a local cache that may be wrong: each blob
            // again, through the repository's index (crate::index).
            Err(e) if self.index.may_recover(&e) => {
                self.index.recover(&self.repo).await?;
                let mut blobs = Vec::with_capacity(ids.len());
                for id in &ids {
                    blobs.push(self.read_blob_once(id, kind).await?);
                }
                Ok(blobs)
            }
            other => other,
        }?;
        Ok(ids.into_iter().zip(opened).collect())
    }

    async fn read_run_once(&self, run: Vec<(ListEntry, BlobLocation)>) -> Result<Vec<Vec<u8>>> {
        let Some((_, first)) = run.first() else {
            return Ok(Vec::new());
        };
        let (start, end) = run.iter().fold((u64::MAX, 0), |(start, end), (_, location)| {
            let span = blob_span(location);
            (start.min(span.start), end.max(span.end))
        });
        let object = pack_key(first)?;
        let sealed = self
            .repo
            .store()
            .get_range(&object, start..end)
            .await
            .map_err(Error::store)?;
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || {
            crate::codec::with_codec(&repo, |codec| {
                run.iter()
                    .map(|(entry, location)| {
                        let from = usize::try_from(u64::from(location.offset) - start).unwrap_or(usize::MAX);
                        let to = from.saturating_add(location.sealed_len as usize);
                        let bytes = sealed.get(from..to).ok_or_else(|| Error::Missing {
                            object: format!("blob {} in pack {}", entry.id, location.pack),
                            detail: "the pack is shorter than its index says".into(),
                        })?;
                        let what = || format!("blob {} in pack {}", entry.id, location.pack);
                        let sealer = nfrepo_format::pack_sealer(repo.sealer(), location.sealing.as_ref())
                            .map_err(|e| Error::decode(what(), e))?;
                        codec
                            .open_with(&sealer, location.kind, &entry.id, location.raw_len, bytes)
                            .map_err(|e| Error::decode(what(), e))
                    })
                    .collect()
            })
        })
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
    }
}

/// The bytes of its pack a blob's sealed form occupies.
fn blob_span(location: &BlobLocation) -> std::ops::Range<u64> {
    let start = u64::from(location.offset);
    start..start + u64::from(location.sealed_len)
}

/// The span of a run that `first` started and that covers `span` once
/// `next` joins it, or `None` if `next` starts another run.
///
/// A file's chunks join when `next` follows the run directly in the same
/// pack: a backup packs a file's new chunks in order. A list's children
/// join when `next` is in the same pack and the run still spans at most
/// [`COALESCE_BYTES`], in any order and with gaps: a backup seals a file's
/// lists on every core, so siblings land in one tree pack near each other
/// but not always in order, and reading the few other blobs between them
/// is cheaper than a request per list.
fn run_joins(
    kind: BlobKind,
    first: &BlobLocation,
    span: &std::ops::Range<u64>,
    next: &BlobLocation,
) -> Option<std::ops::Range<u64>> {
    if next.pack != first.pack {
        return None;
    }
    let other = blob_span(next);
    match kind {
        BlobKind::ContentList => {
            let wider = span.start.min(other.start)..span.end.max(other.end);
            (wider.end - wider.start <= COALESCE_BYTES).then_some(wider)
        }
        _ => (other.start == span.end).then_some(span.start..other.end),
    }
}

/// Decodes the content list blob `id` opened to `bytes`.
fn decode_list(id: nfrepo_format::BlobId, bytes: &[u8]) -> Result<ContentList> {
    ContentList::decode(bytes).map_err(|e| Error::decode(format!("content list {id}"), e))
}

#[cfg(test)]
mod tests {
    use nfrepo_format::{PackId, PackKind};

    use super::*;

    fn at(pack: u8, offset: u32, len: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            pack_kind: PackKind::Tree,
            kind: BlobKind::ContentList,
            offset,
            sealed_len: len,
            raw_len: len,
            sealing: None,
        }
    }

    /// Folds `next` into the run `locations` starts, as `next_run` does,
    /// and returns how many of them one request covers.
    fn joined(kind: BlobKind, locations: &[BlobLocation]) -> usize {
        let mut span = blob_span(&locations[0]);
        for (i, next) in locations.iter().enumerate().skip(1) {
            match run_joins(kind, &locations[0], &span, next) {
                Some(wider) => span = wider,
                None => return i,
            }
        }
        locations.len()
    }

    #[test]
    fn sibling_lists_out_of_order_in_one_pack_are_one_request() {
        // Sealed on several cores: the second list before the first, a
        // tree between them.
        let lists = [at(1, 5000, 900), at(1, 1000, 1000), at(1, 8000, 700)];
        assert_eq!(joined(BlobKind::ContentList, &lists), 3);
    }

    #[test]
    fn chunks_join_only_when_they_follow_each_other() {
        let chunks = [at(1, 0, 100), at(1, 100, 100), at(1, 300, 100)];
        assert_eq!(joined(BlobKind::Data, &chunks), 2, "a gap ends a run of chunks");
        let backwards = [at(1, 100, 100), at(1, 0, 100)];
        assert_eq!(joined(BlobKind::Data, &backwards), 1, "so does going back");
    }

    #[test]
    fn a_run_of_lists_stays_in_its_pack_and_within_the_coalescing_bound() {
        let other_pack = [at(1, 0, 100), at(2, 100, 100)];
        assert_eq!(joined(BlobKind::ContentList, &other_pack), 1);
        let bound = u32::try_from(COALESCE_BYTES).unwrap();
        let far = [at(1, 0, 100), at(1, bound - 100, 100), at(1, bound, 1)];
        assert_eq!(
            joined(BlobKind::ContentList, &far),
            2,
            "the third would make the read longer than the bound"
        );
    }
}
