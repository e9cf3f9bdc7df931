//! The one driver: commit on success, abort (nothing committed, no session
//! left) on any failure, progress, retries, and what the snapshot records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nfrepo_engine::{BackupWriter, ErrorCode, Operation};
use nfrepo_sources::{Error, RunOptions, Source, SourceOutcome, StreamSource};

use super::fixture::{assert_nothing_committed, file_content, repo, run, snapshots};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_succeeds_is_committed_with_what_it_read() {
    let repo = repo().await;
    let data = nfrepo_testing::pseudo_random(3 << 20, 7);
    let report = run(
        &repo,
        "db",
        StreamSource::reader("dump.bin", std::io::Cursor::new(data.clone())),
    )
    .await
    .unwrap();
    assert_eq!(report.snapshot.source, "db");
    assert_eq!(report.snapshot.source_kind, "stdin");
    assert_eq!(report.snapshot.paths, ["dump.bin"]);
    assert_eq!(report.snapshot.profile, "dump");
    assert_eq!(report.snapshot.summary.bytes_read, data.len() as u64);
    assert!(!report.partial());
    let listed = snapshots(&repo).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, report.id);
    assert_eq!(file_content(&repo, &report, "dump.bin").await, data);
    assert_eq!(super::fixture::session_markers(&repo).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_non_zero_commits_nothing() {
    let repo = repo().await;
    let argv = ["sh", "-c", "head -c 100000 /dev/zero; echo 'dump broke' >&2; exit 2"]
        .map(String::from)
        .to_vec();
    let err = run(&repo, "db", StreamSource::command("dump.sql", argv))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CommandFailed(m) if m.contains("exited with status 2") && m.contains("dump broke")),
        "{err}"
    );
    assert_eq!(err.code(Operation::Backup), ErrorCode::BackupFailed);
    assert_eq!(err.detail_code(), Some("SOURCE_COMMAND_FAILED"));
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_by_a_signal_commits_nothing() {
    let repo = repo().await;
    let argv = ["sh", "-c", "head -c 100000 /dev/zero; kill -9 $$"]
        .map(String::from)
        .to_vec();
    let err = run(&repo, "db", StreamSource::command("dump.sql", argv))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CommandFailed(m) if m.contains("killed by a signal")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}

/// A source that feeds some data, then fails or panics.
struct Failing {
    panic: bool,
}

impl Source for Failing {
    fn kind(&self) -> &str {
        "test"
    }

    fn default_profile(&self) -> &str {
        "dump"
    }

    fn prepare(&mut self) -> nfrepo_sources::Result<Vec<String>> {
        Ok(vec!["x".into()])
    }

    fn back_up(&mut self, writer: &BackupWriter) -> nfrepo_sources::Result<SourceOutcome> {
        writer.store_stream(&nfrepo_testing::pseudo_random(1 << 20, 1)[..], false)?;
        assert!(!self.panic, "source exploded");
        Err(Error::Invalid("source gave up".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_is_aborted_and_the_next_backup_runs() {
    let repo = repo().await;
    let err = run(&repo, "x", Failing { panic: false }).await.unwrap_err();
    assert!(matches!(&err, Error::Invalid(m) if m == "source gave up"), "{err}");
    assert_nothing_committed(&repo).await;
    run(&repo, "x", StreamSource::reader("x", &b"fine"[..])).await.unwrap();
    assert_eq!(snapshots(&repo).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_source_is_aborted() {
    let repo = repo().await;
    let err = run(&repo, "x", Failing { panic: true }).await.unwrap_err();
    assert!(
        matches!(&err, Error::WorkerPanicked(m) if m.contains("source exploded")),
        "{err}"
    );
    assert_eq!(err.code(Operation::Backup), ErrorCode::BackupFailed);
    assert_eq!(err.detail_code(), Some("WORKER_PANICKED"));
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_fails_to_prepare_starts_no_session() {
    let repo = repo().await;
    let err = run(&repo, "x", StreamSource::reader("a/b", &b"data"[..]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("plain file name")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_reported_until_the_end() {
    let repo = repo().await;
    // A command slow enough for several progress ticks.
    let argv = [
        "sh",
        "-c",
        "head -c 200000 /dev/zero; sleep 1; head -c 100000 /dev/zero",
    ]
    .map(String::from)
    .to_vec();
    let mut seen = Vec::new();
    let report = nfrepo_sources::run_backup(
        &repo,
        Box::new(StreamSource::command("out", argv)),
        &RunOptions::new("slow"),
        &mut |p| seen.push(p.bytes_read),
    )
    .await
    .unwrap();
    assert!(seen.len() >= 3, "progress called {} times", seen.len());
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress went back: {seen:?}");
    assert_eq!(seen.last().copied(), Some(300_000));
    assert_eq!(report.snapshot.summary.bytes_read, 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_records_retries_during_the_backup_and_the_options() {
    let repo = repo().await;
    let counter = Arc::new(AtomicU64::new(5));
    let seen = counter.clone();
    let options = RunOptions::new("db")
        .tags(vec![("env".into(), "test".into())])
        .profile("files")
        .retries(Arc::new(move || seen.fetch_add(2, Ordering::SeqCst)));
    let report = nfrepo_sources::run_backup(
        &repo,
        Box::new(StreamSource::reader("x", &b"data"[..]).with_kind("mysql")),
        &options,
        &mut |_| {},
    )
    .await
    .unwrap();
    // Read once before (5) and once after (7): two retries happened meanwhile.
    assert_eq!(report.snapshot.summary.retries, 2);
    assert_eq!(report.snapshot.tags, [("env".to_owned(), "test".to_owned())]);
    assert_eq!(report.snapshot.profile, "files");
    assert_eq!(report.snapshot.source_kind, "mysql");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_backup_of_a_source_has_the_first_as_parent() {
    let repo = repo().await;
    let first = run(&repo, "db", StreamSource::reader("x", &b"one"[..])).await.unwrap();
    let other = run(&repo, "other", StreamSource::reader("x", &b"one"[..]))
        .await
        .unwrap();
    let second = run(&repo, "db", StreamSource::reader("x", &b"two"[..])).await.unwrap();
    assert_eq!(first.snapshot.parent, None);
    assert_eq!(other.snapshot.parent, None);
    assert_eq!(second.snapshot.parent, Some(first.id));
    let no_parent = nfrepo_sources::run_backup(
        &repo,
        Box::new(StreamSource::reader("x", &b"three"[..])),
        &RunOptions::new("db").use_parent(false),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(no_parent.snapshot.parent, None);
}
