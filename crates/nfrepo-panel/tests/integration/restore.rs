//! Issue 13, item 6: restores and downloads need a fresh TOTP code, go
//! only into configured targets, and are audited with who approved them.

use nfrepo_engine::ErrorCode;
use nfrepo_panel::{ViaRequest, restore_via};
use reqwest::StatusCode;
use zeroize::Zeroizing;

use super::harness::{Client, Fixture, PASSWORD, Setup};

async fn web_snapshot(fx: &Fixture) -> String {
    let all = fx.repo.readable_snapshots().await.unwrap();
    all.iter().find(|s| s.snapshot.source == "web").unwrap().id.to_hex()
}

async fn audit_entries(fx: &Fixture, operation: &str) -> Vec<nfrepo_format::AuditRecord> {
    let audit = nfrepo_engine::read_audit(&fx.repo, None).await.unwrap();
    audit
        .entries
        .into_iter()
        .filter(|e| e.record.operation == operation)
        .map(|e| e.record)
        .collect()
}

/// Posts the download form for `src-web/index.html`.
async fn download(client: &mut Client, snapshot: &str, code: &str, csrf: &str) -> super::harness::Reply {
    let fields = [
        ("snapshot", snapshot),
        ("path", "src-web/index.html"),
        ("code", code),
        ("csrf", csrf),
    ];
    client.post_form("/download", &fields).await
}

/// Waits for the restore job `id` to end and returns its JSON (polling; no time limit but the test's).
async fn finished(client: &mut Client, id: u64) -> serde_json::Value {
    loop {
        let jobs = client.get("/api/restores").await.json();
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .cloned()
            .expect("job listed");
        if !job["outcome"].is_null() {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_needs_a_fresh_code_and_is_audited() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let snapshot = web_snapshot(&fx).await;
    // The tree page lists the file with a download form.
    let page = client.get(&format!("/snapshots/{snapshot}")).await;
    assert!(page.body.contains("?path=src-web\">src-web/</a>"), "{}", page.body);
    let page = client.get(&format!("/snapshots/{snapshot}?path=src-web")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("index.html") && page.body.contains("?path=src-web/assets\">assets/</a>"),
        "{}",
        page.body
    );
    // Without a code, with a wrong one: refused, nothing audited.
    for code in ["", "123456"] {
        let reply = download(&mut client, &snapshot, code, &csrf).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "code {code:?}");
    }
    assert!(audit_entries(&fx, "serve download").await.is_empty());
    let code = fx.fresh_code();
    let reply = download(&mut client, &snapshot, &code, &csrf).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "<h1>hello</h1>\n");
    assert_eq!(
        reply.headers["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"index.html\""
    );
    let entries = audit_entries(&fx, "serve download").await;
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].message.contains("approved by alice with a fresh TOTP code"),
        "{}",
        entries[0].message
    );
    assert!(
        entries[0].command.iter().any(|c| c.ends_with(":src-web/index.html")),
        "{:?}",
        entries[0].command
    );
    // The same code for a second download: refused.
    let reply = download(&mut client, &snapshot, &code, &csrf).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_goes_into_a_new_directory_of_a_configured_target() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let snapshot = web_snapshot(&fx).await;
    // A target that is not configured is refused, whatever the code.
    let mut restore = async |target: &str| {
        let code = fx.fresh_code();
        let fields = [
            ("snapshot", snapshot.as_str()),
            ("path", "src-web"),
            ("target", target),
            ("code", &code),
            ("csrf", &csrf),
        ];
        client.post_form("/restore", &fields).await
    };
    let reply = restore("/etc").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let reply = restore("scratch").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.location(), Some("/restores"));
    let job = finished(&mut client, 1).await;
    assert_eq!(job["outcome"]["ok"], true, "{job}");
    assert_eq!(job["approved_by"], "alice");
    let dir = std::path::PathBuf::from(job["directory"].as_str().unwrap());
    assert!(dir.starts_with(&fx.restore_dir), "{}", dir.display());
    assert_eq!(
        std::fs::read(dir.join("src-web/index.html")).unwrap(),
        b"<h1>hello</h1>\n"
    );
    assert_eq!(std::fs::read(dir.join("src-web/assets/app.css")).unwrap(), b"body{}\n");
    let entries = audit_entries(&fx, "serve restore").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].code, "");
    assert!(
        entries[0].message.contains("approved by alice with a fresh TOTP code"),
        "{}",
        entries[0].message
    );
    assert_eq!(entries[0].sources, ["web"]);
    // The restores page shows it.
    let page = client.get("/restores").await;
    assert!(page.body.contains("restored 2 files"), "{}", page.body);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_approval_codes_lock_restores_and_downloads_too() {
    let fx = Fixture::start(Setup { lockout_failures: 3 }).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let snapshot = web_snapshot(&fx).await;
    for _ in 0..3 {
        fx.clock.advance(30);
        let reply = download(&mut client, &snapshot, "000000", &csrf).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right code is refused, for downloads and restores alike.
    let code = fx.fresh_code();
    let reply = download(&mut client, &snapshot, &code, &csrf).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.body);
    assert!(reply.body.contains("Too many wrong codes"), "{}", reply.body);
    let code = fx.fresh_code();
    let fields = [
        ("snapshot", snapshot.as_str()),
        ("target", "scratch"),
        ("code", &code),
        ("csrf", &csrf),
    ];
    let reply = client.post_form("/restore", &fields).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.body);
    assert!(audit_entries(&fx, "serve download").await.is_empty());
    assert!(audit_entries(&fx, "serve restore").await.is_empty());
    fx.stop().await;
}

/// `restore --via`'s request: alice's password and `code`, into `target`.
fn via<'a>(fx: &'a Fixture, snapshot: &'a str, password: &str, code: String, target: &'a str) -> ViaRequest<'a> {
    ViaRequest {
        server: &fx.url,
        ca_file: None,
        name: "alice",
        password: Zeroizing::new(password.to_owned()),
        code: Zeroizing::new(code),
        snapshot,
        path: "src-web",
        target,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_restores_with_password_and_one_fresh_code_and_the_client_follows_it() {
    let fx = Fixture::start(Setup::default()).await;
    let snapshot = web_snapshot(&fx).await;
    let work = nfrepo_engine::Work::default();
    let code = fx.fresh_code();
    let job = restore_via(via(&fx, &snapshot, PASSWORD, code.clone(), "scratch"), Some(&work))
        .await
        .unwrap();
    let outcome = job.outcome.clone().unwrap();
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!((outcome.files, job.approved_by.as_str()), (2, "alice"));
    assert_eq!(job.snapshot, snapshot);
    assert_eq!(
        work.counts().map(|c| (c.items_done, c.items_total)),
        Some((2, 2)),
        "the progress display followed the job"
    );
    let dir = std::path::PathBuf::from(&job.directory);
    assert!(dir.starts_with(&fx.restore_dir), "{}", dir.display());
    assert_eq!(
        std::fs::read(dir.join("src-web/index.html")).unwrap(),
        b"<h1>hello</h1>\n"
    );
    let entries = audit_entries(&fx, "serve restore").await;
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].message.contains("approved by alice"),
        "{}",
        entries[0].message
    );

    // The same code never approves a second restore.
    let e = restore_via(via(&fx, &snapshot, PASSWORD, code, "scratch"), None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.detail),
        (ErrorCode::PermissionDenied, Some("TOTP_REUSED")),
        "{e}"
    );
    // A wrong password with a fresh code is refused without saying which was wrong.
    let e = restore_via(via(&fx, &snapshot, "wrong", fx.fresh_code(), "scratch"), None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.detail),
        (ErrorCode::PermissionDenied, Some("WRONG_CREDENTIALS")),
        "{e}"
    );
    assert!(e.message.contains("wrong name, password or TOTP code"), "{e}");
    // A target the server does not have is a usage error; a snapshot it does not have is not found.
    let e = restore_via(via(&fx, &snapshot, PASSWORD, fx.fresh_code(), "/etc"), None)
        .await
        .unwrap_err();
    assert_eq!(e.detail, Some("INVALID_ARGUMENT"), "{e}");
    assert!(e.message.contains("no restore target \"/etc\""), "{e}");
    let e = restore_via(via(&fx, "0123abcd", PASSWORD, fx.fresh_code(), "scratch"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BackupNotFound, "{e}");
    // Plain http off loopback is refused before the password leaves.
    let mut request = via(&fx, &snapshot, PASSWORD, fx.fresh_code(), "scratch");
    request.server = "http://192.0.2.1:8080";
    let e = restore_via(request, None).await.unwrap_err();
    assert_eq!(
        (e.code, e.detail),
        (ErrorCode::PermissionDenied, Some("INSECURE_HTTP")),
        "{e}"
    );
    assert_eq!(
        audit_entries(&fx, "serve restore").await.len(),
        1,
        "only the approved restore ran"
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_restores_through_the_api_with_its_csrf_token_and_a_fresh_code() {
    let fx = Fixture::start(Setup::default()).await;
    let snapshot = web_snapshot(&fx).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let body =
        |code: &str| serde_json::json!({ "snapshot": snapshot, "path": "src-web", "target": "scratch", "code": code });
    // Without the CSRF token: refused, and the code is not spent.
    let code = fx.fresh_code();
    let reply = client.post_json("/api/restores", &body(&code), ("x-other", "1")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    let reply = client
        .post_json("/api/restores", &body(&code), ("x-csrf-token", &csrf))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.location(), Some("/api/restores/1"));
    assert_eq!(reply.json()["approved_by"], "alice");
    // The same code again: PERMISSION_DENIED/TOTP_REUSED in the headers.
    let reply = client
        .post_json("/api/restores", &body(&code), ("x-csrf-token", &csrf))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(reply.headers["nfrepo-error"], "PERMISSION_DENIED");
    assert_eq!(reply.headers["nfrepo-error-detail"], "TOTP_REUSED");
    let job = loop {
        let job = client.get("/api/restores/1").await.json();
        if !job["outcome"].is_null() {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(job["outcome"]["ok"], true, "{job}");
    assert_eq!(client.get("/api/restores/2").await.status, StatusCode::NOT_FOUND);
    // Anonymous: 401, whatever the body says.
    let mut anonymous = fx.client();
    let reply = anonymous
        .post_json("/api/restores", &body(&fx.fresh_code()), ("x-csrf-token", &csrf))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(anonymous.get("/api/restores/1").await.status, StatusCode::UNAUTHORIZED);
    fx.stop().await;
}
