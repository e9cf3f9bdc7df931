//! Binding and running the panel: options, the router, the refresh loop.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use nfrepo_engine::{AuditWriter, Repository};
use nfrepo_ops::{AlertsConfig, Channel, Clock, Origin, ReplicaTarget, Watch};
use nfrepo_server::{Listening, TlsFiles, Token};

use crate::auth::{Guard, User};
use crate::error::{Error, Result};
use crate::session::Sessions;
use crate::state::{Shared, View};

/// Everything the panel needs, read and checked by the caller (the CLI
/// reads `[serve]`, the users' secret files, the channels' secrets).
#[non_exhaustive]
pub struct PanelOptions {
    /// The address to listen on; port 0 picks one ([`Panel::local_addr`]).
    pub listen: SocketAddr,
    /// The certificate and key; `None` serves plain http (loopback only,
    /// unless [`PanelOptions::allow_insecure_http`]).
    pub tls: Option<TlsFiles>,
    /// Serve plain http on an address other hosts can reach.
    pub allow_insecure_http: bool,
    /// Who may log in (at least one).
    pub users: Vec<User>,
    /// The read-only bearer token for `GET /api/*` and `/metrics`.
    pub api_token: Option<Token>,
    /// Directories restores may create their output in, by name.
    pub restore_targets: BTreeMap<String, PathBuf>,
    /// Database servers dumps may be restored into, by name, their
    /// connections holding the password (`[serve.database_targets]`, read
    /// by the caller). A name must not also be a directory target.
    pub database_targets: BTreeMap<String, nfrepo_sources::DatabaseTarget>,
    /// What the configuration expects (sources' schedules and RPOs, replicas' lags).
    pub watch: Watch,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// The alert state file (shared with `nfrepo alerts`).
    pub alert_state: PathBuf,
    /// Where notices go; empty sends none (the panel still shows alerts).
    pub channels: Vec<Channel>,
    /// Replicas whose lag is watched.
    pub replicas: Vec<ReplicaTarget>,
    /// How often the repository is re-read and the rules evaluated.
    pub refresh: Duration,
    /// Sessions end after this long unused…
    pub session_idle: Duration,
    /// …and this long after their login.
    pub session_max: Duration,
    /// Failed logins of one name within `lockout_for` that lock it…
    pub lockout_failures: u32,
    /// …for this long.
    pub lockout_for: Duration,
    /// The local cache directory (the audit writer keeps its chain head there).
    pub cache_dir: Option<PathBuf>,
    /// The clock (tests step it).
    pub clock: Arc<dyn Clock>,
}

impl PanelOptions {
    /// Options with the `[serve]` defaults, no TLS, no targets, no channels.
    pub fn new(listen: SocketAddr, users: Vec<User>, alert_state: PathBuf) -> Self {
        let defaults = crate::ServeConfig::default();
        let secs = |span: nfrepo_engine::Span| Duration::from_secs(span.as_secs());
        Self {
            listen,
            tls: None,
            allow_insecure_http: false,
            users,
            api_token: None,
            restore_targets: BTreeMap::new(),
            database_targets: BTreeMap::new(),
            watch: Watch::default(),
            alerts: AlertsConfig::default(),
            alert_state,
            channels: Vec::new(),
            replicas: Vec::new(),
            refresh: secs(defaults.refresh),
            session_idle: secs(defaults.session_idle),
            session_max: secs(defaults.session_max),
            lockout_failures: defaults.lockout_failures,
            lockout_for: secs(defaults.lockout_for),
            cache_dir: None,
            clock: Arc::new(nfrepo_ops::SystemClock),
        }
    }
}

/// A bound panel: [`Panel::bind`], then [`Panel::run`].
pub struct Panel {
    listening: Listening,
    shared: Arc<Shared>,
    refresh: Duration,
}

impl std::fmt::Debug for Panel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Panel")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Panel {
    /// Checks the options, binds the address and reads the repository once
    /// (so the first page already shows it). Nothing is served until
    /// [`Panel::run`].
    ///
    /// # Errors
    /// [`Error::Config`] without users, or for plain http off loopback;
    /// [`Error::Server`] for certificate files or an address that cannot be bound.
    pub async fn bind(repo: Repository, options: PanelOptions) -> Result<Self> {
        if options.users.is_empty() {
            return Err(Error::Config(
                "no users: add users = [{ name, password_hash, totp_secret_file }] under [serve]".into(),
            ));
        }
        if options.tls.is_none() && !nfrepo_server::is_loopback(options.listen) && !options.allow_insecure_http {
            return Err(Error::Config(format!(
                "refusing plain http on {}: set tls_cert and tls_key, or allow_insecure_http to send passwords unencrypted",
                options.listen
            )));
        }
        let listening = Listening::bind(options.listen, options.tls.as_ref()).await?;
        let now = options.clock.now_ns();
        let users: HashMap<String, Arc<User>> = options
            .users
            .into_iter()
            .map(|u| (u.name().to_owned(), Arc::new(u)))
            .collect();
        let origin = Origin {
            repository: repo.id().to_hex(),
            host: nfrepo_engine::hostname(),
        };
        let audit = AuditWriter::new(repo.store().clone(), options.cache_dir.clone());
        let shared = Arc::new(Shared {
            repo,
            users,
            guard: Guard::new(options.lockout_failures, nanos(options.lockout_for), now),
            sessions: Sessions::new(nanos(options.session_idle), nanos(options.session_max)),
            api_token: options.api_token,
            tls: listening.is_tls(),
            clock: options.clock,
            view: RwLock::new(Arc::new(View::default())),
            alert_state: tokio::sync::Mutex::new(options.alert_state),
            watch: options.watch,
            alerts_config: options.alerts,
            channels: options.channels,
            replicas: options.replicas,
            origin,
            targets: options.restore_targets,
            database_targets: options.database_targets,
            jobs: crate::restore::Jobs::default(),
            audit: tokio::sync::Mutex::new(audit),
            password_checks: tokio::sync::Semaphore::new(2),
            session_max_s: options.session_max.as_secs(),
        });
        shared.refresh().await;
        Ok(Self {
            listening,
            shared,
            refresh: options.refresh,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listening.local_addr()
    }

    /// `https://ADDR/` or `http://ADDR/`.
    pub fn url(&self) -> String {
        let scheme = if self.listening.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}/", self.listening.local_addr())
    }

    /// Re-reads the repository and evaluates the rules now (tests, after
    /// changing the repository or the clock).
    pub fn refresher(&self) -> Refresher {
        Refresher(self.shared.clone())
    }

    /// Serves until `shutdown` completes, re-reading the repository,
    /// evaluating the alert rules and sending notices every `refresh`.
    ///
    /// # Errors
    /// [`Error::Server`] if serving fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        tracing::info!(target: crate::ACCESS_LOG, url = %self.url(), repository = %self.shared.origin.repository, "serving the admin panel");
        let looping = self.shared.clone();
        let every = self.refresh;
        let refreshing = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is now: `bind` just read
            loop {
                ticks.tick().await;
                looping.refresh().await;
            }
        });
        let result = self.listening.serve(router(self.shared), shutdown).await;
        refreshing.abort();
        result.map_err(Error::Server)
    }
}

/// A handle that re-reads the repository of a running panel.
#[derive(Clone)]
pub struct Refresher(Arc<Shared>);

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher")
    }
}

impl Refresher {
    /// Reads the repository, evaluates the rules and sends the notices due.
    pub async fn refresh(&self) {
        self.0.refresh().await;
    }
}

/// Request bodies larger than this are refused (forms are small).
const MAX_BODY: usize = 64 * 1024;

fn router(shared: Arc<Shared>) -> Router {
    use crate::{api, pages, recovery};
    Router::new()
        .route("/login", get(pages::login).post(pages::login_post))
        .route("/logout", post(pages::logout))
        .route("/", get(pages::dashboard))
        .route("/alerts", get(pages::alerts))
        .route("/alerts/ack", post(pages::ack))
        .route("/snapshots", get(pages::snapshots))
        .route("/snapshots/{id}", get(pages::tree))
        .route("/browse", get(pages::browse))
        .route("/download", post(pages::download))
        .route("/restore", post(pages::restore))
        .route("/restores", get(pages::restores))
        .route("/replication", get(recovery::replication_page))
        .route("/drills", get(recovery::drills_page))
        .route("/audit", get(recovery::audit_page))
        .route("/api/replication", get(recovery::replication_api))
        .route("/api/drills", get(recovery::drills_api))
        .route("/api/audit", get(recovery::audit_api))
        .route("/api/health", get(api::health))
        .route("/api/session", get(api::session))
        .route("/api/sources", get(api::sources))
        .route("/api/snapshots", get(api::snapshots))
        .route("/api/alerts", get(api::alerts))
        .route("/api/alerts/{key}/ack", post(api::ack))
        .route("/api/restores", get(api::restores).post(api::start_restore))
        .route("/api/restores/{id}", get(api::restore))
        .route("/metrics", get(api::metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(shared)
}

/// Headers every response carries: no framing (clickjacking), no sniffing,
/// no referrer leaking snapshot paths, no caching of pages with secrets.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::HeaderValue;
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
