//! The [`Source`] trait: one interface for everything nfrepo backs up.
//!
//! A source is run in two steps, both blocking and both on a thread of the
//! runtime's blocking pool (the driver, [`crate::run_backup`], owns that):
//!
//! 1. [`Source::prepare`] checks that the source is there and asks servers
//!    what to dump. Nothing is written yet, so a source that is missing or
//!    unreachable fails here and no backup session is ever started.
//! 2. [`Source::back_up`] feeds a [`BackupWriter`] and returns the root tree
//!    and the details of the snapshot. Any error means nothing is committed.
//!
//! Implementations: [`FilesSource`] (file trees: `files`, `config`, `logs`),
//! [`StreamSource`] (standard input, any reader, or a command's standard
//! output), [`DumpSource`] (MySQL, PostgreSQL, Redis, or
//! any [`DumpPlan`]) and [`BucketSource`] (an S3 bucket).

use std::io::Read;
use std::path::PathBuf;

use nfrepo_engine::{BackupWriter, CommitDetails};
use nfrepo_format::BlobId;

use crate::{DumpPlan, Error, FilesOptions, MysqlSource, PostgresSource, RedisSource, Result};

/// What a source produced: the snapshot's root tree and what to record.
#[derive(Debug)]
pub struct SourceOutcome {
    /// The root tree to commit.
    pub root: BlobId,
    /// Counters, skipped entries, command record and facts for the snapshot.
    pub details: CommitDetails,
    /// Problems that did not stop the backup (unreadable entries inside a tree).
    pub warnings: Vec<String>,
}

/// Something nfrepo backs up. See the module docs for the two steps.
pub trait Source: Send {
    /// The snapshot's `source_kind` (`files`, `stdin`, `command`, `mysql`…):
    /// what `restore --into` and `rollback` later rely on.
    fn kind(&self) -> &str;

    /// The chunking profile used unless the caller names one (`files`, `dump` or `rows`).
    fn default_profile(&self) -> &str;

    /// Checks the source and plans the work; returns the paths or stream
    /// names the snapshot records. Blocks; writes nothing (except that a
    /// files source first finishes or undoes an interrupted rollback of its
    /// paths: see [`crate::recover_rollbacks`]).
    ///
    /// # Errors
    /// [`Error::SourceNotFound`] for a top-level path that does not exist,
    /// [`Error::SourceUnreadable`] for one that cannot be read, planning
    /// failures ([`Error::CommandFailed`]) and bad arguments.
    fn prepare(&mut self) -> Result<Vec<String>>;

    /// Feeds `writer`. Blocks. Called once, after a successful
    /// [`prepare`](Self::prepare).
    ///
    /// # Errors
    /// Any error: the driver then aborts the session and commits nothing.
    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome>;
}

/// File trees: each path becomes an entry of the root tree (see `files`).
#[derive(Clone, Debug)]
pub struct FilesSource {
    kind: String,
    paths: Vec<PathBuf>,
    options: FilesOptions,
    /// Interrupted rollbacks of these paths dealt with by `prepare`, for the warnings.
    recovered: Vec<String>,
}

impl FilesSource {
    /// The trees at `paths`, recorded as kind `files`.
    #[must_use]
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            kind: "files".to_owned(),
            paths,
            options: FilesOptions::default(),
            recovered: Vec::new(),
        }
    }

    /// Keeps only the entries `options` selects.
    #[must_use]
    pub fn with_options(mut self, options: FilesOptions) -> Self {
        self.options = options;
        self
    }

    /// Records another kind (`config`, `logs`): file trees all the same.
    #[must_use]
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }
}

impl Source for FilesSource {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn default_profile(&self) -> &str {
        "files"
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        if self.paths.is_empty() {
            return Err(Error::Invalid("no paths to back up".into()));
        }
        // A rollback of these paths killed halfway is finished or undone
        // first, so that no snapshot holds half old, half new files.
        // A directory beside them that cannot be listed (no read permission)
        // cannot hold our staging either: said, not fatal.
        self.recovered = match crate::recover_rollbacks(&self.paths) {
            Ok(recovered) => recovered.iter().map(ToString::to_string).collect(),
            Err(e @ Error::Io { .. }) => vec![format!("cannot look for interrupted rollbacks: {e}")],
            Err(e) => return Err(e),
        };
        let mut absolute = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            crate::files::check_top_level(path)?;
            let path = std::path::absolute(path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            absolute.push(path.display().to_string());
        }
        Ok(absolute)
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let out = crate::backup_files_with(writer, &self.paths, &self.options)?;
        let mut warnings = std::mem::take(&mut self.recovered);
        warnings.extend(out.warnings);
        Ok(SourceOutcome {
            root: out.root,
            details: out.details,
            warnings,
        })
    }
}

/// Where a [`StreamSource`]'s bytes come from.
enum Input {
    /// A reader, taken when the backup runs.
    Reader(Option<Box<dyn Read + Send>>),
    /// A command's standard output.
    Command(Vec<String>),
}

/// One stream stored as one file: standard input, any reader, or a
/// command's standard output.
///
/// A command that fails or is killed fails the backup (see `stream`). A
/// reader cannot tell whether whoever writes into it succeeded (a shell
/// pipeline's upstream status is invisible here): prefer a command.
pub struct StreamSource {
    kind: String,
    name: String,
    input: Input,
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("StreamSource");
        out.field("kind", &self.kind).field("name", &self.name);
        if let Input::Command(argv) = &self.input {
            out.field("argv", &crate::stream::redact_argv(argv));
        }
        out.finish_non_exhaustive()
    }
}

impl StreamSource {
    /// Standard input as the file `name`, recorded as kind `stdin`.
    #[must_use]
    pub fn stdin(name: impl Into<String>) -> Self {
        Self::reader(name, std::io::stdin())
    }

    /// `reader` as the file `name`, recorded as kind `stdin`.
    #[must_use]
    pub fn reader(name: impl Into<String>, reader: impl Read + Send + 'static) -> Self {
        Self {
            kind: "stdin".to_owned(),
            name: name.into(),
            input: Input::Reader(Some(Box::new(reader))),
        }
    }

    /// `argv`'s output as the file `name`, recorded as kind `command`.
    #[must_use]
    pub fn command(name: impl Into<String>, argv: Vec<String>) -> Self {
        Self {
            kind: "command".to_owned(),
            name: name.into(),
            input: Input::Command(argv),
        }
    }

    /// Records another kind: a dump piped in from, or made by, `mysqldump`
    /// is a `mysql` snapshot, which `restore --into mysql://…` accepts.
    #[must_use]
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }
}

/// The chunking profile of a dump of a source of `kind`. MariaDB and Redis
/// change rows and keys in place: `rows` (8 KiB). PostgreSQL dumps of
/// updated tables change nearly everywhere, where smaller chunks only cost,
/// and any other stream: `dump` (16 KiB). See format-spec/chunking.md.
fn dump_profile(kind: &str) -> &'static str {
    match kind {
        "mysql" | "redis" => "rows",
        _ => "dump",
    }
}

impl Source for StreamSource {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn default_profile(&self) -> &str {
        dump_profile(&self.kind)
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        crate::stream::check_stream_name(&self.name)?;
        if matches!(&self.input, Input::Command(argv) if argv.is_empty()) {
            return Err(Error::Invalid("no command given".into()));
        }
        Ok(vec![self.name.clone()])
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let out = match &mut self.input {
            Input::Reader(reader) => {
                let reader = reader
                    .take()
                    .ok_or_else(|| Error::Invalid("the stream was already read".into()))?;
                crate::backup_reader(writer, &self.name, reader)?
            }
            Input::Command(argv) => crate::backup_command(writer, &self.name, argv)?,
        };
        Ok(SourceOutcome {
            root: out.root,
            details: out.details,
            warnings: Vec::new(),
        })
    }
}

type Planner = Box<dyn FnOnce() -> Result<DumpPlan> + Send>;

/// A database or Redis source: planned in [`Source::prepare`] (asking the
/// server), then every dump command streamed in (see `dump`).
pub struct DumpSource {
    kind: String,
    planner: Option<Planner>,
    plan: Option<DumpPlan>,
}

impl std::fmt::Debug for DumpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpSource")
            .field("kind", &self.kind)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl DumpSource {
    /// A source that runs an already made plan, recorded as `kind`.
    #[must_use]
    pub fn from_plan(kind: impl Into<String>, plan: DumpPlan) -> Self {
        Self {
            kind: kind.into(),
            planner: None,
            plan: Some(plan),
        }
    }

    fn planned_by(kind: &str, planner: impl FnOnce() -> Result<DumpPlan> + Send + 'static) -> Self {
        Self {
            kind: kind.to_owned(),
            planner: Some(Box::new(planner)),
            plan: None,
        }
    }
}

impl From<MysqlSource> for DumpSource {
    fn from(source: MysqlSource) -> Self {
        Self::planned_by("mysql", move || source.plan())
    }
}

impl From<PostgresSource> for DumpSource {
    fn from(source: PostgresSource) -> Self {
        Self::planned_by("postgres", move || source.plan())
    }
}

impl From<RedisSource> for DumpSource {
    fn from(source: RedisSource) -> Self {
        Self::planned_by("redis", move || source.plan())
    }
}

impl Source for DumpSource {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn default_profile(&self) -> &str {
        dump_profile(&self.kind)
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        if let Some(planner) = self.planner.take() {
            self.plan = Some(planner()?);
        }
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::Invalid("the dump source has no plan".into()))?;
        if plan.commands.is_empty() && plan.paths.is_empty() {
            return Err(Error::Invalid("the source has nothing to dump".into()));
        }
        Ok(plan.stream_names())
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::Invalid("the dump source was not prepared".into()))?;
        let out = crate::backup_dumps(writer, plan)?;
        Ok(SourceOutcome {
            root: out.root,
            details: out.details,
            warnings: out.warnings,
        })
    }
}

/// Every object of an S3 bucket (or prefix) as a tree (see `bucket`).
#[derive(Clone, Debug)]
pub struct BucketSource {
    operator: opendal::Operator,
    location: String,
}

impl BucketSource {
    /// The objects under `operator`'s root; `location` is what the snapshot
    /// records as its path (the bucket URL, without credentials).
    #[must_use]
    pub fn new(operator: opendal::Operator, location: impl Into<String>) -> Self {
        Self {
            operator,
            location: location.into(),
        }
    }
}

impl Source for BucketSource {
    fn kind(&self) -> &str {
        "bucket"
    }

    fn default_profile(&self) -> &str {
        "files"
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        Ok(vec![self.location.clone()])
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Invalid(format!("a bucket source needs a runtime: {e}")))?;
        let out = crate::backup_bucket(writer, &self.operator, &handle)?;
        Ok(SourceOutcome {
            root: out.root,
            details: out.details,
            warnings: out.warnings,
        })
    }
}
