//! The `Store` trait: what the engine needs from a place that holds objects.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};
use crate::lock::Retention;
use crate::pieces::Pieces;

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

/// An object's bytes in order, chunk by chunk, as [`Store::get_stream`]
/// reads them or as [`Store::put_stream`] takes them.
pub type ByteStream<'a> = BoxStream<'a, Result<Bytes>>;

/// The objects of one kind, one at a time, as [`Store::list_stream`] yields them.
pub type ListStream<'a> = BoxStream<'a, Result<ObjectInfo>>;

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

    /// Reads `range` of an object as [`Store::get_range`] does, as the
    /// pieces the backend received it in, without joining them into one
    /// buffer: for a caller that takes the range apart anyway (a restore
    /// opening the chunks of a pack range). An S3 store answers with the
    /// response's frames, a local directory with pieces of 512 KiB (each
    /// from the allocator's arenas, not mapped and faulted in afresh); the
    /// others with one piece. A wrapper that does
    /// not forward it still answers correctly, through its own
    /// [`Store::get_range`]; one that does must treat it as that.
    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        self.get_range(key, range).await.map(Pieces::from)
    }

    /// Reads `range` of an object as a stream of its bytes, in order: where
    /// [`Store::streams_ranges`] says so, from one request whose response
    /// is taken as it arrives, so that a caller needing several neighbouring
    /// ranges of a large object asks once and takes them apart as they
    /// come. Bytes not yet polled wait in the transport, not in memory: a
    /// caller bounds what it holds by how far it polls. The stream yields
    /// exactly `range.end - range.start` bytes, or ends with an error
    /// ([`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted) if the object
    /// is shorter); an error in the middle (a connection lost) ends it, and
    /// the caller reads again what it still needs.
    ///
    /// The default reads the range with [`Store::get_range_pieces`] and
    /// yields its pieces.
    async fn get_range_stream(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteStream<'static>> {
        Ok(self.get_range_pieces(key, range).await?.into_stream())
    }

    /// Whether [`Store::get_range_stream`] streams one request's response
    /// (a remote store: each request costs a round trip and the server's
    /// own work per request) rather than reading the range whole first (a
    /// local directory, where one positioned read per range costs nothing
    /// extra and a whole span would be held at once). Wrappers forward it.
    fn streams_ranges(&self) -> bool {
        false
    }

    /// Size and modification time of an object.
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo>;

    /// Every object of `kind` (recursively for Data/Tree), one at a time,
    /// skipping temp files, directories and names that don't validate.
    ///
    /// **Order.** Objects come in strictly ascending byte order of
    /// [`ObjectKey::name`] (each name once), on every backend: two listings
    /// can therefore be compared by merging them, without holding either
    /// (the replicator does). S3 lists in that order natively; a directory
    /// is read one fan-out directory at a time and sorted, so a listing
    /// holds at most one directory's names (for packs, 1/256 of them).
    ///
    /// **Errors.** An error ends the stream: the objects yielded before it
    /// are real, but the listing is incomplete, and a caller must not take
    /// what it has seen for the whole (e.g. to decide that an object is
    /// gone). A missing repository directory is an empty listing, not an error.
    ///
    /// Nothing happens until the stream is polled; each poll may fetch the
    /// next page of the listing. This is the method implementations provide;
    /// [`Store::list`] collects it.
    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_>;

    /// Every object of `kind`, collected from [`Store::list_stream`] (so in
    /// the same order). It holds the whole listing: callers that may see
    /// many objects (packs) use the stream.
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.list_stream(kind).try_collect().await
    }

    /// The keys of every object of `kind`, in the order of [`Store::list`],
    /// without sizes or times: for callers that need only names (which
    /// snapshots or index deltas exist, whether a pack is stored). A local
    /// directory answers it by reading directories alone, without a `stat`
    /// per object, which is most of a listing's cost there; other stores
    /// list as [`Store::list`] does. A wrapper that does not forward it
    /// still answers correctly, through its own listing.
    async fn list_names(&self, kind: ObjectKind) -> Result<Vec<ObjectKey>> {
        self.list_stream(kind).map_ok(|info| info.key).try_collect().await
    }

    /// Removes an object. Idempotent: deleting a missing object is `Ok`.
    ///
    /// On a versioned bucket (S3 Object Lock) this only hides the object behind a
    /// delete marker, as S3 does: its stored versions stay until [`Store::purge`]
    /// removes them.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    // The object-lock calls have no default on purpose: a wrapper that forgot
    // to forward them would silently turn object lock off.

    /// Whether the store is an S3 bucket with Object Lock enabled (and so
    /// versioned). Stores without object lock answer `false`.
    async fn object_lock_enabled(&self) -> Result<bool>;

    /// Sets the object-lock retention of the current version of `key`. The
    /// server refuses to delete that version before `retention.until`; a
    /// retention can be extended but (in compliance mode) never shortened.
    ///
    /// # Errors
    /// [`ErrorKind::Other`] on a store without object lock ([`no_object_lock`]).
    async fn set_retention(&self, key: &ObjectKey, retention: Retention) -> Result<()>;

    /// Frees the space of `key`'s stored versions that are no longer visible:
    /// every non-current version, and all of them when the latest is a delete
    /// marker (then the markers go too, once nothing is left under them). A
    /// no-op on unversioned stores.
    ///
    /// # Errors
    /// [`ErrorKind::Retained`] (with [`Error::retained_until`], the latest
    /// date) when a version is still under retention: every other version is
    /// removed, and the object stays hidden.
    async fn purge(&self, key: &ObjectKey) -> Result<()>;

    /// Objects of `kind` that have stored versions [`Store::purge`] would
    /// remove (deleted objects still kept by a versioned bucket, or overwritten
    /// ones). `size` is the bytes those versions hold. Empty on unversioned stores.
    async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    /// Reads a whole object as a stream of chunks, so that a caller can pass
    /// a large object on without holding it. An error in the middle of the
    /// stream (a connection lost) ends it; the caller starts again.
    ///
    /// The default reads the whole object with [`Store::get`] and yields it
    /// as one chunk; [`OpendalStore`](crate::OpendalStore) streams.
    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream<'static>> {
        let bytes = self.get(key).await?;
        Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
    }

    /// Stores the bytes of `body` under `key`, streamed, and returns how many
    /// there were.
    ///
    /// **Visible only on success.** The object appears under `key` only once
    /// `body` has ended without an error, and then atomically as for
    /// [`Store::put`] (with the same [`PutMode`] semantics). If `body` yields
    /// an error, nothing is stored under `key` (a partial upload or temp file
    /// is aborted and removed) and that error is returned. A caller that
    /// checks the bytes as they pass therefore refuses an object by ending
    /// `body` with an error after its last byte.
    ///
    /// The default collects `body` in memory and calls [`Store::put`];
    /// [`OpendalStore`](crate::OpendalStore) holds at most
    /// [`STREAM_PUT_BUFFER`] bytes of an object at a time.
    async fn put_stream(&self, key: &ObjectKey, mut body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
        let mut all = BytesMut::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk?);
        }
        let len = all.len() as u64;
        self.put(key, all.freeze(), mode).await?;
        Ok(len)
    }
}

/// The [`Store::set_retention`] error of a store without object lock.
pub fn no_object_lock(key: &ObjectKey) -> Error {
    Error::new(ErrorKind::Other, "this store has no object lock").with_key(key)
}

/// The most bytes of one object that [`OpendalStore`](crate::OpendalStore)'s
/// [`Store::put_stream`] holds in memory at once: the part being filled, the
/// part held back until the next one shows whether it is the last (an S3
/// upload of one part is a single `PUT`), and the part being uploaded.
pub const STREAM_PUT_BUFFER: u64 = 3 * STREAM_PART_SIZE as u64;

/// The part size of a streamed S3 upload (S3's minimum part size). An object
/// no larger is stored with a single `PUT`.
pub(crate) const STREAM_PART_SIZE: usize = 5 << 20;

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
            async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
                (**self).get_range_pieces(key, range).await
            }
            async fn get_range_stream(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteStream<'static>> {
                (**self).get_range_stream(key, range).await
            }
            fn streams_ranges(&self) -> bool {
                (**self).streams_ranges()
            }
            async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
                (**self).stat(key).await
            }
            fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
                (**self).list_stream(kind)
            }
            async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
                (**self).list(kind).await
            }
            async fn list_names(&self, kind: ObjectKind) -> Result<Vec<ObjectKey>> {
                (**self).list_names(kind).await
            }
            async fn delete(&self, key: &ObjectKey) -> Result<()> {
                (**self).delete(key).await
            }
            async fn object_lock_enabled(&self) -> Result<bool> {
                (**self).object_lock_enabled().await
            }
            async fn set_retention(&self, key: &ObjectKey, retention: Retention) -> Result<()> {
                (**self).set_retention(key, retention).await
            }
            async fn purge(&self, key: &ObjectKey) -> Result<()> {
                (**self).purge(key).await
            }
            async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
                (**self).list_purgeable(kind).await
            }
            async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream<'static>> {
                (**self).get_stream(key).await
            }
            async fn put_stream(&self, key: &ObjectKey, body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
                (**self).put_stream(key, body, mode).await
            }
        }
    };
}

// So wrappers (`RetryStore`, `FaultStore`) can wrap what `open` returns.
forward_store!(Arc<S>);
forward_store!(Box<S>);
