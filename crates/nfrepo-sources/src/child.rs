//! Starting child processes without handing them nfrepo's secrets.
//!
//! Every process nfrepo starts (a `snapshot --command`, a source's
//! `pre_hook`/`post_hook`, `mysqldump`, `pg_dump`, `psql`, `mysql`,
//! `redis-cli`) is built by [`command`] (or [`async_command`]), which removes
//! from the inherited environment every variable [`crate::secret`] knows to
//! hold a secret: the repository password, S3 credentials, any variable a
//! configuration names in `password_env`, and the database tools' own
//! password variables (`MYSQL_PWD`, `PGPASSWORD`, `REDISCLI_AUTH`).
//!
//! A database tool that needs a password gets it through a [`ChildAuth`]:
//! a file of mode 0600 in a fresh directory of mode 0700, removed when the
//! last holder is dropped, that the tool reads itself (`mysql
//! --defaults-file=`, `PGPASSFILE=` naming the path, `redis-cli --askpass`
//! with the file as standard input). The password is therefore never in a
//! child's command line or environment, where `ps`, `/proc/PID/cmdline`,
//! `/proc/PID/environ` and the snapshot record would show it.
//!
//! Nothing else in the workspace may call `std::process::Command::new` or
//! `tokio::process::Command::new`.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::secret::protected_vars_present;
use crate::{Error, Result};

/// How a child process authenticates, without a secret in its argv or
/// environment. The default authenticates nothing.
///
/// Cheap to clone: clones share the one file, which is removed when the
/// last of them is dropped (so a planned dump command keeps it until it has run).
#[derive(Clone, Debug, Default)]
pub struct ChildAuth {
    file: Option<Arc<SecretFile>>,
    /// Variables set to the file's path (never to a secret).
    path_vars: Vec<String>,
    /// The file is the child's standard input.
    as_stdin: bool,
}

impl ChildAuth {
    /// No authentication: the child gets nothing.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Writes `contents` (which holds the secret) to a new private file.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory or file cannot be made.
    pub(crate) fn file(name: &str, contents: &[u8]) -> Result<Self> {
        Ok(Self {
            file: Some(Arc::new(SecretFile::create(name, contents)?)),
            path_vars: Vec::new(),
            as_stdin: false,
        })
    }

    /// Sets the variable `name` on the child to the file's path.
    #[must_use]
    pub(crate) fn path_in_env(mut self, name: &str) -> Self {
        self.path_vars.push(name.to_owned());
        self
    }

    /// Makes the file the child's standard input.
    #[must_use]
    pub(crate) const fn fed_on_stdin(mut self) -> Self {
        self.as_stdin = true;
        self
    }

    /// The private file's path, if there is one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref().map(|f| f.path.as_path())
    }

    /// The child's standard input: the file when it is fed that way, else `default`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened.
    pub fn stdin_or(&self, default: Stdio) -> Result<Stdio> {
        match (&self.file, self.as_stdin) {
            (Some(file), true) => std::fs::File::open(&file.path)
                .map(Stdio::from)
                .map_err(|source| Error::Io {
                    path: file.path.clone(),
                    source,
                }),
            _ => Ok(default),
        }
    }
}

/// A file of mode 0600 alone in a directory of mode 0700; both removed on drop.
#[derive(Debug)]
struct SecretFile {
    dir: PathBuf,
    path: PathBuf,
}

impl SecretFile {
    fn create(name: &str, contents: &[u8]) -> Result<Self> {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| Error::Io {
            path: std::env::temp_dir(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("nfrepo-auth-{hex}"));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io(&dir))?;
        let file = Self {
            path: dir.join(name),
            dir,
        };
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file.path)
            .map_err(io(&file.path))?;
        out.write_all(contents).map_err(io(&file.path))?;
        Ok(file)
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        // Overwrite before unlinking, so the bytes do not linger in the page cache's file.
        if let Ok(meta) = std::fs::metadata(&self.path)
            && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&self.path)
        {
            let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
            let _ = f.write_all(&zeros);
        }
        if let Err(e) = std::fs::remove_file(&self.path).and_then(|()| std::fs::remove_dir(&self.dir)) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a client's password file");
        }
    }
}

/// A command for `program` whose environment holds none of nfrepo's
/// secrets, with `auth`'s path variables added. Its standard input is the
/// caller's to set, from [`ChildAuth::stdin_or`].
pub fn command(program: impl AsRef<OsStr>, auth: &ChildAuth) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for name in protected_vars_present() {
        command.env_remove(name);
    }
    if let Some(path) = auth.path() {
        for name in &auth.path_vars {
            command.env(name, path);
        }
    }
    command
}

/// [`command`] for tokio.
pub fn async_command(program: impl AsRef<OsStr>, auth: &ChildAuth) -> tokio::process::Command {
    tokio::process::Command::from(command(program, auth))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    // Issue 9, bug 4: children inherited NFREPO_PASSWORD and the S3 secret.
    #[test]
    fn children_get_no_secret() {
        let removed: Vec<_> = command("env", &ChildAuth::none())
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_owned())
            .collect();
        // Whatever protected variable this test process has is removed.
        for name in protected_vars_present() {
            assert!(removed.contains(&name), "{name:?} is inherited");
        }
    }

    // Issue 12, item 5: a tool's password is in a private file, never in its
    // environment, and the file goes when its last holder does.
    #[test]
    fn a_tool_password_is_a_private_file_named_by_path() {
        let auth = ChildAuth::file("pgpass", b"*:*:*:*:tool-pw\n")
            .unwrap()
            .path_in_env("PGPASSFILE");
        let path = auth.path().unwrap().to_owned();
        let dir = path.parent().unwrap().to_owned();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let out = command("env", &auth).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains("tool-pw"), "{text}");
        assert!(
            text.lines().any(|l| l == format!("PGPASSFILE={}", path.display())),
            "{text}"
        );

        let fed = ChildAuth::file("stdin", b"fed-pw\n").unwrap().fed_on_stdin();
        let out = command("cat", &fed)
            .stdin(fed.stdin_or(Stdio::null()).unwrap())
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"fed-pw\n");
        assert!(ChildAuth::none().path().is_none());

        let clone = auth.clone();
        drop(auth);
        assert!(path.exists(), "a clone still holds the file");
        drop(clone);
        assert!(
            !path.exists() && !dir.exists(),
            "the file and its directory are removed"
        );
    }
}
