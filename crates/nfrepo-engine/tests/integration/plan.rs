//! Restore planning: batches grow from a sixteenth of their limit, so the
//! first reads start after little planning, and every chunk is planned once.

use futures::TryStreamExt;
use nfrepo_engine::{FileToRestore, PlanLimits, RestorePlanner};
use nfrepo_format::NodeKind;

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
