//! `nfrepo serve --listen ADDR` (without `--append-only`): the admin panel,
//! JSON API and /metrics of `nfrepo_panel`, over the repository held open
//! until SIGINT or SIGTERM; and its helpers `serve hash-password` and
//! `serve totp-secret`.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_panel::{Panel, PanelOptions, ServeConfig, User};
use nfrepo_server::{TlsFiles, Token};

use crate::cli::{GlobalArgs, ServeArgs, TotpSecretArgs};
use crate::commands::alerts;
use crate::context;
use crate::failure::Failure;
use crate::output::outln;

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<i32, Failure> {
    let config = crate::config::load(global.config.as_deref())?;
    let serve = config.as_ref().and_then(|c| c.serve.clone()).unwrap_or_default();
    let listen = args.listen.or(serve.listen).ok_or_else(|| {
        Failure::usage("give --listen ADDR (or listen under [serve]), and --append-only to serve the store instead")
    })?;
    let tls = match (
        args.tls_cert.or(serve.tls_cert.clone()),
        args.tls_key.or(serve.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let users = serve
        .users
        .iter()
        .map(User::load)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failure(&e))?;
    let api_token = match &serve.api_token_file {
        Some(path) => Some(Token::from_file(path).map_err(|e| failure(&e.into()))?),
        None => None,
    };
    let alerts_config = config.as_ref().and_then(|c| c.alerts.clone()).unwrap_or_default();
    let channels = alerts::configured_channels(&alerts_config)?;
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let alert_state = alerts::state_path(global, &alerts_config, &repo)?;
    let mut options = PanelOptions::new(listen, users, alert_state);
    options.tls = tls;
    options.allow_insecure_http = serve.allow_insecure_http || context::policy(global)?.allow_insecure_http;
    options.api_token = api_token;
    options.restore_targets = serve.restore_targets.clone();
    options.database_targets = database_targets(config.as_ref(), &serve)?;
    options.watch = alerts::watch(config.as_ref());
    options.alerts = alerts_config;
    options.channels = channels;
    options.replicas = alerts::open_replicas(global, config.as_ref());
    set_times(&mut options, &serve);
    options.cache_dir = context::cache_dir(global);
    let panel = Panel::bind(repo, options).await.map_err(|e| failure(&e))?;
    if global.json {
        crate::output::json(serde_json::json!({
            "url": panel.url(),
            "listen": panel.local_addr().to_string(),
            "mode": "panel",
        }));
    } else {
        outln!("serving {} (admin panel)", panel.url());
    }
    panel
        .run(crate::commands::serve::shutdown())
        .await
        .map_err(|e| failure(&e))?;
    tracing::info!("the panel stopped");
    Ok(0)
}

/// `[serve.database_targets]` with their passwords: the target's own
/// `password_env`/`password_file`, else found as `restore --into` finds
/// them (`config::server_credentials`). Read once, at start.
fn database_targets(
    config: Option<&crate::config::Config>,
    serve: &ServeConfig,
) -> Result<std::collections::BTreeMap<String, nfrepo_sources::DatabaseTarget>, Failure> {
    let mut targets = std::collections::BTreeMap::new();
    for (name, target) in &serve.database_targets {
        let invalid = |e: &nfrepo_sources::Error| Failure::usage(format!("serve.database_targets.{name}: {e}"));
        let connection = nfrepo_sources::Connection::parse(&target.url).map_err(|e| invalid(&e))?;
        let connection = if target.password_env.is_some() || target.password_file.is_some() {
            let password = crate::config::read_secret(target.password_env.as_deref(), target.password_file.as_deref())?;
            connection.with_password(password)
        } else {
            crate::config::server_credentials(config, connection, "")?.connection
        };
        let server = nfrepo_sources::DatabaseTarget::for_connection(connection).map_err(|e| invalid(&e))?;
        targets.insert(name.clone(), server);
    }
    Ok(targets)
}

fn set_times(options: &mut PanelOptions, serve: &ServeConfig) {
    let secs = |span: nfrepo_engine::Span| Duration::from_secs(span.as_secs());
    options.refresh = secs(serve.refresh);
    options.session_idle = secs(serve.session_idle);
    options.session_max = secs(serve.session_max);
    options.lockout_failures = serve.lockout_failures;
    options.lockout_for = secs(serve.lockout_for);
}

/// `serve hash-password`: the password from stdin (without echo on a
/// terminal), its PHC string on stdout.
pub fn hash_password() -> Result<i32, Failure> {
    let password = if std::io::stdin().is_terminal() {
        let typed = zeroize::Zeroizing::new(
            rpassword::prompt_password("password: ")
                .map_err(|e| Failure::usage(format!("cannot read the password: {e}")))?,
        );
        let again = zeroize::Zeroizing::new(
            rpassword::prompt_password("again: ")
                .map_err(|e| Failure::usage(format!("cannot read the password: {e}")))?,
        );
        if *typed != *again {
            return Err(Failure::usage("the two passwords differ"));
        }
        typed
    } else {
        let mut text = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("cannot read the password from stdin: {e}")))?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        zeroize::Zeroizing::new(line.strip_suffix('\r').unwrap_or(line).to_owned())
    };
    if password.is_empty() {
        return Err(Failure::usage("the password is empty"));
    }
    let hash = nfrepo_panel::hash_password(password.as_bytes()).map_err(|e| failure(&e))?;
    outln!("{hash}");
    Ok(0)
}

/// `serve totp-secret --name N --file F`: a new secret in a new 0600 file,
/// and the otpauth:// URL to give the user's authenticator app.
pub fn totp_secret(args: &TotpSecretArgs) -> Result<i32, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let secret = nfrepo_panel::new_totp_secret().map_err(|e| failure(&e))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.file)
        .map_err(|e| {
            Failure::new(
                ErrorCode::PermissionDenied,
                Some("CREDENTIALS"),
                format!("cannot create {}: {e}", args.file.display()),
            )
        })?;
    file.write_all(format!("{}\n", secret.as_str()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::new(ErrorCode::BackupFailed, None, format!("{}: {e}", args.file.display())))?;
    let name: String = args
        .name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    outln!(
        "otpauth://totp/nfrepo:{name}?secret={}&issuer=nfrepo&algorithm=SHA1&digits=6&period=30",
        secret.as_str()
    );
    Ok(0)
}

fn failure(err: &nfrepo_panel::Error) -> Failure {
    use nfrepo_panel::Error as E;
    match err {
        E::Server(e) => crate::commands::serve::failure(e),
        E::Ops(e) => alerts::ops_failure(e),
        E::User { .. } => Failure::new(ErrorCode::PermissionDenied, Some("CREDENTIALS"), err.to_string()),
        E::Config(message) if message.contains("plain http") => {
            Failure::new(ErrorCode::PermissionDenied, Some("INSECURE_HTTP"), err.to_string())
        }
        E::Config(_) => Failure::usage(err.to_string()),
        _ => Failure::new(ErrorCode::BackupFailed, Some("SERVER_FAILED"), err.to_string()),
    }
}
