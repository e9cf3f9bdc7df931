//! `nfrepo metrics`: Prometheus metrics of the repository, for node_exporter's
//! textfile collector (`--textfile`, replaced atomically) or standard output.
//!
//! The figures and their names are `nfrepo_ops::render_metrics`'s; the
//! alerts counted are those true now, evaluated as `nfrepo alerts` does
//! (the alert state file is neither read nor written).

use nfrepo_engine::Operation;

use crate::cli::{GlobalArgs, MetricsArgs};
use crate::commands::alerts::{gather, ops_failure, watch};
use crate::context;
use crate::failure::Failure;
use crate::output::outln;

pub async fn run(global: &GlobalArgs, args: MetricsArgs) -> Result<i32, Failure> {
    let config = crate::config::load(global.config.as_deref())?;
    let alerts_config = config.as_ref().and_then(|c| c.alerts.clone()).unwrap_or_default();
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let now = nfrepo_ops::unix_ns(std::time::SystemTime::now());
    let facts = gather(global, config.as_ref(), &repo, now).await?;
    let watch = watch(config.as_ref());
    let alerts = nfrepo_ops::evaluate(&facts, &watch, &alerts_config, now);
    let text = nfrepo_ops::render_metrics(&facts, &watch, &alerts_config, &alerts, now);
    match &args.textfile {
        Some(path) => {
            nfrepo_ops::write_textfile(path, &text).map_err(|e| ops_failure(&e))?;
            if global.json {
                outln!(
                    "{}",
                    serde_json::json!({ "textfile": path.display().to_string(), "bytes": text.len(), "alerts_firing": alerts.len() })
                );
            } else if !global.quiet {
                outln!(
                    "wrote {} ({} alert(s) firing)",
                    crate::output::escape::text(&path.display().to_string()),
                    alerts.len()
                );
            }
        }
        None => outln!("{}", text.trim_end_matches('\n')),
    }
    Ok(0)
}
