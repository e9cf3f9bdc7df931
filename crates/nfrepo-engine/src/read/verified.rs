//! The one verified file reader: a file node's content, checked as a whole.
//!
//! Every chunk is authenticated and re-hashed on its own when it is opened
//! ([`Reader::content`]), but that proves only that each chunk is the chunk
//! its id names. Whether the chunks *are the file* the node records (its
//! size, its whole-content BLAKE3 and, when present, its SHA-256) can only
//! be known at the end. [`Reader::file_content`] therefore holds the last
//! chunk back until the whole content has been compared with the node: a
//! consumer never receives the end of a file before it is proven, so a
//! restore never renames a wrong file into place, a database client never
//! sees the end of a wrong dump, and `cat` never prints the last bytes of one.

use futures::stream::{self, Stream, StreamExt};
use nfrepo_format::{Node, NodeKind};
use sha2::Digest;

use super::Reader;
use crate::{Error, Result};

/// The running comparison of streamed content with what its node records.
struct Expected {
    file: String,
    size: u64,
    blake3: [u8; 32],
    sha256: Option<[u8; 32]>,
    seen: u64,
    whole: nfrepo_format::StreamHash,
    sha: Option<sha2::Sha256>,
}

impl Expected {
    fn update(&mut self, chunk: &[u8]) -> Result<()> {
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        if self.seen > self.size {
            return Err(self.size_error());
        }
        self.whole.update(chunk);
        if let Some(sha) = &mut self.sha {
            sha.update(chunk);
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        if self.seen != self.size {
            return Err(self.size_error());
        }
        let blake3 = self.whole.finalize();
        if blake3 != self.blake3 {
            return Err(mismatch(&self.file, "file content BLAKE3", &self.blake3, &blake3));
        }
        if let (Some(expected), Some(sha)) = (self.sha256, self.sha) {
            let actual: [u8; 32] = sha.finalize().into();
            if actual != expected {
                return Err(mismatch(&self.file, "file content SHA-256", &expected, &actual));
            }
        }
        Ok(())
    }

    fn size_error(&self) -> Error {
        let detail = if self.seen > self.size {
            format!("content runs past the {} bytes the node records", self.size)
        } else {
            format!("content is {} bytes, the node records {}", self.seen, self.size)
        };
        Error::Corrupted {
            object: format!("file {}", self.file),
            source: nfrepo_format::Error::Malformed {
                what: "file content",
                detail,
            },
        }
    }
}

fn mismatch(file: &str, what: &'static str, expected: &[u8; 32], actual: &[u8; 32]) -> Error {
    Error::Corrupted {
        object: format!("file {file}"),
        source: nfrepo_format::Error::HashMismatch {
            what,
            expected: hex(expected),
            actual: hex(actual),
        },
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Reader {
    /// The content of the file `node` as verified chunks, in order, checked
    /// as a whole against the node: its size, its BLAKE3 and its SHA-256
    /// (when recorded). `file` names the file in errors (a path, as the
    /// caller shows it).
    ///
    /// The last chunk is yielded only after the whole content matched;
    /// otherwise the stream ends with an error instead of it. Content that
    /// runs past the recorded size fails before the excess is yielded.
    ///
    /// # Errors
    /// [`Error::Corrupted`] naming `file` when the content and the node
    /// disagree; [`Error::Invalid`] if `node` is not a file; everything
    /// [`Self::content`] fails with.
    pub fn file_content(
        &self,
        node: &Node,
        file: impl Into<String>,
    ) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
        let file = file.into();
        let NodeKind::File {
            size,
            content,
            blake3,
            sha256,
        } = &node.kind
        else {
            return stream::once(async move { Err(Error::Invalid(format!("{file} is not a regular file"))) })
                .left_stream();
        };
        let expected = Expected {
            file,
            size: *size,
            blake3: *blake3,
            sha256: *sha256,
            seen: 0,
            whole: nfrepo_format::StreamHash::default(),
            sha: sha256.map(|_| sha2::Sha256::new()),
        };
        struct State<S> {
            chunks: S,
            expected: Option<Expected>,
            held: Option<Vec<u8>>,
        }
        let state = State {
            chunks: self.content(content).boxed(),
            expected: Some(expected),
            held: None,
        };
        stream::try_unfold(state, |mut state| async move {
            let Some(expected) = state.expected.as_mut() else {
                return Ok(None);
            };
            while let Some(chunk) = state.chunks.next().await {
                let chunk = chunk?;
                expected.update(&chunk)?;
                if let Some(previous) = state.held.replace(chunk) {
                    return Ok(Some((previous, state)));
                }
            }
            if let Some(expected) = state.expected.take() {
                expected.finish()?;
            }
            match state.held.take() {
                Some(last) => Ok(Some((last, state))),
                None => Ok(None),
            }
        })
        .right_stream()
    }
}
