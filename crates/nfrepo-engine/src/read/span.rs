//! Neighbouring reads of one pack fetched with one request.
//!
//! A restore reads packs in ranges of a few MiB ([`super::PlanLimits`]), so
//! that each read's chunks are opened while the next ones arrive and what
//! it holds stays bounded. On a remote store each ranged request costs a
//! round trip and the server's own work per request, and some servers read
//! more than the range: SeaweedFS reads every 4 MiB piece of the object a
//! range touches, so the 2 MiB reads of a restore cost it about twice the
//! bytes (its CPU for the 964 MB dump's restore from a loopback SeaweedFS:
//! 1.4 s, against 0.65 s for rustic's 34 requests of about 14 MB).
//!
//! Reads of one pack that follow each other in the plan (with at most
//! [`SPAN_WINDOW`] reads of other packs between them), each starting no
//! more than [`SPAN_GAP`] after the last one ends, are therefore fetched as
//! one *span*: one ranged request over all of them (at most
//! [`SPAN_BYTES`]), its response taken apart read by read as it arrives
//! ([`Store::get_range_stream`]).
//!
//! What a restore holds does not grow: a read's bytes are taken from the
//! response only when its own task asks for them, and the caller starts
//! that task only once the read fits its budget; the rest of the response
//! waits in the transport. A task that asks first for a later read of the
//! span takes the earlier reads' bytes on the way and keeps them for their
//! tasks, which were started before it and so are already counted.
//! If the response fails midway or ends short, each read of the span not
//! yet taken is fetched alone ([`Reader::fetch_read`], with the store's
//! retries): a span never fails a restore that separate reads would not.
//! Where ranged reads cost nothing extra (a local directory:
//! [`Store::streams_ranges`] is false) reads are not grouped.
//!
//! **Sent ahead.** On a remote store every read has a span, one of its own
//! when it has no neighbours, so that the restore can send the request of
//! a read that still waits for its budget ([`Reader::open_ahead`]): the
//! round trip (tens of milliseconds to another region) is paid while
//! earlier reads are worked on, the response's first frame is all that is
//! held, and the rest waits in the transport until the read is admitted.
//! The budget itself then only has to cover the bytes that arrived, not
//! the requests' round trips. Measured through `remote-s3` (10 ms each
//! way, 100 MB/s per connection), the restore of the 964 MB dump's
//! incremental snapshot, 3 alternated runs: 4.40–4.94 s without, 2.58–2.74
//! s with (rustic: 2.98–4.09 s in two passes of `bench-peers.sh
//! --remote-s3 10,100`).
//!
//! [`Store::get_range_stream`]: nfrepo_store::Store::get_range_stream
//! [`Store::streams_ranges`]: nfrepo_store::Store::streams_ranges

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use nfrepo_store::{ByteStream, ErrorKind, ObjectKey, Pieces, Store};

use super::{PackRead, Reader, pack_key};
use crate::Result;

/// Sealed bytes one span covers at most (reads, and the gaps between them).
///
/// A span is one connection, and remote stores cap what one connection
/// carries (S3 serves on the order of 100 MB/s per connection): the reads
/// of a span arrive one after the other at that rate while they hold their
/// share of the restore's budget, so the longer the span, the fewer
/// connections carry the reads in flight. Measured on the 964 MB dump's
/// restore through a proxy adding 10 ms each way and capping each
/// connection at 100 MB/s (`remote-s3`, `scripts/bench-peers.sh
/// --remote-s3`), 2 to 6 runs each: spans of 16 MiB 4.06–4.56 s, of 4 MiB
/// 3.25–3.29 s, no spans 3.15–3.46 s; on the loopback SeaweedFS, which
/// reads every 4 MiB piece of the object a range touches, 1.42–1.52,
/// 1.57–1.66 and 1.73–1.76 s; with the delay alone, 1.99–2.19, 2.42–2.44
/// and 2.57–2.68 s. 4 MiB keeps most of what spans save a server and a
/// round trip without tying a restore to one connection's rate.
const SPAN_BYTES: u64 = 4 << 20;

/// Unneeded bytes between two reads of a span at most: reading them costs
/// less than a request of its own.
const SPAN_GAP: u64 = 256 << 10;

/// Reads of other packs between two reads of a span at most. A restore
/// reads in the order its files need the chunks, so the reads of an
/// incremental's snapshot alternate between the packs of the first backup
/// and those of the later ones; meanwhile the span's response waits in the
/// transport, so not for long.
const SPAN_WINDOW: usize = 16;

/// A read's place in a span ([`Reader::spans`]).
#[derive(Clone, Debug)]
pub struct SpanPart {
    span: Arc<Span>,
    index: usize,
}

impl SpanPart {
    /// How many reads share this read's span (one: the read is alone on
    /// its request).
    #[must_use]
    pub fn reads(&self) -> usize {
        self.span.parts.len()
    }
}

/// One ranged request over neighbouring reads of a pack.
#[derive(Debug)]
struct Span {
    key: ObjectKey,
    /// The reads' ranges, in order (each starts at or after the last's end).
    parts: Vec<Range<u64>>,
    state: tokio::sync::Mutex<State>,
}

/// The response as far as it was taken apart.
#[derive(Default)]
struct State {
    /// The response, once opened (`None` after it failed or ended).
    response: Option<ByteStream<'static>>,
    opened: bool,
    /// The response failed: the reads not yet taken go alone.
    failed: bool,
    /// Object offset of the next byte of the response.
    at: u64,
    /// What is left of the frame that held the end of the last read.
    held: Option<Bytes>,
    /// The next read to take from the response.
    next: usize,
    /// Reads taken for tasks that have not asked yet.
    kept: HashMap<usize, Pieces>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("failed", &self.failed)
            .field("at", &self.at)
            .field("next", &self.next)
            .field("kept", &self.kept.len())
            .finish_non_exhaustive()
    }
}

impl Span {
    /// The bytes of read `index`, or `None` when the response cannot give
    /// them (it failed, or they were taken already): the read then goes alone.
    async fn take(&self, store: &Arc<dyn Store>, index: usize) -> Option<Pieces> {
        let mut state = self.state.lock().await;
        if let Some(pieces) = state.kept.remove(&index) {
            return Some(pieces);
        }
        if state.failed || index < state.next || index >= self.parts.len() {
            return None;
        }
        self.open(store, &mut state).await;
        if state.failed {
            return None;
        }
        while state.next <= index {
            let next = state.next;
            let range = self.parts.get(next)?.clone();
            // Failed until the cut completes: a task dropped in the middle
            // of one (the restore stopping) leaves the response at an
            // unknown offset, so the reads after it must go alone.
            state.failed = true;
            match state.cut(range).await {
                Ok(pieces) => {
                    state.failed = false;
                    state.next += 1;
                    if next == index {
                        return Some(pieces);
                    }
                    state.kept.insert(next, pieces);
                }
                Err(e) => {
                    tracing::debug!(object = %self.key, error = %e, "a span's response failed; its other reads go alone");
                    state.response = None;
                    state.held = None;
                    return None;
                }
            }
        }
        None
    }

    /// Sends the span's request unless that was done, marking the span
    /// failed if it fails; whether this call sent it.
    async fn open(&self, store: &Arc<dyn Store>, state: &mut State) -> bool {
        if state.opened {
            return false;
        }
        state.opened = true;
        let (Some(first), Some(last)) = (self.parts.first(), self.parts.last()) else {
            state.failed = true;
            return false;
        };
        state.at = first.start;
        match store.get_range_stream(&self.key, first.start..last.end).await {
            Ok(response) => state.response = Some(response),
            Err(e) => {
                tracing::debug!(object = %self.key, error = %e, "a span's request failed; its reads go alone");
                state.failed = true;
            }
        }
        true
    }

    /// Sends the span's request and waits for the first bytes of its
    /// response (see [`Reader::open_ahead`]); does nothing once a read of
    /// the span was taken or the request was sent.
    async fn open_ahead(&self, store: &Arc<dyn Store>) {
        let mut state = self.state.lock().await;
        if !self.open(store, &mut state).await {
            return;
        }
        let Some(response) = state.response.as_mut() else {
            return;
        };
        // The first frame starts at the span's first byte (`State::at`).
        match response.next().await {
            Some(Ok(frame)) => state.held = Some(frame),
            Some(Err(e)) => {
                tracing::debug!(object = %self.key, error = %e, "a span's response failed; its reads go alone");
                state.response = None;
                state.failed = true;
            }
            None => {}
        }
    }
}

impl State {
    /// Takes `range` from the response, skipping the bytes before it.
    async fn cut(&mut self, range: Range<u64>) -> nfrepo_store::Result<Pieces> {
        let mut pieces = Vec::new();
        while self.at < range.end {
            let frame = match self.held.take() {
                Some(frame) => frame,
                None => match self.response.as_mut() {
                    Some(response) => match response.next().await {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => return Err(e),
                        None => {
                            return Err(nfrepo_store::Error::new(
                                ErrorKind::Corrupted,
                                format!("the response ended at byte {} before the range {range:?}", self.at),
                            ));
                        }
                    },
                    None => return Err(nfrepo_store::Error::new(ErrorKind::Other, "the response is gone")),
                },
            };
            let len = frame.len() as u64;
            let from = range.start.saturating_sub(self.at).min(len);
            let to = (range.end - self.at).min(len);
            if to > from {
                pieces.push(frame.slice(from as usize..to as usize));
            }
            if to < len {
                self.held = Some(frame.slice(to as usize..));
            }
            self.at += to;
        }
        Ok(Pieces::from_parts(pieces))
    }
}

/// The spans among reads given as (pack, range), in the order they are
/// started: the indexes of each span's reads (see the module docs). Every
/// read is in one span, alone when no neighbour joins it.
fn group<P: PartialEq>(reads: &[(Option<P>, Range<u64>)]) -> Vec<Vec<usize>> {
    // Spans still taking reads: the indexes of their reads so far.
    let mut open: Vec<Vec<usize>> = Vec::new();
    let mut done: Vec<Vec<usize>> = Vec::new();
    for (i, (pack, range)) in reads.iter().enumerate() {
        done.extend(open.extract_if(.., |members| members.last().is_some_and(|&last| i - last > SPAN_WINDOW)));
        let takes = |members: &Vec<usize>| {
            let (Some(&first), Some(&last)) = (members.first(), members.last()) else {
                return false;
            };
            let ((_, first), (last_pack, last)) = (&reads[first], &reads[last]);
            pack.is_some()
                && pack == last_pack
                && range.start >= last.end
                && range.start - last.end <= SPAN_GAP
                && range.end - first.start <= SPAN_BYTES
        };
        match open.iter_mut().find(|members| takes(members)) {
            Some(members) => members.push(i),
            None => open.push(vec![i]),
        }
    }
    done.extend(open);
    done
}

impl Reader {
    /// Groups `reads`, in the order they will be started, into spans (see
    /// the module docs): each read's place in its span, a span of its own
    /// for a read that has no neighbours (so that it too can be opened
    /// ahead: [`Reader::open_ahead`]), and `None` for every read on a store
    /// where requests cost nothing extra.
    #[must_use]
    pub fn spans(&self, reads: &[PackRead]) -> Vec<Option<SpanPart>> {
        let mut parts: Vec<Option<SpanPart>> = vec![None; reads.len()];
        if !self.repo.store().streams_ranges() {
            return parts;
        }
        let ranges: Vec<(Option<nfrepo_format::PackId>, Range<u64>)> =
            reads.iter().map(|r| (r.pack(), r.start..r.end)).collect();
        for members in group(&ranges) {
            let Some(Ok(key)) = reads[members[0]].chunks.first().map(|c| pack_key(&c.location)) else {
                continue;
            };
            let span = Arc::new(Span {
                key,
                parts: members.iter().map(|&i| reads[i].start..reads[i].end).collect(),
                state: tokio::sync::Mutex::new(State::default()),
            });
            for (index, &i) in members.iter().enumerate() {
                parts[i] = Some(SpanPart {
                    span: span.clone(),
                    index,
                });
            }
        }
        parts
    }

    /// The sealed bytes of a planned read: from its span's response where
    /// it has one and that gives them, else with a request of its own
    /// ([`Reader::fetch_read`]).
    ///
    /// # Errors
    /// As [`Reader::fetch_read`].
    pub async fn fetch_planned(&self, read: &PackRead, part: Option<&SpanPart>) -> Result<Pieces> {
        if let Some(part) = part
            && let Some(pieces) = part.span.take(self.repo.store(), part.index).await
            && pieces.len() as u64 == read.end - read.start
        {
            return Ok(pieces);
        }
        self.fetch_read(read).await
    }

    /// Sends the request of `part`'s span and waits for the first bytes of
    /// its response, before the read is admitted into the caller's
    /// budget: the round trip is paid while earlier reads are worked on,
    /// and the rest of the response waits in the transport (the kernel's
    /// socket buffers, and the server) until [`Reader::fetch_planned`]
    /// takes it. What this holds is the one frame received. Does nothing
    /// for a span already opened; a failure is left for `fetch_planned`,
    /// which then reads alone.
    pub async fn open_ahead(&self, part: &SpanPart) {
        part.span.open_ahead(self.repo.store()).await;
    }
}

#[cfg(test)]
mod tests {
    use nfrepo_store::{Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, PutMode};

    use super::*;

    fn key() -> ObjectKey {
        ObjectKey::new(ObjectKind::Data, "ab".repeat(32)).unwrap()
    }

    /// A store holding 10,000 numbered bytes under [`key`], whose ranged
    /// streams come in frames of 7 bytes; and those bytes.
    async fn store(faults: &[FaultRule]) -> (Arc<dyn Store>, Vec<u8>) {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let inner = MemoryStore::new();
        inner
            .put(&key(), Bytes::from(bytes.clone()), PutMode::CreateNew)
            .await
            .unwrap();
        let store = FaultStore::new(inner).streaming_ranges(7);
        for rule in faults {
            store.add_rule(rule.clone());
        }
        (Arc::new(store), bytes)
    }

    fn span(parts: &[Range<u64>]) -> Span {
        Span {
            key: key(),
            parts: parts.to_vec(),
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    fn joined(pieces: Option<Pieces>) -> Option<Vec<u8>> {
        pieces.map(|p| p.into_bytes().to_vec())
    }

    #[test]
    fn reads_of_a_pack_join_a_span_across_other_packs_reads_within_the_window() {
        let mib = 1u64 << 20;
        let read = |pack: u8, start: u64, len: u64| (Some(pack), start..start + len);
        let mut reads = vec![
            read(1, 0, mib),
            read(2, 0, mib),
            read(1, mib + 1000, mib), // a small gap: same span
            read(2, 5 * mib, mib),    // a gap too wide: a new span of its own
            read(1, 2 * mib + 2000, mib),
            (None, 0..10),
        ];
        // Pack 3: more than the window of other reads before its second read.
        reads.push(read(3, 0, 10));
        reads.extend((0..=SPAN_WINDOW).map(|i| read(4, i as u64 * 100, 100)));
        reads.push(read(3, 10, 10));
        // Pack 5: a span ends once it would pass its bytes.
        let at = reads.len();
        let quarter = SPAN_BYTES / 4;
        reads.extend((0..5).map(|i| read(5, i * quarter, quarter)));
        let mut spans = group(&reads);
        // Every read is in one span; those alone are left out here.
        let mut all: Vec<usize> = spans.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..reads.len()).collect::<Vec<_>>());
        spans.retain(|members| members.len() > 1);
        spans.sort();
        let pack4: Vec<usize> = (7..7 + SPAN_WINDOW + 1).collect();
        assert_eq!(spans, vec![vec![0, 2, 4], pack4, vec![at, at + 1, at + 2, at + 3]]);
    }

    #[tokio::test]
    async fn each_read_of_a_span_gets_its_own_bytes_in_any_order() {
        let (store, bytes) = store(&[]).await;
        let parts = [100..1_000, 1_000..1_003, 1_500..4_096, 4_100..9_999];
        for order in [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 0, 1]] {
            let span = span(&parts);
            for index in order {
                let range = parts[index].clone();
                let want = bytes[range.start as usize..range.end as usize].to_vec();
                assert_eq!(
                    joined(span.take(&store, index).await),
                    Some(want),
                    "read {index} of {order:?}"
                );
            }
            // Each read is handed out once; a second ask goes alone.
            assert_eq!(joined(span.take(&store, 1).await), None);
            assert!(span.state.lock().await.kept.is_empty());
        }
    }

    #[tokio::test]
    async fn a_response_cut_midway_gives_the_reads_before_the_cut_and_sends_the_rest_alone() {
        let cut = FaultRule::new(FaultOp::Get, Fault::Truncate { len: 2_000 });
        let (store, bytes) = store(&[cut]).await;
        let parts = [0..1_000, 1_500..2_500, 3_000..4_000];
        let span = span(&parts);
        assert_eq!(joined(span.take(&store, 0).await), Some(bytes[..1_000].to_vec()));
        assert_eq!(joined(span.take(&store, 1).await), None);
        assert_eq!(joined(span.take(&store, 2).await), None);
        assert!(span.state.lock().await.failed);
    }

    #[tokio::test]
    async fn a_take_dropped_in_the_middle_of_a_read_sends_the_rest_alone() {
        let (store, _) = store(&[]).await;
        let span = span(&[0..1_000, 2_000..3_000]);
        // A response that brings half of the first read, then waits.
        {
            let mut state = span.state.lock().await;
            state.opened = true;
            let half = futures::stream::iter([Ok(Bytes::from(vec![0u8; 500]))]);
            state.response = Some(half.chain(futures::stream::pending()).boxed());
        }
        let mut take = Box::pin(span.take(&store, 0));
        let waker = futures::task::noop_waker();
        assert!(
            take.as_mut()
                .poll(&mut std::task::Context::from_waker(&waker))
                .is_pending()
        );
        drop(take);
        // The response's offset is unknown now: the next read goes alone
        // (without the mark it would wait on the response for ever).
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), span.take(&store, 1)).await;
        assert_eq!(joined(next.expect("answered at once")), None);
    }

    #[tokio::test]
    async fn a_span_opened_ahead_holds_one_frame_and_then_gives_each_read_its_bytes() {
        let (store, bytes) = store(&[]).await;
        let parts = [3..5, 8..40, 41..9_000];
        let span = span(&parts);
        span.open_ahead(&store).await;
        {
            let state = span.state.lock().await;
            assert!(state.opened && !state.failed && state.response.is_some());
            // The first frame of 7 bytes, from the span's first byte.
            assert_eq!(state.held.as_deref(), Some(&bytes[3..10]));
            assert_eq!(state.at, 3);
        }
        // Opening again sends nothing more and takes nothing more.
        span.open_ahead(&store).await;
        assert_eq!(span.state.lock().await.held.as_deref(), Some(&bytes[3..10]));
        for (index, range) in parts.iter().enumerate() {
            let want = bytes[range.start as usize..range.end as usize].to_vec();
            assert_eq!(joined(span.take(&store, index).await), Some(want), "read {index}");
        }
    }

    #[tokio::test]
    async fn a_span_whose_request_fails_ahead_sends_its_reads_alone() {
        let fail = FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::Transient)).times(1);
        let (store, _) = store(&[fail]).await;
        let span = span(&[0..10, 20..30]);
        span.open_ahead(&store).await;
        assert!(span.state.lock().await.failed);
        assert_eq!(joined(span.take(&store, 0).await), None);
        assert_eq!(joined(span.take(&store, 1).await), None);
    }

    #[tokio::test]
    async fn a_request_that_fails_sends_every_read_alone() {
        let fail = FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::Transient)).times(1);
        let (store, _) = store(&[fail]).await;
        let span = span(&[0..10, 20..30]);
        assert_eq!(joined(span.take(&store, 1).await), None);
        assert_eq!(joined(span.take(&store, 0).await), None);
    }
}
