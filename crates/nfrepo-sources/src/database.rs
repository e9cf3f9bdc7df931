//! Restoring database dumps into a server without ever leaving the live
//! database worse: the staged restore.
//!
//! `restore --into mysql://…/DB` and `postgres://…/DB` never write into the
//! live database `DB`. Every restore follows one protocol:
//!
//! 1. **Plan** ([`plan_database_restore`]): refuse the server's own
//!    databases ([`MAINTENANCE_DATABASES`]); look at each target; refuse a
//!    target that holds data unless `force`; find what earlier runs left
//!    behind. A staging database whose creator (recorded in its comment:
//!    host, pid, start time) was a process of this host that is gone is
//!    removed; one of a live process or of another host is never touched
//!    (the first refuses the restore, `RESTORE_IN_PROGRESS`; the second is
//!    reported). Kept-aside `DB__nfrepo_before_*` copies are listed. The
//!    plan names every database the restore will create, replace, keep or
//!    drop, so the caller can print it before anything starts.
//! 2. **Load** into a new database `DB__nfrepo_restore_<id>`, streamed from
//!    the verified reader (a MySQL/MariaDB dump over several connections,
//!    each table's rows spread over them and everything else in dump order:
//!    `database/parallel.rs`; a PostgreSQL dump in one transaction). The client stops at the first error: `mysql`
//!    without `--force` (reading a script on standard input, it stops at the
//!    first failed statement and exits 1; `--abort-source-on-error` only
//!    concerns `source` commands, and `--no-defaults` keeps an option file's
//!    `force` away) and with `--skip-reconnect` (its default reconnects and
//!    carries on after a killed connection), `psql` with
//!    `ON_ERROR_STOP=1` inside one transaction that nfrepo opens with
//!    `BEGIN` and closes with `COMMIT` only after the whole stream has
//!    matched its recorded hashes. (`psql --single-transaction` is not used:
//!    it commits at end of input, so a stream cut short by a killed nfrepo
//!    would be committed.) `mysql` has no such transaction — DDL commits
//!    implicitly, and it executes a last statement cut short at end of
//!    input — so for both servers the rule that matters is: only the nfrepo
//!    process that saw the whole verified stream and the client's exit
//!    status 0 ever switches a staging database in, and a staging database
//!    left over from another run is never switched in, only removed.
//! 3. **Verify** the staged copy: the load succeeded, and every row count
//!    recorded at dump time (`dump.<stream>.rows.<table>`, see
//!    [`expected_rows`]) equals `SELECT COUNT(*)` in the staging copy.
//!    Snapshots without such facts are verified by the load's success only.
//!    For a MySQL/MariaDB point-in-time restore
//!    ([`DatabaseRestoreOptions::replay`]) the archived binlogs are then
//!    replayed into the staging copy (`binlog/replay.rs`, stage `Replay`):
//!    the live database only ever sees the finished result.
//! 4. **Switch**, per server:
//!    - MariaDB/MySQL (there is no `RENAME DATABASE`): the live database's
//!      triggers (MariaDB refuses to move a table with triggers to another
//!      database) and views (one may bear the name of a staged table) are
//!      dropped, then ONE `RENAME TABLE`
//!      statement — atomic in MariaDB — moves every table of `DB` into a new
//!      `DB__nfrepo_before_<time>` and every staged table into `DB`; then
//!      the old views, routines and events of `DB` are dropped and the
//!      staged ones recreated in `DB` from `SHOW CREATE` (views in
//!      dependency order, under each object's own `sql_mode`), and the
//!      staged triggers are recreated on the new tables. Events were
//!      disabled in the staging copy after the load (so they never fire
//!      there) and get their status back in `DB`. The old views, routines,
//!      events (disabled) and triggers are then recreated in the
//!      kept-aside database, so it is a complete copy of what was live. If
//!      any step of the switch fails, the steps done are undone (the
//!      reverse `RENAME TABLE`, the old objects recreated) and the error
//!      says whether that succeeded. Before the live database is touched, a
//!      journal of the switch (every definition it drops and creates, and a
//!      probe that tells whether the rename happened) is written into the
//!      staging database in one transaction; the next restore into the
//!      server finishes a switch whose process was killed midway, back to
//!      the old database before the rename and forward after it. Of
//!      several restores finding one such switch, the one that claims it
//!      (a one-row table in the staging database) finishes it; the others
//!      leave it alone, and one into that very database is refused
//!      (`RESTORE_CONFLICT`) until it is finished. Writers are not paused: stop the
//!      application first; a write that lands between the load and the
//!      switch goes to the kept-aside copy.
//!    - PostgreSQL: sessions connected to `DB` block the switch. nfrepo
//!      never kills them silently: the restore fails (`RESTORE_CONFLICT`,
//!      `SESSIONS_BLOCKING`) naming each session (pid, user, application,
//!      address), unless `terminate_sessions` is set, in which case
//!      connections to `DB` are disabled, its sessions terminated, and the
//!      setting given back afterwards (if nfrepo is killed in between,
//!      `ALTER DATABASE DB ALLOW_CONNECTIONS true` gives it back). Then one transaction renames `DB` to
//!      `DB__nfrepo_before_<time>` and the staging database to `DB`
//!      (`ALTER DATABASE … RENAME` is transactional): either both happen or
//!      neither.
//!
//!    The kept-aside `DB__nfrepo_before_<time>` stays until the operator
//!    drops it, or is dropped right after a successful switch when
//!    `drop_old` is set.
//!
//! A failure at any step before the switch leaves the live database exactly
//! as it was and removes the staging copy; the error
//! ([`Error::DatabaseRestore`]) says what failed and what state the live
//! database is in. `force` means "replace after verification", never "drop
//! first". Every dump of a multi-database restore is staged and verified
//! before the first switch.

mod items;
mod load;
mod mysql;
mod parallel;
mod plan;
mod postgres;

pub use items::{database_restore_items, dump_names};
pub use plan::plan_database_restore;

use std::collections::BTreeMap;
use std::sync::Arc;

use nfrepo_engine::Reader;
use nfrepo_format::Node;

use crate::{Error, MysqlTarget, PostgresTarget, Result, binlog};
use plan::creator_comment;

/// Databases that belong to the server itself: never dropped, renamed or
/// replaced by a restore, whatever the flags.
pub const MAINTENANCE_DATABASES: &[&str] = &[
    "postgres",
    "template0",
    "template1",
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
];

/// What a staging database's name holds between the live name and its id.
pub const STAGING_MARK: &str = "__nfrepo_restore_";
/// What a kept-aside copy's name holds between the live name and its time.
pub const BEFORE_MARK: &str = "__nfrepo_before_";
/// The longest database name both servers accept (PostgreSQL: 63 bytes).
const MAX_NAME: usize = 63;
/// The comment every staging database carries, before its creator.
const COMMENT_PREFIX: &str = "nfrepo staged restore";

/// A server to restore into.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum DatabaseTarget {
    /// MySQL or MariaDB, through `mysql`.
    Mysql(MysqlTarget),
    /// PostgreSQL, through `psql`.
    Postgres(PostgresTarget),
}

/// How a database restore may treat the live databases.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DatabaseRestoreOptions {
    /// Replace a target that holds data, after the staged copy is verified.
    pub force: bool,
    /// Drop the kept-aside `DB__nfrepo_before_<time>` after a successful switch.
    pub drop_old: bool,
    /// PostgreSQL: terminate the sessions connected to the live database
    /// instead of failing with `SESSIONS_BLOCKING`.
    pub terminate_sessions: bool,
    /// MySQL/MariaDB: connections that load a dump's rows in parallel
    /// (`database/parallel.rs`); 0 means one per core, at most
    /// [`MAX_LOAD_JOBS`]. PostgreSQL loads in one transaction, so on one
    /// connection.
    pub jobs: usize,
    /// MySQL/MariaDB point-in-time restore: the binlogs replayed into each
    /// staging database after its dump is loaded and verified, before the
    /// switch (`binlog/replay.rs`).
    pub replay: Option<crate::BinlogReplay>,
    /// Progress: phase `loading` (items: dumps staged and verified, bytes:
    /// dump bytes piped, out of their sum), then `switching` (items:
    /// databases switched in).
    pub work: Option<Arc<nfrepo_engine::Work>>,
}

/// The most connections a restore loads one dump over by default.
pub const MAX_LOAD_JOBS: usize = 4;

impl DatabaseRestoreOptions {
    /// The connections a MySQL/MariaDB load uses.
    #[must_use]
    pub fn load_jobs(&self) -> usize {
        match self.jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_LOAD_JOBS)),
            n => n,
        }
    }
}

/// One dump to restore.
#[derive(Clone, Debug)]
pub struct DatabaseRestoreItem {
    /// The dump's node in the snapshot.
    pub node: Node,
    /// The dump's stream name (`app.sql`), which its facts are keyed by.
    pub stream: String,
    /// The live database to restore into.
    pub database: String,
    /// Row counts recorded at dump time, by table ([`expected_rows`]).
    pub expected_rows: BTreeMap<String, u64>,
}

/// What the restore will do to one live database.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PlannedDatabase {
    /// The item restored.
    pub item: DatabaseRestoreItem,
    /// The staging database the dump is loaded into.
    pub staging: String,
    /// Where the live database goes when it is replaced (kept unless `drop_old`).
    pub before: Option<String>,
    /// Whether the live database exists now.
    pub live_exists: bool,
    /// Tables, views, routines, triggers and events in it now.
    pub live_objects: u64,
}

/// Something an earlier run left on the server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Leftover {
    /// The database.
    pub database: String,
    /// What it is and what this run does about it.
    pub note: String,
    /// Whether this run removes it (before loading anything).
    pub remove: bool,
}

/// The computed work of a database restore; [`restore_databases`] runs it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DatabaseRestorePlan {
    /// The server.
    pub target: DatabaseTarget,
    /// Per live database.
    pub databases: Vec<PlannedDatabase>,
    /// What earlier runs left.
    pub leftovers: Vec<Leftover>,
    /// The options.
    pub options: DatabaseRestoreOptions,
}

impl DatabaseRestorePlan {
    /// One line per database the restore touches, for printing before it starts.
    #[must_use]
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for leftover in &self.leftovers {
            lines.push(format!("{}: {}", leftover.database, leftover.note));
        }
        for db in &self.databases {
            lines.push(format!(
                "{}: load {} into new database {}, verify it, then {}",
                db.item.database,
                db.item.stream,
                db.staging,
                match (&db.before, self.options.drop_old) {
                    (Some(before), false) => format!("switch it in; the current database is kept as {before}"),
                    (Some(before), true) => {
                        format!("switch it in; the current database becomes {before} and is then dropped (--drop-old)")
                    }
                    (None, _) if db.live_exists => "move its tables into the existing empty database".to_owned(),
                    (None, _) => "make it the new database".to_owned(),
                }
            ));
        }
        lines
    }
}

/// What a database restore did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DatabaseRestoreReport {
    /// The live database written.
    pub database: String,
    /// Dump bytes piped into the client.
    pub bytes: u64,
    /// Whether a database that held data was replaced.
    pub replaced: bool,
    /// Where the old content is kept (`None` if there was none, or it was dropped).
    pub kept_old: Option<String>,
    /// Tables whose row counts were checked against the dump's facts.
    pub tables_verified: usize,
    /// The binlog files replayed after the dump (point-in-time restore).
    pub replayed: Vec<String>,
    /// Problems that left the live database correct but something else
    /// incomplete (an old object that could not be recreated in the
    /// kept-aside copy, a kept-aside copy that could not be dropped).
    pub warnings: Vec<String>,
}

/// The row counts recorded for `stream` among a snapshot's facts
/// (`dump.<stream>.rows.<table>` = decimal count).
///
/// # Errors
/// [`Error::Invalid`] for a count that is not a decimal number.
pub fn expected_rows(facts: &[(String, String)], stream: &str) -> Result<BTreeMap<String, u64>> {
    let prefix = format!("dump.{stream}.rows.");
    let mut rows = BTreeMap::new();
    for (key, value) in facts {
        if let Some(table) = key.strip_prefix(&prefix) {
            let count = value
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::Invalid(format!("snapshot fact {key} = {value:?} is not a row count")))?;
            rows.insert(table.to_owned(), count);
        }
    }
    Ok(rows)
}

/// The stage of a staged restore that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreStage {
    /// Before anything was written.
    Prepare,
    /// Loading the dump into the staging database.
    Load,
    /// Comparing the staging copy with the dump's facts.
    Verify,
    /// Replaying binlogs into the staging database (point-in-time restore).
    Replay,
    /// Sessions hold the live database.
    Sessions,
    /// Switching the staging copy in.
    Switch,
}

impl RestoreStage {
    /// The finer error code of a failure at this stage.
    #[must_use]
    pub const fn detail_code(self) -> &'static str {
        match self {
            Self::Prepare => "PREPARE_FAILED",
            Self::Load => "LOAD_FAILED",
            Self::Verify => "VERIFY_FAILED",
            Self::Replay => "REPLAY_FAILED",
            Self::Sessions => "SESSIONS_BLOCKING",
            Self::Switch => "SWITCH_FAILED",
        }
    }
}

impl std::fmt::Display for RestoreStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Prepare => "while preparing the staging database",
            Self::Load => "while loading the dump into the staging database",
            Self::Verify => "verifying the staged copy",
            Self::Replay => "while replaying the binlogs into the staging database",
            Self::Sessions => "before the switch",
            Self::Switch => "while switching the staged copy in",
        })
    }
}

/// What a live database looks like now.
pub(crate) struct LiveState {
    pub(crate) exists: bool,
    pub(crate) objects: u64,
}

/// The client a dump is piped into, and what nfrepo writes around the dump.
pub(crate) struct LoadCommand {
    pub(crate) argv: Vec<String>,
    pub(crate) auth: crate::ChildAuth,
    /// Written before the dump.
    pub(crate) prologue: &'static [u8],
    /// Written only after the whole dump matched its recorded hashes.
    pub(crate) epilogue: &'static [u8],
}

/// What the load left that the switch needs (MariaDB: events to enable again).
#[derive(Default)]
pub(crate) struct Staged {
    pub(crate) enable_events: Vec<String>,
}

/// One switch to perform.
pub(crate) struct Switch<'a> {
    pub(crate) live: &'a str,
    pub(crate) staging: &'a str,
    pub(crate) before: Option<&'a str>,
    pub(crate) live_exists: bool,
    pub(crate) terminate_sessions: bool,
    pub(crate) staged: &'a Staged,
}

/// A switch that failed: whether the live database is as it was.
pub(crate) struct SwitchError {
    pub(crate) live_unchanged: bool,
    pub(crate) message: String,
}

impl DatabaseTarget {
    fn is_maintenance(name: &str) -> bool {
        MAINTENANCE_DATABASES.iter().any(|m| m.eq_ignore_ascii_case(name))
    }

    fn databases(&self) -> Result<Vec<(String, String)>> {
        match self {
            Self::Mysql(t) => t.databases(),
            Self::Postgres(t) => t.databases(),
        }
    }

    fn live_state(&self, db: &str) -> Result<LiveState> {
        match self {
            Self::Mysql(t) => t.live_state(db),
            Self::Postgres(t) => t.live_state(db),
        }
    }

    fn create_staging(&self, staging: &str, live: Option<&str>, comment: &str) -> Result<()> {
        match self {
            Self::Mysql(t) => t.create_staging(staging, live, comment),
            Self::Postgres(t) => t.create_staging(staging, live, comment),
        }
    }

    fn load_command(&self, staging: &str) -> Result<LoadCommand> {
        match self {
            Self::Mysql(t) => t.load_command(staging),
            Self::Postgres(t) => t.load_command(staging),
        }
    }

    /// The client of a parallel load, where the server takes one.
    fn parallel_load_command(&self, staging: &str) -> Option<Result<LoadCommand>> {
        match self {
            Self::Mysql(t) => Some(t.parallel_load_command(staging)),
            Self::Postgres(_) => None,
        }
    }

    fn after_load(&self, staging: &str) -> Result<Staged> {
        match self {
            Self::Mysql(t) => t.after_load(staging),
            Self::Postgres(_) => Ok(Staged::default()),
        }
    }

    fn count_rows(&self, db: &str, table: &str) -> Result<u64> {
        match self {
            Self::Mysql(t) => t.count_rows(db, table),
            Self::Postgres(t) => t.count_rows(db, table),
        }
    }

    fn blocking_sessions(&self, db: &str) -> Result<Vec<String>> {
        match self {
            Self::Mysql(_) => Ok(Vec::new()),
            Self::Postgres(t) => t.sessions(db),
        }
    }

    fn switch(&self, switch: &Switch<'_>) -> std::result::Result<Vec<String>, SwitchError> {
        match self {
            Self::Mysql(t) => t.switch(switch),
            Self::Postgres(t) => t.switch(switch),
        }
    }

    /// Finishes a switch that a killed process left half done in `staging`
    /// (MariaDB only: PostgreSQL's switch is one transaction).
    fn recover_switch(&self, staging: &str) -> Result<mysql::Recovery> {
        match self {
            Self::Mysql(t) => t.recover_switch(staging),
            Self::Postgres(_) => Ok(mysql::Recovery::Nothing),
        }
    }

    fn drop_database(&self, db: &str) -> Result<()> {
        match self {
            Self::Mysql(t) => t.drop_database(db),
            Self::Postgres(t) => t.drop_database(db),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::RestoreCommandFailed(format!("a restore worker failed: {e}")))?
}

/// Runs `plan`: stages and verifies every dump, then switches each in.
///
/// # Errors
/// [`Error::DatabaseRestore`], naming the stage that failed and the state of
/// the live database (unchanged, unless the error says otherwise); its
/// source is the cause (a client's error, an engine error for a missing or
/// corrupted chunk, a row count that differs).
pub async fn restore_databases(reader: &Reader, plan: &DatabaseRestorePlan) -> Result<Vec<DatabaseRestoreReport>> {
    let target = &plan.target;
    let replay = match (&plan.options.replay, target) {
        (Some(replay), DatabaseTarget::Mysql(_)) => {
            let dir = binlog::materialize(reader, replay)
                .await
                .map_err(|e| Error::DatabaseRestore {
                    database: plan
                        .databases
                        .first()
                        .map(|d| d.item.database.clone())
                        .unwrap_or_default(),
                    stage: RestoreStage::Prepare,
                    live: "the live database is unchanged".into(),
                    source: Box::new(e),
                })?;
            Some((replay.clone(), Arc::new(dir)))
        }
        (Some(_), DatabaseTarget::Postgres(_)) => {
            return Err(Error::Invalid("binlog replay is for MySQL/MariaDB targets".into()));
        }
        (None, _) => None,
    };
    let work = plan.options.work.as_deref();
    if let Some(work) = work {
        let bytes = plan.databases.iter().map(|d| d.item.node.size()).sum();
        work.phase("loading", plan.databases.len() as u64, bytes);
    }
    let mut staged = Vec::with_capacity(plan.databases.len());
    for db in &plan.databases {
        match stage(reader, target, db, plan.options.load_jobs(), replay.as_ref(), work).await {
            Ok(done) => {
                staged.push(done);
                if let Some(work) = work {
                    work.advance(1, 0);
                }
            }
            Err((stage, source)) => {
                let mut cleanup = vec![db.staging.clone()];
                cleanup.extend(plan.databases.iter().take(staged.len()).map(|d| d.staging.clone()));
                let live = drop_all(target, cleanup, "the live database is unchanged").await;
                return Err(Error::DatabaseRestore {
                    database: db.item.database.clone(),
                    stage,
                    live,
                    source: Box::new(source),
                });
            }
        }
    }
    if let Some(work) = work {
        work.phase("switching", plan.databases.len() as u64, 0);
    }
    let mut reports = Vec::with_capacity(staged.len());
    for (index, (db, (bytes, tables_verified, state))) in plan.databases.iter().zip(staged).enumerate() {
        let t = target.clone();
        let planned = db.clone();
        let options = plan.options.clone();
        let result = blocking(move || Ok(switch_one(&t, &planned, &options, &state))).await?;
        if let (Ok(_), Some(work)) = (&result, work) {
            work.advance(1, 0);
        }
        match result {
            Ok(warnings) => reports.push(DatabaseRestoreReport {
                database: db.item.database.clone(),
                bytes,
                replaced: db.live_objects > 0,
                kept_old: db.before.clone().filter(|_| !plan.options.drop_old),
                tables_verified,
                replayed: replay.as_ref().map(|(r, _)| r.file_names()).unwrap_or_default(),
                warnings,
            }),
            Err((stage, live_unchanged, source)) => {
                let rest: Vec<String> = plan.databases.iter().skip(index).map(|d| d.staging.clone()).collect();
                let mut live = if live_unchanged {
                    drop_all(target, rest, "the live database is unchanged").await
                } else {
                    format!(
                        "the live database may be incomplete: check it; the staging copy {} is kept",
                        db.staging
                    )
                };
                if !reports.is_empty() {
                    let done: Vec<String> = reports.iter().map(|r| r.database.clone()).collect();
                    live.push_str(&format!("; already replaced by this restore: {}", done.join(", ")));
                }
                return Err(Error::DatabaseRestore {
                    database: db.item.database.clone(),
                    stage,
                    live,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(reports)
}

type StageFailure = (RestoreStage, Error);

/// Creates, loads and verifies one staging database.
async fn stage(
    reader: &Reader,
    target: &DatabaseTarget,
    db: &PlannedDatabase,
    jobs: usize,
    replay: Option<&(crate::BinlogReplay, Arc<binlog::ReplayDir>)>,
    work: Option<&nfrepo_engine::Work>,
) -> std::result::Result<(u64, usize, Staged), StageFailure> {
    let comment = creator_comment(&db.item.database);
    {
        let t = target.clone();
        let staging = db.staging.clone();
        let live = db.live_exists.then(|| db.item.database.clone());
        blocking(move || t.create_staging(&staging, live.as_deref(), &comment))
            .await
            .map_err(|e| (RestoreStage::Prepare, e))?;
    }
    let bytes = match target.parallel_load_command(&db.staging) {
        Some(command) if jobs > 1 => {
            let command = command.map_err(|e| (RestoreStage::Load, e))?;
            parallel::load(reader, &db.item.node, &command, &db.staging, jobs, work).await?
        }
        _ => {
            let command = target.load_command(&db.staging).map_err(|e| (RestoreStage::Load, e))?;
            load::pipe(reader, &db.item.node, &command, &db.staging, work).await?
        }
    };
    let t = target.clone();
    let staging = db.staging.clone();
    let expected = db.item.expected_rows.clone();
    let done = blocking(move || {
        let staged = t.after_load(&staging)?;
        Ok((staged, verify(&t, &staging, &expected)))
    })
    .await
    .map_err(|e| (RestoreStage::Load, e))
    .and_then(|(staged, verified)| {
        let tables = verified.map_err(|e| (RestoreStage::Verify, e))?;
        Ok((bytes, tables, staged))
    })?;
    if let (Some((replay, dir)), DatabaseTarget::Mysql(mysql)) = (replay, target) {
        let client = mysql.client().map_err(|e| (RestoreStage::Replay, e))?;
        let (replay, dir) = (replay.clone(), Arc::clone(dir));
        let dumped = db
            .item
            .stream
            .strip_suffix(".sql")
            .unwrap_or(&db.item.stream)
            .to_owned();
        let staging = db.staging.clone();
        blocking(move || binlog::replay_into(&replay, dir.path(), client, &dumped, &staging))
            .await
            .map_err(|e| (RestoreStage::Replay, e))?;
    }
    Ok(done)
}

/// Compares every recorded row count with the staging copy.
fn verify(target: &DatabaseTarget, staging: &str, expected: &BTreeMap<String, u64>) -> Result<usize> {
    let mut mismatches = Vec::new();
    for (table, want) in expected {
        let got = target.count_rows(staging, table)?;
        if got != *want {
            mismatches.push(format!("{table}: {got} rows loaded, {want} dumped"));
        }
    }
    if mismatches.is_empty() {
        Ok(expected.len())
    } else {
        Err(Error::RowCountMismatch(mismatches))
    }
}

fn switch_one(
    target: &DatabaseTarget,
    db: &PlannedDatabase,
    options: &DatabaseRestoreOptions,
    staged: &Staged,
) -> std::result::Result<Vec<String>, (RestoreStage, bool, Error)> {
    let live = db.item.database.as_str();
    if db.live_exists {
        let sessions = target
            .blocking_sessions(live)
            .map_err(|e| (RestoreStage::Sessions, true, e))?;
        if !sessions.is_empty() && !options.terminate_sessions {
            return Err((RestoreStage::Sessions, true, Error::SessionsBlocking(sessions)));
        }
    }
    let switch = Switch {
        live,
        staging: &db.staging,
        before: db.before.as_deref(),
        live_exists: db.live_exists,
        terminate_sessions: options.terminate_sessions,
        staged,
    };
    let mut warnings = target.switch(&switch).map_err(|e| {
        (
            RestoreStage::Switch,
            e.live_unchanged,
            Error::RestoreCommandFailed(e.message),
        )
    })?;
    if options.drop_old
        && let Some(before) = &db.before
        && let Err(e) = target.drop_database(before)
    {
        warnings.push(format!("the old database is kept as {before}: dropping it failed: {e}"));
    }
    Ok(warnings)
}

/// Drops the staging databases; returns what to tell about the live ones.
async fn drop_all(target: &DatabaseTarget, databases: Vec<String>, live: &str) -> String {
    let t = target.clone();
    let names = databases.clone();
    let failed = blocking(move || {
        Ok(names
            .iter()
            .filter_map(|db| t.drop_database(db).err().map(|e| format!("{db} ({e})")))
            .collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|e| vec![e.to_string()]);
    if failed.is_empty() {
        format!("{live}; the staging copy was removed")
    } else {
        format!(
            "{live}; removing the staging copy failed: {} (the next restore removes it)",
            failed.join(", ")
        )
    }
}

/// Runs `script` through a client on standard input; returns its standard output. Blocks.
pub(crate) fn run_script(argv: &[String], auth: &crate::ChildAuth, script: &str) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no client command".into()))?;
    let mut child = crate::child::command(program, auth)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::RestoreCommandFailed(format!("cannot start {program:?}: {e}")))?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(script.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| Error::RestoreCommandFailed(format!("waiting for {program:?}: {e}")))?;
    if !output.status.success() || !matches!(written, Some(Ok(()))) {
        return Err(Error::RestoreCommandFailed(format!(
            "{program:?} failed: {}",
            client_error(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The line of a client's standard error that says what failed: the first
/// naming an error (psql follows it with the statement and a caret), else the last.
pub(crate) fn client_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .find(|l| l.contains("ERROR") || l.contains("FATAL") || l.contains("error:"))
        .map_or_else(|| crate::dump::last_line(stderr), |l| l.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn row_facts_are_read_for_one_stream_only() {
        let facts = vec![
            ("dump.app.sql.rows.t".to_owned(), "5001".to_owned()),
            ("dump.app.sql.rows.public.u".to_owned(), "7".to_owned()),
            ("dump.app.sql.sha256".to_owned(), "ab".to_owned()),
            ("dump.other.sql.rows.t".to_owned(), "1".to_owned()),
        ];
        let rows = expected_rows(&facts, "app.sql").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows["t"], 5001);
        assert_eq!(rows["public.u"], 7);
        assert!(expected_rows(&facts, "none.sql").unwrap().is_empty());
        let bad = vec![("dump.app.sql.rows.t".to_owned(), "many".to_owned())];
        assert!(matches!(expected_rows(&bad, "app.sql"), Err(Error::Invalid(_))));
    }

    #[test]
    fn client_errors_name_the_failing_statement_not_the_caret() {
        let psql = b"psql:<stdin>:3: ERROR:  relation \"no_such_table\" does not exist\nLINE 1: INSERT INTO no_such_table VALUES (1);\n                    ^\n";
        assert_eq!(
            client_error(psql),
            "psql:<stdin>:3: ERROR:  relation \"no_such_table\" does not exist"
        );
        assert_eq!(client_error(b"something odd\n"), "something odd");
    }
}
