//! Redis end to end: the RDB streamed with `redis-cli --rdb -` and the AOF
//! directory, restored into a data directory and loaded by a fresh server.

use std::process::{Child, Command, Stdio};

use crate::harness::Env;
use crate::servers::{redis_cli_at, redis_dir, redis_port, redis_url, unique};

/// A throw-away redis-server, killed on drop.
struct FreshServer {
    child: Child,
    port: String,
}

impl FreshServer {
    fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "no",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = Self { child, port };
        for _ in 0..100 {
            let pong = Command::new("redis-cli")
                .args(["-p", &server.port, "ping"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
                .unwrap_or(false);
            let loading = pong && redis_cli_at(&server.port, &["info", "persistence"]).contains("loading:0");
            if loading {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("fresh redis-server on port {} did not come up", server.port);
    }
}

impl Drop for FreshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn values(port: &str, keys: &[String]) -> String {
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    redis_cli_at(port, &args)
}

#[test]
fn redis_rdb_and_aof_are_backed_up_and_load_into_a_fresh_server() {
    let env = Env::new();
    env.init();
    let prefix = unique("nfk");
    let port = redis_port();
    let keys: Vec<String> = (0..2000).map(|i| format!("{prefix}:{i}")).collect();
    for chunk in keys.chunks(500) {
        let mut args = vec!["MSET".to_owned()];
        for key in chunk {
            args.push(key.clone());
            args.push(format!("value-{key}-{}", "x".repeat(200)));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis_cli_at(&port, &args);
    }
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.cache]\nkind = \"redis\"\nconnection = \"{}\"\naof_dir = \"{}/appendonlydir\"\n",
            redis_url(),
            redis_dir()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let first = env.json(&["--config", &config, "snapshot", "--source", "cache"]);
    assert!(first["extra"]["redis.server_version"].as_str().is_some());
    assert_eq!(first["extra"]["dump.dump.rdb.exit_status"], "0");
    assert_eq!(
        crate::harness::profiles(&env, "cache"),
        ["rows"],
        "an RDB changes keys in place"
    );

    redis_cli_at(&port, &["SET", &keys[7], "changed"]);
    redis_cli_at(&port, &["DEL", &keys[8]]);
    let expected = values(&port, &keys);
    env.json(&["--config", &config, "snapshot", "--source", "cache"]);

    let target = env.path("restored");
    let out = env.ok(&["restore", "cache@latest", "--target", target.to_str().unwrap()]);
    assert!(out.contains("stop redis-server"), "{out}");
    assert!(target.join("dump.rdb").is_file());
    assert!(target.join("appendonlydir").is_dir(), "AOF directory not restored");

    let fresh = FreshServer::start(&target);
    assert_eq!(values(&fresh.port, &keys), expected);
    assert!(expected.contains("changed"));
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    redis_cli_at(&port, &del);
}
