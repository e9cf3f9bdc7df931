//! MySQL/MariaDB point-in-time recovery end to end (issue 16): a private
//! MariaDB (its own data directory, port and binary log, so purging logs
//! disturbs no other test), a dump, `nfrepo agent` streaming the binlogs,
//! rows written in batches whole seconds apart, the agent killed (-9)
//! mid-stream and restarted across a log rotation, then restores to a
//! moment between two batches and to the latest moment into fresh
//! databases, checked row for row; and a binlog purged before it was
//! copied, reported as a gap.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{Env, describe};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A throwaway MariaDB with `--log-bin`, row-based binlogs and server id 1.
struct Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let data = dir.join("data");
        if !data.join("mysql").exists() {
            let out = Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ])
                .arg(format!("--datadir={}", data.display()))
                .output()
                .expect("mariadb-install-db");
            assert!(out.status.success(), "mariadb-install-db: {}", describe(&out));
        }
        let mut server = Self {
            dir: dir.to_owned(),
            port: free_port(),
            child: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        self.stop();
        let data = self.dir.join("data");
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--server-id=1",
            ])
            .args([
                "--binlog-format=ROW",
                "--innodb-buffer-pool-size=64M",
                "--skip-name-resolve",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--tmpdir={}", self.dir.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("mariadb.log")).unwrap())
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_sql("SELECT 1").is_none() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start:\n{}",
                std::fs::read_to_string(self.dir.join("mariadb.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let out = Command::new("mysql")
            .args(["--no-defaults", "--protocol=TCP", "--host=127.0.0.1", "--user=root"])
            .args(["--batch", "--skip-column-names"])
            .arg(format!("--port={}", self.port))
            .args(["-e", sql])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|| panic!("mysql -e {sql:?} failed"))
    }

    /// `SHOW MASTER STATUS`: the current file and position.
    fn position(&self) -> (String, u64) {
        let row = self.sql("SHOW MASTER STATUS");
        let mut cols = row.split('\t');
        let file = cols.next().unwrap().to_owned();
        (file, cols.next().unwrap().parse().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fields drop in order: the server stops before its directory goes.
struct World {
    server: Server,
    agent: Option<Child>,
    env: Env,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

impl World {
    fn new() -> Self {
        let mut env = Env::new();
        let server = Server::start(&env.path("mariadb"));
        let config = env.path("nfrepo.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nsocket = \"{}\"\n\n[sources.m]\nkind = \"mysql\"\n\
                 connection = \"mysql://root@127.0.0.1:{}\"\ndatabases = [\"app\"]\nbinlog = true\nbinlog_interval = \"1s\"\n",
                env.path("run/agent.sock").display(),
                server.port
            ),
        )
        .unwrap();
        env.configure(&config);
        env.init();
        Self {
            env,
            agent: None,
            server,
        }
    }

    fn agent_command(&self) -> Command {
        let mut cmd = self.env.cmd();
        cmd.arg("agent");
        cmd
    }

    fn start_agent(&mut self) {
        let (child, _) = crate::harness::spawn_server(
            self.agent_command(),
            &self.env.path(&format!("agent-{}.log", nanos())),
            "agent listening on ",
            " for m\n",
        );
        self.agent = Some(child);
    }

    fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("a running agent");
        agent.kill().unwrap();
        agent.wait().unwrap();
    }

    /// The archived files (longest version of each): name → (size, complete).
    fn archived(&self) -> std::collections::BTreeMap<String, (u64, bool)> {
        let mut out = std::collections::BTreeMap::new();
        for snap in self
            .env
            .json(&["snapshots", "--source", "m.binlog"])
            .as_array()
            .unwrap()
        {
            for (key, value) in snap["extra"].as_object().unwrap() {
                if let Some(name) = key.strip_prefix("binlog.file.") {
                    let value = value.as_str().unwrap();
                    let size: u64 = value.split(' ').next().unwrap().parse().unwrap();
                    let complete = value.ends_with(" complete");
                    let entry = out.entry(name.to_owned()).or_insert((size, complete));
                    if size > entry.0 {
                        *entry = (size, complete);
                    }
                }
            }
        }
        out
    }

    /// Waits until the server's current position is archived.
    fn wait_archived(&self) {
        let (file, position) = self.server.position();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.archived().get(&file).is_some_and(|(size, _)| *size >= position) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{file}:{position} never archived: {:?}",
                self.archived()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn rows(&self, db: &str) -> String {
        self.server
            .sql(&format!("SELECT GROUP_CONCAT(n ORDER BY n) FROM `{db}`.t"))
    }
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Waits into the next whole second and returns it as `--at` text: every
/// row written before is stamped with an earlier second, every row written
/// after with this one or later.
fn second_boundary() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let next = now.as_secs() + 1;
    std::thread::sleep(Duration::from_secs(next) - now + Duration::from_millis(150));
    chrono::DateTime::from_timestamp(i64::try_from(next).unwrap(), 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S+00")
        .to_string()
}

fn insert(w: &World, numbers: std::ops::RangeInclusive<u32>) {
    for n in numbers {
        w.server.sql(&format!("INSERT INTO app.t VALUES ({n}, NOW(6))"));
    }
}

// Issue 16: MariaDB point-in-time recovery through binlog streaming.
#[test]
fn mariadb_recovers_to_a_moment_from_a_dump_and_streamed_binlogs() {
    let mut w = World::new();
    w.server
        .sql("CREATE DATABASE app; CREATE TABLE app.t (n INT PRIMARY KEY, ts DATETIME(6) NOT NULL)");
    insert(&w, 1..=3);
    let dump = w.env.json(&["snapshot", "--source", "m"]);
    let dump_file = dump["extra"]["mysql.binlog_file"].as_str().unwrap().to_owned();
    assert!(dump_file.starts_with("binlog."), "{}", dump["extra"]);
    w.start_agent();

    insert(&w, 4..=6);
    let t1 = second_boundary();
    insert(&w, 7..=9);
    w.wait_archived();

    // The agent dies hard mid-stream: rows written meanwhile, and a
    // rotation, are copied after its restart, once.
    insert(&w, 10..=12);
    w.kill_agent();
    insert(&w, 13..=14);
    w.server.sql("FLUSH BINARY LOGS");
    let t2 = second_boundary();
    insert(&w, 15..=16);
    w.start_agent();
    // The server restarts under the running agent: it reconnects.
    w.server.restart();
    insert(&w, 17..=18);
    w.wait_archived();

    // Every file archived is the server's, and complete files whole.
    let archived = w.archived();
    let listed = w.server.sql("SHOW BINARY LOGS");
    for line in listed.lines() {
        let mut cols = line.split('\t');
        let (name, size): (&str, u64) = (cols.next().unwrap(), cols.next().unwrap().parse().unwrap());
        if name < dump_file.as_str() {
            continue;
        }
        let (got, _) = archived
            .get(name)
            .unwrap_or_else(|| panic!("{name} not archived: {archived:?}"));
        assert_eq!(*got, size, "{name}: archived {got} bytes, the server has {size}");
        let on_disk = std::fs::read(w.env.path(&format!("mariadb/data/{name}"))).unwrap();
        let cat = w
            .env
            .cmd()
            .args(["cat", &format!("m.binlog@latest:{name}")])
            .output()
            .unwrap();
        if cat.status.success() && cat.stdout.len() == on_disk.len() {
            // Only the format description's "in use" flag may differ.
            let differ: Vec<usize> = on_disk
                .iter()
                .zip(&cat.stdout)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i)
                .collect();
            assert!(differ.iter().all(|i| *i == 21), "{name} differs at {differ:?}");
        }
    }

    // To T1: the dump's rows and those written before T1, exactly.
    let into = format!("mysql://root@127.0.0.1:{}/app_t1", w.server.port);
    let out = w.env.ok(&["restore", "m@latest", "--into", &into, "--at", &t1]);
    assert!(out.contains("replayed"), "{out}");
    assert_eq!(w.rows("app_t1"), "1,2,3,4,5,6", "rows before {t1}");
    // To T2: across the kill and the rotation.
    let into = format!("mysql://root@127.0.0.1:{}/app_t2", w.server.port);
    w.env.ok(&["restore", "m.binlog@latest", "--into", &into, "--at", &t2]);
    assert_eq!(w.rows("app_t2"), "1,2,3,4,5,6,7,8,9,10,11,12,13,14", "rows before {t2}");
    // To the latest moment archived.
    let into = format!("mysql://root@127.0.0.1:{}/app_latest", w.server.port);
    let restored = w.env.json(&["restore", "m@latest", "--into", &into, "--at", "latest"]);
    assert!(
        !restored["databases"][0]["binlogs_replayed"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{restored}"
    );
    assert_eq!(
        w.rows("app_latest"),
        (1..=18).map(|n| n.to_string()).collect::<Vec<_>>().join(",")
    );
    // The live database is untouched by all of it.
    assert_eq!(
        w.rows("app"),
        (1..=18).map(|n| n.to_string()).collect::<Vec<_>>().join(",")
    );

    // Retention: a binlog snapshot superseded by a longer version goes; the newest versions stay.
    let before = w
        .env
        .json(&["snapshots", "--source", "m.binlog"])
        .as_array()
        .unwrap()
        .len();
    w.env.ok(&["forget", "--source", "m", "--keep-last", "1"]);
    let after = w
        .env
        .json(&["snapshots", "--source", "m.binlog"])
        .as_array()
        .unwrap()
        .len();
    assert!(after <= before, "{after} > {before}");
    let kept = w.archived();
    for (name, (size, _)) in &archived {
        assert!(
            kept.get(name).is_some_and(|(now, _)| now >= size),
            "{name} lost its longest version: {kept:?}"
        );
    }
    let into = format!("mysql://root@127.0.0.1:{}/app_after_forget", w.server.port);
    w.env.ok(&["restore", "m@latest", "--into", &into, "--at", &t2]);
    assert_eq!(w.rows("app_after_forget"), "1,2,3,4,5,6,7,8,9,10,11,12,13,14");

    // Status: the binlogs after the newest dump are whole.
    let status = w.env.json(&["status", "m"]);
    assert_eq!(
        (&status[0]["source"], &status[0]["kind"]),
        (&"m".into(), &"mysql".into()),
        "{status}"
    );
    assert_eq!(status[0]["log"]["kind"], "binlog", "{status}");
    assert_eq!(status[0]["log"]["whole"], true, "{status}");
    assert!(status[0]["newest_recoverable"].is_string(), "{status}");
    assert!(status[0]["error"].is_null(), "{status}");

    // A binlog purged before it was copied is a gap, reported and recorded.
    // The host dies: the agent and the copy it runs.
    w.kill_agent();
    let pid: i32 = std::fs::read_to_string(w.env.path("run/binlog-m/child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    insert(&w, 19..=20);
    w.server.sql("FLUSH BINARY LOGS");
    let (newest, _) = w.server.position();
    // The server keeps a file a dump connection is reading: end the dead
    // copy's (the server notices a dead client only when it next writes).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dumps = w
            .server
            .sql("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'");
        for id in dumps.lines().filter(|l| !l.is_empty()) {
            let _ = w.server.try_sql(&format!("KILL {id}"));
        }
        w.server.sql(&format!("PURGE BINARY LOGS TO '{newest}'"));
        let listed = w.server.sql("SHOW BINARY LOGS");
        if listed.starts_with(&newest) {
            break;
        }
        assert!(Instant::now() < deadline, "not purged: {listed}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = w.env.path("agent-gap.log");
    let (child, _) = crate::harness::spawn_server(w.agent_command(), &log, "agent listening on ", " for m\n");
    w.agent = Some(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let gap = loop {
        let snaps = w.env.json(&["snapshots", "--source", "m.binlog"]);
        if let Some(gap) = snaps
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| s["extra"]["binlog.gap"].as_str().map(str::to_owned))
        {
            break gap;
        }
        assert!(Instant::now() < deadline, "no gap recorded: {snaps}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let (last_archived, _) = archived.iter().next_back().unwrap();
    assert_eq!(&gap, last_archived, "the file purged before its end was copied");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("BACKUP_FAILED/BINLOG_GAP"), "{text}");
    // A restore to the latest moment would miss the purged events: refused.
    let into = format!("mysql://root@127.0.0.1:{}/app_gap", w.server.port);
    let out = w.env.run(&["restore", "m@latest", "--into", &into, "--at", "latest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "{}", describe(&out));
    assert!(stderr.contains("RESTORE_FAILED/BINLOG_GAP"), "{stderr}");
    // Status reports the gap as the error monitoring alerts on.
    let out = w.env.run(&["--json", "status", "m"]);
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["log"]["kind"], "binlog", "{status}");
    assert_eq!(status[0]["log"]["missing"], gap.as_str(), "{status}");
    assert_eq!(status[0]["error"]["detail"], "BINLOG_GAP", "{status}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("BACKUP_FAILED/BINLOG_GAP"));
    // A moment before the gap still restores.
    let into = format!("mysql://root@127.0.0.1:{}/app_before_gap", w.server.port);
    w.env.ok(&["restore", "m@latest", "--into", &into, "--at", &t2]);
    assert_eq!(w.rows("app_before_gap"), "1,2,3,4,5,6,7,8,9,10,11,12,13,14");
}
