//! Zeroed buffers whose start is aligned for direct I/O.
//!
//! A descriptor opened with `O_DIRECT` takes buffers whose address, like
//! the offset and length of each transfer, is a multiple of the device's
//! logical block size. The allocator gives no such promise for a `Vec<u8>`,
//! so an [`AlignedBuf`] allocates `align` bytes more and starts where the
//! allocation first reaches the alignment: no `unsafe`, at the cost of one
//! block of slack. The local backend writes packs through one
//! (`backend/local.rs`), and a restore gathers and reads back large files
//! through them (nfrepo-sources).

use std::ops::{Deref, DerefMut};

/// `len` zeroed bytes starting at a multiple of the alignment asked for.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes whose first byte's address is a
    /// multiple of `align` (a power of two).
    #[must_use]
    pub fn zeroed(len: usize, align: usize) -> Self {
        let raw = vec![0u8; len.saturating_add(align)];
        // `align_offset` may say `usize::MAX` where it cannot align; with
        // `align` bytes of slack, some start within them always is.
        let start = raw.as_ptr().align_offset(align).min(align);
        Self { raw, start, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.raw.get(self.start..self.start + self.len).unwrap_or_default()
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.raw.get_mut(self.start..self.start + self.len).unwrap_or_default()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBuf;

    #[test]
    fn a_buffer_starts_aligned_holds_its_length_in_zeros_and_keeps_what_is_written() {
        for (len, align) in [(0, 4096), (1, 512), (4096, 4096), ((1 << 20) + 7, 4096), (100, 1)] {
            let mut buf = AlignedBuf::zeroed(len, align);
            assert_eq!(buf.len(), len, "length {len} aligned to {align}");
            assert_eq!(buf.as_ptr() as usize % align, 0, "length {len} aligned to {align}");
            assert!(buf.iter().all(|&b| b == 0));
            if let Some(last) = buf.last_mut() {
                *last = 7;
            }
            assert_eq!(buf.last().copied(), (len > 0).then_some(7));
        }
    }
}
