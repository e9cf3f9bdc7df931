//! The command line: clap definitions only. Each command's options are
//! turned into engine options by its module in `commands/`.
//!
//! Every argument whose value can be wrong is checked here by a clap value
//! parser, so a bad value is a usage error (exit 2, clap's message naming
//! the argument and what it accepts) before anything is opened or written.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// nfrepo: encrypted, deduplicated backups of databases, buckets and files.
#[derive(Debug, Parser)]
#[command(name = "nfrepo", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Repository URL: file:///path, a plain path, s3://bucket/prefix?endpoint=…&region=…
    #[arg(long, short = 'r', env = "NFREPO_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Read the password from this file (else NFREPO_PASSWORD, else a prompt on a TTY).
    #[arg(long, env = "NFREPO_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Back up with this put-only credential (`key add --put-only`) instead
    /// of a password: `snapshot` of paths or stdin only; every command that
    /// reads or removes data is refused (PERMISSION_DENIED).
    #[arg(long, env = "NFREPO_CREDENTIAL_FILE", value_name = "FILE", global = true)]
    pub credential: Option<PathBuf>,
    /// The configuration file (else /etc/nfrepo/nfrepo.toml, else ~/.config/nfrepo/nfrepo.toml).
    #[arg(long, env = "NFREPO_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// More log output on stderr (repeat for more).
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Local cache directory (default: $XDG_CACHE_HOME/nfrepo, else ~/.cache/nfrepo).
    #[arg(long, env = "NFREPO_CACHE_DIR", value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Use no local cache: load the whole index into memory on every run.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Cache this host's unlock of the repository for SPAN (at most 7d; also
    /// `[repository] unlock_cache`): the key slot's argon2id runs once per
    /// SPAN instead of on every run. The cache file (0600, in the cache
    /// directory) opens only with the password and only on this host; a
    /// password change, key removal or rotation ends it; `key lock` removes
    /// it. Opt-in: see format-spec/unlock.md for what it risks.
    #[arg(long, env = "NFREPO_UNLOCK_CACHE", value_name = "SPAN", value_parser = unlock_span, global = true)]
    pub unlock_cache: Option<nfrepo_engine::Span>,
    /// Read from the replica named by `[repository] replica` in nfrepo.toml instead of the repository.
    #[arg(long, global = true)]
    pub from_replica: bool,
    /// Allow S3 endpoints over plain http:// on hosts other than loopback (warns on every run).
    #[arg(long, global = true)]
    pub allow_insecure_http: bool,
    /// Refuse to open a repository sealed with any other cipher (also `[repository] require_cipher`).
    #[arg(long, value_enum, value_name = "CIPHER", global = true)]
    pub require_cipher: Option<CipherArg>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository.
    Init(InitArgs),
    /// Manage key slots (passwords).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Back up paths, standard input, or a command's output.
    Snapshot(SnapshotArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Per source: how far back and forward it can be recovered, and whether its WAL/binlog is whole.
    Status(StatusArgs),
    /// List the entries of a snapshot directory.
    Ls(LsArgs),
    /// Write one file of a snapshot to standard output.
    Cat(CatArgs),
    /// Search file paths across snapshots: each matching version once, with the snapshots holding it.
    Find(FindArgs),
    /// Mount the repository read-only (FUSE) in the backup layout; runs until unmounted or SIGINT/SIGTERM.
    Mount(MountArgs),
    /// Restore a snapshot, or part of it, into a directory.
    Restore(RestoreArgs),
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Print crontab lines that run the configured sources on their schedules.
    Cron(CronArgs),
    /// Put a file source's live files back as an earlier snapshot had them.
    Rollback(RollbackArgs),
    /// Record that a deployment snapshot passed its checks (for `rollback --to last-good`).
    MarkGood(MarkGoodArgs),
    /// Run a source's health check on the live files; on failure roll back to the last good snapshot.
    DeployCheck(DeployCheckArgs),
    /// Remove snapshots by retention policy (the data goes at the next gc).
    Forget(ForgetArgs),
    /// Reclaim the space of packs no snapshot uses (two-phase; safe while backups run).
    Gc(GcArgs),
    /// Shield a snapshot from forget.
    Protect(ProtectArgs),
    /// Remove a snapshot's protection.
    Unprotect(UnprotectArgs),
    /// Check the repository: structure, Merkle roots, and optionally the data itself.
    Check(CheckArgs),
    /// Prove one snapshot against its stored Merkle root and print the root.
    Verify(VerifyArgs),
    /// Prove that a source's latest backup restores into a working service, and time it.
    Drill(DrillArgs),
    /// Repair a damaged repository: rebuild the index, or rewrite damaged snapshots.
    Repair {
        #[command(subcommand)]
        command: RepairCommand,
    },
    /// Copy the repository to its replicas (without the key), verify them, or show their lag.
    Replicate(ReplicateArgs),
    /// Read and verify the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Serve the admin panel, JSON API and /metrics (--listen), or the store to backup hosts (--append-only).
    Serve(ServeArgs),
    /// Evaluate the alert rules against the repository and show (or send) what fires.
    Alerts(AlertsArgs),
    /// Prometheus metrics of the repository, on stdout or into a node_exporter textfile.
    Metrics(MetricsArgs),
    /// Hold the repository open: commit the WAL files `wal-push` hands over (PostgreSQL PITR) and stream the binlogs
    /// of `binlog = true` mysql sources (MySQL/MariaDB PITR).
    Agent(AgentArgs),
    /// PostgreSQL's archive_command: hand one WAL file to the agent; exits 0 once it is committed.
    WalPush(WalPushArgs),
    /// PostgreSQL's restore_command: write one archived WAL file to a path (from the agent, else the repository).
    WalFetch(WalFetchArgs),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The Unix socket to listen on (else `[agent] socket`, else $XDG_RUNTIME_DIR/nfrepo/agent.sock or
    /// /tmp/nfrepo-UID/agent.sock); its directory is made mode 0700 and the socket 0600.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Archive for this basebackup source, or stream the binlogs of this `binlog = true` mysql source (repeatable;
    /// default: every such source).
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The WAL file (`%p`).
    pub path: PathBuf,
    /// The basebackup source (default: the only `method = "basebackup"` source of the configuration).
    #[arg(long)]
    pub source: Option<String>,
    /// The agent's socket (else `[agent] socket`, else the default).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// The WAL file name PostgreSQL asks for (`%f`).
    pub name: String,
    /// Where to write it (`%p`); written whole or not at all.
    pub path: PathBuf,
    /// The basebackup source (default: the only `method = "basebackup"` source of the configuration).
    #[arg(long)]
    pub source: Option<String>,
    /// The agent's socket (else `[agent] socket`, else the default).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Read the repository directly, without asking the agent.
    #[arg(long)]
    pub no_agent: bool,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write the metrics to this file, replacing it atomically (for node_exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
    /// Send the notices due (new, repeated and resolved alerts) to the configured channels: what a cron entry runs.
    #[arg(long)]
    pub notify: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send a test notice to every configured channel.
    Test,
    /// Acknowledge a firing alert: no more repeats until it resolves and fires again.
    Ack(AlertsAckArgs),
}

#[derive(Debug, Args)]
pub struct AlertsAckArgs {
    /// The alert, as `RULE:SUBJECT` (the KEY column of `nfrepo alerts`).
    pub key: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(group = clap::ArgGroup::new("store_auth").args(["token_file", "no_auth"]))]
pub struct ServeArgs {
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    /// Serve the store to backup hosts, refusing every delete and overwrite (without it: the admin panel).
    #[arg(long, requires = "store_auth")]
    pub append_only: bool,
    /// The address to listen on, e.g. 0.0.0.0:8000 (port 0 picks a free port; the URL is printed).
    /// The panel's default is `listen` under `[serve]`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token clients must send (mode 0600; at least 16 characters).
    #[arg(long, value_name = "FILE", requires = "append_only")]
    pub token_file: Option<PathBuf>,
    /// Serve without a token (only on a loopback address).
    #[arg(long, conflicts_with = "token_file", requires = "append_only")]
    pub no_auth: bool,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Read a password on stdin and print its argon2 PHC hash, for `password_hash` under `[serve]`.
    HashPassword,
    /// Make a TOTP secret for a panel user: written to FILE (mode 0600), its otpauth:// URL printed for the app.
    TotpSecret(TotpSecretArgs),
}

#[derive(Debug, Args)]
pub struct TotpSecretArgs {
    /// The user the secret is for (shown in the authenticator app).
    #[arg(long)]
    pub name: String,
    /// The file to create (it must not exist); `totp_secret_file` under `[serve]`.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CipherArg {
    Xchacha20poly1305,
    Aes256gcm,
}

impl CipherArg {
    pub const fn cipher(self) -> nfrepo_format::Cipher {
        match self {
            Self::Xchacha20poly1305 => nfrepo_format::Cipher::XChaCha20Poly1305,
            Self::Aes256gcm => nfrepo_format::Cipher::Aes256Gcm,
        }
    }
}

#[derive(Debug, Args)]
pub struct KdfArgs {
    /// argon2id memory in KiB for the new key slot (8 to 4194304).
    #[arg(long, default_value_t = 65536, value_parser = ranged(nfrepo_engine::KDF_MEMORY_KIB))]
    pub kdf_memory_kib: u32,
    /// argon2id passes for the new key slot (1 to 64).
    #[arg(long, default_value_t = 3, value_parser = ranged(nfrepo_engine::KDF_ITERATIONS))]
    pub kdf_iterations: u32,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The AEAD every object is sealed with (else `[repository] cipher`, else the
    /// required cipher, else aes256gcm on a CPU with hardware AES, else
    /// xchacha20poly1305).
    #[arg(long, value_enum)]
    pub cipher: Option<CipherArg>,
    /// Target pack size in MiB (4 to 128).
    #[arg(long, default_value_t = 16, value_parser = ranged(nfrepo_engine::PACK_SIZE_MIB))]
    pub pack_size_mib: u32,
    /// zstd level every blob is compressed at, 1 to 19 (default 1: on 8–16 KiB
    /// chunks of database dumps it compresses as well as 3 at about twice the
    /// speed; format-spec/blob.md "Level"). Fixed for the repository's life.
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: Option<i32>,
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// Give every write-once object an S3 Object Lock retention of DAYS days,
    /// renewed by gc while the object is live (the bucket must have object lock
    /// enabled; format-spec/object-lock.md).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub object_lock: Option<u32>,
    /// Retention of audit entries and the config, in days (default: the larger
    /// of --object-lock and 365).
    #[arg(long, value_name = "DAYS", requires = "object_lock", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub object_lock_audit: Option<u32>,
    /// Object lock mode: compliance (the default; nobody can shorten a
    /// retention) or governance (principals with s3:BypassGovernanceRetention can).
    #[arg(long, value_enum, requires = "object_lock")]
    pub object_lock_mode: Option<LockModeArg>,
}

/// `--object-lock-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LockModeArg {
    /// S3 compliance mode.
    Compliance,
    /// S3 governance mode.
    Governance,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List key slots.
    List,
    /// Add a key slot for a new password (NFREPO_NEW_PASSWORD, --new-password-file, or a prompt),
    /// or with --put-only a put-only credential file for a backup host.
    Add(KeyAddArgs),
    /// Remove a key slot by id (or unique prefix).
    Remove {
        /// The key id.
        id: String,
    },
    /// Change the password: add a slot for the new one and remove the current one.
    Passwd(NewPasswordArgs),
    /// Remove this host's cached unlock of the repository (`--unlock-cache`):
    /// the next run derives the key from the password again. Needs no password.
    Lock,
    /// Rotate the keys after a compromise: draw a new key epoch that seals
    /// everything written from now on, rewrite this password's slot and
    /// those of --keep-password-file to it, and revoke every other slot.
    /// Rerun it to finish a rotation that was interrupted.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// A file holding the password of another key slot to keep (its holder
    /// keeps that password); repeat for each. Every slot that neither this
    /// nor the repository password opens is revoked.
    #[arg(long = "keep-password-file", value_name = "FILE")]
    pub keep_password_files: Vec<PathBuf>,
    /// Then seal everything written before again under the new key epoch, in
    /// batches (resumable: `nfrepo gc --reseal` continues it), and drop the old
    /// epochs once nothing needs them: old passwords and keys open nothing then.
    #[arg(long)]
    pub reseal: bool,
    /// With --reseal: how long the old packs wait in a gc plan before they are
    /// deleted (running backups keep theirs until they end).
    #[arg(long, value_name = "SPAN", default_value = "24h", value_parser = span, requires = "reseal")]
    pub grace: String,
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    #[command(flatten)]
    pub password: NewPasswordArgs,
    /// Issue a put-only credential instead of a password slot: its holder
    /// can add backups and read or remove nothing (format-spec/put-only.md).
    #[arg(long, requires_all = ["label", "output"])]
    pub put_only: bool,
    /// Who the put-only credential is for (shown by `key list`).
    #[arg(long, requires = "put_only")]
    pub label: Option<String>,
    /// Where to write the put-only credential file (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE", requires = "put_only")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// Read the new password from this file.
    #[arg(long, env = "NFREPO_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProfileArg {
    Files,
    Dump,
    Rows,
}

impl ProfileArg {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Dump => "dump",
            Self::Rows => "rows",
        }
    }
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("stream_input").args(["stdin", "command"]))]
pub struct SnapshotArgs {
    /// Paths to back up (none with --source NAME: run the configured source NAME).
    #[arg(required_unless_present_any = ["stdin", "command", "source", "all"], conflicts_with_all = ["stdin", "command"])]
    pub paths: Vec<PathBuf>,
    /// Run every source of the configuration once; failures don't stop the others.
    #[arg(long, conflicts_with_all = ["stdin", "command", "paths", "source", "name"])]
    pub all: bool,
    /// Back up standard input as one file named --name. nfrepo cannot see
    /// whether the program writing into the pipe failed (`a | nfrepo …`
    /// commits a truncated dump as good, even with `set -o pipefail`): prefer
    /// `--command -- CMD`, or `--command -- bash -c 'set -o pipefail; a | b'`.
    #[arg(long, requires = "name")]
    pub stdin: bool,
    /// Back up the standard output of the command after `--`; fails (and commits nothing) if it fails.
    #[arg(long, conflicts_with = "stdin")]
    pub command: bool,
    /// File name of the stream inside the snapshot.
    #[arg(long)]
    pub name: Option<String>,
    /// Source name snapshots are grouped by (default: the absolute path, several joined with
    /// `+`; for --stdin the --name; for --command the program name). With --stdin or --command,
    /// naming a configured mysql or postgres source records that kind (for `restore --into`).
    #[arg(long)]
    pub source: Option<String>,
    /// Tag as key=value (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag)]
    pub tags: Vec<String>,
    /// Chunking profile: files (1 MiB), dump (16 KiB) or rows (8 KiB) (default: files for paths, dump
    /// for streams).
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// Read every file even if the parent snapshot says it is unchanged.
    #[arg(long)]
    pub no_parent: bool,
    /// Leave out entries matching this glob (repeatable): without `/` it matches a name at any depth
    /// (`*.log`, `node_modules`), with `/` the absolute path.
    #[arg(long, value_name = "GLOB", requires = "paths")]
    pub exclude: Vec<String>,
    /// Read --exclude globs from FILE, one per line (blank lines and lines starting with # are ignored).
    #[arg(long, value_name = "FILE", requires = "paths")]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out the contents of directories marked with a CACHEDIR.TAG (the tag itself is kept).
    #[arg(long, requires = "paths")]
    pub exclude_caches: bool,
    /// Also record the SHA-256 of the stream (the `stream.sha256` fact), to compare it with
    /// `sha256sum`; about 15 % more CPU. The BLAKE3 (`stream.blake3`) is always recorded.
    /// Configured sources set `sha256 = true` instead.
    #[arg(long, requires = "stream_input")]
    pub sha256: bool,
    /// The command and its arguments (with --command).
    #[arg(last = true)]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotFilter {
    /// Only snapshots of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only snapshots with this tag (key=value; repeatable, all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag)]
    pub tags: Vec<String>,
    /// Only snapshots at or after this time (RFC 3339, YYYY-MM-DD, or an age like 36h or 7d).
    #[arg(long, value_parser = time)]
    pub since: Option<String>,
    /// Only snapshots at or before this time (same forms as --since).
    #[arg(long, value_parser = time)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these sources (default: every source in the repository and the configuration).
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// SNAPSHOT or SNAPSHOT:PATH; SNAPSHOT is an id prefix, `latest`, or `SOURCE@latest`. With --layout, a path
    /// as `nfrepo mount` shows it (default `/`).
    #[arg(required_unless_present = "layout")]
    pub target: Option<String>,
    /// List the layout `nfrepo mount` shows (`/<env>/<type>/<source>/YYYY/MM/DD/HHMMSS`, `/snapshots/ID`,
    /// `/sources/SOURCE/TIME`, `latest`), for machines without FUSE; a path into a snapshot lists it as `ls` does.
    #[arg(long)]
    pub layout: bool,
    /// List subdirectories too.
    #[arg(long, short = 'R')]
    pub recursive: bool,
    /// Long format: mode, owner, size, time.
    #[arg(long, short = 'l')]
    pub long: bool,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// A glob matched against the entry's name, or against its whole path (from the snapshot's root) when it holds
    /// a `/` (`**` crosses directories); with --regex, a regular expression searched for in the whole path.
    pub pattern: String,
    /// PATTERN is a regular expression.
    #[arg(long)]
    pub regex: bool,
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Only this snapshot (an id prefix, `latest` or `SOURCE@latest`; repeatable).
    #[arg(long = "snapshot", value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Only files of this size: N, +N (larger), -N (smaller); suffixes k, M, G (powers of 1024).
    #[arg(long, allow_hyphen_values = true, value_parser = size_filter)]
    pub size: Option<String>,
    /// Only entries modified after this time (same forms as --since).
    #[arg(long, value_parser = time)]
    pub newer: Option<String>,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// An empty directory to mount at.
    pub mountpoint: PathBuf,
    /// Let other users of the machine see the mount (recorded permissions still apply).
    #[arg(long)]
    pub allow_other: bool,
    /// MiB of decoded chunks cached for random reads and re-reads.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_size: u64,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// SNAPSHOT:PATH of a file.
    pub target: String,
    /// Write zeros in place of damaged chunks, list them on stderr, and exit 3 (partial).
    #[arg(long)]
    pub skip_damaged: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:PATH, or a path as `nfrepo mount` shows it (`/<env>/<type>/<source>/YYYY/MM/DD/HHMMSS/PATH`,
    /// `/snapshots/ID/PATH`, `/sources/SOURCE/latest/PATH`; a leading mount point is skipped). With --into s3://, PATH is a key prefix as in S3 listings (`photos/2026-` takes
    /// `photos/2026-01/…` and `photos/2026-02/…`; end it with `/` for one "directory"); objects keep their whole keys.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub spec: String,
    /// Directory to restore into (created if missing).
    #[arg(long, short = 't', required_unless_present_any = ["into", "via"], conflicts_with_all = ["into", "via"])]
    pub target: Option<PathBuf>,
    /// Restore through the admin panel of `nfrepo serve --listen` at URL (https://host:port; http only on
    /// loopback): the server reads the repository and writes into a new directory of one of its configured
    /// restore targets (--server-target), verified. Asks for the panel user's password (NFREPO_SERVE_PASSWORD,
    /// else a prompt) and a fresh TOTP code (a prompt, or the first line of stdin); the server's audit log
    /// names who approved it.
    #[arg(long, value_name = "URL", requires = "server_target", conflicts_with_all = [
        "into", "include", "exclude", "keep_setid", "verify", "overwrite", "skip_damaged",
    ])]
    pub via: Option<String>,
    /// With --via: the name of a restore target configured on the server (`[serve.restore_targets]`).
    #[arg(long, requires = "via", value_name = "NAME")]
    pub server_target: Option<String>,
    /// With --via: the panel user (default: $USER).
    #[arg(long, requires = "via", value_name = "NAME")]
    pub user: Option<String>,
    /// With --via: a PEM file of the only certificate authorities to trust (else the system's).
    #[arg(long, requires = "via", value_name = "FILE")]
    pub via_ca_file: Option<PathBuf>,
    /// Load a database dump into a server: mysql://user@host:port/db or postgres://user@host:port/db.
    /// The dump is loaded into a new staging database, verified, then switched in; the live database
    /// is never written before that. The password is that of the configured source naming the same
    /// server (password_env / password_file), else MYSQL_PWD / PGPASSWORD.
    /// Or a bucket snapshot into s3://bucket/prefix?endpoint=… (credentials from NFREPO_S3_*).
    /// Or a PostgreSQL base backup into postgres-data:/path (an empty data directory), with --at for point-in-time
    /// recovery.
    #[arg(long, value_name = "URL")]
    pub into: Option<String>,
    /// With --into postgres-data:DIR: recover to this moment ("2026-12-01 12:34:56+00", RFC 3339, or `latest`: all
    /// archived WAL). The newest base backup of SNAPSHOT's source finished before it is restored, whatever SNAPSHOT
    /// names, and PostgreSQL started on DIR replays WAL (fetched with `nfrepo wal-fetch`) up to it and opens.
    /// With --into mysql://: the newest dump of SNAPSHOT's source finished before TIME is loaded into the staging
    /// database, the archived binlogs from its position are replayed up to TIME (whole seconds: events stamped before
    /// that second), then it is switched in.
    #[arg(long, requires = "into", value_name = "TIME")]
    pub at: Option<String>,
    /// With --into: the database of a multi-database snapshot to restore.
    #[arg(long, requires = "into")]
    pub database: Option<String>,
    /// With --into: replace a target database that holds data, after the staged copy is verified; the
    /// old one is kept as DB__nfrepo_before_TIME (otherwise: RESTORE_CONFLICT).
    #[arg(long, requires = "into")]
    pub force: bool,
    /// With --into: drop the kept-aside DB__nfrepo_before_TIME once the switch succeeded.
    #[arg(long, requires = "into")]
    pub drop_old: bool,
    /// With --into postgres://: terminate the sessions connected to the database being replaced
    /// (otherwise they block the switch: RESTORE_CONFLICT/SESSIONS_BLOCKING).
    #[arg(long, requires = "into")]
    pub terminate_sessions: bool,
    /// With --into mysql://: connections that load the dump's rows in parallel (default: one per core, at most
    /// 4; 1 loads the dump as one stream). Statements other than a table's rows run in dump order on one of them.
    #[arg(long, requires = "into", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub load_jobs: Option<u16>,
    /// Restore only paths matching this glob (repeatable). Globs match the path relative to the target
    /// (`restore SNAP:src/c` restores `c/...`; into s3://, an object's whole key); a glob without `/` matches a
    /// name at any depth; `*` does not cross `/`, `**` does. A glob that matches nothing fails the restore
    /// (RESTORE_FAILED/FILTER_MATCHED_NOTHING): after restoring the rest, or into s3:// before writing anything.
    #[arg(long)]
    pub include: Vec<String>,
    /// Do not restore paths matching this glob (repeatable; same rules as --include).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Keep setuid/setgid bits when not running as root (root always keeps them and restores owners).
    #[arg(long)]
    pub keep_setid: bool,
    /// Re-read every restored file (or object) and check it against the stored BLAKE3.
    #[arg(long)]
    pub verify: bool,
    /// Replace existing files (or, into s3://, objects) whose content differs (otherwise: RESTORE_CONFLICT; into
    /// s3:// every object is checked, by BLAKE3 of its bytes, before the first write).
    #[arg(long)]
    pub overwrite: bool,
    /// With --into s3://: check the target and list what would be written and replaced; write nothing (exits
    /// RESTORE_CONFLICT if objects differ and --overwrite is not given).
    #[arg(long, requires = "into")]
    pub dry_run: bool,
    /// Skip files whose stored data is damaged, list them, and exit 3 (partial) instead of stopping.
    #[arg(long)]
    pub skip_damaged: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The source to roll back.
    pub source: String,
    /// The snapshot to go back to, or `last-good` for the newest one marked
    /// good (default: the one before the latest).
    #[arg(long)]
    pub to: Option<String>,
    /// Roll back even if the live files changed since the latest snapshot.
    #[arg(long)]
    pub force: bool,
    /// Do not run the source's health_check afterwards.
    #[arg(long)]
    pub no_health_check: bool,
}

#[derive(Debug, Args)]
pub struct MarkGoodArgs {
    /// The snapshot: an id prefix, `latest`, or `SOURCE@latest`.
    pub snapshot: String,
    /// What passed (recorded in the marker).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Remove the snapshot's good marker instead.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The configured source to drill.
    #[arg(required_unless_present_any = ["all", "history"], conflicts_with = "all")]
    pub source: Option<String>,
    /// Drill every configured source, one after the other.
    #[arg(long)]
    pub all: bool,
    /// The snapshot to restore (an id prefix); default: the source's latest.
    #[arg(long, conflicts_with = "all")]
    pub snapshot: Option<String>,
    /// List past drills (of SOURCE, or all) instead of running one.
    #[arg(long, conflicts_with_all = ["all", "snapshot"])]
    pub history: bool,
    /// MySQL/MariaDB sources: connections that load the dump's rows (as `restore --load-jobs`; default: one per
    /// core, at most 4).
    #[arg(long, value_name = "N", conflicts_with = "history", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub load_jobs: Option<u16>,
}

#[derive(Debug, Args)]
pub struct DeployCheckArgs {
    /// The source (it must have a health_check in nfrepo.toml).
    pub source: String,
    /// When the check passes and the live files equal the source's latest
    /// snapshot, mark that snapshot good.
    #[arg(long)]
    pub mark_good: bool,
}

#[derive(Debug, Args)]
pub struct CronArgs {
    /// The nfrepo binary the lines run (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot.
    pub old: String,
    /// The newer snapshot.
    pub new: String,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// A built-in retention class: hot, warm, cold, db-full, db-incremental, files, config,
    /// audit-logs, security-logs, analytics (combined with any --keep-* given).
    #[arg(long)]
    pub class: Option<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this span of the newest one (e.g. 24h, 7d).
    #[arg(long, value_name = "SPAN", value_parser = span)]
    pub keep_within: Option<String>,
    /// Keep the newest snapshot of each hour within this span of the newest one.
    #[arg(long, value_name = "SPAN", value_parser = span)]
    pub keep_within_hourly: Option<String>,
    /// Keep the newest snapshot of each day within this span.
    #[arg(long, value_name = "SPAN", value_parser = span)]
    pub keep_within_daily: Option<String>,
    /// Keep the newest snapshot of each ISO week within this span.
    #[arg(long, value_name = "SPAN", value_parser = span)]
    pub keep_within_weekly: Option<String>,
    /// Keep the newest snapshot of each month within this span.
    #[arg(long, value_name = "SPAN", value_parser = span)]
    pub keep_within_monthly: Option<String>,
    /// Keep the newest snapshot of each year within this span.
    #[arg(long, value_name = "SPAN", value_parser = span)]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with this tag: key=value, or key for any value (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Only snapshots of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Group snapshots by source only, not by source and host.
    #[arg(long)]
    pub group_by_source: bool,
    /// Show what would be kept and removed, and why, without removing
    /// anything (and take no lease).
    #[arg(long, conflicts_with = "break_lease")]
    pub dry_run: bool,
    /// Replace the maintenance lease even if its holder's term has not run
    /// out: only when that holder (named by the GC_LEASE_HELD error) is known
    /// to be dead. The output and the audit log name whose lease was broken.
    #[arg(long)]
    pub break_lease: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// How long a plan waits before its packs are deleted (also the minimum age
    /// of a pack no index lists before it is planned).
    #[arg(long, value_name = "SPAN", default_value = "24h", value_parser = span)]
    pub grace: String,
    /// Repack a partly used pack when more than this share of it is unused
    /// (a percentage such as 10%; 100% never repacks). Repacking reads the live
    /// blobs of those packs, the only data GC ever reads.
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = percent)]
    pub max_unused: String,
    /// Report what would be planned and deleted, and take no lease.
    #[arg(long, conflicts_with = "break_lease")]
    pub dry_run: bool,
    /// Replace the maintenance lease even if its holder's term has not run
    /// out: only when that holder (named by the GC_LEASE_HELD error) is known
    /// to be dead. The output and the audit log name whose lease was broken.
    #[arg(long)]
    pub break_lease: bool,
    /// Also continue a reseal (`key rotate --reseal`): seal what older key
    /// epochs sealed again under the current one, and drop those epochs once
    /// nothing needs them.
    #[arg(long)]
    pub reseal: bool,
}

#[derive(Debug, Args)]
pub struct ProtectArgs {
    /// The snapshot: an id prefix, `latest`, or `SOURCE@latest`.
    pub snapshot: String,
    /// Why (recorded in the marker).
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(Debug, Args)]
pub struct UnprotectArgs {
    /// The snapshot: an id prefix, `latest`, or `SOURCE@latest`.
    pub snapshot: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also prove byte counts of chunks, content lists and files against each other.
    #[arg(long)]
    pub merkle: bool,
    /// Download every pack and verify every blob in it.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Verify part of the packs: n/t (part n of t), x% or a size like 500M (least recently verified first).
    #[arg(long, value_name = "n/t|x%|SIZE", value_parser = read_data_subset)]
    pub read_data_subset: Option<String>,
    /// Skip packs verified cleanly more recently than this (an age like 30d, or a time).
    #[arg(long, value_name = "AGE", value_parser = time)]
    pub max_age: Option<String>,
    /// Only these snapshots (id prefix, latest, SOURCE@latest; repeatable).
    #[arg(long = "snapshot", value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The snapshot: id prefix, latest, or SOURCE@latest.
    pub snapshot: String,
    /// Also read every file's content and compare it with its size and BLAKE3.
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own trailers (writes the new index, then removes the old).
    Index {
        /// Report what would be done; write nothing.
        #[arg(long, conflicts_with = "break_lease")]
        dry_run: bool,
        /// Replace the maintenance lease even if its holder's term has not run
        /// out (only when that holder is known to be dead).
        #[arg(long)]
        break_lease: bool,
    },
    /// Write new snapshots without the files whose data is damaged or lost (originals are kept).
    Snapshots {
        /// Find damage by reading every pack (otherwise: missing packs, unreadable trees, unindexed blobs).
        #[arg(long)]
        read_data: bool,
        /// Report what would be done; write nothing.
        #[arg(long, conflicts_with = "break_lease")]
        dry_run: bool,
        /// Replace the maintenance lease even if its holder's term has not run
        /// out (only when that holder is known to be dead).
        #[arg(long)]
        break_lease: bool,
    },
}

/// A `u32` argument limited to `range`.
fn ranged(range: std::ops::RangeInclusive<u32>) -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(i64::from(*range.start())..=i64::from(*range.end()))
}

/// `--tag key=value`: a non-empty key, an `=`, any value.
fn tag(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(text.to_owned()),
        _ => Err("a tag is key=value (the key not empty)".to_owned()),
    }
}

/// A time or age (see [`crate::commands::snapshots::parse_time`]).
fn time(text: &str) -> Result<String, String> {
    crate::commands::snapshots::parse_time(text, chrono::Utc::now())
        .map(|_| text.to_owned())
        .map_err(|f| f.message)
}

/// `--size` of `find` (see [`crate::commands::find::SizeFilter`]).
fn size_filter(text: &str) -> Result<String, String> {
    crate::commands::find::SizeFilter::parse(text).map(|_| text.to_owned())
}

/// A span such as `24h` or `7d`.
fn span(text: &str) -> Result<String, String> {
    nfrepo_engine::Span::parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

/// How long an unlock stays cached: one second to seven days.
pub fn unlock_span(text: &str) -> Result<nfrepo_engine::Span, String> {
    let span = nfrepo_engine::Span::parse(text).map_err(|e| e.to_string())?;
    let max = nfrepo_engine::MAX_UNLOCK_CACHE_TTL.as_secs();
    if span.as_secs() == 0 || span.as_secs() > max {
        return Err(format!(
            "an unlock cache lives between 1s and {}d, not {text:?}",
            max / 86_400
        ));
    }
    Ok(span)
}

/// A percentage from 0% to 100%.
fn percent(text: &str) -> Result<String, String> {
    crate::commands::gc::percent(text)
        .map(|_| text.to_owned())
        .map_err(|f| f.message)
}

/// `n/t`, `x%` or a size.
fn read_data_subset(text: &str) -> Result<String, String> {
    nfrepo_engine::ReadDataSubset::parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReplicateArgs {
    #[command(subcommand)]
    pub command: Option<ReplicateCommand>,
    /// The replica: a URL, or the NAME of a [replication.NAME] (default: every configured one).
    #[arg(long, value_name = "URL|NAME")]
    pub to: Option<String>,
    /// Concurrent transfers.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Delete on the replica what the source lost only after this long (e.g. 7d, 12h, 30m, 0s).
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub delete_after: String,
    /// Compare the listings and re-hash every object on the replica; copy nothing.
    #[arg(long, conflicts_with = "verify_subset")]
    pub verify: bool,
    /// Like --verify on x% of the replica, continuing where the last run stopped.
    #[arg(long, value_name = "x%")]
    pub verify_subset: Option<String>,
    /// Keep running: a pass every --interval.
    #[arg(long, conflicts_with_all = ["verify", "verify_subset"])]
    pub watch: bool,
    /// The poll interval of --watch.
    #[arg(long, value_name = "DURATION", default_value = "10s", requires = "watch")]
    pub interval: String,
}

#[derive(Debug, Subcommand)]
pub enum ReplicateCommand {
    /// Show each replica's lag, backlog and last pass (from the replica's state when the source is unreachable).
    Status(ReplicateStatusArgs),
}

#[derive(Debug, Args)]
pub struct ReplicateStatusArgs {
    /// The replica: a URL, or the NAME of a [replication.NAME] (default: every configured one).
    #[arg(long, value_name = "URL|NAME")]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit log entries, oldest first.
    Log(AuditLogArgs),
    /// Check every chain; name the first missing, altered, reordered or forged entry.
    Verify,
}

#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// Only entries from this time on (RFC 3339, YYYY-MM-DD, or an age like 36h or 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only entries before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only entries of commands that named this backup source (`--source`), or of this host.
    #[arg(long)]
    pub source: Option<String>,
    /// Only entries of this operation (`snapshot`, `gc`, `serve restore`…).
    #[arg(long)]
    pub operation: Option<String>,
    /// Only entries of failed commands.
    #[arg(long)]
    pub failed: bool,
}
