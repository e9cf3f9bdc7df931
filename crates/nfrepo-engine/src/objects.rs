//! One typed way to read the repository's small objects: list a kind,
//! fetch each object, open it, and classify what went wrong.
//!
//! Every kind of metadata object (snapshots, index deltas, GC plans, protect
//! markers, leases) implements [`RepoObject`], which says where it lives, how
//! its name encodes its id and how it is opened. [`load_all`] then reads all
//! objects of a kind, a bounded number at a time, and sorts each into one of
//! three outcomes:
//!
//! - **good**: it opened;
//! - **damaged**: it is there but does not open. The error says how
//!   ([`Error::Corrupted`] with the format error as its source tells an
//!   authentication failure from undecodable bytes, a wrong kind (bad magic)
//!   or an id mismatch; [`Error::Format`] a newer format version);
//! - **vanished**: it was listed but was gone when fetched. Objects are
//!   deleted by forget, compaction and gc while others list them, so this is
//!   the normal race, never damage.
//!
//! Anything else (the storage refusing access, being unreachable, failing)
//! is not the object's fault and fails the whole load. Names under a kind's
//! prefix that are not an id of that kind are returned as `foreign` (and
//! logged): they are not ours, and leaving them out is said out loud.
//!
//! Object keys of these kinds are built only by [`key`], from the id.

use std::time::SystemTime;

use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_store::{ObjectInfo, ObjectKey, ObjectKind};

use crate::{Error, ErrorClass, Repository, Result};

mod kinds;

pub(crate) use kinds::{LeaseName, PlanId};

/// Objects fetched at once by [`load_all`].
const CONCURRENCY: usize = 16;

/// A kind of repository object that [`load_all`] can read.
pub(crate) trait RepoObject: Sized + Send + std::fmt::Debug + 'static {
    /// What the object's name encodes.
    type Id: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// Where objects of this kind live.
    const KIND: ObjectKind;
    /// What an operator calls one, for messages ("snapshot", "index delta").
    const NOUN: &'static str;

    /// The id a name encodes; `None` for a name that is not one of ours.
    fn parse_name(name: &str) -> Option<Self::Id>;

    /// The object name of `id` (the inverse of [`Self::parse_name`]).
    fn name(id: &Self::Id) -> String;

    /// Opens the stored bytes, checking they belong to `id` and this repository.
    ///
    /// # Errors
    /// The format error exactly as the decoder reports it.
    fn open(repo: &Repository, id: &Self::Id, bytes: &[u8]) -> nfrepo_format::Result<Self>;
}

/// An object that opened.
#[derive(Clone, Debug)]
pub(crate) struct Stored<T: RepoObject> {
    /// Its id.
    pub(crate) id: T::Id,
    /// Where it is.
    pub(crate) key: ObjectKey,
    /// The store's modification time, if the listing had one.
    pub(crate) written: Option<SystemTime>,
    /// The object.
    pub(crate) object: T,
}

/// An object that is there but does not open.
#[derive(Debug)]
pub(crate) struct Damaged<T: RepoObject> {
    /// Its id.
    pub(crate) id: T::Id,
    /// Where it is.
    pub(crate) key: ObjectKey,
    /// Why it does not open; [`Error::class`] is damage or [`ErrorClass::Invalid`].
    pub(crate) error: Error,
}

/// Everything [`load_all`] found of one kind.
#[derive(Debug)]
pub(crate) struct Loaded<T: RepoObject> {
    /// Objects that opened, in name order.
    pub(crate) good: Vec<Stored<T>>,
    /// Objects that do not open, in name order.
    pub(crate) damaged: Vec<Damaged<T>>,
    /// Objects listed but gone when fetched.
    pub(crate) vanished: Vec<ObjectKey>,
    /// Names under the kind's prefix that are not ids of the kind.
    pub(crate) foreign: Vec<ObjectKey>,
}

impl<T: RepoObject> Default for Loaded<T> {
    fn default() -> Self {
        Self {
            good: Vec::new(),
            damaged: Vec::new(),
            vanished: Vec::new(),
            foreign: Vec::new(),
        }
    }
}

impl<T: RepoObject> Loaded<T> {
    /// Files each fetched object under its outcome; returns the name and
    /// stored bytes of each one that opened.
    pub(crate) fn sort_in(&mut self, fetched: Vec<FetchedEntry<T>>) -> Vec<(String, bytes::Bytes)> {
        let mut opened = Vec::new();
        for (id, info, outcome) in fetched {
            match outcome {
                Fetched::Good((object, bytes)) => {
                    opened.push((info.key.name().to_owned(), bytes));
                    self.good.push(Stored {
                        id,
                        key: info.key,
                        written: info.last_modified,
                        object,
                    });
                }
                Fetched::Damaged(error) => self.damaged.push(Damaged {
                    id,
                    key: info.key,
                    error,
                }),
                Fetched::Vanished => self.vanished.push(info.key),
            }
        }
        opened
    }
}

/// What fetching one object came to.
#[derive(Debug)]
pub(crate) enum Fetched<T> {
    /// It opened.
    Good(T),
    /// It is there but does not open.
    Damaged(Error),
    /// It is not there (any more).
    Vanished,
}

/// The key of object `id` of kind `T`.
///
/// # Errors
/// [`nfrepo_store::ErrorKind::InvalidKey`] if the name does not validate (a bug).
pub(crate) fn key<T: RepoObject>(id: &T::Id) -> Result<ObjectKey> {
    ObjectKey::new(T::KIND, T::name(id)).map_err(Error::store)
}

/// Fetches and opens one object.
///
/// # Errors
/// Storage failures that are not about this object (access refused,
/// unreachable, …).
pub(crate) async fn fetch<T: RepoObject>(repo: &Repository, id: &T::Id, key: &ObjectKey) -> Result<Fetched<T>> {
    Ok(match fetch_bytes::<T>(repo, id, key).await? {
        Fetched::Good((object, _)) => Fetched::Good(object),
        Fetched::Damaged(error) => Fetched::Damaged(error),
        Fetched::Vanished => Fetched::Vanished,
    })
}

/// [`fetch`], keeping the stored bytes of an object that opened.
async fn fetch_bytes<T: RepoObject>(
    repo: &Repository,
    id: &T::Id,
    key: &ObjectKey,
) -> Result<Fetched<(T, bytes::Bytes)>> {
    let bytes = match repo.store().get(key).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == nfrepo_store::ErrorKind::NotFound => return Ok(Fetched::Vanished),
        Err(e) if ErrorClass::of_store(&e).is_damage() => return Ok(Fetched::Damaged(Error::store(e))),
        Err(e) => return Err(Error::store(e)),
    };
    Ok(match T::open(repo, id, &bytes) {
        Ok(object) => Fetched::Good((object, bytes)),
        Err(e) => Fetched::Damaged(Error::decode(key.path(), e)),
    })
}

/// Fetches and opens one object that must be there: a vanished one is
/// [`Error::Missing`], a damaged one its error.
///
/// # Errors
/// As [`fetch`], plus those two.
pub(crate) async fn load_one<T: RepoObject>(repo: &Repository, id: &T::Id) -> Result<T> {
    let key = key::<T>(id)?;
    match fetch::<T>(repo, id, &key).await? {
        Fetched::Good(object) => Ok(object),
        Fetched::Damaged(error) => Err(error),
        Fetched::Vanished => Err(Error::Missing {
            object: key.path(),
            detail: format!("the {} is gone", T::NOUN),
        }),
    }
}

/// Lists the objects of kind `T`: each with the id its name encodes. Names
/// that are not ids of `T` are left out, logged.
///
/// # Errors
/// Storage failures.
pub(crate) async fn list<T: RepoObject>(repo: &Repository) -> Result<Vec<(T::Id, ObjectKey)>> {
    let listed = list_names(repo, T::KIND).await?;
    let (named, _foreign) = split_names::<T>(listed);
    Ok(named.into_iter().map(|(id, info)| (id, info.key)).collect())
}

/// The objects of `kind` by name alone ([`nfrepo_store::Store::list_names`]):
/// each entry's size is 0 and its time unknown.
pub(crate) async fn list_names(repo: &Repository, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
    let keys = repo.store().list_names(kind).await.map_err(Error::store)?;
    Ok(keys
        .into_iter()
        .map(|key| ObjectInfo {
            key,
            size: 0,
            last_modified: None,
        })
        .collect())
}

/// Parses each listed name as an id of `T`: the named, and the foreign keys (logged).
pub(crate) fn split_names<T: RepoObject>(listed: Vec<ObjectInfo>) -> (Vec<(T::Id, ObjectInfo)>, Vec<ObjectKey>) {
    let mut named = Vec::with_capacity(listed.len());
    let mut foreign = Vec::new();
    for info in listed {
        match T::parse_name(info.key.name()) {
            Some(id) if info.key.kind() == T::KIND => named.push((id, info)),
            _ => {
                tracing::warn!(object = %info.key, "ignoring an object whose name is not a {} id", T::NOUN);
                foreign.push(info.key);
            }
        }
    }
    (named, foreign)
}

/// Lists every object of kind `T` and loads it (see the module docs).
///
/// # Errors
/// Storage failures that are not about one object.
pub(crate) async fn load_all<T: RepoObject>(repo: &Repository) -> Result<Loaded<T>> {
    let listed = repo.store().list(T::KIND).await.map_err(Error::store)?;
    load_listed(repo, listed).await
}

/// One listed object fetched: its id, listing entry, and the object with
/// its stored bytes.
pub(crate) type FetchedEntry<T> = (<T as RepoObject>::Id, ObjectInfo, Fetched<(T, bytes::Bytes)>);

/// Fetches the listed objects, [`CONCURRENCY`] at a time, keeping the
/// stored bytes of those that open; in name order.
pub(crate) async fn fetch_listed<T: RepoObject>(
    repo: &Repository,
    named: Vec<(T::Id, ObjectInfo)>,
) -> Result<Vec<FetchedEntry<T>>> {
    let mut fetched: Vec<FetchedEntry<T>> = stream::iter(named)
        .map(|(id, info)| async move {
            let outcome = fetch_bytes::<T>(repo, &id, &info.key).await?;
            Ok::<_, Error>((id, info, outcome))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    fetched.sort_by(|a, b| a.1.key.name().cmp(b.1.key.name()));
    Ok(fetched)
}

/// Loads the listed objects of kind `T` (a subset of a listing, or one
/// taken earlier).
///
/// # Errors
/// As [`load_all`].
pub(crate) async fn load_listed<T: RepoObject>(repo: &Repository, listed: Vec<ObjectInfo>) -> Result<Loaded<T>> {
    let (named, foreign) = split_names::<T>(listed);
    let mut loaded = Loaded {
        foreign,
        ..Loaded::default()
    };
    loaded.sort_in(fetch_listed::<T>(repo, named).await?);
    Ok(loaded)
}

/// Every pack in storage, data and tree, with its listing entry; names that
/// are not pack ids are left out with a warning.
///
/// # Errors
/// Storage failures.
pub(crate) async fn list_packs(repo: &Repository) -> Result<Vec<(nfrepo_format::PackId, ObjectInfo)>> {
    let mut out = Vec::new();
    for kind in [ObjectKind::Data, ObjectKind::Tree] {
        for info in repo.store().list(kind).await.map_err(Error::store)? {
            match info.key.name().parse() {
                Ok(id) => out.push((id, info)),
                Err(_) => tracing::warn!(object = %info.key, "ignoring an object whose name is not a pack id"),
            }
        }
    }
    Ok(out)
}
