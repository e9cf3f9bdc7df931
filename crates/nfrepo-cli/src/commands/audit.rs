//! `nfrepo audit log` and `nfrepo audit verify`: read and check the audit log.

use nfrepo_engine::{AuditFilter, AuditLogEntry, AuditReport, AuditWriter, ErrorCode, Operation, read_audit};

use crate::cli::{AuditCommand, AuditLogArgs, GlobalArgs};
use crate::commands::snapshots::parse_time;
use crate::failure::Failure;
use crate::output::{escape, outln};
use crate::{context, render};

pub async fn run(global: &GlobalArgs, command: AuditCommand) -> Result<i32, Failure> {
    let filter = match &command {
        AuditCommand::Log(args) => filter(args)?,
        AuditCommand::Verify => AuditFilter::default(),
    };
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let writer = AuditWriter::new(repo.store().clone(), context::cache_dir(global));
    let report = read_audit(&repo, Some(&writer))
        .await
        .map_err(|e| Failure::engine(&e, Operation::Inspect))?;
    let failure = tampered(&report);
    match command {
        AuditCommand::Log(_) => log(global, &report, &filter),
        AuditCommand::Verify => verify(global, &report, failure.as_ref()),
    }
    Ok(failure.as_ref().map_or(0, Failure::print_line))
}

fn filter(args: &AuditLogArgs) -> Result<AuditFilter, Failure> {
    let now = chrono::Utc::now();
    let time = |text: &Option<String>| text.as_deref().map(|t| parse_time(t, now)).transpose();
    let mut filter = AuditFilter::default();
    filter.since_ns = time(&args.since)?;
    filter.until_ns = time(&args.until)?;
    filter.source.clone_from(&args.source);
    filter.operation.clone_from(&args.operation);
    filter.failed_only = args.failed;
    Ok(filter)
}

/// The failure of a log with problems: the first bad entry, `BACKUP_CORRUPTED`.
fn tampered(report: &AuditReport) -> Option<Failure> {
    let message = match (report.problems.first(), &report.public_key_problem) {
        (Some(first), _) => format!(
            "the audit log is not intact: first bad entry {} is {}: {} ({} problem(s) in all)",
            first.object,
            first.kind.as_str(),
            first.detail,
            report.problems.len()
        ),
        (None, Some(problem)) => format!("the audit log's public key is not intact: {problem}"),
        (None, None) => return None,
    };
    Some(Failure::new(
        ErrorCode::BackupCorrupted,
        Some("AUDIT_TAMPERED"),
        message,
    ))
}

fn entry_json(entry: &AuditLogEntry) -> serde_json::Value {
    let r = &entry.record;
    serde_json::json!({
        "time": render::time_ns(r.time_ns),
        "writer": entry.writer.to_hex(),
        "seq": entry.seq,
        "authenticated": entry.authenticated,
        "host": r.host,
        "user": r.user,
        "pid": r.pid,
        "key_slot": match &r.access {
            nfrepo_format::AuditAccess::KeySlot(id) => Some(id.to_hex()),
            _ => None,
        },
        "credential": match &r.access {
            nfrepo_format::AuditAccess::Credential { slot, label } => {
                Some(serde_json::json!({ "slot": slot.to_hex(), "label": label }))
            }
            _ => None,
        },
        "operation": r.operation,
        "command": r.command,
        "sources": r.sources,
        "code": r.code,
        "detail": r.detail,
        "message": r.message,
        "exit_code": r.exit_code,
        "duration_ms": r.duration_ms,
        "objects": r.objects.iter().map(|o| serde_json::json!({"kind": o.kind, "created": o.created, "deleted": o.deleted})).collect::<Vec<_>>(),
        "snapshots_created": r.snapshots_created.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
        "snapshots_deleted": r.snapshots_deleted.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
        "checkpoint": !r.heads.is_empty(),
    })
}

fn log(global: &GlobalArgs, report: &AuditReport, filter: &AuditFilter) {
    let shown = report.entries.iter().filter(|e| filter.matches(&e.record));
    if global.json {
        let entries: Vec<_> = shown.map(entry_json).collect();
        outln!(
            "{}",
            serde_json::json!({ "entries": entries, "problems": report.problems.len() })
        );
        return;
    }
    for e in shown {
        let r = &e.record;
        let outcome = if r.code.is_empty() {
            "ok".to_owned()
        } else if r.detail.is_empty() {
            r.code.clone()
        } else {
            format!("{}/{}", r.code, r.detail)
        };
        let slot = match &r.access {
            nfrepo_format::AuditAccess::KeySlot(id) => format!("key {}", id.short()),
            nfrepo_format::AuditAccess::Credential { slot, label } => {
                format!("put-only {} {}", escape::text(label), slot.short())
            }
            _ => "no key".to_owned(),
        };
        let changes: Vec<String> = r
            .objects
            .iter()
            .map(|o| format!("{}+{}-{}", o.kind, o.created, o.deleted))
            .collect();
        outln!(
            "{} {}@{} {} {} [{}]{}{} {}",
            render::time_ns(r.time_ns),
            escape::text(&r.user),
            escape::text(&r.host),
            escape::text(&r.operation),
            outcome,
            slot,
            if e.authenticated { "" } else { " UNAUTHENTICATED" },
            if changes.is_empty() {
                String::new()
            } else {
                format!(" {}", changes.join(" "))
            },
            escape::text(&r.command.join(" ")),
        );
    }
}

fn verify(global: &GlobalArgs, report: &AuditReport, failure: Option<&Failure>) {
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "ok": failure.is_none(),
                "objects": report.objects,
                "entries": report.entries.len(),
                "writers": report.writers,
                "checkpoints": report.checkpoints,
                "unauthenticated": report.unauthenticated,
                "problems": report.problems.iter().map(|p| serde_json::json!({
                    "object": p.object,
                    "writer": p.entry.map(|(w, _)| w.to_hex()),
                    "seq": p.entry.map(|(_, s)| s),
                    "kind": p.kind.as_str(),
                    "detail": p.detail,
                })).collect::<Vec<_>>(),
                "public_key_problem": report.public_key_problem,
                "error": failure.map(Failure::json),
            })
        );
        return;
    }
    for p in &report.problems {
        outln!(
            "{} {}: {}",
            p.kind.as_str(),
            escape::text(&p.object),
            escape::text(&p.detail)
        );
    }
    if let Some(problem) = &report.public_key_problem {
        outln!("public key: {}", escape::text(problem));
    }
    if !global.quiet {
        outln!(
            "audit log: {} entries from {} writer(s), {} checkpoint(s), {} without MAC: {}",
            report.entries.len(),
            report.writers,
            report.checkpoints,
            report.unauthenticated,
            if failure.is_none() { "intact" } else { "NOT intact" }
        );
    }
}
