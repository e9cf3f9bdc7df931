//! What every repository command needs first: the store, the password, the open repository.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nfrepo_engine::{ErrorCode, Operation, Repository};
use nfrepo_store::{Credentials, RetryPolicy, RetryStore, Store, StoreUrl};
use zeroize::Zeroizing;

use crate::cli::GlobalArgs;
use crate::failure::Failure;

pub type Password = Zeroizing<Vec<u8>>;

/// The storage with transient errors retried; keeps the retry count for reports.
pub type RetryingStore = Arc<RetryStore<Arc<dyn Store>>>;

/// Opens the storage named by `--repo` / `NFREPO_REPOSITORY`, retrying
/// transient errors with backoff.
pub fn open_store(global: &GlobalArgs, during: Operation) -> Result<RetryingStore, Failure> {
    let Some(location) = global.repo.as_deref() else {
        return Err(Failure::new(
            ErrorCode::BackupNotFound,
            Some("NO_REPOSITORY"),
            "no repository given: use --repo or set NFREPO_REPOSITORY",
        ));
    };
    let url = StoreUrl::parse(location).map_err(|e| Failure::store(&e, during))?;
    let credentials = match url {
        StoreUrl::S3 { .. } => Credentials::from_env().map_err(|e| Failure::store(&e, during))?,
        _ => Credentials::none(),
    };
    let store = nfrepo_store::open(&url, &credentials).map_err(|e| Failure::store(&e, during))?;
    Ok(Arc::new(RetryStore::new(store, RetryPolicy::default())))
}

/// The password from `--password-file`, `NFREPO_PASSWORD`, or a prompt on a TTY.
pub fn password(global: &GlobalArgs) -> Result<Password, Failure> {
    if let Some(path) = &global.password_file {
        return read_password_file(path);
    }
    if let Ok(value) = std::env::var("NFREPO_PASSWORD") {
        return Ok(Zeroizing::new(value.into_bytes()));
    }
    prompt("repository password: ")
}

/// The new password for `init`, `key add` and `key passwd`.
pub fn new_password(file: Option<&Path>, env: &str) -> Result<Password, Failure> {
    if let Some(path) = file {
        return read_password_file(path);
    }
    if let Ok(value) = std::env::var(env) {
        return Ok(Zeroizing::new(value.into_bytes()));
    }
    let first = prompt("new password: ")?;
    let second = prompt("new password again: ")?;
    if first != second {
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            Some("PASSWORD_MISMATCH"),
            "the passwords differ",
        ));
    }
    Ok(first)
}

fn read_password_file(path: &Path) -> Result<Password, Failure> {
    let text = std::fs::read(path).map_err(|e| {
        Failure::new(
            ErrorCode::PermissionDenied,
            Some("NO_PASSWORD"),
            format!("cannot read password file {}: {e}", path.display()),
        )
    })?;
    let mut text = Zeroizing::new(text);
    while text.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        text.pop();
    }
    Ok(text)
}

fn prompt(label: &str) -> Result<Password, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            Some("NO_PASSWORD"),
            "no password: set NFREPO_PASSWORD or use --password-file",
        ));
    }
    rpassword::prompt_password(label)
        .map(|p| Zeroizing::new(p.into_bytes()))
        .map_err(|e| {
            Failure::new(
                ErrorCode::PermissionDenied,
                Some("NO_PASSWORD"),
                format!("cannot read password: {e}"),
            )
        })
}

/// An open repository, the password that opened it, and the retrying store under it.
pub struct Opened {
    pub repo: Repository,
    pub password: Password,
    pub store: RetryingStore,
}

/// Opens the repository with the password.
pub async fn open_repository(global: &GlobalArgs, during: Operation) -> Result<Opened, Failure> {
    let store = open_store(global, during)?;
    let password = password(global)?;
    let repo = Repository::open(store.clone(), &password)
        .await
        .map_err(|e| Failure::engine(&e, during))?
        .with_index_cache(cache_dir(global));
    Ok(Opened { repo, password, store })
}

/// The local cache directory: `--cache-dir` (or `NFREPO_CACHE_DIR`), else
/// `$XDG_CACHE_HOME/nfrepo`, else `~/.cache/nfrepo`; none with `--no-cache`
/// or when no home is known.
pub fn cache_dir(global: &GlobalArgs) -> Option<PathBuf> {
    if global.no_cache {
        return None;
    }
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    global
        .cache_dir
        .clone()
        .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| d.join("nfrepo")))
        .or_else(|| non_empty("HOME").map(|d| d.join(".cache").join("nfrepo")))
}

/// Splits `SNAPSHOT[:PATH]`. `SOURCE@latest` may itself hold colons.
pub fn split_spec(spec: &str) -> (&str, &str) {
    if let Some(at) = spec.find("@latest") {
        let end = at + "@latest".len();
        let rest = &spec[end..];
        return (&spec[..end], rest.strip_prefix(':').unwrap_or(rest));
    }
    match spec.split_once(':') {
        Some((snapshot, path)) => (snapshot, path),
        None => (spec, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::split_spec;

    #[test]
    fn splits_specs() {
        assert_eq!(split_spec("latest"), ("latest", ""));
        assert_eq!(split_spec("ab12:etc/hosts"), ("ab12", "etc/hosts"));
        assert_eq!(split_spec("db:main@latest:dump.sql"), ("db:main@latest", "dump.sql"));
        assert_eq!(split_spec("db@latest"), ("db@latest", ""));
    }
}
