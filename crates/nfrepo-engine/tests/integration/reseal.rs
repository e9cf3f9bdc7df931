//! Resealing after a key rotation (issue 12, item 3, `key rotate --reseal`
//! and `gc --reseal`): afterwards the old master key opens no object of the
//! repository, an old key slot put back opens nothing, every snapshot
//! restores, and a reseal stopped at any storage call is finished by the
//! next run.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nfrepo_engine::{
    CheckOptions, Error, GcOptions, RESEALED_FROM, ReadDataSubset, Repository, ResealOptions, RotateOptions,
};
use nfrepo_format::{
    Aad, DrillId, DrillRecord, GcPlan, GoodMarker, IndexDelta, IndexId, KdfParams, KeyHistory, KeyId, Lease, PackId,
    ProtectMarker, SessionMarker, Snapshot, SnapshotId, decode_config_body, decode_config_header, read_pack_entries,
};
use nfrepo_store::{
    ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKey, ObjectKind, PutMode, Store,
};

use super::fixture::{PASSWORD, backup_stream, init, memory, pseudo_random, read_file};

const OTHER: &[u8] = b"another password";

/// Reseal options with no grace period: the old packs go in the same run.
fn now() -> ResealOptions {
    ResealOptions::default()
        .gc(GcOptions::default().grace(Duration::ZERO))
        .batch_packs(2)
}

fn hex32(name: &str) -> [u8; 32] {
    hex::decode(name).unwrap().try_into().unwrap()
}

/// Every object of the store that `old`'s keys open (checked by trying the
/// decoder of its kind with `old`'s sealer), by path. Pack blobs are found
/// through the trailer as `new` opens it. Audit entries are sealed to the
/// repository key pair and MACed (keys.md, "Reseal": they are never
/// rewritten) and key slots open by password: neither is a sealed object.
async fn opened_by(store: &dyn Store, old: &Repository, new: &Repository) -> Vec<String> {
    let repo = old.id();
    let sealer = old.sealer();
    let mut opened = Vec::new();
    let mut seen = 0;
    for kind in [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Data,
        ObjectKind::Tree,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Session,
        ObjectKind::Gc,
        ObjectKind::Lease,
        ObjectKind::Protect,
        ObjectKind::Good,
        ObjectKind::Drill,
    ] {
        let listed = if kind == ObjectKind::Config {
            vec![ObjectKey::config()]
        } else {
            store.list(kind).await.unwrap().into_iter().map(|i| i.key).collect()
        };
        for key in listed {
            let bytes = store.get(&key).await.unwrap();
            let name = key.name();
            seen += 1;
            let opens = match kind {
                ObjectKind::Config => {
                    let (header, sealed) = decode_config_header(&bytes).unwrap();
                    decode_config_body(&header, sealed, sealer).is_ok()
                }
                ObjectKind::Key => match KeyHistory::parse_name(name) {
                    Some(epoch) => KeyHistory::decode(&bytes, epoch, sealer, &repo).is_ok(),
                    None => false,
                },
                ObjectKind::Data | ObjectKind::Tree => {
                    let (_, entries) = read_pack_entries(&bytes, new.sealer(), &repo).unwrap();
                    read_pack_entries(&bytes, sealer, &repo).is_ok()
                        || entries.iter().any(|e| {
                            let at = e.offset as usize..(e.offset + e.sealed_len) as usize;
                            sealer
                                .open("blob", Aad::blob(e.kind.sealed_kind(), &e.id), &bytes[at])
                                .is_ok()
                        })
                }
                ObjectKind::Index => {
                    IndexDelta::decode(&name.parse::<IndexId>().unwrap(), &bytes, sealer, &repo).is_ok()
                }
                ObjectKind::Snapshot => Snapshot::decode(&name.parse().unwrap(), &bytes, sealer, &repo).is_ok(),
                ObjectKind::Session => SessionMarker::decode(&bytes, sealer, &repo).is_ok(),
                ObjectKind::Gc => GcPlan::decode(&hex32(name), &bytes, sealer, &repo).is_ok(),
                ObjectKind::Lease => Lease::decode(&bytes, sealer, &repo).is_ok(),
                ObjectKind::Protect => ProtectMarker::decode(&name.parse().unwrap(), &bytes, sealer, &repo).is_ok(),
                ObjectKind::Good => GoodMarker::decode(&name.parse().unwrap(), &bytes, sealer, &repo).is_ok(),
                ObjectKind::Drill => {
                    DrillRecord::decode(&name.parse::<DrillId>().unwrap(), &bytes, sealer, &repo).is_ok()
                }
                _ => unreachable!(),
            };
            if opens {
                opened.push(key.path());
            }
        }
    }
    assert!(seen > 6, "the store holds objects to try");
    opened
}

/// Every snapshot reads back the data it was made from, by file name (its
/// source). In the middle of a reseal a snapshot may be there under its old
/// and its new id: `exact` says it must not.
async fn restores(repo: &Repository, files: &[(&str, &[u8])], exact: bool) {
    let reader = repo.reader().await.unwrap();
    let snapshots = repo.snapshots().await.unwrap();
    if exact {
        assert_eq!(snapshots.len(), files.len());
    }
    for snapshot in &snapshots {
        let (name, want) = files
            .iter()
            .find(|(name, _)| snapshot.snapshot.source == *name)
            .unwrap_or_else(|| panic!("a snapshot of an unknown source {}", snapshot.snapshot.source));
        assert_eq!(&read_file(&reader, snapshot, name).await.unwrap(), want, "{name}");
    }
    for (name, _) in files {
        assert!(
            snapshots.iter().any(|s| s.snapshot.source == *name),
            "no snapshot of {name}"
        );
    }
}

async fn check_clean(repo: &Repository) {
    let mut options = CheckOptions::default();
    options.read_data = Some(ReadDataSubset::All);
    options.merkle = true;
    let report = repo.check(&options).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// A key slot's stored bytes (the first slot `keys/` lists).
async fn slots(store: &dyn Store) -> Vec<Bytes> {
    let mut out = Vec::new();
    for info in store.list(ObjectKind::Key).await.unwrap() {
        if info.key.name().parse::<KeyId>().is_ok() {
            out.push(store.get(&info.key).await.unwrap());
        }
    }
    out
}

async fn put_back(store: &dyn Store, bytes: &Bytes) {
    let key = ObjectKey::new(ObjectKind::Key, KeyId::random().unwrap().to_hex()).unwrap();
    store.put(&key, bytes.clone(), PutMode::CreateNew).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_rotate_and_reseal_the_old_key_opens_nothing_and_everything_restores() {
    let store = memory();
    let repo = init(store.clone()).await;
    repo.add_key(PASSWORD, OTHER, KdfParams::insecure_for_tests(), "other".into())
        .await
        .unwrap();
    let a = pseudo_random(300_000, 1);
    let b = pseudo_random(200_000, 2);
    let (first, _) = backup_stream(&repo, "a.sql", "a.sql", a.clone()).await.unwrap();
    let (second, _) = backup_stream(&repo, "b.sql", "b.sql", b.clone()).await.unwrap();
    repo.protect(&first.to_hex(), "keep it").await.unwrap();
    repo.mark_good(&second.to_hex(), "deployed").await.unwrap();
    let old_slots = slots(store.as_ref()).await;
    let old = Repository::open(store.clone(), PASSWORD).await.unwrap();

    let (rotated, report) = repo
        .rotate_keys_and_reseal(PASSWORD, RotateOptions::default(), &now())
        .await
        .unwrap();
    assert_eq!(rotated.epoch, 1);
    assert!(report.finished, "{report:?}");
    assert_eq!(report.dropped_epochs, vec![0], "{report:?}");
    assert_eq!(report.snapshots.len(), 2, "{report:?}");
    assert_eq!(report.markers_moved, 2, "{report:?}");
    assert_eq!(report.resealed.packs, 4, "two data and two tree packs: {report:?}");
    assert_eq!(report.rewritten.get("config"), Some(&1), "{report:?}");

    let new = Repository::open(store.clone(), PASSWORD).await.unwrap();
    assert_eq!(new.sealer().epochs(), vec![1], "only the current epoch is live");
    let opened = opened_by(store.as_ref(), &old, &new).await;
    assert!(opened.is_empty(), "the old master key still opens {opened:?}");
    restores(&new, &[("a.sql", &a), ("b.sql", &b)], true).await;
    check_clean(&new).await;

    // Snapshots have new ids that name the old ones; markers followed them.
    let moved: Vec<(SnapshotId, SnapshotId)> = report.snapshots.clone();
    for (old_id, new_id) in &moved {
        let entry = new.find_snapshot(&new_id.to_hex()).await.unwrap();
        assert_eq!(
            entry.snapshot.extra.iter().find(|(k, _)| k == RESEALED_FROM).unwrap().1,
            old_id.to_hex()
        );
    }
    let protected = new.protected_snapshots().await.unwrap();
    let new_first = moved.iter().find(|(o, _)| *o == first).unwrap().1;
    assert_eq!(protected.into_iter().collect::<Vec<_>>(), vec![new_first]);
    let good = new.good_markers().await.unwrap();
    let new_second = moved.iter().find(|(o, _)| *o == second).unwrap().1;
    assert_eq!(good.good.keys().copied().collect::<Vec<_>>(), vec![new_second]);

    // Old key slots put back: the passwords get epoch 0, which opens nothing.
    for bytes in &old_slots {
        put_back(store.as_ref(), bytes).await;
    }
    let err = Repository::open(store.clone(), OTHER).await.unwrap_err();
    assert!(matches!(err, Error::RetiredKeyEpoch { epoch: 0, newest: 1 }), "{err:?}");
    assert_eq!(err.detail_code(), Some("RETIRED_KEY_EPOCH"));
    assert_eq!(
        err.code(nfrepo_engine::Operation::Restore),
        nfrepo_engine::ErrorCode::PermissionDenied
    );
    // The password that rotated still gets the new ring first.
    assert_eq!(Repository::open(store.clone(), PASSWORD).await.unwrap().epoch(), 1);

    // A second reseal finds nothing to do.
    let again = new.reseal(&now()).await.unwrap();
    assert!(
        again.finished && again.resealed.packs == 0 && again.snapshots.is_empty(),
        "{again:?}"
    );
}

/// A reseal stopped by the storage failing after each number of writes in
/// turn (as a kill would stop it) is finished by the next run (`gc
/// --reseal`): the repository checks clean, every snapshot restores, and
/// the old key opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseal_interrupted_at_any_write_is_finished_by_the_next_run() {
    let mut crash_point = 0;
    let mut interrupted = 0;
    loop {
        let faults = Arc::new(FaultStore::new(MemoryStore::new()));
        let store: Arc<dyn Store> = faults.clone();
        let repo = init(store.clone()).await;
        let files: Vec<(String, Vec<u8>)> = (0..3)
            .map(|i| (format!("f{i}.sql"), pseudo_random(150_000, 10 + i)))
            .collect();
        for (name, data) in &files {
            backup_stream(&repo, name, name, data.clone()).await.unwrap();
        }
        let protected = repo.snapshots().await.unwrap()[0].id;
        repo.protect(&protected.to_hex(), "").await.unwrap();
        let old = Repository::open(store.clone(), PASSWORD).await.unwrap();
        repo.rotate_keys(PASSWORD, RotateOptions::default()).await.unwrap();
        let rotated = Repository::open(store.clone(), PASSWORD).await.unwrap();

        faults.add_rule(FaultRule::new(FaultOp::Put, Fault::Fail(ErrorKind::Unreachable)).after(crash_point));
        let first = rotated.reseal(&now()).await;
        faults.clear();
        // The dead run's lease would hold off the next one until it expires.
        for info in store.list(ObjectKind::Lease).await.unwrap() {
            store.delete(&info.key).await.unwrap();
        }
        let finished_at_once = first.as_ref().is_ok_and(|r| r.finished);
        if !finished_at_once {
            interrupted += 1;
            // Readable in between, by the new ring.
            let between = Repository::open(store.clone(), PASSWORD).await.unwrap();
            let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
            restores(&between, &refs, false).await;
            let report = between
                .reseal(&now())
                .await
                .unwrap_or_else(|e| panic!("crash point {crash_point}: {e}"));
            assert!(report.finished, "crash point {crash_point}: {report:?}");
        }
        let new = Repository::open(store.clone(), PASSWORD).await.unwrap();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        restores(&new, &refs, true).await;
        check_clean(&new).await;
        let opened = opened_by(store.as_ref(), &old, &new).await;
        assert!(
            opened.is_empty(),
            "crash point {crash_point}: the old key opens {opened:?}"
        );
        assert_eq!(
            new.protected_snapshots().await.unwrap().len(),
            1,
            "crash point {crash_point}"
        );
        if finished_at_once {
            assert!(interrupted > 10, "the fault fired {interrupted} times");
            break;
        }
        crash_point += 1;
        assert!(
            crash_point < 200,
            "a reseal of this repository makes fewer than 200 puts"
        );
    }
}

/// Issue 12: a repack after a rotation copied blobs of the older epoch
/// verbatim into a pack whose trailer is of the new one, so a pack's
/// trailer did not tell its blobs' epoch. A repack now seals such blobs
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repack_after_a_rotation_seals_older_blobs_again() {
    let store = memory();
    let repo = init(store.clone()).await;
    let kept = pseudo_random(1 << 20, 21);
    let gone = pseudo_random(2 << 20, 23);
    let (both, _) = backup_stream(&repo, "a", "f", [kept.clone(), gone].concat())
        .await
        .unwrap();
    backup_stream(&repo, "b", "f", kept.clone()).await.unwrap();
    let old = Repository::open(store.clone(), PASSWORD).await.unwrap();
    repo.rotate_keys(PASSWORD, RotateOptions::default()).await.unwrap();
    let new = Repository::open(store.clone(), PASSWORD).await.unwrap();
    // Forget the first snapshot: two thirds of its data pack are unused.
    store
        .delete(&ObjectKey::new(ObjectKind::Snapshot, both.to_hex()).unwrap())
        .await
        .unwrap();
    let report = new
        .gc(&GcOptions::default().grace(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(report.repacked.packs > 0, "{report:?}");
    for kind in [ObjectKind::Data, ObjectKind::Tree] {
        for info in store.list(kind).await.unwrap() {
            let bytes = store.get(&info.key).await.unwrap();
            let id: PackId = info.key.name().parse().unwrap();
            let (_, entries) = read_pack_entries(&bytes, new.sealer(), &new.id()).unwrap();
            if read_pack_entries(&bytes, old.sealer(), &old.id()).is_ok() {
                continue; // an old pack, planned
            }
            for e in entries {
                let at = e.offset as usize..(e.offset + e.sealed_len) as usize;
                assert!(
                    old.sealer()
                        .open("blob", Aad::blob(e.kind.sealed_kind(), &e.id), &bytes[at])
                        .is_err(),
                    "pack {id} has a current trailer and a blob of the old epoch"
                );
            }
        }
    }
}
