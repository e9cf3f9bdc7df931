//! Where notices go: a signed webhook and email.
//!
//! Every notice becomes one [`Message`]: a JSON body (the webhook's, see
//! [`Message::json`]) and a plain-text form (the email's, and the body's
//! `text` member, ready for an SMS gateway). Channels are built from the
//! configuration with their secrets already read ([`Secret`]); a secret is
//! never formatted, logged or put in an error.
//!
//! ## The webhook body
//!
//! ```json
//! {
//!   "version": 1,
//!   "kind": "firing",                       // firing, repeat, resolved, test
//!   "rule": "missed_backup",
//!   "subject": "mysql-main",
//!   "severity": "critical",                 // critical, warning
//!   "summary": "source mysql-main: newest snapshot is 25m old (…)",
//!   "since": "2026-12-02T10:15:00Z",        // when the condition began, or null
//!   "first_fired": "2026-12-02T10:16:00Z",
//!   "repository": "4f1c…",                  // the repository id
//!   "host": "backup1",                      // the host that evaluated
//!   "sent_at": "2026-12-02T10:16:02Z",
//!   "text": "[nfrepo] FIRING critical missed_backup mysql-main: source mysql-main: …"
//! }
//! ```
//!
//! ## The signature
//!
//! Each request carries `X-Nfrepo-Timestamp: <unix seconds>` and
//! `X-Nfrepo-Signature: sha256=<hex>`, the HMAC-SHA256 under the configured
//! secret of the timestamp, a `.`, and the exact body bytes. A receiver
//! recomputes it, compares in constant time, and rejects timestamps more
//! than a few minutes old (replays).

mod email;
mod webhook;

use std::fmt;

use serde_json::json;

pub use email::{Email, EmailConfig, EmailTls};
pub use webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, Webhook, WebhookConfig, sign};

use crate::Notice;
use crate::rules::rfc3339;

/// A secret (webhook key, SMTP password): zeroed on drop, never shown.
#[derive(Clone)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps `value`.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(value.into()))
    }

    /// The value, for the one place that uses it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One notice as sent, with where it comes from.
#[derive(Clone, Debug)]
pub struct Message {
    /// The notice.
    pub notice: Notice,
    /// The repository id (hex).
    pub repository: String,
    /// The host that evaluated the rules.
    pub host: String,
    /// When it is sent, nanoseconds since the Unix epoch.
    pub sent_ns: i64,
}

impl Message {
    /// The webhook body (see the module docs).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        let alert = &self.notice.alert;
        json!({
            "version": 1,
            "kind": self.notice.kind.as_str(),
            "rule": alert.rule.as_str(),
            "subject": alert.subject,
            "severity": alert.rule.severity().as_str(),
            "summary": alert.summary,
            "since": alert.since_ns.map(rfc3339),
            "first_fired": rfc3339(self.notice.first_fired_ns),
            "repository": self.repository,
            "host": self.host,
            "sent_at": rfc3339(self.sent_ns),
            "text": self.text(),
        })
    }

    /// One line: `[nfrepo] FIRING critical missed_backup db: summary`.
    #[must_use]
    pub fn text(&self) -> String {
        let alert = &self.notice.alert;
        format!(
            "[nfrepo] {} {} {} {}: {}",
            self.notice.kind.as_str().to_uppercase(),
            alert.rule.severity().as_str(),
            alert.rule,
            alert.subject,
            alert.summary
        )
    }

    /// The email subject.
    #[must_use]
    pub fn subject(&self) -> String {
        let alert = &self.notice.alert;
        format!(
            "[nfrepo] {}: {} {}",
            self.notice.kind.as_str().to_uppercase(),
            alert.rule,
            alert.subject
        )
    }

    /// The email body.
    #[must_use]
    pub fn body(&self) -> String {
        let alert = &self.notice.alert;
        let mut body = format!(
            "{}\n\nrule:        {}\nsubject:     {}\nseverity:    {}\nstatus:      {}\n",
            alert.summary,
            alert.rule,
            alert.subject,
            alert.rule.severity().as_str(),
            self.notice.kind.as_str()
        );
        if let Some(since) = alert.since_ns {
            body.push_str(&format!("since:       {}\n", rfc3339(since)));
        }
        body.push_str(&format!(
            "first fired: {}\nrepository:  {}\nhost:        {}\nsent at:     {}\n",
            rfc3339(self.notice.first_fired_ns),
            self.repository,
            self.host,
            rfc3339(self.sent_ns)
        ));
        body
    }
}

/// A configured channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum Channel {
    /// A signed webhook.
    Webhook(Webhook),
    /// Email through SMTP (boxed: its transport is several times the webhook's size).
    Email(Box<Email>),
}

impl Channel {
    /// `webhook` or `email`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Email(_) => "email",
        }
    }

    /// Sends one message (the webhook retrying with backoff).
    ///
    /// # Errors
    /// [`crate::Error::Channel`] naming the channel and what failed.
    pub async fn send(&self, message: &Message) -> crate::Result<()> {
        match self {
            Self::Webhook(w) => w.send(message).await,
            Self::Email(e) => e.send(message).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Message, Secret};
    use crate::{Alert, Notice, NoticeKind, Rule};

    #[test]
    fn messages_carry_the_alert_and_secrets_never_show() {
        let message = Message {
            notice: Notice {
                kind: NoticeKind::Resolved,
                alert: Alert {
                    rule: Rule::ReplicationLag,
                    subject: "dr".into(),
                    summary: "replica dr: 6m behind".into(),
                    since_ns: None,
                },
                first_fired_ns: 0,
            },
            repository: "ab12".into(),
            host: "backup1".into(),
            sent_ns: 60_000_000_000,
        };
        let json = message.json();
        assert_eq!(json["kind"], "resolved");
        assert_eq!(json["rule"], "replication_lag");
        assert_eq!(json["severity"], "warning");
        assert_eq!(json["since"], serde_json::Value::Null);
        assert_eq!(json["sent_at"], "1970-01-01T00:01:00Z");
        assert_eq!(
            json["text"],
            "[nfrepo] RESOLVED warning replication_lag dr: replica dr: 6m behind"
        );
        assert_eq!(message.subject(), "[nfrepo] RESOLVED: replication_lag dr");
        assert!(message.body().contains("status:      resolved\n"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
