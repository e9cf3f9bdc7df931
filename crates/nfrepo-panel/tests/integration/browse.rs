//! Issue 15, item 6: the panel's browser shows the repository in the same
//! layout as `nfrepo mount`, and a mount path leads into the snapshot.

use reqwest::StatusCode;

use super::harness::{Fixture, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_walks_the_mount_layout_into_a_snapshot() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.logged_in().await;
    let web = fx.repo.readable_snapshots().await.unwrap();
    let web = web.iter().find(|s| s.snapshot.source == "web").unwrap().clone();
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(web.snapshot.time_ns);
    let id = web.id.to_hex();

    // The root: the untagged env, the fixed directories.
    let root = client.get("/browse").await;
    assert_eq!(root.status, StatusCode::OK, "{}", root.body);
    for dir in ["_", "snapshots", "sources"] {
        assert!(
            root.body.contains(&format!("href=\"/browse?path=/{dir}\">{dir}/</a>")),
            "{dir}: {}",
            root.body
        );
    }
    // Down the dated path to the snapshot, which links to its tree.
    let day = time.format("_/_/web/%Y/%m/%d").to_string();
    let page = client.get(&format!("/browse?path=/{day}")).await;
    let leaf = time.format("%H%M%S").to_string();
    assert!(
        page.body.contains(&format!("<a href=\"/snapshots/{id}\">{leaf}/</a>")),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!(
        "href=\"/browse?path=/{}\">..</a>",
        day.rsplit_once('/').unwrap().0
    )));
    // `latest` by source is a link to the newest timestamp.
    let sources = client.get("/browse?path=/sources/web").await;
    let stamp = time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert!(sources.body.contains(&format!("latest → {stamp}")), "{}", sources.body);

    // A path into a snapshot, as copied from the mount (with its mount
    // point, through `latest`), leads to that directory of the tree.
    let reply = client
        .get("/browse?path=/mnt/backups/sources/web/latest/src-web/assets")
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(
        reply.location(),
        Some(format!("/snapshots/{id}?path=src-web/assets").as_str())
    );
    let reply = client.get(&format!("/browse?path=/{day}/{leaf}")).await;
    assert_eq!(reply.location(), Some(format!("/snapshots/{id}?path=").as_str()));

    // Nothing there: not found, named.
    let missing = client.get("/browse?path=/prod/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("/prod/nothing is not in the layout"),
        "{}",
        missing.body
    );
    // Logged out: sent to the login page, no layout.
    let anonymous = fx.client().get("/browse?path=/sources").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location(), Some("/login"));
    assert!(!anonymous.body.contains("web"), "{}", anonymous.body);
    fx.stop().await;
}
