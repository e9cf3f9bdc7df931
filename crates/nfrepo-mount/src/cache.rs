//! The decoded-chunk cache: verified chunk plaintext by chunk id, bounded
//! by bytes, least recently used out first. Chunks are shared (`Arc`) with
//! the reads that use them, so eviction never invalidates a read in flight.

use std::sync::{Arc, Mutex};

use nfrepo_format::BlobId;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ChunkCache {
    inner: Mutex<Inner>,
    capacity: u64,
}

#[derive(Debug)]
struct Inner {
    chunks: lru::LruCache<BlobId, Arc<Vec<u8>>>,
    bytes: u64,
}

impl ChunkCache {
    /// A cache of at most `capacity` bytes of chunk plaintext.
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                chunks: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
        }
    }

    pub(crate) fn get(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().ok()?.chunks.get(id).cloned()
    }

    /// Keeps `chunk`, evicting the least recently used beyond the capacity.
    /// A chunk larger than the whole cache is not kept.
    pub(crate) fn put(&self, id: BlobId, chunk: Arc<Vec<u8>>) {
        let len = chunk.len() as u64;
        if len > self.capacity {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.chunks.put(id, chunk) {
            inner.bytes = inner.bytes.saturating_sub(old.len() as u64);
        }
        inner.bytes += len;
        while inner.bytes > self.capacity {
            match inner.chunks.pop_lru() {
                Some((_, old)) => inner.bytes = inner.bytes.saturating_sub(old.len() as u64),
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_capacity_and_evicts_the_least_recent() {
        let cache = ChunkCache::new(100);
        cache.put(BlobId([1; 32]), Arc::new(vec![0; 40]));
        cache.put(BlobId([2; 32]), Arc::new(vec![0; 40]));
        assert!(cache.get(&BlobId([1; 32])).is_some());
        cache.put(BlobId([3; 32]), Arc::new(vec![0; 40]));
        assert!(
            cache.get(&BlobId([2; 32])).is_none(),
            "the least recently used goes first"
        );
        assert!(cache.get(&BlobId([1; 32])).is_some());
        assert_eq!(cache.bytes(), 80);
        cache.put(BlobId([4; 32]), Arc::new(vec![0; 101]));
        assert!(cache.get(&BlobId([4; 32])).is_none(), "larger than the cache");
    }
}
