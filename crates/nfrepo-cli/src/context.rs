//! What every repository command needs first: the store, the password, the open repository.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nfrepo_engine::{ErrorCode, Operation, Repository};
use nfrepo_format::Cipher;
use nfrepo_store::{Credentials, OpenOptions, RetryPolicy, RetryStore, Store, StoreUrl};
use zeroize::Zeroizing;

use crate::cli::GlobalArgs;
use crate::failure::Failure;

pub type Password = Zeroizing<Vec<u8>>;

/// The storage with transient errors retried; keeps the retry count for reports.
pub type RetryingStore = Arc<RetryStore<Arc<dyn Store>>>;

/// The `[repository]` of the configuration file, consulted only when
/// `--repo` / `NFREPO_REPOSITORY` is absent.
fn configured_repository(global: &GlobalArgs) -> Result<Option<crate::config::RepositoryConfig>, Failure> {
    if global.repo.is_some() {
        // An explicit configuration file must still exist and parse: a typo
        // in `--config` must not silently drop its settings.
        if let Some(path) = global.config.as_deref() {
            crate::config::load(Some(path))?;
        }
        return Ok(None);
    }
    Ok(crate::config::load(global.config.as_deref())?.and_then(|c| c.repository))
}

/// The host's security policy: the global flags, else the `[repository]`
/// of the configuration file (read even when `--repo` names the repository:
/// a policy binds every repository the host opens).
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Plain http:// to S3 off loopback is allowed (and warned about).
    pub allow_insecure_http: bool,
    /// Every repository opened must be sealed with this cipher.
    pub require_cipher: Option<Cipher>,
    /// The cipher `init` uses when `--cipher` is absent.
    pub cipher: Option<Cipher>,
    /// How long this host caches its unlock (`--unlock-cache`), if it does.
    pub unlock_cache: Option<nfrepo_engine::Span>,
}

pub fn policy(global: &GlobalArgs) -> Result<Policy, Failure> {
    let configured = crate::config::load(global.config.as_deref())?.and_then(|c| c.repository);
    let configured = configured.as_ref();
    Ok(Policy {
        allow_insecure_http: global.allow_insecure_http || configured.is_some_and(|r| r.allow_insecure_http),
        require_cipher: global
            .require_cipher
            .or(configured.and_then(|r| r.require_cipher))
            .map(crate::cli::CipherArg::cipher),
        cipher: configured.and_then(|r| r.cipher).map(crate::cli::CipherArg::cipher),
        unlock_cache: global.unlock_cache.or(configured.and_then(|r| r.unlock_cache)),
    })
}

/// This host's unlock cache when the policy asks for one. Without a cache
/// directory or a host identity there is none, with a warning: a backup
/// never fails for want of a cache.
fn unlock_cache(global: &GlobalArgs, policy: &Policy) -> Option<nfrepo_engine::UnlockCache> {
    let span = policy.unlock_cache?;
    let Some(dir) = cache_dir(global) else {
        eprintln!(
            "warning: --unlock-cache needs a cache directory (it is off with --no-cache); not caching the unlock"
        );
        return None;
    };
    match nfrepo_engine::UnlockCache::new(dir, std::time::Duration::from_secs(span.as_secs())) {
        Ok(cache) => Some(cache),
        Err(e) => {
            eprintln!(
                "warning: not caching the unlock: {}",
                crate::output::escape::text(&e.to_string())
            );
            None
        }
    }
}

/// The options every URL is turned into a store with: plain http off
/// loopback only when the policy allows it, and then with a warning on
/// stderr (on every run, whatever `--quiet` says).
pub fn store_options(global: &GlobalArgs, url: &StoreUrl) -> Result<OpenOptions, Failure> {
    let allow = policy(global)?.allow_insecure_http;
    if allow && let Some(endpoint) = url.insecure_endpoint() {
        eprintln!(
            "warning: {} is reached over plain http ({endpoint}): requests and object names cross the network unencrypted (--allow-insecure-http)",
            crate::output::escape::text(&url.to_string())
        );
    }
    Ok(OpenOptions::default().allow_insecure_http(allow))
}

/// Opens the storage named by `--repo` / `NFREPO_REPOSITORY` (else by the
/// configuration file; with `--from-replica`, the replica it names),
/// retrying transient errors with backoff.
///
/// This is the store of "the repository" of the command: its audit entry
/// goes there, and what the command writes and deletes through it is
/// recorded for that entry (`trail`).
pub fn open_store(global: &GlobalArgs, during: Operation) -> Result<RetryingStore, Failure> {
    let activity = nfrepo_engine::Activity::default();
    let store = open_repository_store(global, during, &activity)?;
    crate::trail::reached(store.clone(), cache_dir(global), activity);
    Ok(store)
}

fn open_repository_store(
    global: &GlobalArgs,
    during: Operation,
    activity: &nfrepo_engine::Activity,
) -> Result<RetryingStore, Failure> {
    let record = |store| crate::trail::recording(store, activity);
    if global.from_replica {
        let (url, credentials_file) = configured_replica(global)?;
        return open_location_with(global, &url, credentials_file.as_deref(), during, record);
    }
    let configured = configured_repository(global)?;
    let Some(location) = global.repo.as_deref().or(configured.as_ref().map(|r| r.url.as_str())) else {
        return Err(Failure::new(
            ErrorCode::BackupNotFound,
            Some("NO_REPOSITORY"),
            "no repository given: use --repo, set NFREPO_REPOSITORY, or declare [repository] in nfrepo.toml",
        ));
    };
    open_location_with(global, location, None, during, record)
}

/// The URL and credentials file of the replica `[repository] replica` names.
fn configured_replica(global: &GlobalArgs) -> Result<(String, Option<PathBuf>), Failure> {
    if global.repo.is_some() {
        return Err(Failure::usage("give --repo or --from-replica, not both"));
    }
    let config = crate::config::load(global.config.as_deref())?;
    let name = config
        .as_ref()
        .and_then(|c| c.repository.as_ref())
        .and_then(|r| r.replica.clone())
        .ok_or_else(|| Failure::usage("--from-replica needs `replica = \"NAME\"` under [repository] in nfrepo.toml"))?;
    let mut targets = config.map(|c| c.replication).unwrap_or_default();
    let target = targets.remove(&name).ok_or_else(|| {
        Failure::usage(format!(
            "[repository] replica = {name:?} names no [replication.{name}] in nfrepo.toml"
        ))
    })?;
    Ok((target.url, target.credentials_file))
}

/// Opens the store at `location` with S3 credentials from `credentials_file`
/// (two lines: key id, secret), else from the environment.
pub fn open_location(
    global: &GlobalArgs,
    location: &str,
    credentials_file: Option<&Path>,
    during: Operation,
) -> Result<RetryingStore, Failure> {
    open_location_with(global, location, credentials_file, during, |store| store)
}

/// [`open_location`] with `wrap` put over the backend, under the retries.
fn open_location_with(
    global: &GlobalArgs,
    location: &str,
    credentials_file: Option<&Path>,
    during: Operation,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> Result<RetryingStore, Failure> {
    let url = StoreUrl::parse(location).map_err(|e| Failure::store(&e, during))?;
    let options = store_options(global, &url)?;
    let credentials = match (&url, credentials_file) {
        (StoreUrl::S3 { .. }, Some(path)) => {
            protect_credentials_file(path);
            let credentials = Credentials::from_file(path).map_err(|e| Failure::store(&e, during))?;
            warn_if_readable_by_others(path);
            credentials
        }
        (StoreUrl::S3 { .. }, None) => {
            if let Some(path) = std::env::var_os(nfrepo_store::NFREPO_CREDENTIALS_FILE) {
                protect_credentials_file(Path::new(&path));
            }
            Credentials::from_env().map_err(|e| Failure::store(&e, during))?
        }
        (StoreUrl::Rest { .. }, _) => {
            protect_rest_token();
            Credentials::none()
        }
        _ => Credentials::none(),
    };
    let store = nfrepo_store::open(&url, &credentials, &options).map_err(|e| Failure::store(&e, during))?;
    let store: Arc<dyn Store> = Arc::new(crate::progress::CountingStore(store));
    Ok(Arc::new(RetryStore::new(wrap(store), RetryPolicy::default())))
}

/// Keeps the secret of an S3 credentials file (its lines after the first,
/// whatever the store then makes of them) out of every log line; the
/// variables themselves are protected by name.
fn protect_credentials_file(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path).map(Zeroizing::new) {
        for line in text.lines().skip(1) {
            nfrepo_sources::protect_value(line.trim());
        }
    }
}

/// Keeps the bearer token of `NFREPO_REST_TOKEN_FILE` (a `rest+` store reads
/// it itself) out of every log line.
fn protect_rest_token() {
    if let Some(path) = std::env::var_os(nfrepo_store::NFREPO_REST_TOKEN_FILE)
        && let Ok(token) = nfrepo_store::read_token_file(Path::new(&path))
    {
        nfrepo_sources::protect_value(&token);
    }
}

/// The password from `--password-file`, `NFREPO_PASSWORD`, or a prompt on a TTY.
pub fn password(global: &GlobalArgs) -> Result<Password, Failure> {
    if let Some(path) = &global.password_file {
        return read_password_file(path);
    }
    if let Ok(value) = std::env::var("NFREPO_PASSWORD") {
        return Ok(Zeroizing::new(value.into_bytes()));
    }
    if let Some(repository) = configured_repository(global)?
        && let Some(secret) =
            crate::config::read_secret(repository.password_env.as_deref(), repository.password_file.as_deref())?
    {
        return Ok(Zeroizing::new(secret.expose().as_bytes().to_vec()));
    }
    let typed = prompt(
        "repository password: ",
        "NO_PASSWORD",
        "no repository password: set NFREPO_PASSWORD or use --password-file",
    )?;
    protect_password(&typed);
    Ok(typed)
}

/// Whether the configuration file supplies the repository password (for
/// `init`, which otherwise asks for a new one).
pub fn has_configured_password(global: &GlobalArgs) -> Result<bool, Failure> {
    Ok(configured_repository(global)?.is_some_and(|r| r.password_env.is_some() || r.password_file.is_some()))
}

/// A password read from a file given on the command line (`key rotate
/// --keep-password-file`): trailing newlines removed, kept out of logs.
pub fn password_from_file(path: &Path) -> Result<Password, Failure> {
    read_password_file(path)
}

/// The new password for `init`, `key add` and `key passwd`: from `file`,
/// else the variable `env`, else a prompt on a TTY. Without any of them the
/// error names `env` and `flag`, the two ways to give it.
pub fn new_password(file: Option<&Path>, env: &str, flag: &str) -> Result<Password, Failure> {
    if let Some(path) = file {
        return read_password_file(path);
    }
    if let Ok(value) = std::env::var(env) {
        return Ok(Zeroizing::new(value.into_bytes()));
    }
    let missing = format!("no new password: set {env} or use {flag}");
    let first = prompt("new password: ", "NO_NEW_PASSWORD", &missing)?;
    let second = prompt("new password again: ", "NO_NEW_PASSWORD", &missing)?;
    protect_password(&first);
    if first != second {
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            Some("PASSWORD_MISMATCH"),
            "the passwords differ",
        ));
    }
    Ok(first)
}

/// The environment variable `restore --via` reads the panel user's password from.
pub const NFREPO_SERVE_PASSWORD: &str = "NFREPO_SERVE_PASSWORD";

/// The panel user's password for `restore --via`: `NFREPO_SERVE_PASSWORD`,
/// else a prompt on a TTY.
pub fn panel_password() -> Result<Zeroizing<String>, Failure> {
    let password = match std::env::var(NFREPO_SERVE_PASSWORD) {
        Ok(value) => Zeroizing::new(value.into_bytes()),
        Err(_) => prompt(
            "panel password: ",
            "NO_PASSWORD",
            "no panel password: set NFREPO_SERVE_PASSWORD or run on a terminal",
        )?,
    };
    protect_password(&password);
    String::from_utf8(password.to_vec()).map(Zeroizing::new).map_err(|_| {
        Failure::new(
            ErrorCode::PermissionDenied,
            Some("NO_PASSWORD"),
            "the panel password is not UTF-8",
        )
    })
}

/// A TOTP code: asked for on a TTY, else the first line of stdin (a code
/// is single-use and expires within a minute, so it may be piped).
pub fn totp_code() -> Result<Zeroizing<String>, Failure> {
    let missing = |why: String| Failure::new(ErrorCode::PermissionDenied, Some("NO_TOTP_CODE"), why);
    let mut line = Zeroizing::new(String::new());
    if std::io::stdin().is_terminal() {
        eprint!("TOTP code: ");
    }
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| missing(format!("cannot read the TOTP code: {e}")))?;
    let code = Zeroizing::new(line.trim().to_owned());
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(missing(
            "a TOTP code is 6 digits: type it at the prompt or pipe it on stdin".to_owned(),
        ));
    }
    Ok(code)
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
    warn_if_readable_by_others(path);
    protect_password(&text);
    Ok(text)
}

/// Keeps a password read from anywhere out of every log line.
fn protect_password(password: &[u8]) {
    if let Ok(text) = std::str::from_utf8(password) {
        nfrepo_sources::protect_value(text);
    }
}

/// Warns (one line on stderr) when a password file can be read by its
/// group or by others: anyone who can read it can open the repository.
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o044 != 0
    {
        eprintln!(
            "warning: password file {} is readable by {} (mode {:04o}); run chmod 600 on it",
            crate::output::escape::text(&path.display().to_string()),
            if meta.permissions().mode() & 0o004 != 0 {
                "others"
            } else {
                "its group"
            },
            meta.permissions().mode() & 0o7777
        );
    }
}

fn prompt(label: &str, detail: &'static str, missing: &str) -> Result<Password, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(ErrorCode::PermissionDenied, Some(detail), missing));
    }
    rpassword::prompt_password(label)
        .map(|p| Zeroizing::new(p.into_bytes()))
        .map_err(|e| {
            Failure::new(
                ErrorCode::PermissionDenied,
                Some(detail),
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

/// Opens the repository with the password, refusing it if the policy
/// requires another cipher. A command that writes (`Operation::Backup`,
/// `Operation::Maintenance`) is refused when the password's key slot is
/// stale (a key rotation did not keep it, or has not finished).
pub async fn open_repository(global: &GlobalArgs, during: Operation) -> Result<Opened, Failure> {
    let opened = open_repository_to_read(global, during).await?;
    if matches!(during, Operation::Backup | Operation::Maintenance) {
        opened
            .repo
            .require_current_ring()
            .map_err(|e| Failure::engine(&e, during))?;
    }
    Ok(opened)
}

/// Opens the repository with the password, for reading even with a stale
/// key slot (`key list`; `key rotate` judges staleness itself). Refused
/// when a put-only credential is given: a credential reads and removes
/// nothing. The refusal is logged: the credential is checked against its
/// slot (reading the config and `keys/`, never data), so that the audit
/// entry names it (`PERMISSION_DENIED/PUT_ONLY`), or records a revoked
/// credential's attempt without a key.
pub async fn open_repository_to_read(global: &GlobalArgs, during: Operation) -> Result<Opened, Failure> {
    if let Some(path) = credential_path(global)? {
        open_put_only(global, &path, during).await?;
        return Err(Failure::engine(
            &nfrepo_engine::Error::PutOnly {
                operation: "this command",
            },
            during,
        ));
    }
    let store = open_store(global, during)?;
    let password = password(global)?;
    let policy = policy(global)?;
    let unlock_cache = unlock_cache(global, &policy);
    let repo = Repository::open_cached(store.clone(), &password, unlock_cache.as_ref())
        .await
        .map_err(|e| Failure::engine(&e, during))?
        .with_index_cache(cache_dir(global));
    if let Some(required) = policy.require_cipher {
        repo.require_cipher(required).map_err(|e| Failure::engine(&e, during))?;
    }
    crate::trail::opened(&repo);
    Ok(Opened { repo, password, store })
}

/// The local cache directory: `--cache-dir` (or `NFREPO_CACHE_DIR`), else
/// `$XDG_CACHE_HOME/nfrepo`, else `~/.cache/nfrepo`; none with `--no-cache`
/// or when no home is known.
pub fn cache_dir(global: &GlobalArgs) -> Option<PathBuf> {
    if global.no_cache {
        return None;
    }
    global.cache_dir.clone().or_else(nfrepo_store::default_cache_dir)
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

/// The repository `snapshot` writes to: opened with the put-only credential
/// of `--credential` (one put-only session) when given, else with the
/// password as [`open_repository`] does.
pub async fn open_for_backup(global: &GlobalArgs) -> Result<(Repository, RetryingStore), Failure> {
    let Some(path) = credential_path(global)? else {
        let Opened { repo, store, .. } = open_repository(global, Operation::Backup).await?;
        return Ok((repo, store));
    };
    open_put_only(global, &path, Operation::Backup).await
}

/// Opens one put-only session with the credential file at `path`, and
/// reports it for the audit entry.
async fn open_put_only(
    global: &GlobalArgs,
    path: &Path,
    during: Operation,
) -> Result<(Repository, RetryingStore), Failure> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        Failure::new(
            ErrorCode::PermissionDenied,
            Some("NO_CREDENTIAL"),
            format!("cannot read the credential file {}: {e}", path.display()),
        )
    })?);
    warn_if_readable_by_others(path);
    let credential = nfrepo_format::PutOnlyCredential::decode(&bytes).map_err(|e| {
        Failure::new(
            ErrorCode::PermissionDenied,
            Some("BAD_CREDENTIAL"),
            format!("{} is not a usable put-only credential: {e}", path.display()),
        )
    })?;
    let store = open_store(global, during)?;
    let repo = Repository::open_put_only(store.clone(), credential)
        .await
        .map_err(|e| Failure::engine(&e, during))?
        .with_known_files(cache_dir(global));
    crate::trail::opened(&repo);
    Ok((repo, store))
}

/// The put-only credential file this host backs up with: `--credential` /
/// `NFREPO_CREDENTIAL_FILE`, else `[repository] credential_file` of the
/// configuration file unless a password is given explicitly
/// (`--password-file`, `NFREPO_PASSWORD`: what is given beats what is
/// configured, as for the repository URL).
pub fn credential_path(global: &GlobalArgs) -> Result<Option<PathBuf>, Failure> {
    if let Some(path) = &global.credential {
        return Ok(Some(path.clone()));
    }
    if global.password_file.is_some() || std::env::var_os("NFREPO_PASSWORD").is_some() {
        return Ok(None);
    }
    Ok(configured_repository(global)?.and_then(|r| r.credential_file))
}

/// Writes a put-only credential file, mode 0600, refusing to replace a file.
pub fn write_credential_file(path: &Path, credential: &nfrepo_format::PutOnlyCredential) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = Zeroizing::new(
        credential
            .encode()
            .map_err(|e| Failure::new(ErrorCode::BackupFailed, None, format!("encoding the credential: {e}")))?,
    );
    let fail = |e: std::io::Error| {
        Failure::new(
            ErrorCode::PermissionDenied,
            None,
            format!("cannot write the credential file {}: {e}", path.display()),
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(&bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
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
