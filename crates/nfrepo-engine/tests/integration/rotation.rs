//! Key rotation (issue 12, item 3): new key epochs, kept and revoked key
//! slots, and rotations interrupted at every storage call.

use std::sync::Arc;

use bytes::Bytes;
use nfrepo_engine::{Error, Repository, RotateOptions};
use nfrepo_format::{IndexDelta, IndexId, KdfParams, KeyHistory, KeyId, Snapshot, SnapshotId, read_pack_entries};
use nfrepo_store::{
    ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKey, ObjectKind, PutMode, Store,
};
use zeroize::Zeroizing;

use super::fixture::{PASSWORD, backup_stream, init, memory, pseudo_random, read_file};

const KEPT: &[u8] = b"kept password";
const REVOKED: &[u8] = b"revoked password";

fn keep(passwords: &[&[u8]]) -> RotateOptions {
    RotateOptions::default().keep_passwords(passwords.iter().map(|p| Zeroizing::new(p.to_vec())).collect())
}

/// The stored bytes of every key slot, by id.
async fn slot_bytes(store: &dyn Store) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for info in store.list(ObjectKind::Key).await.unwrap() {
        if info.key.name().parse::<KeyId>().is_ok() {
            out.push((info.key.name().to_owned(), store.get(&info.key).await.unwrap()));
        }
    }
    out
}

/// Puts a copy of a slot back into `keys/` under a fresh name.
async fn put_back(store: &dyn Store, bytes: &Bytes) {
    let key = ObjectKey::new(ObjectKind::Key, KeyId::random().unwrap().to_hex()).unwrap();
    store.put(&key, bytes.clone(), PutMode::CreateNew).await.unwrap();
}

/// Which snapshots, index deltas and pack trailers `repo`'s sealer opens,
/// by object path (checked by hash first, so every failure is the key's).
async fn opened_objects(store: &dyn Store, repo: &Repository) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for info in store.list(ObjectKind::Snapshot).await.unwrap() {
        let id: SnapshotId = info.key.name().parse().unwrap();
        let bytes = store.get(&info.key).await.unwrap();
        let opened = Snapshot::decode(&id, &bytes, repo.sealer(), &repo.id());
        out.push((info.key.to_string(), opened.is_ok()));
    }
    for info in store.list(ObjectKind::Index).await.unwrap() {
        let id: IndexId = info.key.name().parse().unwrap();
        let bytes = store.get(&info.key).await.unwrap();
        out.push((
            info.key.to_string(),
            IndexDelta::decode(&id, &bytes, repo.sealer(), &repo.id()).is_ok(),
        ));
    }
    for kind in [ObjectKind::Data, ObjectKind::Tree] {
        for info in store.list(kind).await.unwrap() {
            let bytes = store.get(&info.key).await.unwrap();
            out.push((
                info.key.to_string(),
                read_pack_entries(&bytes, repo.sealer(), &repo.id()).is_ok(),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn rotation_seals_new_data_under_a_new_epoch_and_revokes_unkept_slots() {
    let store = memory();
    let repo = init(store.clone()).await;
    let kdf = KdfParams::insecure_for_tests();
    repo.add_key(PASSWORD, KEPT, kdf, "kept@host".into()).await.unwrap();
    repo.add_key(PASSWORD, REVOKED, kdf, "revoked@host".into())
        .await
        .unwrap();
    let before = pseudo_random(300_000, 1);
    backup_stream(&repo, "db", "before.sql", before.clone()).await.unwrap();
    let old_slots = slot_bytes(store.as_ref()).await;
    let old_repo = Repository::open(store.clone(), PASSWORD).await.unwrap();
    assert_eq!(old_repo.epoch(), 0);

    let report = repo.rotate_keys(PASSWORD, keep(&[KEPT])).await.unwrap();
    assert_eq!((report.previous_epoch, report.epoch, report.resumed), (0, 1, false));
    assert_eq!(report.rewritten.len(), 2, "{report:?}");
    assert_eq!(report.revoked.len(), 1, "{report:?}");
    assert_eq!(report.revoked[0].label, "revoked@host");
    // Kept slots keep their names.
    let new_slots = slot_bytes(store.as_ref()).await;
    assert_eq!(new_slots.len(), 2);
    for (name, _) in &new_slots {
        assert!(
            old_slots.iter().any(|(old, _)| old == name),
            "{name} is a rewritten slot"
        );
    }

    assert!(matches!(
        Repository::open(store.clone(), REVOKED).await,
        Err(Error::WrongPassword { .. })
    ));
    let rotated = Repository::open(store.clone(), PASSWORD).await.unwrap();
    assert_eq!(rotated.epoch(), 1);
    let kept = Repository::open(store.clone(), KEPT).await.unwrap();
    assert_eq!(kept.epoch(), 1);
    let after = pseudo_random(200_000, 2);
    backup_stream(&kept, "db", "after.sql", after.clone()).await.unwrap();

    // The new ring opens everything; the old master key only what came before.
    let by_new = opened_objects(store.as_ref(), &rotated).await;
    assert!(by_new.iter().all(|(_, ok)| *ok), "{by_new:?}");
    let by_old = opened_objects(store.as_ref(), &old_repo).await;
    let opened_by_old = by_old.iter().filter(|(_, ok)| *ok).count();
    assert_eq!(
        opened_by_old,
        by_old.len() / 2,
        "one snapshot, one delta, two packs of each epoch: {by_old:?}"
    );

    // Every snapshot restores byte-identical with the new ring.
    let reader = rotated.reader().await.unwrap();
    let mut snapshots = rotated.snapshots().await.unwrap();
    snapshots.sort_by_key(|s| s.snapshot.time_ns);
    assert_eq!(snapshots.len(), 2);
    for (snapshot, (name, want)) in snapshots.iter().zip([("before.sql", &before), ("after.sql", &after)]) {
        assert_eq!(&read_file(&reader, snapshot, name).await.unwrap(), want, "{name}");
    }

    // A copy of the old slot put back: the password still gets the newest
    // ring; the revoked password's old copy opens the old epoch only, for
    // reading, and may not write.
    for (_, bytes) in &old_slots {
        put_back(store.as_ref(), bytes).await;
    }
    assert_eq!(Repository::open(store.clone(), PASSWORD).await.unwrap().epoch(), 1);
    let stale = Repository::open(store.clone(), REVOKED).await.unwrap();
    assert_eq!(stale.epoch(), 0);
    assert!(matches!(
        stale.require_current_ring(),
        Err(Error::StaleKeySlot { epoch: 0, newest: 1 })
    ));
    let refused = backup_stream(&stale, "db", "leak.sql", b"secret".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::StaleKeySlot { .. }), "{refused:?}");
    assert_eq!(refused.detail_code(), Some("STALE_KEY_SLOT"));
    assert!(matches!(
        stale.rotate_keys(REVOKED, RotateOptions::default()).await,
        Err(Error::StaleKeySlot { .. })
    ));

    // The next rotation revokes the copies put back and draws epoch 2.
    let report = rotated.rotate_keys(PASSWORD, keep(&[KEPT])).await.unwrap();
    assert!(report.resumed, "stale slots mean a rotation to finish: {report:?}");
    assert_eq!(report.epoch, 1);
    assert_eq!(report.revoked.len(), old_slots.len());
    let report = rotated.rotate_keys(PASSWORD, keep(&[KEPT])).await.unwrap();
    assert_eq!((report.previous_epoch, report.epoch, report.resumed), (1, 2, false));
    let twice = Repository::open(store.clone(), KEPT).await.unwrap();
    assert_eq!(twice.epoch(), 2);
    let all = opened_objects(store.as_ref(), &twice).await;
    assert!(all.iter().all(|(_, ok)| *ok), "epochs 0 and 1 still open: {all:?}");
}

#[tokio::test]
async fn a_keep_password_that_opens_nothing_stops_before_any_write() {
    let store = memory();
    let repo = init(store.clone()).await;
    let before = slot_bytes(store.as_ref()).await;
    let err = repo.rotate_keys(PASSWORD, keep(&[b"nobody"])).await.unwrap_err();
    assert!(matches!(err, Error::UnknownKeepPassword { position: 1, .. }), "{err:?}");
    assert_eq!(err.detail_code(), Some("UNKNOWN_KEEP_PASSWORD"));
    assert_eq!(slot_bytes(store.as_ref()).await, before);
    assert_eq!(Repository::open(store, PASSWORD).await.unwrap().epoch(), 0);
}

#[tokio::test]
async fn a_slot_older_than_its_history_is_refused_and_a_missing_history_is_reported() {
    let store = memory();
    let repo = init(store.clone()).await;
    repo.rotate_keys(PASSWORD, RotateOptions::default()).await.unwrap();
    let history = ObjectKey::new(ObjectKind::Key, nfrepo_format::KeyHistory::name(1)).unwrap();
    let bytes = store.get(&history).await.unwrap();
    store.delete(&history).await.unwrap();
    let err = Repository::open(store.clone(), PASSWORD).await.unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err:?}");
    store.put(&history, bytes, PutMode::CreateNew).await.unwrap();
    Repository::open(store, PASSWORD).await.unwrap();
}

/// A rotation stopped at every storage call on `keys/` in turn (as by a kill:
/// nothing more reaches the store) leaves a repository that every kept
/// password opens, whose every snapshot reads back; the next run finishes
/// it at the same epoch.
#[tokio::test]
async fn an_interrupted_rotation_is_finished_by_the_next_run() {
    let mut crash_point = 0;
    loop {
        let faults = Arc::new(FaultStore::new(MemoryStore::new()));
        let store: Arc<dyn Store> = faults.clone();
        let repo = init(store.clone()).await;
        let kdf = KdfParams::insecure_for_tests();
        repo.add_key(PASSWORD, KEPT, kdf, "kept".into()).await.unwrap();
        repo.add_key(PASSWORD, REVOKED, kdf, "revoked".into()).await.unwrap();
        let data = pseudo_random(100_000, crash_point);
        backup_stream(&repo, "db", "data.sql", data.clone()).await.unwrap();

        faults.add_rule(
            FaultRule::new(FaultOp::Any, Fault::Fail(ErrorKind::Unreachable))
                .kind(ObjectKind::Key)
                .after(crash_point),
        );
        let first = repo.rotate_keys(PASSWORD, keep(&[KEPT])).await;
        faults.clear();
        let finished_at_once = first.is_ok();

        for password in [PASSWORD, KEPT] {
            let opened = Repository::open(store.clone(), password)
                .await
                .unwrap_or_else(|e| panic!("crash point {crash_point}: a kept password no longer opens: {e}"));
            let reader = opened.reader().await.unwrap();
            let snapshots = opened.snapshots().await.unwrap();
            assert_eq!(read_file(&reader, &snapshots[0], "data.sql").await.unwrap(), data);
        }

        // The rerun finishes epoch 1, unless the kill came after epoch 1's key
        // history and before any slot named it: that number is skipped.
        let caller_epoch = Repository::open(store.clone(), PASSWORD).await.unwrap().epoch();
        let history_1 = store
            .stat(&ObjectKey::new(ObjectKind::Key, KeyHistory::name(1)).unwrap())
            .await
            .is_ok();
        let expected = if caller_epoch == 0 && history_1 { 2 } else { 1 };
        let report = repo.rotate_keys(PASSWORD, keep(&[KEPT])).await.unwrap();
        if !finished_at_once {
            assert_eq!(report.epoch, expected, "crash point {crash_point}: {report:?}");
        }
        let kept = Repository::open(store.clone(), KEPT).await.unwrap();
        assert!(kept.epoch() >= 1, "crash point {crash_point}");
        kept.require_current_ring().unwrap();
        assert!(
            matches!(
                Repository::open(store.clone(), REVOKED).await,
                Err(Error::WrongPassword { .. })
            ),
            "crash point {crash_point}: the revoked password still opens"
        );
        backup_stream(&kept, "db", "next.sql", b"after".to_vec()).await.unwrap();
        if finished_at_once {
            assert!(crash_point > 3, "the fault never fired");
            break;
        }
        crash_point += 1;
        assert!(crash_point < 64, "a rotation makes fewer than 64 calls on keys/");
    }
}

/// The stored key history opens under its own epoch's key only: a slot of
/// an older epoch (the compromised key) cannot read the secrets it lists.
#[tokio::test]
async fn the_key_history_does_not_open_under_an_older_epoch() {
    let store = memory();
    let repo = init(store.clone()).await;
    repo.rotate_keys(PASSWORD, RotateOptions::default()).await.unwrap();
    let history = ObjectKey::new(ObjectKind::Key, nfrepo_format::KeyHistory::name(1)).unwrap();
    let bytes = store.get(&history).await.unwrap();
    assert_eq!(repo.epoch(), 0, "opened before the rotation");
    assert!(matches!(
        nfrepo_format::KeyHistory::decode(&bytes, 1, repo.sealer(), &repo.id()),
        Err(nfrepo_format::Error::Authentication { .. })
    ));
    let rotated = Repository::open(store, PASSWORD).await.unwrap();
    assert_eq!(rotated.sealer().epochs(), vec![1, 0]);
}
