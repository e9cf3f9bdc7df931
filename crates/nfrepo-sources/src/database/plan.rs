//! Planning a staged restore: names, leftovers of earlier runs, refusals.

use super::mysql::Recovery;
use super::{
    BEFORE_MARK, COMMENT_PREFIX, DatabaseRestoreItem, DatabaseRestoreOptions, DatabaseRestorePlan, DatabaseTarget,
    Leftover, MAX_NAME, PlannedDatabase, STAGING_MARK,
};
use crate::{Error, Result};

/// Who created a staging database: parsed from its comment.
#[derive(Debug, PartialEq, Eq)]
struct Creator {
    host: String,
    pid: u32,
}

pub(super) fn creator_comment(db: &str) -> String {
    let now = unix_now();
    format!(
        "{COMMENT_PREFIX} of {db}; host={}; pid={}; started={}",
        host_name(),
        std::process::id(),
        utc_stamp(now)
    )
}

fn parse_creator(comment: &str) -> Option<Creator> {
    let rest = comment.strip_prefix(COMMENT_PREFIX)?;
    let field = |name: &str| {
        rest.split(';')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    Some(Creator {
        host: field("host")?,
        pid: field("pid")?.parse().ok()?,
    })
}

pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

pub(super) fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYYMMDDhhmmss` in UTC.
fn utc_stamp(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn derived_name(live: &str, mark: &str, suffix: &str) -> Result<String> {
    let name = format!("{live}{mark}{suffix}");
    if name.len() > MAX_NAME {
        return Err(Error::Invalid(format!(
            "database name {live:?} is too long for a staged restore: {name} would exceed {MAX_NAME} characters"
        )));
    }
    Ok(name)
}

/// Looks at the server and computes what the restore will do. Blocks.
///
/// Removes (here, before anything is loaded) staging databases that a
/// process of this host that is gone left behind.
///
/// # Errors
/// [`Error::ProtectedDatabase`] for a server's own database;
/// [`Error::TargetNotEmpty`] for a target that holds data without `force`
/// (nothing changed); [`Error::RestoreInProgress`] when another live restore
/// is staging one of the targets; [`Error::RestoreCommandFailed`] if the
/// server cannot be asked.
pub fn plan_database_restore(
    target: &DatabaseTarget,
    items: Vec<DatabaseRestoreItem>,
    options: &DatabaseRestoreOptions,
) -> Result<DatabaseRestorePlan> {
    let mut seen = std::collections::BTreeSet::new();
    for item in &items {
        crate::connection::check_database_name(&item.database)?;
        if DatabaseTarget::is_maintenance(&item.database) {
            return Err(Error::ProtectedDatabase(item.database.clone()));
        }
        if item.database.contains(STAGING_MARK) || item.database.contains(BEFORE_MARK) {
            return Err(Error::Invalid(format!(
                "{} is a name nfrepo uses for its own staging and kept-aside databases",
                item.database
            )));
        }
        if !seen.insert(item.database.clone()) {
            return Err(Error::Invalid(format!(
                "two dumps would be restored into database {}",
                item.database
            )));
        }
    }
    let stamp = utc_stamp(unix_now());
    let here = host_name();
    let mut leftovers = Vec::new();
    let existing = target.databases()?;
    for (name, comment) in existing.iter().cloned() {
        if name.contains(STAGING_MARK) {
            let creator = parse_creator(&comment);
            let live = name.split(STAGING_MARK).next().unwrap_or_default();
            let restoring_live = seen.contains(live);
            let dead_here = creator
                .as_ref()
                .is_some_and(|c| c.host == here && c.pid != std::process::id() && !process_alive(c.pid));
            // A switch its process did not live to finish is finished first,
            // whichever databases this restore is about, by one restore only.
            let recovery = if dead_here {
                target.recover_switch(&name)?
            } else {
                Recovery::Nothing
            };
            let (remove, note) = match (recovery, &creator) {
                (Recovery::Gone, _) => continue,
                (Recovery::Finished(recovered), _) => (true, format!("{recovered}; its staging database removed")),
                (Recovery::Claimed(pid), _) if restoring_live => {
                    return Err(Error::RestoreInProgress(format!(
                        "the switch into {live} that an interrupted restore left in {name} is being \
                         finished by nfrepo process {pid} on this host; wait for it"
                    )));
                }
                (Recovery::Claimed(pid), _) => (
                    false,
                    format!("switch of an interrupted restore being finished by nfrepo process {pid}, left alone"),
                ),
                (Recovery::Nothing, Some(c)) if c.host == here && c.pid == std::process::id() => continue,
                (Recovery::Nothing, Some(c)) if c.host == here && process_alive(c.pid) => {
                    if restoring_live {
                        return Err(Error::RestoreInProgress(format!(
                            "{name} is being loaded by nfrepo process {} on this host; wait for it or stop it",
                            c.pid
                        )));
                    }
                    (
                        false,
                        format!("staging database of a running restore (pid {}), left alone", c.pid),
                    )
                }
                (Recovery::Nothing, Some(c)) if c.host == here && restoring_live => (
                    true,
                    format!(
                        "staging database left by an interrupted restore (pid {}, gone): removed",
                        c.pid
                    ),
                ),
                (Recovery::Nothing, Some(c)) if c.host == here => (
                    false,
                    format!(
                        "staging database left by an interrupted restore (pid {}, gone): the next restore of its database removes it",
                        c.pid
                    ),
                ),
                (Recovery::Nothing, Some(c)) => (
                    false,
                    format!(
                        "staging database of a restore run on host {}, left alone: drop it once that restore is over",
                        c.host
                    ),
                ),
                (Recovery::Nothing, None) => (
                    false,
                    "staging database without nfrepo's comment, left alone: drop it if no restore is running"
                        .to_owned(),
                ),
            };
            leftovers.push(Leftover {
                database: name,
                note,
                remove,
            });
        } else if name.contains(BEFORE_MARK) {
            leftovers.push(Leftover {
                note: "copy kept aside by an earlier restore: drop it when it is no longer needed".to_owned(),
                database: name,
                remove: false,
            });
        }
    }
    let mut databases = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for item in items {
        let live = target.live_state(&item.database)?;
        if live.objects > 0 && !options.force {
            refused.push(format!("database {} holds {} objects", item.database, live.objects));
        }
        // PostgreSQL renames the whole database: an existing one, even
        // empty, is kept aside (its owner, grants and settings with it).
        let keep_aside = live.exists && (live.objects > 0 || matches!(target, DatabaseTarget::Postgres(_)));
        let before = if keep_aside {
            // Two restores within a second: the second copy gets a suffix.
            let mut name = derived_name(&item.database, BEFORE_MARK, &stamp)?;
            let mut n = 1;
            while existing.iter().any(|(db, _)| db.eq_ignore_ascii_case(&name)) {
                n += 1;
                name = derived_name(&item.database, BEFORE_MARK, &format!("{stamp}_{n}"))?;
            }
            Some(name)
        } else {
            None
        };
        databases.push(PlannedDatabase {
            staging: derived_name(&item.database, STAGING_MARK, &crate::random::hex::<4>())?,
            before,
            live_exists: live.exists,
            live_objects: live.objects,
            item,
        });
    }
    // Removing what a dead process left is safe whatever happens next.
    for leftover in leftovers.iter().filter(|l| l.remove) {
        target.drop_database(&leftover.database)?;
    }
    if !refused.is_empty() {
        let mut message = refused.join(", ");
        for leftover in leftovers.iter().filter(|l| l.remove) {
            message.push_str(&format!(" (meanwhile {}: {})", leftover.database, leftover.note));
        }
        return Err(Error::TargetNotEmpty(message));
    }
    Ok(DatabaseRestorePlan {
        target: target.clone(),
        databases,
        leftovers,
        options: options.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;
    use crate::PostgresTarget;
    use nfrepo_format::Node;
    use std::collections::BTreeMap;

    #[test]
    fn creators_are_read_back_from_the_comment() {
        let comment = creator_comment("app");
        let creator = parse_creator(&comment).unwrap();
        assert_eq!(creator.pid, std::process::id());
        assert_eq!(creator.host, host_name());
        assert_eq!(parse_creator("someone else's comment"), None);
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(1_796_176_800), "20261202020000");
        assert_eq!(utc_stamp(951_782_400), "20000229000000");
    }

    #[test]
    fn maintenance_databases_are_refused_before_anything_runs() {
        // A target whose client does not exist: the refusal comes first.
        let target = DatabaseTarget::Postgres(PostgresTarget {
            connection: crate::Connection::parse("postgres://u@127.0.0.1:1").unwrap(),
            bin_dir: Some("/nonexistent".into()),
        });
        let item = DatabaseRestoreItem {
            node: Node {
                name: b"postgres.sql".to_vec(),
                kind: nfrepo_format::NodeKind::Fifo,
                meta: nfrepo_format::Metadata::default(),
            },
            stream: "postgres.sql".into(),
            database: "postgres".into(),
            expected_rows: BTreeMap::new(),
        };
        let err = plan_database_restore(&target, vec![item.clone()], &DatabaseRestoreOptions::default()).unwrap_err();
        assert!(
            matches!(err, Error::ProtectedDatabase(ref db) if db == "postgres"),
            "{err}"
        );
        for name in ["template1", "MySQL", "information_schema"] {
            let mut item = item.clone();
            item.database = name.into();
            let err = plan_database_restore(&target, vec![item], &DatabaseRestoreOptions::default()).unwrap_err();
            assert!(matches!(err, Error::ProtectedDatabase(_)), "{name}: {err}");
        }
    }

    #[test]
    fn derived_names_respect_the_servers_limit() {
        assert_eq!(
            derived_name("app", STAGING_MARK, "0a1b2c3d").unwrap(),
            "app__nfrepo_restore_0a1b2c3d"
        );
        assert!(derived_name(&"a".repeat(40), BEFORE_MARK, "20261201040000").is_err());
    }
}
