//! Stream sources: standard input (any reader) and a command's output.

use nfrepo_sources::{Error, RunOptions, StreamSource};

use super::fixture::{assert_nothing_committed, fact, file_content, repo, run};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_one_file_with_its_blake3_and_the_sha256_when_asked() {
    let repo = repo().await;
    let data = b"CREATE TABLE t (id int);\n".repeat(1000);
    let reader = || StreamSource::reader("app.sql", std::io::Cursor::new(data.clone()));
    let plain = run(&repo, "db", reader()).await.unwrap();
    assert_eq!(
        fact(&plain, "stream.blake3"),
        Some(blake3::hash(&data).to_hex().as_str())
    );
    assert_eq!(fact(&plain, "stream.sha256"), None, "SHA-256 is opt-in");
    assert_eq!(plain.snapshot.summary.files, 1);
    assert_eq!(file_content(&repo, &plain, "app.sql").await, data);

    let options = RunOptions::new("db").sha256(true);
    let asked = nfrepo_sources::run_backup(&repo, Box::new(reader()), &options, &mut |_| {})
        .await
        .unwrap();
    let sha = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(&data))
    };
    assert_eq!(fact(&asked, "stream.sha256"), Some(sha.as_str()));
    assert_eq!(file_content(&repo, &asked, "app.sql").await, data);
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
