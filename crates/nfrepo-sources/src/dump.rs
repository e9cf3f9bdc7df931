//! Dump sources: one snapshot made of several command streams.
//!
//! A database source runs its dump commands one after the other: for
//! MariaDB one `mysqldump --databases` for every database (one transaction,
//! so one point in time), cut on the fly into one file per database; for
//! PostgreSQL one `pg_dump` per database plus the globals. Every output is
//! streamed straight into the repository — nothing is staged on disk, and
//! memory stays bounded (a few batches per stream, one capped line buffer).
//! Every command's exit status is checked as it ends; one failure fails the
//! whole source, so the caller never commits a snapshot missing a database
//! or holding a truncated dump.
//!
//! Every byte passes a scanner on its way (see `scan` and `split`), which
//! counts rows per table and reads the binlog position wherever mysqldump
//! prints it. The snapshot records, per stream, the redacted command line,
//! its exit status, its size, its BLAKE3 and SHA-256 and the rows of each
//! table (`dump.<name>.*` in the snapshot's extra facts), plus whatever
//! facts the source gathered (tool and server versions, binlog position).

pub(crate) mod scan;
mod split;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use nfrepo_engine::{BackupWriter, CommitDetails, StoredContent};
use nfrepo_format::{CommandRecord, Node, Tree};

use self::scan::{Lines, PgDumpScan, Piece};
use self::split::{MysqldumpSplit, Outputs, Position};
use crate::child::ChildAuth;
use crate::stream::{check_stream_name, forward_stderr, hex, redact_argv, stream_node};
use crate::{Error, Result};

/// Bytes read from a dump command at a time.
const READ_BYTES: usize = 256 * 1024;
/// Bytes gathered for one stream before they are handed to its writer.
const BATCH_BYTES: usize = 64 * 1024;
/// Batches waiting for one stream's writer: with [`BATCH_BYTES`], what a
/// stream may hold in memory besides the engine's own buffers.
const BATCHES_IN_FLIGHT: usize = 4;

/// What a dump command prints, and which files of the snapshot it becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DumpOutput {
    /// One file, stored as it comes (an RDB, `globals.sql`).
    Raw(String),
    /// A plain-format `pg_dump`, one file; the data lines of each `COPY`
    /// are counted as `dump.<name>.rows.<schema>.<table>`.
    PgDump(String),
    /// `mysqldump --databases …` of these databases, in this order: cut
    /// into one standalone dump per database, `<database>.sql`, with the
    /// rows of each table counted as `dump.<name>.rows.<table>` and the one
    /// binlog position and GTID of the dump recorded as `mysql.binlog_file`,
    /// `mysql.binlog_position` and `mysql.gtid`.
    Mysqldump(Vec<String>),
}

impl DumpOutput {
    /// The files this output becomes.
    #[must_use]
    pub fn stream_names(&self) -> Vec<String> {
        match self {
            Self::Raw(name) | Self::PgDump(name) => vec![name.clone()],
            Self::Mysqldump(databases) => databases.iter().map(|d| format!("{d}.sql")).collect(),
        }
    }
}

/// One command whose standard output becomes one or more files of the snapshot.
#[derive(Clone, Debug)]
pub struct DumpCommand {
    /// Program and arguments; never holds a secret.
    pub argv: Vec<String>,
    /// How the command authenticates (a private password file, never a
    /// variable holding the secret).
    pub auth: ChildAuth,
    /// What the output is and the files it becomes.
    pub output: DumpOutput,
}

/// The result of a dump source: the root tree to commit and its details.
#[derive(Debug)]
pub struct DumpOutcome {
    /// The root tree to commit.
    pub root: nfrepo_format::BlobId,
    /// Counters, the first command's record and every stream's facts.
    pub details: CommitDetails,
    /// Problems that did not stop the backup (an unreadable AOF file).
    pub warnings: Vec<String>,
}

/// What a source will run, and what it learnt while planning.
#[derive(Clone, Debug, Default)]
pub struct DumpPlan {
    /// The commands, run one after the other.
    pub commands: Vec<DumpCommand>,
    /// Facts for the snapshot (`tool.mysqldump`, `mysql.server_version`…).
    pub facts: Vec<(String, String)>,
    /// File trees stored beside the streams (Redis's appendonlydir).
    pub paths: Vec<std::path::PathBuf>,
}

impl DumpPlan {
    /// What a snapshot of this plan records as its paths: each stream's
    /// file name, then each file tree's path.
    #[must_use]
    pub fn stream_names(&self) -> Vec<String> {
        self.commands
            .iter()
            .flat_map(|c| c.output.stream_names())
            .chain(self.paths.iter().map(|p| p.display().to_string()))
            .collect()
    }
}

/// Runs every command of `plan`, storing its output as files, then any
/// paths of the plan as file trees. Blocks.
///
/// # Errors
/// [`Error::CommandFailed`] as soon as one command cannot start, exits
/// non-zero, is killed, or prints a dump the splitter cannot follow: the
/// caller must abort the session.
pub fn backup_dumps(session: &BackupWriter, plan: &DumpPlan) -> Result<DumpOutcome> {
    if plan.commands.is_empty() && plan.paths.is_empty() {
        return Err(Error::Invalid("the source has nothing to dump".into()));
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut details = CommitDetails::default();
    let mut facts = plan.facts.clone();
    let mut all_warnings = Vec::new();
    for command in &plan.commands {
        let ran = run_command(session, command)?;
        for stream in ran.streams {
            details.files += 1;
            details.bytes += stream.stored.size;
            let key = |k: &str| format!("dump.{}.{k}", stream.name);
            facts.extend([
                (key("command"), redact_argv(&command.argv).join(" ")),
                (key("exit_status"), ran.exit_code.to_string()),
                (key("bytes"), stream.stored.size.to_string()),
                (key("blake3"), hex(&stream.stored.blake3)),
            ]);
            if let Some(sha) = stream.stored.sha256 {
                facts.push((key("sha256"), hex(&sha)));
            }
            facts.extend(
                stream
                    .rows
                    .iter()
                    .map(|(t, n)| (key(&format!("rows.{t}")), n.to_string())),
            );
            nodes.push(stream_node(&stream.name, &stream.stored)?);
        }
        if let Some(position) = ran.position {
            let binlog_on = plan.facts.iter().any(|(k, v)| k == "mysql.binlog" && v == "on");
            let gtid_asked = command.argv.iter().any(|a| a == "--gtid");
            let missing: Vec<&str> = [
                (binlog_on && position.binlog_file.is_none()).then_some("binlog position"),
                (gtid_asked && position.gtid.is_none()).then_some("GTID"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !missing.is_empty() {
                let note = format!(
                    "the binary log is on, but mysqldump printed no {}: no point to replay the binlog from",
                    missing.join(" and no ")
                );
                all_warnings.push(note.clone());
                facts.push(("mysql.position_note".to_owned(), note));
            }
            let found = [
                ("mysql.binlog_file", position.binlog_file),
                ("mysql.binlog_position", position.binlog_position),
                ("mysql.gtid", position.gtid),
            ];
            facts.extend(found.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))));
        }
        if details.command.is_none() {
            details.command = Some(CommandRecord {
                argv: redact_argv(&command.argv),
                exit_code: ran.exit_code,
            });
        }
    }
    if !plan.paths.is_empty() {
        let (mut tree_nodes, walked, warnings) =
            crate::files::walk_nodes(session, &plan.paths, &crate::FilesOptions::default())?;
        nodes.append(&mut tree_nodes);
        details.files += walked.files;
        details.dirs += walked.dirs;
        details.others += walked.others;
        details.bytes += walked.bytes;
        details.skipped.extend(walked.skipped);
        all_warnings.extend(warnings);
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = nodes.windows(2).find(|w| matches!(w, [a, b] if a.name == b.name)) {
        let name = w.first().map(|n| n.name_lossy().into_owned()).unwrap_or_default();
        return Err(Error::Invalid(format!("two streams are named {name:?}")));
    }
    let root = session.store_tree(&Tree { nodes })?;
    facts.sort();
    details.extra = facts;
    Ok(DumpOutcome {
        root,
        details,
        warnings: all_warnings,
    })
}

/// One stored stream of a command.
struct StreamResult {
    name: String,
    stored: StoredContent,
    rows: BTreeMap<String, u64>,
}

/// Everything one command produced.
struct CommandResult {
    exit_code: i32,
    streams: Vec<StreamResult>,
    /// The position a mysqldump printed (`None` for other outputs).
    position: Option<Position>,
}

/// Watches the output on its way to the streams.
enum Scanner {
    Raw,
    PgDump(PgDumpScan),
    Mysqldump(MysqldumpSplit),
}

/// What a scanner learnt.
struct ScanFacts {
    rows: Vec<BTreeMap<String, u64>>,
    position: Option<Position>,
}

impl Scanner {
    fn new(output: &DumpOutput) -> Self {
        match output {
            DumpOutput::Raw(_) => Self::Raw,
            DumpOutput::PgDump(_) => Self::PgDump(PgDumpScan::default()),
            DumpOutput::Mysqldump(databases) => Self::Mysqldump(MysqldumpSplit::new(databases.clone())),
        }
    }

    fn feed(&mut self, lines: &mut Lines, data: &[u8], out: &mut Fanout) -> Result<()> {
        match self {
            Self::Raw => out.write(0, data),
            Self::PgDump(scan) => lines.feed(data, &mut |piece: Piece<'_>| {
                scan.piece(piece);
                out.write(0, piece.bytes())
            }),
            Self::Mysqldump(split) => lines.feed(data, &mut |piece| split.piece(piece, out)),
        }
    }

    fn finish(self, lines: &mut Lines, out: &mut Fanout) -> Result<ScanFacts> {
        match self {
            Self::Raw => Ok(ScanFacts {
                rows: vec![BTreeMap::new()],
                position: None,
            }),
            Self::PgDump(mut scan) => {
                lines.finish(&mut |piece: Piece<'_>| {
                    scan.piece(piece);
                    out.write(0, piece.bytes())
                })?;
                let rows = scan
                    .finish()
                    .map_err(|e| Error::CommandFailed(format!("pg_dump's output: {e}")))?;
                Ok(ScanFacts {
                    rows: vec![rows],
                    position: None,
                })
            }
            Self::Mysqldump(mut split) => {
                lines.finish(&mut |piece| split.piece(piece, out))?;
                let facts = split.finish(out)?;
                Ok(ScanFacts {
                    rows: facts.rows,
                    position: Some(facts.position),
                })
            }
        }
    }
}

/// A message to one stream's writer.
enum Batch {
    Bytes(Vec<u8>),
    /// The command succeeded: the stream is whole.
    End,
}

/// The splitter's side of the streams: a bounded channel to each writer.
struct Fanout {
    senders: Vec<SyncSender<Batch>>,
    pending: Vec<Vec<u8>>,
    /// The stream whose writer stopped, if one did.
    stopped: Option<usize>,
}

impl Fanout {
    fn send(&mut self, index: usize) -> Result<()> {
        let batch = std::mem::replace(&mut self.pending[index], Vec::with_capacity(BATCH_BYTES));
        if batch.is_empty() {
            return Ok(());
        }
        let sent = self.senders.get(index).map(|s| s.send(Batch::Bytes(batch)));
        if matches!(sent, Some(Ok(()))) {
            Ok(())
        } else {
            self.stopped = Some(index);
            Err(Error::CommandFailed("a stream's writer stopped".into()))
        }
    }

    /// Hands every remaining batch on and marks each stream whole; on
    /// failure, the stream whose writer had stopped.
    fn finish(mut self) -> std::result::Result<(), usize> {
        for index in 0..self.senders.len() {
            if self.send(index).is_err() || self.senders[index].send(Batch::End).is_err() {
                return Err(index);
            }
        }
        Ok(())
    }
}

impl Outputs for Fanout {
    fn write(&mut self, index: usize, bytes: &[u8]) -> Result<()> {
        let Some(pending) = self.pending.get_mut(index) else {
            return Err(Error::CommandFailed(format!("no stream number {index}")));
        };
        pending.extend_from_slice(bytes);
        if pending.len() >= BATCH_BYTES {
            self.send(index)?;
        }
        Ok(())
    }
}

/// A writer's side of its stream. A channel that closes without
/// [`Batch::End`] (the command failed, the splitter gave up) is an error, so
/// the engine never takes a cut-short stream for a whole one.
struct BatchReader {
    receiver: Receiver<Batch>,
    current: Vec<u8>,
    offset: usize,
    ended: bool,
}

impl Read for BatchReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset >= self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.receiver.recv() {
                Ok(Batch::Bytes(bytes)) => {
                    self.current = bytes;
                    self.offset = 0;
                }
                Ok(Batch::End) => self.ended = true,
                Err(_) => {
                    return Err(std::io::Error::other("the dump command stopped before its end"));
                }
            }
        }
        let rest = self.current.get(self.offset..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.offset += n;
        Ok(n)
    }
}

/// Runs one command and stores its output as the files of its
/// [`DumpOutput`]: this thread reads and scans the output, one writer
/// thread per file feeds the engine. Every writer lives until the command
/// ends, because mysqldump's closing lines (and its view pass) come after
/// all databases; each holds at most [`BATCHES_IN_FLIGHT`] batches of
/// [`BATCH_BYTES`] plus the engine's per-stream buffers, so memory grows
/// with the number of databases of one source, never with their size.
/// The files are only good if the command exits 0 and the scanner followed
/// the output to its end; otherwise every writer fails and so does the
/// command.
fn run_command(session: &BackupWriter, command: &DumpCommand) -> Result<CommandResult> {
    let names = command.output.stream_names();
    for name in &names {
        check_stream_name(name)?;
    }
    if names.is_empty() {
        return Err(Error::Invalid("a dump command makes no stream".into()));
    }
    let (program, args) = command
        .argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no command given".into()))?;
    tracing::info!(streams = ?names, argv = ?redact_argv(&command.argv), "dumping");
    let mut child = crate::child::command(program, &command.auth)
        .args(args)
        .stdin(command.auth.stdin_or(Stdio::null())?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::CommandFailed(format!("cannot start {program:?}: {e}")))?;
    let stderr = child.stderr.take();
    let stderr_tail = std::thread::spawn(move || forward_stderr(stderr));
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::CommandFailed("no stdout pipe".into()))?;
    std::thread::scope(|scope| {
        let mut fanout = Fanout {
            senders: Vec::with_capacity(names.len()),
            pending: vec![Vec::with_capacity(BATCH_BYTES); names.len()],
            stopped: None,
        };
        let mut writers = Vec::with_capacity(names.len());
        for name in names.clone() {
            let (sender, receiver) = sync_channel(BATCHES_IN_FLIGHT);
            fanout.senders.push(sender);
            let session = session.clone();
            writers.push(scope.spawn(move || {
                let reader = BatchReader {
                    receiver,
                    current: Vec::new(),
                    offset: 0,
                    ended: false,
                };
                session.store_root_stream(reader, &name)
            }));
        }
        let mut scanner = Scanner::new(&command.output);
        let mut lines = Lines::default();
        let mut buffer = vec![0_u8; READ_BYTES];
        let scanned = loop {
            match stdout.read(&mut buffer) {
                Ok(0) => break scanner.finish(&mut lines, &mut fanout),
                Ok(n) => {
                    if let Err(e) = scanner.feed(&mut lines, &buffer[..n], &mut fanout) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(Error::CommandFailed(format!("reading {program:?}'s output: {e}"))),
            }
        };
        if scanned.is_err() {
            // Don't leave the command blocked on a full pipe.
            let _ = child.kill();
        }
        drop(stdout);
        let status = child
            .wait()
            .map_err(|e| Error::CommandFailed(format!("waiting for {program:?}: {e}")));
        let last_line = stderr_tail.join().unwrap_or_default();
        let mut stopped = fanout.stopped;
        if matches!((&scanned, &status), (Ok(_), Ok(s)) if s.success()) {
            stopped = stopped.or(fanout.finish().err());
        } else {
            // Closing the channels without their end fails every writer.
            drop(fanout);
        }
        let stored: Vec<Result<StoredContent>> = writers
            .into_iter()
            .map(|w| match w.join() {
                Ok(result) => result.map_err(Error::from),
                Err(_) => Err(Error::WorkerPanicked(format!("the writer of a stream of {program:?}"))),
            })
            .collect();
        // The first cause wins: a writer that stopped on its own, then the
        // output the scanner could not follow, then the command's status.
        if let Some(index) = stopped.filter(|&i| stored.get(i).is_some_and(Result::is_err)) {
            let cause = stored.into_iter().nth(index).and_then(Result::err);
            return Err(cause.unwrap_or_else(|| Error::CommandFailed("a stream's writer stopped".into())));
        }
        let scanned = scanned?;
        let status = status?;
        if !status.success() {
            let (how, tail) = crate::stream::describe_exit(status, &last_line);
            return Err(Error::CommandFailed(format!(
                "dump of {} failed: {program:?} {how}{tail}",
                names.join(", ")
            )));
        }
        let mut streams = Vec::with_capacity(names.len());
        for ((name, stored), rows) in names.into_iter().zip(stored).zip(scanned.rows) {
            streams.push(StreamResult {
                name,
                stored: stored?,
                rows,
            });
        }
        Ok(CommandResult {
            exit_code: status.code().unwrap_or(0),
            streams,
            position: scanned.position,
        })
    })
}

/// Runs a short query command and returns its standard output. Blocks.
///
/// # Errors
/// [`Error::CommandFailed`] with the last line of its standard error.
pub(crate) fn capture(argv: &[String], auth: &ChildAuth) -> Result<String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no command given".into()))?;
    let output = crate::child::command(program, auth)
        .args(args)
        .stdin(auth.stdin_or(Stdio::null())?)
        .output()
        .map_err(|e| Error::CommandFailed(format!("cannot start {program:?}: {e}")))?;
    if !output.status.success() {
        return Err(Error::CommandFailed(format!(
            "{program:?} failed: {}",
            last_line(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first line of `tool --version`, for the snapshot record.
pub(crate) fn tool_version(program: &str) -> String {
    capture(&[program.to_owned(), "--version".to_owned()], &ChildAuth::none())
        .map(|out| out.lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

pub(crate) fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no error message")
        .chars()
        .take(300)
        .collect()
}

/// Finds a tool: in `bin_dir` when given, else on `PATH`, else in the
/// newest `/usr/lib/postgresql/*/bin` (where Debian keeps PostgreSQL's).
pub(crate) fn find_tool(name: &str, bin_dir: Option<&std::path::Path>) -> String {
    if let Some(dir) = bin_dir {
        return dir.join(name).display().to_string();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if on_path {
        return name.to_owned();
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let tool = e.path().join("bin").join(name);
            tool.is_file().then_some((version, tool))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map_or_else(|| name.to_owned(), |(_, tool)| tool.display().to_string())
}
