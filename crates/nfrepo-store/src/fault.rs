//! Fault injection for tests: a [`Store`] wrapper that fails, corrupts, hides or delays.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use crate::error::{Error, ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};
use crate::lock::Retention;
use crate::pieces::Pieces;
use crate::store::{ByteStream, ListStream, PutMode, Store};

/// Which calls a [`FaultRule`] applies to. `get_range` and `get_range_pieces`
/// count as [`FaultOp::Get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultOp {
    /// [`Store::put`].
    Put,
    /// [`Store::get`], [`Store::get_range`] and [`Store::get_range_pieces`].
    Get,
    /// [`Store::list`].
    List,
    /// [`Store::delete`].
    Delete,
    /// [`Store::stat`].
    Stat,
    /// Every operation.
    Any,
}

/// What happens when a [`FaultRule`] fires. A fault that means nothing for the
/// operation (say `FlipBit` on a delete) is ignored, though the call still counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Return an error of this kind without calling the wrapped store. A
    /// list rule with a `name_prefix` instead cuts the listing off midway:
    /// it yields the objects before the first one so named, then this error.
    Fail(ErrorKind),
    /// Flip bit `bit` (0–7) of byte `byte` of the data a get or get_range returns;
    /// `byte` is an offset from the start of the object, so a range that doesn't
    /// cover it is unaffected.
    FlipBit {
        /// Offset from the start of the object.
        byte: u64,
        /// Bit within the byte, 0 = least significant.
        bit: u8,
    },
    /// The object appears to end after `len` bytes: get returns a prefix, get_range
    /// past `len` fails with [`ErrorKind::Corrupted`], stat and list report the
    /// shorter size.
    Truncate {
        /// The apparent length.
        len: u64,
    },
    /// The object appears missing: get, get_range and stat return
    /// [`ErrorKind::NotFound`], list omits it. For a list rule, `name_prefix`
    /// selects which entries are omitted (all of the kind if `None`).
    Lose,
    /// Sleep this long before calling the wrapped store.
    Delay(Duration),
    /// Write only the first `len` bytes (under the final name, as a non-atomic
    /// backend might), then return [`ErrorKind::Transient`]. A `len` at least the
    /// data's length models a write that landed but whose response was lost.
    TornWrite {
        /// Bytes actually written.
        len: u64,
    },
    /// Hold the call at `gate` until the test opens it, then carry it out.
    /// This reproduces a race exactly: the test waits until the call is
    /// [`Gate::reached`], does what the other party would do meanwhile, then
    /// [`Gate::open`]s.
    Pause(Gate),
}

/// A point where [`Fault::Pause`] holds calls until the test lets them go.
///
/// Clones share one gate. Two gates are equal only if they are the same gate.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<GateState>,
}

#[derive(Debug)]
struct GateState {
    /// How many calls have arrived at the gate so far.
    arrived: tokio::sync::watch::Sender<u64>,
    /// Whether the gate is open (for good).
    open: tokio::sync::watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Gate {}

impl Gate {
    /// A closed gate.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(GateState {
                arrived: tokio::sync::watch::channel(0).0,
                open: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    /// Waits until at least one call is held at (or has passed) the gate.
    pub async fn reached(&self) {
        let mut arrived = self.inner.arrived.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = arrived.wait_for(|n| *n > 0).await;
    }

    /// How many calls have arrived at the gate.
    #[must_use]
    pub fn arrivals(&self) -> u64 {
        *self.inner.arrived.borrow()
    }

    /// Opens the gate: every held call goes on, and later ones pass at once.
    pub fn open(&self) {
        self.inner.open.send_replace(true);
    }

    async fn pass(&self) {
        let mut open = self.inner.open.subscribe();
        self.inner.arrived.send_modify(|n| *n += 1);
        let _ = open.wait_for(|open| *open).await;
    }
}

/// When and how a [`FaultStore`] misbehaves.
///
/// A call matches if its operation, kind and name fit the filters (a list call has
/// no name, so `name_prefix` never excludes it). The first `after` matching calls
/// pass untouched; the next `times` (or all, if `None`) fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// The operation to affect.
    pub op: FaultOp,
    /// Only objects of this kind, if set.
    pub kind: Option<ObjectKind>,
    /// Only objects whose name starts with this, if set.
    pub name_prefix: Option<String>,
    /// Let this many matching calls pass first.
    pub after: u64,
    /// Fire this many times, then never again; `None` fires forever.
    pub times: Option<u64>,
    /// What to do.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule that fires on every `op` call from the first one on.
    pub fn new(op: FaultOp, fault: Fault) -> Self {
        Self {
            op,
            kind: None,
            name_prefix: None,
            after: 0,
            times: None,
            fault,
        }
    }

    /// A rule that holds every `op` call at a new gate, and that gate
    /// (see [`Fault::Pause`]).
    pub fn pause(op: FaultOp) -> (Self, Gate) {
        let gate = Gate::new();
        (Self::new(op, Fault::Pause(gate.clone())), gate)
    }

    /// Restricts the rule to objects of `kind`.
    #[must_use]
    pub fn kind(mut self, kind: ObjectKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Restricts the rule to object names starting with `prefix`.
    #[must_use]
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// Lets `n` matching calls pass first.
    #[must_use]
    pub fn after(mut self, n: u64) -> Self {
        self.after = n;
        self
    }

    /// Fires only `n` times.
    #[must_use]
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }
}

#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    seen: u64,
    fired: u64,
}

/// Wraps any [`Store`] and applies [`FaultRule`]s, in the order they were added, to
/// the calls passing through. Every rule that fires on a call applies, so a `Delay`
/// rule and a `FlipBit` rule can combine.
#[derive(Debug)]
pub struct FaultStore<S> {
    inner: S,
    rules: Mutex<Vec<ActiveRule>>,
    /// Frame size of [`Store::get_range_stream`] when it acts as a remote
    /// store's ([`FaultStore::streaming_ranges`]).
    frame: Option<usize>,
}

impl<S: Store> FaultStore<S> {
    /// Wraps `inner` with no rules.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rules: Mutex::new(Vec::new()),
            frame: None,
        }
    }

    /// Acts as a remote store for ranged streams: [`Store::streams_ranges`]
    /// answers `true`, and [`Store::get_range_stream`] yields a range in
    /// frames of `frame` bytes (at least one), as a response arrives. A
    /// [`Fault::Truncate`] inside the range then yields the bytes before
    /// the cut and an error, as a connection lost midway would.
    #[must_use]
    pub fn streaming_ranges(mut self, frame: usize) -> Self {
        self.frame = Some(frame.max(1));
        self
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: FaultRule) {
        self.lock().push(ActiveRule {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    /// How many times the rules fired, all together.
    pub fn fired(&self) -> u64 {
        self.lock().iter().map(|active| active.fired).sum()
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The wrapped store, for setting up or inspecting state without faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ActiveRule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts this call against every matching rule and returns the faults that fire.
    fn fire(&self, op: FaultOp, kind: ObjectKind, name: Option<&str>) -> Vec<FaultRule> {
        let mut rules = self.lock();
        let mut fired = Vec::new();
        for active in rules.iter_mut() {
            let rule = &active.rule;
            let op_matches = rule.op == FaultOp::Any || rule.op == op;
            let kind_matches = rule.kind.is_none_or(|k| k == kind);
            let name_matches = match (&rule.name_prefix, name) {
                (Some(prefix), Some(name)) => name.starts_with(prefix.as_str()),
                _ => true,
            };
            if !(op_matches && kind_matches && name_matches) {
                continue;
            }
            active.seen += 1;
            if active.seen <= rule.after || rule.times.is_some_and(|t| active.fired >= t) {
                continue;
            }
            active.fired += 1;
            fired.push(rule.clone());
        }
        fired
    }

    /// Applies the faults that act before the call: delays, failures and, where
    /// `lose_applies`, losses.
    async fn before(&self, fired: &[FaultRule], key: Option<&ObjectKey>, lose_applies: bool) -> Result<()> {
        for rule in fired {
            match &rule.fault {
                Fault::Delay(duration) => tokio::time::sleep(*duration).await,
                Fault::Pause(gate) => gate.pass().await,
                Fault::Fail(kind) => return Err(self.error(*kind, format!("injected fault: {kind}"), key)),
                Fault::Lose if lose_applies => {
                    return Err(self.error(ErrorKind::NotFound, "object not found".to_owned(), key));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn error(&self, kind: ErrorKind, message: String, key: Option<&ObjectKey>) -> Error {
        let err = Error::new(kind, message).with_location(self.inner.location());
        match key {
            Some(key) => err.with_key(key),
            None => err,
        }
    }
}

/// Flips `bit` of object byte `byte` in `data`, which holds the object from offset `start`.
fn flip_bit(data: Bytes, start: u64, byte: u64, bit: u8) -> Bytes {
    let Some(index) = byte.checked_sub(start).and_then(|i| usize::try_from(i).ok()) else {
        return data;
    };
    if index >= data.len() {
        return data;
    }
    let mut owned = data.to_vec();
    if let Some(b) = owned.get_mut(index) {
        *b ^= 1 << (bit % 8);
    }
    Bytes::from(owned)
}

/// `pieces` (the object from offset `start`) with the bits `fired` flips
/// flipped, each in the piece that holds it.
fn flip_pieces(fired: &[FaultRule], pieces: Pieces, mut start: u64) -> Pieces {
    let flips: Vec<(u64, u8)> = fired
        .iter()
        .filter_map(|rule| match rule.fault {
            Fault::FlipBit { byte, bit } => Some((byte, bit)),
            _ => None,
        })
        .collect();
    if flips.is_empty() {
        return pieces;
    }
    let parts: Vec<Bytes> = pieces
        .parts()
        .iter()
        .map(|part| {
            let flipped = flips
                .iter()
                .fold(part.clone(), |data, &(byte, bit)| flip_bit(data, start, byte, bit));
            start += part.len() as u64;
            flipped
        })
        .collect();
    Pieces::from_parts(parts)
}

fn clamp(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

#[async_trait::async_trait]
impl<S: Store> Store for FaultStore<S> {
    fn location(&self) -> &str {
        self.inner.location()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        let fired = self.fire(FaultOp::Put, key.kind(), Some(key.name()));
        self.before(&fired, Some(key), false).await?;
        let torn = fired.iter().find_map(|rule| match rule.fault {
            Fault::TornWrite { len } => Some(len),
            _ => None,
        });
        let Some(len) = torn else {
            return self.inner.put(key, data, mode).await;
        };
        let written = data.slice(..clamp(len).min(data.len()));
        self.inner.put(key, written.clone(), mode).await?;
        Err(self.error(
            ErrorKind::Transient,
            format!("injected torn write: wrote {} of {} bytes", written.len(), data.len()),
            Some(key),
        ))
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let fired = self.fire(FaultOp::Get, key.kind(), Some(key.name()));
        self.before(&fired, Some(key), true).await?;
        let mut data = self.inner.get(key).await?;
        for rule in &fired {
            match rule.fault {
                Fault::FlipBit { byte, bit } => data = flip_bit(data, 0, byte, bit),
                Fault::Truncate { len } => data.truncate(clamp(len)),
                _ => {}
            }
        }
        Ok(data)
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        self.get_range_pieces(key, range).await.map(Pieces::into_bytes)
    }

    /// As [`Store::get_range`] (which goes through it): a flipped bit
    /// changes the piece that holds it.
    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        let fired = self.fire(FaultOp::Get, key.kind(), Some(key.name()));
        self.before(&fired, Some(key), true).await?;
        for rule in &fired {
            if let Fault::Truncate { len } = rule.fault
                && range.end > len
            {
                return Err(self.error(
                    ErrorKind::Corrupted,
                    format!(
                        "object is shorter than the requested range {}..{}",
                        range.start, range.end
                    ),
                    Some(key),
                ));
            }
        }
        let pieces = self.inner.get_range_pieces(key, range.clone()).await?;
        Ok(flip_pieces(&fired, pieces, range.start))
    }

    /// With [`FaultStore::streaming_ranges`], the range in frames, a
    /// truncation inside it cutting the stream off with an error;
    /// otherwise what [`Store::get_range_pieces`] returns, as one stream.
    async fn get_range_stream(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteStream<'static>> {
        let Some(frame) = self.frame else {
            let pieces = self.get_range_pieces(key, range).await?;
            return Ok(pieces.into_stream());
        };
        let fired = self.fire(FaultOp::Get, key.kind(), Some(key.name()));
        self.before(&fired, Some(key), true).await?;
        let cut = fired
            .iter()
            .filter_map(|rule| match rule.fault {
                Fault::Truncate { len } if len < range.end => Some(len.max(range.start)),
                _ => None,
            })
            .min();
        let end = cut.unwrap_or(range.end);
        let pieces = if end > range.start {
            flip_pieces(
                &fired,
                self.inner.get_range_pieces(key, range.start..end).await?,
                range.start,
            )
        } else {
            Pieces::default()
        };
        let mut items: Vec<Result<Bytes>> = Vec::new();
        for part in pieces.parts() {
            let mut at = 0;
            while at < part.len() {
                let next = (at + frame).min(part.len());
                items.push(Ok(part.slice(at..next)));
                at = next;
            }
        }
        if let Some(cut) = cut {
            items.push(Err(self.error(
                ErrorKind::Transient,
                format!(
                    "injected fault: connection lost at byte {cut} of the range {}..{}",
                    range.start, range.end
                ),
                Some(key),
            )));
        }
        Ok(futures::stream::iter(items).boxed())
    }

    fn streams_ranges(&self) -> bool {
        self.frame.is_some()
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let fired = self.fire(FaultOp::Stat, key.kind(), Some(key.name()));
        self.before(&fired, Some(key), true).await?;
        let mut info = self.inner.stat(key).await?;
        for rule in &fired {
            if let Fault::Truncate { len } = rule.fault {
                info.size = info.size.min(len);
            }
        }
        Ok(info)
    }

    /// The faults fire when the stream is first polled; `Lose` hides the
    /// selected objects and `Truncate` shrinks their listed size.
    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
        stream::once(async move {
            let (midway, fired): (Vec<_>, Vec<_>) = self
                .fire(FaultOp::List, kind, None)
                .into_iter()
                .partition(|rule| matches!(rule.fault, Fault::Fail(_)) && rule.name_prefix.is_some());
            self.before(&fired, None, false).await?;
            Ok(self.inner.list_stream(kind).try_filter_map(move |mut info| {
                let selected = |rule: &FaultRule| {
                    rule.name_prefix
                        .as_deref()
                        .is_none_or(|prefix| info.key.name().starts_with(prefix))
                };
                if let Some(Fault::Fail(kind)) = midway.iter().find(|rule| selected(rule)).map(|rule| &rule.fault) {
                    let err = self.error(*kind, format!("injected fault: {kind} (listing cut off)"), None);
                    return futures::future::ready(Err(err));
                }
                let mut keep = true;
                for rule in &fired {
                    match rule.fault {
                        Fault::Lose if selected(rule) => keep = false,
                        Fault::Truncate { len } if selected(rule) => info.size = info.size.min(len),
                        _ => {}
                    }
                }
                futures::future::ready(Ok(keep.then_some(info)))
            }))
        })
        .try_flatten()
        .boxed()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let fired = self.fire(FaultOp::Delete, key.kind(), Some(key.name()));
        self.before(&fired, Some(key), false).await?;
        self.inner.delete(key).await
    }

    // Object-lock calls pass through: faults target the object operations above.
    async fn object_lock_enabled(&self) -> Result<bool> {
        self.inner.object_lock_enabled().await
    }

    async fn set_retention(&self, key: &ObjectKey, retention: Retention) -> Result<()> {
        self.inner.set_retention(key, retention).await
    }

    async fn purge(&self, key: &ObjectKey) -> Result<()> {
        self.inner.purge(key).await
    }

    async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list_purgeable(kind).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::memory::MemoryStore;

    const DATA: &[u8] = b"0123456789";

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(ObjectKind::Data, name).unwrap()
    }

    async fn store() -> FaultStore<MemoryStore> {
        let store = FaultStore::new(MemoryStore::new());
        for name in ["aa01", "aa02", "bb01"] {
            store
                .inner()
                .put(&key(name), Bytes::from_static(DATA), PutMode::CreateNew)
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn fail() {
        let s = store().await;
        s.add_rule(FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::PermissionDenied)));
        let err = s.get(&key("aa01")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert_eq!(err.key(), Some("data/aa/aa01"));
        // Other operations are untouched.
        assert_eq!(s.stat(&key("aa01")).await.unwrap().size, 10);
        s.clear();
        assert_eq!(s.get(&key("aa01")).await.unwrap(), DATA);
    }

    #[tokio::test]
    async fn a_flipped_bit_lands_in_the_piece_that_holds_it() {
        let s = FaultStore::new(MemoryStore::new());
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        s.inner()
            .put(&key("cc01"), Bytes::from(data.clone()), PutMode::CreateNew)
            .await
            .unwrap();
        s.add_rule(FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 1500, bit: 2 }));
        let pieces = s.get_range_pieces(&key("cc01"), 900..2100).await.unwrap();
        assert_eq!(pieces.parts().len(), 3, "memory cuts at 1000 and 2000");
        let mut want = data[900..2100].to_vec();
        want[600] ^= 1 << 2;
        assert_eq!(pieces.slice(0..1200).as_deref(), Some(&want[..]));
        assert_eq!(
            s.get_range(&key("cc01"), 1400..1600).await.unwrap(),
            Bytes::copy_from_slice(&want[500..700])
        );
    }

    #[tokio::test]
    async fn flip_bit() {
        let s = store().await;
        s.add_rule(FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 3, bit: 0 }));
        let data = s.get(&key("aa01")).await.unwrap();
        assert_eq!(&data[..], b"0122456789");
        assert_eq!(&s.get_range(&key("aa01"), 2..5).await.unwrap()[..], b"224");
        assert_eq!(&s.get_range(&key("aa01"), 5..8).await.unwrap()[..], b"567");
    }

    #[tokio::test]
    async fn truncate() {
        let s = store().await;
        s.add_rule(FaultRule::new(FaultOp::Any, Fault::Truncate { len: 4 }));
        assert_eq!(&s.get(&key("aa01")).await.unwrap()[..], b"0123");
        assert_eq!(&s.get_range(&key("aa01"), 1..4).await.unwrap()[..], b"123");
        let err = s.get_range(&key("aa01"), 2..6).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        assert_eq!(s.stat(&key("aa01")).await.unwrap().size, 4);
        assert!(s.list(ObjectKind::Data).await.unwrap().iter().all(|i| i.size == 4));
    }

    #[tokio::test]
    async fn lose() {
        let s = store().await;
        s.add_rule(FaultRule::new(FaultOp::Any, Fault::Lose).name_prefix("aa"));
        assert_eq!(s.get(&key("aa01")).await.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            s.get_range(&key("aa02"), 0..1).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(s.stat(&key("aa01")).await.unwrap_err().kind(), ErrorKind::NotFound);
        let listed: Vec<_> = s
            .list(ObjectKind::Data)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(listed, [key("bb01")]);
        assert_eq!(s.get(&key("bb01")).await.unwrap(), DATA);
        // Other kinds are not affected by a kind-restricted rule.
        s.clear();
        s.add_rule(FaultRule::new(FaultOp::List, Fault::Lose).kind(ObjectKind::Index));
        assert_eq!(s.list(ObjectKind::Data).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn delay() {
        let s = store().await;
        s.add_rule(FaultRule::new(FaultOp::Stat, Fault::Delay(Duration::from_millis(30))));
        let start = Instant::now();
        s.stat(&key("aa01")).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        let start = Instant::now();
        s.get(&key("aa01")).await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(30));
    }

    #[tokio::test]
    async fn pause_holds_the_call_until_the_gate_opens() {
        let s = std::sync::Arc::new(store().await);
        let (rule, gate) = FaultRule::pause(FaultOp::Delete);
        s.add_rule(rule.name_prefix("aa"));
        let deleting = tokio::spawn({
            let s = s.clone();
            async move { s.delete(&key("aa01")).await }
        });
        gate.reached().await;
        // Held: the object is still there, and calls the rule does not match pass.
        assert_eq!(s.get(&key("aa01")).await.unwrap(), DATA);
        s.delete(&key("bb01")).await.unwrap();
        assert!(!deleting.is_finished());
        gate.open();
        deleting.await.unwrap().unwrap();
        assert_eq!(s.get(&key("aa01")).await.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(gate.arrivals(), 1);
        // An open gate holds nothing.
        s.delete(&key("aa02")).await.unwrap();
        assert_eq!(gate.arrivals(), 2);
    }

    #[tokio::test]
    async fn torn_write() {
        let s = store().await;
        s.add_rule(FaultRule::new(FaultOp::Put, Fault::TornWrite { len: 3 }));
        let err = s
            .put(&key("cc01"), Bytes::from_static(DATA), PutMode::CreateNew)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(err.is_retryable());
        assert_eq!(&s.inner().get(&key("cc01")).await.unwrap()[..], b"012");
    }

    #[tokio::test]
    async fn after_times_and_filters() {
        let s = store().await;
        s.add_rule(
            FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::Transient))
                .kind(ObjectKind::Data)
                .name_prefix("aa")
                .after(1)
                .times(2),
        );
        let kinds = [
            s.get(&key("aa01")).await.map(drop),
            s.get(&key("bb01")).await.map(drop),
            s.get(&key("aa01")).await.map(drop),
            s.get(&key("aa02")).await.map(drop),
            s.get(&key("aa01")).await.map(drop),
        ]
        .map(|r| r.err().map(|e| e.kind()));
        assert_eq!(
            kinds,
            [None, None, Some(ErrorKind::Transient), Some(ErrorKind::Transient), None]
        );
    }
}
