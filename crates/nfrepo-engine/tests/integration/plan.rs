//! Restore planning: batches grow from a sixteenth of their limit, so the
//! first reads start after little planning, and every chunk is planned once.

use std::sync::Arc;

use futures::TryStreamExt;
use nfrepo_engine::{FileToRestore, PlanLimits, RestorePlanner};
use nfrepo_format::NodeKind;
use nfrepo_store::{FaultStore, MemoryStore};

use super::fixture::{init, memory, pseudo_random};

#[tokio::test]
async fn batches_start_at_a_sixteenth_of_the_limit_and_double_up_to_it() {
    let repo = init(memory()).await;
    let data = pseudo_random(24 << 20, 17);
    let (_, node) = nfrepo_testing::crafted::commit_file(&repo, "f", data).await;
    let NodeKind::File { content, .. } = node.kind else {
        panic!("not a file");
    };
    let reader = repo.reader().await.unwrap();
    let chunks: Vec<nfrepo_format::ListEntry> = reader.content_chunks(&content).try_collect().await.unwrap();
    let limits = PlanLimits {
        max_placements: 160,
        ..PlanLimits::default()
    };
    let mut planner = RestorePlanner::new(&reader, limits);
    planner.push(FileToRestore { file: 0, content });
    let mut sizes = Vec::new();
    let mut listed = false;
    while let Some(batch) = planner.next_batch().await.unwrap() {
        assert!(!listed, "no batch after the one that ended the file's list");
        let file = &batch.files[0];
        assert!(file.failed.is_none());
        sizes.push(file.placements);
        listed = file.listed;
    }
    assert!(listed);
    assert_eq!(
        sizes.iter().sum::<u64>(),
        chunks.len() as u64,
        "every chunk planned once"
    );
    let full = sizes.len() - 1;
    let expected: Vec<u64> = [10, 20, 40, 80]
        .into_iter()
        .chain(std::iter::repeat(160))
        .take(full)
        .collect();
    assert_eq!(sizes[..full], expected[..], "batch sizes: {sizes:?}");
    assert!(sizes[full] <= 160);
}

/// The reads of a 3 MiB file planned in reads of 64 KiB: on a store that
/// streams ranged reads, neighbouring reads of a pack are grouped into
/// spans (one request each), and every read fetched from its span, its
/// request sent ahead or not, holds exactly the bytes a request of its own
/// returns; on one that does not, no read is grouped.
#[tokio::test]
async fn neighbouring_reads_of_a_pack_share_one_request_and_each_gets_its_own_bytes() {
    let streaming = Arc::new(FaultStore::new(MemoryStore::new()).streaming_ranges(1000));
    let repo = init(streaming.clone()).await;
    let (_, node) = nfrepo_testing::crafted::commit_file(&repo, "f", pseudo_random(3 << 20, 5)).await;
    let NodeKind::File { content, .. } = node.kind else {
        panic!("not a file");
    };
    let reader = repo.reader().await.unwrap();
    let limits = PlanLimits {
        max_read: 64 << 10,
        max_raw: 64 << 10,
        ..PlanLimits::default()
    };
    let mut planner = RestorePlanner::new(&reader, limits);
    planner.push(FileToRestore { file: 0, content });
    let (mut reads, mut in_spans) = (0, 0);
    while let Some(batch) = planner.next_batch().await.unwrap() {
        let parts = reader.spans(&batch.reads);
        assert_eq!(parts.len(), batch.reads.len());
        // Every other read's request sent ahead, as a restore does for the
        // reads waiting for its budget.
        for part in parts.iter().step_by(2).flatten() {
            reader.open_ahead(part).await;
        }
        // Fetched out of order: the last read of each batch first.
        for (read, part) in batch.reads.iter().zip(&parts).rev() {
            let alone = reader.fetch_read(read).await.unwrap();
            let planned = reader.fetch_planned(read, part.as_ref()).await.unwrap();
            assert_eq!(
                planned.into_bytes(),
                alone.into_bytes(),
                "read {}..{}",
                read.start,
                read.end
            );
        }
        reads += batch.reads.len();
        assert!(parts.iter().all(Option::is_some), "every read has its request");
        in_spans += parts.iter().flatten().filter(|p| p.reads() > 1).count();
    }
    assert!(reads > 40, "{reads} reads");
    assert!(in_spans * 10 >= reads * 9, "{in_spans} of {reads} reads in spans");

    // A store without streamed ranges: every read alone.
    let plain = init(memory()).await;
    let (_, node) = nfrepo_testing::crafted::commit_file(&plain, "f", pseudo_random(1 << 20, 5)).await;
    let NodeKind::File { content, .. } = node.kind else {
        panic!("not a file");
    };
    let reader = plain.reader().await.unwrap();
    let mut planner = RestorePlanner::new(&reader, limits);
    planner.push(FileToRestore { file: 0, content });
    while let Some(batch) = planner.next_batch().await.unwrap() {
        assert!(reader.spans(&batch.reads).iter().all(Option::is_none));
    }
}
