//! PostgreSQL point-in-time recovery end to end (issue 16): a throwaway
//! PostgreSQL 15 cluster archiving through `nfrepo wal-push` into a running
//! `nfrepo agent`, a base backup, rows written over several WAL segments
//! with the agent killed (-9) and restarted in between, then a restore to a
//! moment between two writes into a fresh data directory, started, and the
//! rows at that moment checked exactly.
//!
//! PostgreSQL runs as the `postgres` user, and so do the agent and every
//! nfrepo command here: `archive_command` talks to the agent over its
//! owner-only socket, and `restore_command` reads the same repository.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::harness::{BIN, Env, describe};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn postgres_ids() -> (nix::unistd::Uid, nix::unistd::Gid) {
    let user = nix::unistd::User::from_name("postgres")
        .expect("look up postgres")
        .expect("a postgres user (scripts/start-postgres.sh makes one)");
    (user.uid, user.gid)
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The test's world: a directory owned by `postgres` holding the
/// repository, its password file, the configuration, a copy of the binary
/// and the clusters.
struct Pitr {
    env: Env,
    config: PathBuf,
    bin: PathBuf,
    agent: Option<Child>,
    servers: Vec<PathBuf>,
}

impl Drop for Pitr {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for data in &self.servers {
            let _ = self
                .as_postgres(&format!("{PG_BIN}/pg_ctl"))
                .args(["-D"])
                .arg(data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
}

impl Pitr {
    fn new(port: u16) -> Self {
        let env = Env::new();
        let dir = env.dir.path().to_owned();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("nfrepo");
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pass = dir.join("repo.pass");
        std::fs::write(&pass, format!("{}\n", crate::harness::PASSWORD)).unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.join("nfrepo.toml");
        std::fs::write(
            &config,
            format!(
                "[repository]\nurl = \"{}\"\npassword_file = \"{}\"\n\n[agent]\nsocket = \"{}\"\n\n\
                 [sources.pg]\nkind = \"postgres\"\nmethod = \"basebackup\"\n\
                 connection = \"postgres://postgres@127.0.0.1:{port}\"\n",
                env.repo,
                pass.display(),
                dir.join("run/agent.sock").display()
            ),
        )
        .unwrap();
        let (uid, gid) = postgres_ids();
        crate::harness::chown_tree(&dir, uid, gid);
        Self {
            env,
            config,
            bin,
            agent: None,
            servers: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.env.path(rel)
    }

    /// `program` as the postgres user, with a clean environment.
    fn as_postgres(&self, program: &str) -> Command {
        let (uid, gid) = postgres_ids();
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(program)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NFREPO_CACHE_DIR", self.path("cache"))
            .current_dir(self.env.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// nfrepo as the postgres user with the configuration.
    fn nfrepo(&self, args: &[&str]) -> Output {
        self.as_postgres(&self.bin.display().to_string())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run nfrepo")
    }

    fn ok(&self, args: &[&str]) -> String {
        crate::harness::succeeded(&self.nfrepo(args), args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        crate::harness::parse_json(&self.ok(&all), args)
    }

    fn start_agent(&mut self) {
        let (child, socket) = crate::harness::spawn_server(
            {
                let mut cmd = self.as_postgres(&self.bin.display().to_string());
                cmd.arg("--config").arg(&self.config).arg("agent");
                cmd
            },
            &self.path("agent.log"),
            "agent listening on ",
            " for pg\n",
        );
        assert_eq!(PathBuf::from(&socket), self.path("run/agent.sock"));
        self.agent = Some(child);
    }

    /// kill -9 of the agent, as a crash would.
    fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("a running agent");
        agent.kill().unwrap();
        agent.wait().unwrap();
    }

    fn pg_ctl_start(&mut self, data: &Path, port: u16, options: &str) {
        let out = self
            .as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(data.with_extension("log"))
            .args(["-w", "-t", "120", "-o"])
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 {options}",
                self.env.dir.path().display()
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            describe(&out),
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
        self.servers.push(data.to_owned());
    }

    fn sql(&self, port: u16, sql: &str) -> String {
        let out = self
            .as_postgres(&format!("{PG_BIN}/psql"))
            .args([
                "-X",
                "-q",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Switches to a new segment and waits until the one just finished is archived.
    fn switch_and_wait_archived(&self, port: u16) -> String {
        let segment = self.sql(port, "SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.sql(port, "SELECT pg_switch_wal()");
        for _ in 0..600 {
            let archived = self.sql(port, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if archived.as_str() >= segment.as_str() {
                return segment;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!(
            "{segment} was never archived; agent log:\n{}",
            std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
        );
    }
}

// Issue 16: PostgreSQL point-in-time recovery through WAL archiving.
#[test]
fn postgres_recovers_to_a_moment_from_a_base_backup_and_archived_wal() {
    let port = free_port();
    let mut w = Pitr::new(port);
    w.ok(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    let src = w.path("src");
    let out = w
        .as_postgres(&format!("{PG_BIN}/initdb"))
        .arg("-D")
        .arg(&src)
        .args(["-A", "trust", "-U", "postgres"])
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", describe(&out));
    let archive_command = format!(
        "{} --config {} --quiet wal-push %p",
        w.bin.display(),
        w.config.display()
    );
    w.pg_ctl_start(
        &src,
        port,
        &format!("-c wal_level=replica -c archive_mode=on -c \"archive_command={archive_command}\""),
    );
    w.start_agent();

    // The base backup, with its WAL positions.
    let base = w.json(&["snapshot", "--source", "pg"]);
    let extra = &base["extra"];
    assert_eq!(extra["postgres.method"], "basebackup");
    let start_wal = extra["postgres.basebackup.start_wal"].as_str().unwrap().to_owned();
    assert_eq!(start_wal.len(), 24, "{extra}");
    assert_eq!(extra["postgres.basebackup.timeline"], "1");
    assert!(extra["postgres.basebackup.stop_lsn"].as_str().unwrap().contains('/'));
    // pg_basebackup -X none returns once the WAL the backup needs is archived.
    let archived = w.ok(&[
        "wal-fetch",
        "--no-agent",
        &start_wal,
        &w.path("start.seg").display().to_string(),
    ]);
    assert!(archived.contains(&start_wal), "{archived}");
    let listing = w.ok(&["ls", "pg@latest"]);
    for name in ["PG_VERSION", "backup_label", "backup_manifest", "global", "base"] {
        assert!(
            listing.lines().any(|l| l.trim_end_matches('/') == name),
            "{name} missing:\n{listing}"
        );
    }

    // Rows over several segments; T falls between row 3 and row 4.
    w.sql(port, "CREATE TABLE t (ts timestamptz NOT NULL, n int PRIMARY KEY)");
    for n in 1..=3 {
        w.sql(port, &format!("INSERT INTO t VALUES (clock_timestamp(), {n})"));
        w.switch_and_wait_archived(port);
    }
    let at = w.sql(
        port,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    // The agent dies hard while the archiver hands it the next segment (or
    // just before, or just after its commit): that segment waits in pg_wal
    // until the agent is back, and is archived once.
    w.sql(port, "INSERT INTO t VALUES (clock_timestamp(), 4)");
    w.sql(port, "SELECT pg_switch_wal()");
    w.kill_agent();
    w.start_agent();
    w.sql(port, "INSERT INTO t VALUES (clock_timestamp(), 5)");
    let last = w.switch_and_wait_archived(port);
    assert_eq!(w.sql(port, "SELECT count(*) FROM t"), "5");

    // Each segment is archived once, under its name, in the WAL stream.
    let wal = w.json(&["snapshots", "--source", "pg.wal"]);
    let names: Vec<String> = wal
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["extra"].as_object().unwrap().keys().cloned().collect::<Vec<_>>())
        .filter_map(|k| k.strip_prefix("wal.file.").map(str::to_owned))
        .collect();
    assert!(names.contains(&start_wal), "{start_wal} not archived: {names:?}");
    assert!(names.contains(&last), "{last} not archived: {names:?}");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a segment archived twice: {names:?}");

    // A segment pushed again: the same bytes are acknowledged, other bytes refused.
    let copy = w.path(&format!("again/{last}"));
    w.ok(&[
        "wal-fetch",
        "--no-agent",
        &last,
        &w.path("again.seg").display().to_string(),
    ]);
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(w.path("again.seg"), &copy).unwrap();
    let (uid, gid) = postgres_ids();
    crate::harness::chown_tree(&w.path("again"), uid, gid);
    let live = std::fs::read(src.join("pg_wal").join(&last)).unwrap();
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        live,
        "wal-fetch gives back the archived bytes"
    );
    let again = w.ok(&["wal-push", &copy.display().to_string()]);
    assert!(again.contains("already archived"), "{again}");
    let mut changed = live;
    changed[100] ^= 0xff;
    std::fs::write(&copy, &changed).unwrap();
    let refused = w.nfrepo(&["wal-push", &copy.display().to_string()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(10), "{}", describe(&refused));
    assert!(stderr.contains("BACKUP_FAILED/WAL_CONFLICT"), "{stderr}");
    w.ok(&[
        "wal-fetch",
        "--no-agent",
        &last,
        &w.path("again.seg").display().to_string(),
    ]);
    assert_ne!(
        std::fs::read(w.path("again.seg")).unwrap(),
        changed,
        "the archived segment is unchanged"
    );

    // Restore to T into a fresh data directory and start it.
    let restored = w.path("restored");
    let out = w.ok(&[
        "restore",
        "pg@latest",
        "--into",
        &format!("postgres-data:{}", restored.display()),
        "--at",
        &at,
    ]);
    assert!(out.contains("recovery_target_time"), "{out}");
    assert!(restored.join("recovery.signal").exists());
    let port2 = free_port();
    w.pg_ctl_start(&restored, port2, "-c archive_mode=off");
    let mut promoted = false;
    for _ in 0..600 {
        if w.sql(port2, "SELECT pg_is_in_recovery()") == "f" {
            promoted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        promoted,
        "recovery never ended:\n{}",
        std::fs::read_to_string(restored.with_extension("log")).unwrap_or_default()
    );
    assert_eq!(
        w.sql(port2, "SELECT string_agg(n::text, ',' ORDER BY n) FROM t"),
        "1,2,3",
        "exactly the rows committed before {at}"
    );
    assert!(
        !restored.join("recovery.signal").exists(),
        "promoted: recovery.signal is gone"
    );

    // Retention: with only a newer base backup kept, the WAL before its start goes, the rest stays.
    let second = w.json(&["snapshot", "--source", "pg"]);
    let second_start = second["extra"]["postgres.basebackup.start_wal"]
        .as_str()
        .unwrap()
        .to_owned();
    w.ok(&["forget", "--source", "pg", "--keep-last", "1"]);
    let wal_names = |w: &Pitr| -> Vec<String> {
        w.json(&["snapshots", "--source", "pg.wal"])
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["extra"].as_object().unwrap().keys().cloned().collect::<Vec<_>>())
            .filter_map(|k| k.strip_prefix("wal.file.").map(str::to_owned))
            .collect()
    };
    let kept = wal_names(&w);
    assert!(kept.contains(&second_start), "{second_start} must stay: {kept:?}");
    for name in &kept {
        assert!(
            name.ends_with(".history") || name[8..24] >= second_start[8..24],
            "{name} is older than the kept base backup's start {second_start}: {kept:?}"
        );
    }
    assert!(
        !kept.contains(&start_wal),
        "the first base backup's WAL went with it: {kept:?}"
    );
    assert_eq!(w.json(&["snapshots", "--source", "pg"]).as_array().unwrap().len(), 1);

    // Status: the newest base backup's WAL is whole up to the newest segment.
    w.sql(port, "INSERT INTO t VALUES (clock_timestamp(), 6)");
    let lost = w.switch_and_wait_archived(port);
    w.sql(port, "INSERT INTO t VALUES (clock_timestamp(), 7)");
    let after = w.switch_and_wait_archived(port);
    assert_ne!(lost, after);
    let status = w.json(&["status", "pg"]);
    let pg = &status[0];
    assert_eq!(
        (&pg["source"], &pg["kind"], &pg["snapshots"]),
        (&"pg".into(), &"postgres-basebackup".into(), &1.into()),
        "{status}"
    );
    assert_eq!(pg["log"]["kind"], "wal", "{status}");
    assert_eq!(pg["log"]["whole"], true, "{status}");
    assert_eq!(pg["log"]["newest_file"], after.as_str(), "{status}");
    assert!(pg["newest_recoverable_age_seconds"].as_u64().unwrap() < 600, "{status}");
    assert!(pg["error"].is_null(), "{status}");

    // A WAL batch lost from storage (a hand or a lifecycle rule deleted it):
    // the WAL after it cannot be replayed, and status and alerts say so.
    let batches = w.json(&["snapshots", "--source", "pg.wal"]);
    let holding = |name: &str| {
        batches
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["extra"].get(format!("wal.file.{name}")).is_some())
            .unwrap_or_else(|| panic!("{name} is in no WAL snapshot: {batches}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let batch = holding(&lost);
    assert_ne!(batch, holding(&after), "each switch is archived in its own batch");
    std::fs::remove_file(w.env.repo_dir().join("snapshots").join(&batch)).unwrap();
    let out = w.nfrepo(&["--json", "status", "pg"]);
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pg = &status[0];
    assert_eq!(pg["log"]["whole"], false, "{status}");
    assert_eq!(pg["log"]["missing"], lost.as_str(), "{status}");
    assert_eq!(pg["error"]["code"], "BACKUP_FAILED", "{status}");
    assert_eq!(pg["error"]["detail"], "WAL_GAP", "{status}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BACKUP_FAILED/WAL_GAP"),
        "{}",
        describe(&out)
    );
    let out = w.nfrepo(&["status"]);
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("GAP at {lost}")), "{text}");
    let alerts = w.json(&["alerts"]);
    let gap = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "wal_gap")
        .unwrap_or_else(|| panic!("no wal_gap alert: {alerts}"));
    assert_eq!(gap["subject"], "pg");
    assert!(gap["summary"].as_str().unwrap().contains(&lost), "{gap}");

    // A restore that would replay across the gap is refused before anything is written.
    let refused_dir = w.path("refused");
    let out = w.nfrepo(&[
        "restore",
        "pg@latest",
        "--into",
        &format!("postgres-data:{}", refused_dir.display()),
        "--at",
        "latest",
    ]);
    assert_eq!(out.status.code(), Some(13), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RESTORE_FAILED/WAL_GAP"),
        "{}",
        describe(&out)
    );
    assert!(!refused_dir.exists(), "nothing written");

    // A new base backup starts a whole run again.
    w.ok(&["snapshot", "--source", "pg"]);
    let status = w.json(&["status", "pg"]);
    assert_eq!(status[0]["log"]["whole"], true, "{status}");
}
