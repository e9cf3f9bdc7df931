//! `nfrepo protect` and `nfrepo unprotect`.

use nfrepo_engine::Operation;

use crate::cli::{GlobalArgs, ProtectArgs, UnprotectArgs};
use crate::context;
use crate::failure::Failure;

pub async fn protect(global: &GlobalArgs, args: ProtectArgs) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Backup).await?.repo;
    let id = repo
        .protect(&args.snapshot, &args.note)
        .await
        .map_err(|e| Failure::engine(&e, Operation::Backup))?;
    if global.json {
        crate::output::outln!("{}", serde_json::json!({"snapshot": id.to_hex(), "protected": true}));
    } else if !global.quiet {
        crate::output::outln!("snapshot {} is protected from forget", id.short());
    }
    Ok(0)
}

pub async fn unprotect(global: &GlobalArgs, args: UnprotectArgs) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Backup).await?.repo;
    let done = repo
        .unprotect(&args.snapshot)
        .await
        .map_err(|e| Failure::engine(&e, Operation::Backup))?;
    let id = done.snapshot;
    if global.json {
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "snapshot": id.to_hex(),
                "protected": false,
                "was_protected": done.was_protected,
                "orphan": done.orphan,
            })
        );
    } else if !global.quiet {
        let how = match (done.orphan, done.was_protected) {
            (true, _) => "does not exist; its orphaned protect marker was removed",
            (false, true) => "no longer protected",
            (false, false) => "was not protected",
        };
        crate::output::outln!("snapshot {} {how}", id.short());
    }
    Ok(0)
}
