//! `nfrepo key list|add|remove|passwd|rotate`.

use nfrepo_engine::{
    ErrorCode, GcOptions, Operation, Repository, ResealReport, RotateOptions, RotateReport, SlotRef, Span, UnlockCache,
};
use nfrepo_format::KeyId;

use crate::cli::{GlobalArgs, KeyCommand};
use crate::commands::init::kdf;
use crate::failure::Failure;
use crate::output::outln;
use crate::progress::Progress;
use crate::{context, render};

pub async fn run(global: &GlobalArgs, command: KeyCommand) -> Result<i32, Failure> {
    if matches!(command, KeyCommand::Lock) {
        return lock(global).await;
    }
    let context::Opened { repo, password, .. } = context::open_repository_to_read(global, Operation::Backup).await?;
    let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Backup);
    if matches!(
        command,
        KeyCommand::Passwd(_) | KeyCommand::Remove { .. } | KeyCommand::Rotate(_)
    ) {
        // The slot this host cached is about to change: its cache could open
        // nothing afterwards, so it goes now rather than on the next run.
        if let Some(dir) = context::cache_dir(global) {
            let _ = UnlockCache::forget(&dir, &repo.id());
        }
    }
    match command {
        // Handled above, before the repository is opened.
        KeyCommand::Lock => return lock(global).await,
        KeyCommand::List => {
            let keys = repo.list_keys(&password).await.map_err(fail)?;
            if global.json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id.to_hex(), "label": k.label, "created": k.created, "current": k.current, "epoch": k.epoch}))
                    .collect();
                outln!("{}", serde_json::Value::Array(list));
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            if k.current { "*".into() } else { String::new() },
                            k.id.short(),
                            render::time_ns(k.created.saturating_mul(1_000_000_000)),
                            k.epoch.map_or_else(|| "?".into(), |e| e.to_string()),
                            k.label.clone(),
                        ]
                    })
                    .collect();
                render::table(&["", "ID", "CREATED", "EPOCH", "LABEL"], &rows);
            }
        }
        KeyCommand::Add(args) if args.put_only => {
            let (Some(label), Some(output)) = (args.label.as_deref(), args.output.as_deref()) else {
                return Err(Failure::new(
                    ErrorCode::BackupFailed,
                    Some("INVALID_ARGUMENT"),
                    "--put-only needs --label and --output",
                ));
            };
            // Checked before the slot is written, so that a refused
            // --output leaves no credential slot without its file.
            if output.exists() {
                return Err(Failure::new(
                    ErrorCode::BackupFailed,
                    Some("INVALID_ARGUMENT"),
                    format!("--output {} exists; refusing to overwrite it", output.display()),
                ));
            }
            let credential = repo.add_put_only_key(label).await.map_err(fail)?;
            context::write_credential_file(output, &credential)?;
            print_id(global, "added put-only credential", &credential.slot);
        }
        KeyCommand::Add(args) => {
            let args = args.password;
            let new = context::new_password(
                args.new_password_file.as_deref(),
                "NFREPO_NEW_PASSWORD",
                "--new-password-file",
            )?;
            let id = repo
                .add_key(&password, &new, kdf(&args.kdf), nfrepo_engine::user_at_host())
                .await
                .map_err(fail)?;
            print_id(global, "added key", &id);
        }
        KeyCommand::Remove { id } => {
            let keys = repo.list_keys(&password).await.map_err(fail)?;
            let wanted = id.to_ascii_lowercase();
            let matches: Vec<_> = keys.iter().filter(|k| k.id.to_hex().starts_with(&wanted)).collect();
            let target = match matches.as_slice() {
                [one] => one.id,
                [] => {
                    return Err(Failure::new(
                        ErrorCode::BackupNotFound,
                        None,
                        format!("no key slot {id}"),
                    ));
                }
                _ => {
                    return Err(Failure::new(
                        ErrorCode::BackupNotFound,
                        None,
                        format!("key prefix {id} is ambiguous"),
                    ));
                }
            };
            repo.remove_key(&password, &target).await.map_err(fail)?;
            print_id(global, "removed key", &target);
        }
        KeyCommand::Passwd(args) => {
            let new = context::new_password(
                args.new_password_file.as_deref(),
                "NFREPO_NEW_PASSWORD",
                "--new-password-file",
            )?;
            let id = repo
                .change_password(&password, &new, kdf(&args.kdf))
                .await
                .map_err(fail)?;
            print_id(global, "changed password; new key", &id);
        }
        KeyCommand::Rotate(args) => {
            let keep = args
                .keep_password_files
                .iter()
                .map(|path| context::password_from_file(path))
                .collect::<Result<Vec<_>, _>>()?;
            let rotate = RotateOptions::default().keep_passwords(keep);
            // Rotation takes the maintenance lease: "busy" is its own exit status.
            let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Maintenance);
            if !args.reseal {
                let report = repo.rotate_keys(&password, rotate).await.map_err(fail)?;
                print_rotation(global, &report, None);
                return Ok(0);
            }
            let grace = Span::parse(&args.grace).map_err(|e| Failure::usage(e.to_string()))?;
            let mut gc = GcOptions::default();
            gc.grace = std::time::Duration::from_secs(grace.as_secs());
            let work = std::sync::Arc::new(nfrepo_engine::Work::default());
            gc.work = Some(work.clone());
            let progress = Progress::work(global, "reseal", work, "packs");
            let done = repo
                .rotate_keys_and_reseal(&password, rotate, &super::reseal::options(gc))
                .await;
            progress.finish().await;
            let (report, resealed) = done.map_err(fail)?;
            print_rotation(global, &report, Some(&resealed));
        }
    }
    Ok(0)
}

fn print_rotation(global: &GlobalArgs, report: &RotateReport, resealed: Option<&ResealReport>) {
    let slots = |list: &[SlotRef]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|s| serde_json::json!({"id": s.id.to_hex(), "label": s.label}))
            .collect()
    };
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "epoch": report.epoch,
                "previous_epoch": report.previous_epoch,
                "resumed": report.resumed,
                "rewritten": slots(&report.rewritten),
                "already_current": slots(&report.already_current),
                "revoked": slots(&report.revoked),
                "reseal": resealed.map(super::reseal::json),
            })
        );
        return;
    }
    if global.quiet {
        return;
    }
    if report.resumed {
        outln!("finished the interrupted rotation to key epoch {}", report.epoch);
    } else {
        outln!(
            "rotated to key epoch {} (from {}): everything written from now on is sealed under it",
            report.epoch,
            report.previous_epoch
        );
    }
    for (what, list) in [
        ("rewrote", &report.rewritten),
        ("already at the new epoch", &report.already_current),
        ("revoked", &report.revoked),
    ] {
        for slot in list {
            outln!(
                "{what} key {} {}",
                slot.id.short(),
                crate::output::escape::text(&slot.label)
            );
        }
    }
    match resealed {
        Some(resealed) => super::reseal::print(resealed),
        None => outln!(
            "data written before the rotation stays sealed under older key epochs: revoked passwords and old keys still open it (until `nfrepo gc --reseal`)"
        ),
    }
}

/// `key lock`: removes this host's cached unlock, found by the repository
/// id in the config header; no password is asked for.
async fn lock(global: &GlobalArgs) -> Result<i32, Failure> {
    let store = context::open_store(global, Operation::Backup)?;
    let id = Repository::read_id(store.as_ref())
        .await
        .map_err(|e| Failure::engine(&e, Operation::Backup))?;
    let Some(dir) = context::cache_dir(global) else {
        return Err(Failure::usage(
            "no cache directory (--no-cache, or no home): there is no cached unlock to remove",
        ));
    };
    let removed = UnlockCache::forget(&dir, &id).map_err(|e| Failure::engine(&e, Operation::Backup))?;
    if global.json {
        outln!("{}", serde_json::json!({"repository": id.to_hex(), "removed": removed}));
    } else if !global.quiet {
        outln!(
            "{}",
            if removed {
                "removed this host's cached unlock"
            } else {
                "this host has no cached unlock of the repository"
            }
        );
    }
    Ok(0)
}

fn print_id(global: &GlobalArgs, what: &str, id: &KeyId) {
    if global.json {
        outln!("{}", serde_json::json!({"key": id.to_hex()}));
    } else if !global.quiet {
        outln!("{what} {}", id.short());
    }
}
