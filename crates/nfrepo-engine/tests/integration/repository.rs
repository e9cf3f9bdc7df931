//! Creating and opening repositories, and key slots.

use nfrepo_engine::{Error, Repository};
use nfrepo_format::KdfParams;

use super::fixture::{PASSWORD, init, memory};

#[tokio::test]
async fn open_checks_the_password_and_init_refuses_twice() {
    let store = memory();
    let repo = init(store.clone()).await;
    let reopened = Repository::open(store.clone(), PASSWORD).await.unwrap();
    assert_eq!(reopened.id(), repo.id());
    assert!(matches!(
        Repository::open(store.clone(), b"wrong").await,
        Err(Error::WrongPassword { .. })
    ));
    assert!(matches!(
        Repository::init(store, PASSWORD, nfrepo_engine::InitOptions::default()).await,
        Err(Error::RepositoryExists { .. })
    ));
    assert!(matches!(
        Repository::open(memory(), PASSWORD).await,
        Err(Error::RepositoryNotFound { .. })
    ));
}

#[tokio::test]
async fn key_slots_can_be_added_changed_and_removed() {
    let store = memory();
    let repo = init(store.clone()).await;
    let kdf = KdfParams::insecure_for_tests();
    let second = repo.add_key(PASSWORD, b"second", kdf, "t".into()).await.unwrap();
    assert!(Repository::open(store.clone(), b"second").await.is_ok());
    assert_eq!(repo.list_keys(PASSWORD).await.unwrap().len(), 2);
    assert!(
        matches!(repo.remove_key(b"second", &second).await, Err(Error::Invalid(_))),
        "not the slot in use"
    );
    repo.remove_key(PASSWORD, &second).await.unwrap();
    assert!(matches!(
        Repository::open(store.clone(), b"second").await,
        Err(Error::WrongPassword { .. })
    ));
    assert!(matches!(
        repo.remove_key(PASSWORD, &second).await,
        Err(Error::Missing { .. })
    ));
    repo.change_password(PASSWORD, b"new", kdf).await.unwrap();
    assert!(matches!(
        Repository::open(store.clone(), PASSWORD).await,
        Err(Error::WrongPassword { .. })
    ));
    assert!(Repository::open(store, b"new").await.is_ok());
}

#[tokio::test]
async fn init_writes_the_zstd_level_and_refuses_one_out_of_range() {
    let store = memory();
    let repo = init(store.clone()).await;
    assert_eq!(repo.config().zstd_level, 1, "the default level");
    let store = memory();
    let mut options = nfrepo_engine::InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    options.zstd_level = 19;
    Repository::init(store.clone(), PASSWORD, options.clone())
        .await
        .unwrap();
    assert_eq!(Repository::open(store, PASSWORD).await.unwrap().config().zstd_level, 19);
    for level in [0, 20, -1] {
        options.zstd_level = level;
        let refused = Repository::init(memory(), PASSWORD, options.clone()).await;
        assert!(
            matches!(&refused, Err(Error::Invalid(m)) if m.contains("zstd level")),
            "level {level}: {refused:?}"
        );
    }
}

/// An open reads the config once and lists `keys/` once, whichever of
/// several slots the password opens: a second read of either fails here.
#[tokio::test]
async fn open_reads_the_config_and_lists_the_key_slots_once() {
    use std::sync::Arc;

    use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, Store};

    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store.clone()).await;
    let kdf = KdfParams::insecure_for_tests();
    repo.add_key(PASSWORD, b"second", kdf, "t".into()).await.unwrap();
    repo.add_key(PASSWORD, b"third", kdf, "t".into()).await.unwrap();
    for password in [PASSWORD, b"second".as_slice(), b"third".as_slice()] {
        faults.clear();
        let second_read = || Fault::Fail(ErrorKind::Unreachable);
        faults.add_rule(
            FaultRule::new(FaultOp::Get, second_read())
                .kind(ObjectKind::Config)
                .after(1),
        );
        faults.add_rule(
            FaultRule::new(FaultOp::List, second_read())
                .kind(ObjectKind::Key)
                .after(1),
        );
        let opened = Repository::open(store.clone(), password).await.unwrap();
        assert_eq!(opened.id(), repo.id());
    }
    faults.clear();
    assert!(matches!(
        Repository::open(store, b"fourth").await,
        Err(Error::WrongPassword { .. })
    ));
}
