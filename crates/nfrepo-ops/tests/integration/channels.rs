//! Channels end to end: what leaves the process, byte for byte.

use std::sync::{Arc, Mutex};

use nfrepo_engine::Span;
use nfrepo_ops::{
    Alert, AlertState, Channel, Clock, Email, EmailConfig, EmailTls, NoticeKind, Origin, Rule, SIGNATURE_HEADER,
    Secret, TIMESTAMP_HEADER, Webhook, WebhookConfig, deliver, send_test, sign,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SECRET: &str = "webhook-secret-do-not-log";

struct FixedClock(i64);

impl Clock for FixedClock {
    fn now_ns(&self) -> i64 {
        self.0
    }
}

/// One HTTP request as the listener received it.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A listener answering each request with the next status of `statuses`
/// (then 200), recording every request.
async fn http_listener(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            let mut headers = Vec::new();
            loop {
                line.clear();
                reader.read_line(&mut line).await.unwrap();
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                let (k, v) = trimmed.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await.unwrap();
            log.lock().unwrap().push(Received { headers, body });
            let status = statuses.next().unwrap_or(200);
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            reader.get_mut().write_all(answer.as_bytes()).await.unwrap();
        }
    });
    (url, received)
}

/// A minimal SMTP server on loopback recording each message's envelope and data.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let log = messages.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                reader.get_mut().write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut envelope = Vec::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap() == 0 {
                        return;
                    }
                    let command = line.trim_end().to_owned();
                    let upper = command.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("DATA") {
                        reader.get_mut().write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        loop {
                            line.clear();
                            reader.read_line(&mut line).await.unwrap();
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        log.lock().unwrap().push((std::mem::take(&mut envelope), data));
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        reader.get_mut().write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    } else {
                        if upper.starts_with("MAIL") || upper.starts_with("RCPT") {
                            envelope.push(command);
                        }
                        b"250 ok\r\n"
                    };
                    reader.get_mut().write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, messages)
}

fn origin() -> Origin {
    Origin {
        repository: "4f1c00".into(),
        host: "backup1".into(),
    }
}

fn missed_backup() -> Alert {
    Alert {
        rule: Rule::MissedBackup,
        subject: "mysql-main".into(),
        summary: "source mysql-main: newest snapshot is 25m old".into(),
        since_ns: Some(1_764_670_500_000_000_000),
    }
}

fn webhook(url: &str, retries: u32) -> Channel {
    let mut config = WebhookConfig::new(url);
    config.secret_env = Some("NFREPO_OPS_TEST_SECRET".into());
    config.retries = retries;
    config.backoff = Span::from_secs(1);
    Channel::Webhook(Webhook::new(config, Secret::new(SECRET)).unwrap())
}

#[tokio::test]
async fn webhook_posts_a_signed_body_and_retries_a_server_error() {
    let (url, received) = http_listener(vec![503]).await;
    let channels = [webhook(&url, 3)];
    let mut state = AlertState::default();
    let notices = state.update(vec![missed_backup()], 1_764_670_560_000_000_000, 3_600_000_000_000);
    let deliveries = deliver(
        &mut state,
        notices,
        &channels,
        &origin(),
        &FixedClock(1_764_670_562_000_000_000),
    )
    .await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].error, None);
    assert_eq!(deliveries[0].kind, NoticeKind::Firing);
    assert_eq!(state.alerts["missed_backup:mysql-main"].notifications, 1);

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "the 503 was retried once");
    for request in &received {
        let timestamp: i64 = request.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
        assert_eq!(
            request.header(SIGNATURE_HEADER).unwrap(),
            sign(SECRET.as_bytes(), timestamp, &request.body)
        );
        assert_eq!(request.header("x-nfrepo-event"), Some("firing"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert!(!request.headers.iter().any(|(_, v)| v.contains(SECRET)));
        assert!(!String::from_utf8_lossy(&request.body).contains(SECRET));
    }
    // Another key does not verify.
    let first = &received[0];
    let timestamp: i64 = first.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
    assert_ne!(
        first.header(SIGNATURE_HEADER).unwrap(),
        sign(b"other", timestamp, &first.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["kind"], "firing");
    assert_eq!(body["rule"], "missed_backup");
    assert_eq!(body["subject"], "mysql-main");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["since"], "2025-12-02T10:15:00Z");
    assert_eq!(body["first_fired"], "2025-12-02T10:16:00Z");
    assert_eq!(body["sent_at"], "2025-12-02T10:16:02Z");
    assert_eq!(body["repository"], "4f1c00");
    assert_eq!(body["host"], "backup1");
    assert_eq!(
        body["text"],
        "[nfrepo] FIRING critical missed_backup mysql-main: source mysql-main: newest snapshot is 25m old"
    );
}

#[tokio::test]
async fn a_notice_no_channel_took_stays_due_and_a_client_error_is_not_retried() {
    let (url, received) = http_listener(vec![400]).await;
    let channels = [webhook(&url, 3)];
    let mut state = AlertState::default();
    let notices = state.update(vec![missed_backup()], 0, 3_600_000_000_000);
    let deliveries = deliver(&mut state, notices, &channels, &origin(), &FixedClock(0)).await;
    let error = deliveries[0].error.as_deref().unwrap();
    assert!(error.starts_with("webhook: 127.0.0.1 answered 400"), "{error}");
    assert_eq!(received.lock().unwrap().len(), 1, "a 400 is not retried");
    assert_eq!(state.alerts["missed_backup:mysql-main"].last_notified_ns, None);
    // Due again, as a first notice; this time it goes out.
    let notices = state.update(vec![missed_backup()], 1, 3_600_000_000_000);
    assert_eq!(notices[0].kind, NoticeKind::Firing);
    let deliveries = deliver(&mut state, notices, &channels, &origin(), &FixedClock(1)).await;
    assert_eq!(deliveries[0].error, None, "{deliveries:?}");
    assert_eq!(state.alerts["missed_backup:mysql-main"].last_notified_ns, Some(1));
}

#[tokio::test]
async fn email_reaches_an_smtp_server_with_the_alert_and_its_resolution() {
    let (port, messages) = smtp_sink().await;
    let mut config = EmailConfig::new(
        "127.0.0.1",
        "nfrepo <nfrepo@example.com>",
        vec!["oncall@example.com".into(), "dba@example.com".into()],
    );
    config.port = Some(port);
    config.tls = EmailTls::None;
    let channels = [Channel::Email(Box::new(Email::new(config, None).unwrap()))];
    let mut state = AlertState::default();
    let minute = 60_000_000_000;
    let notices = state.update(vec![missed_backup()], minute, 60 * minute);
    let deliveries = deliver(&mut state, notices, &channels, &origin(), &FixedClock(minute)).await;
    assert_eq!(deliveries[0].error, None, "{deliveries:?}");
    let notices = state.update(vec![], 2 * minute, 60 * minute);
    let deliveries = deliver(&mut state, notices, &channels, &origin(), &FixedClock(2 * minute)).await;
    assert_eq!(deliveries[0].kind, NoticeKind::Resolved);
    assert_eq!(deliveries[0].error, None, "{deliveries:?}");

    let messages = messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 2);
    let (envelope, data) = &messages[0];
    assert_eq!(envelope[0], "MAIL FROM:<nfrepo@example.com>");
    assert_eq!(
        &envelope[1..],
        ["RCPT TO:<oncall@example.com>", "RCPT TO:<dba@example.com>"]
    );
    assert!(
        data.contains("Subject: [nfrepo] FIRING: missed_backup mysql-main\r\n"),
        "{data}"
    );
    assert!(data.contains("To: oncall@example.com, dba@example.com\r\n"), "{data}");
    assert!(data.contains("source mysql-main: newest snapshot is 25m old"), "{data}");
    assert!(data.contains("severity:    critical"), "{data}");
    assert!(data.contains("host:        backup1"), "{data}");
    assert!(
        messages[1]
            .1
            .contains("Subject: [nfrepo] RESOLVED: missed_backup mysql-main\r\n"),
        "{}",
        messages[1].1
    );
}

#[tokio::test]
async fn test_notice_goes_to_every_channel_and_failures_are_named() {
    let (url, received) = http_listener(vec![]).await;
    let (port, messages) = smtp_sink().await;
    let mut email = EmailConfig::new("127.0.0.1", "nfrepo@example.com", vec!["oncall@example.com".into()]);
    email.port = Some(port);
    email.tls = EmailTls::None;
    // A closed port for a second webhook: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let channels = [
        webhook(&url, 0),
        Channel::Email(Box::new(Email::new(email, None).unwrap())),
        webhook(&closed_url, 0),
    ];
    let deliveries = send_test(&channels, &origin(), &FixedClock(0)).await;
    let outcome: Vec<(&str, bool)> = deliveries.iter().map(|d| (d.channel, d.error.is_none())).collect();
    assert_eq!(outcome, [("webhook", true), ("email", true), ("webhook", false)]);
    assert!(!deliveries[2].error.as_deref().unwrap().contains(SECRET));
    let body: serde_json::Value = serde_json::from_slice(&received.lock().unwrap()[0].body).unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["rule"].as_str()),
        (Some("test"), Some("test"))
    );
    assert!(
        messages.lock().unwrap()[0]
            .1
            .contains("Subject: [nfrepo] TEST: test backup1")
    );
}
