//! Dump sources: one snapshot made of several command streams.
//!
//! A database source runs one dump command per database (and one for
//! globals), each streamed straight into the repository as one file of the
//! snapshot's root tree — nothing is staged on disk. Every command's exit
//! status is checked as it ends; one failure fails the whole source, so the
//! caller never commits a snapshot missing a database or holding a
//! truncated dump.
//!
//! The snapshot records, per stream, the redacted command line, its exit
//! status, its size, its BLAKE3 and its SHA-256 (`dump.<name>.*` in the
//! snapshot's extra facts), plus whatever facts the source gathered (tool
//! and server versions, binlog position).

use std::io::Read;
use std::process::Stdio;

use nfrepo_engine::{BackupWriter, CommitDetails};
use nfrepo_format::{CommandRecord, Node, Tree};

use crate::stream::{check_stream_name, forward_stderr, hex, redact_argv, stream_node};
use crate::{Error, Result, Secret};

/// Bytes of each stream's beginning kept for [`DumpCommand::head_facts`].
const HEAD_BYTES: usize = 64 * 1024;

/// Reads facts (a binlog position…) from the first bytes of a dump.
pub type HeadFacts = fn(&[u8]) -> Vec<(String, String)>;

/// One command whose standard output becomes one file of the snapshot.
#[derive(Clone, Debug)]
pub struct DumpCommand {
    /// The file name in the snapshot (`app.sql`, `dump.rdb`).
    pub name: String,
    /// Program and arguments; never holds a secret.
    pub argv: Vec<String>,
    /// Extra environment, e.g. `MYSQL_PWD`.
    pub env: Vec<(String, Secret)>,
    /// Facts to read from the start of the stream, recorded as `dump.<name>.<key>`.
    pub head_facts: Option<HeadFacts>,
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
            .map(|c| c.name.clone())
            .chain(self.paths.iter().map(|p| p.display().to_string()))
            .collect()
    }
}

/// Runs every command of `plan`, storing each output as a file, then any
/// paths of the plan as file trees. Blocks.
///
/// # Errors
/// [`Error::CommandFailed`] as soon as one command cannot start, exits
/// non-zero or is killed: the caller must abort the session.
pub fn backup_dumps(session: &BackupWriter, plan: &DumpPlan) -> Result<DumpOutcome> {
    if plan.commands.is_empty() && plan.paths.is_empty() {
        return Err(Error::Invalid("the source has nothing to dump".into()));
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut details = CommitDetails::default();
    let mut facts = plan.facts.clone();
    let mut all_warnings = Vec::new();
    for command in &plan.commands {
        let (node, stored, mut stream_facts) = run_stream(session, command)?;
        details.files += 1;
        details.bytes += stored.size;
        facts.append(&mut stream_facts);
        if details.command.is_none() {
            details.command = Some(CommandRecord {
                argv: redact_argv(&command.argv),
                exit_code: 0,
            });
        }
        nodes.push(node);
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

type StreamResult = (Node, nfrepo_engine::StoredContent, Vec<(String, String)>);

fn run_stream(session: &BackupWriter, command: &DumpCommand) -> Result<StreamResult> {
    check_stream_name(&command.name)?;
    let (program, args) = command
        .argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no command given".into()))?;
    tracing::info!(stream = %command.name, argv = ?redact_argv(&command.argv), "dumping");
    let mut child = crate::child::command(program, &command.env)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::CommandFailed(format!("cannot start {program:?}: {e}")))?;
    let stderr = child.stderr.take();
    let stderr_tail = std::thread::spawn(move || forward_stderr(stderr));
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::CommandFailed("no stdout pipe".into()))?;
    let mut head = HeadReader {
        inner: stdout,
        head: Vec::new(),
    };
    let stored = session.store_stream(&mut head, true);
    if stored.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Error::CommandFailed(format!("waiting for {program:?}: {e}")))?;
    let last_line = stderr_tail.join().unwrap_or_default();
    let stored = stored?;
    if !status.success() {
        let (how, tail) = crate::stream::describe_exit(status, &last_line);
        return Err(Error::CommandFailed(format!(
            "dump of {} failed: {program:?} {how}{tail}",
            command.name
        )));
    }
    let key = |k: &str| format!("dump.{}.{k}", command.name);
    let mut facts = vec![
        (key("command"), redact_argv(&command.argv).join(" ")),
        (key("exit_status"), status.code().unwrap_or(0).to_string()),
        (key("bytes"), stored.size.to_string()),
        (key("blake3"), hex(&stored.blake3)),
    ];
    if let Some(sha) = stored.sha256 {
        facts.push((key("sha256"), hex(&sha)));
    }
    if let Some(read_facts) = command.head_facts {
        facts.extend(read_facts(&head.head).into_iter().map(|(k, v)| (key(&k), v)));
    }
    let node = stream_node(&command.name, &stored)?;
    Ok((node, stored, facts))
}

/// Passes reads through, keeping a copy of the first [`HEAD_BYTES`].
struct HeadReader<R> {
    inner: R,
    head: Vec<u8>,
}

impl<R: Read> Read for HeadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = HEAD_BYTES.saturating_sub(self.head.len()).min(n);
        if let Some(part) = buf.get(..room) {
            self.head.extend_from_slice(part);
        }
        Ok(n)
    }
}

/// Runs a short query command and returns its standard output. Blocks.
///
/// # Errors
/// [`Error::CommandFailed`] with the last line of its standard error.
pub(crate) fn capture(argv: &[String], env: &[(String, Secret)]) -> Result<String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no command given".into()))?;
    let output = crate::child::command(program, env)
        .args(args)
        .stdin(Stdio::null())
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
    capture(&[program.to_owned(), "--version".to_owned()], &[])
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
