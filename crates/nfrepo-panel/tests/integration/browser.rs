//! Issue 13's browser test: headless Chromium (Debian's `chromium`) logs in
//! with password and TOTP, sees a red source, acknowledges its alert, and
//! starts a restore that needs a second TOTP code. Screenshots of each step
//! are kept under target/ (`CARGO_TARGET_TMPDIR/panel-screenshots`).
//!
//! Chromium is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: commands on its fd 3, answers on fd 4, each
//! message ending in NUL), so the test needs no WebSocket client. A missing
//! `chromium` fails the test: scripts/test.sh installs it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::Engine;
use serde_json::{Value, json};

use super::harness::{Fixture, Setup};

/// Polls of a page condition before giving up (each 50 ms apart).
const POLLS: usize = 400;

struct Browser {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
    next_id: u64,
    session: String,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(profile: &Path, shots: PathBuf) -> Self {
        let found = Command::new("chromium").arg("--version").output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "chromium is not installed (scripts/test.sh installs Debian's chromium): {found:?}"
        );
        // The shell moves our pipes to fds 3 and 4, where Chromium's pipe transport expects them.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                "exec 3<&0 4>&1 0</dev/null 1>/dev/null; exec chromium --headless --no-sandbox --disable-gpu \
                 --no-first-run --disable-extensions --disable-background-networking --remote-debugging-pipe \
                 --window-size=420,900 --user-data-dir=\"$1\" about:blank",
            )
            .arg("sh")
            .arg(profile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let commands = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap());
        let mut browser = Self {
            child,
            commands,
            answers,
            next_id: 0,
            session: String::new(),
            shots,
        };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.page("Page.enable", json!({}));
        browser
    }

    /// Sends a command and waits for its answer, skipping events.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let answer = self.answer(session, method, params);
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Sends a command and returns its whole answer (`result` or `error`).
    fn answer(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        self.commands.flush().unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.answers.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed the DevTools pipe during {method}");
            buf.pop();
            let answer: Value = serde_json::from_slice(&buf).unwrap();
            if answer["id"] == id {
                return answer;
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(result["exceptionDetails"].is_null(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in a loaded page.
    fn wait_for(&mut self, expression: &str) {
        let check = format!("document.readyState === 'complete' && !!({expression})");
        for _ in 0..POLLS {
            let session = self.session.clone();
            let answer = self.answer(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": check, "returnByValue": true}),
            );
            // A poll that meets a navigation (the page it asked is gone,
            // the next one has no context yet) is a "not yet".
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            let navigating = message.contains("navigated or closed") || message.contains("Cannot find context");
            assert!(answer["error"].is_null() || navigating, "Runtime.evaluate: {answer}");
            if answer["result"]["result"]["value"] == Value::Bool(true) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let body = self.eval("document.body ? document.body.innerText : ''");
        panic!("the page never satisfied {expression}; it shows: {body}");
    }

    fn go(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url}));
        let path = url.split_once("://").map_or(url, |(_, rest)| rest);
        let path = &path[path.find('/').unwrap_or(path.len())..];
        let path = path.split('?').next().unwrap_or(path);
        self.wait_for(&format!("location.pathname === {}", json!(path)));
    }

    fn screenshot(&mut self, name: &str) {
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

fn js(text: &str) -> String {
    json!(text).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_acknowledges_and_restores_with_a_second_code() {
    let fx = Fixture::start(Setup::default()).await;
    let snapshots = fx.repo.readable_snapshots().await.unwrap();
    let web = snapshots
        .iter()
        .find(|s| s.snapshot.source == "web")
        .unwrap()
        .id
        .to_hex();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("panel-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = fx.dir.path().join("chromium-profile");
    let url = fx.url.clone();
    let fx = std::sync::Arc::new(fx);
    let driver = fx.clone();
    tokio::task::spawn_blocking(move || {
        let fx = driver;
        let mut b = Browser::launch(&profile, shots);

        // Log in with password and TOTP.
        b.go(&format!("{url}/login"));
        b.screenshot("1-login");
        let code = fx.fresh_code();
        b.eval(&format!(
            "document.getElementById('name').value = 'alice';\
             document.getElementById('password').value = {};\
             document.getElementById('code').value = {};\
             document.getElementById('login').click(); true",
            js(super::harness::PASSWORD),
            js(&code)
        ));
        b.wait_for("location.pathname === '/' && document.getElementById('sources')");

        // The source past its RPO is red, the other green.
        assert_eq!(
            b.eval("document.querySelector('tr[data-source=\"db\"]').className"),
            "red"
        );
        assert_eq!(
            b.eval("document.querySelector('tr[data-source=\"web\"]').className"),
            "green"
        );
        b.screenshot("2-sources");

        // Acknowledge its alert.
        b.go(&format!("{url}/alerts"));
        b.eval("document.querySelector('tr[data-alert=\"missed_backup:db\"] button.ack').click(); true");
        b.wait_for(
            "location.pathname === '/alerts' && \
             document.querySelector('tr[data-alert=\"missed_backup:db\"]').innerText.includes('acknowledged by alice')",
        );
        b.screenshot("3-acknowledged");

        // A restore with the login's code is refused: it needs a second one.
        let tree = format!("{url}/snapshots/{web}?path=src-web");
        b.go(&tree);
        b.eval(&format!(
            "document.getElementById('restore-code').value = {}; document.getElementById('restore').click(); true",
            js(&code)
        ));
        b.wait_for("document.body.innerText.includes('already used')");
        b.screenshot("4-restore-refused");
        b.go(&tree);
        let second = fx.fresh_code();
        b.eval(&format!(
            "document.getElementById('restore-code').value = {}; document.getElementById('restore').click(); true",
            js(&second)
        ));
        b.wait_for(
            "location.pathname === '/restores' && document.querySelector('#restores td.result') && \
             document.querySelector('#restores td.result').innerText.includes('restored')",
        );
        b.screenshot("5-restored");

        // The browser: the mount's layout, `latest` leads into the snapshot.
        b.go(&format!("{url}/browse?path=/sources/web"));
        b.wait_for("document.body.innerText.includes('latest →')");
        b.screenshot("6-browse");
        b.eval("[...document.querySelectorAll('#layout a')].find(a => a.innerText.startsWith('latest')).click(); true");
        b.wait_for(&format!(
            "location.pathname === '/snapshots/{web}' && document.getElementById('tree').innerText.includes('src-web/')"
        ));
    })
    .await
    .unwrap();
    assert_eq!(fx.alerts_acked().await, ["missed_backup:db"]);
    let jobs = std::fs::read_dir(&fx.restore_dir).unwrap().count();
    assert_eq!(jobs, 1, "one restore directory");
    match std::sync::Arc::try_unwrap(fx) {
        Ok(fx) => fx.stop().await,
        Err(_) => panic!("the fixture is still shared"),
    }
}
