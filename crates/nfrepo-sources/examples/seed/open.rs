//! Opening the repository a seeding example fills: the lines `seed_scale`
//! and `seed_history` share (each includes this file with `#[path]`).

use std::sync::Arc;

use nfrepo_engine::Repository;
use nfrepo_store::{Credentials, OpenOptions, RetryPolicy, RetryStore, Store, StoreUrl};

/// The examples' error: anything, from any thread.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the repository at `url` with the password in `NFREPO_PASSWORD`,
/// through a retrying store; S3 credentials come from `NFREPO_S3_*`/`AWS_*`
/// as for `nfrepo`.
pub async fn open_repository(url: &str) -> Result<Repository, BoxError> {
    let password = std::env::var("NFREPO_PASSWORD").map_err(|_| "set NFREPO_PASSWORD")?;
    let url = StoreUrl::parse(url)?;
    let credentials = match url {
        StoreUrl::S3 { .. } => Credentials::from_env()?,
        _ => Credentials::none(),
    };
    let store = nfrepo_store::open(&url, &credentials, &OpenOptions::default())?;
    let store: Arc<dyn Store> = Arc::new(RetryStore::new(store, RetryPolicy::default()));
    Ok(Repository::open(store, password.as_bytes()).await?)
}
