//! The verified file reader refuses content that disagrees with its node
//! (issue 9: one verified file reader).

use futures::StreamExt;
use nfrepo_engine::{Error, Repository};
use nfrepo_format::NodeKind;

use super::fixture::{init, memory, pseudo_random};

async fn commit_altered(repo: &Repository, data: Vec<u8>, alter: fn(&mut NodeKind)) -> String {
    nfrepo_testing::crafted::commit_altered_file(repo, data, alter)
        .await
        .to_hex()
}

/// Reads file `f` through the verified reader: the bytes yielded, and how it ended.
async fn read_verified(repo: &Repository, spec: &str) -> (Vec<u8>, nfrepo_engine::Result<()>) {
    let reader = repo.reader().await.unwrap();
    let snapshot = repo.find_snapshot(spec).await.unwrap();
    let node = reader.resolve(&snapshot, "f").await.unwrap().unwrap();
    let mut stream = std::pin::pin!(reader.file_content(&node, "f"));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(e) => return (out, Err(e)),
        }
    }
    (out, Ok(()))
}

fn set_blake3(kind: &mut NodeKind) {
    if let NodeKind::File { blake3, .. } = kind {
        blake3[0] ^= 1;
    }
}

fn set_sha256(kind: &mut NodeKind) {
    if let NodeKind::File { sha256: Some(sha), .. } = kind {
        sha[31] ^= 1;
    }
}

fn shorter(kind: &mut NodeKind) {
    if let NodeKind::File { size, .. } = kind {
        *size -= 1;
    }
}

fn longer(kind: &mut NodeKind) {
    if let NodeKind::File { size, .. } = kind {
        *size += 1;
    }
}

#[tokio::test]
async fn issue9_verified_reader_refuses_a_node_its_chunks_disagree_with() {
    let repo = init(memory()).await;
    let data = pseudo_random(300 * 1024, 7);
    let good = commit_altered(&repo, data.clone(), |_| {}).await;
    let (bytes, end) = read_verified(&repo, &good).await;
    end.unwrap();
    assert_eq!(bytes, data);

    for (alter, what) in [
        (set_blake3 as fn(&mut NodeKind), "BLAKE3"),
        (set_sha256, "SHA-256"),
        (shorter, "runs past"),
        (longer, "the node records"),
    ] {
        let spec = commit_altered(&repo, data.clone(), alter).await;
        let (bytes, end) = read_verified(&repo, &spec).await;
        let err = end.expect_err(what);
        assert!(
            matches!(&err, Error::Corrupted { object, .. } if object == "file f"),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains(what), "{what}: {err}");
        assert_eq!(
            err.code(nfrepo_engine::Operation::Restore),
            nfrepo_engine::ErrorCode::BackupCorrupted
        );
        // The end of the file is never handed out before the check.
        assert!(bytes.len() < data.len(), "{what}: all {} bytes yielded", bytes.len());
        assert_eq!(bytes[..], data[..bytes.len()], "{what}");
    }
}
