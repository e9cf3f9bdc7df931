//! Issue 13, items 2–4 without the server: `nfrepo alerts` and `nfrepo metrics` from cron.

use std::process::Output;

use crate::harness::{Env, describe};

/// A configuration with two file sources, each due within an hour.
fn configure(env: &Env, extra: &str) -> std::path::PathBuf {
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"alpha").unwrap();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.db]\nkind = \"files\"\npaths = [\"{data}\"]\nrpo = \"1h\"\n\n\
             [sources.web]\nkind = \"files\"\npaths = [\"{data}\"]\nschedule = \"*/5 * * * *\"\n\n{extra}",
            data = data.display()
        ),
    )
    .unwrap();
    config
}

fn run(env: &Env, config: &std::path::Path, args: &[&str]) -> Output {
    env.cmd().env("NFREPO_CONFIG", config).args(args).output().unwrap()
}

fn ok_json(env: &Env, config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(env, config, &all);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn keys(alerts: &serde_json::Value, status: &str) -> Vec<String> {
    alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == status)
        .map(|a| a["key"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn alerts_name_a_source_never_backed_up_and_repeated_wrong_passwords() {
    let env = Env::new();
    env.init();
    let config = configure(&env, "");
    let out = run(&env, &config, &["snapshot", "--source", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let alerts = ok_json(&env, &config, &["alerts"]);
    assert_eq!(keys(&alerts, "firing"), ["missed_backup:web"], "{alerts}");
    let web = &alerts[0];
    assert_eq!(web["rule"], "missed_backup");
    assert_eq!(web["subject"], "web");
    assert_eq!(web["severity"], "critical");
    assert!(web["summary"].as_str().unwrap().contains("no snapshot at all"), "{web}");

    // Five wrong passwords: suspicious.
    for _ in 0..5 {
        let out = env
            .cmd()
            .env("NFREPO_CONFIG", &config)
            .env("NFREPO_PASSWORD", "wrong")
            .args(["snapshots"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    }
    let alerts = ok_json(&env, &config, &["alerts"]);
    assert_eq!(
        keys(&alerts, "firing"),
        ["auth_failures:repository", "missed_backup:web"],
        "{alerts}"
    );

    // The web source's first backup resolves its alert; an acknowledged one stays firing.
    let out = run(&env, &config, &["snapshot", "--source", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = run(&env, &config, &["alerts", "ack", "auth_failures:repository"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let alerts = ok_json(&env, &config, &["alerts"]);
    assert_eq!(keys(&alerts, "firing"), ["auth_failures:repository"], "{alerts}");
    assert_eq!(keys(&alerts, "resolved"), ["missed_backup:web"], "{alerts}");
    let auth = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "auth_failures")
        .unwrap();
    assert!(auth["acknowledged"]["by"].is_string(), "{auth}");
    let out = run(&env, &config, &["alerts", "ack", "corruption:check"]);
    assert_eq!(out.status.code(), Some(12), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NO_SUCH_ALERT"));

    // The state is private to its owner.
    let state_dir = env.path("cache/alerts");
    let state = std::fs::read_dir(&state_dir).unwrap().next().unwrap().unwrap().path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o600);

    // Human output names each alert's key and status.
    let out = run(&env, &config, &["alerts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("firing (acked)  warning   auth_failures:repository"),
        "{text}"
    );
    assert!(text.contains("1 firing"), "{text}");
}

/// A webhook receiver on loopback: answers 200 and passes each request's
/// headers and body on.
/// One request: its headers (names in lowercase) and body.
type Request = (Vec<(String, String)>, Vec<u8>);

fn receiver() -> (String, std::sync::mpsc::Receiver<Request>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let Some((k, v)) = line.trim_end().split_once(':') else {
                    break;
                };
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
            let length = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            if tx.send((headers, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn notify_sends_a_signed_webhook_once_and_a_resolved_notice_and_never_logs_the_secret() {
    const SECRET: &str = "e2e-webhook-secret-4f1c";
    let env = Env::new();
    env.init();
    let (url, received) = receiver();
    let secret_file = env.path("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let state_file = env.path("state/alerts.json");
    let config = configure(
        &env,
        &format!(
            "[alerts]\nstate_file = \"{}\"\n\n[alerts.webhook]\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            state_file.display(),
            secret_file.display()
        ),
    );
    let out = run(&env, &config, &["snapshot", "--source", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let out = run(&env, &config, &["-vv", "alerts", "--notify"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(SECRET), "{all}");
    assert!(all.contains("firing missed_backup:web to webhook: sent"), "{all}");
    let (headers, body) = received.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let timestamp: i64 = header("x-nfrepo-timestamp").parse().unwrap();
    assert_eq!(
        header("x-nfrepo-signature"),
        nfrepo_ops::sign(SECRET.as_bytes(), timestamp, &body)
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (json["kind"].as_str(), json["rule"].as_str(), json["subject"].as_str()),
        (Some("firing"), Some("missed_backup"), Some("web"))
    );
    assert!(!String::from_utf8_lossy(&body).contains(SECRET));

    // Still firing, not yet due again: nothing is sent.
    let sent = ok_json(&env, &config, &["alerts", "--notify"]);
    assert_eq!(sent["sent"], serde_json::json!([]), "{sent}");
    assert_eq!(sent["alerts"][0]["notifications"], 1, "{sent}");

    // The first backup of web resolves it, and says so once.
    let out = run(&env, &config, &["snapshot", "--source", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let sent = ok_json(&env, &config, &["alerts", "--notify"]);
    assert_eq!(sent["sent"][0]["kind"], "resolved", "{sent}");
    let (_, body) = received.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (json["kind"].as_str(), json["subject"].as_str()),
        (Some("resolved"), Some("web"))
    );
    assert_eq!(
        ok_json(&env, &config, &["alerts", "--notify"])["sent"],
        serde_json::json!([])
    );
    assert!(received.try_recv().is_err());

    // `alerts test` reaches the channel; the state file holds no secret.
    let out = run(&env, &config, &["alerts", "test"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, body) = received.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["kind"],
        "test"
    );
    assert!(!std::fs::read_to_string(&state_file).unwrap().contains(SECRET));
}

#[test]
fn notify_without_a_channel_is_a_usage_error_and_an_unreachable_channel_fails() {
    let env = Env::new();
    env.init();
    let config = configure(&env, "");
    let out = run(&env, &config, &["alerts", "--notify"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alert channel is configured"));
    // A webhook nobody listens on: the run fails, naming it; the notice stays due.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let config = configure(
        &env,
        &format!("[alerts.webhook]\nurl = \"{url}\"\nsecret_env = \"NF_E2E_HOOK\"\nretries = 0\n"),
    );
    let out = env
        .cmd()
        .env("NFREPO_CONFIG", &config)
        .env("NF_E2E_HOOK", "s3cr3t-value")
        .args(["alerts", "--notify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOTIFY_FAILED"), "{stderr}");
    assert!(
        stderr.contains("2 notice(s) not sent; first: firing missed_backup:db to webhook"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t-value"), "{stderr}");
    let alerts = ok_json(&env, &config, &["alerts"]);
    assert_eq!(alerts[0]["last_notified"], serde_json::Value::Null, "{alerts}");
}

#[test]
fn metrics_textfile_matches_the_repository() {
    let env = Env::new();
    env.init();
    let config = configure(&env, "");
    let out = run(&env, &config, &["snapshot", "--source", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let snapshots = ok_json(&env, &config, &["snapshots"]);
    let time = chrono::DateTime::parse_from_rfc3339(snapshots[0]["time"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let path = env.path("textfile/nfrepo.prom");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = run(&env, &config, &["metrics", "--textfile", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
    }
    #[allow(clippy::cast_precision_loss, reason = "Unix seconds")]
    let time = time as f64;
    // The snapshot list shows whole seconds; the metric keeps the fraction.
    assert_eq!(
        samples["nfrepo_source_last_snapshot_timestamp_seconds{source=\"db\"}"].floor(),
        time
    );
    assert_eq!(samples["nfrepo_source_rpo_target_seconds{source=\"db\"}"], 3600.0);
    assert_eq!(samples["nfrepo_source_snapshots{source=\"db\"}"], 1.0);
    assert_eq!(samples["nfrepo_source_snapshots{source=\"web\"}"], 0.0);
    assert_eq!(samples["nfrepo_source_size_bytes{source=\"db\"}"], 5.0);
    let packs = |dir: &str| walk_count(&env.repo_dir().join(dir));
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    {
        assert_eq!(samples["nfrepo_repository_packs{kind=\"data\"}"], packs("data") as f64);
        assert_eq!(samples["nfrepo_repository_packs{kind=\"tree\"}"], packs("tree") as f64);
    }
    assert_eq!(samples["nfrepo_repository_snapshots"], 1.0);
    assert_eq!(samples["nfrepo_alerts_firing{rule=\"missed_backup\"}"], 1.0);
    assert_eq!(
        samples["nfrepo_alert_firing{rule=\"missed_backup\",subject=\"web\",severity=\"critical\"}"],
        1.0
    );
    // Without --textfile, the same text on stdout.
    let out = run(&env, &config, &["metrics"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("# TYPE nfrepo_repository_size_bytes gauge"));
}

/// Files under `dir`, recursively.
fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .map(|p| if p.is_dir() { walk_count(&p) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}
