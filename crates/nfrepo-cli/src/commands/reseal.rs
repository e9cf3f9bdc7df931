//! The options and output of a reseal, shared by `nfrepo key rotate
//! --reseal` and `nfrepo gc --reseal`.

use nfrepo_engine::{GcOptions, ResealOptions, ResealReport};

use crate::output::outln;
use crate::render;

/// Reseal options around the GC options of the command line.
pub fn options(gc: GcOptions) -> ResealOptions {
    ResealOptions::default().gc(gc)
}

/// The report as JSON.
pub fn json(r: &ResealReport) -> serde_json::Value {
    serde_json::json!({
        "dry_run": r.dry_run,
        "epoch": r.epoch,
        "older_epochs": r.older_epochs,
        "dropped_epochs": r.dropped_epochs,
        "finished": r.finished,
        "packs_checked": r.packs_checked,
        "packs_current": r.packs_current,
        "resealed": {"packs": r.resealed.packs, "bytes": r.resealed.bytes, "blobs": r.blobs},
        "written": {"packs": r.written.packs, "bytes": r.written.bytes},
        "index_deltas_compacted": r.deltas_compacted,
        "snapshots": r.snapshots.iter().map(|(old, new)| serde_json::json!({"old": old.to_hex(), "new": new.to_hex()})).collect::<Vec<_>>(),
        "markers_moved": r.markers_moved,
        "rewritten": r.rewritten,
        "verified_objects": r.verified_objects,
        "pending": r.pending,
    })
}

/// The report for a human.
pub fn print(r: &ResealReport) {
    let verb = if r.dry_run { "would reseal" } else { "resealed" };
    outln!(
        "{verb} {} of {} indexed packs ({}, {} blobs) under key epoch {}; {} packs written",
        r.resealed.packs,
        r.packs_checked,
        render::bytes(r.resealed.bytes),
        r.blobs,
        r.epoch,
        r.written.packs
    );
    if r.deltas_compacted > 0 {
        outln!("index: {} deltas merged under the current epoch", r.deltas_compacted);
    }
    for (old, new) in &r.snapshots {
        outln!("snapshot {} is now {}", old.short(), new.short());
    }
    if r.markers_moved > 0 {
        outln!(
            "{} protect and good markers moved to the new snapshot ids",
            r.markers_moved
        );
    }
    for (kind, n) in &r.rewritten {
        outln!("{verb} {n} {kind}(s)");
    }
    if r.dry_run {
        return;
    }
    for why in &r.pending {
        outln!("pending: {}", crate::output::escape::text(why));
    }
    if r.finished {
        if r.dropped_epochs.is_empty() {
            outln!("nothing is sealed under an older key epoch");
        } else {
            outln!(
                "verified {} objects under key epoch {} alone; dropped key epochs {:?}: old passwords and keys open nothing now",
                r.verified_objects,
                r.epoch,
                r.dropped_epochs
            );
        }
    } else {
        outln!(
            "key epochs {:?} are still live: run `nfrepo gc --reseal` again to finish",
            r.older_epochs
        );
    }
}
