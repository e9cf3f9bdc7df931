//! The `Store` trait: what the engine needs from a place that holds objects.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};

/// How [`Store::put`] treats an existing object of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PutMode {
    /// Fail with [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) if the
    /// object exists. The check and the write are one atomic step on every backend
    /// (`If-None-Match: *` on S3, a no-clobber link on a filesystem), so two
    /// concurrent writers never both succeed. Used for write-once objects and leases.
    CreateNew,
    /// Replace any existing object.
    Overwrite,
}

/// Objects in a repository, addressed by [`ObjectKey`].
///
/// Every implementation writes atomically: a reader sees either the previous state
/// or the whole new object, and a crash never leaves a partial object under its
/// final name. Implementations are cheap to share (`Arc<dyn Store>`) and safe to
/// call concurrently.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The repository location for messages, with any credentials removed.
    fn location(&self) -> &str;

    /// Stores `data` under `key`.
    ///
    /// With [`PutMode::CreateNew`] this fails with
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) if the object exists.
    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()>;

    /// Reads a whole object.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes>;

    /// Reads `range` of an object: exactly `range.end - range.start` bytes, or an
    /// error ([`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted) if the object is
    /// shorter than `range.end`).
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes>;

    /// Size and modification time of an object.
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo>;

    /// All objects of a kind (recursively for Data/Tree), skipping temp files and
    /// names that don't validate. Order unspecified.
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    /// Removes an object. Idempotent: deleting a missing object is `Ok`.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;
}

macro_rules! forward_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl<S: Store + ?Sized> Store for $ty {
            fn location(&self) -> &str {
                (**self).location()
            }
            async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
                (**self).put(key, data, mode).await
            }
            async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
                (**self).get(key).await
            }
            async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
                (**self).get_range(key, range).await
            }
            async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
                (**self).stat(key).await
            }
            async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
                (**self).list(kind).await
            }
            async fn delete(&self, key: &ObjectKey) -> Result<()> {
                (**self).delete(key).await
            }
        }
    };
}

// So wrappers (`RetryStore`, `FaultStore`) can wrap what `open` returns.
forward_store!(Arc<S>);
forward_store!(Box<S>);
