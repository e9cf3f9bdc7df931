//! `nfrepo init`.

use nfrepo_engine::{ErrorCode, InitOptions, Operation, Repository};
use nfrepo_format::{Cipher, KdfParams, ObjectLock};
use nfrepo_store::Store;

use crate::cli::{CipherArg, GlobalArgs, InitArgs, KdfArgs, LockModeArg};
use crate::context;
use crate::failure::Failure;
use crate::output::outln;

/// The argon2id parameters of a new key slot: the default's lanes, fewer
/// where the memory asked for is too small for them (argon2 needs 8 KiB a
/// lane).
pub fn kdf(args: &KdfArgs) -> KdfParams {
    KdfParams {
        memory_kib: args.kdf_memory_kib,
        iterations: args.kdf_iterations,
        parallelism: KdfParams::default().parallelism.min(args.kdf_memory_kib / 8).max(1),
    }
}

pub async fn run(global: &GlobalArgs, args: InitArgs) -> Result<i32, Failure> {
    let store = context::open_store(global, Operation::Backup)?;
    let password = match (&global.password_file, std::env::var("NFREPO_PASSWORD")) {
        (None, Err(_)) if !context::has_configured_password(global)? => {
            context::new_password(None, "NFREPO_PASSWORD", "--password-file")?
        }
        _ => context::password(global)?,
    };
    let policy = context::policy(global)?;
    let mut options = InitOptions::default();
    options.cipher = args
        .cipher
        .map(CipherArg::cipher)
        .or(policy.cipher)
        .or(policy.require_cipher)
        .unwrap_or_else(Cipher::preferred);
    options.kdf = kdf(&args.kdf);
    options.pack_size = args.pack_size_mib.saturating_mul(1024 * 1024);
    if let Some(level) = args.zstd_level {
        options.zstd_level = level;
    }
    if let Some(required) = policy.require_cipher
        && required != options.cipher
    {
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            Some("CIPHER_NOT_ALLOWED"),
            format!(
                "cipher {} is not allowed: {} is required; refusing to create the repository",
                options.cipher.name(),
                required.name()
            ),
        ));
    }
    options.object_lock = args.object_lock.map(|days| {
        let day = 86_400u64;
        let audit_days = args.object_lock_audit.unwrap_or(days.max(365)).max(days);
        ObjectLock {
            mode: match args.object_lock_mode.unwrap_or(LockModeArg::Compliance) {
                LockModeArg::Compliance => ObjectLock::COMPLIANCE,
                LockModeArg::Governance => ObjectLock::GOVERNANCE,
            },
            retain_secs: u64::from(days) * day,
            audit_retain_secs: u64::from(audit_days) * day,
        }
    });
    let location = store.location().to_owned();
    let repo = Repository::init(store.clone(), &password, options)
        .await
        .map_err(|e| Failure::engine(&e, Operation::Backup))?;
    crate::trail::opened(&repo);
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "repository": location,
                "id": repo.id().to_hex(),
                "cipher": repo.cipher().name(),
                "object_lock": repo.config().object_lock.map(|lock| serde_json::json!({
                    "mode": lock_mode_name(lock.mode),
                    "retain_days": lock.retain_secs / 86_400,
                    "audit_retain_days": lock.audit_retain_secs / 86_400,
                })),
            })
        );
    } else if !global.quiet {
        outln!(
            "created repository {} at {location} ({})",
            repo.id().short(),
            repo.cipher().name()
        );
        if let Some(lock) = repo.config().object_lock {
            outln!(
                "object lock: {} mode, {} days ({} days for audit entries and the config)",
                lock_mode_name(lock.mode),
                lock.retain_secs / 86_400,
                lock.audit_retain_secs / 86_400
            );
        }
    }
    Ok(0)
}

fn lock_mode_name(mode: u8) -> &'static str {
    if mode == ObjectLock::GOVERNANCE {
        "governance"
    } else {
        "compliance"
    }
}

#[cfg(test)]
mod tests {
    use super::kdf;
    use crate::cli::KdfArgs;

    fn lanes(kdf_memory_kib: u32) -> u32 {
        kdf(&KdfArgs {
            kdf_memory_kib,
            kdf_iterations: 1,
        })
        .parallelism
    }

    #[test]
    fn a_new_slot_takes_four_lanes_or_as_many_as_its_memory_allows() {
        assert_eq!(lanes(65536), 4, "the default memory");
        assert_eq!(lanes(32), 4);
        assert_eq!(lanes(24), 3, "argon2 needs 8 KiB a lane");
        assert_eq!(lanes(8), 1, "the least memory accepted");
    }
}
