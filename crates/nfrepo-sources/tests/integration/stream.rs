//! Stream sources: standard input (any reader) and a command's output.

use nfrepo_sources::{Error, StreamSource};

use super::fixture::{assert_nothing_committed, fact, file_content, repo, run};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_one_file_with_both_digests() {
    let repo = repo().await;
    let data = b"CREATE TABLE t (id int);\n".repeat(1000);
    let report = run(
        &repo,
        "db",
        StreamSource::reader("app.sql", std::io::Cursor::new(data.clone())),
    )
    .await
    .unwrap();
    assert_eq!(
        fact(&report, "stream.blake3"),
        Some(blake3::hash(&data).to_hex().as_str())
    );
    let sha = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(&data))
    };
    assert_eq!(fact(&report, "stream.sha256"), Some(sha.as_str()));
    assert_eq!(report.snapshot.summary.files, 1);
    assert_eq!(file_content(&repo, &report, "app.sql").await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_records_its_redacted_argv_and_status() {
    let repo = repo().await;
    let argv = ["sh", "-c", "printf hello", "--password=hunter2"]
        .map(String::from)
        .to_vec();
    let report = run(&repo, "cmd", StreamSource::command("out.txt", argv)).await.unwrap();
    let command = report.snapshot.command.clone().unwrap();
    assert_eq!(command.argv, ["sh", "-c", "printf hello", "--password=***"]);
    assert_eq!(command.exit_code, 0);
    assert_eq!(report.snapshot.source_kind, "command");
    assert_eq!(file_content(&repo, &report, "out.txt").await, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_commits_nothing() {
    let repo = repo().await;
    let argv = vec!["/nonexistent/nfrepo-test-tool".to_owned()];
    let err = run(&repo, "cmd", StreamSource::command("out", argv)).await.unwrap_err();
    assert!(
        matches!(&err, Error::CommandFailed(m) if m.contains("cannot start")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_command_is_refused_before_anything_starts() {
    let repo = repo().await;
    let err = run(&repo, "cmd", StreamSource::command("out", Vec::new()))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Invalid(m) if m == "no command given"), "{err}");
    assert_nothing_committed(&repo).await;
}
