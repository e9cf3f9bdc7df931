//! Issue 13, item 5: the replication, drill and audit-trail pages, and
//! their JSON, behind the same login.

use reqwest::StatusCode;

use super::harness::{Fixture, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_filters_by_operation_outcome_and_time() {
    let fx = Fixture::start(Setup { lockout_failures: 2 }).await;
    // One approved download, then a lockout of bob: two audit entries.
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let snapshot = {
        let all = fx.repo.readable_snapshots().await.unwrap();
        all.iter().find(|s| s.snapshot.source == "web").unwrap().id.to_hex()
    };
    let code = fx.fresh_code();
    let fields = [
        ("snapshot", snapshot.as_str()),
        ("path", "src-web/index.html"),
        ("code", code.as_str()),
        ("csrf", csrf.as_str()),
    ];
    assert_eq!(client.post_form("/download", &fields).await.status, StatusCode::OK);
    for _ in 0..2 {
        let reply = fx.client().login("bob", "guess", "000000").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }

    let all = client.get("/api/audit").await.json();
    assert_eq!(all["matched"], 2, "{all}");
    assert_eq!(all["problems"].as_array().unwrap().len(), 0, "{all}");
    // Newest first: the lockout, then the download.
    assert_eq!(all["entries"][0]["operation"], "serve login");
    assert_eq!(all["entries"][1]["operation"], "serve download");

    let failed = client.get("/api/audit?failed=1").await.json();
    assert_eq!(failed["matched"], 1, "{failed}");
    assert_eq!(failed["entries"][0]["code"], "PERMISSION_DENIED");
    assert_eq!(failed["entries"][0]["detail"], "LOCKED_OUT");
    let downloads = client
        .get("/api/audit?operation=serve%20download&source=web")
        .await
        .json();
    assert_eq!(downloads["matched"], 1, "{downloads}");
    let future = client.get("/api/audit?since=2200-01-01").await.json();
    assert_eq!(future["matched"], 0, "{future}");
    let bad = client.get("/api/audit?since=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("cannot read since \"yesterday\""), "{}", bad.body);

    // The page: the filter form keeps its values, failed rows are red.
    let page = client.get("/audit?failed=1").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("1 matching entry."), "{}", page.body);
    assert!(
        page.body.contains("name=\"failed\" value=\"1\" checked"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<tr class=\"red\">"), "{}", page.body);
    assert!(page.body.contains("PERMISSION_DENIED/LOCKED_OUT"), "{}", page.body);
    assert!(!page.body.contains("serve download"), "{}", page.body);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_and_drill_pages_say_what_is_configured_and_need_a_login() {
    let fx = Fixture::start(Setup::default()).await;
    let mut anonymous = fx.client();
    for path in ["/api/replication", "/api/drills", "/api/audit"] {
        assert_eq!(anonymous.get(path).await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/replication", "/drills", "/audit"] {
        assert_eq!(anonymous.get(path).await.status, StatusCode::SEE_OTHER, "{path}");
    }
    let mut client = fx.logged_in().await;
    assert_eq!(client.get("/api/replication").await.json(), serde_json::json!([]));
    assert_eq!(client.get("/api/drills").await.json(), serde_json::json!([]));
    let page = client.get("/replication").await;
    assert!(page.body.contains("No replica is configured"), "{}", page.body);
    let page = client.get("/drills").await;
    assert!(page.body.contains("No drill in the audit window"), "{}", page.body);
    assert!(page.body.contains("<a href=\"/audit\">Audit</a>"), "{}", page.body);
    // The read-only API token reads them too.
    let token = client
        .get_with(
            "/api/drills",
            ("authorization", &format!("Bearer {}", super::harness::API_TOKEN)),
        )
        .await;
    assert_eq!(token.status, StatusCode::OK);
    fx.stop().await;
}
