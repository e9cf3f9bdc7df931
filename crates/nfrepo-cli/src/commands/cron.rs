//! `nfrepo cron`: crontab lines for the configured sources' schedules.
//!
//! Each line runs `nfrepo --config FILE snapshot --source NAME --quiet`, so
//! cron mails only failures. Sources without a schedule get no line.

use nfrepo_engine::ErrorCode;

use crate::cli::{CronArgs, GlobalArgs};
use crate::config;
use crate::failure::Failure;
use crate::output::outln;

pub fn run(global: &GlobalArgs, args: CronArgs) -> Result<i32, Failure> {
    let config = config::load(global.config.as_deref())?.ok_or_else(|| {
        Failure::new(
            ErrorCode::BackupNotFound,
            Some("CONFIG_NOT_FOUND"),
            "no configuration file: use --config, set NFREPO_CONFIG, or create /etc/nfrepo/nfrepo.toml",
        )
    })?;
    let binary = match args.binary {
        Some(binary) => binary,
        None => std::env::current_exe().map_err(|e| {
            Failure::new(
                ErrorCode::BackupFailed,
                None,
                format!("cannot tell where this binary is ({e}): use --binary"),
            )
        })?,
    };
    let binary = quote(&binary.display().to_string());
    let file = quote(&config.path.display().to_string());
    let mut lines = Vec::new();
    for (name, source) in &config.sources {
        if let Some(schedule) = &source.schedule {
            // Checked again here (loading checks it too): a line cron would
            // reject, or misread, must never be printed.
            config::check_schedule(schedule)
                .map_err(|e| Failure::new(ErrorCode::BackupFailed, Some("CONFIG_INVALID"), e))?;
            // One line per source whatever whitespace the file used.
            let schedule = schedule.split_whitespace().collect::<Vec<_>>().join(" ");
            let command = format!("{binary} --config {file} snapshot --source {} --quiet", quote(name));
            // cron turns an unescaped % into a newline.
            lines.push((name.clone(), schedule, command.replace('%', "\\%")));
        }
    }
    if global.json {
        let value: Vec<_> = lines
            .iter()
            .map(|(name, schedule, command)| {
                serde_json::json!({ "source": name, "schedule": schedule, "command": command })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(value));
        return Ok(0);
    }
    outln!(
        "# nfrepo sources from {}",
        crate::output::escape::text(&config.path.display().to_string())
    );
    for (_, schedule, command) in &lines {
        outln!("{schedule} {command}");
    }
    Ok(0)
}

/// Single-quotes `text` for sh when it holds anything but safe characters.
fn quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':' | '@'));
    if safe {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;
    use crate::config::check_schedule;

    // Issue 9, bug 18: `cron` printed schedules cron rejects.
    #[test]
    fn invalid_schedules_are_rejected() {
        for good in [
            "*/5 * * * *",
            "0 3 * * 1-5",
            "15,45 */2 1 jan-jun sun",
            "@daily",
            "0 0 * * 7",
        ] {
            assert_eq!(check_schedule(good), Ok(()), "{good}");
        }
        for bad in [
            "99 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "a b c d e",
            "*/0 * * * *",
            "5-1 * * * *",
            "@often",
            "* * * *",
        ] {
            assert!(check_schedule(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("/usr/bin/nfrepo"), "/usr/bin/nfrepo");
        assert_eq!(quote("/tmp/my conf.toml"), "'/tmp/my conf.toml'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
