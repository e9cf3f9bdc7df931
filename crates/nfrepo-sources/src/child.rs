//! Starting child processes without handing them nfrepo's secrets.
//!
//! Every process nfrepo starts (a `snapshot --command`, a source's
//! `pre_hook`/`post_hook`, `mysqldump`, `pg_dump`, `psql`, `mysql`,
//! `redis-cli`) is built by [`command`] (or [`async_command`]), which removes
//! from the inherited environment every variable [`crate::secret`] knows to
//! hold a secret: the repository password, S3 credentials, any variable a
//! configuration names in `password_env`, and the database tools' own
//! password variables. A tool that needs a password gets exactly its own
//! variable back through [`Env`]; a user's command gets none.
//!
//! Nothing else in the workspace may call `std::process::Command::new` or
//! `tokio::process::Command::new`.

use std::ffi::OsStr;

use crate::secret::{Secret, protected_vars_present};

/// Variables set on a child on purpose (a tool's own password variable).
pub type Env = [(String, Secret)];

/// A command for `program` whose environment holds none of nfrepo's
/// secrets, with `env` added.
pub fn command(program: impl AsRef<OsStr>, env: &Env) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for name in protected_vars_present() {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(k, v)| (k, v.expose())));
    command
}

/// [`command`] for tokio.
pub fn async_command(program: impl AsRef<OsStr>, env: &Env) -> tokio::process::Command {
    tokio::process::Command::from(command(program, env))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    // Issue 9, bug 4: children inherited NFREPO_PASSWORD and the S3 secret.
    #[test]
    fn children_get_no_secret_but_their_own() {
        let removed: Vec<_> = command("env", &[])
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_owned())
            .collect();
        // Whatever protected variable this test process has is removed.
        for name in protected_vars_present() {
            assert!(removed.contains(&name), "{name:?} is inherited");
        }
        crate::secret::protect_env_var("PATH_OF_NO_CONCERN_PROTECTED");
        let env = [("PGPASSWORD".to_owned(), Secret::new("tool-pw".into()))];
        let out = command("env", &env).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.lines().any(|l| l == "PGPASSWORD=tool-pw"), "{text}");
        assert!(!text.contains("MYSQL_PWD="), "{text}");
    }
}
