//! nfrepo's repository objects on an OpenDAL `Operator`.
//!
//! This crate stores and fetches whole repository objects (config, key slots,
//! packs, index deltas, snapshots, session markers, GC plans, leases, audit
//! entries) by typed [`ObjectKey`], on a local directory, S3 or memory. It owns
//! the write-once guarantee ([`PutMode::CreateNew`] is atomic on every backend),
//! atomic writes, retries, and fault injection for tests.
//!
//! It is **not** the repository: it never looks inside objects, does not
//! encrypt or verify, and knows nothing of snapshots or packs beyond their
//! paths. That is `nfrepo-engine`'s job, on top of [`Store`]. It also keeps
//! the machine-local caches the engine fills ([`IndexCache`]): rows of ids
//! and numbers in SQLite, rebuildable from the repository at any time.
//!
//! How the pieces relate: a [`StoreUrl`] plus [`Credentials`] go to [`open`],
//! which returns an [`OpendalStore`] (local directories, S3), a [`RestStore`]
//! (a repository served by `nfrepo serve`, `rest+https://`) or a [`MemoryStore`]
//! (tests) as `Arc<dyn Store>`. Cross-cutting behaviour
//! is a wrapper implementing the same trait: [`RetryStore`] retries
//! [`Error::is_retryable`] failures with backoff and counts them; [`FaultStore`]
//! injects failures, bit flips, truncation, losses, delays and torn writes;
//! [`ObjectLockStore`] gives every write-once object an S3 Object Lock
//! retention ([`ObjectLockPolicy`]), and [`Store::purge`] frees the versions a
//! versioned bucket keeps after a delete.
//! Every failure is an [`Error`] whose [`ErrorKind`] says whether to retry.
//!
//! ```
//! use bytes::Bytes;
//! use nfrepo_store::{Credentials, ErrorKind, ObjectKey, ObjectKind, OpenOptions, PutMode, RetryPolicy, RetryStore, Store, StoreUrl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> nfrepo_store::Result<()> {
//! let url = StoreUrl::parse("memory://doc-example")?;
//! let store = RetryStore::new(nfrepo_store::open(&url, &Credentials::none(), &OpenOptions::default())?, RetryPolicy::default());
//! let key = ObjectKey::new(ObjectKind::Snapshot, "5e1f")?;
//! store.put(&key, Bytes::from_static(b"root"), PutMode::CreateNew).await?;
//! let again = store.put(&key, Bytes::from_static(b"other"), PutMode::CreateNew).await;
//! assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
//! assert_eq!(store.get_range(&key, 1..3).await?, Bytes::from_static(b"oo"));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod aligned;
mod backend;
mod cache;
mod credentials;
mod error;
mod fault;
mod index_cache;
mod key;
mod known_files;
mod location;
mod lock;
mod memory;
mod object_cache;
mod pieces;
mod rest;
mod retry;
mod secret_file;
mod session_record;
mod store;

pub use aligned::AlignedBuf;
pub use backend::{DEFAULT_S3_REGION, OpenOptions, OpendalStore, RestStore, open, s3_bucket_operator};
pub use cache::{Cache, NFREPO_CACHE_DIR, ProcessStamp, default_cache_dir};
pub use credentials::{Credentials, NFREPO_ACCESS_KEY_ID, NFREPO_CREDENTIALS_FILE, NFREPO_SECRET_ACCESS_KEY};
pub use error::{Error, ErrorKind, Result, chain_line};
pub use fault::{Fault, FaultOp, FaultRule, FaultStore, Gate};
pub use index_cache::{
    Applied, BlobToCache, CacheState, CacheUpdate, CachedBlob, CachedPack, DeltaToCache, IndexCache, PackToCache,
};
pub use key::{MAX_NAME_LEN, ObjectInfo, ObjectKey, ObjectKind};
pub use known_files::{FileStamp, KnownFiles};
pub use location::StoreUrl;
pub use lock::{ObjectLockPolicy, ObjectLockStore, Retention, RetentionMode};
pub use memory::MemoryStore;
pub use object_cache::{CachedSnapshot, ObjectCache, SnapshotRow};
pub use pieces::Pieces;
pub use rest::{
    MIN_TOKEN_LEN, NFREPO_REST_CA_FILE, NFREPO_REST_TOKEN_FILE, REST_API_PREFIX, REST_ERROR_HEADER,
    REST_MODIFIED_HEADER, REST_SIZE_HEADER, http_client, read_token_file, rest_error_code, rest_error_kind,
    rest_listing_end, rest_listing_line, rest_object_kind,
};
pub use retry::{RetryPolicy, RetryStore};
pub use secret_file::SecretFile;
pub use session_record::{OpenSession, SessionRecord};
pub use store::{ByteStream, ListStream, PutMode, STREAM_PUT_BUFFER, Store, no_object_lock};
