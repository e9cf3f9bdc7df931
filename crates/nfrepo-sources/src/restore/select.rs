//! Which nodes a restore writes: `--include` / `--exclude` globs.
//!
//! Globs are matched against the path **relative to the restore target**,
//! the way the entry will appear under it: restoring `SNAP:src/c` puts `c`
//! at `TARGET/c`, so `c/t2.txt` names its file `t2.txt`. The rules are
//! gitignore's (and restic's):
//!
//! - a pattern without `/` matches the name of any entry at any depth
//!   (`t1*`, `*.bin`, `cache`);
//! - a pattern with `/` matches the whole relative path (a leading `/` is
//!   ignored; `*` does not cross `/`, `**` does);
//! - a pattern that matches a directory matches everything under it.
//!
//! An entry is restored if no exclude pattern matches it and, when include
//! patterns are given, one matches it. Directories are kept while they lead
//! to a restored entry (or match an include themselves), decided as the walk
//! goes ([`Selection`] holds back at most one chain of ancestors). A pattern that
//! matches no entry at all is reported ([`Selection::unmatched`]): a typo
//! in a filter must not pass as a successful restore.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use nfrepo_format::{Node, NodeKind};

use crate::{Error, Result};

/// One list of patterns, split into name patterns and path patterns.
struct Patterns {
    /// The patterns as given, for reporting.
    text: Vec<String>,
    /// Whether each pattern matched at least one entry.
    hit: Vec<bool>,
    names: GlobSet,
    /// Index in `text` of each pattern of `names`.
    names_index: Vec<usize>,
    paths: GlobSet,
    /// Index in `text` of each pattern of `paths`.
    paths_index: Vec<usize>,
}

impl Patterns {
    fn new(patterns: &[String]) -> Result<Option<Self>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let (mut names_index, mut paths_index) = (Vec::new(), Vec::new());
        for (i, pattern) in patterns.iter().enumerate() {
            let trimmed = pattern.trim_end_matches('/');
            let bad = |e: globset::Error| Error::Invalid(format!("bad glob {pattern:?}: {e}"));
            if trimmed.is_empty() {
                return Err(Error::Invalid(format!("bad glob {pattern:?}: empty pattern")));
            }
            if trimmed.contains('/') {
                let glob = GlobBuilder::new(trimmed.trim_start_matches('/'))
                    .literal_separator(true)
                    .build()
                    .map_err(bad)?;
                paths.add(glob);
                paths_index.push(i);
            } else {
                names.add(GlobBuilder::new(trimmed).literal_separator(true).build().map_err(bad)?);
                names_index.push(i);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::Invalid(e.to_string()));
        Ok(Some(Self {
            text: patterns.to_vec(),
            hit: vec![false; patterns.len()],
            names: build(names)?,
            names_index,
            paths: build(paths)?,
            paths_index,
        }))
    }

    /// Whether `rel` (slash-separated, relative to the target) or one of
    /// its ancestors matches; records which patterns matched.
    fn matches(&mut self, rel: &[u8]) -> bool {
        let mut any = false;
        let mut end = 0;
        for component in rel.split(|b| *b == b'/') {
            end += component.len();
            let prefix = rel.get(..end).unwrap_or(rel);
            end += 1;
            for i in self.names.matches(Path::new(OsStr::from_bytes(component))) {
                any = true;
                if let Some(hit) = self.names_index.get(i).and_then(|&t| self.hit.get_mut(t)) {
                    *hit = true;
                }
            }
            for i in self.paths.matches(Path::new(OsStr::from_bytes(prefix))) {
                any = true;
                if let Some(hit) = self.paths_index.get(i).and_then(|&t| self.hit.get_mut(t)) {
                    *hit = true;
                }
            }
        }
        any
    }

    fn unmatched(&self, flag: &str) -> impl Iterator<Item = String> {
        self.text
            .iter()
            .zip(&self.hit)
            .filter(|(_, hit)| !**hit)
            .map(move |(text, _)| format!("--{flag} {text:?}"))
    }
}

/// A node to restore, at its path relative to the target.
#[derive(Debug)]
pub(crate) struct Planned {
    /// Slash-separated path relative to the target root.
    pub rel: Vec<u8>,
    pub node: Node,
}

impl Planned {
    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.node.kind, NodeKind::Dir { .. })
    }
}

/// The include and exclude patterns of one restore, applied to the walk
/// as it goes.
///
/// Entries come in walk order (a directory before what it holds) and go
/// out in the same order as soon as they are decided. With include
/// patterns, a directory that matches none is held back until an entry
/// under it is restored (then it goes out first, with its held-back
/// parents) or the walk leaves it (then it is dropped): the held-back
/// directories are always one chain of ancestors, so they are at most the
/// depth of the tree, whatever its width.
pub(crate) struct Selection {
    include: Option<Patterns>,
    exclude: Option<Patterns>,
    /// Directories waiting for a restored entry under them (with include
    /// patterns only), outermost first.
    held: Vec<Planned>,
}

/// Whether `rel` is strictly under the directory `dir`.
pub(crate) fn is_under(rel: &[u8], dir: &[u8]) -> bool {
    rel.len() > dir.len() && rel.starts_with(dir) && rel.get(dir.len()) == Some(&b'/')
}

impl Selection {
    /// # Errors
    /// [`Error::Invalid`] for a pattern that is not a glob.
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        Ok(Self {
            include: Patterns::new(include)?,
            exclude: Patterns::new(exclude)?,
            held: Vec::new(),
        })
    }

    /// Offers one entry of the walk (in walk order); appends to `out` what
    /// is decided to be restored now, parents before children.
    pub(crate) fn offer(&mut self, planned: Planned, out: &mut Vec<Planned>) {
        // Every pattern is tried on every entry so that `unmatched` is exact.
        let excluded = self.exclude.as_mut().is_some_and(|p| p.matches(&planned.rel));
        let included = self.include.as_mut().is_none_or(|p| p.matches(&planned.rel));
        // The walk has left every held directory this entry is not under.
        while self.held.last().is_some_and(|d| !is_under(&planned.rel, &d.rel)) {
            self.held.pop();
        }
        if excluded {
            return;
        }
        if included {
            out.append(&mut self.held);
            out.push(planned);
        } else if planned.is_dir() {
            self.held.push(planned);
        }
    }

    /// Patterns that matched no entry, as `--include "pattern"` (exact once
    /// every entry was offered).
    pub(crate) fn unmatched(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(p) = &self.include {
            out.extend(p.unmatched("include"));
        }
        if let Some(p) = &self.exclude {
            out.extend(p.unmatched("exclude"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use nfrepo_format::{BlobId, Metadata, Node, NodeKind};

    use super::{Planned, Selection};

    fn node(dir: bool) -> Node {
        Node {
            name: Vec::new(),
            kind: if dir {
                NodeKind::Dir {
                    tree: BlobId::default(),
                }
            } else {
                NodeKind::Fifo
            },
            meta: Metadata::default(),
        }
    }

    /// The restored paths of a tree `c/{t1.txt,t2.txt,sub/t1.log,sub/x}`.
    fn select(include: &[&str], exclude: &[&str]) -> (Vec<String>, Vec<String>) {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut selection = Selection::new(&own(include), &own(exclude)).unwrap();
        let mut plan = Vec::new();
        for (rel, dir) in [
            ("c", true),
            ("c/sub", true),
            ("c/sub/t1.log", false),
            ("c/sub/x", false),
            ("c/t1.txt", false),
            ("c/t2.txt", false),
        ] {
            let planned = Planned {
                rel: rel.as_bytes().to_vec(),
                node: node(dir),
            };
            selection.offer(planned, &mut plan);
        }
        let unmatched = selection.unmatched();
        let plan = plan.into_iter().map(|p| String::from_utf8(p.rel).unwrap()).collect();
        (plan, unmatched)
    }

    // Issue 9, bug 17: `--exclude 't1*'` excluded nothing under a sub-path.
    #[test]
    fn issue9_bug17_name_pattern_excludes_at_any_depth() {
        let (plan, unmatched) = select(&[], &["t1*"]);
        assert_eq!(plan, ["c", "c/sub", "c/sub/x", "c/t2.txt"]);
        assert!(unmatched.is_empty());
    }

    // Issue 9, bug 17: `--include 'c/t2.txt'` restored nothing.
    #[test]
    fn issue9_bug17_path_pattern_is_relative_to_the_target() {
        let (plan, unmatched) = select(&["c/t2.txt"], &[]);
        assert_eq!(plan, ["c", "c/t2.txt"]);
        assert!(unmatched.is_empty());
    }

    #[test]
    fn a_matching_directory_brings_its_subtree() {
        assert_eq!(select(&["c/sub"], &[]).0, ["c", "c/sub", "c/sub/t1.log", "c/sub/x"]);
        assert_eq!(select(&["/c/sub/"], &[]).0, ["c", "c/sub", "c/sub/t1.log", "c/sub/x"]);
        assert_eq!(select(&[], &["sub"]).0, ["c", "c/t1.txt", "c/t2.txt"]);
    }

    #[test]
    fn star_does_not_cross_a_slash_in_path_patterns() {
        assert_eq!(select(&["c/*.log"], &[]).1, ["--include \"c/*.log\""]);
        assert_eq!(select(&["c/**/*.log"], &[]).0, ["c", "c/sub", "c/sub/t1.log"]);
    }

    #[test]
    fn patterns_that_match_nothing_are_reported() {
        let (plan, unmatched) = select(&["nope", "t2.txt"], &["*.tmp"]);
        assert_eq!(plan, ["c", "c/t2.txt"]);
        assert_eq!(unmatched, ["--include \"nope\"", "--exclude \"*.tmp\""]);
    }
}
