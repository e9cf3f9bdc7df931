//! Alert state across runs: what fired when, what was sent, what was acknowledged.
//!
//! Each run computes the alerts true now ([`crate::evaluate`]) and hands
//! them to [`AlertState::update`], which returns the notices due:
//! - a new alert fires once ([`NoticeKind::Firing`]);
//! - while it lasts and is not acknowledged, it is sent again every
//!   `repeat` ([`NoticeKind::Repeat`]);
//! - when it is no longer true it resolves, and a [`NoticeKind::Resolved`]
//!   notice is due if it was ever sent.
//!
//! A notice counts as sent only after [`AlertState::mark_sent`]: one that
//! no channel took is due again at the next run. Resolved alerts are kept
//! for [`RESOLVED_KEPT_NS`] as recent history, then dropped.
//!
//! The state is a JSON file written whole to a temporary file, synced and
//! renamed over the old one, mode 0600 (it names sources and hosts). Two
//! runs at once may both send a notice; neither can leave a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Alert, Error, Result};

/// How long a resolved alert stays in the state as recent history.
pub const RESOLVED_KEPT_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;

/// The state file's format version.
const VERSION: u32 = 1;

/// Where an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// True at the last evaluation.
    Firing,
    /// No longer true.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// Who acknowledged an alert, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// `user@host` or a panel user.
    pub by: String,
    /// When, nanoseconds since the Unix epoch.
    pub at_ns: i64,
}

/// One alert as the state remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// The alert as last evaluated.
    pub alert: Alert,
    /// Firing or resolved.
    pub status: Status,
    /// When this episode started firing (the first evaluation that found it).
    pub first_fired_ns: i64,
    /// The last evaluation that found it true.
    pub last_seen_ns: i64,
    /// When it was last sent, if ever.
    pub last_notified_ns: Option<i64>,
    /// How many firing or repeat notices were sent in this episode.
    pub notifications: u32,
    /// When it resolved.
    pub resolved_ns: Option<i64>,
    /// Whether the resolved notice was sent.
    pub resolved_notified: bool,
    /// The acknowledgement that stops repeats, if any.
    pub acknowledged: Option<Acknowledgement>,
}

/// What kind of notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoticeKind {
    /// The alert started.
    Firing,
    /// The alert still holds (sent every `repeat`).
    Repeat,
    /// The alert no longer holds.
    Resolved,
    /// `nfrepo alerts test`.
    Test,
}

impl NoticeKind {
    /// `firing`, `repeat`, `resolved` or `test`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Repeat => "repeat",
            Self::Resolved => "resolved",
            Self::Test => "test",
        }
    }
}

/// A message due to the channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// What kind.
    pub kind: NoticeKind,
    /// The alert it is about.
    pub alert: Alert,
    /// When the episode started firing.
    pub first_fired_ns: i64,
}

/// Every tracked alert, by [`Alert::key`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    version: u32,
    /// Tracked alerts by key (`rule:subject`).
    pub alerts: BTreeMap<String, Tracked>,
}

impl AlertState {
    /// Reads the state at `path`; an absent file is an empty state.
    ///
    /// # Errors
    /// [`Error::State`] for an unreadable or unparsable file (it is not
    /// silently replaced: that would send every alert again).
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(state_error(path, &e)),
        };
        let state: Self = serde_json::from_str(&text).map_err(|e| state_error(path, &e))?;
        if state.version != VERSION {
            return Err(state_error(
                path,
                &format!("format version {} (this nfrepo reads {VERSION})", state.version),
            ));
        }
        Ok(state)
    }

    /// Writes the state to `path` atomically, mode 0600, creating its directory (mode 0700).
    ///
    /// # Errors
    /// [`Error::State`] when the directory or file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let state = Self {
            version: VERSION,
            alerts: self.alerts.clone(),
        };
        let text = serde_json::to_vec_pretty(&state).map_err(|e| state_error(path, &e))?;
        write_atomic(path, &text, 0o600).map_err(|e| state_error(path, &e))
    }

    /// Records the alerts true at `now_ns` and returns the notices due.
    pub fn update(&mut self, current: Vec<Alert>, now_ns: i64, repeat_ns: i64) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for alert in current {
            let key = alert.key();
            seen.insert(key.clone());
            let tracked = match self.alerts.get_mut(&key) {
                Some(t) if t.status == Status::Firing => {
                    t.alert = alert;
                    t.last_seen_ns = now_ns;
                    t
                }
                _ => {
                    self.alerts.insert(
                        key.clone(),
                        Tracked {
                            alert,
                            status: Status::Firing,
                            first_fired_ns: now_ns,
                            last_seen_ns: now_ns,
                            last_notified_ns: None,
                            notifications: 0,
                            resolved_ns: None,
                            resolved_notified: false,
                            acknowledged: None,
                        },
                    );
                    match self.alerts.get_mut(&key) {
                        Some(t) => t,
                        None => continue,
                    }
                }
            };
            let kind = match tracked.last_notified_ns {
                None => Some(NoticeKind::Firing),
                Some(_) if tracked.acknowledged.is_some() => None,
                Some(last) if now_ns.saturating_sub(last) >= repeat_ns => Some(NoticeKind::Repeat),
                Some(_) => None,
            };
            if let Some(kind) = kind {
                notices.push(Notice {
                    kind,
                    alert: tracked.alert.clone(),
                    first_fired_ns: tracked.first_fired_ns,
                });
            }
        }
        for (key, tracked) in &mut self.alerts {
            if tracked.status == Status::Firing && !seen.contains(key) {
                tracked.status = Status::Resolved;
                tracked.resolved_ns = Some(now_ns);
            }
            if tracked.status == Status::Resolved && !tracked.resolved_notified && tracked.last_notified_ns.is_some() {
                notices.push(Notice {
                    kind: NoticeKind::Resolved,
                    alert: tracked.alert.clone(),
                    first_fired_ns: tracked.first_fired_ns,
                });
            }
        }
        self.alerts.retain(|_, t| {
            t.status == Status::Firing
                || t.resolved_ns
                    .is_none_or(|r| now_ns.saturating_sub(r) < RESOLVED_KEPT_NS)
                || (!t.resolved_notified && t.last_notified_ns.is_some())
        });
        notices
    }

    /// Records that `notice` reached at least one channel at `now_ns`.
    pub fn mark_sent(&mut self, notice: &Notice, now_ns: i64) {
        let Some(tracked) = self.alerts.get_mut(&notice.alert.key()) else {
            return;
        };
        match notice.kind {
            NoticeKind::Firing | NoticeKind::Repeat => {
                tracked.last_notified_ns = Some(now_ns);
                tracked.notifications += 1;
            }
            NoticeKind::Resolved => tracked.resolved_notified = true,
            NoticeKind::Test => {}
        }
    }

    /// Acknowledges the firing alert `key` (no more repeats this episode).
    /// Returns whether such an alert was firing.
    pub fn acknowledge(&mut self, key: &str, by: &str, now_ns: i64) -> bool {
        match self.alerts.get_mut(key) {
            Some(t) if t.status == Status::Firing => {
                t.acknowledged = Some(Acknowledgement {
                    by: by.to_owned(),
                    at_ns: now_ns,
                });
                true
            }
            _ => false,
        }
    }

    /// Firing alerts.
    pub fn firing(&self) -> impl Iterator<Item = &Tracked> {
        self.alerts.values().filter(|t| t.status == Status::Firing)
    }

    /// Every tracked alert as the JSON array `nfrepo alerts --json` prints
    /// and the panel's `/api/alerts` returns, times rendered by `time`.
    #[must_use]
    pub fn to_json(&self, time: &dyn Fn(i64) -> String) -> serde_json::Value {
        self.alerts
            .iter()
            .map(|(key, t)| {
                serde_json::json!({
                    "key": key,
                    "rule": t.alert.rule.as_str(),
                    "subject": t.alert.subject,
                    "severity": t.alert.rule.severity().as_str(),
                    "status": t.status.as_str(),
                    "summary": t.alert.summary,
                    "since": t.alert.since_ns.map(time),
                    "first_fired": time(t.first_fired_ns),
                    "last_seen": time(t.last_seen_ns),
                    "last_notified": t.last_notified_ns.map(time),
                    "notifications": t.notifications,
                    "resolved": t.resolved_ns.map(time),
                    "acknowledged": t.acknowledged.as_ref().map(|a| serde_json::json!({"by": a.by, "at": time(a.at_ns)})),
                })
            })
            .collect()
    }
}

fn state_error(path: &Path, e: &dyn std::fmt::Display) -> Error {
    Error::State {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Writes `bytes` to `path` through a synced temporary file in the same
/// directory and a rename, with `mode`; creates the directory (0700).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let result = (|| {
        let mut file = options.open(&temp)?;
        // The umask may have narrowed the mode; the file gets exactly `mode`.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a panic is a test failure"
    )]
    use super::{AlertState, NoticeKind, Status};
    use crate::{Alert, Rule};

    const MIN: i64 = 60 * 1_000_000_000;

    fn missed(summary: &str) -> Alert {
        Alert {
            rule: Rule::MissedBackup,
            subject: "db".into(),
            summary: summary.into(),
            since_ns: None,
        }
    }

    fn kinds(notices: &[super::Notice]) -> Vec<NoticeKind> {
        notices.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn fires_once_repeats_at_the_interval_and_resolves() {
        let mut state = AlertState::default();
        let repeat = 60 * MIN;
        let n = state.update(vec![missed("late")], 0, repeat);
        assert_eq!(kinds(&n), [NoticeKind::Firing]);
        state.mark_sent(&n[0], 0);
        assert!(state.update(vec![missed("later")], 59 * MIN, repeat).is_empty());
        assert_eq!(state.alerts["missed_backup:db"].alert.summary, "later");
        let n = state.update(vec![missed("later still")], 60 * MIN, repeat);
        assert_eq!(kinds(&n), [NoticeKind::Repeat]);
        state.mark_sent(&n[0], 60 * MIN);
        let n = state.update(vec![], 61 * MIN, repeat);
        assert_eq!(kinds(&n), [NoticeKind::Resolved]);
        assert_eq!(n[0].first_fired_ns, 0);
        let tracked = &state.alerts["missed_backup:db"];
        assert_eq!(
            (tracked.status, tracked.notifications, tracked.resolved_ns),
            (Status::Resolved, 2, Some(61 * MIN))
        );
        state.mark_sent(&n[0], 61 * MIN);
        assert!(state.update(vec![], 62 * MIN, repeat).is_empty());
        // It fires again: a new episode.
        let n = state.update(vec![missed("late again")], 70 * MIN, repeat);
        assert_eq!(kinds(&n), [NoticeKind::Firing]);
        assert_eq!(n[0].first_fired_ns, 70 * MIN);
    }

    #[test]
    fn unsent_notices_are_due_again_and_acknowledged_alerts_do_not_repeat() {
        let mut state = AlertState::default();
        let repeat = 60 * MIN;
        assert_eq!(kinds(&state.update(vec![missed("x")], 0, repeat)), [NoticeKind::Firing]);
        // No channel took it: still a first notice at the next run.
        let n = state.update(vec![missed("x")], MIN, repeat);
        assert_eq!(kinds(&n), [NoticeKind::Firing]);
        state.mark_sent(&n[0], MIN);
        assert!(state.acknowledge("missed_backup:db", "ops@laptop", 2 * MIN));
        assert!(!state.acknowledge("corruption:check", "ops@laptop", 2 * MIN));
        assert!(state.update(vec![missed("x")], 500 * MIN, repeat).is_empty());
        // Resolving still tells, and is told again until sent.
        assert_eq!(kinds(&state.update(vec![], 501 * MIN, repeat)), [NoticeKind::Resolved]);
        assert_eq!(kinds(&state.update(vec![], 502 * MIN, repeat)), [NoticeKind::Resolved]);
        // An alert resolved before anyone was told needs no notice.
        let mut quiet = AlertState::default();
        quiet.update(vec![missed("x")], 0, repeat);
        assert!(quiet.update(vec![], MIN, repeat).is_empty());
    }

    #[test]
    fn saved_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts/state.json");
        let mut state = AlertState::default();
        let n = state.update(vec![missed("x")], 5, 10);
        state.mark_sent(&n[0], 5);
        state.save(&path).unwrap();
        assert_eq!(AlertState::load(&path).unwrap().alerts, state.alerts);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(
            AlertState::load(&dir.path().join("absent.json"))
                .unwrap()
                .alerts
                .is_empty()
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(AlertState::load(&path), Err(crate::Error::State { .. })));
    }
}
