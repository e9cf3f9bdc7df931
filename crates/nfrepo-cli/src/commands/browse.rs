//! `nfrepo ls`, `cat` and `diff`.

use std::io::Write;

use nfrepo_engine::{ErrorCode, Operation, Reader, SnapshotEntry, WalkEntry};
use nfrepo_format::{Node, NodeKind};

use crate::cli::{CatArgs, DiffArgs, GlobalArgs, LsArgs};
use crate::failure::Failure;
use crate::{context, render};

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
        "path": entry.path_lossy(),
        "type": match kind_char(node) { 'd' => "dir", 'l' => "symlink", '-' => "file", 'p' => "fifo", 'c' => "chardev", 'b' => "blockdev", _ => "socket" },
        "size": node.size(),
        "mode": node.meta.mode,
        "uid": node.meta.uid,
        "gid": node.meta.gid,
        "user": node.meta.user,
        "group": node.meta.group,
        "mtime": render::time_ns(node.meta.mtime_ns),
    });
    if let NodeKind::File { blake3, sha256, .. } = &node.kind {
        value["blake3"] = hex::encode(blake3).into();
        if let Some(sha) = sha256 {
            value["sha256"] = hex::encode(sha).into();
        }
    }
    if let NodeKind::Symlink { target } = &node.kind {
        value["target"] = String::from_utf8_lossy(target).into_owned().into();
    }
    value
}

pub async fn ls(global: &GlobalArgs, args: LsArgs) -> Result<i32, Failure> {
    let (snapshot_spec, path) = context::split_spec(&args.target);
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
        println!("{}", serde_json::Value::Array(entries.iter().map(entry_json).collect()));
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    for entry in &entries {
        let node = &entry.node;
        let mut line = if args.long {
            format!(
                "{} {:>8} {:>8} {:>12} {} ",
                render::mode(kind_char(node), node.meta.mode),
                node.meta.user.clone().unwrap_or_else(|| node.meta.uid.to_string()),
                node.meta.group.clone().unwrap_or_else(|| node.meta.gid.to_string()),
                node.size(),
                render::time_ns(node.meta.mtime_ns),
            )
        } else {
            String::new()
        };
        line.push_str(&entry.path_lossy());
        if matches!(node.kind, NodeKind::Dir { .. }) {
            line.push('/');
        }
        if let (true, NodeKind::Symlink { target }) = (args.long, &node.kind) {
            line.push_str(" -> ");
            line.push_str(&String::from_utf8_lossy(target));
        }
        if writeln!(out, "{line}").is_err() {
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
    let stdout = std::io::stdout();
    if args.skip_damaged {
        let (_, damaged) = nfrepo_sources::write_content_skipping_damage(&reader, &node, stdout.lock())
            .await
            .map_err(|e| Failure::sources(&e, Operation::Restore))?;
        for range in &damaged {
            eprintln!(
                "skipped damaged: {path}: bytes {}..{} written as zeros: {}",
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
    nfrepo_sources::write_content(&reader, &node, stdout.lock())
        .await
        .map_err(|e| Failure::sources(&e, Operation::Restore))?;
    Ok(0)
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
            .map(|c| serde_json::json!({"change": c.kind.marker().to_string(), "path": c.path, "dir": c.is_dir}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"old": old.id.to_hex(), "new": new.id.to_hex(), "changes": list})
        );
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    for change in &changes {
        let slash = if change.is_dir { "/" } else { "" };
        if writeln!(out, "{} {}{slash}", change.kind.marker(), change.path).is_err() {
            break;
        }
    }
    Ok(0)
}
