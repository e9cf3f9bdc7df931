//! S3 bucket sources on the SeaweedFS that `scripts/test.sh` starts: objects
//! with their metadata, unchanged objects skipped, restores whole, by prefix
//! and by glob into another prefix, skipping objects already there.

use std::collections::BTreeMap;

use crate::harness::{Env, describe, pseudo_random};
use crate::servers::unique;

pub(crate) fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: bucket tests need SeaweedFS (scripts/test.sh)"))
}

/// One runtime for every test of the process: OpenDAL's HTTP client is
/// shared, and its connections die with the runtime that opened them.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

pub(crate) struct Bucket {
    pub(crate) runtime: &'static tokio::runtime::Runtime,
    base: String,
}

impl Bucket {
    pub(crate) fn new() -> Self {
        let base = format!("s3://{}/e2e-bucket/{}", var("NFREPO_TEST_S3_BUCKET"), unique("b"));
        Self {
            runtime: runtime(),
            base,
        }
    }

    pub(crate) fn url(&self, sub: &str) -> String {
        format!(
            "{}/{sub}?endpoint={}&region=us-east-1",
            self.base,
            var("NFREPO_TEST_S3_ENDPOINT")
        )
    }

    pub(crate) fn operator(&self, sub: &str) -> opendal::Operator {
        let url = nfrepo_store::StoreUrl::parse(&self.url(sub)).unwrap();
        let creds = nfrepo_store::Credentials::new(var("NFREPO_TEST_S3_ACCESS_KEY"), var("NFREPO_TEST_S3_SECRET_KEY"));
        nfrepo_store::s3_bucket_operator(&url, &creds, &nfrepo_store::OpenOptions::default()).unwrap()
    }

    pub(crate) fn put(&self, sub: &str, key: &str, content_type: &str, bytes: Vec<u8>) {
        let op = self.operator(sub);
        self.runtime
            .block_on(async { op.write_with(key, bytes).content_type(content_type).await })
            .unwrap();
    }

    /// key → (content, content type)
    pub(crate) fn objects(&self, sub: &str) -> BTreeMap<String, (Vec<u8>, String)> {
        let op = self.operator(sub);
        self.runtime.block_on(async {
            let mut out = BTreeMap::new();
            for entry in op.list_with("").recursive(true).await.unwrap() {
                if !entry.metadata().is_file() {
                    continue;
                }
                let key = entry.path().to_owned();
                let bytes = op.read(&key).await.unwrap().to_vec();
                let meta = op.stat(&key).await.unwrap();
                out.insert(key, (bytes, meta.content_type().unwrap_or_default().to_owned()));
            }
            out
        })
    }
}

pub(crate) fn with_s3(env: &Env, cmd: &mut std::process::Command) {
    let _ = env;
    cmd.env("NFREPO_S3_ACCESS_KEY_ID", var("NFREPO_TEST_S3_ACCESS_KEY"))
        .env("NFREPO_S3_SECRET_ACCESS_KEY", var("NFREPO_TEST_S3_SECRET_KEY"));
}

pub(crate) fn run_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut cmd = env.cmd();
    with_s3(env, &mut cmd);
    let out = cmd.arg("--json").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "nfrepo {args:?}:\n{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes a config with a bucket source `uploads` reading `bucket`'s `src`;
/// returns its path, for `--config`.
pub(crate) fn uploads_config(env: &Env, bucket: &Bucket) -> String {
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.uploads]\nkind = \"bucket\"\nconnection = \"{}\"\ntype = \"storage\"\n",
            bucket.url("src")
        ),
    )
    .unwrap();
    config.display().to_string()
}

#[test]
fn bucket_source_keeps_metadata_skips_unchanged_objects_and_restores_anywhere() {
    let env = Env::new();
    env.init();
    let bucket = Bucket::new();
    for i in 0..20u64 {
        bucket.put(
            "src",
            &format!("user-uploads/2026/11/img-{i:02}.jpg"),
            "image/jpeg",
            pseudo_random(100_000, i),
        );
    }
    bucket.put("src", "logs/a.txt", "text/plain", b"log line\n".to_vec());
    let config = uploads_config(&env, &bucket);
    let snap = || run_json(&env, &["--config", &config, "snapshot", "--source", "uploads"]);

    let first = snap();
    assert_eq!(first["summary"]["files"], 21);
    assert_eq!(first["summary"]["files_unchanged"], 0);

    // One object changes, one is added: only those are read again.
    bucket.put(
        "src",
        "user-uploads/2026/11/img-03.jpg",
        "image/jpeg",
        pseudo_random(100_000, 99),
    );
    bucket.put(
        "src",
        "user-uploads/2026/12/new.png",
        "image/png",
        pseudo_random(50_000, 98),
    );
    let second = snap();
    assert_eq!(second["summary"]["files"], 22);
    assert_eq!(second["summary"]["files_unchanged"], 20);
    let added = second["summary"]["bytes_added_raw"].as_u64().unwrap();
    assert!(added < 400_000, "added {added} bytes for 150 kB of changed objects");
    let listing = env.ok(&["ls", "-R", "uploads@latest"]);
    assert!(
        listing.contains("img-03.jpg") && listing.contains("new.png"),
        "{listing}"
    );

    // Whole bucket into another prefix: same keys, bytes and content types.
    let expected = bucket.objects("src");
    let out = run_json(&env, &["restore", "uploads@latest", "--into", &bucket.url("copy")]);
    assert_eq!(out["objects"], 22);
    assert_eq!(bucket.objects("copy"), expected);
    // Again: everything already matches.
    let again = run_json(&env, &["restore", "uploads@latest", "--into", &bucket.url("copy")]);
    assert_eq!(
        (again["objects"].as_u64(), again["objects_unchanged"].as_u64()),
        (Some(0), Some(22))
    );

    // Partial by glob, and by prefix.
    run_json(
        &env,
        &[
            "restore",
            "uploads@latest",
            "--into",
            &bucket.url("glob"),
            "--include",
            "user-uploads/2026/11/img-1*.jpg",
        ],
    );
    let glob: Vec<String> = bucket.objects("glob").into_keys().collect();
    assert_eq!(glob.len(), 10, "{glob:?}");
    assert!(glob.iter().all(|k| k.starts_with("user-uploads/2026/11/img-1")));
    run_json(
        &env,
        &["restore", "uploads@latest:logs", "--into", &bucket.url("prefix")],
    );
    let prefix = bucket.objects("prefix");
    assert_eq!(prefix.keys().collect::<Vec<_>>(), ["logs/a.txt"]);
    assert_eq!(prefix["logs/a.txt"], (b"log line\n".to_vec(), "text/plain".to_owned()));

    // Into a database URL or from a non-bucket snapshot: refused.
    let mut cmd = env.cmd();
    with_s3(&env, &mut cmd);
    let out = cmd
        .args(["restore", "uploads@latest", "--into", "mysql://root@127.0.0.1:1/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", describe(&out));
}
