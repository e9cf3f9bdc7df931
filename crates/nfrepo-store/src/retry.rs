//! Retrying wrapper: exponential backoff with jitter for retryable errors only.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, stream};

use crate::error::{ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};
use crate::lock::Retention;
use crate::pieces::Pieces;
use crate::store::{ByteStream, ListStream, PutMode, Store};

/// How hard [`RetryStore`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per operation, the first included; 0 counts as 1.
    pub attempts: u32,
    /// The delay before the first retry; it doubles on each later one.
    pub base: Duration,
    /// The longest delay between two attempts.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms base, 5 s cap: about 1.5 s of waiting before giving up.
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based): `min(cap, base * 2^retry)`,
    /// of which the upper half is random so that many clients don't retry in step.
    pub fn delay(&self, retry: u32) -> Duration {
        let full = self.base.saturating_mul(2u32.saturating_pow(retry)).min(self.cap);
        let half = full / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = match (jitter_nanos, getrandom::u64()) {
            (0, _) | (_, Err(_)) => 0,
            (n, Ok(r)) => r % (n + 1),
        };
        half + Duration::from_nanos(jitter)
    }
}

/// Retries [`ErrorKind::Transient`] and [`ErrorKind::Unreachable`] errors of the
/// wrapped store under a [`RetryPolicy`], and counts the retries (for the audit log).
///
/// Other errors return at once: `NotFound`, `AlreadyExists` and `PermissionDenied`
/// will not change by trying again. When a retried [`PutMode::CreateNew`] finds the
/// object already there, an earlier attempt may have landed before its response was
/// lost; the object is read back and the put succeeds if it holds exactly `data`.
#[derive(Debug)]
pub struct RetryStore<S> {
    inner: S,
    policy: RetryPolicy,
    retries: AtomicU64,
}

impl<S: Store> RetryStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            retries: AtomicU64::new(0),
        }
    }

    /// Retries made so far, over all operations.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let attempts = self.policy.attempts.max(1);
        let mut retry = 0;
        loop {
            match attempt(retry).await {
                Err(e) if e.is_retryable() && retry + 1 < attempts => {
                    let delay = self.policy.delay(retry);
                    tracing::debug!(operation = what, error = %e, retry = retry + 1, ?delay, "retrying storage operation");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(operation = what, error = %e, attempts, "storage operation failed after retries");
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

/// Where a retried listing stands.
struct Resume<'a> {
    listing: ListStream<'a>,
    /// The name of the last object yielded.
    last: Option<String>,
    /// Retries since then.
    retry: u32,
}

#[async_trait::async_trait]
impl<S: Store> Store for RetryStore<S> {
    fn location(&self) -> &str {
        self.inner.location()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        self.run("put", |retry| {
            let data = data.clone();
            async move {
                match self.inner.put(key, data.clone(), mode).await {
                    Err(e) if retry > 0 && mode == PutMode::CreateNew && e.kind() == ErrorKind::AlreadyExists => {
                        match self.inner.get(key).await {
                            Ok(stored) if stored == data => Ok(()),
                            _ => Err(e),
                        }
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.run("get", |_| self.inner.get(key)).await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        self.run("get_range", |_| self.inner.get_range(key, range.clone()))
            .await
    }

    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        self.run("get_range", |_| self.inner.get_range_pieces(key, range.clone()))
            .await
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.run("stat", |_| self.inner.stat(key)).await
    }

    /// A names-only listing is retried whole (it is meant for the kinds a
    /// caller collects anyway: snapshots, index deltas).
    async fn list_names(&self, kind: ObjectKind) -> Result<Vec<ObjectKey>> {
        self.run("list", |_| self.inner.list_names(kind)).await
    }

    /// A listing that fails with a retryable error is opened again after
    /// the backoff and resumes after the last object it yielded (listings
    /// are in ascending name order, see [`Store::list_stream`]), so an error
    /// on page 900 of a long listing costs one page, not the whole listing.
    /// The attempts count again from the first after each object yielded.
    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
        let attempts = self.policy.attempts.max(1);
        let start = Resume {
            listing: self.inner.list_stream(kind),
            last: None,
            retry: 0,
        };
        stream::try_unfold(start, move |mut at| async move {
            loop {
                match at.listing.next().await {
                    None => return Ok(None),
                    Some(Ok(info)) => {
                        if at.last.as_deref().is_some_and(|last| info.key.name() <= last) {
                            continue;
                        }
                        at.retry = 0;
                        at.last = Some(info.key.name().to_owned());
                        return Ok(Some((info, at)));
                    }
                    Some(Err(e)) if e.is_retryable() && at.retry + 1 < attempts => {
                        let delay = self.policy.delay(at.retry);
                        tracing::debug!(operation = "list", error = %e, retry = at.retry + 1, ?delay, "retrying a listing");
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        at.retry += 1;
                        at.listing = self.inner.list_stream(kind);
                    }
                    Some(Err(e)) => {
                        if e.is_retryable() {
                            tracing::warn!(operation = "list", error = %e, attempts, "storage operation failed after retries");
                        }
                        return Err(e);
                    }
                }
            }
        })
        .boxed()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.run("delete", |_| self.inner.delete(key)).await
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.run("object_lock_enabled", |_| self.inner.object_lock_enabled())
            .await
    }

    async fn set_retention(&self, key: &ObjectKey, retention: Retention) -> Result<()> {
        self.run("set_retention", |_| self.inner.set_retention(key, retention))
            .await
    }

    async fn purge(&self, key: &ObjectKey) -> Result<()> {
        self.run("purge", |_| self.inner.purge(key)).await
    }

    async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.run("list_purgeable", |_| self.inner.list_purgeable(kind)).await
    }

    /// Retries opening the stream; an error in the middle of it is the caller's to retry.
    async fn get_range_stream(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteStream<'static>> {
        self.run("get_range", |_| self.inner.get_range_stream(key, range.clone()))
            .await
    }

    fn streams_ranges(&self) -> bool {
        self.inner.streams_ranges()
    }

    /// Retries opening the stream; an error in the middle of it is the caller's to retry.
    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream<'static>> {
        self.run("get_stream", |_| self.inner.get_stream(key)).await
    }

    /// Not retried: the body is consumed by the first attempt, so the caller
    /// retries the whole transfer (nothing is stored by a failed one).
    async fn put_stream(&self, key: &ObjectKey, body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
        self.inner.put_stream(key, body, mode).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::TryStreamExt;

    use super::*;
    use crate::fault::{Fault, FaultOp, FaultRule, FaultStore};
    use crate::memory::MemoryStore;

    fn tiny() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
        }
    }

    fn memory() -> MemoryStore {
        MemoryStore::new()
    }

    fn key() -> ObjectKey {
        ObjectKey::new(ObjectKind::Snapshot, "s1").unwrap()
    }

    async fn faulty(fault: Fault, op: FaultOp, times: Option<u64>) -> FaultStore<MemoryStore> {
        let store = FaultStore::new(memory());
        store
            .inner()
            .put(&key(), Bytes::from_static(b"snapshot"), PutMode::CreateNew)
            .await
            .unwrap();
        let mut rule = FaultRule::new(op, fault);
        rule.times = times;
        store.add_rule(rule);
        store
    }

    #[tokio::test]
    async fn transient_errors_are_retried() {
        let store = RetryStore::new(
            faulty(Fault::Fail(ErrorKind::Transient), FaultOp::Get, Some(2)).await,
            tiny(),
        );
        assert_eq!(store.get(&key()).await.unwrap(), Bytes::from_static(b"snapshot"));
        assert_eq!(store.retries(), 2);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::AlreadyExists,
        ] {
            let store = RetryStore::new(faulty(Fault::Fail(kind), FaultOp::Get, Some(1)).await, tiny());
            assert_eq!(store.get(&key()).await.unwrap_err().kind(), kind);
            assert_eq!(store.retries(), 0);
        }
        let store = RetryStore::new(memory(), tiny());
        let missing = ObjectKey::new(ObjectKind::Index, "missing").unwrap();
        assert_eq!(store.get(&missing).await.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.retries(), 0);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let store = RetryStore::new(
            faulty(Fault::Fail(ErrorKind::Unreachable), FaultOp::Any, None).await,
            tiny(),
        );
        let err = store.get(&key()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unreachable);
        assert_eq!(store.retries(), 4);
    }

    #[tokio::test]
    async fn retried_create_new_accepts_its_own_earlier_write() {
        // The first attempt lands but reports failure, as when a response is lost.
        let store = FaultStore::new(memory());
        store.add_rule(FaultRule::new(FaultOp::Put, Fault::TornWrite { len: u64::MAX }).times(1));
        let store = RetryStore::new(store, tiny());
        let data = Bytes::from_static(b"pack bytes");
        store.put(&key(), data.clone(), PutMode::CreateNew).await.unwrap();
        assert_eq!(store.retries(), 1);
        assert_eq!(store.get(&key()).await.unwrap(), data);

        // A torn first attempt leaves different bytes: the conflict is reported.
        let store = FaultStore::new(memory());
        store.add_rule(FaultRule::new(FaultOp::Put, Fault::TornWrite { len: 4 }).times(1));
        let store = RetryStore::new(store, tiny());
        let err = store.put(&key(), data, PutMode::CreateNew).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    }

    #[tokio::test]
    async fn wraps_a_shared_store() {
        let shared: Arc<dyn Store> = Arc::new(memory());
        let store = RetryStore::new(Arc::clone(&shared), RetryPolicy::default());
        store
            .put(&key(), Bytes::from_static(b"x"), PutMode::CreateNew)
            .await
            .unwrap();
        assert_eq!(shared.get(&key()).await.unwrap(), Bytes::from_static(b"x"));
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy::default();
        for retry in 0..20 {
            let delay = policy.delay(retry);
            let full = policy.base.saturating_mul(1 << retry.min(16)).min(policy.cap);
            assert!(delay >= full / 2 && delay <= full, "{retry}: {delay:?}");
        }
        assert!(policy.delay(10) <= policy.cap);
    }

    #[tokio::test]
    async fn a_listing_cut_off_resumes_after_the_last_object() {
        let memory = MemoryStore::new();
        for name in ["aa1", "bb1", "cc1", "cc2", "dd1"] {
            let key = ObjectKey::new(ObjectKind::Data, name).unwrap();
            memory
                .put(&key, Bytes::from_static(b"p"), PutMode::CreateNew)
                .await
                .unwrap();
        }
        let faults = FaultStore::new(memory.clone());
        faults.add_rule(
            FaultRule::new(FaultOp::List, Fault::Fail(ErrorKind::Transient))
                .name_prefix("cc")
                .times(2),
        );
        let store = RetryStore::new(faults, tiny());
        let names: Vec<String> = store
            .list_stream(ObjectKind::Data)
            .map_ok(|info| info.key.name().to_owned())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(names, ["aa1", "bb1", "cc1", "cc2", "dd1"], "each object once, in order");
        assert_eq!(store.retries(), 2);

        // A listing that keeps failing gives up after the policy's attempts,
        // having yielded what came before the failure.
        let faults = FaultStore::new(memory);
        faults.add_rule(FaultRule::new(FaultOp::List, Fault::Fail(ErrorKind::Transient)).name_prefix("cc"));
        let store = RetryStore::new(faults, tiny());
        let mut listing = store.list_stream(ObjectKind::Data);
        assert_eq!(listing.next().await.unwrap().unwrap().key.name(), "aa1");
        assert_eq!(listing.next().await.unwrap().unwrap().key.name(), "bb1");
        assert_eq!(listing.next().await.unwrap().unwrap_err().kind(), ErrorKind::Transient);
        assert!(listing.next().await.is_none());
        assert_eq!(store.retries(), u64::from(tiny().attempts - 1));
    }
}
