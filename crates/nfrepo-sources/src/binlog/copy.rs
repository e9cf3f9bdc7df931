//! The agent's binlog copier: one thread per source supervising
//! `mariadb-binlog --read-from-remote-server --raw --stop-never` and
//! committing the files it writes.
//!
//! **Start.** The copy resumes where the archive ends
//! ([`super::resume_point`]): after the newest archived file if the server
//! finished it, else at that file, copied again from its start (its
//! archived version must be the prefix of the new copy, which is checked
//! before anything longer is committed); with nothing archived, at the file
//! the newest dump recorded. The file must still be listed by `SHOW BINARY
//! LOGS`; if it is not, that is a gap (`BACKUP_FAILED/BINLOG_GAP`): logged as
//! an error, recorded once as a snapshot of the stream with `binlog.gap`,
//! and retried every interval (a new dump makes the copy go on from that
//! dump's file).
//!
//! **The child.** It writes into a fresh directory `run-<n>` under the
//! source's spool directory (mode 0700; owned by the agent's user), with
//! its password in a 0600 option file ([`crate::ChildAuth`]), never in its
//! argv or environment. Its pid is kept in `child.pid`: an agent killed
//! with `-9` leaves its child running, and the next agent kills it (and
//! the server drops a dump connection when a new one comes with the same
//! replica id, `--stop-never-slave-server-id`) before starting its own in a
//! new directory, so two copies never write one file.
//!
//! **Commits**, every `interval`: the files of the run directory are
//! walked to their last complete event (`events.rs`); each one longer than
//! its archived version is committed, whole, with the others in one
//! snapshot through the one backup driver. Whole as a file, not as a read:
//! a file this run already committed continues from its last commit's last
//! chunk ([`nfrepo_engine::StreamResume`], kept in [`RunState`]), so each
//! commit reads only what the child appended since; the first commit of a
//! file in a run reads it all and checks its prefix. A new file must follow the
//! newest archived one by number. Files complete and archived are then
//! removed from the spool. When the child exits (server restart, network
//! failure), what it wrote is committed and it is started again with
//! backoff (1 s doubling to the interval, at least 60 s).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nfrepo_engine::{BackupWriter, CommitDetails, Repository, SnapshotEntry, StreamResume};
use nfrepo_format::Tree;
use tokio::runtime::Handle;

use super::events::{Scan, scan};
use super::{
    BINLOG_GAP_FACT, BINLOG_KIND, BINLOG_NEWEST_EVENT_FACT, BINLOG_SOURCE_FACT, BinlogCatalog, BinlogName, DUMP_KIND,
    Resume, binlog_stream, dump_position, file_fact, resume_point,
};
use crate::source::{Source, SourceOutcome};
use crate::stream::stream_node;
use crate::{Connection, Error, Result, RunOptions};

/// How the agent copies one source's binlogs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BinlogOptions {
    /// The dump source (`kind = "mysql"`) whose binlogs these are.
    pub source: String,
    /// The server, with its password.
    pub connection: Connection,
    /// Where `mariadb-binlog` (or `mysqlbinlog`) and `mysql` are, if not on `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// The longest time between two commits of a growing file.
    pub interval: Duration,
    /// The source's private spool directory (made mode 0700).
    pub spool: PathBuf,
    /// The replica id the copy connects with (unique per source and server).
    pub server_id: u32,
}

impl BinlogOptions {
    /// Options for `source`, committing every 60 s, spooling in `spool`,
    /// with a replica id derived from the source name.
    #[must_use]
    pub fn new(source: String, connection: Connection, spool: PathBuf) -> Self {
        let hash = blake3::hash(source.as_bytes());
        let [a, b, c, d, ..] = *hash.as_bytes();
        // High ids, far from the small ones real replicas are usually given.
        let server_id = 0x7000_0000 | (u32::from_le_bytes([a, b, c, d]) & 0x0fff_ffff);
        Self {
            source,
            connection,
            bin_dir: None,
            interval: Duration::from_secs(60),
            spool,
            server_id,
        }
    }
}

/// Copies `options.source`'s binlogs until the process ends. Blocks.
pub(crate) fn supervise(repo: &Repository, handle: &Handle, options: &BinlogOptions) {
    let mut backoff = Duration::from_secs(1);
    let most = options.interval.max(Duration::from_secs(60));
    let mut run = 0u64;
    loop {
        run += 1;
        let started = Instant::now();
        let outcome = copy_once(repo, handle, options, run);
        let wait = match outcome {
            Err(e @ Error::BinlogConflict(_)) => {
                tracing::error!(source = %options.source, code = "BACKUP_FAILED/BINLOG_CONFLICT", "{e}");
                options.interval
            }
            Err(Error::BinlogGap(message)) => {
                tracing::error!(
                    source = %options.source,
                    code = "BACKUP_FAILED/BINLOG_GAP",
                    "BINLOG GAP: {message}"
                );
                options.interval
            }
            Err(e) => {
                tracing::warn!(source = %options.source, error = %e, "binlog copy stopped; starting it again");
                if started.elapsed() > most {
                    backoff = Duration::from_secs(1);
                }
                let wait = backoff;
                backoff = (backoff * 2).min(most);
                wait
            }
            Ok(()) => options.interval,
        };
        std::thread::sleep(wait);
    }
}

/// The files on the server, oldest first.
fn server_binlogs(options: &BinlogOptions) -> Result<Vec<BinlogName>> {
    let rows = crate::mysql::query(&options.connection, options.bin_dir.as_deref(), "SHOW BINARY LOGS")?;
    Ok(rows
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter_map(BinlogName::parse)
        .collect())
}

/// The newest dump of the source that recorded a binlog file.
async fn newest_dump_file(repo: &Repository, source: &str) -> Result<Option<BinlogName>> {
    Ok(repo
        .readable_snapshots()
        .await?
        .iter()
        .filter(|e| e.snapshot.source == source && e.snapshot.source_kind == DUMP_KIND)
        .filter_map(|e| dump_position(e).map(|(file, _)| (e.snapshot.time_ns, file)))
        .max_by_key(|(time, _)| *time)
        .map(|(_, file)| file))
}

/// One run of the child: from the resume point until it exits.
fn copy_once(repo: &Repository, handle: &Handle, options: &BinlogOptions, run: u64) -> Result<()> {
    let mut catalog = handle.block_on(BinlogCatalog::load(repo, &options.source))?;
    let dump = handle.block_on(newest_dump_file(repo, &options.source))?;
    let listed = server_binlogs(options)?;
    let resumed = resume_point(&catalog, dump.as_ref(), &listed);
    if let Err(Error::BinlogGap(message)) = &resumed {
        let missing = match catalog.newest() {
            Some((name, a)) if a.complete => name.next().to_string(),
            Some((name, _)) => name.to_string(),
            None => dump.as_ref().map(ToString::to_string).unwrap_or_default(),
        };
        record_gap(repo, handle, options, &catalog, &missing, message)?;
    }
    let (start, gap) = match resumed? {
        Resume::Wait => {
            tracing::info!(source = %options.source, "no dump of this source records a binlog position yet: take a snapshot");
            return Ok(());
        }
        Resume::From { file, gap } => (file, gap),
    };
    if let Some(missing) = gap {
        let message =
            format!("{missing} was purged before it was copied; the copy goes on from {start}, the newest dump's file");
        tracing::error!(source = %options.source, code = "BACKUP_FAILED/BINLOG_GAP", "BINLOG GAP: {message}");
        record_gap(repo, handle, options, &catalog, &missing, &message)?;
    }
    let dir = prepare_spool(&options.spool, run)?;
    let mut child = start_child(options, &dir, &start)?;
    tracing::info!(source = %options.source, from = %start, pid = child.id(), "binlog copy started");
    let mut state = RunState::default();
    let mut next = start.clone();
    loop {
        let exited = wait_interval(&mut child, options.interval)?;
        commit_grown(repo, handle, options, &dir, &mut catalog, &mut state, &mut next)?;
        if let Some(status) = exited {
            let log = std::fs::read(dir.join("mariadb-binlog.log")).unwrap_or_default();
            return Err(Error::AgentFailed(format!(
                "mariadb-binlog exited ({status}): {}",
                crate::dump::last_line(&log)
            )));
        }
    }
}

/// Sleeps up to `interval`, returning early when the child exits.
fn wait_interval(child: &mut Child, interval: Duration) -> Result<Option<std::process::ExitStatus>> {
    let until = Instant::now() + interval;
    loop {
        let status = child
            .try_wait()
            .map_err(|e| Error::AgentFailed(format!("waiting for mariadb-binlog: {e}")))?;
        if status.is_some() || Instant::now() >= until {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(200).min(until.saturating_duration_since(Instant::now())));
    }
}

/// Makes the spool (0700, this user's), kills a child a dead agent left,
/// removes old run directories, and makes `run-<n>`.
fn prepare_spool(spool: &Path, run: u64) -> Result<PathBuf> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(spool)
        .map_err(io(spool))?;
    let meta = std::fs::symlink_metadata(spool).map_err(io(spool))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "the binlog spool {} must be a directory of this user with mode 0700",
            spool.display()
        )));
    }
    let pid_file = spool.join("child.pid");
    if let Ok(text) = std::fs::read_to_string(&pid_file)
        && let Ok(pid) = text.trim().parse::<i32>()
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*spool.to_string_lossy());
        if ours {
            tracing::info!(pid, "stopping the binlog copy a previous agent left running");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    for entry in std::fs::read_dir(spool).map_err(io(spool))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("run-") {
            let path = entry.path();
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove an old spool directory");
            }
        }
    }
    let dir = spool.join(format!("run-{}-{run}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// `mariadb-binlog` where it is (else `mysqlbinlog`).
pub(super) fn binlog_tool(bin_dir: Option<&Path>) -> String {
    let found = |name: &str| match bin_dir {
        Some(dir) => dir.join(name).is_file(),
        None => std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())),
    };
    let name = if found("mariadb-binlog") || !found("mysqlbinlog") {
        "mariadb-binlog"
    } else {
        "mysqlbinlog"
    };
    crate::mysql::tool(bin_dir, name)
}

fn start_child(options: &BinlogOptions, dir: &Path, start: &BinlogName) -> Result<Child> {
    let (mut argv, auth) = crate::mysql::client(binlog_tool(options.bin_dir.as_deref()), &options.connection)?;
    argv.extend([
        "--read-from-remote-server".to_owned(),
        "--raw".to_owned(),
        "--stop-never".to_owned(),
        format!("--stop-never-slave-server-id={}", options.server_id),
        format!("--result-file={}/", dir.display()),
        start.to_string(),
    ]);
    let log_path = dir.join("mariadb-binlog.log");
    let log = File::create(&log_path).map_err(|source| Error::Io {
        path: log_path.clone(),
        source,
    })?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no binlog command".into()))?;
    let child = crate::child::command(program, &auth)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::CommandFailed(format!("cannot start {program:?}: {e}")))?;
    let pid_file = options.spool.join("child.pid");
    std::fs::write(&pid_file, format!("{}\n", child.id())).map_err(|source| Error::Io { path: pid_file, source })?;
    // The option file may go once the child has read it; give it the time to.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        drop(auth);
    });
    Ok(child)
}

/// What one run of the child has seen of its spool files.
#[derive(Default)]
struct RunState {
    /// How far each file has been scanned for complete events.
    scans: BTreeMap<BinlogName, Scan>,
    /// Where the next commit of a file this run committed resumes, with
    /// the length committed then: only the bytes from its last chunk on are
    /// read again (the child only appends to the file).
    resumes: BTreeMap<BinlogName, (u64, StreamResume)>,
}

/// One file to commit: its prefix up to the last complete event.
struct Grown {
    name: BinlogName,
    path: PathBuf,
    scan: Scan,
    /// The archived shorter version the new one must begin with.
    archived: Option<(u64, [u8; 32])>,
    /// Where this run's last commit of it can be continued.
    resume: Option<StreamResume>,
}

/// Commits every file of `dir` longer than its archived version.
fn commit_grown(
    repo: &Repository,
    handle: &Handle,
    options: &BinlogOptions,
    dir: &Path,
    catalog: &mut BinlogCatalog,
    state: &mut RunState,
    next: &mut BinlogName,
) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut names: Vec<BinlogName> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .filter_map(|e| BinlogName::parse(&e.file_name().to_string_lossy()))
        .collect();
    names.sort();
    let mut grown = Vec::new();
    for name in names {
        let path = dir.join(name.as_str());
        let file = File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        let before = state.scans.get(&name).copied().unwrap_or_default();
        let now = scan(&file, before, len).map_err(io(&path))?;
        state.scans.insert(name.clone(), now);
        let archived = catalog.get(&name).map(|a| (a.size, a.blake3));
        if archived.is_some() {
            if name >= *next {
                *next = name.next();
            }
        } else if now.len > 4 {
            // Files are copied in order: a new one must be the next in line.
            if name != *next {
                return Err(Error::BinlogGap(format!(
                    "the copy went on at {name}: {next} is missing"
                )));
            }
            *next = name.next();
        }
        if now.len <= archived.map_or(4, |(size, _)| size) {
            continue;
        }
        let resume = state
            .resumes
            .get(&name)
            .filter(|(len, _)| archived.is_some_and(|(size, _)| size == *len))
            .map(|(_, resume)| resume.clone());
        grown.push(Grown {
            name,
            path,
            scan: now,
            archived,
            resume,
        });
    }
    if grown.is_empty() {
        return Ok(());
    }
    let resumes = Arc::new(Mutex::new(Vec::new()));
    let batch = BinlogBatch {
        source: options.source.clone(),
        files: grown,
        resumes: Arc::clone(&resumes),
    };
    let run = RunOptions::new(binlog_stream(&options.source))
        .profile("dump")
        .use_parent(false);
    let report = handle.block_on(crate::run_backup(repo, Box::new(batch), &run, &mut |_| {}))?;
    tracing::info!(
        source = %options.source,
        snapshot = %report.id,
        files = report.snapshot.summary.files,
        "binlog committed"
    );
    catalog.add(Arc::new(SnapshotEntry {
        id: report.id,
        snapshot: report.snapshot,
    }));
    if let Ok(mut committed) = resumes.lock() {
        for (name, len, resume) in committed.drain(..) {
            state.resumes.insert(name, (len, resume));
        }
    }
    // Complete files archived whole leave the spool (the child is done with them).
    let newest = catalog.newest().map(|(n, _)| n.clone());
    let resumes = &mut state.resumes;
    state.scans.retain(|name, scan| {
        let done = scan.complete()
            && catalog.get(name).is_some_and(|a| a.size == scan.len)
            && newest.as_ref().is_some_and(|n| name < n);
        if done {
            resumes.remove(name);
            if let Err(e) = std::fs::remove_file(dir.join(name.as_str())) {
                tracing::warn!(file = %name, error = %e, "cannot remove an archived binlog from the spool");
            }
        }
        !done
    });
    Ok(())
}

/// Records a gap once (a snapshot of the stream holding no file).
fn record_gap(
    repo: &Repository,
    handle: &Handle,
    options: &BinlogOptions,
    catalog: &BinlogCatalog,
    missing: &str,
    message: &str,
) -> Result<()> {
    if catalog.gaps().iter().any(|g| g == missing) {
        return Ok(());
    }
    let record = GapRecord {
        source: options.source.clone(),
        missing: missing.to_owned(),
        message: message.to_owned(),
    };
    let run = RunOptions::new(binlog_stream(&options.source))
        .profile("dump")
        .use_parent(false);
    let report = handle.block_on(crate::run_backup(repo, Box::new(record), &run, &mut |_| {}))?;
    tracing::error!(source = %options.source, snapshot = %report.id, missing, "binlog gap recorded");
    Ok(())
}

/// Reads the first `left` bytes through a hasher, to check them against
/// the archived shorter version.
struct PrefixHash<'a, R> {
    inner: R,
    left: u64,
    hasher: &'a mut blake3::Hasher,
}

impl<R: Read> Read for PrefixHash<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let take = usize::try_from(self.left).unwrap_or(usize::MAX).min(n);
        if let Some(prefix) = buf.get(..take) {
            self.hasher.update(prefix);
        }
        self.left -= take as u64;
        Ok(n)
    }
}

/// The grown files of one commit, read from the spool.
struct BinlogBatch {
    source: String,
    files: Vec<Grown>,
    /// Where each file's next commit resumes, with its committed length:
    /// taken up only once the commit has succeeded.
    resumes: Arc<Mutex<Vec<(BinlogName, u64, StreamResume)>>>,
}

impl Source for BinlogBatch {
    fn kind(&self) -> &str {
        BINLOG_KIND
    }

    fn default_profile(&self) -> &str {
        "dump"
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        Ok(self.files.iter().map(|f| f.name.to_string()).collect())
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let mut nodes = Vec::with_capacity(self.files.len());
        let mut details = CommitDetails::default();
        let mut facts = vec![(BINLOG_SOURCE_FACT.to_owned(), self.source.clone())];
        let mut newest = None;
        for grown in &self.files {
            let mut prefix = blake3::Hasher::new();
            let len = grown.scan.len;
            let (stored, resume, offset) = writer.store_stream_resumable(grown.resume.as_ref(), |offset| {
                let mut file = File::open(&grown.path)?;
                file.seek(SeekFrom::Start(offset))?;
                Ok(PrefixHash {
                    inner: file.take(len.saturating_sub(offset)),
                    // Resumed: this run committed the prefix from this very file.
                    left: if offset == 0 {
                        grown.archived.map_or(0, |(size, _)| size)
                    } else {
                        0
                    },
                    hasher: &mut prefix,
                })
            })?;
            if stored.size != len {
                return Err(Error::AgentFailed(format!(
                    "{}: read {} bytes of {len}",
                    grown.name, stored.size
                )));
            }
            if offset == 0
                && let Some((_, digest)) = grown.archived
                && *prefix.finalize().as_bytes() != digest
            {
                return Err(Error::BinlogConflict(grown.name.to_string()));
            }
            if let Ok(mut resumes) = self.resumes.lock() {
                resumes.push((grown.name.clone(), len, resume));
            }
            nodes.push(stream_node(grown.name.as_str(), &stored)?);
            facts.push((
                format!("{}{}", super::BINLOG_FILE_FACT, grown.name),
                file_fact(stored.size, &stored.blake3, grown.scan.complete()),
            ));
            details.files += 1;
            details.bytes += stored.size;
            newest = newest.max(grown.scan.newest_time);
        }
        if let Some(time) = newest.and_then(|t| chrono::DateTime::from_timestamp(i64::from(t), 0)) {
            facts.push((
                BINLOG_NEWEST_EVENT_FACT.to_owned(),
                time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ));
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let root = writer.store_tree(&Tree { nodes })?;
        details.extra = facts;
        Ok(SourceOutcome {
            root,
            details,
            warnings: Vec::new(),
        })
    }
}

/// A gap: a snapshot with no file and the `binlog.gap` fact.
struct GapRecord {
    source: String,
    missing: String,
    message: String,
}

impl Source for GapRecord {
    fn kind(&self) -> &str {
        BINLOG_KIND
    }

    fn default_profile(&self) -> &str {
        "dump"
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let root = writer.store_tree(&Tree { nodes: Vec::new() })?;
        let details = CommitDetails {
            extra: vec![
                (BINLOG_SOURCE_FACT.to_owned(), self.source.clone()),
                (BINLOG_GAP_FACT.to_owned(), self.missing.clone()),
                ("binlog.gap_detail".to_owned(), self.message.clone()),
            ],
            ..CommitDetails::default()
        };
        Ok(SourceOutcome {
            root,
            details,
            warnings: Vec::new(),
        })
    }
}
