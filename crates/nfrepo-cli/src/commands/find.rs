//! `nfrepo find PATTERN`: search paths across snapshots.

use std::sync::Arc;

use nfrepo_engine::{Found, Operation};
use nfrepo_format::{Node, NodeKind};

use crate::cli::{FindArgs, GlobalArgs};
use crate::failure::Failure;
use crate::output::{escape, outln};
use crate::{context, output, render};

fn fail(e: &nfrepo_engine::Error) -> Failure {
    Failure::engine(e, Operation::Inspect)
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::usage(message)
}

/// `--size`: exactly, more than (`+`) or less than (`-`) a number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeFilter {
    Exactly(u64),
    Above(u64),
    Below(u64),
}

impl SizeFilter {
    /// `N`, `+N` or `-N`, N with an optional `k`, `M` or `G` (powers of 1024).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (make, number): (fn(u64) -> Self, &str) = match text.as_bytes().first() {
            Some(b'+') => (Self::Above, &text[1..]),
            Some(b'-') => (Self::Below, &text[1..]),
            _ => (Self::Exactly, text),
        };
        let (digits, unit) = match number.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&number[..i], c),
            _ => (number, 'c'),
        };
        let shift = match unit.to_ascii_lowercase() {
            'c' => 0,
            'k' => 10,
            'm' => 20,
            'g' => 30,
            _ => return Err(format!("unknown size unit in {text:?} (k, M or G)")),
        };
        let value: u64 = digits
            .parse()
            .map_err(|_| format!("a size is N, +N or -N with k, M or G: {text:?}"))?;
        value
            .checked_mul(1 << shift)
            .map(make)
            .ok_or_else(|| format!("size too large: {text:?}"))
    }

    const fn accepts(self, size: u64) -> bool {
        match self {
            Self::Exactly(n) => size == n,
            Self::Above(n) => size > n,
            Self::Below(n) => size < n,
        }
    }
}

/// How PATTERN is matched.
enum Pattern {
    /// A glob on the name (no `/` in it).
    Name(globset::GlobMatcher),
    /// A glob on the whole path.
    Path(globset::GlobMatcher),
    Regex(regex::bytes::Regex),
}

impl Pattern {
    fn new(text: &str, regex: bool) -> Result<Self, Failure> {
        if regex {
            return regex::bytes::Regex::new(text)
                .map(Self::Regex)
                .map_err(|e| usage(format!("bad --regex pattern: {e}")));
        }
        let glob = globset::GlobBuilder::new(text.trim_start_matches('/'))
            .literal_separator(true)
            .build()
            .map_err(|e| usage(format!("bad glob pattern: {e}")))?
            .compile_matcher();
        Ok(if text.contains('/') {
            Self::Path(glob)
        } else {
            Self::Name(glob)
        })
    }

    fn matches(&self, path: &[u8]) -> bool {
        match self {
            Self::Name(glob) => {
                let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
                glob.is_match(bytes_path(name))
            }
            Self::Path(glob) => glob.is_match(bytes_path(path)),
            Self::Regex(re) => re.is_match(path),
        }
    }
}

fn bytes_path(bytes: &[u8]) -> &std::path::Path {
    std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes))
}

fn kind_name(node: &Node) -> &'static str {
    match node.kind {
        NodeKind::Dir { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
        NodeKind::File { .. } => "file",
        _ => "other",
    }
}

pub async fn run(global: &GlobalArgs, args: FindArgs) -> Result<i32, Failure> {
    let pattern = Pattern::new(&args.pattern, args.regex)?;
    let size = args.size.as_deref().map(SizeFilter::parse).transpose().map_err(usage)?;
    let newer = args
        .newer
        .as_deref()
        .map(|t| crate::commands::snapshots::parse_time(t, chrono::Utc::now()))
        .transpose()?;
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let all = repo.readable_snapshots().await.map_err(|e| fail(&e))?;
    let mut chosen = crate::commands::snapshots::filter(all.clone(), &args.filter)?;
    if !args.snapshots.is_empty() {
        let mut named = Vec::new();
        for spec in &args.snapshots {
            named.push(
                nfrepo_engine::select_snapshot(all.clone(), spec)
                    .map_err(|e| fail(&e))?
                    .id,
            );
        }
        chosen.retain(|s| named.contains(&s.id));
    }
    let reader = repo.reader().await.map_err(|e| fail(&e))?;
    let accept = |path: &[u8], node: &Node| {
        pattern.matches(path)
            && size.is_none_or(|s| matches!(node.kind, NodeKind::File { .. }) && s.accepts(node.size()))
            && newer.is_none_or(|t| node.meta.mtime_ns > t)
    };
    let found = reader.find(&chosen, accept).await.map_err(|e| fail(&e))?;
    let short: std::collections::HashMap<_, Arc<str>> =
        chosen.iter().map(|s| (s.id, Arc::from(s.id.short()))).collect();
    if global.json {
        let list: Vec<serde_json::Value> = found.iter().map(found_json).collect();
        outln!("{}", serde_json::Value::Array(list));
        return Ok(0);
    }
    for f in &found {
        let ids: Vec<&str> = f
            .snapshots
            .iter()
            .filter_map(|id| short.get(id).map(|s| &**s))
            .collect();
        let slash = if matches!(f.node.kind, NodeKind::Dir { .. }) {
            "/"
        } else {
            ""
        };
        outln!(
            "{}{slash}  {}  {}  {}",
            escape::bytes(&f.path),
            f.node.size(),
            render::time_ns(f.node.meta.mtime_ns),
            ids.join(",")
        );
        if output::closed() {
            break;
        }
    }
    Ok(0)
}

fn found_json(f: &Found) -> serde_json::Value {
    let mut value = serde_json::json!({
        "type": kind_name(&f.node),
        "size": f.node.size(),
        "mode": f.node.meta.mode,
        "mtime": render::time_ns(f.node.meta.mtime_ns),
        "snapshots": f.snapshots.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
    });
    escape::json_bytes(&mut value, "path", &f.path);
    if let NodeKind::File { blake3, .. } = &f.node.kind {
        value["blake3"] = hex::encode(blake3).into();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_signs() {
        assert_eq!(SizeFilter::parse("10"), Ok(SizeFilter::Exactly(10)));
        assert_eq!(SizeFilter::parse("+1k"), Ok(SizeFilter::Above(1024)));
        assert_eq!(SizeFilter::parse("-2M"), Ok(SizeFilter::Below(2 << 20)));
        assert!(SizeFilter::parse("1x").is_err());
        assert!(SizeFilter::parse("+").is_err());
    }

    #[test]
    fn globs_match_names_or_whole_paths() {
        let name = Pattern::new("*.pdf", false).unwrap_or_else(|_| panic!("glob"));
        assert!(name.matches(b"a/b/invoice.pdf"));
        assert!(!name.matches(b"a/pdf/x"));
        let path = Pattern::new("uploads/**/*.pdf", false).unwrap_or_else(|_| panic!("glob"));
        assert!(path.matches(b"uploads/2026/11/x.pdf"));
        assert!(!path.matches(b"other/x.pdf"));
        let re = Pattern::new("conf$", true).unwrap_or_else(|_| panic!("regex"));
        assert!(re.matches(b"etc/app.conf"));
    }
}
