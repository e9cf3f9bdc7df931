//! An in-memory [`Store`] for tests, shared by name within a process.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, stream};

use crate::error::{Error, ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};
use crate::location::StoreUrl;
use crate::pieces::Pieces;
use crate::store::{ListStream, PutMode, Store};

#[derive(Debug)]
struct Stored {
    data: Bytes,
    last_modified: SystemTime,
}

/// Where [`MemoryStore`] cuts a ranged read into pieces
/// ([`Store::get_range_pieces`]): at every multiple of this many bytes of
/// the object. Not a power of two, so the cuts fall inside blobs.
const MEMORY_PIECE: usize = 1000;

/// Objects in a map, behind `memory://name` URLs.
///
/// Clones share the same objects, and [`MemoryStore::named`] (which `open` uses)
/// returns the same objects for the same name for the life of the process, so a
/// test can init a repository and open it again. Unlike OpenDAL's memory service it
/// records modification times, which GC's grace periods need, and tests can move
/// them with [`MemoryStore::set_last_modified`].
#[derive(Debug, Clone)]
pub struct MemoryStore {
    location: String,
    objects: Arc<Mutex<HashMap<ObjectKey, Stored>>>,
}

impl MemoryStore {
    /// A fresh, unnamed, empty store.
    pub fn new() -> Self {
        Self {
            location: "memory://".to_owned(),
            objects: Arc::default(),
        }
    }

    /// The process-wide store called `name`, created empty on first use.
    pub fn named(name: &str) -> Self {
        static STORES: OnceLock<Mutex<HashMap<String, MemoryStore>>> = OnceLock::new();
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stores
            .entry(name.to_owned())
            .or_insert_with(|| MemoryStore {
                location: StoreUrl::Memory { name: name.to_owned() }.to_string(),
                objects: Arc::default(),
            })
            .clone()
    }

    /// Backdates (or postdates) an object, e.g. to push it past a grace period.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if there is no such object.
    pub fn set_last_modified(&self, key: &ObjectKey, time: SystemTime) -> Result<()> {
        match self.lock().get_mut(key) {
            Some(stored) => {
                stored.last_modified = time;
                Ok(())
            }
            None => Err(self.not_found(key)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, Stored>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn not_found(&self, key: &ObjectKey) -> Error {
        Error::new(ErrorKind::NotFound, "object not found")
            .with_key(key)
            .with_location(&self.location)
    }

    fn info(key: &ObjectKey, stored: &Stored) -> ObjectInfo {
        ObjectInfo {
            key: key.clone(),
            size: stored.data.len() as u64,
            last_modified: Some(stored.last_modified),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        let mut objects = self.lock();
        if mode == PutMode::CreateNew && objects.contains_key(key) {
            return Err(Error::new(ErrorKind::AlreadyExists, "object already exists")
                .with_key(key)
                .with_location(&self.location));
        }
        objects.insert(
            key.clone(),
            Stored {
                data,
                last_modified: SystemTime::now(),
            },
        );
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        match self.lock().get(key) {
            Some(stored) => Ok(stored.data.clone()),
            None => Err(self.not_found(key)),
        }
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        let data = self.get(key).await?;
        let len = data.len() as u64;
        if range.start > range.end {
            return Err(Error::new(
                ErrorKind::Other,
                format!("invalid range {}..{}", range.start, range.end),
            )
            .with_key(key));
        }
        if range.end > len {
            return Err(Error::new(
                ErrorKind::Corrupted,
                format!(
                    "object is shorter than the requested range {}..{}: it has {len} bytes",
                    range.start, range.end
                ),
            )
            .with_key(key)
            .with_location(&self.location));
        }
        // Both bounds are within `data`, so they fit in usize.
        let start = usize::try_from(range.start).unwrap_or(usize::MAX);
        let end = usize::try_from(range.end).unwrap_or(usize::MAX);
        Ok(data.slice(start..end))
    }

    /// The range cut at every 1000th byte of the object (`MEMORY_PIECE`), as a
    /// network response arrives in frames: what runs on this store reads
    /// ranges across pieces, as it would on S3.
    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        let data = self.get_range(key, range.clone()).await?;
        let piece = MEMORY_PIECE as u64;
        let mut parts = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let end = ((at / piece + 1) * piece).min(range.end);
            let (lo, hi) = ((at - range.start) as usize, (end - range.start) as usize);
            parts.push(data.slice(lo..hi));
            at = end;
        }
        Ok(Pieces::from_parts(parts))
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        match self.lock().get(key) {
            Some(stored) => Ok(Self::info(key, stored)),
            None => Err(self.not_found(key)),
        }
    }

    /// The listing as it is when the stream is first polled, sorted.
    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
        stream::once(async move {
            let mut infos: Vec<ObjectInfo> = self
                .lock()
                .iter()
                .filter(|(key, _)| key.kind() == kind)
                .map(|(key, stored)| Self::info(key, stored))
                .collect();
            infos.sort_by(|a, b| a.key.name().cmp(b.key.name()));
            stream::iter(infos).map(Ok)
        })
        .flatten()
        .boxed()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.lock().remove(key);
        Ok(())
    }

    // Unversioned and without object lock: a delete frees everything at once.
    async fn object_lock_enabled(&self) -> Result<bool> {
        Ok(false)
    }

    async fn set_retention(&self, key: &ObjectKey, _retention: crate::lock::Retention) -> Result<()> {
        Err(crate::store::no_object_lock(key))
    }

    async fn purge(&self, _key: &ObjectKey) -> Result<()> {
        Ok(())
    }

    async fn list_purgeable(&self, _kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn named_stores_are_shared() {
        let key = ObjectKey::new(ObjectKind::Gc, "plan").unwrap();
        MemoryStore::named("unit-shared")
            .put(&key, Bytes::from_static(b"x"), PutMode::CreateNew)
            .await
            .unwrap();
        assert!(MemoryStore::named("unit-shared").get(&key).await.is_ok());
        for other in [MemoryStore::named("unit-other"), MemoryStore::new()] {
            let err = other.get(&key).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        }
    }

    #[tokio::test]
    async fn last_modified_can_be_moved() {
        let store = MemoryStore::new();
        let key = ObjectKey::new(ObjectKind::Data, "abcd").unwrap();
        store
            .put(&key, Bytes::from_static(b"p"), PutMode::CreateNew)
            .await
            .unwrap();
        let old = SystemTime::now() - Duration::from_secs(86_400);
        store.set_last_modified(&key, old).unwrap();
        assert_eq!(store.stat(&key).await.unwrap().last_modified, Some(old));
        let missing = ObjectKey::new(ObjectKind::Data, "ffff").unwrap();
        assert_eq!(
            store.set_last_modified(&missing, old).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
