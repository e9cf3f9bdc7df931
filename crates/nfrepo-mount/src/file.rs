//! Reading one open file: random reads seek through the content list's
//! Merkle tree ([`Reader::chunk_at`]) and go through the shared chunk
//! cache; once reads run sequentially, a read-ahead *pipe* streams the
//! chunks that follow ([`Reader::content_from`], which coalesces adjacent
//! chunks into one range request) so the next reads find them ready.
//!
//! Every chunk handed out was authenticated and re-hashed by the engine;
//! a chunk whose length disagrees with its list is refused. A read that
//! meets a damaged or missing chunk fails whole: no byte of it is returned.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use nfrepo_engine::{Error, Reader, Result};
use nfrepo_format::{BlobKind, Content};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::cache::ChunkCache;

/// Bytes one pipe may hold ahead of the reads (plus the engine's own 4 MiB).
const PIPE_BYTES: u32 = 8 << 20;
/// Chunks already read kept by a pipe for reads that arrive out of order.
const WINDOW_BYTES: u64 = 2 << 20;
/// A read this far past the pipe's position is a seek, not a sequential read.
const MAX_SKIP: u64 = 16 << 20;

/// Read-ahead pipes running at once, across all open files: bounds memory
/// (each holds up to `PIPE_BYTES` plus the engine's read-ahead).
pub(crate) const MAX_PIPES: usize = 4;

/// One open file (see the module docs).
pub(crate) struct OpenFile {
    reader: Reader,
    content: Content,
    size: u64,
    cache: Arc<ChunkCache>,
    pipes: Arc<Semaphore>,
    state: tokio::sync::Mutex<Sequential>,
}

#[derive(Default)]
struct Sequential {
    /// Where the last read ended.
    last_end: u64,
    pipe: Option<Pipe>,
}

type Piped = Result<(u64, Arc<Vec<u8>>, OwnedSemaphorePermit)>;

struct Pipe {
    rx: mpsc::UnboundedReceiver<Piped>,
    /// Chunks taken from the pipe, oldest first.
    window: VecDeque<(u64, Arc<Vec<u8>>, OwnedSemaphorePermit)>,
    window_bytes: u64,
    /// The offset of the next chunk the pipe will yield.
    next: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pipe {
    /// Streams the content from the chunk at `offset` (a chunk boundary).
    fn start(reader: Reader, content: Content, offset: u64, slot: OwnedSemaphorePermit) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(PIPE_BYTES as usize));
        let task = tokio::spawn(async move {
            let _slot = slot;
            let (mut pos, chunks) = match reader.content_from(&content, offset).await {
                Ok(found) => found,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut chunks = std::pin::pin!(chunks);
            while let Some(chunk) = chunks.next().await {
                let item = match chunk {
                    Ok(chunk) => {
                        let want = u32::try_from(chunk.len()).unwrap_or(PIPE_BYTES).min(PIPE_BYTES);
                        let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                            return;
                        };
                        let start = pos;
                        pos += chunk.len() as u64;
                        Ok((start, Arc::new(chunk), permit))
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx,
            window: VecDeque::new(),
            window_bytes: 0,
            next: offset,
            task,
        }
    }

    /// The chunk covering `pos`, from the window or the pipe; `None` when
    /// `pos` is behind the window, too far ahead, or past the pipe's end.
    async fn take(&mut self, pos: u64) -> Result<Option<(u64, Arc<Vec<u8>>)>> {
        if let Some(hit) = self.window.iter().find(|(start, data, _)| covers(*start, data, pos)) {
            return Ok(Some((hit.0, hit.1.clone())));
        }
        let behind = self.window.front().map_or(self.next, |(start, _, _)| *start);
        if pos < behind || pos >= self.next.saturating_add(MAX_SKIP) {
            return Ok(None);
        }
        while let Some(item) = self.rx.recv().await {
            let (start, data, permit) = item?;
            self.next = start + data.len() as u64;
            self.window_bytes += data.len() as u64;
            self.window.push_back((start, data.clone(), permit));
            while self.window_bytes > WINDOW_BYTES && self.window.len() > 1 {
                if let Some((_, old, _)) = self.window.pop_front() {
                    self.window_bytes -= old.len() as u64;
                }
            }
            if covers(start, &data, pos) {
                return Ok(Some((start, data)));
            }
            if start > pos {
                return Ok(None);
            }
        }
        Ok(None)
    }
}

fn covers(start: u64, data: &[u8], pos: u64) -> bool {
    start <= pos && pos < start + data.len() as u64
}

impl OpenFile {
    pub(crate) fn new(
        reader: Reader,
        content: Content,
        size: u64,
        cache: Arc<ChunkCache>,
        pipes: Arc<Semaphore>,
    ) -> Self {
        Self {
            reader,
            content,
            size,
            cache,
            pipes,
            state: tokio::sync::Mutex::new(Sequential::default()),
        }
    }

    /// Up to `size` bytes at `offset` (fewer only at the end of the file).
    ///
    /// # Errors
    /// [`Error::Corrupted`] or [`Error::Missing`] when a chunk the range
    /// needs is damaged or gone; nothing is returned then.
    pub(crate) async fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        let end = offset.saturating_add(u64::from(size)).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut state = self.state.lock().await;
        let sequential = offset == state.last_end;
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        let mut pos = offset;
        while pos < end {
            let (start, chunk) = self.chunk_covering(&mut state, pos, sequential).await?;
            let from = usize::try_from(pos - start).unwrap_or(usize::MAX);
            let to = usize::try_from(end - start).unwrap_or(usize::MAX).min(chunk.len());
            let Some(bytes) = chunk.get(from..to).filter(|b| !b.is_empty()) else {
                return Err(self.corrupted(format!("no content at offset {pos}")));
            };
            out.extend_from_slice(bytes);
            pos += bytes.len() as u64;
        }
        state.last_end = end;
        Ok(out)
    }

    async fn chunk_covering(&self, state: &mut Sequential, pos: u64, sequential: bool) -> Result<(u64, Arc<Vec<u8>>)> {
        if let Some(pipe) = state.pipe.as_mut() {
            match pipe.take(pos).await {
                Ok(Some(hit)) => return Ok(hit),
                Ok(None) => {}
                // The read-ahead met damage somewhere in a run it fetched:
                // read this chunk alone, so only a read that needs the
                // damaged chunk fails.
                Err(e) => {
                    tracing::debug!("read-ahead stopped: {e}");
                    state.pipe = None;
                }
            }
        }
        let chunk = self
            .reader
            .chunk_at(&self.content, pos)
            .await?
            .ok_or_else(|| self.corrupted(format!("the content lists end before offset {pos}")))?;
        let data = match self.cache.get(&chunk.id) {
            Some(data) => data,
            None => {
                let data = Arc::new(self.reader.read_blob(&chunk.id, BlobKind::Data).await?);
                if data.len() as u64 != chunk.len {
                    return Err(self.corrupted(format!(
                        "chunk {} is {} bytes, its list says {}",
                        chunk.id,
                        data.len(),
                        chunk.len
                    )));
                }
                self.cache.put(chunk.id, data.clone());
                data
            }
        };
        let next = chunk.start + chunk.len;
        if sequential && next < self.size {
            let stale = state.pipe.as_ref().is_some_and(|p| p.next != next);
            if stale {
                state.pipe = None;
            }
            if state.pipe.is_none()
                && let Ok(slot) = self.pipes.clone().try_acquire_owned()
            {
                state.pipe = Some(Pipe::start(self.reader.clone(), self.content.clone(), next, slot));
            }
        }
        Ok((chunk.start, data))
    }

    fn corrupted(&self, detail: String) -> Error {
        Error::Corrupted {
            object: "file content".into(),
            source: nfrepo_format::Error::Malformed {
                what: "file content",
                detail,
            },
        }
    }
}
