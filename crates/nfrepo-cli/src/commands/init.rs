//! `nfrepo init`.

use nfrepo_engine::{InitOptions, Operation, Repository};
use nfrepo_format::{Cipher, KdfParams};
use nfrepo_store::Store;

use crate::cli::{CipherArg, GlobalArgs, InitArgs, KdfArgs};
use crate::context;
use crate::failure::Failure;
use crate::output::outln;

pub fn kdf(args: &KdfArgs) -> KdfParams {
    KdfParams {
        memory_kib: args.kdf_memory_kib,
        iterations: args.kdf_iterations,
        parallelism: 1,
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
    let mut options = InitOptions::default();
    options.cipher = match args.cipher {
        CipherArg::Xchacha20poly1305 => Cipher::XChaCha20Poly1305,
        CipherArg::Aes256gcm => Cipher::Aes256Gcm,
    };
    options.kdf = kdf(&args.kdf);
    options.pack_size = args.pack_size_mib.saturating_mul(1024 * 1024);
    let location = store.location().to_owned();
    let repo = Repository::init(store.clone(), &password, options)
        .await
        .map_err(|e| Failure::engine(&e, Operation::Backup))?;
    crate::trail::opened(&repo);
    if global.json {
        outln!(
            "{}",
            serde_json::json!({"repository": location, "id": repo.id().to_hex(), "cipher": repo.cipher().name()})
        );
    } else if !global.quiet {
        outln!(
            "created repository {} at {location} ({})",
            repo.id().short(),
            repo.cipher().name()
        );
    }
    Ok(0)
}
