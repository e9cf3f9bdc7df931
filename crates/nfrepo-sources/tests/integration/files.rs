//! File trees through the driver; issue 9 bug 12: a path given that does
//! not exist or cannot be read is an error and commits nothing.

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_format::NodeKind;
use nfrepo_sources::{Error, FilesOptions, FilesSource};

use super::fixture::{assert_nothing_committed, repo, root_nodes, run};

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf/sub")).unwrap();
    std::fs::write(dir.path().join("conf/a.txt"), b"alpha").unwrap();
    std::fs::write(dir.path().join("conf/sub/b.bak"), b"beta").unwrap();
    std::os::unix::fs::symlink("a.txt", dir.path().join("conf/link")).unwrap();
    dir
}

// Issue 9, bug 12: `snapshot data/nonexistent` committed an empty "partial" snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue9_bug12_a_missing_path_is_source_not_found_and_commits_nothing() {
    let repo = repo().await;
    let dir = tree();
    let missing = dir.path().join("nonexistent");
    let source = FilesSource::new(vec![dir.path().join("conf"), missing.clone()]);
    let err = run(&repo, "x", source).await.unwrap_err();
    assert!(
        matches!(&err, Error::SourceNotFound { path } if *path == missing),
        "{err}"
    );
    assert_eq!(err.code(Operation::Backup), ErrorCode::BackupFailed);
    assert_eq!(err.detail_code(), Some("SOURCE_NOT_FOUND"));
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue9_bug12_a_path_that_cannot_be_read_is_source_unreadable() {
    let repo = repo().await;
    let dir = tree();
    // Not a directory: fails the same way for root and for a user.
    let bad = dir.path().join("conf/a.txt/inside");
    let err = run(&repo, "x", FilesSource::new(vec![bad.clone()])).await.unwrap_err();
    assert!(
        matches!(&err, Error::SourceUnreadable { path, source } if *path == bad
            && source.raw_os_error() == Some(nix::libc::ENOTDIR)),
        "{err}"
    );
    assert_eq!(err.detail_code(), Some("SOURCE_UNREADABLE"));
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_is_stored_with_its_kind_paths_and_counts() {
    let repo = repo().await;
    let dir = tree();
    let conf = dir.path().join("conf");
    let source = FilesSource::new(vec![conf.clone()]).with_kind("config");
    let report = run(&repo, "cfg", source).await.unwrap();
    assert_eq!(report.snapshot.source_kind, "config");
    assert_eq!(report.snapshot.profile, "files");
    assert_eq!(report.snapshot.paths, [conf.display().to_string()]);
    let s = &report.snapshot.summary;
    assert_eq!((s.files, s.dirs, s.others, s.bytes), (2, 2, 1, 9));
    assert!(!report.partial());
    let nodes = root_nodes(&repo, &report).await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, b"conf");
    assert!(matches!(nodes[0].kind, NodeKind::Dir { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_files_are_taken_from_the_parent() {
    let repo = repo().await;
    let dir = tree();
    let paths = vec![dir.path().join("conf")];
    let first = run(&repo, "cfg", FilesSource::new(paths.clone())).await.unwrap();
    let second = run(&repo, "cfg", FilesSource::new(paths)).await.unwrap();
    assert_eq!(first.snapshot.summary.files_unchanged, 0);
    assert_eq!(second.snapshot.summary.files_unchanged, 2);
    assert_eq!(second.snapshot.summary.bytes_read, 0);
    assert_eq!(second.snapshot.root, first.snapshot.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_entries_are_left_out_without_making_the_snapshot_partial() {
    let repo = repo().await;
    let dir = tree();
    let mut options = FilesOptions::default();
    options.exclude = vec!["*.bak".into()];
    let source = FilesSource::new(vec![dir.path().join("conf")]).with_options(options);
    let report = run(&repo, "cfg", source).await.unwrap();
    assert_eq!(report.snapshot.summary.files, 1);
    assert!(!report.partial());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_paths_with_the_same_last_component_are_refused() {
    let repo = repo().await;
    let dir = tree();
    std::fs::create_dir_all(dir.path().join("other/conf")).unwrap();
    let source = FilesSource::new(vec![dir.path().join("conf"), dir.path().join("other/conf")]);
    let err = run(&repo, "x", source).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("same last component")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}
