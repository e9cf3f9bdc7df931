//! The cached unlock (format-spec/unlock.md): used only with the right
//! password on the right host while current and while its slot is
//! unchanged; replaced or removed otherwise, and never able to open what
//! the full path would refuse.
//!
//! Whether an open used the cache is read off the file: a full open writes
//! a new file (fresh salt, so new bytes), an open through the cache leaves
//! the bytes as they were.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nfrepo_engine::{Error, Repository, RotateOptions, UnlockCache};
use nfrepo_format::{CachedUnlock, KdfParams, KeySlot, RepoId, UnlockCacheFile};
use nfrepo_store::{ObjectKey, ObjectKind, Store};

use super::fixture::{PASSWORD, init, memory};

const HOST_A: [u8; 32] = [0xa; 32];
const HOST_B: [u8; 32] = [0xb; 32];
const HOUR: Duration = Duration::from_secs(3600);

fn cache(dir: &Path, host: [u8; 32]) -> UnlockCache {
    UnlockCache::for_host(dir.to_owned(), HOUR, host)
        .unwrap()
        .with_kdf(KdfParams::insecure_for_tests())
}

fn cache_file(dir: &Path, repo: &RepoId) -> PathBuf {
    dir.join("unlock").join(repo.to_hex())
}

fn read(dir: &Path, repo: &RepoId) -> Option<Vec<u8>> {
    std::fs::read(cache_file(dir, repo)).ok()
}

fn open_file(dir: &Path, repo: &RepoId, password: &[u8], host: [u8; 32]) -> CachedUnlock {
    UnlockCacheFile::decode(&read(dir, repo).expect("a cache file"))
        .unwrap()
        .open(password, &host, repo)
        .unwrap()
}

async fn slot(store: &Arc<dyn Store>, repo: &Repository) -> KeySlot {
    let id = repo.key_id().unwrap();
    let key = ObjectKey::new(ObjectKind::Key, id.to_hex()).unwrap();
    KeySlot::decode(&store.get(&key).await.unwrap()).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A new repository, a cache directory, and host A's cache in it.
struct Setup {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    repo: Repository,
    a: UnlockCache,
}

impl Setup {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = memory();
        let repo = init(store.clone()).await;
        let a = cache(dir.path(), HOST_A);
        Self { dir, store, repo, a }
    }

    /// Opens with `password` through host A's cache.
    async fn open(&self, password: &[u8]) -> nfrepo_engine::Result<Repository> {
        Repository::open_cached(self.store.clone(), password, Some(&self.a)).await
    }

    /// The cache file's bytes.
    fn bytes(&self) -> Option<Vec<u8>> {
        read(self.dir.path(), &self.repo.id())
    }
}

#[tokio::test]
async fn a_full_open_caches_the_slot_key_and_the_next_open_uses_it() {
    let t = Setup::new().await;
    let first = t.open(PASSWORD).await.unwrap();
    let written = t.bytes().expect("the full open cached its key");
    let entry = open_file(t.dir.path(), &t.repo.id(), PASSWORD, HOST_A);
    assert_eq!(Some(entry.slot), first.key_id());
    assert_eq!(entry.expires - entry.created, 3600);
    assert!((entry.created - now()).abs() < 60);
    let stored = slot(&t.store, &t.repo).await;
    assert_eq!((entry.slot_salt, entry.slot_kdf), (stored.salt, stored.kdf));
    assert_eq!(
        entry.wrapping_key.expose(),
        stored.wrapping_key(PASSWORD).unwrap().expose()
    );
    let mode = std::fs::metadata(cache_file(t.dir.path(), &t.repo.id()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let second = t.open(PASSWORD).await.unwrap();
    assert_eq!(t.bytes(), Some(written), "the cached open wrote nothing");
    assert_eq!(second.id(), t.repo.id());
    assert_eq!(second.key_id(), first.key_id());
    assert_eq!(second.keys().epoch, t.repo.keys().epoch);
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_leaves_the_cache_alone() {
    let t = Setup::new().await;
    t.open(PASSWORD).await.unwrap();
    let written = t.bytes();
    assert!(matches!(t.open(b"wrong").await, Err(Error::WrongPassword { .. })));
    assert_eq!(t.bytes(), written);
}

#[tokio::test]
async fn another_host_cannot_use_the_file() {
    let t = Setup::new().await;
    t.open(PASSWORD).await.unwrap();
    let from_a = t.bytes();
    // The same directory seen from another host (a copied cache): B's open
    // takes the full path and writes its own file.
    Repository::open_cached(t.store.clone(), PASSWORD, Some(&cache(t.dir.path(), HOST_B)))
        .await
        .unwrap();
    assert_ne!(t.bytes(), from_a);
    let file = UnlockCacheFile::decode(&t.bytes().unwrap()).unwrap();
    assert!(matches!(
        file.open(PASSWORD, &HOST_A, &t.repo.id()),
        Err(nfrepo_format::Error::WrongPassword)
    ));
}

#[tokio::test]
async fn an_expired_or_future_cache_is_replaced() {
    let t = Setup::new().await;
    let stored = slot(&t.store, &t.repo).await;
    for (created, expires) in [(now() - 7200, now() - 1), (now() + 3600, now() + 7200)] {
        let forged = CachedUnlock {
            slot: t.repo.key_id().unwrap(),
            slot_kdf: stored.kdf,
            slot_salt: stored.salt,
            wrapping_key: stored.wrapping_key(PASSWORD).unwrap(),
            created,
            expires,
        };
        let bytes = UnlockCacheFile::seal(
            &forged,
            PASSWORD,
            &HOST_A,
            &t.repo.id(),
            KdfParams::insecure_for_tests(),
        )
        .unwrap()
        .encode()
        .unwrap();
        nfrepo_store::SecretFile::unlock(t.dir.path(), &t.repo.id().to_hex())
            .unwrap()
            .write(&bytes)
            .unwrap();
        t.open(PASSWORD).await.unwrap();
        let entry = open_file(t.dir.path(), &t.repo.id(), PASSWORD, HOST_A);
        assert!(
            entry.expires > now() && entry.created <= now(),
            "replaced by a current one"
        );
    }
}

#[tokio::test]
async fn a_password_change_ends_the_cache() {
    let t = Setup::new().await;
    t.open(PASSWORD).await.unwrap();
    t.repo
        .change_password(PASSWORD, b"new", KdfParams::insecure_for_tests())
        .await
        .unwrap();
    // The old password still opens the cache file, whose slot is gone: the
    // file goes and the full path refuses the password.
    assert!(matches!(t.open(PASSWORD).await, Err(Error::WrongPassword { .. })));
    assert_eq!(t.bytes(), None, "the stale cache was removed");
    t.open(b"new").await.unwrap();
    open_file(t.dir.path(), &t.repo.id(), b"new", HOST_A);
}

#[tokio::test]
async fn a_removed_slot_ends_the_cache() {
    let t = Setup::new().await;
    let second = t
        .repo
        .add_key(PASSWORD, b"second", KdfParams::insecure_for_tests(), "t".into())
        .await
        .unwrap();
    t.open(b"second").await.unwrap();
    assert_eq!(open_file(t.dir.path(), &t.repo.id(), b"second", HOST_A).slot, second);
    t.repo.remove_key(PASSWORD, &second).await.unwrap();
    assert!(matches!(t.open(b"second").await, Err(Error::WrongPassword { .. })));
    assert_eq!(t.bytes(), None);
}

#[tokio::test]
async fn a_rotation_rewrites_the_slot_and_the_cache_follows_it() {
    let t = Setup::new().await;
    t.open(PASSWORD).await.unwrap();
    let before = t.bytes();
    t.repo.rotate_keys(PASSWORD, RotateOptions::default()).await.unwrap();
    // Same slot name, fresh salt: the cached key no longer applies, the
    // full path opens the new epoch's ring and caches its key.
    let reopened = t.open(PASSWORD).await.unwrap();
    assert_eq!(reopened.keys().epoch, 1);
    assert_ne!(t.bytes(), before);
    let again = t.open(PASSWORD).await.unwrap();
    assert_eq!(again.keys().epoch, 1);
    let entry = open_file(t.dir.path(), &t.repo.id(), PASSWORD, HOST_A);
    assert_eq!(entry.slot_salt, slot(&t.store, &reopened).await.salt);
}

#[tokio::test]
async fn a_damaged_or_exposed_cache_file_is_not_used() {
    let t = Setup::new().await;
    let file = nfrepo_store::SecretFile::unlock(t.dir.path(), &t.repo.id().to_hex()).unwrap();
    file.write(b"NFRU\x01 not a cache").unwrap();
    t.open(PASSWORD).await.unwrap();
    open_file(t.dir.path(), &t.repo.id(), PASSWORD, HOST_A);

    let good = t.bytes();
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    t.open(PASSWORD).await.unwrap();
    assert_ne!(t.bytes(), good, "a file others can read was not trusted");
    let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_span_is_one_second_to_a_week_and_forget_removes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for ttl in [Duration::ZERO, Duration::from_secs(7 * 86_400 + 1)] {
        assert!(matches!(
            UnlockCache::for_host(dir.path().to_owned(), ttl, HOST_A),
            Err(Error::Invalid(_))
        ));
    }
    let repo = RepoId([5; 32]);
    nfrepo_store::SecretFile::unlock(dir.path(), &repo.to_hex())
        .unwrap()
        .write(b"x")
        .unwrap();
    assert!(UnlockCache::forget(dir.path(), &repo).unwrap());
    assert!(!UnlockCache::forget(dir.path(), &repo).unwrap());
}
