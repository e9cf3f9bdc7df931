//! Running the binary against a throw-away repository.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_nfrepo");
pub const PASSWORD: &str = "correct horse battery staple";

/// A repository and a scratch directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: String,
    extra_env: Vec<(String, String)>,
}

impl Env {
    /// A `file://` repository (not yet initialised).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = format!("file://{}", dir.path().join("repo").display());
        Self {
            dir,
            repo,
            extra_env: Vec::new(),
        }
    }

    /// Another handle on an existing `file://` repository, for a second process.
    /// Its own temporary directory lives under `dir`.
    pub fn with_repo(repo: &str, dir: &Path) -> Self {
        Self {
            dir: tempfile::tempdir_in(dir).expect("tempdir"),
            repo: repo.to_owned(),
            extra_env: Vec::new(),
        }
    }

    /// Another host on this repository: its own scratch directory and
    /// cache (under this one's), the same store credentials, and
    /// `NFREPO_HOSTNAME=hostname`. Processes made from one such `Env`
    /// share its cache directory, as processes of one host do.
    pub fn host(&self, hostname: &str) -> Self {
        let mut extra_env = self.extra_env.clone();
        extra_env.retain(|(k, _)| k != "NFREPO_HOSTNAME");
        extra_env.push(("NFREPO_HOSTNAME".into(), hostname.into()));
        Self {
            dir: tempfile::tempdir_in(self.dir.path()).expect("tempdir"),
            repo: self.repo.clone(),
            extra_env,
        }
    }

    /// A repository on the SeaweedFS S3 server started by `scripts/test.sh`.
    ///
    /// Fails (never skips) when the server is not configured.
    pub fn s3(name: &str) -> Self {
        Self::s3_in("NFREPO_TEST_S3_BUCKET", name)
    }

    /// A repository in SeaweedFS's bucket with S3 Object Lock enabled
    /// (`NFREPO_TEST_S3_LOCK_BUCKET`, made by `scripts/start-seaweedfs.sh`).
    pub fn s3_lock(name: &str) -> Self {
        Self::s3_in("NFREPO_TEST_S3_LOCK_BUCKET", name)
    }

    fn s3_in(bucket_var: &str, name: &str) -> Self {
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: S3 tests need SeaweedFS; run scripts/test.sh (it starts one) or export the NFREPO_TEST_S3_* variables")
            })
        };
        let endpoint = var("NFREPO_TEST_S3_ENDPOINT");
        let bucket = var(bucket_var);
        let unique = format!("{name}-{}-{}", std::process::id(), nanos());
        let mut env = Self::new();
        env.repo = format!("s3://{bucket}/e2e/{unique}?endpoint={endpoint}&region=us-east-1");
        env.extra_env = vec![
            ("NFREPO_S3_ACCESS_KEY_ID".into(), var("NFREPO_TEST_S3_ACCESS_KEY")),
            ("NFREPO_S3_SECRET_ACCESS_KEY".into(), var("NFREPO_TEST_S3_SECRET_KEY")),
        ];
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The repository directory, for `file://` repositories.
    pub fn repo_dir(&self) -> PathBuf {
        PathBuf::from(self.repo.trim_start_matches("file://"))
    }

    /// A command for the binary with this repository and password.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("NFREPO_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NFREPO_REPOSITORY", &self.repo)
            .env("NFREPO_PASSWORD", PASSWORD)
            // Keep the local cache (index, check progress) out of the user's home.
            .env("NFREPO_CACHE_DIR", self.dir.path().join("cache"));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// A command running `program` with `args` in the environment
    /// [`Self::cmd`] gives nfrepo: for a wrapper that starts nfrepo itself
    /// (`sh -c 'umask …; exec "$0" "$@"' BIN …`, `script` for a terminal).
    pub fn wrapped(&self, program: &str, args: &[&str]) -> Command {
        let nfrepo = self.cmd();
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (k, v) in nfrepo.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run nfrepo")
    }

    /// Every later command of this `Env` reads `config` (`NFREPO_CONFIG`).
    pub fn configure(&mut self, config: &Path) {
        self.extra_env.retain(|(k, _)| k != "NFREPO_CONFIG");
        self.extra_env
            .push(("NFREPO_CONFIG".into(), config.display().to_string()));
    }

    /// Runs and asserts exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(&self.run(args), args)
    }

    /// Runs with `--json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        parse_json(&self.ok(&all), args)
    }

    /// Runs, asserts the exit code and that stderr names `code`; returns stderr.
    pub fn fails(&self, args: &[&str], exit: i32, code: &str) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(exit),
            "nfrepo {args:?}: wrong exit code:\n{}",
            describe(&out)
        );
        assert!(stderr.contains(code), "nfrepo {args:?}: stderr lacks {code}:\n{stderr}");
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(error_lines.len(), 1, "exactly one error line expected:\n{stderr}");
        stderr
    }

    /// `init` with cheap argon2 parameters.
    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    }

    /// A command for the binary as an unprivileged user: as root, `nobody`
    /// (through `setpriv`) on a copy of the binary it can reach, with the
    /// repository and each of `owned` handed to it; otherwise this user.
    pub fn unprivileged_cmd(&self, owned: &[&Path]) -> Command {
        if !is_root() {
            return self.cmd();
        }
        let nobody = nix::unistd::Uid::from_raw(65534);
        let nogroup = nix::unistd::Gid::from_raw(65534);
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for path in std::iter::once(self.repo_dir().as_path()).chain(owned.iter().copied()) {
            chown_tree(path, nobody, nogroup);
        }
        let bin = self.path("nfrepo-unprivileged");
        std::fs::copy(BIN, &bin).expect("copy the binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NFREPO_REPOSITORY", &self.repo)
            .env("NFREPO_PASSWORD", PASSWORD)
            .env("NFREPO_CACHE_DIR", self.dir.path().join("cache-unprivileged"))
            .stdin(Stdio::null());
        cmd
    }

    /// A command as a backup host runs it: no password, the put-only
    /// `credential` file (`NFREPO_CREDENTIAL_FILE`).
    pub fn put_only(&self, credential: &Path) -> Command {
        let mut cmd = self.cmd();
        cmd.env_remove("NFREPO_PASSWORD")
            .env("NFREPO_CREDENTIAL_FILE", credential);
        cmd
    }

    /// Every stored object under `dir` (`data`, `tree`, `index`,
    /// `snapshots`, `keys`) of a `file://` repository, sorted.
    pub fn objects(&self, dir: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = entries_under(&self.repo_dir().join(dir))
            .into_iter()
            .filter(|p| p.is_file() && !p.file_name().unwrap_or_default().to_string_lossy().starts_with('.'))
            .collect();
        out.sort();
        out
    }

    pub fn snapshot_count(&self) -> usize {
        self.json(&["snapshots"]).as_array().map(Vec::len).unwrap_or(0)
    }
}

/// Asserts that the run of nfrepo `args` exited 0; returns its stdout.
pub fn succeeded(out: &Output, args: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(0), "nfrepo {args:?} failed:\n{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The chunk profile of each snapshot of `source`, in the order `snapshots` lists them.
pub fn profiles(env: &Env, source: &str) -> Vec<String> {
    let listed = env.json(&["snapshots", "--source", source]);
    let listed = listed.as_array().expect("a list of snapshots");
    listed
        .iter()
        .map(|s| s["profile"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The JSON that nfrepo `args` printed.
pub fn parse_json(stdout: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{stdout}"))
}

pub fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` with `data` on its standard input; its output captured.
pub fn run_with_stdin(mut cmd: Command, data: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // A command that fails early closes its stdin: its output tells why.
    let _ = child.stdin.take().expect("stdin").write_all(data);
    child.wait_with_output().expect("wait")
}

/// Starts a server (`cmd`, its stderr into `log`) and reads the address
/// from its first line, `PREFIX<address>SUFFIX`; kills it and fails with
/// the log when that line is anything else.
pub fn spawn_server(mut cmd: Command, log: &Path, prefix: &str, suffix: &str) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    let Some(address) = first.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(suffix)) else {
        let _ = child.kill();
        panic!(
            "unexpected first line {first:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    };
    let address = address.to_owned();
    (child, address)
}

/// Every file and directory below `dir` (not `dir` itself), depth first;
/// nothing if `dir` does not exist.
pub fn entries_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(entries_under(&path));
            }
            out.push(path);
        }
    }
    out
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub use nfrepo_testing::{pseudo_random, sql_rows as sql_dump};

/// A small xorshift generator, so random choices (kill points, operations)
/// replay from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a restored entry must match: type, content, permissions, owner, times, xattrs.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every entry under `root`, keyed by relative path.
pub fn snapshot_of_tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    collect(root, root, &mut out);
    out
}

fn collect(root: &Path, path: &Path, out: &mut BTreeMap<String, Entry>) {
    let meta = std::fs::symlink_metadata(path).expect("lstat");
    let ft = meta.file_type();
    let (kind, content) = if ft.is_dir() {
        ("dir", Vec::new())
    } else if ft.is_symlink() {
        (
            "symlink",
            std::fs::read_link(path)
                .expect("readlink")
                .into_os_string()
                .into_encoded_bytes(),
        )
    } else if ft.is_file() {
        ("file", std::fs::read(path).expect("read"))
    } else {
        ("special", Vec::new())
    };
    let mut xattrs = BTreeMap::new();
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if let Ok(Some(value)) = xattr::get(path, &name) {
                xattrs.insert(name.to_string_lossy().into_owned(), value);
            }
        }
    }
    let rel = path.strip_prefix(root).expect("prefix").display().to_string();
    out.insert(
        rel,
        Entry {
            kind: kind.into(),
            content,
            mode: if ft.is_symlink() {
                0
            } else {
                meta.permissions().mode() & 0o7777
            },
            uid: meta.uid(),
            gid: meta.gid(),
            // Directory mtimes are compared too: restore sets them last.
            mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            xattrs,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .expect("readdir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for child in names {
            collect(root, &child, out);
        }
    }
}

/// Asserts that the tree at `restored` is the tree at `original`: the same
/// entries with the same type, content, mode, owner, times and xattrs.
pub fn assert_same_tree(original: &Path, restored: &Path) {
    let before = snapshot_of_tree(original);
    let after = snapshot_of_tree(restored);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (path, entry) in &before {
        assert_eq!(Some(entry), after.get(path), "{path} differs after restore");
    }
}

/// Hands `path` and everything below it (links not followed) to `uid`/`gid`.
pub fn chown_tree(path: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
    std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw())).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
