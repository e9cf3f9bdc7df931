//! Typed object keys and their paths under the repository root.

use std::fmt;
use std::time::SystemTime;

use crate::error::{Error, ErrorKind, Result};

/// The longest object name [`ObjectKey::new`] accepts, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The kinds of repository objects; each lives under its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// The single `config` object.
    Config,
    /// Key slots, `keys/<name>`.
    Key,
    /// Data packs, `data/<xx>/<name>`.
    Data,
    /// Tree and content-list packs, `tree/<xx>/<name>`.
    Tree,
    /// Index deltas, `index/<name>`.
    Index,
    /// Snapshot roots, `snapshots/<name>`.
    Snapshot,
    /// Live backup session markers, `sessions/<name>`.
    Session,
    /// GC plans, `gc/<name>`.
    Gc,
    /// Leases (e.g. the GC lease), `lease/<name>`.
    Lease,
    /// Audit log entries, `audit/<name>`.
    Audit,
    /// Snapshot protection markers, `protect/<snapshot id>`.
    Protect,
    /// Good markers (deployments that passed their checks), `good/<snapshot id>`.
    Good,
    /// The replicator's state on a replica, `replica/state`.
    Replica,
    /// Disaster-recovery drill records, `drill/<drill id>`.
    Drill,
    /// Snapshots being forgotten, `tombstones/<snapshot id>`: a copy of the
    /// snapshot's bytes kept until `forget` has read the protect markers
    /// again, so a killed `forget` can be finished or undone.
    Tombstone,
}

const ALL_KINDS: [ObjectKind; 15] = [
    ObjectKind::Config,
    ObjectKind::Key,
    ObjectKind::Data,
    ObjectKind::Tree,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Session,
    ObjectKind::Gc,
    ObjectKind::Lease,
    ObjectKind::Audit,
    ObjectKind::Protect,
    ObjectKind::Good,
    ObjectKind::Replica,
    ObjectKind::Drill,
    ObjectKind::Tombstone,
];

impl ObjectKind {
    /// Every kind, in a stable order.
    pub fn all() -> &'static [ObjectKind] {
        &ALL_KINDS
    }

    /// The top-level path component; for [`ObjectKind::Config`] it is the object's whole path.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "keys",
            ObjectKind::Data => "data",
            ObjectKind::Tree => "tree",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Session => "sessions",
            ObjectKind::Gc => "gc",
            ObjectKind::Lease => "lease",
            ObjectKind::Audit => "audit",
            ObjectKind::Protect => "protect",
            ObjectKind::Good => "good",
            ObjectKind::Replica => "replica",
            ObjectKind::Drill => "drill",
            ObjectKind::Tombstone => "tombstones",
        }
    }

    /// Packs are fanned out over 256+ subdirectories by their first two characters.
    pub(crate) fn is_fanned_out(self) -> bool {
        matches!(self, ObjectKind::Data | ObjectKind::Tree)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// A validated object name of a given kind.
///
/// Names are 1 to [`MAX_NAME_LEN`] characters of `[0-9A-Za-z._-]` and never start
/// with `.`, so they are safe as path components on every backend and can never
/// collide with the store's own `.tmp-*` files. Data and tree names have at least two
/// characters (their fan-out directory); the config's name is always `config`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    kind: ObjectKind,
    name: String,
}

impl ObjectKey {
    /// Validates `name` for `kind`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidKey`] naming the rule the name breaks.
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if let Some(problem) = name_problem(kind, &name) {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                format!("invalid {kind} object name {:?}: {problem}", truncated(&name)),
            ));
        }
        Ok(Self { kind, name })
    }

    /// The repository's `config` object.
    pub fn config() -> Self {
        Self {
            kind: ObjectKind::Config,
            name: "config".to_owned(),
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The object's name within its kind.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path relative to the repository root, `/`-separated.
    pub fn path(&self) -> String {
        match self.kind {
            ObjectKind::Config => "config".to_owned(),
            kind if kind.is_fanned_out() => {
                format!("{}/{}/{}", kind.prefix(), self.fan_out_dir(), self.name)
            }
            kind => format!("{}/{}", kind.prefix(), self.name),
        }
    }

    /// Parses a path produced by [`ObjectKey::path`] for `kind`; `None` for anything
    /// else (temp files, stray files, directories, names that don't validate).
    pub(crate) fn from_path(kind: ObjectKind, path: &str) -> Option<Self> {
        let path = path.trim_start_matches('/');
        if kind == ObjectKind::Config {
            return (path == "config").then(ObjectKey::config);
        }
        let rest = path.strip_prefix(kind.prefix())?.strip_prefix('/')?;
        let name = if kind.is_fanned_out() {
            let (dir, name) = rest.split_once('/')?;
            if !name.starts_with(dir) || dir.len() != 2 {
                return None;
            }
            name
        } else {
            rest
        };
        ObjectKey::new(kind, name).ok()
    }

    fn fan_out_dir(&self) -> &str {
        // Validation guarantees at least two ASCII characters for fanned-out kinds.
        self.name.get(..2).unwrap_or(&self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// What a listing or a stat reports about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
    /// The backend's modification time, when it reports one; GC's grace periods use it.
    pub last_modified: Option<SystemTime>,
}

fn name_problem(kind: ObjectKind, name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("longer than 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("only 0-9, A-Z, a-z, '.', '_' and '-' are allowed");
    }
    if name.starts_with('.') {
        return Some("starts with '.'");
    }
    if kind == ObjectKind::Config && name != "config" {
        return Some("the config object is always named \"config\"");
    }
    if kind.is_fanned_out() && name.len() < 2 {
        return Some("pack names need at least two characters");
    }
    None
}

/// Keeps error messages one short line even for hostile input.
fn truncated(name: &str) -> String {
    name.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases = [
            (ObjectKind::Key, "k1", "keys/k1"),
            (ObjectKind::Data, "abcdef", "data/ab/abcdef"),
            (ObjectKind::Tree, "0f12", "tree/0f/0f12"),
            (ObjectKind::Index, "i", "index/i"),
            (ObjectKind::Snapshot, "s", "snapshots/s"),
            (ObjectKind::Session, "s", "sessions/s"),
            (ObjectKind::Gc, "g", "gc/g"),
            (ObjectKind::Lease, "gc", "lease/gc"),
            (ObjectKind::Audit, "00000001-ab", "audit/00000001-ab"),
            (ObjectKind::Config, "config", "config"),
            (ObjectKind::Protect, "ab", "protect/ab"),
            (ObjectKind::Good, "ab", "good/ab"),
            (ObjectKind::Replica, "state", "replica/state"),
            (ObjectKind::Drill, "ab", "drill/ab"),
            (ObjectKind::Tombstone, "ab", "tombstones/ab"),
        ];
        for (kind, name, path) in cases {
            let key = ObjectKey::new(kind, name).unwrap();
            assert_eq!(key.path(), path);
            assert_eq!(key.to_string(), path);
            assert_eq!(ObjectKey::from_path(kind, path), Some(key));
        }
        assert_eq!(ObjectKey::config().path(), "config");
        assert_eq!(ObjectKind::all().len(), cases.len(), "every kind has a case above");
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let bad = [
            (ObjectKind::Index, ""),
            (ObjectKind::Index, long.as_str()),
            (ObjectKind::Index, ".hidden"),
            (ObjectKind::Index, "a/b"),
            (ObjectKind::Index, "a b"),
            (ObjectKind::Index, "é"),
            (ObjectKind::Index, ".."),
            (ObjectKind::Data, "a"),
            (ObjectKind::Config, "other"),
        ];
        for (kind, name) in bad {
            let err = ObjectKey::new(kind, name).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{name:?}");
        }
        assert!(ObjectKey::new(ObjectKind::Index, "a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(ObjectKey::new(ObjectKind::Index, "A-z_0.9").is_ok());
    }

    #[test]
    fn from_path_skips_foreign_files() {
        assert_eq!(ObjectKey::from_path(ObjectKind::Data, "data/ab/.tmp-abcd-1234"), None);
        assert_eq!(ObjectKey::from_path(ObjectKind::Data, "data/cd/abcd"), None);
        assert_eq!(ObjectKey::from_path(ObjectKind::Data, "data/abcd"), None);
        assert_eq!(ObjectKey::from_path(ObjectKind::Data, "data/ab/"), None);
        assert_eq!(ObjectKey::from_path(ObjectKind::Index, "index/sub/x"), None);
        assert_eq!(ObjectKey::from_path(ObjectKind::Index, "keys/x"), None);
        assert_eq!(ObjectKey::from_path(ObjectKind::Config, "configx"), None);
    }
}
