//! The email channel: one plain-text message per notice through SMTP (lettre).

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use nfrepo_engine::Span;
use serde::Deserialize;

use super::webhook::is_loopback;
use super::{Message, Secret};
use crate::{Error, Result};

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a relay on this machine.
    None,
}

impl EmailTls {
    const fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// `[alerts.email]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EmailConfig {
    /// The SMTP server's host name (also the name its certificate must carry).
    pub server: String,
    /// Its port (default by `tls`: 587, 465, 25).
    pub port: Option<u16>,
    /// STARTTLS (default), TLS, or none (loopback only).
    #[serde(default)]
    pub tls: EmailTls,
    /// The sender, `nfrepo@example.com` or `nfrepo <nfrepo@example.com>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The SMTP user, if the server wants a login.
    pub username: Option<String>,
    /// Environment variable holding the SMTP password.
    pub password_env: Option<String>,
    /// File holding the SMTP password.
    pub password_file: Option<std::path::PathBuf>,
    /// How long one delivery may take (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: Span,
}

fn default_timeout() -> Span {
    Span::from_secs(30)
}

impl EmailConfig {
    /// A configuration sending from `from` to `to` through `server` with the defaults.
    #[must_use]
    pub fn new(server: impl Into<String>, from: impl Into<String>, to: Vec<String>) -> Self {
        Self {
            server: server.into(),
            port: None,
            tls: EmailTls::default(),
            from: from.into(),
            to,
            username: None,
            password_env: None,
            password_file: None,
            timeout: default_timeout(),
        }
    }

    /// Checks addresses, TLS and credentials settings.
    ///
    /// # Errors
    /// The problem, naming the setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.from
            .parse::<Mailbox>()
            .map_err(|e| format!("alerts.email.from: {e}"))?;
        if self.to.is_empty() {
            return Err("alerts.email.to needs at least one address".into());
        }
        for to in &self.to {
            to.parse::<Mailbox>()
                .map_err(|e| format!("alerts.email.to {to:?}: {e}"))?;
        }
        if self.tls == EmailTls::None && !is_loopback(&self.server) {
            return Err(
                "alerts.email.tls = \"none\" is for a relay on this machine only (127.0.0.1, ::1, localhost)".into(),
            );
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err("alerts.email: give password_env or password_file, not both".into());
        }
        if self.username.is_none() && (self.password_env.is_some() || self.password_file.is_some()) {
            return Err("alerts.email: a password needs a username".into());
        }
        if self.timeout.as_secs() == 0 {
            return Err("alerts.email.timeout must be at least 1s".into());
        }
        Ok(())
    }
}

/// An SMTP channel ready to send.
#[derive(Debug)]
pub struct Email {
    config: EmailConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    /// A channel sending as `config` says, logging in with `password` when a username is set.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or TLS parameters that cannot be built.
    pub fn new(config: EmailConfig, password: Option<Secret>) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let port = config.port.unwrap_or(config.tls.default_port());
        let tls_parameters =
            || TlsParameters::new(config.server.clone()).map_err(|e| Error::Config(format!("alerts.email: tls: {e}")));
        let tls = match config.tls {
            EmailTls::Starttls => Tls::Required(tls_parameters()?),
            EmailTls::Tls => Tls::Wrapper(tls_parameters()?),
            EmailTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.server)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(config.timeout.as_secs())));
        if let Some(user) = &config.username {
            let password = password.map(|p| p.expose().to_owned()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
            config,
        })
    }

    /// Sends the message to every recipient in one SMTP transaction.
    pub(super) async fn send(&self, message: &Message) -> Result<()> {
        let invalid = |e: &dyn std::fmt::Display| Error::Channel {
            channel: "email",
            message: e.to_string(),
        };
        let mut builder = lettre::Message::builder()
            .from(self.config.from.parse::<Mailbox>().map_err(|e| invalid(&e))?)
            .subject(message.subject())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.config.to {
            builder = builder.to(to.parse::<Mailbox>().map_err(|e| invalid(&e))?);
        }
        let mail = builder.body(message.body()).map_err(|e| invalid(&e))?;
        self.transport.send(mail).await.map(|_| ()).map_err(|e| {
            invalid(&format!(
                "{}:{}: {e}",
                self.config.server,
                self.config.port.unwrap_or(self.config.tls.default_port())
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::{EmailConfig, EmailTls};

    #[test]
    fn config_checks_addresses_tls_and_credentials() {
        let mut config = EmailConfig::new(
            "smtp.example.com",
            "nfrepo@example.com",
            vec!["oncall@example.com".into()],
        );
        assert_eq!(config.validate(), Ok(()));
        config.tls = EmailTls::None;
        assert!(config.validate().unwrap_err().contains("relay on this machine"));
        config.server = "127.0.0.1".into();
        assert_eq!(config.validate(), Ok(()));
        config.password_env = Some("SMTP_PW".into());
        assert!(config.validate().unwrap_err().contains("needs a username"));
        config.to = vec!["not an address".into()];
        assert!(config.validate().unwrap_err().contains("alerts.email.to"));
        config.to.clear();
        assert!(config.validate().unwrap_err().contains("at least one"));
    }
}
