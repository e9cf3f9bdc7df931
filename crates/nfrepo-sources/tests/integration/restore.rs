//! Tree restores in batches (issue 14, item 6: memory flat in the number of
//! files): a tree cut into many batches restores exactly as in one.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use nfrepo_sources::{FilesSource, RestoreOptions, restore};

use super::fixture::{repo, run, snapshots};

/// A tree of `a/` (ten files), `m/deep/` (a read-only directory) and `z/`,
/// walked in that order. `a/f0` and `z/same` hold the same bytes, so with
/// small batches they share a chunk across batches; `a/f1` and `a/f2`
/// share one within a batch. Every directory and file has its own mtime.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for sub in ["a", "m/deep", "z"] {
        std::fs::create_dir_all(src.join(sub)).unwrap();
    }
    let shared = b"the same bytes in two batches".repeat(100);
    for i in 0..10 {
        let content = match i {
            0 => shared.clone(),
            1 | 2 => b"the same bytes in one batch".to_vec(),
            _ => format!("file {i}").into_bytes(),
        };
        std::fs::write(src.join(format!("a/f{i}")), content).unwrap();
    }
    std::fs::write(src.join("m/deep/only.txt"), b"deep").unwrap();
    std::os::unix::fs::symlink("../a/f3", src.join("m/link")).unwrap();
    std::fs::write(src.join("z/same"), &shared).unwrap();
    // Times last, deepest first: writing into a directory changes its mtime.
    let mut stamp = 1_000_000_000;
    for rel in ["a/f0", "a/f5", "m/deep/only.txt", "z/same", "m/deep", "a", "m", "z", ""] {
        stamp += 86_400;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(stamp);
        let file = std::fs::File::open(src.join(rel)).unwrap();
        file.set_times(std::fs::FileTimes::new().set_accessed(at).set_modified(at))
            .unwrap();
    }
    std::fs::set_permissions(src.join("m/deep"), std::fs::Permissions::from_mode(0o555)).unwrap();
    dir
}

/// A repository holding one snapshot (source `tree`) of a fresh [`tree`]'s
/// `src`, and that tree.
async fn backed_up_tree() -> (nfrepo_engine::Repository, tempfile::TempDir) {
    let repo = repo().await;
    let dir = tree();
    run(&repo, "tree", FilesSource::new(vec![dir.path().join("src")]))
        .await
        .unwrap();
    (repo, dir)
}

/// Every entry under `root`: path, type and mode, mtime, and content or link target.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                format!(
                    "{} bytes {:?}",
                    meta.len(),
                    blake3::hash(&std::fs::read(&path).unwrap())
                )
            };
            let mode = meta.mode() & 0o7777;
            // A link's own mtime is not restored everywhere; its target is what matters.
            let mtime = if meta.file_type().is_symlink() { 0 } else { meta.mtime() };
            out.push(format!("{rel} {mode:o} {mtime} {what}"));
        }
    }
    out.sort();
    out
}

/// Restores the snapshot of `src` into a fresh directory with `options`.
async fn restored(
    repo: &nfrepo_engine::Repository,
    options: &RestoreOptions,
) -> (tempfile::TempDir, nfrepo_sources::RestoreReport) {
    let reader = repo.reader().await.unwrap();
    let snapshot = snapshots(repo).await.pop().unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = restore(&reader, &snapshot, "", out.path(), options).await.unwrap();
    (out, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_of_a_tree_in_many_batches_matches_one_batch_and_the_source() {
    let (repo, dir) = backed_up_tree().await;
    let (whole, whole_report) = restored(&repo, &RestoreOptions::default()).await;
    let mut small = RestoreOptions::default();
    small.batch_entries = Some(2);
    small.include = vec!["src".into()];
    let work = std::sync::Arc::new(nfrepo_engine::Work::default());
    small.work = Some(work.clone());
    let (batched, batched_report) = restored(&repo, &small).await;
    // A filtered restore learns its totals batch by batch; at the end
    // they are the files and bytes it restored.
    let c = work.counts().unwrap();
    assert_eq!(
        (c.items_done, c.items_total, c.bytes_done, c.bytes_total, c.growing),
        (12, 12, whole_report.bytes, whole_report.bytes, true)
    );

    let expected = listing(dir.path());
    assert_eq!(listing(whole.path()), expected);
    // Directory mtimes and the read-only directory's mode included: each
    // directory is finished after the batch the walk leaves it in.
    assert_eq!(listing(batched.path()), expected);
    assert!(
        expected.iter().any(|l| l.starts_with("src/m/deep 555 ")),
        "{expected:#?}"
    );
    for report in [&whole_report, &batched_report] {
        assert_eq!((report.files, report.dirs, report.others), (12, 5, 1), "{report:?}");
        assert!(report.unmatched_filters.is_empty() && report.skipped.is_empty());
    }
    assert_eq!(batched_report.bytes, whole_report.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_with_an_include_whose_only_match_is_in_a_late_batch() {
    let (repo, dir) = backed_up_tree().await;
    let mut options = RestoreOptions::default();
    options.batch_entries = Some(2);
    options.include = vec!["deep/only.txt".into(), "src/m/deep/only.txt".into(), "nothing*".into()];
    let (out, report) = restored(&repo, &options).await;
    let got: Vec<String> = listing(out.path())
        .into_iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect();
    // Directories that lead to nothing restored (a, z) are never created;
    // those on the way to the match are, with their metadata.
    assert_eq!(got, ["src", "src/m", "src/m/deep", "src/m/deep/only.txt"]);
    assert_eq!((report.files, report.dirs), (1, 3));
    assert_eq!(
        report.unmatched_filters,
        ["--include \"deep/only.txt\"", "--include \"nothing*\""]
    );
    let expected = listing(dir.path());
    let deep = listing(out.path())
        .into_iter()
        .find(|l| l.starts_with("src/m/deep "))
        .unwrap();
    assert!(expected.contains(&deep), "{deep} not in {expected:#?}");
}

/// A repository holding one snapshot of `src/big` (`big_len` random
/// bytes: stored chunks) and `src/small`, whose `big`'s second chunk (its
/// only one when it has one) was replaced in its pack by other bytes sealed
/// under the same id: what only a writer holding the key, sealing other
/// bytes than it named, could store. The seal is valid; only a re-hash of
/// the plaintext shows the lie. Returns the chunk's id.
async fn with_a_chunk_sealed_under_another_id(
    big_len: usize,
) -> (nfrepo_engine::Repository, tempfile::TempDir, String) {
    use futures::TryStreamExt;
    use nfrepo_format::{Aad, NodeKind, SealedKind};
    use nfrepo_store::{ObjectKind, PutMode};

    let repo = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let big = nfrepo_testing::pseudo_random(big_len, 7);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("small"), b"small and sound").unwrap();
    let report = run(&repo, "tree", FilesSource::new(vec![src])).await.unwrap();

    let reader = repo.reader().await.unwrap();
    let root = reader.tree(&report.snapshot.root).await.unwrap();
    let NodeKind::Dir { tree } = &root.find(b"src").unwrap().kind else {
        panic!("src is not a directory")
    };
    let src_tree = reader.tree(tree).await.unwrap();
    let NodeKind::File { content, .. } = &src_tree.find(b"big").unwrap().kind else {
        panic!("big is not a file")
    };
    let chunks: Vec<_> = reader.content_chunks(content).try_collect().await.unwrap();
    let chunk = chunks.get(1).unwrap_or(&chunks[0]);
    let id = chunk.id;
    let location = reader.locate(&id).unwrap();
    let mut framed = vec![0u8]; // the stored codec
    framed.extend(nfrepo_testing::pseudo_random(usize::try_from(chunk.len).unwrap(), 8));
    let forged = repo
        .sealer()
        .seal(Aad::blob(SealedKind::DataBlob, &id), &framed)
        .unwrap();
    assert_eq!(
        forged.len(),
        location.sealed_len as usize,
        "the chunk is stored, not compressed"
    );
    let packs = repo.store().list(ObjectKind::Data).await.unwrap();
    let key = packs
        .iter()
        .map(|meta| meta.key.clone())
        .find(|key| key.name() == location.pack.to_hex())
        .unwrap();
    let mut pack = repo.store().get(&key).await.unwrap().to_vec();
    let at = location.offset as usize;
    pack[at..at + forged.len()].copy_from_slice(&forged);
    repo.store().put(&key, pack.into(), PutMode::Overwrite).await.unwrap();
    (repo, dir, id.to_hex())
}

/// Chunks are not re-hashed as they are opened (each file's whole BLAKE3 is
/// checked instead): the forged chunk is written, the file fails its check,
/// is written again through reads that re-hash each chunk, and the restore
/// stops naming that chunk. No file is placed with the forged bytes, and no
/// temporary file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_sealed_under_another_id_is_named_and_its_file_never_placed() {
    forged_chunk_is_named(200_000, false).await;
}

/// The same for a file large enough to be written around the page cache
/// (`restore/direct.rs`), whose whole BLAKE3 is assembled from its windows:
/// the forged chunk fails that hash, and the rewrite goes through the page
/// cache and is read back whole, from the page cache or (`--verify`) from
/// the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_sealed_under_another_id_in_a_large_file_is_named_and_its_file_never_placed() {
    forged_chunk_is_named(20 << 20, false).await;
    forged_chunk_is_named(20 << 20, true).await;
}

async fn forged_chunk_is_named(big_len: usize, verify: bool) {
    let (repo, _dir, id) = with_a_chunk_sealed_under_another_id(big_len).await;
    let reader = repo.reader().await.unwrap();
    let snapshot = snapshots(&repo).await.pop().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut options = RestoreOptions::default();
    options.verify = verify;
    let err = restore(&reader, &snapshot, "", out.path(), &options).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, nfrepo_sources::Error::Engine(nfrepo_engine::Error::Corrupted { object, .. }) if object.contains(&id)),
        "{err:?}"
    );
    assert!(message.contains("hash"), "{message}");
    let left = listing(out.path());
    assert!(
        !left.iter().any(|l| l.starts_with("src/big ") || l.contains(".nfrepo")),
        "{left:#?}"
    );
}

/// With `skip_damaged`, the file with the forged chunk is skipped and
/// listed with the chunk's id, and the rest is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_damaged_lists_the_file_with_a_chunk_sealed_under_another_id() {
    let (repo, _dir, id) = with_a_chunk_sealed_under_another_id(200_000).await;
    let mut options = RestoreOptions::default();
    options.skip_damaged = true;
    let (out, report) = restored(&repo, &options).await;
    assert_eq!(report.files, 1, "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    let (path, reason) = &report.skipped[0];
    assert_eq!(path, &out.path().join("src/big"));
    assert!(reason.contains(&id), "{reason}");
    assert_eq!(std::fs::read(out.path().join("src/small")).unwrap(), b"small and sound");
    assert!(!out.path().join("src/big").exists());
}

/// A restore from a store that streams ranged reads, as S3 does, where
/// neighbouring reads of a pack share one request: when that response is
/// cut midway, the reads it did not deliver are fetched alone and every
/// byte still comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_midway_still_restores_every_byte() {
    use std::sync::Arc;

    use nfrepo_store::{Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, Store};

    let faults = Arc::new(FaultStore::new(MemoryStore::new()).streaming_ranges(64 << 10));
    let store: Arc<dyn Store> = faults.clone();
    let mut init = nfrepo_engine::InitOptions::default();
    init.kdf = nfrepo_format::KdfParams::insecure_for_tests();
    init.pack_size = 16 << 20;
    let repo = nfrepo_engine::Repository::init(store, b"test password", init)
        .await
        .unwrap();
    // 20 MiB of distinct lines: about a fifth of that sealed, so a pack
    // holds several reads of 4 MiB of plaintext.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let mut text = String::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for row in 0.. {
        if text.len() >= 20 << 20 {
            break;
        }
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        text.push_str(&format!("row {row} value {}\n", state >> 40));
    }
    std::fs::write(dir.path().join("src/big.txt"), &text).unwrap();
    run(&repo, "tree", FilesSource::new(vec![dir.path().join("src")]))
        .await
        .unwrap();
    // The first request for a data pack is cut after 2.5 MiB.
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::Truncate { len: 5 << 19 })
            .kind(ObjectKind::Data)
            .times(1),
    );
    let (out, report) = restored(&repo, &RestoreOptions::default()).await;
    assert_eq!(faults.fired(), 1, "the cut happened");
    assert!(report.skipped.is_empty());
    assert_eq!(std::fs::read(out.path().join("src/big.txt")).unwrap(), text.as_bytes());
}

// `--verify` reads every restored file back from the device; a step of
// many small files is written back by one `syncfs` of the target first
// (`files::SYNCED_CHECKS`), a step of few by each file's own writeback.
// A file under 8 MiB whose last chunks are all zeros (the files profile
// cuts zeros at its 4 MiB maximum) is created small and left a hole there,
// then extended to its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_of_many_small_files_and_zero_tails_matches_the_source() {
    let repo = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut seed = 7u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (seed >> 56) as u8
            })
            .collect()
    };
    for d in 0..6 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..60 {
            std::fs::write(src.join(format!("d{d}/f{f}")), noise(100 + 37 * f)).unwrap();
        }
    }
    for (name, zeros) in [("tail-small", 5_000), ("tail-hole", 7 << 20)] {
        let mut content = noise(300 << 10);
        content.resize(content.len() + zeros, 0);
        std::fs::write(src.join(name), content).unwrap();
    }
    run(&repo, "tree", FilesSource::new(vec![src.clone()])).await.unwrap();

    let mut options = RestoreOptions::default();
    options.verify = true;
    let (out, report) = restored(&repo, &options).await;
    assert!(listing(out.path()) == listing(dir.path()), "the restored tree differs");
    assert_eq!((report.files, report.verified), (362, 362), "{report:?}");
    let tail = std::fs::metadata(out.path().join("src/tail-hole")).unwrap();
    assert_eq!(tail.len(), (300 << 10) + (7 << 20));
    assert!(
        tail.blocks() * 512 < 5 << 20,
        "the zero tail came back as a hole: {} bytes allocated",
        tail.blocks() * 512
    );
}
