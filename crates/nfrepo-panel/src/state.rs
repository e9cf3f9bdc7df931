//! What the panel holds: the open repository, users and sessions, and the
//! view of the repository the background loop refreshes (facts, alerts
//! true now); the alert state itself stays in its file, read and written
//! under one lock so that `nfrepo alerts ack` from a shell is not lost.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nfrepo_engine::{AuditEvent, AuditWriter, Repository};
use nfrepo_ops::{Alert, AlertState, AlertsConfig, Channel, Clock, Facts, Origin, ReplicaTarget, Watch};
use nfrepo_server::Token;

use crate::auth::{Guard, User};
use crate::restore::Jobs;
use crate::session::{COOKIE_PLAIN, COOKIE_TLS, Sessions};

/// How far back the audit log is read (persistent errors look this far back), as `nfrepo alerts` does.
pub(crate) const AUDIT_HISTORY: Duration = Duration::from_secs(7 * 86_400);

/// The repository as last read.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// When it was read; 0 before the first read.
    pub(crate) refreshed_ns: i64,
    pub(crate) facts: Facts,
    /// The alerts true at `refreshed_ns`.
    pub(crate) alerts: Vec<Alert>,
    /// Why the last refresh failed, if it did (the view is then the one before).
    pub(crate) error: Option<String>,
}

impl View {
    /// The snapshots of `source` (or all), newest first.
    pub(crate) fn snapshots(&self, source: Option<&str>) -> Vec<&nfrepo_ops::SnapshotFact> {
        let mut list: Vec<_> = self
            .facts
            .snapshots
            .iter()
            .filter(|s| source.is_none_or(|source| s.source == source))
            .collect();
        list.sort_by_key(|s| std::cmp::Reverse(s.time_ns));
        list
    }
}

pub(crate) struct Shared {
    pub(crate) repo: Repository,
    pub(crate) users: HashMap<String, Arc<User>>,
    pub(crate) guard: Guard,
    pub(crate) sessions: Sessions,
    pub(crate) api_token: Option<Token>,
    pub(crate) tls: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) view: RwLock<Arc<View>>,
    pub(crate) alert_state: tokio::sync::Mutex<PathBuf>,
    pub(crate) watch: Watch,
    pub(crate) alerts_config: AlertsConfig,
    pub(crate) channels: Vec<Channel>,
    pub(crate) replicas: Vec<ReplicaTarget>,
    pub(crate) origin: Origin,
    pub(crate) targets: BTreeMap<String, PathBuf>,
    /// Database servers dumps may be restored into, by name (with their passwords).
    pub(crate) database_targets: BTreeMap<String, nfrepo_sources::DatabaseTarget>,
    pub(crate) jobs: Jobs,
    pub(crate) audit: tokio::sync::Mutex<AuditWriter>,
    /// Password checks at once (each takes 19 MiB and tens of ms).
    pub(crate) password_checks: tokio::sync::Semaphore,
    pub(crate) session_max_s: u64,
}

impl Shared {
    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.tls { COOKIE_TLS } else { COOKIE_PLAIN }
    }

    pub(crate) fn view(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the repository, evaluates the rules, updates the alert state
    /// file and sends the notices due (the same functions `nfrepo alerts
    /// --notify` calls). A failure is kept in the view and logged; the view
    /// before it stays.
    pub(crate) async fn refresh(&self) {
        let now = self.clock.now_ns();
        let result = self.refresh_at(now).await;
        let mut view = self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok((facts, alerts)) => {
                *view = Arc::new(View {
                    refreshed_ns: now,
                    facts,
                    alerts,
                    error: None,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the repository's state");
                let old = view.clone();
                *view = Arc::new(View {
                    refreshed_ns: old.refreshed_ns,
                    facts: old.facts.clone(),
                    alerts: old.alerts.clone(),
                    error: Some(e.to_string()),
                });
            }
        }
    }

    async fn refresh_at(&self, now: i64) -> nfrepo_ops::Result<(Facts, Vec<Alert>)> {
        let facts = nfrepo_ops::gather(&self.repo, &self.replicas, now, AUDIT_HISTORY).await?;
        let alerts = nfrepo_ops::evaluate(&facts, &self.watch, &self.alerts_config, now);
        let path = self.alert_state.lock().await;
        let mut state = load_state(&path).await?;
        let notices = state.update(alerts.clone(), now, self.alerts_config.repeat.as_nanos());
        if !self.channels.is_empty() {
            let deliveries = nfrepo_ops::deliver(&mut state, notices, &self.channels, &self.origin, &*self.clock).await;
            for d in deliveries.iter().filter(|d| d.error.is_none()) {
                tracing::info!(channel = d.channel, alert = %d.key, kind = d.kind.as_str(), "notice sent");
            }
        }
        save_state(&path, state).await?;
        Ok((facts, alerts))
    }

    /// The alert state as its file holds it now.
    pub(crate) async fn alert_state(&self) -> nfrepo_ops::Result<AlertState> {
        let path = self.alert_state.lock().await;
        load_state(&path).await
    }

    /// Acknowledges the firing alert `key` as `by`; `false` if there is none.
    pub(crate) async fn acknowledge(&self, key: &str, by: &str) -> nfrepo_ops::Result<bool> {
        let path = self.alert_state.lock().await;
        let mut state = load_state(&path).await?;
        if !state.acknowledge(key, by, self.clock.now_ns()) {
            return Ok(false);
        }
        save_state(&path, state).await?;
        tracing::info!(target: crate::ACCESS_LOG, user = by, alert = key, "alert acknowledged");
        Ok(true)
    }

    /// Appends an entry to the repository's audit log (one at a time: the
    /// entries of one host form a chain).
    pub(crate) async fn audit(&self, event: AuditEvent) {
        let writer = self.audit.lock().await;
        if let Err(e) = writer
            .append(Some(&self.repo), &event, &nfrepo_engine::ActivitySummary::default())
            .await
        {
            tracing::error!(operation = %event.operation, error = %e, "the audit log entry was not written");
        }
    }
}

async fn load_state(path: &std::path::Path) -> nfrepo_ops::Result<AlertState> {
    let path_for_error = path;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || AlertState::load(&path))
        .await
        .unwrap_or_else(|e| Err(worker_failed(path_for_error, &e)))
}

async fn save_state(path: &std::path::Path, state: AlertState) -> nfrepo_ops::Result<()> {
    let path_for_error = path;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || state.save(&path))
        .await
        .unwrap_or_else(|e| Err(worker_failed(path_for_error, &e)))
}

fn worker_failed(path: &std::path::Path, e: &tokio::task::JoinError) -> nfrepo_ops::Error {
    nfrepo_ops::Error::State {
        path: path.to_owned(),
        message: format!("the blocking worker failed: {e}"),
    }
}
