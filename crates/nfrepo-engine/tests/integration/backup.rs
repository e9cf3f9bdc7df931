//! Backup round trips, dedup, and resuming after an interrupted run.

use nfrepo_engine::BackupOptions;
use nfrepo_format::SnapshotId;

use super::fixture::{backup_stream, backup_stream_with, init, memory, pseudo_random, read_file, stream_uncommitted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_round_trip_at_many_sizes() {
    let repo = init(memory()).await;
    for (i, len) in [0usize, 1, 4095, 70_000, 1_500_000].into_iter().enumerate() {
        let data = pseudo_random(len, i as u64);
        let (id, snapshot) = backup_stream(&repo, &format!("s{i}"), "data.bin", data.clone())
            .await
            .unwrap();
        assert_eq!(snapshot.summary.bytes_read, len as u64);
        let entry = repo.find_snapshot(&id.to_hex()[..12]).await.unwrap();
        let reader = repo.reader().await.unwrap();
        assert_eq!(read_file(&reader, &entry, "data.bin").await.unwrap(), data, "len {len}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_data_is_stored_once() {
    let repo = init(memory()).await;
    let data = pseudo_random(2_000_000, 1);
    let (_, first) = backup_stream(&repo, "a", "x", data.clone()).await.unwrap();
    let (_, second) = backup_stream(&repo, "b", "x", data.clone()).await.unwrap();
    assert!(first.summary.blobs_added > 10);
    assert_eq!(second.summary.blobs_added, 0, "same content, same tree: nothing new");
    // A repeated region inside one stream is also stored once.
    let doubled = [data.clone(), data].concat();
    let (_, third) = backup_stream(&repo, "c", "x", doubled).await.unwrap();
    assert!(third.summary.bytes_added_raw < 300_000, "{:?}", third.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_streams_use_content_list_trees() {
    let repo = init(memory()).await;
    // ~2,500 chunks at the 16 KiB dump average: more than one list blob.
    let data = pseudo_random(40 * 1024 * 1024, 5);
    let (id, _) = backup_stream(&repo, "big", "big.bin", data.clone()).await.unwrap();
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    let node = reader.resolve(&entry, "big.bin").await.unwrap().unwrap();
    let nfrepo_format::NodeKind::File { content, .. } = &node.kind else {
        panic!()
    };
    assert!(matches!(content, nfrepo_format::Content::List { .. }), "{content:?}");
    assert_eq!(read_file(&reader, &entry, "big.bin").await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_hash_the_same_on_two_threads() {
    use sha2::Digest;
    let repo = init(memory()).await;
    // Past the point where cutting and hashing split between two threads.
    let data = pseudo_random(30 * 1024 * 1024, 6);
    let options = BackupOptions::new("long", "stdin", "dump").sha256(true);
    let (id, _) = backup_stream_with(&repo, options, "long.bin", data.clone())
        .await
        .unwrap();
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    let node = reader.resolve(&entry, "long.bin").await.unwrap().unwrap();
    let nfrepo_format::NodeKind::File {
        size, blake3, sha256, ..
    } = node.kind
    else {
        panic!("not a file")
    };
    assert_eq!(size, data.len() as u64);
    assert_eq!(blake3, *blake3::hash(&data).as_bytes());
    assert_eq!(sha256, Some(sha2::Sha256::digest(&data).into()));
    assert_eq!(read_file(&reader, &entry, "long.bin").await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_is_recorded_only_when_the_session_asks() {
    use sha2::Digest;
    let repo = init(memory()).await;
    let data = pseudo_random(200 * 1024, 8);
    let sha = |id: SnapshotId| {
        let repo = repo.clone();
        async move {
            let reader = repo.reader().await.unwrap();
            let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
            match reader.resolve(&entry, "d.sql").await.unwrap().unwrap().kind {
                nfrepo_format::NodeKind::File { sha256, .. } => sha256,
                other => panic!("not a file: {other:?}"),
            }
        }
    };
    let (plain, _) = backup_stream(&repo, "db", "d.sql", data.clone()).await.unwrap();
    assert_eq!(sha(plain).await, None);
    let options = BackupOptions::new("db", "stdin", "dump").sha256(true);
    let (asked, _) = backup_stream_with(&repo, options, "d.sql", data.clone()).await.unwrap();
    assert_eq!(sha(asked).await, Some(sha2::Sha256::digest(&data).into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_error_late_in_a_long_stream_fails_it() {
    struct FailsAfter(std::io::Cursor<Vec<u8>>);
    impl std::io::Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(std::io::Error::other("disk gone")),
                n => Ok(n),
            }
        }
    }
    let repo = init(memory()).await;
    let session = repo
        .begin_backup(BackupOptions::new("db", "stdin", "dump"))
        .await
        .unwrap();
    let input = FailsAfter(std::io::Cursor::new(pseudo_random(20 * 1024 * 1024, 8)));
    let (session, result) = tokio::task::spawn_blocking(move || {
        let result = session.store_stream(input, false);
        (session, result)
    })
    .await
    .unwrap();
    let error = result.unwrap_err();
    assert!(error.to_string().contains("disk gone"), "{error}");
    session.abort().await;
    assert!(repo.snapshots().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_indexed_as_they_accumulate() {
    let repo = init(memory()).await;
    let mut options = BackupOptions::new("db", "stdin", "dump");
    options.index_flush_blobs = 64;
    let data = pseudo_random(12 * 1024 * 1024, 10);
    let session = repo.begin_backup(options).await.unwrap();
    let session = stream_uncommitted(session, data.clone()).await;
    // Killed before commit: the full packs are already in index deltas, so
    // the next run redoes at most the pack that was still open (4 MiB here).
    session.abort().await;
    let deltas = repo.store().list(nfrepo_store::ObjectKind::Index).await.unwrap();
    assert!(deltas.len() >= 2, "{} deltas", deltas.len());
    let index = repo.load_index().await.unwrap();
    assert!(index.len() > 100, "{} blobs indexed", index.len());
    let (id, snapshot) = backup_stream(&repo, "db", "dump.sql", data.clone()).await.unwrap();
    assert!(
        snapshot.summary.bytes_added_raw <= 4 * 1024 * 1024 + 64 * 1024,
        "{:?}",
        snapshot.summary
    );
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    let reader = repo.reader().await.unwrap();
    assert_eq!(read_file(&reader, &entry, "dump.sql").await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_backup_packs_are_adopted_by_the_next_run() {
    let repo = init(memory()).await;
    let data = pseudo_random(12 * 1024 * 1024, 9);
    let session = repo
        .begin_backup(BackupOptions::new("db", "stdin", "dump"))
        .await
        .unwrap();
    let session = stream_uncommitted(session, data.clone()).await;
    // Gone before commit: full packs were uploaded, the open one was lost.
    session.abort().await;
    assert!(repo.snapshots().await.unwrap().is_empty());
    let orphans = repo.store().list(nfrepo_store::ObjectKind::Data).await.unwrap().len();
    assert!(orphans >= 2, "{orphans} packs uploaded before the abort");

    let (_, snapshot) = backup_stream(&repo, "db", "dump", data.clone()).await.unwrap();
    assert!(
        snapshot.summary.bytes_added_raw < 6 * 1024 * 1024,
        "resumed run stored {} of {}",
        snapshot.summary.bytes_added_raw,
        data.len()
    );
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot("db@latest").await.unwrap();
    assert_eq!(read_file(&reader, &entry, "dump").await.unwrap(), data);
}

/// Stores `data[..len]` resumably from `from` in a new session, checks the
/// result against a full read of the same bytes, and commits it as file `log`.
async fn store_growing(
    repo: &nfrepo_engine::Repository,
    data: &std::sync::Arc<Vec<u8>>,
    len: usize,
    from: Option<nfrepo_engine::StreamResume>,
    commit: bool,
) -> (nfrepo_engine::StreamResume, u64) {
    use nfrepo_format::{Metadata, Node, Tree};
    let session = repo
        .begin_backup(BackupOptions::new("log", "stdin", "dump"))
        .await
        .unwrap();
    let data = std::sync::Arc::clone(data);
    let (session, resumed, resume, offset) = tokio::task::spawn_blocking(move || {
        let (resumed, resume, offset) = session
            .store_stream_resumable(from.as_ref(), |offset| {
                Ok(std::io::Cursor::new(
                    data[usize::try_from(offset).unwrap()..len].to_vec(),
                ))
            })
            .unwrap();
        let full = session.store_stream(&data[..len], false).unwrap();
        assert_eq!(resumed.size, len as u64);
        assert_eq!(resumed.content, full.content, "len {len}: the same chunks and lists");
        assert_eq!(resumed.blake3, full.blake3, "len {len}");
        (session, resumed, resume, offset)
    })
    .await
    .unwrap();
    if !commit {
        session.abort().await;
        return (resume, offset);
    }
    let node = Node {
        name: b"log".to_vec(),
        kind: resumed.file_kind(),
        meta: Metadata::default(),
    };
    let session2 = tokio::task::spawn_blocking(move || {
        let root = session.store_tree(&Tree { nodes: vec![node] }).unwrap();
        (session, root)
    })
    .await
    .unwrap();
    session2
        .0
        .commit(session2.1, nfrepo_engine::CommitDetails::default())
        .await
        .unwrap();
    (resume, offset)
}

// Issue 16: a growing binlog is committed again without reading what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_stream_resumes_at_its_last_chunk_and_stores_what_a_full_read_would() {
    let repo = init(memory()).await;
    let data = std::sync::Arc::new(pseudo_random(24 << 20, 31));
    let mut resume = None;
    let mut previous: Option<u64> = None;
    for len in [0usize, 100_000, 100_000, 3 << 20, 11 << 20, 24 << 20] {
        let (next, offset) = store_growing(&repo, &data, len, resume.take(), true).await;
        assert_eq!(
            offset,
            previous.unwrap_or(0),
            "len {len}: reading resumes at the last chunk's start"
        );
        assert!(next.offset() <= len as u64);
        if len >= 3 << 20 {
            assert!(
                next.offset() > (len as u64) / 2,
                "len {len}: only the last chunk is read again"
            );
        }
        previous = Some(next.offset());
        resume = Some(next);
    }
    let entry = repo.find_snapshot("latest").await.unwrap();
    let reader = repo.reader().await.unwrap();
    assert_eq!(read_file(&reader, &entry, "log").await.unwrap(), *data);

    // A resume point whose chunks were never committed is not trusted: the
    // whole stream is read again.
    let (uncommitted, _) = store_growing(&repo, &data, 5 << 20, None, false).await;
    let fresh = init(memory()).await;
    let (_, offset) = store_growing(&fresh, &data, 6 << 20, Some(uncommitted), true).await;
    assert_eq!(offset, 0);
}
