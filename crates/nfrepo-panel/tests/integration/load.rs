//! Issue 13's load test: 50 concurrent API clients on loopback, a bounded
//! number of requests each; every response must be OK and the process's
//! resident memory must stay bounded. No timing is asserted.

use reqwest::StatusCode;

use super::harness::{API_TOKEN, Fixture, Setup};

const CLIENTS: usize = 50;
const ROUNDS: usize = 40;
const PATHS: [&str; 5] = [
    "/api/sources",
    "/api/snapshots",
    "/api/alerts",
    "/api/health",
    "/metrics",
];

/// Resident set size of this process (server and clients), from /proc.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn hammer(url: String, rounds: usize) -> Vec<(String, StatusCode)> {
    let http = reqwest::Client::new();
    let mut bad = Vec::new();
    for round in 0..rounds {
        for path in PATHS {
            let response = http
                .get(format!("{url}{path}"))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            if status != StatusCode::OK || body.is_empty() {
                bad.push((format!("round {round} {path}"), status));
            }
        }
    }
    bad
}

async fn wave(fx: &Fixture, rounds: usize) {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(hammer(fx.url.clone(), rounds)))
        .collect();
    for task in tasks {
        let bad = task.await.unwrap();
        assert!(bad.is_empty(), "failed requests: {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_api_clients_get_answers_and_memory_stays_bounded() {
    let fx = Fixture::start(Setup::default()).await;
    // A first wave settles allocator arenas and connection pools.
    wave(&fx, 2).await;
    let before = rss_kib();
    // 50 clients × 40 rounds × 5 endpoints = 10,000 requests, while the
    // background evaluation runs too.
    let refresher = fx.refresher.clone();
    let refreshing = tokio::spawn(async move {
        for _ in 0..20 {
            refresher.refresh().await;
        }
    });
    wave(&fx, ROUNDS).await;
    refreshing.await.unwrap();
    let after = rss_kib();
    eprintln!(
        "load: RSS {before} KiB before, {after} KiB after {} requests",
        CLIENTS * ROUNDS * PATHS.len()
    );
    // The other tests of this binary run beside this one (argon2 alone takes
    // 19 MiB per check), so the bound is generous; a leak of 13 KiB per
    // request would still break it.
    assert!(
        after < before + 128 * 1024,
        "RSS grew from {before} KiB to {after} KiB over the load"
    );
    // Still responsive to a logged-in user afterwards.
    let mut client = fx.logged_in().await;
    assert_eq!(client.get("/api/health").await.status, StatusCode::OK);
    fx.stop().await;
}
