//! `nfrepo alerts`: evaluate the alert rules against the repository.
//!
//! The rules, their state and the channels are `nfrepo_ops`; this module
//! turns nfrepo.toml into what they watch, opens the repository and the
//! replicas, and prints. The state file (default
//! `<cache dir>/alerts/<repository id>.json`) is updated on every run, so
//! `FIRST FIRED` is the first run that saw an alert. With `--notify` the
//! notices due go to the configured channels, and the command fails
//! (`BACKUP_FAILED/NOTIFY_FAILED`) when a channel refused one; the state
//! keeps a notice no channel took due for the next run.

use std::path::PathBuf;
use std::sync::Arc;

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_ops::{
    AlertState, AlertsConfig, Channel, Delivery, Email, Facts, Origin, ReplicaTarget, ReplicaWatch, Schedule, Secret,
    SourceWatch, Status, SystemClock, Watch, Webhook,
};

use crate::cli::{AlertsCommand, GlobalArgs};
use crate::config::Config;
use crate::failure::Failure;
use crate::output::outln;
use crate::{context, render};

/// How far back the audit log is read (persistent errors look this far back).
const AUDIT_HISTORY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

pub async fn run(global: &GlobalArgs, args: crate::cli::AlertsArgs) -> Result<i32, Failure> {
    let config = crate::config::load(global.config.as_deref())?;
    let alerts_config = config.as_ref().and_then(|c| c.alerts.clone()).unwrap_or_default();
    let channels = if args.notify || matches!(args.command, Some(AlertsCommand::Test)) {
        channels(&alerts_config)?
    } else {
        Vec::new()
    };
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let origin = Origin {
        repository: repo.id().to_hex(),
        host: nfrepo_engine::hostname(),
    };
    if let Some(AlertsCommand::Test) = args.command {
        let deliveries = nfrepo_ops::send_test(&channels, &origin, &SystemClock).await;
        print_deliveries(global, &deliveries);
        return delivery_result(&deliveries);
    }
    let state_path = state_path(global, &alerts_config, &repo)?;
    let now = nfrepo_ops::unix_ns(std::time::SystemTime::now());
    let mut state = AlertState::load(&state_path).map_err(|e| ops_failure(&e))?;
    if let Some(AlertsCommand::Ack(ack)) = args.command {
        if !state.acknowledge(&ack.key, &nfrepo_engine::user_at_host(), now) {
            return Err(Failure::new(
                ErrorCode::BackupNotFound,
                Some("NO_SUCH_ALERT"),
                format!("no firing alert {:?} (see `nfrepo alerts`)", ack.key),
            ));
        }
        state.save(&state_path).map_err(|e| ops_failure(&e))?;
        if !global.quiet {
            outln!("acknowledged {}", crate::output::escape::text(&ack.key));
        }
        return Ok(0);
    }
    let facts = gather(global, config.as_ref(), &repo, now).await?;
    let current = nfrepo_ops::evaluate(&facts, &watch(config.as_ref()), &alerts_config, now);
    let notices = state.update(current, now, alerts_config.repeat.as_nanos());
    let deliveries = if args.notify {
        nfrepo_ops::deliver(&mut state, notices, &channels, &origin, &SystemClock).await
    } else {
        Vec::new()
    };
    state.save(&state_path).map_err(|e| ops_failure(&e))?;
    if global.json && args.notify {
        outln!(
            "{}",
            serde_json::json!({ "alerts": alerts_json(&state), "sent": deliveries_json(&deliveries) })
        );
    } else {
        print(global, &state);
        if !global.json {
            print_deliveries(global, &deliveries);
        }
    }
    delivery_result(&deliveries)
}

/// The configured channels, their secrets read (and kept out of every log line).
fn channels(config: &AlertsConfig) -> Result<Vec<Channel>, Failure> {
    let channels = configured_channels(config)?;
    if channels.is_empty() {
        return Err(Failure::usage(
            "no alert channel is configured: add [alerts.webhook] or [alerts.email] to nfrepo.toml",
        ));
    }
    Ok(channels)
}

/// The configured channels, none or more (the panel runs without any).
pub fn configured_channels(config: &AlertsConfig) -> Result<Vec<Channel>, Failure> {
    let mut channels = Vec::new();
    let invalid = |e: nfrepo_ops::Error| Failure::new(ErrorCode::BackupFailed, Some("CONFIG_INVALID"), e.to_string());
    if let Some(webhook) = &config.webhook {
        let secret = crate::config::read_secret(webhook.secret_env.as_deref(), webhook.secret_file.as_deref())?
            .ok_or_else(|| Failure::usage("[alerts.webhook] needs secret_file or secret_env"))?;
        channels.push(Channel::Webhook(
            Webhook::new(webhook.clone(), Secret::new(secret.expose())).map_err(invalid)?,
        ));
    }
    if let Some(email) = &config.email {
        let password = crate::config::read_secret(email.password_env.as_deref(), email.password_file.as_deref())?
            .map(|p| Secret::new(p.expose()));
        channels.push(Channel::Email(Box::new(
            Email::new(email.clone(), password).map_err(invalid)?,
        )));
    }
    Ok(channels)
}

fn delivery_result(deliveries: &[Delivery]) -> Result<i32, Failure> {
    let failed: Vec<String> = deliveries
        .iter()
        .filter_map(|d| {
            d.error
                .as_ref()
                .map(|e| format!("{} {} to {}: {e}", d.kind.as_str(), d.key, d.channel))
        })
        .collect();
    match failed.first() {
        None => Ok(0),
        Some(first) => Err(Failure::new(
            ErrorCode::BackupFailed,
            Some("NOTIFY_FAILED"),
            format!("{} notice(s) not sent; first: {first}", failed.len()),
        )),
    }
}

fn deliveries_json(deliveries: &[Delivery]) -> serde_json::Value {
    deliveries
        .iter()
        .map(|d| serde_json::json!({ "kind": d.kind.as_str(), "key": d.key, "channel": d.channel, "ok": d.error.is_none(), "error": d.error }))
        .collect()
}

fn print_deliveries(global: &GlobalArgs, deliveries: &[Delivery]) {
    if global.json {
        outln!("{}", deliveries_json(deliveries));
        return;
    }
    if global.quiet {
        return;
    }
    for d in deliveries {
        let outcome = d
            .error
            .as_deref()
            .map_or_else(|| "sent".to_owned(), |e| format!("NOT SENT: {e}"));
        outln!(
            "{} {} to {}: {}",
            d.kind.as_str(),
            crate::output::escape::text(&d.key),
            d.channel,
            crate::output::escape::text(&outcome)
        );
    }
}

/// The facts of the repository and of every configured replica.
pub async fn gather(
    global: &GlobalArgs,
    config: Option<&Config>,
    repo: &nfrepo_engine::Repository,
    now: i64,
) -> Result<Facts, Failure> {
    let replicas = open_replicas(global, config);
    let mut facts = nfrepo_ops::gather(repo, &replicas, now, AUDIT_HISTORY)
        .await
        .map_err(|e| ops_failure(&e))?;
    for name in config.map(|c| c.replication.keys()).into_iter().flatten() {
        if !facts.replicas.iter().any(|r| &r.name == name) {
            facts.replicas.push(nfrepo_ops::ReplicaFact {
                name: name.clone(),
                error: Some("the replica's location cannot be opened".into()),
                ..nfrepo_ops::ReplicaFact::default()
            });
        }
    }
    Ok(facts)
}

/// The configured replicas that open; one that does not is logged (and
/// reported as the replica's status error by the rules).
pub fn open_replicas(global: &GlobalArgs, config: Option<&Config>) -> Vec<ReplicaTarget> {
    let mut replicas = Vec::new();
    for (name, target) in config.map(|c| &c.replication).into_iter().flatten() {
        match context::open_location(
            global,
            &target.url,
            target.credentials_file.as_deref(),
            Operation::Inspect,
        ) {
            Ok(store) => replicas.push(ReplicaTarget {
                name: name.clone(),
                store: Arc::new(store) as Arc<dyn nfrepo_store::Store>,
            }),
            Err(failure) => tracing::warn!(replica = %name, error = %failure.message, "cannot open replica"),
        }
    }
    replicas
}

/// What the configuration expects: sources with a schedule or an rpo, replicas with a max_lag.
pub fn watch(config: Option<&Config>) -> Watch {
    let Some(config) = config else {
        return Watch::default();
    };
    Watch {
        sources: config
            .sources
            .iter()
            .map(|(name, source)| SourceWatch {
                name: name.clone(),
                // Loading checked it: a schedule that does not parse is never here.
                schedule: source.schedule.as_deref().and_then(|s| Schedule::parse(s).ok()),
                rpo: source.rpo,
            })
            .collect(),
        replicas: config
            .replication
            .iter()
            .map(|(name, r)| ReplicaWatch {
                name: name.clone(),
                max_lag: r.max_lag,
            })
            .collect(),
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    }
}

/// `[alerts] state_file`, else `<cache dir>/alerts/<repository id>.json`.
pub fn state_path(
    global: &GlobalArgs,
    config: &AlertsConfig,
    repo: &nfrepo_engine::Repository,
) -> Result<PathBuf, Failure> {
    if let Some(path) = &config.state_file {
        return Ok(path.clone());
    }
    let dir = context::cache_dir(global).ok_or_else(|| {
        Failure::usage(
            "alert state needs a place: set state_file under [alerts], or use a cache directory (not --no-cache)",
        )
    })?;
    Ok(dir.join("alerts").join(format!("{}.json", repo.id().to_hex())))
}

pub fn ops_failure(e: &nfrepo_ops::Error) -> Failure {
    match e {
        nfrepo_ops::Error::Engine(e) => Failure::engine(e, Operation::Inspect),
        nfrepo_ops::Error::Store(e) => Failure::store(e, Operation::Inspect),
        other => Failure::new(ErrorCode::BackupFailed, Some("ALERTS_FAILED"), other.to_string()),
    }
}

fn alerts_json(state: &AlertState) -> serde_json::Value {
    state.to_json(&render::time_ns)
}

fn print(global: &GlobalArgs, state: &AlertState) {
    if global.json {
        outln!("{}", alerts_json(state));
        return;
    }
    let rows: Vec<Vec<String>> = state
        .alerts
        .iter()
        .map(|(key, t)| {
            let status = match (&t.status, &t.acknowledged) {
                (Status::Firing, Some(_)) => "firing (acked)".to_owned(),
                (status, _) => status.as_str().to_owned(),
            };
            vec![
                status,
                t.alert.rule.severity().as_str().to_owned(),
                key.clone(),
                render::time_ns(t.first_fired_ns),
                t.alert.summary.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        if !global.quiet {
            outln!("no alerts");
        }
        return;
    }
    render::table(&["STATUS", "SEVERITY", "KEY", "FIRST FIRED", "SUMMARY"], &rows);
    if !global.quiet {
        outln!("{} firing", state.firing().count());
    }
}
