//! A repository with two sources, a panel over it, and a client that logs in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use nfrepo_engine::{InitOptions, Repository, Span};
use nfrepo_format::KdfParams;
use nfrepo_ops::{Clock, SourceWatch, Watch};
use nfrepo_panel::{Panel, PanelOptions, Refresher, User, totp_code};
use nfrepo_sources::{FilesSource, RunOptions};
use nfrepo_store::{MemoryStore, Store};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

pub const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
pub const PASSWORD: &str = "correct horse battery";
pub const API_TOKEN: &str = "read-only-token-0123456789";
pub const SECOND: i64 = 1_000_000_000;

/// A clock the test moves.
pub struct StepClock(AtomicI64);

impl StepClock {
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds * SECOND, Ordering::SeqCst);
    }
    pub fn seconds(&self) -> u64 {
        u64::try_from(self.now_ns() / SECOND).unwrap()
    }
}

impl Clock for StepClock {
    fn now_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct Fixture {
    pub url: String,
    pub clock: Arc<StepClock>,
    pub repo: Repository,
    pub refresher: Refresher,
    pub dir: tempfile::TempDir,
    pub restore_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<nfrepo_panel::Result<()>>>,
}

/// What the fixture is given to hold.
pub struct Setup {
    pub lockout_failures: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Self { lockout_failures: 5 }
    }
}

impl Fixture {
    /// Sources `db` (RPO 1h) and `web` (RPO 1d), each backed up once from
    /// files; the clock two hours later, so `db` is red and `web` green.
    pub async fn start(setup: Setup) -> Self {
        Self::start_with(setup, BTreeMap::new()).await
    }

    /// [`Fixture::start`], with database restore targets.
    pub async fn start_with(setup: Setup, database_targets: BTreeMap<String, nfrepo_sources::DatabaseTarget>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut init = InitOptions::default();
        init.kdf = KdfParams::insecure_for_tests();
        let repo = Repository::init(store, b"test password", init).await.unwrap();
        for (source, files) in [
            ("db", vec![("dump.sql", b"create table t (id int);\n".to_vec())]),
            (
                "web",
                vec![
                    ("index.html", b"<h1>hello</h1>\n".to_vec()),
                    ("assets/app.css", b"body{}\n".to_vec()),
                ],
            ),
        ] {
            let root = dir.path().join(format!("src-{source}"));
            nfrepo_testing::files::write_tree(&root, &files).unwrap();
            nfrepo_sources::run_backup(
                &repo,
                Box::new(FilesSource::new(vec![root])),
                &RunOptions::new(source),
                &mut |_| {},
            )
            .await
            .unwrap();
        }
        let clock = Arc::new(StepClock(AtomicI64::new(
            nfrepo_ops::unix_ns(std::time::SystemTime::now()) + 2 * 3600 * SECOND,
        )));
        let hash = nfrepo_panel::hash_password(PASSWORD.as_bytes()).unwrap();
        let users = vec![User::new("alice", hash, SECRET).unwrap()];
        let restore_dir = dir.path().join("restores");
        std::fs::create_dir(&restore_dir).unwrap();
        let mut options = PanelOptions::new("127.0.0.1:0".parse().unwrap(), users, dir.path().join("alerts.json"));
        options.watch = Watch {
            sources: [("db", 3600), ("web", 86_400)]
                .iter()
                .map(|(name, rpo)| SourceWatch {
                    name: (*name).into(),
                    schedule: None,
                    rpo: Some(Span::from_secs(*rpo)),
                })
                .collect(),
            ..Watch::default()
        };
        options.restore_targets = BTreeMap::from([("scratch".to_owned(), restore_dir.clone())]);
        options.database_targets = database_targets;
        options.api_token = Some(nfrepo_server::Token::from_secret(API_TOKEN.as_bytes()));
        options.lockout_failures = setup.lockout_failures;
        options.clock = clock.clone();
        let panel = Panel::bind(repo.clone(), options).await.unwrap();
        let url = panel.url().trim_end_matches('/').to_owned();
        let refresher = panel.refresher();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(panel.run(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            clock,
            repo,
            refresher,
            dir,
            restore_dir,
            stop: Some(stop),
            running: Some(running),
        }
    }

    /// The code of the next TOTP step: moves the clock 30 s on first, so
    /// that the code is one the server has not seen.
    pub fn fresh_code(&self) -> String {
        self.clock.advance(30);
        totp_code(SECRET, self.clock.seconds()).unwrap()
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: self.url.clone(),
            cookies: BTreeMap::new(),
        }
    }

    /// A client logged in as alice.
    pub async fn logged_in(&self) -> Client {
        let mut client = self.client();
        let code = self.fresh_code();
        let response = client.login("alice", PASSWORD, &code).await;
        assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.body);
        client
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running.await.unwrap().unwrap();
        }
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP client that keeps cookies as a browser would (by name).
pub struct Client {
    http: reqwest::Client,
    pub base: String,
    pub cookies: BTreeMap<String, String>,
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Client {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> Reply {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookie.is_empty() {
            request
        } else {
            request.header(COOKIE, cookie)
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap();
        Reply { status, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn get_with(&mut self, path: &str, header: (&str, &str)) -> Reply {
        let request = self.http.get(format!("{}{path}", self.base)).header(header.0, header.1);
        self.send(request).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields));
        self.send(request).await
    }

    pub async fn post_with(&mut self, path: &str, header: (&str, &str)) -> Reply {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header.0, header.1);
        self.send(request).await
    }

    /// Posts `body` as JSON with `header`.
    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value, header: (&str, &str)) -> Reply {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header(header.0, header.1)
            .body(body.to_string());
        self.send(request).await
    }

    /// Loads the login page (for its CSRF cookie and field) and posts the form.
    pub async fn login(&mut self, name: &str, password: &str, code: &str) -> Reply {
        let page = self.get("/login").await;
        assert_eq!(page.status, StatusCode::OK);
        let token = field(&page.body, "login_csrf");
        self.post_form(
            "/login",
            &[
                ("name", name),
                ("password", password),
                ("code", code),
                ("login_csrf", &token),
            ],
        )
        .await
    }

    /// The session's CSRF token.
    pub async fn csrf(&mut self) -> String {
        let session = self.get("/api/session").await;
        assert_eq!(session.status, StatusCode::OK, "{}", session.body);
        session.json()["csrf"].as_str().unwrap().to_owned()
    }
}

/// The value of the hidden input `name` in `html`.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

impl Fixture {
    /// The keys of the acknowledged alerts in the state file.
    pub async fn alerts_acked(&self) -> Vec<String> {
        let state = nfrepo_ops::AlertState::load(&self.dir.path().join("alerts.json")).unwrap();
        state
            .alerts
            .iter()
            .filter(|(_, t)| t.acknowledged.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }
}
