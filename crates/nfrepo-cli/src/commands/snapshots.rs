//! `nfrepo snapshots`.

use chrono::{DateTime, Utc};
use nfrepo_engine::{Operation, SnapshotEntry};

use crate::cli::{GlobalArgs, SnapshotFilter, SnapshotsArgs};
use crate::commands::snapshot::parse_tags;
use crate::failure::Failure;
use crate::output::outln;
use crate::{context, render};

/// Parses `--since`/`--until`: RFC 3339, `YYYY-MM-DD` (UTC midnight), or an age like `36h`, `7d`, `30m`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<i64, Failure> {
    now.timestamp_nanos_opt()
        .and_then(|now| nfrepo_ops::parse_moment(text, now))
        .ok_or_else(|| {
            Failure::usage(format!(
                "cannot read time {text:?}: use RFC 3339, YYYY-MM-DD, or an age like 36h or 7d"
            ))
        })
}

/// Applies the filter to snapshots (oldest first).
pub fn filter(all: Vec<SnapshotEntry>, filter: &SnapshotFilter) -> Result<Vec<SnapshotEntry>, Failure> {
    let tags = parse_tags(&filter.tags)?;
    let now = Utc::now();
    let since = filter.since.as_deref().map(|t| parse_time(t, now)).transpose()?;
    let until = filter.until.as_deref().map(|t| parse_time(t, now)).transpose()?;
    Ok(all
        .into_iter()
        .filter(|e| filter.source.as_ref().is_none_or(|s| &e.snapshot.source == s))
        .filter(|e| tags.iter().all(|(k, v)| e.snapshot.tag(k) == Some(v.as_str())))
        .filter(|e| since.is_none_or(|t| e.snapshot.time_ns >= t))
        .filter(|e| until.is_none_or(|t| e.snapshot.time_ns <= t))
        .collect())
}

pub async fn run(global: &GlobalArgs, args: SnapshotsArgs) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let all = repo
        .snapshot_list()
        .await
        .map_err(|e| Failure::engine(&e, Operation::Inspect))?;
    let shown = filter(all, &args.filter)?;
    // One repository, one cipher: repeated on every entry so that the
    // output stays the array it always was.
    let cipher = repo.cipher().name();
    if global.json {
        let list: Vec<_> = shown
            .iter()
            .map(|e| {
                let s = &e.snapshot;
                serde_json::json!({
                    "id": e.id.to_hex(),
                    "time": render::time_ns(s.time_ns),
                    "source": s.source,
                    "source_kind": s.source_kind,
                    "hostname": s.hostname,
                    "username": s.username,
                    "paths": s.paths,
                    "tags": s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                    "profile": s.profile,
                    "parent": s.parent.map(|p| p.to_hex()),
                    "root": s.root.to_hex(),
                    "partial": !s.skipped.is_empty(),
                    "summary": {
                        "files": s.summary.files,
                        "bytes": s.summary.bytes,
                        "bytes_added_stored": s.summary.bytes_added_stored,
                        "duration_ms": s.summary.duration_ms,
                    },
                    "command": s.command.as_ref().map(|c| serde_json::json!({"argv": c.argv, "exit_code": c.exit_code})),
                    "extra": s.extra.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "cipher": cipher,
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(list));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|e| {
            let s = &e.snapshot;
            vec![
                e.id.short(),
                render::time_ns(s.time_ns),
                s.source.clone(),
                s.source_kind.clone(),
                render::bytes(s.summary.bytes),
                render::bytes(s.summary.bytes_added_stored),
                s.tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    render::table(&["ID", "TIME", "SOURCE", "KIND", "SIZE", "ADDED", "TAGS"], &rows);
    if !global.quiet {
        outln!("{} snapshots", rows.len());
    }
    Ok(0)
}
