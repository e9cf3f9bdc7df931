//! `[serve]` in nfrepo.toml: where the panel listens, who may log in, where
//! restores may go.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:8080"
//! tls_cert = "/etc/nfrepo/panel.crt"      # with tls_key: https; else loopback only (or allow_insecure_http)
//! tls_key = "/etc/nfrepo/panel.key"
//! api_token_file = "/etc/nfrepo/api.token" # optional read-only bearer token for GET /api/* and /metrics
//! refresh = "1m"                          # how often the alert rules are evaluated and notices sent
//! session_idle = "30m"                    # a session unused this long ends
//! session_max = "12h"                     # and any session ends this long after its login
//! lockout_failures = 5                    # failed logins of one name within lockout_for lock it
//! lockout_for = "15m"
//! users = [
//!   { name = "alice", password_hash = "$argon2id$v=19$...", totp_secret_file = "/etc/nfrepo/alice.totp" },
//! ]
//!
//! [serve.restore_targets]                 # the only places a restore through the panel may write
//! scratch = "/srv/nfrepo-restores"
//!
//! [serve.database_targets]                # the only servers a database dump may be restored into
//! staging-db = { url = "mysql://restore@db-staging:3306", password_file = "/etc/nfrepo/staging-db.pw" }
//! reports = { url = "postgres://nfrepo@reports:5432" }  # password: see below
//! ```
//!
//! `password_hash` is a PHC string from `nfrepo serve hash-password`; the
//! TOTP secret file (mode 0600) holds the base32 secret the user's
//! authenticator app was given (`nfrepo serve totp-secret` makes one).
//!
//! A database target is a server, named: its URL names no database (the
//! restore form says which dump goes into which database) and never a
//! password (refused). The password comes from `password_env` or
//! `password_file`; without either, from the configured `mysql`/`postgres`
//! source naming the same server, else `MYSQL_PWD`/`PGPASSWORD` in the
//! server's environment, as `restore --into` finds it. It is read once,
//! when `nfrepo serve` starts. Pages, the JSON API, the access log and the
//! audit log show the target's name and its URL, which holds no password.
//! A restore into it is staged: the dump is loaded into a new database,
//! its row counts verified, and only then switched in; a database that
//! holds data is replaced only when the form asks for it, and is then kept
//! aside as `DB__nfrepo_before_<time>`, never dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use nfrepo_engine::Span;
use serde::Deserialize;

/// `[serve]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServeConfig {
    /// The address to listen on (`--listen` overrides it).
    pub listen: Option<SocketAddr>,
    /// The PEM certificate chain (with [`ServeConfig::tls_key`]).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (with [`ServeConfig::tls_cert`]).
    pub tls_key: Option<PathBuf>,
    /// Serve plain http on an address other hosts can reach.
    pub allow_insecure_http: bool,
    /// Who may log in.
    pub users: Vec<UserConfig>,
    /// A file holding a read-only bearer token for `GET /api/*` and `/metrics`.
    pub api_token_file: Option<PathBuf>,
    /// Restore targets by name: directories a restore may create its output in.
    pub restore_targets: BTreeMap<String, PathBuf>,
    /// Database servers by name that dumps may be restored into.
    pub database_targets: BTreeMap<String, DatabaseTargetConfig>,
    /// How often the alert rules are evaluated (and the repository re-read).
    pub refresh: Span,
    /// A session unused this long ends.
    pub session_idle: Span,
    /// A session ends this long after its login, used or not.
    pub session_max: Span,
    /// Failed logins of one name within [`ServeConfig::lockout_for`] that lock it.
    pub lockout_failures: u32,
    /// How long failures are counted, and how long a lockout lasts.
    pub lockout_for: Span,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls_cert: None,
            tls_key: None,
            allow_insecure_http: false,
            users: Vec::new(),
            api_token_file: None,
            restore_targets: BTreeMap::new(),
            database_targets: BTreeMap::new(),
            refresh: Span::from_secs(60),
            session_idle: Span::from_secs(30 * 60),
            session_max: Span::from_secs(12 * 3600),
            lockout_failures: 5,
            lockout_for: Span::from_secs(15 * 60),
        }
    }
}

/// One `users` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UserConfig {
    /// The login name.
    pub name: String,
    /// The argon2 PHC string of the password.
    pub password_hash: String,
    /// The file holding the base32 TOTP secret (mode 0600).
    pub totp_secret_file: PathBuf,
}

/// One `[serve.database_targets]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DatabaseTargetConfig {
    /// `mysql://user@host:port` or `postgres://user@host:port` (no database, no password).
    pub url: String,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The file holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
}

impl ServeConfig {
    /// Checks what can be checked without reading files.
    ///
    /// # Errors
    /// The first setting that cannot work, named.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("serve.tls_cert and serve.tls_key go together".into());
        }
        if self.refresh.as_secs() == 0 {
            return Err("serve.refresh must be at least 1s".into());
        }
        if self.session_idle.as_secs() == 0 || self.session_max.as_secs() == 0 {
            return Err("serve.session_idle and serve.session_max must be at least 1s".into());
        }
        if self.lockout_failures == 0 || self.lockout_for.as_secs() == 0 {
            return Err("serve.lockout_failures and serve.lockout_for must be at least 1".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for user in &self.users {
            let ok = !user.name.is_empty()
                && user.name.len() <= 64
                && user
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
            if !ok {
                return Err(format!(
                    "user name {:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'",
                    user.name
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err(format!("user {:?} is listed twice", user.name));
            }
        }
        for (name, target) in &self.database_targets {
            let connection = nfrepo_sources::Connection::parse(&target.url)
                .map_err(|e| format!("serve.database_targets.{name}: {e}"))?;
            if connection.scheme != "mysql" && connection.scheme != "postgres" {
                return Err(format!(
                    "serve.database_targets.{name}: a {} URL (mysql:// or postgres://)",
                    connection.scheme
                ));
            }
            if connection.database.is_some() {
                return Err(format!(
                    "serve.database_targets.{name}: the URL names a database: name the server only (the restore form names the database)"
                ));
            }
            if self.restore_targets.contains_key(name) {
                return Err(format!(
                    "serve.database_targets.{name}: serve.restore_targets has a target of that name too"
                ));
            }
            if target.password_env.is_some() && target.password_file.is_some() {
                return Err(format!(
                    "serve.database_targets.{name}: give password_env or password_file, not both"
                ));
            }
        }
        for (name, dir) in &self.restore_targets {
            if !dir.is_absolute() {
                return Err(format!(
                    "serve.restore_targets.{name}: {} is not an absolute path",
                    dir.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_and_targets() {
        let config: ServeConfig = toml_like(
            r#"{"listen":"127.0.0.1:8080","users":[{"name":"alice","password_hash":"$argon2id$x","totp_secret_file":"/etc/a"}],"restore_targets":{"scratch":"/srv/r"},"refresh":"30s"}"#,
        );
        assert_eq!(config.users[0].name, "alice");
        assert_eq!(config.refresh, Span::from_secs(30));
        assert_eq!(config.lockout_failures, 5);
        config.validate().expect("valid");
    }

    #[test]
    fn refuses_relative_targets_and_odd_names() {
        let mut config: ServeConfig = toml_like(r#"{"restore_targets":{"scratch":"srv"}}"#);
        assert!(config.validate().unwrap_err().contains("not an absolute path"));
        config.restore_targets.clear();
        config.users.push(UserConfig {
            name: "a b".into(),
            password_hash: String::new(),
            totp_secret_file: "/x".into(),
        });
        assert!(config.validate().unwrap_err().contains("user name"));
    }

    #[test]
    fn database_targets_name_a_server_without_password_or_database() {
        let config: ServeConfig = toml_like(
            r#"{"database_targets":{"staging":{"url":"mysql://restore@db:3306","password_file":"/etc/pw"}}}"#,
        );
        config.validate().expect("valid");
        assert_eq!(config.database_targets["staging"].url, "mysql://restore@db:3306");
        for (url, says) in [
            ("mysql://restore:hunter2@db:3306", "holds a password"),
            ("postgres://u@db:5432/app", "names a database"),
            ("redis://db:6379", "mysql:// or postgres://"),
        ] {
            let config: ServeConfig = toml_like(&format!(r#"{{"database_targets":{{"t":{{"url":"{url}"}}}}}}"#));
            let e = config.validate().unwrap_err();
            assert!(e.contains(says) && !e.contains("hunter2"), "{url}: {e}");
        }
        let both: ServeConfig =
            toml_like(r#"{"restore_targets":{"t":"/srv"},"database_targets":{"t":{"url":"mysql://u@db"}}}"#);
        assert!(both.validate().unwrap_err().contains("a target of that name too"));
    }

    fn toml_like(json: &str) -> ServeConfig {
        serde_json::from_str(json).expect("parse")
    }
}
