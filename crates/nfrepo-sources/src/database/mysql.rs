//! The staged restore on MariaDB/MySQL: one `RENAME TABLE` moves the live
//! tables aside and the staged ones in; views, routines, triggers and
//! events are recreated from `SHOW CREATE` (see the parent module).

use super::{LiveState, LoadCommand, Staged, Switch, SwitchError, run_script};
use crate::{Error, MysqlTarget, Result};

/// A MariaDB identifier.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MariaDB string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// One field of `mysql --batch` output, unescaped.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(unescape).collect())
        .collect()
}

/// A view, routine, trigger or event, as `SHOW CREATE` gives it.
#[derive(Clone, Debug)]
struct Definition {
    /// `VIEW`, `PROCEDURE`, `FUNCTION`, `TRIGGER` or `EVENT`.
    kind: &'static str,
    name: String,
    sql_mode: Option<String>,
    time_zone: Option<String>,
    create: String,
}

impl Definition {
    fn drop_sql(&self, db: &str) -> String {
        format!("DROP {} IF EXISTS {}.{};\n", self.kind, ident(db), ident(&self.name))
    }
}

/// The objects of one database.
#[derive(Debug, Default)]
struct Objects {
    /// Base tables and sequences: what `RENAME TABLE` moves.
    tables: Vec<String>,
    views: Vec<Definition>,
    routines: Vec<Definition>,
    triggers: Vec<Definition>,
    events: Vec<Definition>,
}

impl Objects {
    fn non_tables(&self) -> impl Iterator<Item = &Definition> {
        self.views.iter().chain(&self.routines).chain(&self.events)
    }
}

/// The table in the staging database that journals a switch.
///
/// Written in one transaction before the live database is touched: the
/// live database's and the staged copy's views, routines, triggers and
/// events as `SHOW CREATE` gave them, the kept-aside copy's name, and a
/// probe (one table the `RENAME TABLE` moves, at its destination) that
/// tells afterwards whether the rename happened. A process that returns
/// from the switch, successful or not, marks it done; a journal found
/// unfinished in the staging database of a dead process is a switch killed
/// midway, which the next restore finishes ([`MysqlTarget::recover_switch`]).
const JOURNAL: &str = "__nfrepo_switch_journal";

/// The table in a staging database whose one row names the process
/// finishing the switch journaled there.
///
/// Every restore into a server first finishes the switches that dead
/// processes left; two restores started together would otherwise both
/// replay the same journal, and the second would fail on objects the
/// first had already created. The row is taken with `INSERT IGNORE` on a
/// one-row primary key, which only one process can win; a claimant that
/// died in turn (same host, pid gone, as for the journal's own writer) is
/// replaced by a compare-and-set `UPDATE` on its nonce, which again only
/// one process can win.
const CLAIM: &str = "__nfrepo_switch_claim";

/// What a restore did with the switch a dead process left in a staging
/// database.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Nothing to finish: no journal, or a finished one.
    Nothing,
    /// Finished here; what was done.
    Finished(String),
    /// A live process of this host is finishing it (its pid).
    Claimed(u32),
    /// The staging database is gone: another process finished the switch
    /// and removed it.
    Gone,
}

/// The journal being written.
struct JournalRef<'a> {
    live: &'a str,
    before: Option<&'a str>,
    probe: Option<(String, String)>,
    enable: &'a [String],
    old: &'a Objects,
    staged: &'a Objects,
}

/// A journal read back.
#[derive(Default)]
struct Journal {
    live: String,
    before: Option<String>,
    probe: Option<(String, String)>,
    enable: Vec<String>,
    old: Objects,
    staged: Objects,
    done: bool,
}

/// One table the switch's `RENAME TABLE` moves, at its destination, which
/// exists there before the rename only if it does after: a table of the
/// live database in the fresh kept-aside copy, or else (the live database
/// then has no tables) a staged table in the live database.
fn probe(sw: &Switch<'_>, staged: &Objects, old: &Objects) -> Option<(String, String)> {
    match (sw.before, old.tables.first()) {
        (Some(before), Some(table)) => Some((before.to_owned(), table.clone())),
        _ => staged.tables.first().map(|t| (sw.live.to_owned(), t.clone())),
    }
}

/// Marks the journal in `staging` finished.
fn journal_done_sql(staging: &str) -> String {
    format!(
        "INSERT INTO {}.{} (role, kind, name) VALUES ('meta', 'done', '');",
        ident(staging),
        ident(JOURNAL)
    )
}

impl MysqlTarget {
    /// Runs `script` (in `db`, if given), stopping at the first error; returns
    /// its rows. Blocks.
    fn admin(&self, db: Option<&str>, script: &str) -> Result<String> {
        let (mut argv, auth) = self.client()?;
        argv.extend([
            "--batch".into(),
            "--skip-column-names".into(),
            "--skip-reconnect".into(),
        ]);
        argv.extend(db.map(str::to_owned));
        run_script(&argv, &auth, script)
    }

    /// Every database with its comment.
    pub(super) fn databases(&self) -> Result<Vec<(String, String)>> {
        // MySQL (as opposed to MariaDB 10.5+) has no database comments: its
        // staging databases are then reported, never removed automatically.
        let out = self
            .admin(
                None,
                "SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA;",
            )
            .or_else(|_| self.admin(None, "SELECT SCHEMA_NAME, '' FROM information_schema.SCHEMATA;"))?;
        Ok(rows(&out)
            .into_iter()
            .map(|mut r| {
                let comment = if r.len() > 1 { r.swap_remove(1) } else { String::new() };
                (r.swap_remove(0), comment)
            })
            .collect())
    }

    pub(super) fn live_state(&self, db: &str) -> Result<LiveState> {
        let l = literal(db);
        let out = self.admin(
            None,
            &format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {l}), \
                 (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {l}) \
                 + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {l}) \
                 + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {l}) \
                 + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {l});"
            ),
        )?;
        let fields: Vec<u64> = out.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        match fields.as_slice() {
            [exists, objects] => Ok(LiveState {
                exists: *exists > 0,
                objects: *objects,
            }),
            _ => Err(Error::RestoreCommandFailed(format!(
                "unexpected answer from mysql: {:?}",
                out.trim()
            ))),
        }
    }

    /// `CHARACTER SET … COLLATE …` of an existing database.
    fn charset_of(&self, db: &str) -> Result<String> {
        let out = self.admin(
            None,
            &format!(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME = {};",
                literal(db)
            ),
        )?;
        Ok(match rows(&out).first().map(Vec::as_slice) {
            Some([charset, collation]) => format!(" CHARACTER SET {charset} COLLATE {collation}"),
            _ => String::new(),
        })
    }

    pub(super) fn create_staging(&self, staging: &str, live: Option<&str>, comment: &str) -> Result<()> {
        let charset = match live {
            Some(live) => self.charset_of(live)?,
            None => String::new(),
        };
        self.create_database(&format!("{}{charset}", ident(staging)), comment)
    }

    /// `CREATE DATABASE spec COMMENT comment`, without the comment on a
    /// server that has none (MySQL).
    fn create_database(&self, spec: &str, comment: &str) -> Result<()> {
        match self.admin(None, &format!("CREATE DATABASE {spec} COMMENT {};", literal(comment))) {
            Err(Error::RestoreCommandFailed(e)) if e.contains("syntax") => {
                self.admin(None, &format!("CREATE DATABASE {spec};"))
            }
            other => other,
        }
        .map(drop)
    }

    /// `mysql` stops at the first error by default (`--no-defaults` keeps any
    /// option file's `force` away); `--skip-reconnect` makes a killed
    /// connection an error instead of a new session that carries on.
    pub(super) fn load_command(&self, staging: &str) -> Result<LoadCommand> {
        let (mut argv, auth) = self.client()?;
        argv.extend(["--skip-reconnect".into(), staging.to_owned()]);
        Ok(LoadCommand {
            argv,
            auth,
            prologue: b"",
            epilogue: b"",
        })
    }

    /// A client of a parallel load: it also echoes the load's markers
    /// (`--batch --skip-column-names`) as each runs (`--unbuffered`).
    pub(super) fn parallel_load_command(&self, staging: &str) -> Result<LoadCommand> {
        let (mut argv, auth) = self.client()?;
        argv.extend(
            [
                "--batch",
                "--skip-column-names",
                "--unbuffered",
                "--skip-reconnect",
                staging,
            ]
            .map(str::to_owned),
        );
        Ok(LoadCommand {
            argv,
            auth,
            prologue: b"",
            epilogue: b"",
        })
    }

    /// Disables the staged events, so that none fires in the staging copy;
    /// returns those to enable again after the switch.
    pub(super) fn after_load(&self, staging: &str) -> Result<Staged> {
        let out = self.admin(
            None,
            &format!(
                "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} AND STATUS = 'ENABLED';",
                literal(staging)
            ),
        )?;
        let enable_events: Vec<String> = rows(&out).into_iter().filter_map(|mut r| r.pop()).collect();
        let script: String = enable_events
            .iter()
            .map(|e| format!("ALTER EVENT {}.{} DISABLE;\n", ident(staging), ident(e)))
            .collect();
        if !script.is_empty() {
            self.admin(None, &script)?;
        }
        Ok(Staged { enable_events })
    }

    pub(super) fn count_rows(&self, db: &str, table: &str) -> Result<u64> {
        let out = self.admin(None, &format!("SELECT COUNT(*) FROM {}.{};", ident(db), ident(table)))?;
        out.trim()
            .parse()
            .map_err(|_| Error::RestoreCommandFailed(format!("unexpected answer from mysql: {:?}", out.trim())))
    }

    pub(super) fn drop_database(&self, db: &str) -> Result<()> {
        self.admin(None, &format!("DROP DATABASE IF EXISTS {};", ident(db)))?;
        Ok(())
    }

    /// Lists the objects of `db` and reads their definitions.
    fn objects(&self, db: &str) -> Result<Objects> {
        let l = literal(db);
        let out = self.admin(
            None,
            &format!(
                "SELECT 'T', TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {l};\n\
                 SELECT 'R', ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {l};\n\
                 SELECT 'G', TRIGGER_NAME, '' FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {l} \
                 ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER;\n\
                 SELECT 'E', EVENT_NAME, '' FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {l};\n"
            ),
        )?;
        let mut objects = Objects::default();
        let mut wanted: Vec<(&'static str, String)> = Vec::new();
        for row in rows(&out) {
            let [what, name, detail] = row.as_slice() else {
                return Err(Error::RestoreCommandFailed(format!(
                    "unexpected answer from mysql: {row:?}"
                )));
            };
            match (what.as_str(), detail.as_str()) {
                ("T", "VIEW") => wanted.push(("VIEW", name.clone())),
                ("T", _) => objects.tables.push(name.clone()),
                ("R", "FUNCTION") => wanted.push(("FUNCTION", name.clone())),
                ("R", _) => wanted.push(("PROCEDURE", name.clone())),
                ("G", _) => wanted.push(("TRIGGER", name.clone())),
                _ => wanted.push(("EVENT", name.clone())),
            }
        }
        if wanted.is_empty() {
            return Ok(objects);
        }
        let script: String = wanted
            .iter()
            .map(|(kind, name)| format!("SHOW CREATE {kind} {};\n", ident(name)))
            .collect();
        let out = self.admin(Some(db), &script)?;
        let answers = rows(&out);
        if answers.len() != wanted.len() {
            return Err(Error::RestoreCommandFailed(format!(
                "SHOW CREATE in {db} answered {} rows for {} objects",
                answers.len(),
                wanted.len()
            )));
        }
        for ((kind, name), row) in wanted.into_iter().zip(answers) {
            let field = |i: usize| row.get(i).cloned().filter(|v| v != "NULL");
            let (sql_mode, time_zone, create) = match kind {
                "VIEW" => (None, None, field(1)),
                "EVENT" => (field(1), field(2), field(3)),
                _ => (field(1), None, field(2)),
            };
            let create = create.ok_or_else(|| {
                Error::RestoreCommandFailed(format!(
                    "cannot read the definition of {kind} {db}.{name} (missing privilege?)"
                ))
            })?;
            let definition = Definition {
                kind,
                name,
                sql_mode,
                time_zone,
                create,
            };
            match kind {
                "VIEW" => objects.views.push(definition),
                "TRIGGER" => objects.triggers.push(definition),
                "EVENT" => objects.events.push(definition),
                _ => objects.routines.push(definition),
            }
        }
        Ok(objects)
    }

    /// Creates `definition` in `db`, under its own `sql_mode` and time zone.
    fn create_in(&self, db: &str, definition: &Definition) -> Result<()> {
        let mut script = String::new();
        if let Some(mode) = &definition.sql_mode {
            script.push_str(&format!("SET SESSION sql_mode = {};\n", literal(mode)));
        }
        if let Some(zone) = &definition.time_zone {
            script.push_str(&format!("SET SESSION time_zone = {};\n", literal(zone)));
        }
        script.push_str(&format!("DELIMITER ;;\n{}\n;;\nDELIMITER ;\n", definition.create));
        self.admin(Some(db), &script).map(drop)
    }

    /// Creates `objects`' routines, views (in dependency order), events and
    /// triggers in `db`.
    fn create_all(&self, db: &str, objects: &Objects) -> Result<()> {
        for routine in &objects.routines {
            self.create_in(db, routine)?;
        }
        self.create_views(db, &objects.views)?;
        for definition in objects.events.iter().chain(&objects.triggers) {
            self.create_in(db, definition)?;
        }
        Ok(())
    }

    /// Creates `views` in `db`, each once the views it reads exist.
    fn create_views(&self, db: &str, views: &[Definition]) -> Result<()> {
        let mut pending: Vec<&Definition> = views.iter().collect();
        while !pending.is_empty() {
            let mut failed = Vec::new();
            let mut last_error = None;
            for view in &pending {
                if let Err(e) = self.create_in(db, view) {
                    failed.push(*view);
                    last_error = Some(e);
                }
            }
            if failed.len() == pending.len() {
                return Err(last_error.unwrap_or_else(|| Error::RestoreCommandFailed("views".into())));
            }
            pending = failed;
        }
        Ok(())
    }

    fn drop_definitions<'a>(&self, db: &str, definitions: impl Iterator<Item = &'a Definition>) -> Result<()> {
        let script: String = definitions.map(|t| t.drop_sql(db)).collect();
        if !script.is_empty() {
            self.admin(None, &script)?;
        }
        Ok(())
    }

    fn rename(&self, moves: &[(String, String)]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let pairs: Vec<String> = moves.iter().map(|(from, to)| format!("{from} TO {to}")).collect();
        self.admin(None, &format!("RENAME TABLE {};\n", pairs.join(", ")))
            .map(drop)
    }

    /// The switch: see the parent module. On error, everything done is undone.
    pub(super) fn switch(&self, sw: &Switch<'_>) -> std::result::Result<Vec<String>, SwitchError> {
        let unchanged = |e: Error| SwitchError {
            live_unchanged: true,
            message: e.to_string(),
        };
        let staged = self.objects(sw.staging).map_err(unchanged)?;
        let old = if sw.live_exists {
            self.objects(sw.live).map_err(unchanged)?
        } else {
            Objects::default()
        };
        if sw.before.is_none() && !old.tables.is_empty() {
            return Err(unchanged(Error::Invalid(format!(
                "{} holds tables but no database was planned to keep them",
                sw.live
            ))));
        }
        if !sw.live_exists {
            let charset = self.charset_of(sw.staging).map_err(unchanged)?;
            self.admin(None, &format!("CREATE DATABASE {}{charset};", ident(sw.live)))
                .map_err(unchanged)?;
        }
        // What this switch created goes again if the live database is back as it was.
        let created = |e: SwitchError| {
            if e.live_unchanged && !sw.live_exists {
                let _ = self.drop_database(sw.live);
            }
            e
        };
        if let Some(before) = sw.before {
            let charset = self.charset_of(sw.live).map_err(unchanged).map_err(created)?;
            let comment = format!("nfrepo: {} as it was before a restore replaced it", sw.live);
            self.create_database(&format!("{}{charset}", ident(before)), &comment)
                .map_err(unchanged)
                .map_err(created)?;
        }
        self.switch_created(sw, &staged, &old).map_err(|e| {
            if e.live_unchanged
                && let Some(before) = sw.before
            {
                let _ = self.drop_database(before);
            }
            created(e)
        })
    }

    /// The switch once the databases it needs exist.
    fn switch_created(
        &self,
        sw: &Switch<'_>,
        staged: &Objects,
        old: &Objects,
    ) -> std::result::Result<Vec<String>, SwitchError> {
        let unchanged = |e: Error| SwitchError {
            live_unchanged: true,
            message: e.to_string(),
        };
        let mut fault = crate::fault::after_step(crate::fault::MYSQL_SWITCH);
        // Triggers cannot move to another database with their table.
        self.drop_definitions(sw.staging, staged.triggers.iter())
            .map_err(unchanged)?;
        let journal = JournalRef {
            live: sw.live,
            before: sw.before,
            probe: probe(sw, staged, old),
            enable: &sw.staged.enable_events,
            old,
            staged,
        };
        self.write_journal(sw.staging, &journal).map_err(unchanged)?;
        fault(1);
        let outcome = self.switch_journaled(sw, staged, old, &mut fault);
        if outcome.is_err() {
            // This process saw the failure through and reports it: a later
            // run must not redo the switch.
            if let Err(e) = self.admin(None, &journal_done_sql(sw.staging)) {
                tracing::warn!("could not mark the switch journal in {} finished: {e}", sw.staging);
            }
        }
        outcome
    }

    /// The switch once its journal is written; `fault` is called after each step.
    fn switch_journaled(
        &self,
        sw: &Switch<'_>,
        staged: &Objects,
        old: &Objects,
        fault: &mut impl FnMut(usize) -> bool,
    ) -> std::result::Result<Vec<String>, SwitchError> {
        // From here on the live database changes. Its views go too: a view
        // may have the name of a staged table.
        if let Err(e) = self.drop_definitions(sw.live, old.triggers.iter().chain(&old.views)) {
            let lost = self.restore_dropped(sw.live, old);
            return Err(SwitchError {
                live_unchanged: lost.is_empty(),
                message: format!("{e}{lost}"),
            });
        }
        fault(2);
        let (live, staging) = (ident(sw.live), ident(sw.staging));
        let mut moves: Vec<(String, String)> = Vec::new();
        if let Some(before) = sw.before {
            let before = ident(before);
            moves.extend(
                old.tables
                    .iter()
                    .map(|t| (format!("{live}.{}", ident(t)), format!("{before}.{}", ident(t)))),
            );
        }
        moves.extend(
            staged
                .tables
                .iter()
                .map(|t| (format!("{staging}.{}", ident(t)), format!("{live}.{}", ident(t)))),
        );
        if let Err(e) = self.rename(&moves) {
            let lost = self.restore_dropped(sw.live, old);
            return Err(SwitchError {
                live_unchanged: lost.is_empty(),
                message: format!("{e}{lost}"),
            });
        }
        fault(3);
        let replaced = self.replace_objects(sw.live, old, staged, sw.staged);
        if let Err(e) = replaced {
            // In reverse order: the new tables leave the live database before the old ones come back.
            let reverse: Vec<(String, String)> = moves.iter().rev().map(|(a, b)| (b.clone(), a.clone())).collect();
            let undone = self
                .undo_objects(sw.live, old, staged)
                .and_then(|()| self.rename(&reverse));
            let problems = match undone {
                Ok(()) => self.restore_all(sw.live, old),
                Err(u) => format!(
                    "; undoing the switch failed too: {u}; the new tables are in {}",
                    sw.live
                ),
            };
            return Err(SwitchError {
                live_unchanged: problems.is_empty(),
                message: format!("{e}{problems}"),
            });
        }
        fault(4);
        // The live database is the restored one; complete the kept copy.
        let mut warnings = match sw.before {
            Some(before) => self.complete_kept_copy(before, old, false),
            None => Vec::new(),
        };
        fault(5);
        if let Err(e) = self
            .admin(None, &journal_done_sql(sw.staging))
            .and_then(|_| self.drop_database(sw.staging))
        {
            warnings.push(format!(
                "the emptied staging database {} could not be dropped: {e}",
                sw.staging
            ));
        }
        Ok(warnings)
    }

    /// Recreates `old`'s routines, views, events (disabled) and triggers in
    /// the kept-aside copy `before`; returns what could not be, as warnings.
    /// `again`: a recovery may find some there already, so each is dropped first.
    fn complete_kept_copy(&self, before: &str, old: &Objects, again: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        for definition in old
            .routines
            .iter()
            .chain(&old.views)
            .chain(&old.events)
            .chain(&old.triggers)
        {
            let dropped = if again {
                self.admin(None, &definition.drop_sql(before)).map(drop)
            } else {
                Ok(())
            };
            let created = dropped
                .and_then(|()| self.create_in(before, definition))
                .and_then(|()| {
                    if definition.kind == "EVENT" {
                        self.admin(
                            None,
                            &format!("ALTER EVENT {}.{} DISABLE;", ident(before), ident(&definition.name)),
                        )
                        .map(drop)
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = created {
                warnings.push(format!(
                    "{} {} could not be recreated in the kept copy {before}: {e}",
                    definition.kind.to_lowercase(),
                    definition.name
                ));
            }
        }
        warnings
    }

    /// Writes the switch journal into `staging`, in one transaction: all of
    /// it or nothing.
    fn write_journal(&self, staging: &str, journal: &JournalRef<'_>) -> Result<()> {
        let table = format!("{}.{}", ident(staging), ident(JOURNAL));
        let mut rows: Vec<String> = Vec::new();
        let mut meta = |kind: &str, name: &str| {
            rows.push(format!(
                "('meta', {}, {}, NULL, NULL, NULL)",
                literal(kind),
                literal(name)
            ));
        };
        meta("live", journal.live);
        if let Some(before) = journal.before {
            meta("before", before);
        }
        if let Some((db, t)) = &journal.probe {
            meta("probe_db", db);
            meta("probe_table", t);
        }
        for event in journal.enable {
            meta("enable", event);
        }
        for (role, objects) in [("old", journal.old), ("staged", journal.staged)] {
            for d in objects.non_tables().chain(&objects.triggers) {
                let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "NULL".to_owned(), literal);
                rows.push(format!(
                    "({}, {}, {}, {}, {}, {})",
                    literal(role),
                    literal(d.kind),
                    literal(&d.name),
                    opt(&d.sql_mode),
                    opt(&d.time_zone),
                    literal(&d.create)
                ));
            }
        }
        let inserts: String = rows
            .iter()
            .map(|r| format!("INSERT INTO {table} (role, kind, name, sql_mode, time_zone, body) VALUES {r};\n"))
            .collect();
        self.admin(
            None,
            &format!(
                "CREATE TABLE {table} (seq INT AUTO_INCREMENT PRIMARY KEY, role VARCHAR(8) NOT NULL, \
                 kind VARCHAR(16) NOT NULL, name VARCHAR(512) NOT NULL, sql_mode TEXT NULL, \
                 time_zone VARCHAR(64) NULL, body LONGTEXT NULL) ENGINE=InnoDB;\n\
                 START TRANSACTION;\n{inserts}COMMIT;\n"
            ),
        )
        .map(drop)
    }

    /// The journal in `staging`, whose journal table the caller has seen;
    /// `None` if it was never completely written (then nothing live was
    /// changed).
    fn read_journal(&self, staging: &str) -> Result<Option<Journal>> {
        let out = self.admin(
            None,
            &format!(
                "SELECT role, kind, name, sql_mode, time_zone, body FROM {}.{} ORDER BY seq;",
                ident(staging),
                ident(JOURNAL)
            ),
        )?;
        let mut journal = Journal::default();
        let mut live = None;
        let mut probe = (None, None);
        for row in rows(&out) {
            let [role, kind, name, sql_mode, time_zone, body] = row.as_slice() else {
                return Err(Error::RestoreCommandFailed(format!(
                    "unreadable switch journal row in {staging}: {row:?}"
                )));
            };
            let null = |v: &String| Some(v.clone()).filter(|v| v != "NULL");
            match (role.as_str(), kind.as_str()) {
                ("meta", "live") => live = Some(name.clone()),
                ("meta", "before") => journal.before = Some(name.clone()),
                ("meta", "probe_db") => probe.0 = Some(name.clone()),
                ("meta", "probe_table") => probe.1 = Some(name.clone()),
                ("meta", "enable") => journal.enable.push(name.clone()),
                ("meta", "done") => journal.done = true,
                (role @ ("old" | "staged"), kind) => {
                    let kind = match kind {
                        "VIEW" => "VIEW",
                        "TRIGGER" => "TRIGGER",
                        "EVENT" => "EVENT",
                        "FUNCTION" => "FUNCTION",
                        "PROCEDURE" => "PROCEDURE",
                        other => {
                            return Err(Error::RestoreCommandFailed(format!(
                                "unknown object kind {other:?} in the switch journal of {staging}"
                            )));
                        }
                    };
                    let definition = Definition {
                        kind,
                        name: name.clone(),
                        sql_mode: null(sql_mode),
                        time_zone: null(time_zone),
                        create: body.clone(),
                    };
                    let objects = if role == "old" {
                        &mut journal.old
                    } else {
                        &mut journal.staged
                    };
                    match kind {
                        "VIEW" => objects.views.push(definition),
                        "TRIGGER" => objects.triggers.push(definition),
                        "EVENT" => objects.events.push(definition),
                        _ => objects.routines.push(definition),
                    }
                }
                _ => {
                    return Err(Error::RestoreCommandFailed(format!(
                        "unreadable switch journal row in {staging}: {row:?}"
                    )));
                }
            }
        }
        let Some(live) = live else { return Ok(None) };
        journal.live = live;
        journal.probe = probe.0.zip(probe.1);
        Ok(Some(journal))
    }

    fn table_exists(&self, db: &str, table: &str) -> Result<bool> {
        let out = self.admin(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {};",
                literal(db),
                literal(table)
            ),
        )?;
        Ok(out.trim() != "0")
    }

    /// Whether database `db` exists.
    fn database_exists(&self, db: &str) -> Result<bool> {
        let out = self.admin(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
                literal(db)
            ),
        )?;
        Ok(out.trim() != "0")
    }

    /// Claims the switch journaled in `staging` for this process ([`CLAIM`]).
    /// `Ok(None)` when won; otherwise what the caller must leave alone.
    fn claim_switch(&self, staging: &str) -> Result<Option<Recovery>> {
        let table = format!("{}.{}", ident(staging), ident(CLAIM));
        let host = super::plan::host_name();
        let pid = std::process::id();
        let nonce = crate::random::hex::<16>();
        let holder = |out: &str| -> Result<(String, u32, String)> {
            if let Some([h, p, n]) = rows(out).pop().as_deref()
                && let Ok(p) = p.parse()
            {
                return Ok((h.clone(), p, n.clone()));
            }
            Err(Error::RestoreCommandFailed(format!(
                "unreadable switch claim in {staging}: {out:?}"
            )))
        };
        let read = format!("SELECT host, pid, nonce FROM {table} WHERE id = 1;");
        let first = self.admin(
            None,
            &format!(
                "CREATE TABLE IF NOT EXISTS {table} (id TINYINT PRIMARY KEY, host VARCHAR(255) NOT NULL, \
                 pid INT UNSIGNED NOT NULL, nonce CHAR(32) NOT NULL) ENGINE=InnoDB;\n\
                 INSERT IGNORE INTO {table} VALUES (1, {}, {pid}, {});\n{read}",
                literal(&host),
                literal(&nonce)
            ),
        );
        let mut current = match first {
            Ok(out) => holder(&out)?,
            // Dropped since it was listed: whoever dropped it had finished.
            Err(_) if !self.database_exists(staging)? => return Ok(Some(Recovery::Gone)),
            Err(e) => return Err(e),
        };
        // A claimant that died is replaced; a few rounds cover claimants
        // dying one after the other, which only a test does.
        for _ in 0..3 {
            let (h, p, n) = &current;
            if *n == nonce {
                return Ok(None);
            }
            if *h != host || *p == pid || super::plan::process_alive(*p) {
                return Ok(Some(Recovery::Claimed(*p)));
            }
            let out = self.admin(
                None,
                &format!(
                    "UPDATE {table} SET host = {}, pid = {pid}, nonce = {} WHERE id = 1 AND nonce = {};\n{read}",
                    literal(&host),
                    literal(&nonce),
                    literal(n)
                ),
            )?;
            current = holder(&out)?;
        }
        Ok(Some(Recovery::Claimed(current.1)))
    }

    /// Finishes, from its journal, a switch that a process killed midway
    /// left in `staging`: back to the live database as it was if the
    /// `RENAME TABLE` had not happened, forward to the restored one (and a
    /// complete kept-aside copy) if it had. The switch is claimed first
    /// ([`CLAIM`]), so that of several restores finding it at once only one
    /// finishes it; once finished, its journal is marked done, so that a
    /// restore finding it before the caller drops `staging` does nothing.
    pub(super) fn recover_switch(&self, staging: &str) -> Result<Recovery> {
        if !self.table_exists(staging, JOURNAL)? {
            return Ok(Recovery::Nothing);
        }
        if let Some(elsewhere) = self.claim_switch(staging)? {
            return Ok(elsewhere);
        }
        let Some(journal) = self.read_journal(staging)? else {
            return Ok(Recovery::Nothing);
        };
        if journal.done {
            return Ok(Recovery::Nothing);
        }
        crate::fault::after_step(crate::fault::MYSQL_RECOVER)(1);
        let note = self.finish_switch(staging, &journal)?;
        self.admin(None, &journal_done_sql(staging))?;
        Ok(Recovery::Finished(note))
    }

    /// Replays `journal`, found unfinished in `staging`; what was done.
    fn finish_switch(&self, staging: &str, journal: &Journal) -> Result<String> {
        let live = journal.live.as_str();
        let renamed = match &journal.probe {
            Some((db, table)) => self.table_exists(db, table)?,
            None => true,
        };
        if !renamed {
            let lost = self.restore_dropped(live, &journal.old);
            if !lost.is_empty() {
                return Err(Error::RestoreCommandFailed(format!(
                    "recovering the switch interrupted in {staging}{lost}"
                )));
            }
            return Ok(format!(
                "a switch into {live} was interrupted before its rename: {live} is as it was, \
                 its views and triggers recreated"
            ));
        }
        let fail = |e: Error| {
            Error::RestoreCommandFailed(format!(
                "completing the switch into {live} interrupted after its rename (journal in {staging}): {e}"
            ))
        };
        self.undo_objects(live, &journal.old, &journal.staged).map_err(fail)?;
        let state = Staged {
            enable_events: journal.enable.clone(),
        };
        self.replace_objects(live, &Objects::default(), &journal.staged, &state)
            .map_err(fail)?;
        let mut note = format!("a switch into {live} was interrupted after its rename: completed");
        if let Some(before) = &journal.before {
            note.push_str(&format!("; the old database is kept as {before}"));
            for warning in self.complete_kept_copy(before, &journal.old, true) {
                note.push_str(&format!("; {warning}"));
            }
        }
        Ok(note)
    }

    /// Drops `old`'s views, routines and events from `db` and creates
    /// `staged`'s there, enabling the events that were enabled when dumped.
    fn replace_objects(&self, db: &str, old: &Objects, staged: &Objects, state: &Staged) -> Result<()> {
        let drops: String = old.non_tables().map(|d| d.drop_sql(db)).collect();
        if !drops.is_empty() {
            self.admin(None, &drops)?;
        }
        self.create_all(db, staged)?;
        let enable: String = state
            .enable_events
            .iter()
            .map(|e| format!("ALTER EVENT {}.{} ENABLE;\n", ident(db), ident(e)))
            .collect();
        if !enable.is_empty() {
            self.admin(None, &enable)?;
        }
        Ok(())
    }

    /// Removes from `db` whatever of `staged` (and `old`) is there, before the reverse rename.
    fn undo_objects(&self, db: &str, old: &Objects, staged: &Objects) -> Result<()> {
        let drops: String = staged
            .non_tables()
            .chain(&staged.triggers)
            .chain(old.non_tables())
            .map(|d| d.drop_sql(db))
            .collect();
        if drops.is_empty() {
            return Ok(());
        }
        self.admin(None, &drops).map(drop)
    }

    /// Recreates `old`'s views and triggers in `db` (those the switch drops
    /// first); returns what could not be, as text.
    fn restore_dropped(&self, db: &str, old: &Objects) -> String {
        let mut failed: Vec<String> = Vec::new();
        let existing = self.objects(db).map(|o| {
            o.views
                .into_iter()
                .chain(o.triggers)
                .map(|d| d.name)
                .collect::<Vec<_>>()
        });
        let existing = match existing {
            Ok(names) => names,
            Err(e) => return format!("; could not list what is left in {db}: {e}"),
        };
        let missing = |d: &&Definition| !existing.contains(&d.name);
        let views: Vec<Definition> = old.views.iter().filter(missing).cloned().collect();
        if let Err(e) = self.create_views(db, &views) {
            failed.push(format!("views ({e})"));
        }
        failed.extend(
            old.triggers
                .iter()
                .filter(missing)
                .filter_map(|t| self.create_in(db, t).err().map(|e| format!("trigger {} ({e})", t.name))),
        );
        if failed.is_empty() {
            String::new()
        } else {
            format!("; could not recreate in {db}: {}", failed.join(", "))
        }
    }

    /// Recreates every non-table object of `old` in `db`; returns what could not be.
    fn restore_all(&self, db: &str, old: &Objects) -> String {
        match self.create_all(db, old) {
            Ok(()) => String::new(),
            Err(e) => format!("; recreating the old views, routines, events and triggers of {db} failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_fields_are_unescaped() {
        assert_eq!(unescape(r"a\nb\tc\\d\0"), "a\nb\tc\\d\0");
        assert_eq!(
            rows("v\tCREATE VIEW `v` AS select 1\\nfrom t\n"),
            [["v", "CREATE VIEW `v` AS select 1\nfrom t"]]
        );
    }

    #[test]
    fn names_and_strings_are_quoted() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("it's \\ here"), "'it''s \\\\ here'");
    }
}
