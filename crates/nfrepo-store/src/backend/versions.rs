//! Object versions in a versioned (object-locked) S3 bucket: which versions a
//! deleted or overwritten object still keeps, and freeing them.
//!
//! OpenDAL lists versions and delete markers (`list_with(..).versions(true)
//! .deleted(true)`) and deletes one version (`delete_with(..).version(v)`); a
//! delete the server refuses is asked for its retention, so that a version
//! under object lock reads as [`ErrorKind::Retained`], not as a failure.

use std::collections::BTreeMap;
use std::time::SystemTime;

use opendal::Operator;

use super::s3api::S3Api;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};

/// One stored version (or delete marker) of an object.
#[derive(Debug)]
struct Version {
    id: String,
    current: bool,
    marker: bool,
    size: u64,
    modified: Option<SystemTime>,
}

async fn list_versions(op: &Operator, prefix: &str, recursive: bool) -> Result<BTreeMap<String, Vec<Version>>> {
    let entries = match op
        .list_with(prefix)
        .recursive(recursive)
        .versions(true)
        .deleted(true)
        .await
    {
        Ok(entries) => entries,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::from_opendal(e)),
    };
    let mut by_path: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    for entry in entries {
        let meta = entry.metadata();
        if meta.is_dir() {
            continue;
        }
        let Some(id) = meta.version() else {
            continue;
        };
        by_path.entry(entry.path().to_owned()).or_default().push(Version {
            id: id.to_owned(),
            current: meta.is_current().unwrap_or(false),
            marker: meta.is_deleted(),
            size: meta.content_length(),
            modified: meta.last_modified().map(Into::into),
        });
    }
    Ok(by_path)
}

/// Whether `versions` hold anything a purge frees, and how many bytes.
fn purgeable(versions: &[Version]) -> Option<u64> {
    let hidden = versions.iter().any(|v| v.current && v.marker);
    let stale = versions.iter().any(|v| !v.current);
    (hidden || stale).then(|| {
        versions
            .iter()
            .filter(|v| !v.current && !v.marker)
            .map(|v| v.size)
            .sum()
    })
}

pub(super) async fn list_purgeable(op: &Operator, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
    let (prefix, recursive) = match kind {
        ObjectKind::Config => (ObjectKey::config().path(), false),
        kind => (format!("{}/", kind.prefix()), true),
    };
    let mut out = Vec::new();
    for (path, versions) in list_versions(op, &prefix, recursive).await? {
        let Some(key) = ObjectKey::from_path(kind, &path) else {
            continue;
        };
        if let Some(size) = purgeable(&versions) {
            out.push(ObjectInfo {
                key,
                size,
                last_modified: versions.iter().filter_map(|v| v.modified).max(),
            });
        }
    }
    Ok(out)
}

pub(super) async fn purge(op: &Operator, api: &S3Api, key: &ObjectKey) -> Result<()> {
    let path = key.path();
    let mut all = list_versions(op, &path, false).await?;
    let versions = all.remove(&path).unwrap_or_default();
    let hidden = versions.iter().any(|v| v.current && v.marker);
    let mut retained: Option<SystemTime> = None;
    // Data versions first: the current one stays unless a marker hides it.
    for v in versions.iter().filter(|v| !v.marker && (hidden || !v.current)) {
        if let Some(until) = delete_version(op, api, key, &v.id).await? {
            retained = retained.max(Some(until));
        }
    }
    if let Some(until) = retained {
        // The markers stay: removing the current one would show the retained version again.
        return Err(Error::retained(key, until));
    }
    // Markers last, once nothing is left under them (a marker that is not the
    // latest version hides nothing either).
    for v in versions.iter().filter(|v| v.marker && (hidden || !v.current)) {
        delete_version(op, api, key, &v.id).await?;
    }
    Ok(())
}

/// Deletes one version; `Some(until)` when object lock refuses it.
async fn delete_version(op: &Operator, api: &S3Api, key: &ObjectKey, version: &str) -> Result<Option<SystemTime>> {
    let err = match op.delete_with(&key.path()).version(version).await {
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
        Err(e) => Error::from_opendal(e).with_key(key),
    };
    if err.kind() != ErrorKind::PermissionDenied {
        return Err(err);
    }
    // Refused: object lock, or credentials without s3:DeleteObjectVersion.
    match api.retention(&key.path(), Some(version)).await {
        Ok(Some(until)) if until > SystemTime::now() => Ok(Some(until)),
        Ok(_) => Err(err),
        Err(lookup) => {
            tracing::debug!(key = %key, error = %lookup, "cannot read the retention of a version the server refused to delete");
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(current: bool, marker: bool, size: u64) -> Version {
        Version {
            id: String::new(),
            current,
            marker,
            size,
            modified: None,
        }
    }

    #[test]
    fn what_a_purge_frees() {
        assert_eq!(purgeable(&[v(true, false, 5)]), None, "a live object with one version");
        assert_eq!(purgeable(&[v(true, true, 0), v(false, false, 5)]), Some(5), "deleted");
        assert_eq!(
            purgeable(&[v(true, false, 5), v(false, false, 7)]),
            Some(7),
            "overwritten"
        );
        assert_eq!(purgeable(&[v(true, true, 0)]), Some(0), "a lone marker");
        assert_eq!(purgeable(&[]), None);
    }
}
