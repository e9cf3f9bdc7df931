//! `nfrepo mark-good SNAPSHOT [--note TEXT] [--remove]`: record (or
//! withdraw) that a deployment made from a snapshot passed its checks, as a
//! good marker beside the snapshot (format-spec/good.md).

use nfrepo_engine::Operation;

use crate::cli::{GlobalArgs, MarkGoodArgs};
use crate::context;
use crate::failure::Failure;

pub async fn run(global: &GlobalArgs, args: MarkGoodArgs) -> Result<i32, Failure> {
    let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Backup);
    let repo = context::open_repository(global, Operation::Backup).await?.repo;
    if args.remove {
        let (id, was) = repo.unmark_good(&args.snapshot).await.map_err(fail)?;
        if global.json {
            crate::output::outln!(
                "{}",
                serde_json::json!({"snapshot": id.to_hex(), "good": false, "was_good": was})
            );
        } else if !global.quiet {
            let how = if was {
                "is no longer marked good"
            } else {
                "was not marked good"
            };
            crate::output::outln!("snapshot {} {how}", id.short());
        }
        return Ok(0);
    }
    let entry = repo.mark_good(&args.snapshot, &args.note).await.map_err(fail)?;
    if global.json {
        crate::output::outln!(
            "{}",
            serde_json::json!({"snapshot": entry.id.to_hex(), "source": entry.snapshot.source, "good": true})
        );
    } else if !global.quiet {
        crate::output::outln!(
            "snapshot {} of {} is marked good",
            entry.id.short(),
            entry.snapshot.source
        );
    }
    Ok(0)
}
