//! A backup with a local cache lists every pack only when that can find
//! something (issue 14, item 7): after a clean run of the same host it
//! lists none, yet a pack it deduplicated against that has gone is still
//! refused before the commit point (issue 17), and the run after stores the
//! data again; a session that did not commit has its packs adopted.

use std::sync::Arc;

use nfrepo_engine::{BackupOptions, Error, Repository};
use nfrepo_store::{Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, SessionRecord, Store};

use super::fixture::{PASSWORD, backup_stream, init, pseudo_random, read_file, stream_uncommitted};

async fn cached(store: Arc<dyn Store>, dir: &tempfile::TempDir) -> Repository {
    Repository::open(store, PASSWORD)
        .await
        .unwrap()
        .with_index_cache(Some(dir.path().to_owned()))
}

/// A rule that fails every listing of packs: a backup that lists them fails.
fn no_pack_listing(faults: &FaultStore<MemoryStore>) {
    for kind in [ObjectKind::Data, ObjectKind::Tree] {
        faults.add_rule(FaultRule::new(FaultOp::List, Fault::Fail(nfrepo_store::ErrorKind::Other)).kind(kind));
    }
}

async fn restores(repo: &Repository, source: &str, data: &[u8]) {
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&format!("{source}@latest")).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "x").await.unwrap(), data);
}

/// Issue 14 item 7 and issue 17: no pack listing after a clean run, and a
/// missing deduplicated pack is still refused, then stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_run_no_pack_is_listed_and_a_missing_one_is_still_refused() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let host = cached(store.clone(), &cache).await;
    let data = pseudo_random(1_500_000, 14);
    // The first run of the host lists (nothing recorded yet).
    backup_stream(&host, "db", "x", data.clone()).await.unwrap();

    // The next ones list no pack: deduplicated packs are checked one by one.
    no_pack_listing(&faults);
    let (_, snapshot) = backup_stream(&host, "db", "x", data.clone()).await.unwrap();
    assert_eq!(snapshot.summary.blobs_added, 0, "{:?}", snapshot.summary);

    // A pack it deduplicates against goes (outside any nfrepo command): the
    // backup fails before its commit point, naming it.
    let gone: Vec<_> = faults.inner().list(ObjectKind::Data).await.unwrap();
    for info in &gone {
        faults.inner().delete(&info.key).await.unwrap();
    }
    let err = backup_stream(&host, "db", "x", data.clone()).await.unwrap_err();
    let Error::DedupPackMissing { packs } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(packs.len(), gone.len());
    assert_eq!(host.snapshots().await.unwrap().len(), 2, "nothing committed");

    // The failed session makes the next run list: it finds the packs gone
    // and stores the data again.
    faults.clear();
    let (_, snapshot) = backup_stream(&host, "db", "x", data.clone()).await.unwrap();
    assert!(
        snapshot.summary.bytes_added_raw >= data.len() as u64,
        "{:?}",
        snapshot.summary
    );
    restores(&cached(store.clone(), &tempfile::tempdir().unwrap()).await, "db", &data).await;
}

/// A session that did not commit (aborted here; killed is the same once its
/// process is gone) leaves its record, so the next backup of the host lists
/// the packs and adopts what it uploaded; then the record is clean again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_sessions_packs_are_adopted_by_the_next_run_of_the_host() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let host = cached(store.clone(), &cache).await;
    backup_stream(&host, "db", "x", vec![7; 1000]).await.unwrap();

    let data = pseudo_random(12 * 1024 * 1024, 9);
    let session = host
        .begin_backup(BackupOptions::new("db", "stdin", "dump"))
        .await
        .unwrap();
    let session = stream_uncommitted(session, data.clone()).await;
    session.abort().await;
    let record = SessionRecord::open(cache.path(), &host.id().to_hex()).unwrap();
    assert_eq!(record.open_sessions().unwrap().len(), 1);

    let (_, snapshot) = backup_stream(&host, "db", "x", data.clone()).await.unwrap();
    assert!(
        snapshot.summary.bytes_added_raw < 6 * 1024 * 1024,
        "resumed run stored {} of {}",
        snapshot.summary.bytes_added_raw,
        data.len()
    );
    restores(&host, "db", &data).await;
    assert!(record.open_sessions().unwrap().is_empty(), "adopted, so forgotten");
    // And the run after lists nothing again.
    no_pack_listing(&faults);
    backup_stream(&host, "db", "x", data.clone()).await.unwrap();
}

/// A record older than the interval means one full listing again, which
/// notices an indexed pack that has gone and stores its data again instead
/// of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_record_lists_again_and_stores_again_what_is_gone() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let host = cached(store.clone(), &cache).await;
    let data = pseudo_random(1_500_000, 3);
    backup_stream(&host, "a", "x", data.clone()).await.unwrap();
    for info in store.list(ObjectKind::Data).await.unwrap() {
        store.delete(&info.key).await.unwrap();
    }
    let record = SessionRecord::open(cache.path(), &host.id().to_hex()).unwrap();
    let long_ago = chrono::Utc::now().timestamp_nanos_opt().unwrap()
        - i64::try_from(nfrepo_engine::PACK_LISTING_INTERVAL.as_nanos()).unwrap()
        - 1_000_000_000;
    record.set_packs_complete_ns(Some(long_ago)).unwrap();
    let (_, snapshot) = backup_stream(&host, "b", "x", data.clone()).await.unwrap();
    assert!(
        snapshot.summary.bytes_added_raw >= data.len() as u64,
        "{:?}",
        snapshot.summary
    );
    restores(&host, "b", &data).await;
    assert_eq!(
        record.packs_complete_ns().unwrap(),
        None,
        "a listing that found packs missing is not recorded as complete"
    );
}
