use std::sync::Arc;

use bytes::Bytes;
use nfrepo_store::{
    Credentials, ErrorKind, ObjectKey, ObjectKind, OpenOptions, OpendalStore, PutMode, Store, StoreUrl, open,
};

use super::conformance;

fn open_dir(path: &std::path::Path) -> Arc<dyn Store> {
    let url = StoreUrl::parse(&format!("file://{}", path.display())).unwrap();
    open(&url, &Credentials::none(), &OpenOptions::default()).unwrap()
}

#[tokio::test]
async fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    conformance::round_trip(open_dir(&dir.path().join("repo")).as_ref(), true).await;
}

#[tokio::test]
async fn ranged_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let count = conformance::ranged_pieces(open_dir(&dir.path().join("repo")).as_ref()).await;
    // 3 MiB in buffers of 512 KiB, each below the allocator's mapping
    // threshold (backend/local.rs, `PIECE`).
    assert_eq!(count, 6, "a local range is read in pieces of 512 KiB");
}

#[tokio::test]
async fn streamed_puts_leave_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    conformance::streamed_puts(open_dir(&root).as_ref()).await;
    let mut names: Vec<String> = walk(&root)
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["data/5a/5a5a0001", "index/5a5a0002"]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn list_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    conformance::list_by_kind(open_dir(dir.path()).as_ref()).await;
}

/// Directories list in name order too (OpenDAL's walk does not sort: the
/// store sorts one fan-out directory at a time), temp files and stray
/// directories left out.
#[tokio::test]
async fn list_stream_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    for stray in [
        "data/0a/.tmp-1",
        "data/0a/0b-not-in-its-directory",
        "data/xyz/xyz1",
        "snapshots/.tmp-2",
    ] {
        let path = dir.path().join(stray);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"stray").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("snapshots/a-directory")).unwrap();
    conformance::list_stream_in_name_order(open_dir(dir.path()).as_ref()).await;
}

#[tokio::test]
async fn missing_directory_reads_as_empty_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not/yet");
    let store = open_dir(&root);
    let key = ObjectKey::config();
    assert_eq!(store.get(&key).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.stat(&key).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(store.list(ObjectKind::Data).await.unwrap().is_empty());
    assert!(store.list(ObjectKind::Config).await.unwrap().is_empty());
    store.delete(&key).await.unwrap();
    assert!(!root.exists());

    store
        .put(&key, Bytes::from_static(b"cfg"), PutMode::CreateNew)
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("config")).unwrap(), b"cfg");
    assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"cfg"));
}

#[tokio::test]
async fn list_skips_temp_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_dir(dir.path());
    let pack = ObjectKey::new(ObjectKind::Data, "abcd").unwrap();
    let index = ObjectKey::new(ObjectKind::Index, "i1").unwrap();
    store
        .put(&pack, Bytes::from_static(b"p"), PutMode::CreateNew)
        .await
        .unwrap();
    store
        .put(&index, Bytes::from_static(b"i"), PutMode::CreateNew)
        .await
        .unwrap();
    // Leftovers of a crashed write, and files nfrepo never writes.
    for stray in [
        "data/ab/.tmp-abcd-0123456789abcdef",
        "data/ab/cdef",
        "data/abcd",
        "index/.tmp-i2-0123456789abcdef",
        "index/bad name",
        "index/sub/i3",
    ] {
        let path = dir.path().join(stray);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"junk").unwrap();
    }
    let listed: Vec<_> = store
        .list(ObjectKind::Data)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(listed, [pack]);
    let listed: Vec<_> = store
        .list(ObjectKind::Index)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(listed, [index]);
}

/// Two writers racing to create the same object: exactly one wins, and the object
/// holds the winner's bytes in full.
async fn race_create_new(store: Arc<dyn Store>) {
    for round in 0..25 {
        let key = ObjectKey::new(ObjectKind::Lease, format!("gc-{round}")).unwrap();
        let writers: Vec<_> = (0..2u8)
            .map(|writer| {
                let store = Arc::clone(&store);
                let key = key.clone();
                tokio::spawn(async move {
                    let data = Bytes::from(vec![writer; 64 * 1024]);
                    (writer, store.put(&key, data, PutMode::CreateNew).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            let (id, result) = writer.await.unwrap();
            match result {
                Ok(()) => winners.push(id),
                Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(store.get(&key).await.unwrap(), Bytes::from(vec![winners[0]; 64 * 1024]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_new_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    race_create_new(open_dir(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_operator_gets_atomic_puts_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let op = opendal::Operator::new(opendal::services::Fs::default().root(root)).unwrap();
    race_create_new(Arc::new(OpendalStore::new(op, "file:///test"))).await;
}

#[tokio::test]
async fn list_names_match_list() {
    let dir = tempfile::tempdir().unwrap();
    conformance::list_names_match_list(open_dir(dir.path()).as_ref()).await;
}

#[tokio::test]
async fn ranged_streams() {
    let dir = tempfile::tempdir().unwrap();
    let streams = conformance::ranged_streams(open_dir(&dir.path().join("repo")).as_ref()).await;
    assert!(!streams, "a local directory reads each range whole");
}

/// Objects of 1 MiB and more (packs) are written around the page cache
/// (`O_DIRECT`, backend/local.rs): whatever their length, on a file system
/// that takes direct writes (the test directory) and on one that refuses
/// them (tmpfs, where the backend writes through the page cache), each
/// reads back whole, with the object mode, and no temporary file is left.
#[tokio::test]
async fn large_objects_read_back_whole_with_or_without_direct_writes() {
    use std::os::unix::fs::PermissionsExt;

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir_in("/dev/shm").unwrap()];
    for dir in &dirs {
        let root = dir.path().join("repo");
        let store = open_dir(&root);
        for (i, len) in [
            (1usize << 20) - 1,
            1 << 20,
            (1 << 20) + 12_345,
            (3 << 20) + 4096,
            5 << 20,
        ]
        .into_iter()
        .enumerate()
        {
            let data: Bytes = (0..len)
                .map(|j| (j.wrapping_mul(31) ^ i) as u8)
                .collect::<Vec<u8>>()
                .into();
            let key = ObjectKey::new(ObjectKind::Data, format!("6b6b{i:04}")).unwrap();
            store.put(&key, data.clone(), PutMode::CreateNew).await.unwrap();
            assert_eq!(
                store.get(&key).await.unwrap(),
                data,
                "{} bytes in {}",
                len,
                root.display()
            );
            let path = root.join(key.path());
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(
            walk(&root)
                .iter()
                .all(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')),
            "no temporary file left in {}",
            root.display()
        );
    }
}
