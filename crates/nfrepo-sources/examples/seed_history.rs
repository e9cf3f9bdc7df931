//! Adds N tiny stream snapshots to a repository, each as `nfrepo snapshot
//! --stdin` would write it (its own packs, index delta and snapshot), in one
//! process: the history `scripts/bench-history.sh` measures against.
//!
//! ```text
//! NFREPO_PASSWORD=… cargo run --release --example seed_history -- URL COUNT [CACHE_DIR]
//! ```
//! S3 credentials come from `NFREPO_S3_*`/`AWS_*` as for `nfrepo`.

use std::sync::Arc;

use nfrepo_engine::{BackupOptions, Repository};
use nfrepo_store::{Credentials, OpenOptions, RetryPolicy, RetryStore, Store, StoreUrl};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(count)) = (args.first(), args.get(1)) else {
        return Err("usage: seed_history URL COUNT [CACHE_DIR]".into());
    };
    let count: u64 = count.parse().map_err(|_| "COUNT must be a number")?;
    let password = std::env::var("NFREPO_PASSWORD").map_err(|_| "set NFREPO_PASSWORD")?;
    let url = StoreUrl::parse(url)?;
    let credentials = match url {
        StoreUrl::S3 { .. } => Credentials::from_env()?,
        _ => Credentials::none(),
    };
    let store = nfrepo_store::open(&url, &credentials, &OpenOptions::default())?;
    let store: Arc<dyn Store> = Arc::new(RetryStore::new(store, RetryPolicy::default()));
    let repo = Repository::open(store, password.as_bytes())
        .await?
        .with_index_cache(args.get(2).map(Into::into));
    let run = std::process::id();
    for i in 0..count {
        let session = repo.begin_backup(BackupOptions::new("db", "stdin", "dump")).await?;
        let writer = session.writer();
        let line = format!("run {run} row {i}\n");
        let outcome =
            tokio::task::spawn_blocking(move || nfrepo_sources::backup_reader(&writer, "db.sql", line.as_bytes()))
                .await??;
        session.commit(outcome.root, outcome.details).await?;
        if (i + 1) % 500 == 0 {
            eprintln!("{} snapshots added", i + 1);
        }
    }
    Ok(())
}
