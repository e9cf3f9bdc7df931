//! `nfrepo agent`: the long-lived process that holds the repository open
//! and commits the WAL files `wal-push` hands it.
//!
//! **Socket.** A Unix socket in a directory of mode 0700 owned by the
//! agent's user (made so if missing; refused if it is shared), the socket
//! itself mode 0600: only that user (PostgreSQL's, whose `archive_command`
//! and `restore_command` connect) can talk to it. A socket file left by a
//! dead agent is replaced; one a live agent answers on is refused.
//!
//! **Commits.** One thread commits: it takes the first push waiting, every
//! other push already waiting (up to [`AgentOptions::batch`]), answers
//! those whose name is archived (`HAVE`, or `WAL_CONFLICT` for other
//! bytes), and commits the rest of each source as one snapshot through the
//! one backup driver ([`crate::run_backup`]), reading each file's bytes
//! from its client's connection straight into the repository (nothing is
//! held in memory or on disk). Each client is answered `OK` only after the
//! snapshot holding its file is committed; if the agent dies before, the
//! client fails, PostgreSQL keeps the segment and pushes it again, and the
//! packs already uploaded are adopted by the next commit. A file whose
//! bytes arrive short or do not hash to what the client announced is
//! refused alone; the rest of the batch is committed.
//!
//! **Binlogs.** For each MySQL/MariaDB source with `binlog = true` the
//! agent also runs a copier thread (`binlog/copy.rs`) that commits the
//! server's binlogs through the same driver; it needs no client.
//!
//! **Fetches** are answered on the connection's own thread from the
//! catalog and a reader of the repository (reloaded after commits).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

use nfrepo_engine::{BackupWriter, CommitDetails, Reader, Repository, SnapshotEntry};
use nfrepo_format::Tree;
use tokio::runtime::Handle;

use super::protocol::{check_token, error_line, read_line, write_line};
use super::{WalCatalog, WalName, batch_facts, write_wal};
use crate::source::{Source, SourceOutcome};
use crate::stream::{hex, stream_node};
use crate::{Error, Result, RunOptions};

/// How the agent runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The socket path.
    pub socket: PathBuf,
    /// The sources (base backup source names) it archives for.
    pub sources: Vec<String>,
    /// The most files committed as one snapshot.
    pub batch: usize,
    /// The MySQL/MariaDB sources whose binlogs it copies (`binlog/copy.rs`).
    pub binlogs: Vec<crate::BinlogOptions>,
}

impl AgentOptions {
    /// Options for `sources` on `socket`, committing up to 16 files at once.
    #[must_use]
    pub fn new(socket: PathBuf, sources: Vec<String>) -> Self {
        Self {
            socket,
            sources,
            batch: 16,
            binlogs: Vec::new(),
        }
    }
}

/// `$XDG_RUNTIME_DIR/nfrepo/agent.sock`, else `/tmp/nfrepo-<uid>/agent.sock`.
#[must_use]
pub fn default_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("nfrepo").join("agent.sock"),
        None => std::env::temp_dir()
            .join(format!("nfrepo-{}", nix::unistd::geteuid().as_raw()))
            .join("agent.sock"),
    }
}

/// Shared between the connection threads and the committer.
struct State {
    catalogs: HashMap<String, WalCatalog>,
    /// A reader loaded after the last commit; `None` until a fetch needs one.
    reader: Option<Reader>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One `PUSH` waiting for the committer.
struct Push {
    source: String,
    name: String,
    size: u64,
    blake3: [u8; 32],
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Push {
    fn answer(&mut self, line: &str) {
        if let Err(e) = write_line(&mut self.writer, line) {
            tracing::warn!(wal = %self.name, error = %e, "a wal-push client went away before its answer");
        }
    }
}

/// Listens on the socket and serves until the process ends. Blocks; call
/// it off the runtime's worker threads (`handle` runs the repository's
/// async calls). `ready` is called once the socket accepts connections.
///
/// # Errors
/// [`Error::Invalid`] for a socket directory others can enter;
/// [`Error::AgentFailed`] when another agent answers on the socket;
/// [`Error::Io`] when the socket cannot be made; engine errors loading the
/// catalog.
pub fn serve_agent(repo: Repository, handle: &Handle, options: &AgentOptions, ready: impl FnOnce(&Path)) -> Result<()> {
    for source in &options.sources {
        check_token("source", source)?;
    }
    let listener = bind(&options.socket)?;
    let mut catalogs = HashMap::new();
    for source in &options.sources {
        let catalog = handle.block_on(WalCatalog::load(&repo, source))?;
        tracing::info!(source = %source, files = catalog.len(), "WAL catalog loaded");
        catalogs.insert(source.clone(), catalog);
    }
    for binlog in &options.binlogs {
        check_token("source", &binlog.source)?;
        let (repo, handle, binlog) = (repo.clone(), handle.clone(), binlog.clone());
        std::thread::spawn(move || crate::binlog::supervise(&repo, &handle, &binlog));
    }
    let state = Arc::new(Mutex::new(State { catalogs, reader: None }));
    let (pushes, queue) = channel::<Push>();
    {
        let (repo, handle, state) = (repo.clone(), handle.clone(), Arc::clone(&state));
        let batch = options.batch.max(1);
        std::thread::spawn(move || commit_loop(&repo, &handle, &state, &queue, batch));
    }
    ready(&options.socket);
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                continue;
            }
        };
        let (repo, handle, state, pushes) = (repo.clone(), handle.clone(), Arc::clone(&state), pushes.clone());
        let sources = options.sources.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_connection(conn, &repo, &handle, &state, &pushes, &sources) {
                tracing::warn!(error = %e, "an agent connection failed");
            }
        });
    }
    Ok(())
}

/// Makes the private directory and binds the socket, mode 0600.
fn bind(socket: &Path) -> Result<UnixListener> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| Error::Invalid(format!("socket path {} has no directory", socket.display())))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "the agent's socket directory {} must be a directory of this user with mode 0700",
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(socket).is_ok() {
                return Err(Error::AgentFailed(format!(
                    "another agent already listens on {}",
                    socket.display()
                )));
            }
            std::fs::remove_file(socket).map_err(io(socket))?;
        }
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "{} exists and is not a socket",
                socket.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(socket)(e)),
    }
    let listener = UnixListener::bind(socket).map_err(io(socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io(socket))?;
    Ok(listener)
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads one request and serves it (a push is handed to the committer).
fn serve_connection(
    conn: UnixStream,
    repo: &Repository,
    handle: &Handle,
    state: &Mutex<State>,
    pushes: &Sender<Push>,
    sources: &[String],
) -> Result<()> {
    let lost = |e: std::io::Error| Error::AgentFailed(format!("a client connection broke: {e}"));
    let mut writer = conn.try_clone().map_err(lost)?;
    let mut reader = BufReader::new(conn);
    let Some(line) = read_line(&mut reader).map_err(lost)? else {
        return Ok(());
    };
    let words: Vec<&str> = line.split(' ').collect();
    let request = match words.as_slice() {
        ["PUSH", source, name, size, digest] => parse_push(source, name, size, digest, sources).map(Some),
        ["FETCH", source, name] => known(source, name, sources).map(|()| None),
        _ => Err(Error::Invalid(format!("unknown request {line:?}"))),
    };
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            write_line(&mut writer, &error_line(&e)).map_err(lost)?;
            return Ok(());
        }
    };
    match request {
        Some((source, name, size, blake3)) => {
            let push = Push {
                source,
                name,
                size,
                blake3,
                reader,
                writer,
            };
            pushes
                .send(push)
                .map_err(|_| Error::AgentFailed("the committer stopped".into()))?;
        }
        None => {
            let (Some(source), Some(name)) = (words.get(1), words.get(2)) else {
                return Ok(());
            };
            if let Err(e) = fetch(repo, handle, state, source, name, &mut writer) {
                // After FOUND, a failure shows as a short stream.
                let _ = write_line(&mut writer, &error_line(&e));
                return Err(e);
            }
        }
    }
    Ok(())
}

fn known(source: &str, name: &str, sources: &[String]) -> Result<()> {
    check_token("source", source)?;
    if !sources.iter().any(|s| s == source) {
        return Err(Error::Invalid(format!("this agent does not archive source {source:?}")));
    }
    if WalName::parse(name).is_none() {
        return Err(Error::Invalid(format!("{name:?} is not a WAL file name")));
    }
    Ok(())
}

fn parse_push(
    source: &str,
    name: &str,
    size: &str,
    digest: &str,
    sources: &[String],
) -> Result<(String, String, u64, [u8; 32])> {
    known(source, name, sources)?;
    let size = size.parse().map_err(|_| Error::Invalid(format!("bad size {size:?}")))?;
    let blake3 = parse_digest(digest).ok_or_else(|| Error::Invalid(format!("bad BLAKE3 {digest:?}")))?;
    Ok((source.to_owned(), name.to_owned(), size, blake3))
}

fn fetch(
    repo: &Repository,
    handle: &Handle,
    state: &Mutex<State>,
    source: &str,
    name: &str,
    out: &mut UnixStream,
) -> Result<()> {
    let lost = |e: std::io::Error| Error::AgentFailed(format!("a wal-fetch client went away: {e}"));
    let mut archived = lock(state).catalogs.get(source).and_then(|c| c.get(name).cloned());
    if archived.is_none() {
        // Another writer (or a forget) may have changed the stream: look again.
        let catalog = handle.block_on(WalCatalog::load(repo, source))?;
        archived = catalog.get(name).cloned();
        lock(state).catalogs.insert(source.to_owned(), catalog);
    }
    let Some(archived) = archived else {
        write_line(out, "MISSING").map_err(lost)?;
        return Ok(());
    };
    let cached = lock(state).reader.clone();
    let reader = match cached {
        Some(reader) => reader,
        None => {
            let reader = handle.block_on(repo.reader())?;
            lock(state).reader = Some(reader.clone());
            reader
        }
    };
    write_line(out, &format!("FOUND {}", archived.size)).map_err(lost)?;
    handle.block_on(write_wal(&reader, &archived, name, &mut *out))?;
    Ok(())
}

/// What the committer decided for one push before the commit.
enum Verdict {
    Have,
    Conflict,
    New,
}

fn verdict(state: &Mutex<State>, batch: &[Push], push: &Push) -> Verdict {
    let same = |size: u64, blake3: &[u8; 32]| size == push.size && *blake3 == push.blake3;
    let state = lock(state);
    if let Some(archived) = state.catalogs.get(&push.source).and_then(|c| c.get(&push.name)) {
        return if same(archived.size, &archived.blake3) {
            Verdict::Have
        } else {
            Verdict::Conflict
        };
    }
    match batch.iter().find(|p| p.source == push.source && p.name == push.name) {
        Some(other) if same(other.size, &other.blake3) => Verdict::Have,
        Some(_) => Verdict::Conflict,
        None => Verdict::New,
    }
}

fn commit_loop(repo: &Repository, handle: &Handle, state: &Mutex<State>, queue: &Receiver<Push>, batch_max: usize) {
    while let Ok(first) = queue.recv() {
        let mut batch: Vec<Push> = Vec::new();
        // Pushes of a file already in this batch are answered after its commit.
        let mut followers: Vec<Push> = Vec::new();
        let mut next = Some(first);
        while let Some(mut push) = next.take() {
            match verdict(state, &batch, &push) {
                Verdict::Have if batch.iter().any(|p| p.source == push.source && p.name == push.name) => {
                    followers.push(push);
                }
                Verdict::Have => push.answer("HAVE"),
                Verdict::Conflict => push.answer(&error_line(&Error::WalConflict(push.name.clone()))),
                Verdict::New => batch.push(push),
            }
            if batch.len() < batch_max {
                next = queue.try_recv().ok();
            }
        }
        let mut by_source: BTreeMap<String, Vec<Push>> = BTreeMap::new();
        for push in batch {
            by_source.entry(push.source.clone()).or_default().push(push);
        }
        for (source, pushes) in by_source {
            let done = commit(repo, handle, state, &source, pushes);
            for follower in followers.iter_mut().filter(|f| f.source == source) {
                match done.iter().find(|(name, _)| *name == follower.name) {
                    Some((_, Ok(id))) => follower.answer(&format!("OK {id}")),
                    Some((_, Err(line))) => follower.answer(line),
                    None => follower.answer(&error_line(&Error::AgentFailed("not committed".into()))),
                }
            }
        }
    }
}

/// One slot of a batch: the push, and what became of it.
struct Slot {
    push: Push,
    outcome: Option<Result<(u64, [u8; 32]), Error>>,
}

/// Commits `pushes` of `source` as one snapshot; answers each client and
/// returns, per name, the snapshot id or the `ERR` line sent.
fn commit(
    repo: &Repository,
    handle: &Handle,
    state: &Mutex<State>,
    source: &str,
    pushes: Vec<Push>,
) -> Vec<(String, Result<String, String>)> {
    let slots: Arc<Mutex<Vec<Slot>>> = Arc::new(Mutex::new(
        pushes.into_iter().map(|push| Slot { push, outcome: None }).collect(),
    ));
    let batch = WalBatch {
        source: source.to_owned(),
        slots: Arc::clone(&slots),
    };
    let options = RunOptions::new(super::wal_stream(source))
        .profile("files")
        .use_parent(false);
    let report = handle.block_on(crate::run_backup(repo, Box::new(batch), &options, &mut |_| {}));
    let mut slots = std::mem::take(&mut *slots.lock().unwrap_or_else(PoisonError::into_inner));
    let mut done = Vec::with_capacity(slots.len());
    match report {
        Ok(report) => {
            let id = report.id.to_string();
            tracing::info!(snapshot = %id, files = report.snapshot.summary.files, "WAL committed");
            let entry = Arc::new(SnapshotEntry {
                id: report.id,
                snapshot: report.snapshot,
            });
            {
                let mut state = lock(state);
                state.catalogs.entry(source.to_owned()).or_default().add(entry);
                state.reader = None;
            }
            for slot in &mut slots {
                let answer = match slot.outcome.take() {
                    Some(Ok(_)) => Ok(id.clone()),
                    Some(Err(e)) => Err(error_line(&e)),
                    None => Err(error_line(&Error::AgentFailed("not stored".into()))),
                };
                match &answer {
                    Ok(id) => slot.push.answer(&format!("OK {id}")),
                    Err(line) => slot.push.answer(line),
                }
                done.push((slot.push.name.clone(), answer));
            }
        }
        Err(e) => {
            tracing::warn!(source = %source, error = %e, "WAL commit failed");
            for slot in &mut slots {
                let line = match slot.outcome.take() {
                    Some(Err(own)) => error_line(&own),
                    _ => error_line(&e),
                };
                slot.push.answer(&line);
                done.push((slot.push.name.clone(), Err(line)));
            }
        }
    }
    done
}

/// The files of one batch, read from their clients' connections.
struct WalBatch {
    source: String,
    slots: Arc<Mutex<Vec<Slot>>>,
}

impl Source for WalBatch {
    fn kind(&self) -> &str {
        super::WAL_KIND
    }

    fn default_profile(&self) -> &str {
        "files"
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(slots.iter().map(|s| s.push.name.clone()).collect())
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut nodes = Vec::new();
        let mut files = BTreeMap::new();
        let mut details = CommitDetails::default();
        for slot in slots.iter_mut() {
            let push = &mut slot.push;
            push.answer("SEND");
            let stored = writer.store_stream((&mut push.reader).take(push.size), false);
            let outcome = match stored {
                Ok(stored) if stored.size == push.size && stored.blake3 == push.blake3 => {
                    nodes.push(stream_node(&push.name, &stored)?);
                    files.insert(push.name.clone(), (stored.size, stored.blake3));
                    details.files += 1;
                    details.bytes += stored.size;
                    Ok((stored.size, stored.blake3))
                }
                Ok(stored) => Err(Error::AgentFailed(format!(
                    "{}: received {} bytes hashing to {}, announced {} bytes hashing to {}",
                    push.name,
                    stored.size,
                    hex(&stored.blake3),
                    push.size,
                    hex(&push.blake3)
                ))),
                // The repository failed: nothing of this batch commits.
                Err(e) => return Err(e.into()),
            };
            slot.outcome = Some(outcome);
        }
        if nodes.is_empty() {
            return Err(Error::AgentFailed("no file of the batch arrived whole".into()));
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let root = writer.store_tree(&Tree { nodes })?;
        details.extra = batch_facts(&self.source, &files);
        Ok(SourceOutcome {
            root,
            details,
            warnings: Vec::new(),
        })
    }
}
