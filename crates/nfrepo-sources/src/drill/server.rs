//! The throwaway side of a drill: a private temporary directory, a server
//! process in it on a free loopback port, and a guard that kills the
//! process and deletes the directory however the drill ends (success,
//! failure, a panic, or the drill's future being dropped on Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long a server may take to answer after it was started.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A temporary directory and the server running in it; both go when the
/// owning handle is dropped.
///
/// The owner stays with the drill's future; blocking work (initialising a
/// data directory, waiting for the server) runs on a [`Throwaway::worker`]
/// handle. Dropping the owner (the drill ends, or its future is dropped on
/// Ctrl-C while a worker is still busy) kills the server and removes the
/// directory at once and closes the throwaway: a worker then starts no
/// server, and its wait ends.
pub(crate) struct Throwaway {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
    /// What the server is, for messages (`mariadbd`).
    name: &'static str,
    owner: bool,
}

struct Inner {
    child: Option<Child>,
    closed: bool,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Throwaway {
    /// Creates a new private directory under `root` (the system's temporary
    /// directory when `None`). Its name is random and created exclusively.
    pub(crate) fn new(root: Option<&Path>, name: &'static str) -> Result<Self> {
        let root = root.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = root.join(format!("nfrepo-drill-{}", crate::random::hex::<8>()));
        std::fs::create_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                child: None,
                closed: false,
            })),
            dir,
            name,
            owner: true,
        })
    }

    /// A handle for blocking work; dropping it cleans nothing up.
    pub(crate) fn worker(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            dir: self.dir.clone(),
            name: self.name,
            owner: false,
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn closed_error(&self) -> Error {
        Error::CommandFailed(format!("the drill was stopped before {} was ready", self.name))
    }

    /// Starts the server (`argv`, with `configure` applied to the command,
    /// for instance to run it as another user), its output to a log in the
    /// directory. The server gets its own process group so that a Ctrl-C
    /// at the terminal reaches nfrepo, which then stops it through the owner.
    pub(crate) fn start(&self, argv: &[String], configure: impl FnOnce(&mut std::process::Command)) -> Result<()> {
        self.spawn(self.name, argv, configure)
    }

    /// Runs a preparation step (`mariadb-install-db`, `initdb`) to its end,
    /// its output to `<step>.log`, as killable by the owner as the server.
    pub(crate) fn prepare(
        &self,
        step: &'static str,
        argv: &[String],
        configure: impl FnOnce(&mut std::process::Command),
    ) -> Result<()> {
        self.spawn(step, argv, configure)?;
        loop {
            {
                let mut inner = lock(&self.inner);
                if inner.closed {
                    return Err(self.closed_error());
                }
                let status = match inner.child.as_mut().map(Child::try_wait) {
                    Some(Ok(None)) => None,
                    Some(Ok(Some(status))) => Some(Ok(status)),
                    Some(Err(e)) => Some(Err(e)),
                    None => return Err(self.closed_error()),
                };
                if let Some(status) = status {
                    if let Some(step) = inner.child.take() {
                        // The step is over: nothing it left running in its
                        // group may go on writing into the directory.
                        kill_leftovers(&step);
                    }
                    let status = status.map_err(|e| Error::CommandFailed(format!("{step}: {e}")))?;
                    if status.success() {
                        return Ok(());
                    }
                    return Err(Error::CommandFailed(format!(
                        "{step} failed ({status}): {}",
                        self.log_tail(step)
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&self, log_name: &str, argv: &[String], configure: impl FnOnce(&mut std::process::Command)) -> Result<()> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::Invalid("no server command".into()))?;
        let mut inner = lock(&self.inner);
        if inner.closed {
            // The owner went while the worker was busy.
            let _ = std::fs::remove_dir_all(&self.dir);
            return Err(self.closed_error());
        }
        let log_path = self.dir.join(format!("{log_name}.log"));
        let log = std::fs::File::create(&log_path).map_err(|source| Error::Io {
            path: log_path.clone(),
            source,
        })?;
        let err = log.try_clone().map_err(|source| Error::Io {
            path: log_path.clone(),
            source,
        })?;
        let mut command = crate::child::command(program, &crate::ChildAuth::none());
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        // Whatever the server or its installer puts in `$TMPDIR` (InnoDB's
        // unlinked-at-once temporary files, a script's `mktemp`) lands in
        // the directory that the owner removes, even when a kill comes
        // between a file's creation and its removal.
        command.env("TMPDIR", &self.dir);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        configure(&mut command);
        let child = command
            .spawn()
            .map_err(|e| Error::CommandFailed(format!("cannot start {program:?}: {e}")))?;
        inner.child = Some(child);
        Ok(())
    }

    /// Polls `ready` until it answers true, the server exits, the owner
    /// goes, or [`START_TIMEOUT`].
    pub(crate) fn wait_ready(&self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            {
                let mut inner = lock(&self.inner);
                if inner.closed {
                    return Err(self.closed_error());
                }
                if let Some(child) = inner.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(Error::CommandFailed(format!(
                        "{} exited during start-up ({status}): {}",
                        self.name,
                        self.log_tail(self.name)
                    )));
                }
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::CommandFailed(format!(
                    "{} did not answer within {}s: {}",
                    self.name,
                    START_TIMEOUT.as_secs(),
                    self.log_tail(self.name)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last line of a log in the directory (the server's is its name).
    pub(crate) fn log_tail(&self, log_name: &str) -> String {
        let bytes = std::fs::read(self.dir.join(format!("{log_name}.log"))).unwrap_or_default();
        crate::dump::last_line(&bytes)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let mut inner = lock(&self.inner);
        inner.closed = true;
        if let Some(mut child) = inner.child.take() {
            // The server's data is thrown away: no clean shutdown needed.
            kill_group(&mut child, self.name);
        }
        // A process killed in the middle of a write may still finish it:
        // try again briefly rather than leave the directory behind.
        let mut removed = std::fs::remove_dir_all(&self.dir);
        for _ in 0..50 {
            match &removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(20));
                    removed = std::fs::remove_dir_all(&self.dir);
                }
                _ => break,
            }
        }
        if let Err(e) = removed.or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        }) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the drill's temporary directory");
        }
    }
}

/// Kills `child` and every process of its group (it leads one, see
/// [`Throwaway::start`]): `mariadb-install-db` is a script whose
/// `mariadbd --bootstrap` would otherwise go on writing into the directory,
/// and `runuser` does not pass a kill on to the server it started. Returns
/// once the group is gone (or after five seconds, logged).
fn kill_group(child: &mut Child, name: &str) {
    use nix::sys::signal::{Signal, killpg};
    let group = group_of(child);
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    if let Err(e) = child.kill() {
        tracing::debug!(server = name, error = %e, "the drill's process had already exited");
    }
    let _ = child.wait();
    let Some(group) = group else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    // Signal 0: is any process of the group left?
    while killpg(group, None).is_ok() {
        if Instant::now() > deadline {
            tracing::warn!(server = name, "processes of the drill's server outlived SIGKILL");
            return;
        }
        let _ = killpg(group, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills what is left of the process group that `ended` (already reaped)
/// led.
fn kill_leftovers(ended: &Child) {
    if let Some(group) = group_of(ended) {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
}

/// The process group `child` leads: every drill child is started in a group of its own.
fn group_of(child: &Child) -> Option<nix::unistd::Pid> {
    i32::try_from(child.id()).ok().map(nix::unistd::Pid::from_raw)
}

/// A loopback port free right now (the server binds it a moment later).
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    listener.local_addr().map(|a| a.port()).map_err(|source| Error::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })
}

/// How to reach a throwaway server on `127.0.0.1:port` as `user`, without a password.
pub(crate) fn loopback(scheme: &str, user: &str, port: u16) -> crate::Connection {
    crate::Connection {
        scheme: scheme.to_owned(),
        user: Some(user.to_owned()),
        host: "127.0.0.1".into(),
        port: Some(port),
        database: None,
        socket: None,
        password: None,
    }
}

/// Whether the first field of a query's answer is a true value: a non-zero
/// number, `t`, `true`, `yes` or `on` (any case). Empty, `NULL`, zero and
/// anything else are false.
pub(crate) fn is_true(answer: &str) -> bool {
    let first = answer
        .lines()
        .next()
        .and_then(|line| line.split('\t').next())
        .unwrap_or("")
        .trim();
    if let Ok(number) = first.parse::<f64>() {
        return number != 0.0;
    }
    matches!(first.to_ascii_lowercase().as_str(), "t" | "true" | "yes" | "on")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

    use super::*;

    #[test]
    fn truth_of_answers() {
        for yes in ["1\n", "t\n", "true", "42\tx", "TRUE", " 1 ", "0.5"] {
            assert!(is_true(yes), "{yes:?}");
        }
        for no in ["0\n", "f\n", "false", "", "NULL", "0\t1", "no", "banana"] {
            assert!(!is_true(no), "{no:?}");
        }
    }

    #[test]
    fn the_guard_removes_its_directory_and_kills_its_server() {
        let root = tempfile::tempdir().unwrap();
        let guard = Throwaway::new(Some(root.path()), "sleep").unwrap();
        let dir = guard.dir().to_path_buf();
        std::fs::write(dir.join("data"), b"x").unwrap();
        let worker = guard.worker();
        worker.start(&["sleep".into(), "600".into()], |_| {}).unwrap();
        let pid = lock(&guard.inner).child.as_ref().unwrap().id();
        drop(guard);
        // A worker still busy sees the throwaway closed, and starts nothing.
        assert!(worker.wait_ready(|| false).is_err());
        assert!(worker.start(&["sleep".into(), "600".into()], |_| {}).is_err());
        assert!(lock(&worker.inner).child.is_none());
        assert!(!dir.exists());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z"),
            "the server was killed"
        );
    }

    #[test]
    fn dropping_the_owner_stops_a_preparation_step_at_once() {
        let root = tempfile::tempdir().unwrap();
        let guard = Throwaway::new(Some(root.path()), "sleep").unwrap();
        let worker = guard.worker();
        let step = std::thread::spawn(move || worker.prepare("initdb", &["sleep".into(), "600".into()], |_| {}));
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        drop(guard);
        assert!(step.join().unwrap().is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
        // A step that fails names its log's last line.
        let guard = Throwaway::new(Some(root.path()), "sh").unwrap();
        let err = guard
            .prepare(
                "step",
                &["sh".into(), "-c".into(), "echo broken >&2; exit 3".into()],
                |_| {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        guard.prepare("step", &["true".into()], |_| {}).unwrap();
    }

    #[test]
    fn children_keep_their_temporary_files_in_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let guard = Throwaway::new(Some(root.path()), "sh").unwrap();
        guard
            .prepare(
                "step",
                &["sh".into(), "-c".into(), "touch \"$TMPDIR/left-by-step\"".into()],
                |_| {},
            )
            .unwrap();
        assert!(guard.dir().join("left-by-step").exists());
        drop(guard);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_finished_step_leaves_nothing_running() {
        let root = tempfile::tempdir().unwrap();
        let guard = Throwaway::new(Some(root.path()), "sh").unwrap();
        let pid_file = guard.dir().join("pid");
        let script = format!("sleep 600 & echo $! > '{}'", pid_file.display());
        guard
            .prepare("step", &["sh".into(), "-c".into(), script], |_| {})
            .unwrap();
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z")) {
            assert!(Instant::now() < deadline, "the step's background process survived it");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
