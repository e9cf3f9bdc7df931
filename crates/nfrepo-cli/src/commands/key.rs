//! `nfrepo key list|add|remove|passwd`.

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_format::KeyId;

use crate::cli::{GlobalArgs, KeyCommand};
use crate::commands::init::kdf;
use crate::failure::Failure;
use crate::output::outln;
use crate::{context, render};

pub async fn run(global: &GlobalArgs, command: KeyCommand) -> Result<i32, Failure> {
    let context::Opened { repo, password, .. } = context::open_repository(global, Operation::Backup).await?;
    let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Backup);
    match command {
        KeyCommand::List => {
            let keys = repo.list_keys(&password).await.map_err(fail)?;
            if global.json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id.to_hex(), "label": k.label, "created": k.created, "current": k.current}))
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
                            k.label.clone(),
                        ]
                    })
                    .collect();
                render::table(&["", "ID", "CREATED", "LABEL"], &rows);
            }
        }
        KeyCommand::Add(args) => {
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
