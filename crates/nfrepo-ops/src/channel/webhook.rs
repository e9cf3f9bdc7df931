//! The webhook channel: a signed JSON POST, retried with backoff.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use nfrepo_engine::Span;
use serde::Deserialize;

use super::{Message, Secret};
use crate::{Error, Result};

/// The header carrying `sha256=<hex>` (see the module docs of `channel`).
pub const SIGNATURE_HEADER: &str = "X-Nfrepo-Signature";
/// The header carrying the Unix time, in seconds, that the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Nfrepo-Timestamp";

/// `[alerts.webhook]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Where to POST: https://, or http:// to a loopback address (or with `allow_insecure_http`).
    pub url: String,
    /// File holding the signing secret.
    pub secret_file: Option<std::path::PathBuf>,
    /// Environment variable holding the signing secret.
    pub secret_env: Option<String>,
    /// Attempts after the first (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first wait between attempts, doubled each time (default 1s).
    #[serde(default = "default_backoff")]
    pub backoff: Span,
    /// How long one attempt may take (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// Allow http:// off loopback: alert text crosses the network unencrypted.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Span {
    Span::from_secs(1)
}
fn default_timeout() -> Span {
    Span::from_secs(10)
}

impl WebhookConfig {
    /// A configuration posting to `url` with the defaults.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret_file: None,
            secret_env: None,
            retries: default_retries(),
            backoff: default_backoff(),
            timeout: default_timeout(),
            allow_insecure_http: false,
        }
    }

    /// Checks the URL and that exactly one secret source is named.
    ///
    /// # Errors
    /// The problem, naming the setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("alerts.webhook.url: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http || is_loopback(url.host_str().unwrap_or_default()) => {}
            "http" => {
                return Err(
                    "alerts.webhook.url: http:// off loopback sends alerts unencrypted; use https:// or allow_insecure_http = true"
                        .into(),
                );
            }
            other => return Err(format!("alerts.webhook.url: unsupported scheme {other:?}")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "alerts.webhook.url: put no credentials in the URL; the body is signed with secret_file or secret_env"
                    .into(),
            );
        }
        if self.secret_file.is_some() == self.secret_env.is_some() {
            return Err("alerts.webhook: give secret_file or secret_env (one of them)".into());
        }
        if self.timeout.as_secs() == 0 {
            return Err("alerts.webhook.timeout must be at least 1s".into());
        }
        Ok(())
    }
}

/// Whether `host` names this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `sha256=<hex>`: HMAC-SHA256 under `secret` of `<timestamp>.<body>`.
#[must_use]
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook ready to send.
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    secret: Secret,
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook posting as `config` says, signing with `secret`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or an HTTP client that cannot be built.
    pub fn new(config: WebhookConfig, secret: Secret) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout.as_secs()))
            .user_agent(concat!("nfrepo/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("webhook client: {e}")))?;
        Ok(Self { config, secret, client })
    }

    /// POSTs the message; retries connection errors, timeouts, 429 and 5xx
    /// answers after `backoff`, `2 × backoff`, … up to `retries` times.
    pub(super) async fn send(&self, message: &Message) -> Result<()> {
        let body = serde_json::to_vec(&message.json()).map_err(|e| channel_error(e.to_string()))?;
        let mut delay = Duration::from_secs(self.config.backoff.as_secs());
        let mut last = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                tracing::info!(attempt, error = %last, "webhook: retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            let timestamp = chrono::Utc::now().timestamp();
            let request = self
                .client
                .post(&self.config.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(
                    SIGNATURE_HEADER,
                    sign(self.secret.expose().as_bytes(), timestamp, &body),
                )
                .header("X-Nfrepo-Event", message.notice.kind.as_str())
                .body(body.clone());
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    last = format!("{} answered {status}", self.host());
                    if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                        break;
                    }
                }
                // The error names the URL, which holds no secret (validate refuses credentials in it).
                Err(e) => last = format!("{}: {}", self.host(), nfrepo_store::chain_line(&e)),
            }
        }
        Err(channel_error(last))
    }

    fn host(&self) -> String {
        reqwest::Url::parse(&self.config.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

fn channel_error(message: String) -> Error {
    Error::Channel {
        channel: "webhook",
        message,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::{WebhookConfig, sign};

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently:
        // python3 -c "import hmac,hashlib; print(hmac.new(b'key', b'1700000000.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn config_refuses_plain_http_off_loopback_and_needs_one_secret() {
        let mut config = WebhookConfig::new("http://hooks.example/x");
        config.secret_env = Some("HOOK_SECRET".into());
        assert!(config.validate().unwrap_err().contains("unencrypted"));
        config.url = "http://127.0.0.1:9/x".into();
        assert_eq!(config.validate(), Ok(()));
        config.secret_file = Some("/etc/secret".into());
        assert!(config.validate().unwrap_err().contains("one of them"));
        let mut config = WebhookConfig::new("https://user:pw@hooks.example/x");
        config.secret_env = Some("S".into());
        assert!(config.validate().unwrap_err().contains("no credentials"));
    }
}
