//! `[alerts]` in nfrepo.toml: thresholds, where state is kept, and the channels.
//!
//! ```toml
//! [alerts]
//! state_file = "/var/lib/nfrepo/alerts.json"   # default: <cache dir>/alerts/<repository id>.json
//! repeat = "4h"              # notify again while an alert lasts (unless acknowledged)
//! grace = "10m"              # added to a schedule's next run before a backup counts as missed
//! window = "24h"             # how long an event (a failure, a mass forget) keeps its alert firing
//! failures_in_a_row = 3      # persistent_errors: this many failed runs of one source in a row
//! latency_factor = 3.0       # high_latency: a backup, drill or restore taking this multiple of its median
//! forget_threshold = 20      # mass_forget: snapshots deleted by one command
//! gc_share = 0.3             # gc_deleted_share: share of the data packs one gc deleted
//! denied_threshold = 5       # auth_failures: PERMISSION_DENIED entries within the window
//! size_factor = 2.0          # size_change: a source's size multiplied or divided by this
//! new_share = 0.8            # size_change: share of a snapshot's bytes that are new
//!
//! [alerts.webhook]
//! url = "https://hooks.example/nfrepo"
//! secret_file = "/etc/nfrepo/webhook.secret"   # or secret_env; signs every body (HMAC-SHA256)
//!
//! [alerts.email]
//! server = "smtp.example.com"
//! port = 587                 # default 587 for starttls, 465 for tls, 25 for none
//! tls = "starttls"           # starttls (default), tls, or none (loopback only)
//! from = "nfrepo@example.com"
//! to = ["oncall@example.com"]
//! username = "nfrepo"
//! password_file = "/etc/nfrepo/smtp.pass"      # or password_env
//! ```
//!
//! A source's own `rpo = "10m"` (under `[sources.NAME]`) and a replica's
//! `max_lag = "5m"` (under `[replication.NAME]`) are read by the CLI and
//! handed over in a [`Watch`](crate::Watch).

use std::path::PathBuf;

use nfrepo_engine::Span;
use serde::Deserialize;

use crate::channel::{EmailConfig, WebhookConfig};

/// `[alerts]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AlertsConfig {
    /// Where alert state is kept; the CLI defaults it under the cache directory.
    pub state_file: Option<PathBuf>,
    /// How often a firing, unacknowledged alert is sent again.
    pub repeat: Span,
    /// Added to a schedule's next run time before a backup counts as missed.
    pub grace: Span,
    /// How long an event keeps its alert firing.
    pub window: Span,
    /// Failed runs of one source in a row that make `persistent_errors`.
    pub failures_in_a_row: u32,
    /// The multiple of its median duration that makes a run `high_latency`.
    pub latency_factor: f64,
    /// Snapshots one command deletes that make `mass_forget`.
    pub forget_threshold: u64,
    /// The share of data packs one gc deletes that makes `gc_deleted_share`.
    pub gc_share: f64,
    /// `PERMISSION_DENIED` entries within the window that make `auth_failures`.
    pub denied_threshold: u64,
    /// The factor by which a source's size grows or shrinks to make `size_change`.
    pub size_factor: f64,
    /// The share of new bytes in a snapshot that makes `size_change`.
    pub new_share: f64,
    /// The webhook channel.
    pub webhook: Option<WebhookConfig>,
    /// The email channel.
    pub email: Option<EmailConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            state_file: None,
            repeat: Span::from_secs(4 * 3600),
            grace: Span::from_secs(10 * 60),
            window: Span::from_secs(24 * 3600),
            failures_in_a_row: 3,
            latency_factor: 3.0,
            forget_threshold: 20,
            gc_share: 0.3,
            denied_threshold: 5,
            size_factor: 2.0,
            new_share: 0.8,
            webhook: None,
            email: None,
        }
    }
}

impl AlertsConfig {
    /// Checks the thresholds and channels.
    ///
    /// # Errors
    /// A threshold that cannot work (a factor of 1 or less, a share outside
    /// (0, 1]), or a channel setting that cannot work; the message names it.
    pub fn validate(&self) -> Result<(), String> {
        if self.failures_in_a_row == 0 {
            return Err("alerts.failures_in_a_row must be at least 1".into());
        }
        for (name, factor) in [
            ("latency_factor", self.latency_factor),
            ("size_factor", self.size_factor),
        ] {
            if factor.is_nan() || factor <= 1.0 {
                return Err(format!("alerts.{name} must be more than 1"));
            }
        }
        for (name, share) in [("gc_share", self.gc_share), ("new_share", self.new_share)] {
            if share.is_nan() || share <= 0.0 || share > 1.0 {
                return Err(format!("alerts.{name} must be more than 0 and at most 1"));
            }
        }
        if self.repeat.as_secs() == 0 {
            return Err("alerts.repeat must be at least 1s".into());
        }
        if let Some(webhook) = &self.webhook {
            webhook.validate()?;
        }
        if let Some(email) = &self.email {
            email.validate()?;
        }
        Ok(())
    }
}
