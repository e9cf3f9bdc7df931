//! Put-only backup credentials (issue 12, item 2; format-spec/put-only.md):
//! a host with a credential backs up and deduplicates; it can read and
//! remove nothing; the password holder reads, checks and collects what it
//! wrote; removing the credential's slot revokes it.

use std::sync::Arc;

use nfrepo_engine::{CheckOptions, Error, ErrorCode, ForgetOptions, GcOptions, Operation, ReadDataSubset, Repository};
use nfrepo_format::{Aad, PackId, PutOnlyCredential, SealedKind, Sealer, decode_pack_sealing, read_pack_sealing};
use nfrepo_store::{ObjectKind, Store};

use super::fixture::{PASSWORD, backup_stream, init, memory, pseudo_random, read_file};

fn assert_put_only<T: std::fmt::Debug>(result: nfrepo_engine::Result<T>) {
    let err = result.expect_err("a put-only handle must be refused");
    assert!(matches!(err, Error::PutOnly { .. }), "{err}");
    assert_eq!(err.code(Operation::Restore), ErrorCode::PermissionDenied);
    assert_eq!(err.detail_code(), Some("PUT_ONLY"));
}

/// Every data and tree pack in storage, with its bytes.
async fn packs(store: &dyn Store) -> Vec<(PackId, bytes::Bytes)> {
    let mut out = Vec::new();
    for kind in [ObjectKind::Data, ObjectKind::Tree] {
        for info in store.list(kind).await.unwrap() {
            let id: PackId = info.key.name().parse().unwrap();
            out.push((id, store.get(&info.key).await.unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn a_put_only_host_backs_up_and_the_password_holder_reads_everything() {
    let store = memory();
    let repo = init(store.clone()).await;
    // A backup by the password holder first: its delta is version 1, which
    // the host cannot read.
    let mine = pseudo_random(300_000, 1);
    backup_stream(&repo, "db", "mine.sql", mine.clone()).await.unwrap();
    let before: Vec<PackId> = packs(store.as_ref()).await.into_iter().map(|(id, _)| id).collect();

    let credential = repo.add_put_only_key("web-1").await.unwrap();
    // What the host gets is the file's bytes.
    let file = credential.encode().unwrap();
    let host_credential = PutOnlyCredential::decode(&file).unwrap();

    let data = pseudo_random(2_000_000, 7);
    let host = Repository::open_put_only(store.clone(), host_credential.clone())
        .await
        .unwrap();
    assert!(host.is_put_only());
    let (first, summary) = backup_stream(&host, "web", "site.tar", data.clone()).await.unwrap();
    assert!(summary.summary.packs_added >= 2, "{:?}", summary.summary);
    drop(host);

    // Every pack the session wrote names the session, and nothing in the
    // credential opens it: not the index key, not the id key, not the token's slot check.
    let new_packs: Vec<(PackId, bytes::Bytes)> = packs(store.as_ref())
        .await
        .into_iter()
        .filter(|(id, _)| !before.contains(id))
        .collect();
    assert!(!new_packs.is_empty());
    let cipher = host_credential.cipher;
    let candidates = [
        host_credential.index_sealer(),
        Sealer::new(cipher, host_credential.id_key.clone()),
        Sealer::new(cipher, host_credential.index_key.clone()),
    ];
    for (id, bytes) in &new_packs {
        let (_, sealing, header_len) = decode_pack_sealing(bytes).unwrap();
        assert!(sealing.is_some(), "pack {id} is not a session's");
        assert!(matches!(
            read_pack_sealing(bytes, &host_credential.index_sealer(), &repo.id()),
            Err(nfrepo_format::Error::MissingKey { .. })
        ));
        let tlen = nfrepo_format::trailer_len(&bytes[bytes.len() - 4..]).unwrap();
        let trailer = &bytes[bytes.len() - 4 - tlen..bytes.len() - 4];
        for sealer in &candidates {
            assert!(matches!(
                sealer.open("trailer", Aad::object(SealedKind::PackTrailer, repo.id().0), trailer),
                Err(nfrepo_format::Error::Authentication { .. })
            ));
        }
        assert!(header_len == nfrepo_format::SESSION_PACK_HEADER_LEN);
    }

    // A second session deduplicates against the first one's delta.
    let host = Repository::open_put_only(store.clone(), host_credential.clone())
        .await
        .unwrap();
    let (second, again) = backup_stream(&host, "web", "site.tar", data.clone()).await.unwrap();
    assert!(
        again.summary.packs_added <= 1,
        "at most a tree pack: {:?}",
        again.summary
    );
    assert!(again.summary.bytes_added_raw < 10_000, "{:?}", again.summary);

    // The host reads and removes nothing, before touching storage.
    assert_put_only(host.reader().await);
    assert_put_only(host.snapshots().await);
    assert_put_only(host.find_snapshot(&first.to_hex()).await);
    assert_put_only(host.check(&CheckOptions::default()).await);
    assert_put_only(host.gc(&GcOptions::default()).await);
    assert_put_only(host.forget(&ForgetOptions::default()).await);
    assert_put_only(host.repair_index(true).await);
    assert_put_only(host.list_keys(PASSWORD).await);
    assert_put_only(host.add_put_only_key("another").await);
    assert_put_only(host.verify_snapshot(&first.to_hex(), true).await);
    drop(host);

    // The password holder restores both byte for byte, and checks every pack.
    let holder = Repository::open(store.clone(), PASSWORD).await.unwrap();
    let reader = holder.reader().await.unwrap();
    for id in [first, second] {
        let entry = holder.find_snapshot(&id.to_hex()).await.unwrap();
        assert_eq!(entry.snapshot.source, "web");
        assert_eq!(read_file(&reader, &entry, "site.tar").await.unwrap(), data);
    }
    let mut options = CheckOptions::default();
    options.merkle = true;
    options.read_data = Some(ReadDataSubset::All);
    let report = holder.check(&options).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.snapshots.len(), 3);
}

#[tokio::test]
async fn removing_the_slot_revokes_the_credential() {
    let store = memory();
    let repo = init(store.clone()).await;
    let credential = repo.add_put_only_key("web-1").await.unwrap();
    let other = repo.add_put_only_key("web-2").await.unwrap();
    Repository::open_put_only(store.clone(), credential.clone())
        .await
        .unwrap();
    // The slot is listed like a key slot, and password openers skip it.
    let keys = repo.list_keys(PASSWORD).await.unwrap();
    assert_eq!(keys.len(), 3);
    Repository::open(store.clone(), PASSWORD).await.unwrap();

    repo.remove_key(PASSWORD, &credential.slot).await.unwrap();
    let err = Repository::open_put_only(store.clone(), credential.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RevokedCredential { .. }), "{err}");
    assert_eq!(err.code(Operation::Backup), ErrorCode::PermissionDenied);
    assert_eq!(err.detail_code(), Some("REVOKED_CREDENTIAL"));
    // The other credential still opens; its slot is no use to the revoked one.
    Repository::open_put_only(store.clone(), other.clone()).await.unwrap();
    let mut forged = credential.clone();
    forged.slot = other.slot;
    let err = Repository::open_put_only(store, forged).await.unwrap_err();
    assert!(matches!(err, Error::RevokedCredential { .. }), "{err}");
}

/// After put-only backups, `key rotate --reseal` seals everything again
/// under the new epoch (the sessions' packs, snapshots and the version-2
/// delta included), drops epoch 0, and every snapshot still restores; the
/// rotation revoked the credential.
#[tokio::test]
async fn rotation_with_reseal_takes_in_what_put_only_sessions_wrote() {
    let store = memory();
    let repo = init(store.clone()).await;
    let mine = pseudo_random(200_000, 3);
    backup_stream(&repo, "db", "mine.sql", mine.clone()).await.unwrap();
    let credential = repo.add_put_only_key("web-1").await.unwrap();
    let data = pseudo_random(1_500_000, 9);
    let host = Repository::open_put_only(store.clone(), credential.clone())
        .await
        .unwrap();
    backup_stream(&host, "web", "site.tar", data.clone()).await.unwrap();
    drop(host);

    let options = nfrepo_engine::ResealOptions::default()
        .gc(GcOptions::default().grace(std::time::Duration::ZERO))
        .batch_packs(2);
    let (rotated, report) = repo
        .rotate_keys_and_reseal(PASSWORD, nfrepo_engine::RotateOptions::default(), &options)
        .await
        .unwrap();
    assert_eq!(rotated.epoch, 1);
    assert!(report.finished, "{report:?}");
    assert_eq!(report.dropped_epochs, vec![0], "{report:?}");
    assert_eq!(report.snapshots.len(), 2, "{report:?}");

    // No session pack is left: every pack is sealed under the repository's keys.
    for (id, bytes) in packs(store.as_ref()).await {
        assert!(
            decode_pack_sealing(&bytes).unwrap().1.is_none(),
            "pack {id} still a session's"
        );
    }
    let holder = Repository::open(store.clone(), PASSWORD).await.unwrap();
    let reader = holder.reader().await.unwrap();
    let snapshots = holder.snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 2);
    for entry in &snapshots {
        let (name, want) = if entry.snapshot.source == "web" {
            ("site.tar", &data)
        } else {
            ("mine.sql", &mine)
        };
        assert_eq!(&read_file(&reader, entry, name).await.unwrap(), want);
    }
    let mut check = CheckOptions::default();
    check.read_data = Some(ReadDataSubset::All);
    let report = holder.check(&check).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    // The rotation deleted the credential's slot.
    let err = Repository::open_put_only(store, credential).await.unwrap_err();
    assert!(matches!(err, Error::RevokedCredential { .. }), "{err}");
}

// Issue 12, item 2: a put-only host whose storage credentials may put but
// not delete (format-spec/put-only.md, "Storage without delete permission").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_may_not_delete_leaves_its_markers_to_expire() {
    use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore};

    use super::gc::{HOUR, age};

    let memory = MemoryStore::new();
    let faults = Arc::new(FaultStore::new(memory.clone()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store.clone()).await;
    let credential = repo.add_put_only_key("no-delete").await.unwrap();
    faults.add_rule(FaultRule::new(
        FaultOp::Delete,
        Fault::Fail(ErrorKind::PermissionDenied),
    ));
    let host = Repository::open_put_only(store.clone(), credential).await.unwrap();
    let first = pseudo_random(700_000, 31);
    let second = pseudo_random(500_000, 32);
    let (a, _) = backup_stream(&host, "web", "a.bin", first.clone()).await.unwrap();
    let (b, _) = backup_stream(&host, "web", "b.bin", second.clone()).await.unwrap();
    drop(host);
    // Both sessions committed; their markers could not be removed.
    assert_eq!(memory.list(ObjectKind::Session).await.unwrap().len(), 2);

    // The key holder's storage credentials may delete. Until the markers
    // expire gc counts them as live sessions; then it removes them.
    faults.clear();
    let options = GcOptions::default().grace(HOUR);
    let report = repo.gc(&options).await.unwrap();
    assert_eq!((report.live_sessions, report.expired_sessions_removed), (2, 0));
    age(&memory, ObjectKind::Session, nfrepo_engine::SESSION_EXPIRY + HOUR).await;
    let report = repo.gc(&options).await.unwrap();
    assert_eq!((report.live_sessions, report.expired_sessions_removed), (0, 2));
    assert!(memory.list(ObjectKind::Session).await.unwrap().is_empty());
    let reader = repo.reader().await.unwrap();
    for (id, name, want) in [(a, "a.bin", &first), (b, "b.bin", &second)] {
        let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
        assert_eq!(&read_file(&reader, &entry, name).await.unwrap(), want);
    }
}
