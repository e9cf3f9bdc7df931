//! Seeking in file content through the content list's Merkle tree (issue 15:
//! the mount's random reads): the chunk found covers the offset and holds
//! the file's bytes there, and streaming from an offset yields the rest.
//! Reading the tree itself coalesces neighbouring child lists (issue 14).

use futures::StreamExt;
use nfrepo_format::{BlobKind, Content, NodeKind};

use super::fixture::{init, memory, pseudo_random};

#[tokio::test]
async fn issue15_chunk_at_and_content_from_find_any_offset_of_a_deep_list() {
    let repo = init(memory()).await;
    // Dump chunks average 16 KiB: ~750 chunks, more than one list.
    let data = pseudo_random(12 << 20, 15);
    let (_, node) = nfrepo_testing::crafted::commit_file(&repo, "f", data.clone()).await;
    let NodeKind::File { content, .. } = &node.kind else {
        panic!("not a file");
    };
    assert!(
        matches!(content, Content::List { depth, .. } if *depth >= 2),
        "the test needs a list of lists: {content:?}"
    );
    let reader = repo.reader().await.unwrap();
    let mut seed = 0x15u64;
    for _ in 0..200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let offset = seed % data.len() as u64;
        let chunk = reader.chunk_at(content, offset).await.unwrap().unwrap();
        assert!(
            chunk.start <= offset && offset < chunk.start + chunk.len,
            "{chunk:?} misses {offset}"
        );
        let bytes = reader.read_blob(&chunk.id, BlobKind::Data).await.unwrap();
        let start = usize::try_from(chunk.start).unwrap();
        assert_eq!(bytes.len() as u64, chunk.len);
        assert!(bytes[..] == data[start..start + bytes.len()], "chunk at {offset}");
    }
    assert!(reader.chunk_at(content, data.len() as u64).await.unwrap().is_none());

    for offset in [0, 1, 5 << 20, data.len() as u64 - 1] {
        let (start, stream) = reader.content_from(content, offset).await.unwrap();
        assert!(start <= offset);
        let mut stream = std::pin::pin!(stream);
        let mut rest = Vec::new();
        while let Some(chunk) = stream.next().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        let start = usize::try_from(start).unwrap();
        assert!(rest[..] == data[start..], "content from {offset}");
    }
    let (start, stream) = reader.content_from(content, data.len() as u64).await.unwrap();
    assert_eq!(start, data.len() as u64);
    assert_eq!(std::pin::pin!(stream).next().await.map(|r| r.is_ok()), None);
}

/// The child lists of a list of lists, stored near each other in one tree
/// pack, are cut from the blocks of it the reader keeps, not fetched one
/// each: reading a deep list's chunks reads the tree pack at most twice
/// (one read per child was the old way), and a third read fails here.
#[tokio::test]
async fn the_child_lists_of_a_list_of_lists_are_read_several_to_a_request() {
    use std::sync::Arc;

    use futures::TryStreamExt;
    use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, Store};

    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store).await;
    // About 1,500 dump chunks: at most 1,024 to a list, so at least two lists.
    let data = pseudo_random(24 << 20, 16);
    let (_, node) = nfrepo_testing::crafted::commit_file(&repo, "f", data.clone()).await;
    let NodeKind::File { content, .. } = &node.kind else {
        panic!("not a file");
    };
    let reader = repo.reader().await.unwrap();
    let Content::List { root, depth } = content else {
        panic!("the test needs a list: {content:?}");
    };
    let children = reader.content_list(root).await.unwrap().entries.len();
    assert!(
        *depth == 2 && children >= 2,
        "the test needs a list of lists: {content:?}"
    );

    // The root, then one read for the children: they lie in one tree pack
    // within the coalescing bound, in whatever order they were sealed.
    let fewer_reads_than_lists = || {
        faults.clear();
        faults.add_rule(
            FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::Unreachable))
                .kind(ObjectKind::Tree)
                .after(2),
        );
    };
    fewer_reads_than_lists();
    let entries: Vec<nfrepo_format::ListEntry> = reader.content_chunks(content).try_collect().await.unwrap();
    assert_eq!(entries.iter().map(|e| e.len).sum::<u64>(), data.len() as u64);
    fewer_reads_than_lists();
    let mut all = Vec::new();
    let mut stream = std::pin::pin!(reader.content(content));
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        all.extend_from_slice(&chunk.unwrap());
    }
    assert!(all == data, "the content read through the coalesced lists");
}
