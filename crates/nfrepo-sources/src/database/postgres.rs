//! The staged restore on PostgreSQL: `psql` on the maintenance database
//! `postgres` for everything but the load and the row counts.

use super::{LiveState, LoadCommand, STAGING_MARK, Switch, SwitchError, run_script};
use crate::{Error, PostgresTarget, Result};

/// A PostgreSQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A PostgreSQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresTarget {
    /// Runs `script` in `database`, stopping at the first error; returns its
    /// rows, fields separated by tabs. Blocks.
    fn admin(&self, database: &str, script: &str) -> Result<String> {
        let (mut argv, auth) = self.client()?;
        argv.extend([
            "-X".into(),
            "-q".into(),
            "--tuples-only".into(),
            "--no-align".into(),
            "--field-separator=\t".into(),
            "--set=ON_ERROR_STOP=1".into(),
            format!("--dbname={database}"),
        ]);
        run_script(&argv, &auth, script)
    }

    /// Every database with its comment.
    pub(super) fn databases(&self) -> Result<Vec<(String, String)>> {
        let out = self.admin(
            "postgres",
            "SELECT datname, coalesce(replace(shobj_description(oid, 'pg_database'), E'\\n', ' '), '') FROM pg_database;",
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, comment) = l.split_once('\t').unwrap_or((l, ""));
                (name.to_owned(), comment.to_owned())
            })
            .collect())
    }

    fn exists(&self, db: &str) -> Result<bool> {
        let out = self.admin(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = {};", literal(db)),
        )?;
        Ok(out.trim() == "1")
    }

    pub(super) fn live_state(&self, db: &str) -> Result<LiveState> {
        if !self.exists(db)? {
            return Ok(LiveState {
                exists: false,
                objects: 0,
            });
        }
        let sql = "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')) \
                   + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'));";
        let out = self.admin(db, sql)?;
        let objects = out
            .trim()
            .parse()
            .map_err(|_| Error::RestoreCommandFailed(format!("unexpected answer from psql: {:?}", out.trim())))?;
        Ok(LiveState { exists: true, objects })
    }

    /// Creates the staging database empty (from `template0`, as a plain dump
    /// expects), with the live database's encoding, locale and owner.
    pub(super) fn create_staging(&self, staging: &str, live: Option<&str>, comment: &str) -> Result<()> {
        let mut create = format!("CREATE DATABASE {} TEMPLATE template0", ident(staging));
        if let Some(live) = live {
            let out = self.admin(
                "postgres",
                &format!(
                    "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba) \
                     FROM pg_database WHERE datname = {};",
                    literal(live)
                ),
            )?;
            let fields: Vec<&str> = out.trim_end_matches('\n').split('\t').collect();
            if let [encoding, collate, ctype, owner] = fields.as_slice() {
                create.push_str(&format!(
                    " ENCODING {} LC_COLLATE {} LC_CTYPE {} OWNER {}",
                    literal(encoding),
                    literal(collate),
                    literal(ctype),
                    ident(owner)
                ));
            }
        }
        self.admin(
            "postgres",
            &format!(
                "{create};\nCOMMENT ON DATABASE {} IS {};\n",
                ident(staging),
                literal(comment)
            ),
        )?;
        if let Some(live) = live {
            let copy = self.database_settings(live, staging)?;
            if !copy.is_empty() {
                self.admin("postgres", &copy)?;
            }
        }
        Ok(())
    }

    /// The statements giving `to` the database-level grants and settings of
    /// `from`, which a per-database `pg_dump` does not hold.
    fn database_settings(&self, from: &str, to: &str) -> Result<String> {
        let from = literal(from);
        let to = ident(to);
        let acl = self.admin(
            "postgres",
            &format!(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                 a.privilege_type, a.is_grantable \
                 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = {from} ORDER BY 1, 2;"
            ),
        )?;
        let has_acl = self.admin(
            "postgres",
            &format!("SELECT datacl IS NOT NULL FROM pg_database WHERE datname = {from};"),
        )?;
        let mut script = String::new();
        if has_acl.trim() == "t" {
            script.push_str(&format!("REVOKE ALL ON DATABASE {to} FROM PUBLIC;\n"));
            for line in acl.lines().filter(|l| !l.is_empty()) {
                if let [grantee, privilege, grantable] = line.split('\t').collect::<Vec<_>>().as_slice() {
                    let option = if *grantable == "t" { " WITH GRANT OPTION" } else { "" };
                    script.push_str(&format!("GRANT {privilege} ON DATABASE {to} TO {grantee}{option};\n"));
                }
            }
        }
        let settings = self.admin(
            "postgres",
            &format!(
                "SELECT coalesce(quote_ident(pg_get_userbyid(NULLIF(s.setrole, 0))), ''), c \
                 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c \
                 WHERE d.datname = {from};"
            ),
        )?;
        for line in settings.lines().filter(|l| !l.is_empty()) {
            let Some((role, setting)) = line.split_once('\t') else {
                continue;
            };
            let Some((name, value)) = setting.split_once('=') else {
                continue;
            };
            let target = if role.is_empty() {
                format!("ALTER DATABASE {to}")
            } else {
                format!("ALTER ROLE {role} IN DATABASE {to}")
            };
            script.push_str(&format!("{target} SET {} TO {};\n", ident(name), literal(value)));
        }
        Ok(script)
    }

    /// `psql` loading a dump inside one transaction that only nfrepo's
    /// epilogue commits: a stream that ends early is rolled back.
    pub(super) fn load_command(&self, staging: &str) -> Result<LoadCommand> {
        let (mut argv, auth) = self.client()?;
        argv.extend([
            "-X".into(),
            "--quiet".into(),
            "--set=ON_ERROR_STOP=1".into(),
            "--output=/dev/null".into(),
            format!("--dbname={staging}"),
        ]);
        Ok(LoadCommand {
            argv,
            auth,
            prologue: b"BEGIN;\n",
            epilogue: b"\nCOMMIT;\n",
        })
    }

    /// `table` is `schema.table` (a bare name is in `public`). `ONLY`: a
    /// dump's `COPY` holds each table's own rows, never those of its
    /// partitions or inheriting children, and so does this count.
    pub(super) fn count_rows(&self, db: &str, table: &str) -> Result<u64> {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let out = self.admin(
            db,
            &format!("SELECT count(*) FROM ONLY {}.{};", ident(schema), ident(name)),
        )?;
        out.trim()
            .parse()
            .map_err(|_| Error::RestoreCommandFailed(format!("unexpected answer from psql: {:?}", out.trim())))
    }

    /// The sessions connected to `db`, described for an operator.
    pub(super) fn sessions(&self, db: &str) -> Result<Vec<String>> {
        let out = self.admin(
            "postgres",
            &format!(
                "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), coalesce(host(client_addr), 'local') \
                 FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid() ORDER BY pid;",
                literal(db)
            ),
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                match f.as_slice() {
                    [pid, user, app, addr] => format!("pid {pid} (user {user}, application {app:?}, from {addr})"),
                    _ => l.to_owned(),
                }
            })
            .collect())
    }

    fn terminate_sessions(&self, db: &str) -> Result<()> {
        self.admin(
            "postgres",
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false;", ident(db)),
        )?;
        let terminate = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = {} AND pid <> pg_backend_pid();",
            literal(db)
        );
        for _ in 0..100 {
            if self.admin("postgres", &terminate)?.trim() == "0" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(Error::SessionsBlocking(self.sessions(db)?))
    }

    /// Renames the live database aside and the staging one in, in one transaction.
    pub(super) fn switch(&self, sw: &Switch<'_>) -> std::result::Result<Vec<String>, SwitchError> {
        let unchanged = |e: Error| SwitchError {
            live_unchanged: true,
            message: e.to_string(),
        };
        let (live, staging) = (ident(sw.live), ident(sw.staging));
        let Some(before) = sw.before else {
            self.admin(
                "postgres",
                &format!(
                    "BEGIN;\nALTER DATABASE {staging} RENAME TO {live};\nCOMMENT ON DATABASE {live} IS NULL;\nCOMMIT;\n"
                ),
            )
            .map_err(unchanged)?;
            return Ok(Vec::new());
        };
        let old_comment = self
            .admin(
                "postgres",
                &format!(
                    "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = {};",
                    literal(sw.live)
                ),
            )
            .map_err(unchanged)?;
        let old_comment = old_comment.trim_end_matches('\n');
        let old_comment = if old_comment.is_empty() {
            "NULL".to_owned()
        } else {
            literal(old_comment)
        };
        let mut warnings = Vec::new();
        if sw.terminate_sessions
            && let Err(e) = self.terminate_sessions(sw.live)
        {
            let _ = self.admin("postgres", &format!("ALTER DATABASE {live} ALLOW_CONNECTIONS true;"));
            return Err(unchanged(e));
        }
        let kept = literal(&format!("nfrepo: {} as it was before a restore replaced it", sw.live));
        let before = ident(before);
        let swapped = self.admin(
            "postgres",
            &format!(
                "BEGIN;\nALTER DATABASE {live} RENAME TO {before};\nALTER DATABASE {staging} RENAME TO {live};\n\
                 COMMENT ON DATABASE {live} IS {old_comment};\nCOMMENT ON DATABASE {before} IS {kept};\nCOMMIT;\n"
            ),
        );
        if sw.terminate_sessions {
            let give_back = if swapped.is_ok() { &before } else { &live };
            if let Err(e) = self.admin(
                "postgres",
                &format!("ALTER DATABASE {give_back} ALLOW_CONNECTIONS true;"),
            ) {
                warnings.push(format!("connections to {give_back} could not be allowed again: {e}"));
            }
        }
        swapped.map_err(unchanged)?;
        Ok(warnings)
    }

    /// Drops `db`; a staging database (nfrepo's own) even with sessions in it.
    pub(super) fn drop_database(&self, db: &str) -> Result<()> {
        let force = if db.contains(STAGING_MARK) { " WITH (FORCE)" } else { "" };
        self.admin("postgres", &format!("DROP DATABASE IF EXISTS {}{force};", ident(db)))?;
        Ok(())
    }
}
