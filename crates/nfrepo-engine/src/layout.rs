//! The mount's directory layout, computed from the list of snapshots alone
//! (no tree is read to build it):
//!
//! ```text
//! /<env>/<type>/<source>/<YYYY>/<MM>/<DD>/<HHMMSS>/…   the platform's backup layout
//! /snapshots/<id>/…                                    every snapshot by its full id
//! /sources/<source>/<YYYY-MM-DDTHH:MM:SSZ>/…           every snapshot of a source by time
//! /sources/<source>/latest -> <newest timestamp>
//! ```
//!
//! `env` and `type` are the snapshot's tags of those names (`_` when a
//! snapshot has none). Times are the snapshot's start, in UTC. Names are
//! made safe for a directory entry: `/` and NUL become `_`, an empty name or
//! `.`/`..` becomes `_`, and an env called `snapshots` or `sources` is shown
//! as `_snapshots`/`_sources` so it cannot hide the two fixed directories.
//! Two snapshots of one source in the same second: the older keeps the
//! plain name, the newer gets `-<short id>` appended.
//!
//! One layout serves every way of browsing: `nfrepo mount` shows it as a
//! file system, `nfrepo ls --layout` prints it, `restore` accepts its paths
//! ([`Layout::resolve`]) and the admin panel's browser links through it.
//! It lives here, not in the mount, because none of those needs FUSE.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::SnapshotEntry;
use chrono::{DateTime, Datelike, Timelike, Utc};

/// The fixed directory of every snapshot by id.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// The fixed directory of snapshots by source.
pub const SOURCES_DIR: &str = "sources";
/// The link to a source's newest snapshot.
pub const LATEST: &str = "latest";
/// The name used for a missing `env` or `type` tag.
pub const UNTAGGED: &str = "_";

/// One entry of the layout.
#[derive(Clone, Debug)]
pub enum LayoutEntry {
    /// A directory of the layout, by name.
    Dir(BTreeMap<Vec<u8>, LayoutEntry>),
    /// A snapshot's root directory.
    Snapshot(Arc<SnapshotEntry>),
    /// A symbolic link (`latest`), with its target.
    Link(Vec<u8>),
}

/// The whole layout of one list of snapshots.
#[derive(Clone, Debug)]
pub struct Layout {
    root: LayoutEntry,
    newest_ns: i64,
    count: usize,
}

impl Layout {
    /// The layout of `snapshots` (in any order).
    #[must_use]
    pub fn build(mut snapshots: Vec<SnapshotEntry>) -> Self {
        crate::read::sort_oldest_first(&mut snapshots);
        let newest_ns = snapshots.last().map_or(0, |e| e.snapshot.time_ns);
        let count = snapshots.len();
        let mut root = BTreeMap::new();
        root.insert(SNAPSHOTS_DIR.as_bytes().to_vec(), LayoutEntry::Dir(BTreeMap::new()));
        root.insert(SOURCES_DIR.as_bytes().to_vec(), LayoutEntry::Dir(BTreeMap::new()));
        let mut root = LayoutEntry::Dir(root);
        for entry in snapshots {
            let entry = Arc::new(entry);
            let snapshot = &entry.snapshot;
            let time = DateTime::<Utc>::from_timestamp_nanos(snapshot.time_ns);
            let mut env = safe_name(snapshot.tag("env").unwrap_or(UNTAGGED));
            if env == SNAPSHOTS_DIR.as_bytes() || env == SOURCES_DIR.as_bytes() {
                env.insert(0, b'_');
            }
            let kind = safe_name(snapshot.tag("type").unwrap_or(UNTAGGED));
            let source = safe_name(&snapshot.source);
            let short = entry.id.short();
            let dated = [
                env,
                kind,
                source.clone(),
                format!("{:04}", time.year()).into_bytes(),
                format!("{:02}", time.month()).into_bytes(),
                format!("{:02}", time.day()).into_bytes(),
            ];
            let leaf = format!("{:02}{:02}{:02}", time.hour(), time.minute(), time.second());
            insert(&mut root, &dated, &leaf, &short, &entry);
            insert(
                &mut root,
                &[SNAPSHOTS_DIR.as_bytes().to_vec()],
                &entry.id.to_hex(),
                &short,
                &entry,
            );
            let stamp = time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let by_source = [SOURCES_DIR.as_bytes().to_vec(), source];
            let name = insert(&mut root, &by_source, &stamp, &short, &entry);
            // Snapshots come oldest first: the last one inserted is the newest.
            if let Some(LayoutEntry::Dir(dir)) = lookup_mut(&mut root, &by_source) {
                dir.insert(LATEST.as_bytes().to_vec(), LayoutEntry::Link(name));
            }
        }
        Self { root, newest_ns, count }
    }

    /// The entry at `path` (names from the root; empty for the root).
    #[must_use]
    pub fn get(&self, path: &[Vec<u8>]) -> Option<&LayoutEntry> {
        let mut at = &self.root;
        for name in path {
            match at {
                LayoutEntry::Dir(children) => at = children.get(name)?,
                _ => return None,
            }
        }
        Some(at)
    }

    /// The snapshot a mount path shows, and the path inside it: for
    /// `/prod/mysql/db/2026/12/02/210310/etc/app.conf`, that snapshot and
    /// `etc/app.conf`. The path may start with the mount point
    /// (`/mnt/backups/prod/…`): leading components are skipped until the
    /// rest leads to a snapshot. `latest` links are followed.
    #[must_use]
    pub fn resolve(&self, path: &str) -> Option<(Arc<SnapshotEntry>, String)> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        (0..parts.len()).find_map(|skip| self.resolve_from_root(parts.get(skip..)?))
    }

    fn resolve_from_root(&self, parts: &[&str]) -> Option<(Arc<SnapshotEntry>, String)> {
        let mut at = &self.root;
        for (i, part) in parts.iter().enumerate() {
            let LayoutEntry::Dir(children) = at else {
                return None;
            };
            let mut next = children.get(part.as_bytes())?;
            if let LayoutEntry::Link(target) = next {
                next = children.get(target)?;
            }
            if let LayoutEntry::Snapshot(snapshot) = next {
                let rest = parts.get(i + 1..).unwrap_or_default().join("/");
                return Some((snapshot.clone(), rest));
            }
            at = next;
        }
        None
    }

    /// The start time of the newest snapshot (ns since the epoch), the time
    /// shown on the layout's own directories.
    #[must_use]
    pub const fn newest_ns(&self) -> i64 {
        self.newest_ns
    }

    /// How many snapshots the layout shows.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.count
    }

    /// Whether it shows no snapshot.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every path of the layout down to the snapshots' root directories,
    /// depth-first in name order, each with its entry (for `ls --layout`).
    pub fn walk(&self, mut visit: impl FnMut(&[Vec<u8>], &LayoutEntry)) {
        fn go(path: &mut Vec<Vec<u8>>, entry: &LayoutEntry, visit: &mut dyn FnMut(&[Vec<u8>], &LayoutEntry)) {
            if !path.is_empty() {
                visit(path, entry);
            }
            if let LayoutEntry::Dir(children) = entry {
                for (name, child) in children {
                    path.push(name.clone());
                    go(path, child, visit);
                    path.pop();
                }
            }
        }
        go(&mut Vec::new(), &self.root, &mut visit);
    }
}

/// Adds the snapshot as `leaf` (or `leaf-short` when taken) under `dirs`,
/// creating them; returns the name used.
fn insert(root: &mut LayoutEntry, dirs: &[Vec<u8>], leaf: &str, short: &str, entry: &Arc<SnapshotEntry>) -> Vec<u8> {
    let mut at = root;
    for name in dirs {
        let LayoutEntry::Dir(children) = at else {
            return Vec::new();
        };
        at = children
            .entry(name.clone())
            .or_insert_with(|| LayoutEntry::Dir(BTreeMap::new()));
    }
    let LayoutEntry::Dir(children) = at else {
        return Vec::new();
    };
    let mut name = leaf.as_bytes().to_vec();
    if children.contains_key(&name) {
        name = format!("{leaf}-{short}").into_bytes();
    }
    children.insert(name.clone(), LayoutEntry::Snapshot(entry.clone()));
    name
}

fn lookup_mut<'a>(root: &'a mut LayoutEntry, path: &[Vec<u8>]) -> Option<&'a mut LayoutEntry> {
    let mut at = root;
    for name in path {
        match at {
            LayoutEntry::Dir(children) => at = children.get_mut(name)?,
            _ => return None,
        }
    }
    Some(at)
}

/// A tag value or source name made safe as one directory entry name (see the module docs).
#[must_use]
pub fn safe_name(name: &str) -> Vec<u8> {
    if name.is_empty() || name == "." || name == ".." {
        return UNTAGGED.as_bytes().to_vec();
    }
    name.bytes()
        .map(|b| if b == b'/' || b == 0 { b'_' } else { b })
        .collect()
}

#[cfg(test)]
mod tests {
    use nfrepo_format::SnapshotId;

    use super::*;

    /// A snapshot entry for tests (id `[n; 32]`, no content).
    fn snap(n: u8, source: &str, time_ns: i64, tags: &[(&str, &str)]) -> SnapshotEntry {
        let mut snapshot = nfrepo_testing::header::snapshot(source, "files", time_ns);
        snapshot.tags = tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        SnapshotEntry {
            id: SnapshotId([n; 32]),
            snapshot,
        }
    }

    fn path(p: &str) -> Vec<Vec<u8>> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    fn id_at(layout: &Layout, p: &str) -> Option<u8> {
        match layout.get(&path(p)) {
            Some(LayoutEntry::Snapshot(e)) => Some(e.id.0[0]),
            _ => None,
        }
    }

    // 2026-12-02T21:03:10Z
    const T: i64 = 1_796_245_390_000_000_000;

    #[test]
    fn places_snapshots_by_tags_time_id_and_source() {
        let layout = Layout::build(vec![
            snap(2, "db", T + 3_600_000_000_000, &[("env", "prod"), ("type", "mysql")]),
            snap(1, "db", T, &[("env", "prod"), ("type", "mysql")]),
            snap(3, "etc/files", T, &[]),
        ]);
        assert_eq!(id_at(&layout, "/prod/mysql/db/2026/12/02/210310"), Some(1));
        assert_eq!(id_at(&layout, "/prod/mysql/db/2026/12/02/220310"), Some(2));
        assert_eq!(id_at(&layout, "/_/_/etc_files/2026/12/02/210310"), Some(3));
        assert_eq!(id_at(&layout, &format!("/snapshots/{}", hex(2))), Some(2));
        assert_eq!(id_at(&layout, "/sources/db/2026-12-02T21:03:10Z"), Some(1));
        match layout.get(&path("/sources/db/latest")) {
            Some(LayoutEntry::Link(target)) => assert_eq!(target, b"2026-12-02T22:03:10Z"),
            other => panic!("latest is {other:?}"),
        }
        assert_eq!(layout.len(), 3);
        assert_eq!(layout.newest_ns(), T + 3_600_000_000_000);
    }

    fn hex(n: u8) -> String {
        SnapshotId([n; 32]).to_hex()
    }

    #[test]
    fn same_second_gets_the_short_id_and_reserved_envs_are_renamed() {
        let layout = Layout::build(vec![
            snap(5, "db", T + 1, &[("env", "sources")]),
            snap(4, "db", T, &[("env", "sources")]),
        ]);
        assert_eq!(id_at(&layout, "/_sources/_/db/2026/12/02/210310"), Some(4));
        let second = format!("/_sources/_/db/2026/12/02/210310-{}", SnapshotId([5; 32]).short());
        assert_eq!(id_at(&layout, &second), Some(5));
        let mut names = Vec::new();
        layout.walk(|p, _| names.push(p.len()));
        assert!(names.len() > 10);
    }

    #[test]
    fn mount_paths_resolve_to_a_snapshot_and_a_path_in_it() {
        let layout = Layout::build(vec![
            snap(1, "db", T, &[("env", "prod"), ("type", "mysql")]),
            snap(2, "db", T + 60_000_000_000, &[("env", "prod"), ("type", "mysql")]),
        ]);
        let at = |p: &str| layout.resolve(p).map(|(s, rest)| (s.id.0[0], rest));
        assert_eq!(
            at("/prod/mysql/db/2026/12/02/210310/etc/app.conf"),
            Some((1, "etc/app.conf".into()))
        );
        assert_eq!(
            at("/mnt/backups/prod/mysql/db/2026/12/02/210410"),
            Some((2, String::new()))
        );
        assert_eq!(at(&format!("/snapshots/{}/x", hex(1))), Some((1, "x".into())));
        assert_eq!(at("/sources/db/latest/x/y"), Some((2, "x/y".into())));
        assert_eq!(at("/prod/mysql/db/2026"), None);
        assert_eq!(at("/nothing/here"), None);
    }

    #[test]
    fn unsafe_names_are_made_safe() {
        assert_eq!(safe_name(""), b"_");
        assert_eq!(safe_name(".."), b"_");
        assert_eq!(safe_name("a/b\0c"), b"a_b_c");
    }
}
