//! Issue 13, items 1 and 5: `nfrepo serve --listen` (without
//! `--append-only`) serves the admin panel from `[serve]` in nfrepo.toml,
//! and its helpers make the credentials. The panel's behaviour (logins,
//! CSRF, lockout, TOTP, restores, the browser) is tested in
//! nfrepo-panel's own integration tests; here, the binary's wiring.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::{Env, describe, run_with_stdin, spawn_server};

fn hash(env: &Env, password: &str) -> String {
    let mut cmd = env.cmd();
    cmd.args(["serve", "hash-password"]);
    let out = run_with_stdin(cmd, format!("{password}\n").as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

/// alice's `users` line, her TOTP secret made by `serve totp-secret`.
fn enrol(env: &Env) -> (String, std::path::PathBuf) {
    let secret = env.path("alice.totp");
    env.ok(&[
        "serve",
        "totp-secret",
        "--name",
        "alice",
        "--file",
        secret.to_str().unwrap(),
    ]);
    let users = format!(
        "users = [{{ name = \"alice\", password_hash = \"{}\", totp_secret_file = \"{}\" }}]",
        hash(env, "pw"),
        secret.display()
    );
    (users, secret)
}

fn write_config(env: &Env, users: &str) -> std::path::PathBuf {
    let path = env.path("nfrepo.toml");
    std::fs::write(
        &path,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\n{users}\n[serve.restore_targets]\nscratch = \"{}\"\n",
            env.path("restores").display()
        ),
    )
    .unwrap();
    path
}

/// One HTTP/1.1 GET on `addr`: the status line and the whole response.
fn get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn helpers_make_a_password_hash_and_a_private_totp_secret() {
    let env = Env::new();
    let phc = hash(&env, "correct horse");
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    assert!(!phc.contains("correct horse"));
    assert_ne!(hash(&env, "correct horse"), phc, "a new salt each time");

    let file = env.path("alice.totp");
    let url = env.ok(&[
        "serve",
        "totp-secret",
        "--name",
        "alice",
        "--file",
        file.to_str().unwrap(),
    ]);
    let secret = std::fs::read_to_string(&file).unwrap();
    let secret = secret.trim_end();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(
        url.trim_end(),
        format!("otpauth://totp/nfrepo:alice?secret={secret}&issuer=nfrepo&algorithm=SHA1&digits=6&period=30")
    );
    // An existing file is never replaced.
    let out = env.run(&[
        "serve",
        "totp-secret",
        "--name",
        "alice",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim_end(), secret);
}

#[test]
fn serve_listen_serves_the_panel_behind_a_login() {
    let env = Env::new();
    env.init();
    std::fs::create_dir(env.path("restores")).unwrap();
    let (users, _) = enrol(&env);
    let config = write_config(&env, &users);
    let log = env.path("panel.log");
    let mut cmd = env.cmd();
    cmd.args(["--config", config.to_str().unwrap(), "serve"]);
    let (mut child, addr) = spawn_server(cmd, &log, "serving http://", "/ (admin panel)\n");
    let api = get(&addr, "/api/sources");
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
    let page = get(&addr, "/");
    assert!(page.starts_with("HTTP/1.1 303"), "{page}");
    assert!(page.to_ascii_lowercase().contains("location: /login"), "{page}");
    let login = get(&addr, "/login");
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    assert!(
        login.contains("name=\"login_csrf\"") && login.contains("TOTP code"),
        "{login}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// `restore --via` from a host without the repository password: alice's
/// `password` from NFREPO_SERVE_PASSWORD, her code piped on stdin.
fn restore_via(env: &Env, addr: &str, password: &str, code: &str) -> std::process::Output {
    let mut cmd = env.cmd();
    cmd.env_remove("NFREPO_PASSWORD")
        .env("NFREPO_SERVE_PASSWORD", password)
        .args([
            "restore",
            "latest:data",
            "--via",
            &format!("http://{addr}"),
            "--server-target",
            "scratch",
            "--user",
            "alice",
        ]);
    run_with_stdin(cmd, format!("{code}\n").as_bytes())
}

#[test]
fn restore_via_runs_at_the_server_approved_by_a_fresh_code() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(data.join("sub/b.bin"), crate::harness::pseudo_random(3 << 20, 5)).unwrap();
    env.ok(&["snapshot", data.to_str().unwrap()]);
    std::fs::create_dir(env.path("restores")).unwrap();
    let (users, secret) = enrol(&env);
    let config = write_config(&env, &users);
    let secret = std::fs::read_to_string(secret).unwrap();
    let log = env.path("panel.log");
    let mut cmd = env.cmd();
    cmd.args(["--config", config.to_str().unwrap(), "serve"]);
    let (mut child, addr) = spawn_server(cmd, &log, "serving http://", "/ (admin panel)\n");

    // A wrong password is refused at once, without saying what was wrong.
    let out = restore_via(&env, &addr, "not it", "000000");
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error[PERMISSION_DENIED/WRONG_CREDENTIALS]: "),
        "{stderr}"
    );

    // Codes valid before the server started are never accepted: wait for the next step.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let started = now() / 30;
    while now() / 30 == started {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let code = nfrepo_panel::totp_code(secret.trim_end(), now()).unwrap();
    let out = restore_via(&env, &addr, "pw", &code);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("restored 2 files ("), "{stdout}");
    assert!(stdout.contains(", verified; approved by alice"), "{stdout}");
    let restored = std::fs::read_dir(env.path("restores"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    crate::harness::assert_same_tree(&data, &restored.join("data"));
    assert!(stdout.contains(&restored.display().to_string()), "{stdout}");

    // The same code a second time: refused, and nothing more is restored.
    let out = restore_via(&env, &addr, "pw", &code);
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error[PERMISSION_DENIED/TOTP_REUSED]: "), "{stderr}");
    assert_eq!(std::fs::read_dir(env.path("restores")).unwrap().count(), 1);
    // Not a code at all: refused before anything is sent.
    let out = restore_via(&env, &addr, "pw", "12ab");
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[PERMISSION_DENIED/NO_TOTP_CODE]: "));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains(secret.trim_end()), "no TOTP secret in the log:\n{log}");
    assert!(
        log.contains("restore started"),
        "the access log names the approved restore:\n{log}"
    );
}

#[test]
fn serve_listen_refuses_no_users_and_plain_http_off_loopback() {
    let env = Env::new();
    env.init();
    std::fs::create_dir(env.path("restores")).unwrap();
    let config = write_config(&env, "");
    let config = config.to_str().unwrap();
    let stderr = env.fails(&["--config", config, "serve"], 2, "error[USAGE/INVALID_ARGUMENT]");
    assert!(stderr.contains("no users"), "{stderr}");
    let (users, secret) = enrol(&env);
    let config = write_config(&env, &users);
    let config = config.to_str().unwrap();
    let stderr = env.fails(
        &["--config", config, "serve", "--listen", "0.0.0.0:0"],
        16,
        "error[PERMISSION_DENIED/INSECURE_HTTP]",
    );
    assert!(stderr.contains("tls_cert"), "{stderr}");
    // A TOTP secret others can read is refused, without quoting it.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = env.fails(
        &["--config", config, "serve"],
        16,
        "error[PERMISSION_DENIED/CREDENTIALS]",
    );
    let value = std::fs::read_to_string(Path::new(&secret)).unwrap();
    assert!(!stderr.contains(value.trim_end()), "{stderr}");
}
