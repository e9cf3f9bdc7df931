//! `nfrepo repair index` and `nfrepo repair snapshots`.

use nfrepo_engine::{IndexRepair, Operation, RepairOptions, SnapshotRepair};

use crate::cli::{GlobalArgs, RepairCommand};
use crate::context;
use crate::failure::Failure;
use crate::trail;

pub async fn run(global: &GlobalArgs, command: RepairCommand) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Maintenance).await?.repo;
    let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Maintenance);
    match command {
        RepairCommand::Index { dry_run, break_lease } => {
            let options = RepairOptions::default().dry_run(dry_run).break_lease(break_lease);
            let report = repo.repair_index_with(&options).await.map_err(fail)?;
            trail::replaced_lease(report.replaced_lease.as_ref(), break_lease, global);
            render_index(global, &report, dry_run);
        }
        RepairCommand::Snapshots {
            read_data,
            dry_run,
            break_lease,
        } => {
            let options = RepairOptions::default()
                .read_data(read_data)
                .dry_run(dry_run)
                .break_lease(break_lease);
            let report = repo.repair_snapshots_with(&options).await.map_err(fail)?;
            trail::replaced_lease(report.replaced_lease.as_ref(), break_lease, global);
            render_snapshots(global, &report.snapshots, dry_run, report.replaced_lease.as_ref());
        }
    }
    Ok(0)
}

fn render_index(global: &GlobalArgs, r: &IndexRepair, dry_run: bool) {
    if global.json {
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "dry_run": dry_run,
                "packs_from_trailers": r.packs_from_trailers,
                "packs_from_old_index": r.packs_from_old_index.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                "unindexable": r.unindexable.iter().map(|(p, why)| serde_json::json!({"pack": p.to_hex(), "reason": why})).collect::<Vec<_>>(),
                "missing": r.missing.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                "blobs": r.blobs,
                "written": r.written.map(|i| i.to_hex()),
                "superseded": r.superseded.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
                "replaced_lease": r.replaced_lease.as_ref().map(trail::replaced_lease_json),
            })
        );
        return;
    }
    let verb = if dry_run { "would index" } else { "indexed" };
    crate::output::outln!(
        "{verb} {} blobs from {} pack trailer(s){}",
        r.blobs,
        r.packs_from_trailers,
        if r.packs_from_old_index.is_empty() {
            String::new()
        } else {
            format!(" and {} pack(s) kept from the old index", r.packs_from_old_index.len())
        }
    );
    for pack in &r.packs_from_old_index {
        crate::output::outln!("pack {pack}: trailer damaged; its entries were kept from the old index");
    }
    for (pack, why) in &r.unindexable {
        crate::output::outln!("pack {pack}: cannot be indexed, its blobs are lost: {why}");
    }
    for pack in &r.missing {
        crate::output::outln!(
            "pack {pack}: named by the old index but missing; dropped (run `nfrepo repair snapshots`)"
        );
    }
    match (&r.written, dry_run) {
        (Some(id), _) => crate::output::outln!("wrote index {id}; removed {} superseded delta(s)", r.superseded.len()),
        (None, true) => crate::output::outln!(
            "dry run: would replace {} delta(s); nothing written",
            r.superseded.len()
        ),
        (None, false) => {}
    }
}

fn render_snapshots(
    global: &GlobalArgs,
    repairs: &[SnapshotRepair],
    dry_run: bool,
    replaced: Option<&nfrepo_engine::ReplacedLease>,
) {
    if global.json {
        let list: Vec<_> = repairs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "original": r.original.to_hex(),
                    "repaired": r.repaired.map(|i| i.to_hex()),
                    "removed": r.removed,
                })
            })
            .collect();
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "dry_run": dry_run,
                "snapshots": list,
                "replaced_lease": replaced.map(trail::replaced_lease_json),
            })
        );
        return;
    }
    if repairs.is_empty() {
        crate::output::outln!("no snapshot reaches damaged data; nothing to repair");
        return;
    }
    for r in repairs {
        match (&r.repaired, dry_run) {
            (Some(new), _) => crate::output::outln!(
                "snapshot {}: repaired as {} without {} damaged path(s) (original kept)",
                r.original.short(),
                new.short(),
                r.removed.len()
            ),
            (None, true) => crate::output::outln!(
                "snapshot {}: would be repaired without {} damaged path(s)",
                r.original.short(),
                r.removed.len()
            ),
            (None, false) => crate::output::outln!(
                "snapshot {}: its root tree is lost; nothing left to keep (original kept)",
                r.original.short()
            ),
        }
        for path in &r.removed {
            crate::output::outln!("  damaged: {path}");
        }
    }
}
