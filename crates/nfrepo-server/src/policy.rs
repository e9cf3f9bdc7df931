//! What an append-only server lets a client do, per object kind.

use nfrepo_store::ObjectKind;

/// The server's mode. This version has one: append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Every object may be read and listed. Objects are created, never
    /// replaced or removed, except the coordination objects a backup must
    /// rewrite and remove (`AppendOnly::may_replace`). See
    /// `format-spec/server.md` for why that cannot lose stored data.
    AppendOnly,
}

/// What a write asks of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// `PUT` with `If-None-Match: *`.
    Create,
    /// `PUT` without it: create or replace.
    Replace,
    /// `DELETE`.
    Delete,
}

/// The append-only rules.
pub(crate) struct AppendOnly;

impl AppendOnly {
    /// Session markers (`sessions/`): a running backup rewrites its marker
    /// as a heartbeat and removes it when it ends. They hold no backup data.
    pub(crate) fn may_replace(kind: ObjectKind) -> bool {
        kind == ObjectKind::Session
    }

    /// GC plans, leases and tombstones belong to maintenance (`gc`,
    /// `forget`, `key rotate`), which never runs through an append-only
    /// server; a backup writes none of them, so a backup host may not
    /// create them either.
    pub(crate) fn may_create(kind: ObjectKind) -> bool {
        !matches!(kind, ObjectKind::Gc | ObjectKind::Lease | ObjectKind::Tombstone)
    }

    /// `Ok` if `write` of `kind` may go to the store as asked; `Err` with
    /// the reason otherwise. A [`Write::Replace`] of a kind that may not be
    /// replaced is not refused here: it is performed as a create, and the
    /// store's conditional create refuses it if the object exists.
    pub(crate) fn check(kind: ObjectKind, write: Write) -> Result<(), String> {
        if !Self::may_create(kind) {
            return Err(format!(
                "the server is append-only: {kind}/ objects belong to maintenance (gc, forget), which must run on the repository directly"
            ));
        }
        match write {
            Write::Delete if !Self::may_replace(kind) => Err(format!(
                "the server is append-only: deleting {kind}/ objects is refused"
            )),
            _ => Ok(()),
        }
    }

    /// The refusal of a [`Write::Replace`] that found the object there.
    pub(crate) fn overwrite_refused(kind: ObjectKind) -> String {
        format!("the server is append-only: overwriting {kind}/ objects is refused")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_markers_are_replaced_and_maintenance_objects_never_written() {
        for &kind in ObjectKind::all() {
            let create = AppendOnly::check(kind, Write::Create);
            let delete = AppendOnly::check(kind, Write::Delete);
            match kind {
                ObjectKind::Session => {
                    assert!(create.is_ok() && delete.is_ok());
                    assert!(AppendOnly::may_replace(kind));
                }
                ObjectKind::Gc | ObjectKind::Lease | ObjectKind::Tombstone => {
                    assert!(create.unwrap_err().contains("maintenance"), "{kind}");
                    assert!(delete.is_err());
                }
                _ => {
                    assert!(create.is_ok(), "{kind}");
                    assert!(delete.unwrap_err().contains("append-only"), "{kind}");
                    assert!(!AppendOnly::may_replace(kind), "{kind}");
                }
            }
        }
    }
}
