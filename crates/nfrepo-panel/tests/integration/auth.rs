//! Issue 13, item 5: login with password and TOTP, sessions, CSRF,
//! lockout, and TOTP codes that work once.

use reqwest::StatusCode;

use super::harness::{API_TOKEN, Fixture, PASSWORD, SECRET, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_without_a_session() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.client();
    for path in [
        "/api/sources",
        "/api/snapshots",
        "/api/alerts",
        "/api/health",
        "/api/restores",
        "/metrics",
    ] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!reply.body.contains("\"db\""), "{path} leaked: {}", reply.body);
    }
    // Pages send the browser to the login page.
    let reply = client.get("/").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), Some("/login"));
    // Forms and JSON writes are refused outright.
    let reply = client
        .post_form("/restore", &[("snapshot", "latest"), ("target", "scratch")])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = client
        .post_with("/api/alerts/missed_backup:db/ack", ("x-csrf-token", "x"))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // A made-up session id is no session.
    client.cookies.insert("nfrepo_session".into(), "ab".repeat(32));
    assert_eq!(client.get("/api/sources").await.status, StatusCode::UNAUTHORIZED);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_the_session() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.client();
    let code = fx.fresh_code();
    let reply = client.login("alice", PASSWORD, &code).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let set: Vec<&str> = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("nfrepo_session="))
        .expect("session cookie");
    assert!(session.contains("; HttpOnly") && session.contains("; SameSite=Strict") && session.contains("; Path=/"));
    // Plain http on loopback: no Secure (the browser would drop it); TLS adds it.
    assert!(!session.contains("Secure"), "{session}");
    let id = client.cookies["nfrepo_session"].clone();
    assert_eq!(id.len(), 64);
    assert_eq!(client.get("/api/sources").await.status, StatusCode::OK);

    let csrf = client.csrf().await;
    let reply = client.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    // The old id no longer works, even if someone kept it.
    client.cookies.insert("nfrepo_session".into(), id);
    assert_eq!(client.get("/api/sources").await.status, StatusCode::UNAUTHORIZED);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_code_is_refused_alike() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.client();
    let code = fx.fresh_code();
    let wrong_password = client.login("alice", "wrong", &code).await;
    let wrong_user = client.login("mallory", PASSWORD, &code).await;
    fx.clock.advance(30);
    let wrong_code = client.login("alice", PASSWORD, "000000").await;
    for reply in [&wrong_password, &wrong_user, &wrong_code] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(
            reply.body.contains("Wrong name, password or TOTP code."),
            "{}",
            reply.body
        );
        assert!(!client.cookies.contains_key("nfrepo_session"));
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_its_csrf_token_is_refused() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.client();
    let code = fx.fresh_code();
    // Posted without loading the form: no login cookie, a forged field.
    let reply = client
        .post_form(
            "/login",
            &[
                ("name", "alice"),
                ("password", PASSWORD),
                ("code", &code),
                ("login_csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(!client.cookies.contains_key("nfrepo_session"));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_and_json_posts_without_the_session_csrf_token_are_refused() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let key = "missed_backup:db";
    for token in ["", "0".repeat(64).as_str()] {
        let reply = client.post_form("/alerts/ack", &[("key", key), ("csrf", token)]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "form with {token:?}");
        let reply = client
            .post_with(&format!("/api/alerts/{key}/ack"), ("x-csrf-token", token))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "json with {token:?}");
    }
    let code = fx.fresh_code();
    let reply = client
        .post_form(
            "/restore",
            &[
                ("snapshot", "latest"),
                ("target", "scratch"),
                ("code", &code),
                ("csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = client.post_form("/logout", &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Nothing was acknowledged; with the token it is.
    assert!(fx.alerts_acked().await.is_empty());
    let reply = client.post_form("/alerts/ack", &[("key", key), ("csrf", &csrf)]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(fx.alerts_acked().await, [key]);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_name_even_for_the_right_password() {
    let fx = Fixture::start(Setup { lockout_failures: 3 }).await;
    let mut client = fx.client();
    for _ in 0..3 {
        let code = fx.fresh_code();
        let reply = client.login("alice", "guess", &code).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let code = fx.fresh_code();
    let reply = client.login("alice", PASSWORD, &code).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.body);
    assert!(
        reply.body.contains("Too many failed logins: locked until"),
        "{}",
        reply.body
    );
    assert!(!client.cookies.contains_key("nfrepo_session"));
    // The lockout is in the repository's audit log, where the auth_failures rule reads it.
    let audit = nfrepo_engine::read_audit(&fx.repo, None).await.unwrap();
    let locked: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.record.operation == "serve login")
        .collect();
    assert_eq!(locked.len(), 1);
    assert_eq!(locked[0].record.code, "PERMISSION_DENIED");
    assert_eq!(locked[0].record.detail, "LOCKED_OUT");
    // After lockout_for (15 minutes), the right credentials work again.
    fx.clock.advance(15 * 60);
    let code = fx.fresh_code();
    let reply = client.login("alice", PASSWORD, &code).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_code_is_never_accepted_twice() {
    let fx = Fixture::start(Setup::default()).await;
    let code = fx.fresh_code();
    let mut first = fx.client();
    assert_eq!(
        first.login("alice", PASSWORD, &code).await.status,
        StatusCode::SEE_OTHER
    );
    // The same code again, from another client within its validity: refused.
    let mut second = fx.client();
    let reply = second.login("alice", PASSWORD, &code).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.body.contains("already used"), "{}", reply.body);
    // ... and as the approval of a restore by the logged-in session.
    let csrf = first.csrf().await;
    let reply = first
        .post_form(
            "/restore",
            &[
                ("snapshot", "latest"),
                ("path", ""),
                ("target", "scratch"),
                ("code", &code),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.body.contains("already used"), "{}", reply.body);
    // The code of the step before (still inside the skew window) is older than the one spent: refused too.
    let older = nfrepo_panel::totp_code(SECRET, fx.clock.seconds() - 30).unwrap();
    let reply = second.login("alice", PASSWORD, &older).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // A code from before the server started is refused: a restart opens no replay window.
    let fx2 = Fixture::start(Setup::default()).await;
    let at_start = nfrepo_panel::totp_code(SECRET, fx2.clock.seconds()).unwrap();
    let reply = fx2.client().login("alice", PASSWORD, &at_start).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.body.contains("already used"), "{}", reply.body);
    fx2.stop().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_reads_but_never_writes() {
    let fx = Fixture::start(Setup::default()).await;
    let mut client = fx.client();
    let bearer = format!("Bearer {API_TOKEN}");
    for path in ["/api/sources", "/metrics", "/api/health"] {
        let reply = client.get_with(path, ("authorization", &bearer)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let reply = client
        .get_with("/api/sources", ("authorization", "Bearer read-only-token-0123456780"))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // No page, no write, no CSRF token for it.
    assert_eq!(
        client.get_with("/api/session", ("authorization", &bearer)).await.status,
        StatusCode::FORBIDDEN
    );
    let reply = client
        .post_with("/api/alerts/missed_backup:db/ack", ("authorization", &bearer))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    fx.stop().await;
}
