//! Issue 13, items 4 and 7: the JSON API and /metrics, checked against the
//! repository's own state.

use std::collections::BTreeMap;

use reqwest::StatusCode;

use super::harness::{Fixture, SECOND, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_snapshots_and_alerts_describe_the_repository() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.logged_in().await;
    let snapshots = fx.repo.readable_snapshots().await.unwrap();
    let newest = |source: &str| snapshots.iter().rfind(|s| s.snapshot.source == source).unwrap();

    let sources = client.get("/api/sources").await.json();
    let by_name: BTreeMap<&str, &serde_json::Value> = sources
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["db", "web"]);
    assert_eq!(by_name["db"]["status"], "red");
    assert_eq!(by_name["db"]["rpo_seconds"], 3600);
    assert_eq!(by_name["web"]["status"], "green");
    assert_eq!(by_name["web"]["last_snapshot_id"], newest("web").id.to_hex());
    assert_eq!(by_name["web"]["bytes"], newest("web").snapshot.summary.bytes);
    assert_eq!(by_name["web"]["snapshots"], 1);
    assert!(by_name["db"]["age_seconds"].as_i64().unwrap() >= 2 * 3600);

    let list = client.get("/api/snapshots?source=web").await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], newest("web").id.to_hex());
    assert_eq!(list[0]["source"], "web");
    assert_eq!(client.get("/api/snapshots").await.json().as_array().unwrap().len(), 2);

    let alerts = client.get("/api/alerts").await.json();
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["key"], "missed_backup:db");
    assert_eq!(alerts[0]["rule"], "missed_backup");
    assert_eq!(alerts[0]["subject"], "db");
    assert_eq!(alerts[0]["status"], "firing");
    assert!(alerts[0]["acknowledged"].is_null());

    let health = client.get("/api/health").await.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["repository"], fx.repo.id().to_hex());
    assert_eq!(health["alerts_firing"], 1);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_acknowledged_through_the_api_is_remembered_with_who() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let reply = client
        .post_with("/api/alerts/missed_backup:db/ack", ("x-csrf-token", &csrf))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["by"], "alice");
    let alerts = client.get("/api/alerts").await.json();
    assert_eq!(alerts[0]["acknowledged"]["by"], "alice");
    // Acknowledged state survives a re-evaluation (it lives in the state file).
    fx.refresher.refresh().await;
    assert_eq!(fx.alerts_acked().await, ["missed_backup:db"]);
    let reply = client
        .post_with("/api/alerts/missed_backup:web/ack", ("x-csrf-token", &csrf))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    fx.stop().await;
}

/// `name{labels} value` lines of a Prometheus text, by `name{labels}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_repository() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.logged_in().await;
    let reply = client.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        reply.headers
    );
    let samples = samples(&reply.body);
    let snapshots = fx.repo.readable_snapshots().await.unwrap();
    for entry in &snapshots {
        let s = &entry.snapshot;
        let label = format!("{{source=\"{}\"}}", s.source);
        let seconds = samples[&format!("nfrepo_source_last_snapshot_timestamp_seconds{label}")];
        assert!(
            (seconds - s.time_ns as f64 / SECOND as f64).abs() < 1e-3,
            "{label}: {seconds}"
        );
        assert_eq!(
            samples[&format!("nfrepo_source_size_bytes{label}")],
            s.summary.bytes as f64
        );
        assert_eq!(samples[&format!("nfrepo_source_snapshots{label}")], 1.0);
    }
    assert_eq!(samples["nfrepo_source_rpo_target_seconds{source=\"db\"}"], 3600.0);
    assert_eq!(samples["nfrepo_source_rpo_target_seconds{source=\"web\"}"], 86_400.0);
    assert_eq!(samples["nfrepo_repository_snapshots"], 2.0);
    let data_packs = fx.repo.store().list(nfrepo_store::ObjectKind::Data).await.unwrap();
    assert_eq!(
        samples["nfrepo_repository_packs{kind=\"data\"}"],
        data_packs.len() as f64
    );
    // Two snapshots' trees at least (each root, `src-web`, `assets`).
    let blobs = fx.repo.load_index().await.unwrap().len();
    assert!(blobs >= 4, "{blobs} blobs");
    assert_eq!(samples["nfrepo_repository_blobs"], blobs as f64);
    assert_eq!(samples["nfrepo_alerts_firing{rule=\"missed_backup\"}"], 1.0);
    assert_eq!(
        samples["nfrepo_alert_firing{rule=\"missed_backup\",subject=\"db\",severity=\"critical\"}"],
        1.0
    );
    fx.stop().await;
}
