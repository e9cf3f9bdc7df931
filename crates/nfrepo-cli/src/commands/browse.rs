//! `nfrepo ls`, `cat` and `diff`.

use nfrepo_engine::LayoutEntry;
use nfrepo_engine::{ErrorCode, Operation, Reader, SnapshotEntry, WalkEntry};
use nfrepo_format::{Node, NodeKind};

use crate::cli::{CatArgs, DiffArgs, GlobalArgs, LsArgs};
use crate::failure::Failure;
use crate::output::{Stdout, escape, outln};
use crate::{context, output, render};

fn fail(e: nfrepo_engine::Error) -> Failure {
    Failure::engine(&e, Operation::Inspect)
}

/// Opens the repository and a reader, and resolves the snapshot part of a spec.
pub async fn open_snapshot(
    global: &GlobalArgs,
    spec: &str,
    during: Operation,
) -> Result<(Reader, SnapshotEntry), Failure> {
    let repo = context::open_repository(global, during).await?.repo;
    let snapshot = repo
        .find_snapshot(spec)
        .await
        .map_err(|e| Failure::engine(&e, during))?;
    if during == Operation::Restore {
        crate::trail::acting_on(&snapshot.snapshot.source);
    }
    let reader = repo.reader().await.map_err(|e| Failure::engine(&e, during))?;
    Ok((reader, snapshot))
}

fn kind_char(node: &Node) -> char {
    match node.kind {
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice { .. } => 'c',
        NodeKind::BlockDevice { .. } => 'b',
        NodeKind::Socket => 's',
        _ => '-',
    }
}

fn entry_json(entry: &WalkEntry) -> serde_json::Value {
    let node = &entry.node;
    let mut value = serde_json::json!({
        "type": match kind_char(node) { 'd' => "dir", 'l' => "symlink", '-' => "file", 'p' => "fifo", 'c' => "chardev", 'b' => "blockdev", _ => "socket" },
        "size": node.size(),
        "mode": node.meta.mode,
        "uid": node.meta.uid,
        "gid": node.meta.gid,
        "user": node.meta.user,
        "group": node.meta.group,
        "mtime": render::time_ns(node.meta.mtime_ns),
    });
    escape::json_bytes(&mut value, "path", &entry.path);
    if let NodeKind::File { blake3, sha256, .. } = &node.kind {
        value["blake3"] = hex::encode(blake3).into();
        if let Some(sha) = sha256 {
            value["sha256"] = hex::encode(sha).into();
        }
    }
    if let NodeKind::Symlink { target } = &node.kind {
        escape::json_bytes(&mut value, "target", target);
    }
    value
}

/// `ls --layout`: the mount's layout down to the snapshots, or (for a path
/// into a snapshot) that snapshot's spec.
async fn layout(global: &GlobalArgs, target: &str) -> Result<Option<String>, Failure> {
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let layout = nfrepo_engine::Layout::build(repo.readable_snapshots().await.map_err(fail)?);
    let prefix: Vec<Vec<u8>> = target
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(|p| p.as_bytes().to_vec())
        .collect();
    if layout.get(&prefix).is_none() || matches!(layout.get(&prefix), Some(LayoutEntry::Snapshot(_))) {
        return match layout.resolve(target) {
            Some((snapshot, path)) => Ok(Some(format!("{}:{path}", snapshot.id.to_hex()))),
            None => Err(fail(nfrepo_engine::Error::PathNotFound {
                snapshot: "layout".into(),
                path: target.to_owned(),
            })),
        };
    }
    let mut json = Vec::new();
    layout.walk(|path, entry| {
        if !path.starts_with(&prefix) || output::closed() {
            return;
        }
        let shown: Vec<u8> = path.iter().flat_map(|p| [b"/".as_slice(), p].concat()).collect();
        let (kind, id, target) = match entry {
            LayoutEntry::Dir(_) => ("dir", None, None),
            LayoutEntry::Snapshot(s) => ("snapshot", Some(s.id.to_hex()), None),
            LayoutEntry::Link(t) => ("link", None, Some(t.clone())),
        };
        if global.json {
            let mut value = serde_json::json!({"type": kind, "snapshot_id": id});
            escape::json_bytes(&mut value, "path", &shown);
            if let Some(t) = &target {
                escape::json_bytes(&mut value, "target", t);
            }
            json.push(value);
        } else {
            let mut line = escape::bytes(&shown).into_owned();
            match (&target, id) {
                (Some(t), _) => {
                    line.push_str(" -> ");
                    line.push_str(&escape::bytes(t));
                }
                (None, Some(id)) => {
                    line.push_str("/  ");
                    line.push_str(&id);
                }
                (None, None) => line.push('/'),
            }
            outln!("{line}");
        }
    });
    if global.json {
        outln!("{}", serde_json::Value::Array(json));
    }
    Ok(None)
}

pub async fn ls(global: &GlobalArgs, args: LsArgs) -> Result<i32, Failure> {
    let target = match (args.layout, &args.target) {
        (true, target) => match layout(global, target.as_deref().unwrap_or("/")).await? {
            Some(spec) => spec,
            None => return Ok(0),
        },
        (false, Some(target)) => target.clone(),
        (false, None) => return Err(Failure::usage("ls needs SNAPSHOT[:PATH] or --layout")),
    };
    let (snapshot_spec, path) = context::split_spec(&target);
    let (reader, snapshot) = open_snapshot(global, snapshot_spec, Operation::Inspect).await?;
    let node = reader.resolve(&snapshot, path).await.map_err(fail)?;
    let prefix = path.trim_matches('/').as_bytes().to_vec();
    let mut entries = Vec::new();
    let collect = |e: WalkEntry| {
        entries.push(e);
        Ok(())
    };
    match node {
        None => reader
            .walk(&snapshot.snapshot.root, b"", args.recursive, collect)
            .await
            .map_err(fail)?,
        Some(Node {
            kind: NodeKind::Dir { tree },
            ..
        }) => reader
            .walk(&tree, &prefix, args.recursive, collect)
            .await
            .map_err(fail)?,
        Some(node) => entries.push(WalkEntry { path: prefix, node }),
    }
    if global.json {
        outln!("{}", serde_json::Value::Array(entries.iter().map(entry_json).collect()));
        return Ok(0);
    }
    for entry in &entries {
        let node = &entry.node;
        let mut line = if args.long {
            format!(
                "{} {:>8} {:>8} {:>12} {} ",
                render::mode(kind_char(node), node.meta.mode),
                node.meta
                    .user
                    .as_deref()
                    .map_or_else(|| node.meta.uid.to_string(), |u| escape::text(u).into_owned()),
                node.meta
                    .group
                    .as_deref()
                    .map_or_else(|| node.meta.gid.to_string(), |g| escape::text(g).into_owned()),
                node.size(),
                render::time_ns(node.meta.mtime_ns),
            )
        } else {
            String::new()
        };
        line.push_str(&escape::bytes(&entry.path));
        if matches!(node.kind, NodeKind::Dir { .. }) {
            line.push('/');
        }
        if let (true, NodeKind::Symlink { target }) = (args.long, &node.kind) {
            line.push_str(" -> ");
            line.push_str(&escape::bytes(target));
        }
        outln!("{line}");
        if output::closed() {
            break;
        }
    }
    Ok(0)
}

pub async fn cat(global: &GlobalArgs, args: CatArgs) -> Result<i32, Failure> {
    let (snapshot_spec, path) = context::split_spec(&args.target);
    let (reader, snapshot) = open_snapshot(global, snapshot_spec, Operation::Restore).await?;
    let node = reader
        .resolve(&snapshot, path)
        .await
        .map_err(|e| Failure::engine(&e, Operation::Restore))?
        .ok_or_else(|| Failure::new(ErrorCode::BackupNotFound, None, "cat needs SNAPSHOT:PATH of a file"))?;
    let fail = |e: nfrepo_sources::Error| {
        if output::closed() {
            // The reader went away: a normal end (see `output`).
            Ok(0)
        } else {
            Err(Failure::sources(&e, Operation::Restore))
        }
    };
    if args.skip_damaged {
        let damaged = match nfrepo_sources::write_content_skipping_damage(&reader, &node, Stdout).await {
            Ok((_, damaged)) => damaged,
            Err(e) => return fail(e),
        };
        for range in &damaged {
            eprintln!(
                "skipped damaged: {}: bytes {}..{} written as zeros: {}",
                escape::text(path),
                range.offset,
                range.offset + range.len,
                range.reason
            );
        }
        return Ok(if damaged.is_empty() {
            0
        } else {
            crate::failure::EXIT_PARTIAL
        });
    }
    match nfrepo_sources::write_content(&reader, &node, Stdout).await {
        Ok(_) => Ok(0),
        Err(e) => fail(e),
    }
}

pub async fn diff(global: &GlobalArgs, args: DiffArgs) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let all = repo.readable_snapshots().await.map_err(fail)?;
    let old = nfrepo_engine::select_snapshot(all.clone(), &args.old).map_err(fail)?;
    let new = nfrepo_engine::select_snapshot(all, &args.new).map_err(fail)?;
    let reader = repo.reader().await.map_err(fail)?;
    let changes = reader.diff(&old, &new).await.map_err(fail)?;
    if global.json {
        let list: Vec<_> = changes
            .iter()
            .map(|c| {
                let mut value = serde_json::json!({"change": c.kind.marker().to_string(), "dir": c.is_dir});
                escape::json_bytes(&mut value, "path", &c.path_bytes);
                value
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({"old": old.id.to_hex(), "new": new.id.to_hex(), "changes": list})
        );
        return Ok(0);
    }
    for change in &changes {
        let slash = if change.is_dir { "/" } else { "" };
        outln!("{} {}{slash}", change.kind.marker(), escape::bytes(&change.path_bytes));
        if output::closed() {
            break;
        }
    }
    Ok(0)
}
