//! `nfrepo.toml`: the repository and the named sources an operator runs from cron.
//!
//! Looked up at `--config` / `NFREPO_CONFIG` (which must exist), else
//! `/etc/nfrepo/nfrepo.toml`, else `~/.config/nfrepo/nfrepo.toml`. Unknown
//! keys are errors, so a typo never silently drops a setting.
//!
//! ```toml
//! [repository]
//! url = "s3://backups/nfrepo?endpoint=https://s3.example&region=eu-west-1"
//! password_file = "/etc/nfrepo/repo.pass"      # or password_env = "NFREPO_PASSWORD"
//! replica = "dr-region"                         # what `--from-replica` reads (a [replication.NAME])
//! cipher = "aes256gcm"                          # what `init` seals with (default: aes256gcm with hardware AES, else xchacha20poly1305)
//! require_cipher = "aes256gcm"                  # every command refuses a repository with another cipher
//! allow_insecure_http = false                   # true allows http:// S3 endpoints off loopback (warns)
//! unlock_cache = "1h"                           # opt-in: argon2id once an hour on this host (format-spec/unlock.md)
//! # credential_file = "/etc/nfrepo/host.credential"   # a backup host: a put-only credential instead of a
//! #                                                   # password (`key add --put-only`); snapshot only
//!
//! [sources.mysql-main]
//! kind = "mysql"                                # mysql, postgres, redis, bucket, files, config, logs, artifact, analytics
//! connection = "mysql://backup@db1:3306"        # no database: every database
//! password_env = "MYSQL_BACKUP_PASSWORD"        # or password_file
//! env = "prod"
//! type = "database"
//! schedule = "*/5 * * * *"
//! retention = "db-incremental"
//! pre_hook = "touch /run/backup-running"
//! post_hook = "rm -f /run/backup-running"
//! rpo = "10m"                                   # alert when the newest snapshot is older (else: schedule + grace)
//!
//! [sources.pg]
//! kind = "postgres"
//! method = "basebackup"                         # pg_basebackup + WAL through `nfrepo agent` (default "dump": pg_dump)
//! connection = "postgres://postgres@127.0.0.1:5432"
//!
//! [sources.mysql-pitr]
//! kind = "mysql"
//! connection = "mysql://backup@db1:3306"
//! binlog = true                                 # `nfrepo agent` streams the binlogs (point-in-time restore)
//! binlog_interval = "60s"                       # commit a growing binlog at least this often (default 60s)
//!
//! [agent]                                       # `nfrepo agent`, `wal-push`, `wal-fetch`
//! socket = "/run/nfrepo/agent.sock"
//!
//! [replication.dr-region]                     # `nfrepo replicate` copies the repository here
//! url = "s3://backups-dr/nfrepo?endpoint=https://s3.dr.example&region=eu-central-1"
//! credentials_file = "/etc/nfrepo/dr-s3.credentials"   # else the repository's S3 credentials
//! max_lag = "5m"                                # alert when the replica is further behind
//!
//! [alerts]                                      # `nfrepo alerts`, `nfrepo metrics` (see nfrepo_ops::AlertsConfig)
//! repeat = "4h"
//!
//! [serve]                                       # `nfrepo serve --listen`: the admin panel (see nfrepo_panel::ServeConfig)
//! listen = "127.0.0.1:8080"
//! users = [{ name = "alice", password_hash = "$argon2id$...", totp_secret_file = "/etc/nfrepo/alice.totp" }]
//! restore_targets = { scratch = "/srv/nfrepo-restores" }
//!
//! [retention.db-incremental]                   # a class for `nfrepo forget` (else a built-in one)
//! keep-within = "7d"
//! keep-daily = 30
//!
//! [sources.web-release]
//! kind = "artifact"                             # a build directory (or file) per release
//! paths = ["/srv/web/current"]
//! health_check = "curl -fsS http://127.0.0.1:8080/health"   # after a rollback / deploy-check
//! health_timeout = 60                           # seconds (default 60)
//!
//! [sources.metrics]
//! kind = "analytics"                            # aggregated-metrics exports, retention "analytics"
//! command = ["/usr/local/bin/export-metrics", "--daily"]    # or connection = "s3://…", or paths
//! output = "metrics.csv"                        # the name the command's output is stored under
//! ```
//!
//! Secrets never live in the file itself: passwords come from an
//! environment variable or a file named here, are read only when a source
//! runs, and are held in [`nfrepo_sources::Secret`]. Error messages name the
//! variable or file, never the value, and parse errors quote no source line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nfrepo_engine::ErrorCode;
use nfrepo_sources::Secret;
use serde::Deserialize;

use crate::failure::Failure;

/// The parsed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The repository used when `--repo` is absent.
    pub repository: Option<RepositoryConfig>,
    /// Named sources.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Retention classes by name (`[retention.NAME]`); a source's class may
    /// also name a built-in class (`nfrepo_engine::BUILT_IN_CLASSES`).
    #[serde(default)]
    pub retention: BTreeMap<String, nfrepo_engine::RetentionPolicy>,
    /// Replication targets by name (`[replication.NAME]`).
    #[serde(default)]
    pub replication: BTreeMap<String, ReplicationConfig>,
    /// `[alerts]`: thresholds, state file and channels (see `nfrepo_ops::AlertsConfig`).
    pub alerts: Option<nfrepo_ops::AlertsConfig>,
    /// `[serve]`: the admin panel's address, users and restore targets (see `nfrepo_panel::ServeConfig`).
    pub serve: Option<nfrepo_panel::ServeConfig>,
    /// `[agent]`: the WAL archiving agent's socket.
    pub agent: Option<AgentConfig>,
    /// Where the file was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[repository]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Repository URL, as `--repo`.
    pub url: String,
    /// File holding the repository password.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the repository password.
    pub password_env: Option<String>,
    /// The `[replication.NAME]` that `--from-replica` reads from.
    pub replica: Option<String>,
    /// The cipher `init` seals a new repository with (`--cipher` overrides it).
    pub cipher: Option<crate::cli::CipherArg>,
    /// Refuse to open any repository sealed with another cipher (as `--require-cipher`).
    pub require_cipher: Option<crate::cli::CipherArg>,
    /// Allow S3 endpoints over plain http:// off loopback (as `--allow-insecure-http`).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// A put-only credential file (as `--credential`): this host backs up
    /// and reads nothing. Exclusive with `password_file` / `password_env`.
    pub credential_file: Option<PathBuf>,
    /// Cache this host's unlock for this long (as `--unlock-cache`).
    #[serde(default, deserialize_with = "unlock_span")]
    pub unlock_cache: Option<nfrepo_engine::Span>,
}

fn unlock_span<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<nfrepo_engine::Span>, D::Error> {
    let text = String::deserialize(de)?;
    crate::cli::unlock_span(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `[replication.NAME]`: a replica of the repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The replica's URL, as `--repo`.
    pub url: String,
    /// S3 credentials for the replica: a file of two lines, key id then
    /// secret (as `NFREPO_S3_CREDENTIALS_FILE`); else the same variables as
    /// the repository's.
    pub credentials_file: Option<PathBuf>,
    /// Alert (`replication_lag`) when the replica is further behind than this.
    pub max_lag: Option<nfrepo_engine::Span>,
}

/// `[agent]`: `nfrepo agent` and its clients `wal-push` / `wal-fetch`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The Unix socket (default `$XDG_RUNTIME_DIR/nfrepo/agent.sock`, else
    /// `/tmp/nfrepo-<uid>/agent.sock`); its directory is made mode 0700.
    pub socket: Option<PathBuf>,
}

/// How a PostgreSQL source is backed up.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMethod {
    /// `pg_dump` per database (logical).
    #[default]
    Dump,
    /// `pg_basebackup` of the whole cluster (physical), with WAL archived
    /// through `nfrepo agent` for point-in-time recovery.
    Basebackup,
}

/// What a source reads.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Mysql,
    Postgres,
    Redis,
    Bucket,
    Files,
    Config,
    Logs,
    /// Deployment artifacts: a build directory or file per release, with
    /// `mark-good`, `rollback --to last-good` and a health check.
    Artifact,
    /// Analytics exports: a command's output, a bucket prefix or files.
    Analytics,
}

impl SourceKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mysql => "mysql",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Bucket => "bucket",
            Self::Files => "files",
            Self::Config => "config",
            Self::Logs => "logs",
            Self::Artifact => "artifact",
            Self::Analytics => "analytics",
        }
    }

    /// Kinds whose snapshots are live file trees that `rollback` can put back.
    pub const fn is_file_tree(self) -> bool {
        matches!(self, Self::Files | Self::Config | Self::Logs | Self::Artifact)
    }

    /// The retention class a source of this kind follows when it names none.
    pub const fn default_retention(self) -> Option<&'static str> {
        match self {
            Self::Artifact => Some("files"),
            Self::Analytics => Some("analytics"),
            _ => None,
        }
    }

    const fn is_server(self) -> bool {
        matches!(self, Self::Mysql | Self::Postgres | Self::Redis)
    }
}

/// `[sources.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// `mysql://user@host:port[/db]`, `postgres://…`, `redis://host:port`, or for
    /// buckets `s3://bucket/prefix?endpoint=…&region=…`.
    pub connection: Option<String>,
    /// postgres: `dump` (default) or `basebackup`.
    pub method: Option<PostgresMethod>,
    /// mysql: stream the binary logs through `nfrepo agent` for point-in-time recovery.
    pub binlog: Option<bool>,
    /// mysql with `binlog`: the longest time between two commits of a growing binlog (default 60s).
    pub binlog_interval: Option<nfrepo_engine::Span>,
    /// Databases to dump (default: the one in the connection URL, else all).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Environment variable holding the server password.
    pub password_env: Option<String>,
    /// File holding the server password.
    pub password_file: Option<PathBuf>,
    /// Bucket: environment variables holding the access key id and secret
    /// (default: the repository's, NFREPO_S3_ACCESS_KEY_ID / NFREPO_S3_SECRET_ACCESS_KEY).
    pub access_key_env: Option<String>,
    pub secret_key_env: Option<String>,
    /// Where the source's client tools are, if not on `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// Redis: the server's appendonlydir, stored as files.
    pub aof_dir: Option<PathBuf>,
    /// File kinds: what to back up.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// File kinds: keep only matching files (globs on absolute paths).
    #[serde(default)]
    pub include: Vec<String>,
    /// File kinds: leave out matching entries.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The environment (prod, staging…), recorded as tag `env`.
    pub env: Option<String>,
    /// The type (database, storage, configs, logs…), recorded as tag `type`.
    #[serde(rename = "type")]
    pub source_type: Option<String>,
    /// Chunking profile: `files`, `dump` or `rows` (default: the source kind's).
    pub profile: Option<String>,
    /// Also record the SHA-256 of every dump (database kinds with method
    /// dump), exported stream (analytics) and bucket object, for comparing
    /// with `sha256sum` or an S3 checksum; about 15 % more backup CPU.
    #[serde(default)]
    pub sha256: bool,
    /// Cron expression (five fields, or @hourly/@daily/…).
    pub schedule: Option<String>,
    /// The recovery point objective: alert (`missed_backup`) when the newest
    /// snapshot is older than this, whatever the schedule says.
    pub rpo: Option<nfrepo_engine::Span>,
    /// The retention class name, recorded as tag `retention`.
    pub retention: Option<String>,
    /// Shell command run before the backup; its failure aborts it.
    pub pre_hook: Option<String>,
    /// Shell command run after the backup, whatever happened.
    pub post_hook: Option<String>,
    /// File kinds: shell command run after a rollback (and by
    /// `deploy-check`); failing or outliving `health_timeout`, it triggers an
    /// automatic rollback to the previous good snapshot.
    pub health_check: Option<String>,
    /// Seconds the health check may take (default 60).
    pub health_timeout: Option<u64>,
    /// Analytics: the export command (program and arguments, no shell);
    /// its standard output is stored, and a failed command commits nothing.
    pub command: Option<Vec<String>>,
    /// Analytics: the name the command's output is stored under (default `<source>.out`).
    pub output: Option<String>,
    /// `[sources.NAME.drill]`: what `nfrepo drill` checks beyond the restore.
    pub drill: Option<DrillConfig>,
}

/// `[sources.NAME.drill]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// mysql, postgres: sanity queries run in the restored database, each of
    /// which must return a true value (`SELECT count(*) > 0 FROM orders`).
    #[serde(default)]
    pub queries: Vec<String>,
    /// Where the server binaries are (`mariadbd`, PostgreSQL's `postgres`,
    /// `redis-server`), if not on `PATH` or, for PostgreSQL, `/usr/lib/postgresql/15/bin`.
    pub server_bin_dir: Option<PathBuf>,
}

/// How long a health check may take when `health_timeout` is not set.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 60;

impl SourceConfig {
    /// A PostgreSQL source backed up by `pg_basebackup`.
    pub fn is_basebackup(&self) -> bool {
        self.kind == SourceKind::Postgres && self.method == Some(PostgresMethod::Basebackup)
    }

    /// A MySQL/MariaDB source whose binlogs the agent streams.
    pub fn is_binlog(&self) -> bool {
        self.kind == SourceKind::Mysql && self.binlog == Some(true)
    }

    /// How often the agent commits a growing binlog.
    pub fn binlog_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.binlog_interval.map_or(60, nfrepo_engine::Span::as_secs))
    }

    /// The retention class: the configured one, else the kind's default.
    pub fn retention_class(&self) -> Option<&str> {
        self.retention.as_deref().or(self.kind.default_retention())
    }

    /// The health check's time limit.
    pub fn health_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.health_timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECS))
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(ErrorCode::BackupFailed, Some("CONFIG_INVALID"), message)
}

/// Finds and parses the configuration; `None` when no file exists at the default places.
///
/// # Errors
/// `--config`/`NFREPO_CONFIG` naming a missing file; an unreadable or invalid file.
pub fn load(explicit: Option<&Path>) -> Result<Option<Config>, Failure> {
    let path = match explicit {
        Some(path) => {
            if !path.exists() {
                return Err(Failure::new(
                    ErrorCode::BackupNotFound,
                    Some("CONFIG_NOT_FOUND"),
                    format!("configuration file {} does not exist", path.display()),
                ));
            }
            path.to_path_buf()
        }
        None => {
            let mut candidates = vec![PathBuf::from("/etc/nfrepo/nfrepo.toml")];
            if let Some(home) = std::env::var_os("HOME") {
                candidates.push(PathBuf::from(home).join(".config/nfrepo/nfrepo.toml"));
            }
            match candidates.into_iter().find(|p| p.exists()) {
                Some(path) => path,
                None => return Ok(None),
            }
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::new(
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                ErrorCode::PermissionDenied
            } else {
                ErrorCode::BackupFailed
            },
            Some("CONFIG_INVALID"),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let mut config = parse(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    config.path = std::path::absolute(&path).unwrap_or(path);
    protect_secret_vars(&config);
    Ok(Some(config))
}

/// Marks every variable the configuration names for a secret as protected:
/// no child process inherits it and no log line shows its value.
fn protect_secret_vars(config: &Config) {
    let repository = config.repository.as_ref().and_then(|r| r.password_env.as_deref());
    let sources = config.sources.values().flat_map(|s| {
        [&s.password_env, &s.access_key_env, &s.secret_key_env]
            .into_iter()
            .filter_map(Option::as_deref)
    });
    let alerts = config.alerts.iter().flat_map(|a| {
        [
            a.webhook.as_ref().and_then(|w| w.secret_env.as_deref()),
            a.email.as_ref().and_then(|e| e.password_env.as_deref()),
        ]
        .into_iter()
        .flatten()
    });
    for name in repository.into_iter().chain(sources).chain(alerts) {
        nfrepo_sources::protect_env_var(name);
    }
}

/// Parses and validates the text of a configuration file.
///
/// The error names the line and the problem but never quotes the line, in
/// case it is a secret someone pasted in.
pub fn parse(text: &str) -> Result<Config, String> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text.get(..span.start).unwrap_or("").matches('\n').count() + 1);
        let message = e.message().replace('\n', " ");
        match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        }
    })?;
    for (name, source) in &config.sources {
        validate_source(name, source).map_err(|e| format!("source {name:?}: {e}"))?;
    }
    if let Some(alerts) = &config.alerts {
        alerts.validate()?;
    }
    if let Some(serve) = &config.serve {
        serve.validate()?;
    }
    if let Some(repository) = &config.repository
        && repository.credential_file.is_some()
        && (repository.password_file.is_some() || repository.password_env.is_some())
    {
        return Err(
            "[repository] gives a put-only credential_file and a password: a backup host holds one of them".into(),
        );
    }
    Ok(config)
}

fn validate_source(name: &str, source: &SourceConfig) -> Result<(), String> {
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err("names may hold only letters, digits, '-', '_' and '.'".into());
    }
    if source.kind.is_server() {
        let connection = source
            .connection
            .as_deref()
            .ok_or_else(|| format!("kind {} needs a connection", source.kind.name()))?;
        let parsed = nfrepo_sources::Connection::parse(connection).map_err(|e| e.to_string())?;
        let expected = source.kind.name();
        if parsed.scheme != expected {
            return Err(format!("kind {expected} needs a {expected}:// connection"));
        }
        if !source.paths.is_empty() || !source.include.is_empty() || !source.exclude.is_empty() {
            return Err("paths, include and exclude are for file kinds".into());
        }
    } else if source.kind == SourceKind::Analytics {
        validate_analytics(source)?;
    } else if source.kind == SourceKind::Bucket {
        let connection = source
            .connection
            .as_deref()
            .ok_or_else(|| "kind bucket needs a connection (s3://bucket/prefix?endpoint=…)".to_owned())?;
        match nfrepo_store::StoreUrl::parse(connection) {
            Ok(nfrepo_store::StoreUrl::S3 { .. }) => {}
            _ => return Err("kind bucket needs an s3:// connection".into()),
        }
        if !source.paths.is_empty()
            || !source.databases.is_empty()
            || !source.include.is_empty()
            || !source.exclude.is_empty()
        {
            return Err("paths, databases, include and exclude are not for kind bucket".into());
        }
        if source.access_key_env.is_some() != source.secret_key_env.is_some() {
            return Err("give both access_key_env and secret_key_env, or neither".into());
        }
    } else {
        if source.paths.is_empty() {
            return Err(format!("kind {} needs paths", source.kind.name()));
        }
        if source.connection.is_some() || !source.databases.is_empty() {
            return Err("connection and databases are for database kinds".into());
        }
    }
    let bucket_like = source.kind == SourceKind::Bucket || source.kind == SourceKind::Analytics;
    if !bucket_like && (source.access_key_env.is_some() || source.secret_key_env.is_some()) {
        return Err("access_key_env and secret_key_env are for kind bucket".into());
    }
    if (source.command.is_some() || source.output.is_some()) && source.kind != SourceKind::Analytics {
        return Err("command and output are for kind analytics".into());
    }
    if (source.health_check.is_some() || source.health_timeout.is_some()) && !source.kind.is_file_tree() {
        return Err("health_check and health_timeout are for file kinds (files, config, logs, artifact)".into());
    }
    if source.health_timeout == Some(0) {
        return Err("health_timeout must be at least 1 second".into());
    }
    if let Some(drill) = &source.drill
        && !drill.queries.is_empty()
        && !matches!(source.kind, SourceKind::Mysql | SourceKind::Postgres)
    {
        return Err("drill.queries are for kinds mysql and postgres".into());
    }
    if source.method.is_some() && source.kind != SourceKind::Postgres {
        return Err("method is for kind postgres".into());
    }
    if source.is_basebackup() && !source.databases.is_empty() {
        return Err("a basebackup copies the whole cluster: databases are for method dump".into());
    }
    if source.binlog.is_some() && source.kind != SourceKind::Mysql {
        return Err("binlog is for kind mysql".into());
    }
    if source.binlog_interval.is_some() && !source.is_binlog() {
        return Err("binlog_interval is for kind mysql with binlog = true".into());
    }
    if source.binlog_interval.is_some_and(|s| s.as_secs() == 0) {
        return Err("binlog_interval must be at least 1s".into());
    }
    if name.ends_with(".binlog") {
        return Err("names ending in .binlog are the binlog streams of mysql sources".into());
    }
    if name.ends_with(".wal") {
        return Err("names ending in .wal are the WAL streams of basebackup sources".into());
    }
    if source.aof_dir.is_some() && source.kind != SourceKind::Redis {
        return Err("aof_dir is for kind redis".into());
    }
    if source.password_env.is_some() && source.password_file.is_some() {
        return Err("give password_env or password_file, not both".into());
    }
    if source.sha256 && (source.kind.is_file_tree() || source.is_basebackup()) {
        return Err(
            "sha256 is for dumps, bucket objects and analytics exports (file nodes and basebackups carry a BLAKE3)"
                .into(),
        );
    }
    if let Some(profile) = &source.profile
        && nfrepo_format::ChunkerProfile::named(profile).is_none()
    {
        return Err(format!("unknown profile {profile:?} (files, dump or rows)"));
    }
    if let Some(schedule) = &source.schedule {
        check_schedule(schedule)?;
    }
    Ok(())
}

/// An analytics source reads exactly one of: a command, a bucket prefix, paths.
fn validate_analytics(source: &SourceConfig) -> Result<(), String> {
    let inputs = [
        source.command.is_some(),
        source.connection.is_some(),
        !source.paths.is_empty(),
    ];
    if inputs.iter().filter(|given| **given).count() != 1 {
        return Err("kind analytics needs exactly one of command, connection (s3://bucket/prefix) or paths".into());
    }
    if let Some(argv) = &source.command
        && argv.first().is_none_or(String::is_empty)
    {
        return Err("command needs a program".into());
    }
    if source.output.is_some() && source.command.is_none() {
        return Err("output names a command's output; give command".into());
    }
    if let Some(connection) = &source.connection {
        match nfrepo_store::StoreUrl::parse(connection) {
            Ok(nfrepo_store::StoreUrl::S3 { .. }) => {}
            _ => return Err("kind analytics reads a bucket through an s3:// connection".into()),
        }
        if source.access_key_env.is_some() != source.secret_key_env.is_some() {
            return Err("give both access_key_env and secret_key_env, or neither".into());
        }
    }
    if !source.databases.is_empty() {
        return Err("databases are for database kinds".into());
    }
    if source.command.is_some() && (!source.include.is_empty() || !source.exclude.is_empty()) {
        return Err("include and exclude are for paths".into());
    }
    Ok(())
}

/// Accepts what cron accepts: `@hourly`-style names or five fields of
/// numbers, `*`, ranges, lists, steps and month/day names (one parser,
/// `nfrepo_ops::Schedule`, which the alert rules read schedules with).
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    nfrepo_ops::Schedule::parse(schedule).map(|_| ())
}

/// Refuses `snapshot --source NAME PATH…` when `NAME` is a configured
/// source backing up other paths (issue 9, bug 9): filed under the source,
/// such a snapshot would make `rollback NAME` treat paths the source does
/// not name as its own. The same paths as configured are accepted.
///
/// # Errors
/// A usage failure (exit 2) naming both sets of paths; configuration errors.
pub fn check_command_line_paths(explicit: Option<&Path>, name: &str, paths: &[PathBuf]) -> Result<(), Failure> {
    let Some(config) = load(explicit)? else {
        return Ok(());
    };
    let Some(source) = config.sources.get(name) else {
        return Ok(());
    };
    let normal = |paths: &[PathBuf]| -> std::collections::BTreeSet<PathBuf> {
        paths
            .iter()
            .map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .components()
                    .collect()
            })
            .collect()
    };
    if normal(&source.paths) == normal(paths) {
        return Ok(());
    }
    let configured: Vec<String> = source.paths.iter().map(|p| p.display().to_string()).collect();
    Err(Failure::usage(format!(
        "source {name} is configured with paths [{}] in {}; paths given on the command line differ          (run `snapshot --source {name}` without paths, or choose another source name)",
        configured.join(", "),
        config.path.display()
    )))
}

impl Config {
    pub fn source(&self, name: &str) -> Result<&SourceConfig, Failure> {
        self.sources.get(name).ok_or_else(|| {
            Failure::new(
                ErrorCode::BackupNotFound,
                Some("UNKNOWN_SOURCE"),
                format!("no source {name:?} in {}", self.path.display()),
            )
        })
    }
}

/// The credentials `restore --into` connects with, and where they came from.
#[derive(Debug)]
pub struct ServerCredentials {
    /// The connection, with the user of the configured source when the URL names none.
    pub connection: nfrepo_sources::Connection,
    /// What supplied the password, for the operator: `source NAME`, a variable, or nothing.
    pub from: String,
}

/// Whether the configured `source` names the server of `target` (scheme,
/// host, port and socket as written; the user too when the URL gives one).
fn names_server(source: &SourceConfig, target: &nfrepo_sources::Connection) -> bool {
    let Some(text) = source.connection.as_deref() else {
        return false;
    };
    let Ok(configured) = nfrepo_sources::Connection::parse(text) else {
        return false;
    };
    configured.scheme == target.scheme
        && configured.host == target.host
        && configured.port == target.port
        && configured.socket == target.socket
        && (target.user.is_none() || configured.user == target.user)
}

/// The password for `restore --into CONNECTION`: that of the configured
/// database source naming the same server (the snapshot's own source
/// first, else the only one that matches), read from its `password_env` or
/// `password_file`; else the tool's own variable in nfrepo's environment
/// (`MYSQL_PWD`, `PGPASSWORD`), which children never inherit by themselves.
///
/// # Errors
/// Several configured sources name the server with different credentials
/// and none is the snapshot's (`AMBIGUOUS_CREDENTIALS`); the chosen
/// source's password variable or file cannot be read (`NO_PASSWORD`).
pub fn server_credentials(
    config: Option<&Config>,
    connection: nfrepo_sources::Connection,
    snapshot_source: &str,
) -> Result<ServerCredentials, Failure> {
    let matching: Vec<(&String, &SourceConfig)> = config
        .map(|c| {
            c.sources
                .iter()
                .filter(|(_, s)| s.kind.is_server() && names_server(s, &connection))
                .collect()
        })
        .unwrap_or_default();
    let chosen = matching
        .iter()
        .find(|(name, _)| name.as_str() == snapshot_source)
        .or_else(|| {
            let first = matching.first()?;
            let same = |s: &SourceConfig| {
                (
                    s.password_env.clone(),
                    s.password_file.clone(),
                    nfrepo_sources::Connection::parse(s.connection.as_deref().unwrap_or_default())
                        .ok()
                        .and_then(|c| c.user),
                )
            };
            matching.iter().all(|(_, s)| same(s) == same(first.1)).then_some(first)
        });
    if let Some((name, source)) = chosen {
        let password = read_secret(source.password_env.as_deref(), source.password_file.as_deref())?;
        let mut connection = connection;
        if connection.user.is_none() {
            connection.user = nfrepo_sources::Connection::parse(source.connection.as_deref().unwrap_or_default())
                .ok()
                .and_then(|c| c.user);
        }
        let from = match (&source.password_env, &source.password_file) {
            (Some(var), _) => format!("the credentials of source {name} ({var})"),
            (None, Some(file)) => format!("the credentials of source {name} ({})", file.display()),
            (None, None) => format!("the user of source {name}, without password"),
        };
        return Ok(ServerCredentials {
            connection: connection.with_password(password),
            from,
        });
    }
    if matching.len() > 1 {
        let names: Vec<&str> = matching.iter().map(|(n, _)| n.as_str()).collect();
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            Some("AMBIGUOUS_CREDENTIALS"),
            format!(
                "configured sources {} name this server with different credentials: put the user in the URL",
                names.join(", ")
            ),
        ));
    }
    let var = if connection.scheme == "postgres" {
        "PGPASSWORD"
    } else {
        "MYSQL_PWD"
    };
    let password = std::env::var(var).ok().map(Secret::new);
    let from = if password.is_some() {
        format!("the password in {var}")
    } else {
        "no password (no configured source names this server, and {var} is not set)".replace("{var}", var)
    };
    Ok(ServerCredentials {
        connection: connection.with_password(password),
        from,
    })
}

/// Reads a secret from `env` or `file`; `None` if neither is set.
///
/// # Errors
/// The variable is unset or the file unreadable (named; the value never is).
pub fn read_secret(env: Option<&str>, file: Option<&Path>) -> Result<Option<Secret>, Failure> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(_) => Err(Failure::new(
                ErrorCode::PermissionDenied,
                Some("NO_PASSWORD"),
                format!("environment variable {var} (password_env) is not set"),
            )),
        };
    }
    if let Some(path) = file {
        let mut text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                ErrorCode::PermissionDenied,
                Some("NO_PASSWORD"),
                format!("cannot read password file {}: {e}", path.display()),
            )
        })?;
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        crate::context::warn_if_readable_by_others(path);
        nfrepo_sources::protect_value(&text);
        return Ok(Some(Secret::new(text)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    const SAMPLE: &str = r#"
[repository]
url = "file:///srv/repo"
password_env = "REPO_PW"

[sources.mysql-main]
kind = "mysql"
connection = "mysql://backup@127.0.0.1:13306"
password_env = "MYSQL_PW"
env = "prod"
type = "database"
schedule = "*/5 * * * *"
retention = "db-incremental"
pre_hook = "true"

[sources.etc]
kind = "config"
paths = ["/etc/nginx"]
exclude = ["*.bak"]
schedule = "@daily"

[retention.db-incremental]
keep-within = "7d"
keep-daily = 30
"#;

    #[test]
    fn parses_sources_and_retention_classes() {
        let config = parse(SAMPLE).unwrap();
        assert_eq!(config.repository.unwrap().url, "file:///srv/repo");
        let mysql = &config.sources["mysql-main"];
        assert_eq!(mysql.kind, SourceKind::Mysql);
        assert_eq!(mysql.source_type.as_deref(), Some("database"));
        assert_eq!(mysql.retention.as_deref(), Some("db-incremental"));
        assert_eq!(config.sources["etc"].exclude, ["*.bak"]);
        let class = &config.retention["db-incremental"];
        assert_eq!(class.keep_daily, Some(30));
        assert!(class.keep_within.is_some());
        // A misspelt rule is an error, not a policy that keeps less.
        let misspelt = SAMPLE.replace("keep-daily", "keep-dialy");
        assert!(parse(&misspelt).is_err());
    }

    // Issue 16: the basebackup method and the agent's socket.
    #[test]
    fn basebackup_sources_and_the_agent_socket_parse_and_misuse_is_refused() {
        let pg = "[sources.pg]\nkind = \"postgres\"\nconnection = \"postgres://postgres@db:5432\"\n";
        let config = parse(&format!(
            "{pg}method = \"basebackup\"\n\n[agent]\nsocket = \"/run/nfrepo/a.sock\"\n"
        ))
        .unwrap();
        assert!(config.sources["pg"].is_basebackup());
        assert_eq!(
            config.agent.unwrap().socket.unwrap(),
            PathBuf::from("/run/nfrepo/a.sock")
        );
        assert!(!parse(pg).unwrap().sources["pg"].is_basebackup(), "dump is the default");
        let err = parse(&format!("{pg}method = \"basebackup\"\ndatabases = [\"app\"]\n")).unwrap_err();
        assert!(err.contains("whole cluster"), "{err}");
        let err = parse("[sources.m]\nkind = \"mysql\"\nconnection = \"mysql://root@db\"\nmethod = \"basebackup\"\n")
            .unwrap_err();
        assert!(err.contains("method is for kind postgres"), "{err}");
        let err = parse(
            &pg.replace("[sources.pg]", "[sources.pg.wal]")
                .replace("pg.wal]", "\"pg.wal\"]"),
        )
        .unwrap_err();
        assert!(err.contains(".wal"), "{err}");
        assert!(parse(&format!("{pg}method = \"physical\"\n")).is_err());
    }

    // Issue 16: binlog streaming of mysql sources, and its misuse.
    #[test]
    fn binlog_sources_parse_and_misuse_is_refused() {
        let m = "[sources.m]\nkind = \"mysql\"\nconnection = \"mysql://root@db\"\n";
        let config = parse(&format!("{m}binlog = true\nbinlog_interval = \"5s\"\n")).unwrap();
        assert!(config.sources["m"].is_binlog());
        assert_eq!(config.sources["m"].binlog_interval(), std::time::Duration::from_secs(5));
        let plain = parse(m).unwrap();
        assert!(!plain.sources["m"].is_binlog());
        assert_eq!(plain.sources["m"].binlog_interval(), std::time::Duration::from_secs(60));
        let err = parse(&format!("{m}binlog_interval = \"5s\"\n")).unwrap_err();
        assert!(err.contains("binlog_interval is for"), "{err}");
        let err = parse(&format!("{m}binlog = true\nbinlog_interval = \"0s\"\n")).unwrap_err();
        assert!(err.contains("at least 1s"), "{err}");
        let err =
            parse("[sources.pg]\nkind = \"postgres\"\nconnection = \"postgres://p@db\"\nbinlog = true\n").unwrap_err();
        assert!(err.contains("binlog is for kind mysql"), "{err}");
        let err = parse(&m.replace("[sources.m]", "[sources.\"m.binlog\"]")).unwrap_err();
        assert!(err.contains(".binlog"), "{err}");
    }

    #[test]
    fn sha256_is_off_by_default_and_only_for_whole_objects() {
        let m = "[sources.m]\nkind = \"mysql\"\nconnection = \"mysql://root@db\"\n";
        assert!(!parse(m).unwrap().sources["m"].sha256);
        assert!(parse(&format!("{m}sha256 = true\n")).unwrap().sources["m"].sha256);
        let files = "[sources.f]\nkind = \"files\"\npaths = [\"/etc\"]\nsha256 = true\n";
        let err = parse(files).unwrap_err();
        assert!(err.contains("sha256 is for dumps"), "{err}");
        let base = "[sources.pg]\nkind = \"postgres\"\nconnection = \"postgres://p@db\"\nmethod = \"basebackup\"\nsha256 = true\n";
        let err = parse(base).unwrap_err();
        assert!(err.contains("sha256 is for dumps"), "{err}");
    }

    #[test]
    fn parses_replication_targets_and_rejects_unknown_keys() {
        let text = "[repository]\nurl = \"file:///srv/repo\"\nreplica = \"dr\"\n\n\
                    [replication.dr]\nurl = \"s3://dr/nfrepo?endpoint=http://127.0.0.1:1\"\n\
                    credentials_file = \"/etc/nfrepo/dr.s3\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config.repository.unwrap().replica.as_deref(), Some("dr"));
        let dr = &config.replication["dr"];
        assert!(dr.url.starts_with("s3://dr/"));
        assert_eq!(dr.credentials_file.as_deref(), Some(Path::new("/etc/nfrepo/dr.s3")));
        let err = parse("[replication.dr]\nurl = \"file:///x\"\nsecret = \"hunter2\"\n").unwrap_err();
        assert!(err.contains("secret"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_credential_file_replaces_the_password() {
        let text = "[repository]\nurl = \"file:///srv/repo\"\ncredential_file = \"/etc/nfrepo/web-1.credential\"\n";
        let config = parse(text).unwrap();
        assert_eq!(
            config.repository.unwrap().credential_file.as_deref(),
            Some(Path::new("/etc/nfrepo/web-1.credential"))
        );
        let both = format!("{text}password_file = \"/etc/nfrepo/repo.pass\"\n");
        let err = parse(&both).unwrap_err();
        assert!(err.contains("credential_file and a password"), "{err}");
    }

    #[test]
    fn drill_queries_are_for_database_kinds() {
        let text = "[sources.db]\nkind = \"postgres\"\nconnection = \"postgres://p@h/app\"\n\n\
                    [sources.db.drill]\nqueries = [\"SELECT true\"]\n";
        let config = parse(text).unwrap();
        let drill = config.sources["db"].drill.as_ref().unwrap();
        assert_eq!(drill.queries, ["SELECT true"]);
        let redis = "[sources.c]\nkind = \"redis\"\nconnection = \"redis://h:6379\"\n\n\
                     [sources.c.drill]\nqueries = [\"SELECT 1\"]\n";
        assert!(
            parse(redis)
                .unwrap_err()
                .contains("drill.queries are for kinds mysql and postgres")
        );
        let typo = text.replace("queries", "querys");
        assert!(parse(&typo).is_err(), "an unknown drill key is an error");
    }

    #[test]
    fn errors_name_the_line_but_never_quote_it() {
        let text = "[sources.x]\nkind = \"mysql\"\npassword = \"hunter2\"\n";
        let err = parse(text).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let text = "[sources.x]\nkind = \"mysql\"\nconnection = \"mysql://u:hunter2@h\"\n";
        let err = parse(text).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn restores_use_the_credentials_of_the_source_naming_the_server() {
        let text = "[sources.main]\nkind = \"mysql\"\nconnection = \"mysql://backup@db1:3306\"\n\
                    password_env = \"PATH\"\n\n\
                    [sources.other]\nkind = \"mysql\"\nconnection = \"mysql://report@db1:3306\"\n\
                    password_env = \"NF_UNIT_OTHER_PW\"\n\n\
                    [sources.pg]\nkind = \"postgres\"\nconnection = \"postgres://backup@db1:3306\"\n\
                    password_file = \"/nonexistent/pw\"\n";
        let config = parse(text).unwrap();
        // PATH stands in for a password variable: always set, never changed by tests.
        let path = std::env::var("PATH").unwrap();
        let url = nfrepo_sources::Connection::parse("mysql://backup@db1:3306/app").unwrap();
        let got = server_credentials(Some(&config), url, "elsewhere").unwrap();
        assert_eq!(got.connection.password.unwrap().expose(), path);
        assert!(got.from.contains("source main"), "{}", got.from);
        // No user in the URL: two sources match with different users; the
        // snapshot's own source decides, and lends its user.
        let url = nfrepo_sources::Connection::parse("mysql://db1:3306/app").unwrap();
        let err = server_credentials(Some(&config), url.clone(), "elsewhere").unwrap_err();
        assert_eq!(err.detail, Some("AMBIGUOUS_CREDENTIALS"));
        let got = server_credentials(Some(&config), url, "main").unwrap();
        assert_eq!(got.connection.user.as_deref(), Some("backup"));
        // Another port is another server: no configured password.
        let url = nfrepo_sources::Connection::parse("mysql://backup@db1:3307/app").unwrap();
        let got = server_credentials(Some(&config), url, "main").unwrap();
        assert!(
            got.from.contains("MYSQL_PWD") || got.from.contains("no password"),
            "{}",
            got.from
        );
        // The postgres source's unreadable file is reported, not skipped.
        let url = nfrepo_sources::Connection::parse("postgres://backup@db1:3306/app").unwrap();
        let err = server_credentials(Some(&config), url, "x").unwrap_err();
        assert_eq!(err.detail, Some("NO_PASSWORD"));
    }

    #[test]
    fn rejects_bad_sources() {
        assert!(
            parse("[sources.x]\nkind = \"mysql\"\n")
                .unwrap_err()
                .contains("connection")
        );
        assert!(parse("[sources.x]\nkind = \"files\"\n").unwrap_err().contains("paths"));
        assert!(
            parse("[sources.x]\nkind = \"files\"\npaths = [\"/\"]\nschedule = \"* * *\"\n")
                .unwrap_err()
                .contains("five fields")
        );
        assert!(
            parse("[sources.x]\nkind = \"postgres\"\nconnection = \"mysql://h\"\n")
                .unwrap_err()
                .contains("postgres://")
        );
        assert!(parse("[sources.\"a b\"]\nkind = \"files\"\npaths = [\"/\"]\n").is_err());
        assert!(parse("[sources.x]\nkind = \"nosql\"\n").is_err());
        let files = "[sources.x]\nkind = \"files\"\npaths = [\"/\"]\n";
        assert!(
            parse(&format!("{files}profile = \"tiny\"\n"))
                .unwrap_err()
                .contains("unknown profile \"tiny\" (files, dump or rows)")
        );
        for profile in ["files", "dump", "rows"] {
            parse(&format!("{files}profile = \"{profile}\"\n")).unwrap();
        }
    }
}
