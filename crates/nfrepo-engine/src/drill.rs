//! Drill records: the history of disaster-recovery drills.
//!
//! A drill (run by `nfrepo_sources::drill`) restores a snapshot into a
//! throwaway service, checks it and times it; its outcome is written here
//! as a sealed record `drill/<drill id>` (see `format-spec/drill.md`).
//! Records are write-once and are neither read nor deleted by `forget` or
//! `gc`: the history outlives the snapshots it names.

use nfrepo_format::DrillRecord;

use crate::objects;
use crate::{Error, Repository, Result};

/// The drill records of a repository.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct DrillHistory {
    /// Records that opened, oldest drill first.
    pub records: Vec<DrillRecord>,
    /// Records that are there but do not open: their object path and why.
    pub damaged: Vec<(String, String)>,
}

impl Repository {
    /// Writes the record of a drill (write-once under its id).
    ///
    /// # Errors
    /// Storage errors; [`Error::Format`] if no nonce could be drawn.
    pub async fn record_drill(&self, record: &DrillRecord) -> Result<()> {
        self.require_keys("drill")?;
        let bytes = record.encode(self.sealer(), &self.id()).map_err(Error::Format)?;
        self.put_marker(&objects::key::<DrillRecord>(&record.id)?, bytes).await
    }

    /// Every drill record, oldest drill first; records that do not open are
    /// listed in [`DrillHistory::damaged`] (and logged), never dropped.
    ///
    /// # Errors
    /// Storage errors that are not about one record.
    pub async fn drill_history(&self) -> Result<DrillHistory> {
        self.require_keys("drill")?;
        let loaded = objects::load_all::<DrillRecord>(self).await?;
        let mut records: Vec<DrillRecord> = loaded.good.into_iter().map(|s| s.object).collect();
        records.sort_by_key(|r| (r.started_ns, r.id));
        let damaged = loaded
            .damaged
            .into_iter()
            .map(|d| {
                tracing::warn!(record = %d.key, error = %d.error, "a drill record does not open");
                (d.key.path(), one_line(&d.error))
            })
            .collect();
        Ok(DrillHistory { records, damaged })
    }
}

/// The error and its causes on one line.
fn one_line(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
