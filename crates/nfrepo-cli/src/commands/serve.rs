//! `nfrepo serve --append-only --listen ADDR`: the repository's store, served
//! to backup hosts by `nfrepo_server` until SIGINT or SIGTERM. Without
//! `--append-only`, the admin panel (`commands::panel`).

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_server::{Auth, Server, ServerOptions, TlsFiles, Token};

use crate::cli::{GlobalArgs, ServeArgs, ServeCommand};
use crate::context;
use crate::failure::Failure;
use crate::output::outln;

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<i32, Failure> {
    match &args.command {
        Some(ServeCommand::HashPassword) => return crate::commands::panel::hash_password(),
        Some(ServeCommand::TotpSecret(secret)) => return crate::commands::panel::totp_secret(secret),
        None => {}
    }
    if !args.append_only {
        return crate::commands::panel::run(global, args).await;
    }
    let listen = args
        .listen
        .ok_or_else(|| Failure::usage("--append-only needs --listen ADDR"))?;
    let auth = match &args.token_file {
        Some(path) => {
            let token = nfrepo_store::read_token_file(path).map_err(|e| failure(&nfrepo_server::Error::Token(e)))?;
            // Never logged anyway; masked should a cause ever quote it.
            nfrepo_sources::protect_value(&token);
            Auth::Token(Token::from_secret(token.as_bytes()))
        }
        None => Auth::None,
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let allow_insecure_http = context::policy(global)?.allow_insecure_http;
    let options = ServerOptions::new(listen, auth)
        .tls(tls)
        .allow_insecure_http(allow_insecure_http);
    // The store only: the server never opens the repository, so it needs no password.
    let store = context::open_store(global, Operation::Backup)?;
    let server = Server::bind(store, options).await.map_err(|e| failure(&e))?;
    if global.json {
        crate::output::json(serde_json::json!({
            "url": server.url(),
            "listen": server.local_addr().to_string(),
            "mode": "append-only",
        }));
    } else {
        outln!("serving {} (append-only)", server.url());
    }
    server.run(shutdown()).await.map_err(|e| failure(&e))?;
    tracing::info!("the server stopped");
    Ok(0)
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot watch for SIGINT/SIGTERM; stop the server with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

pub fn failure(err: &nfrepo_server::Error) -> Failure {
    use nfrepo_server::Error as E;
    let message = err.to_string();
    match err {
        E::NoAuthOffLoopback(_) => Failure::new(ErrorCode::PermissionDenied, Some("NO_AUTH"), message),
        E::InsecureHttp(_) => Failure::new(ErrorCode::PermissionDenied, Some("INSECURE_HTTP"), message),
        E::Token(_) => Failure::new(ErrorCode::PermissionDenied, Some("CREDENTIALS"), message),
        E::ObjectLock(_) => Failure::new(ErrorCode::PermissionDenied, Some("OBJECT_LOCK"), message),
        E::Tls { .. } => Failure::usage(message),
        E::Store(e) => Failure::store(e, Operation::Backup),
        _ => Failure::new(ErrorCode::BackupFailed, Some("SERVER_FAILED"), message),
    }
}
