//! nfrepo's watch over a repository: it computes alerts from what the
//! repository itself records, remembers them across runs, and renders
//! Prometheus metrics.
//!
//! A backup that never ran leaves nothing to report a failure with, so the
//! rules read the repository's own record, not the backup jobs' output:
//! snapshots (is the newest one recent enough for the source's schedule?),
//! the audit log (failed, corrupt, denied, mass-deleting commands), drill
//! records and the replicas' state.
//!
//! It is **not** a scheduler and not a server: a cron entry running
//! `nfrepo alerts --notify` drives it, and `nfrepo serve` can drive the same
//! functions. It never writes to the repository.
//!
//! The pieces:
//! - [`gather`] reads [`Facts`] from an open repository;
//! - [`evaluate`] turns facts, the configured [`Watch`] and the
//!   [`AlertsConfig`] thresholds into the [`Alert`]s true at a given time
//!   (each names its [`Rule`]; the rules are listed in [`rules`](evaluate));
//! - [`AlertState`] remembers them in a local file and says which
//!   [`Notice`]s are due (fire once, repeat, resolve).
//!
//! ```
//! use nfrepo_ops::{AlertState, AlertsConfig, Facts, NoticeKind, Rule, Schedule, SnapshotFact, SourceWatch, Watch, evaluate};
//!
//! let minute = 60_000_000_000_i64;
//! let watch = Watch {
//!     sources: vec![SourceWatch { name: "db".into(), schedule: Some(Schedule::parse("*/5 * * * *").unwrap()), rpo: None }],
//!     ..Watch::default()
//! };
//! let mut facts = Facts::default();
//! facts.snapshots.push(SnapshotFact { source: "db".into(), time_ns: 0, ..SnapshotFact::default() });
//! let config = AlertsConfig::default(); // grace 10m
//! // Next run due at 00:05, plus the grace: missed from 00:15 on.
//! assert!(evaluate(&facts, &watch, &config, 15 * minute).is_empty());
//! let alerts = evaluate(&facts, &watch, &config, 16 * minute);
//! assert_eq!(alerts[0].rule, Rule::MissedBackup);
//!
//! let mut state = AlertState::default();
//! let notices = state.update(alerts, 16 * minute, 240 * minute);
//! assert_eq!(notices[0].kind, NoticeKind::Firing);
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod channel;
mod config;
mod error;
mod facts;
mod metrics;
mod moment;
mod notify;
mod rules;
mod schedule;
mod state;

pub use channel::{
    Channel, Email, EmailConfig, EmailTls, Message, SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER, Webhook, WebhookConfig,
    sign,
};
pub use config::AlertsConfig;
pub use error::{Error, Result};
pub use facts::{
    DrillFact, Facts, OperationFact, RESTORE_OPERATIONS, RecoveryFact, ReplicaFact, ReplicaTarget, SnapshotFact,
    StorageFact, gather, unix_ns,
};
pub use metrics::{render as render_metrics, write_textfile};
pub use moment::parse_moment;
pub use notify::{Clock, Delivery, Origin, SystemClock, deliver, send_test};
pub use rules::{Alert, ReplicaWatch, Rule, Severity, SourceWatch, Watch, age, evaluate};
pub use schedule::Schedule;
pub use state::{Acknowledgement, AlertState, Notice, NoticeKind, RESOLVED_KEPT_NS, Status, Tracked};
