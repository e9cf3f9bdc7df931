//! `nfrepo verify SNAPSHOT`: recompute a snapshot's Merkle root and prove everything under it.

use nfrepo_engine::{ErrorCode, Operation};

use crate::cli::{GlobalArgs, VerifyArgs};
use crate::commands::check::{fail_quietly, finding_json, print_finding};
use crate::failure::Failure;
use crate::output::{escape, outln};
use crate::{context, render};

pub async fn run(global: &GlobalArgs, args: VerifyArgs) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let progress = crate::progress::Progress::traffic(global, "verify");
    let report = repo.verify_snapshot(&args.snapshot, args.read_data).await;
    progress.finish().await;
    let report = report.map_err(|e| Failure::engine(&e, Operation::Inspect))?;
    let findings: Vec<_> = report.findings().collect();
    let failure = (!report.is_intact()).then(|| {
        let code = findings
            .iter()
            .map(|f| f.code)
            .min_by_key(|c| match c {
                ErrorCode::BackupCorrupted => 0,
                ErrorCode::BackupNotFound => 1,
                _ => 2,
            })
            .unwrap_or(ErrorCode::BackupCorrupted);
        Failure::new(
            code,
            Some("VERIFY_FAILED"),
            format!(
                "snapshot {} does not match its stored Merkle root {}",
                report.snapshot.id.short(),
                report.stored_root
            ),
        )
    });
    let computed = report.computed_root.map(|r| r.to_hex());
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "snapshot": report.snapshot.id.to_hex(),
                "ok": failure.is_none(),
                "stored_root": report.stored_root.to_hex(),
                "computed_root": computed,
                "trees": report.check.trees,
                "lists": report.check.lists,
                "data_refs": report.check.data_refs,
                "files_read": report.files_read,
                "bytes_read": report.bytes_read,
                "findings": findings.iter().map(|f| finding_json(f)).collect::<Vec<_>>(),
                "content_problems": report.content_problems.iter().map(|(p, m)| serde_json::json!({"path": p, "message": m})).collect::<Vec<_>>(),
                "error": failure.as_ref().map(Failure::json),
            })
        );
    } else {
        for finding in &findings {
            print_finding(finding);
        }
        for (path, message) in &report.content_problems {
            outln!(
                "{} {}: {}",
                ErrorCode::BackupCorrupted,
                escape::text(path),
                escape::text(message)
            );
        }
        if !global.quiet {
            outln!("snapshot    {}", report.snapshot.id);
            outln!("stored root {}", report.stored_root);
            outln!(
                "computed    {}",
                computed.as_deref().unwrap_or("(root tree unreadable)")
            );
            outln!(
                "proved {} trees, {} content lists, {} chunk references{}",
                report.check.trees,
                report.check.lists,
                report.check.data_refs,
                if args.read_data {
                    format!(
                        "; read {} files, {}",
                        report.files_read,
                        render::bytes(report.bytes_read)
                    )
                } else {
                    String::new()
                }
            );
            if failure.is_none() {
                outln!("verified: the snapshot matches its Merkle root");
            }
        }
    }
    Ok(failure.as_ref().map_or(0, fail_quietly))
}
