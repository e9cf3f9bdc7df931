//! Sending the due notices to every channel and recording what went out.

use crate::{Alert, AlertState, Channel, Message, Notice, NoticeKind, Rule};

/// Where the time comes from: the system clock in production, a fixed or
/// stepped one in tests.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        crate::unix_ns(std::time::SystemTime::now())
    }
}

/// What the evaluation is about, for every message.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The repository id (hex).
    pub repository: String,
    /// The host that evaluated.
    pub host: String,
}

/// One attempt to hand a notice to one channel.
#[derive(Debug)]
pub struct Delivery {
    /// The notice's kind.
    pub kind: NoticeKind,
    /// The alert's key (`rule:subject`).
    pub key: String,
    /// `webhook` or `email`.
    pub channel: &'static str,
    /// Why it failed, one line without secrets; `None` when it went out.
    pub error: Option<String>,
}

/// Sends each notice to every channel. A notice that at least one channel
/// took is recorded as sent in `state`; one that none took stays due.
pub async fn deliver(
    state: &mut AlertState,
    notices: Vec<Notice>,
    channels: &[Channel],
    origin: &Origin,
    clock: &dyn Clock,
) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    for notice in notices {
        let message = Message {
            notice,
            repository: origin.repository.clone(),
            host: origin.host.clone(),
            sent_ns: clock.now_ns(),
        };
        let mut taken = false;
        for channel in channels {
            let result = channel.send(&message).await;
            taken |= result.is_ok();
            if let Err(e) = &result {
                tracing::warn!(channel = channel.name(), alert = %message.notice.alert.key(), error = %e, "notice not sent");
            }
            deliveries.push(Delivery {
                kind: message.notice.kind,
                key: message.notice.alert.key(),
                channel: channel.name(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        if taken {
            state.mark_sent(&message.notice, clock.now_ns());
        }
    }
    deliveries
}

/// Sends one test notice to every channel (`nfrepo alerts test`).
pub async fn send_test(channels: &[Channel], origin: &Origin, clock: &dyn Clock) -> Vec<Delivery> {
    let now = clock.now_ns();
    let notice = Notice {
        kind: NoticeKind::Test,
        alert: Alert {
            rule: Rule::Test,
            subject: origin.host.clone(),
            summary: format!("a test notice from nfrepo on {}: this channel works", origin.host),
            since_ns: Some(now),
        },
        first_fired_ns: now,
    };
    let mut scratch = AlertState::default();
    deliver(&mut scratch, vec![notice], channels, origin, clock).await
}
