//! [`Pieces`]: a ranged read's bytes as the response brought them.
//!
//! An HTTP response arrives in frames, and OpenDAL hands a ranged read back
//! as the list of them. Joining them into one buffer costs a copy of every
//! byte and, for the multi-megabyte ranges a restore reads, fresh pages the
//! kernel must fault in and zero: about a tenth of the CPU of a restore
//! from S3 (issue 14). A restore does not need the range in one piece: it
//! opens each chunk from its own few kilobytes, and a chunk that lies
//! within one piece (most of them) is read where it lies.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::store::ByteStream;

/// The bytes of one ranged read, in order, as one or more pieces. Cheap to
/// clone (the pieces are shared).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pieces {
    parts: Vec<Bytes>,
    /// `ends[i]`: the offset just past `parts[i]`.
    ends: Vec<usize>,
}

impl Pieces {
    /// The bytes of `parts`, in order; empty parts are dropped.
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let mut pieces = Self::default();
        let mut end = 0;
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            end += part.len();
            pieces.ends.push(end);
            pieces.parts.push(part);
        }
        pieces
    }

    /// Their length in bytes.
    pub fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes `range`: borrowed where they lie within one piece, copied into
    /// one buffer when they span several. `None` when `range` runs past the
    /// end (or is reversed).
    pub fn slice(&self, range: Range<usize>) -> Option<Cow<'_, [u8]>> {
        if range.start > range.end || range.end > self.len() {
            return None;
        }
        if range.is_empty() {
            return Some(Cow::Borrowed(&[]));
        }
        // The piece holding the first byte: the first whose end is past it.
        let first = self.ends.partition_point(|&end| end <= range.start);
        let part_start = |i: usize| if i == 0 { 0 } else { self.ends[i - 1] };
        if range.end <= self.ends[first] {
            let from = part_start(first);
            return self.parts[first]
                .get(range.start - from..range.end - from)
                .map(Cow::Borrowed);
        }
        let mut joined = Vec::with_capacity(range.len());
        for i in first..self.parts.len() {
            let from = part_start(i);
            if from >= range.end {
                break;
            }
            let lo = range.start.saturating_sub(from);
            let hi = (range.end - from).min(self.parts[i].len());
            joined.extend_from_slice(self.parts[i].get(lo..hi)?);
        }
        Some(Cow::Owned(joined))
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The pieces, in order, as the frames of a stream: what
    /// [`Store::get_range_stream`](crate::Store::get_range_stream) yields
    /// from a range read whole.
    pub(crate) fn into_stream(self) -> ByteStream<'static> {
        futures::stream::iter(self.parts.into_iter().map(Ok)).boxed()
    }

    /// All the bytes in one buffer: the piece itself when there is one,
    /// else a copy.
    pub fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.swap_remove(0),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len());
                for part in &self.parts {
                    joined.extend_from_slice(part);
                }
                joined.freeze()
            }
        }
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Self {
        Self::from_parts([bytes])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cut(data: &[u8], sizes: &[usize]) -> Pieces {
        let mut parts = Vec::new();
        let mut at = 0;
        for &size in sizes {
            let end = (at + size).min(data.len());
            parts.push(Bytes::copy_from_slice(&data[at..end]));
            at = end;
        }
        parts.push(Bytes::copy_from_slice(&data[at..]));
        Pieces::from_parts(parts)
    }

    #[test]
    fn a_range_within_one_piece_is_borrowed_and_one_across_pieces_is_joined() {
        let pieces = cut(b"abcdefghij", &[4, 0, 3]);
        assert_eq!(pieces.parts().len(), 3, "the empty part is dropped");
        assert!(matches!(pieces.slice(4..7), Some(Cow::Borrowed(b"efg"))));
        assert!(matches!(pieces.slice(0..4), Some(Cow::Borrowed(b"abcd"))));
        assert_eq!(pieces.slice(2..9).as_deref(), Some(&b"cdefghi"[..]));
        assert!(matches!(pieces.slice(2..9), Some(Cow::Owned(_))));
        assert_eq!(pieces.slice(0..10).as_deref(), Some(&b"abcdefghij"[..]));
        assert_eq!(pieces.slice(10..10).as_deref(), Some(&b""[..]));
        assert_eq!(pieces.slice(3..11), None, "past the end");
        assert_eq!(pieces.into_bytes(), Bytes::from_static(b"abcdefghij"));
        assert_eq!(Pieces::default().slice(0..0).as_deref(), Some(&b""[..]));
        assert_eq!(Pieces::default().slice(0..1), None);
    }

    proptest! {
        #[test]
        fn any_slice_of_any_cut_is_the_same_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            sizes in proptest::collection::vec(0usize..40, 0..12),
            a in 0usize..310,
            b in 0usize..310,
        ) {
            let pieces = cut(&data, &sizes);
            prop_assert_eq!(pieces.len(), data.len());
            let (start, end) = (a.min(b), a.max(b));
            let sliced = pieces.slice(start..end);
            prop_assert_eq!(sliced.as_deref(), data.get(start..end));
            drop(sliced);
            prop_assert_eq!(pieces.into_bytes(), Bytes::from(data));
        }
    }
}
