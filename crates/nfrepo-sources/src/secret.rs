//! Secrets handed to database tools (passwords), kept out of logs.
//!
//! A [`Secret`] is zeroed when dropped and prints as `***` in `Debug`, so a
//! stray `{:?}` or tracing field cannot leak it. Tools receive secrets only
//! through their environment (`MYSQL_PWD`, `PGPASSWORD`, `REDISCLI_AUTH`),
//! never on the command line, where `ps` and the snapshot record would see them.
//!
//! The process also keeps one registry of what is secret in it: the names of
//! environment variables that hold nfrepo's own secrets ([`protect_env_var`],
//! on top of [`OWN_SECRET_VARS`]) and secret values that came from elsewhere
//! (a password file: [`protect_value`]). [`crate::child`] clears those
//! variables from every child process, and [`redact_secrets`] masks every
//! value (registered, or held by a protected variable) in a log line.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use zeroize::Zeroizing;

/// Variables that always hold nfrepo's own secrets (or point at them).
pub const OWN_SECRET_VARS: &[&str] = &[
    "NFREPO_PASSWORD",
    "NFREPO_PASSWORD_FILE",
    "NFREPO_NEW_PASSWORD",
    "NFREPO_NEW_PASSWORD_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Prefixes of variables that hold nfrepo's own secrets: the repository's
/// S3 credentials (`NFREPO_S3_ACCESS_KEY_ID`, `NFREPO_S3_SECRET_ACCESS_KEY`,
/// `NFREPO_S3_CREDENTIALS_FILE`).
pub const OWN_SECRET_PREFIXES: &[&str] = &["NFREPO_S3_"];

/// Variables the database tools read a password from. A child gets none of
/// them from our environment, only the one its own tool needs, set explicitly.
pub const TOOL_SECRET_VARS: &[&str] = &["MYSQL_PWD", "PGPASSWORD", "REDISCLI_AUTH"];

struct Registry {
    vars: BTreeSet<String>,
    values: Vec<Zeroizing<String>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    vars: BTreeSet::new(),
    values: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks the environment variable `name` as holding a secret of nfrepo's
/// (a configuration's `password_env`): no child process inherits it, and
/// its value never appears in a log line.
pub fn protect_env_var(name: &str) {
    registry().vars.insert(name.to_owned());
}

/// Marks `value` (read from a file) as secret: it never appears in a log line.
pub fn protect_value(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut registry = registry();
    if !registry.values.iter().any(|v| v.as_str() == value) {
        registry.values.push(Zeroizing::new(value.to_owned()));
    }
}

/// Whether a child process must not inherit the variable `name`.
#[must_use]
pub fn is_protected_var(name: &str) -> bool {
    protected_by(name, &registry().vars)
}

fn protected_by(name: &str, registered: &BTreeSet<String>) -> bool {
    OWN_SECRET_VARS.contains(&name)
        || TOOL_SECRET_VARS.contains(&name)
        || OWN_SECRET_PREFIXES.iter().any(|p| name.starts_with(p))
        || registered.contains(name)
}

/// Variables of our environment a child process must not inherit (a name
/// that is not UTF-8 is dropped too: it cannot be checked).
pub(crate) fn protected_vars_present() -> Vec<std::ffi::OsString> {
    let registry = registry();
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_str().is_none_or(|n| protected_by(n, &registry.vars)))
        .collect()
}

/// `text` with every known secret value replaced by `***`.
///
/// Known values: those given to [`protect_value`] and the current values of
/// every protected variable except the `*_FILE` ones (which name a path).
#[must_use]
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let mut values: Vec<Zeroizing<String>> = {
        let registry = registry();
        let mut values = registry.values.clone();
        for (name, value) in std::env::vars_os() {
            let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
                continue;
            };
            if !value.is_empty() && !name.ends_with("_FILE") && protected_by(name, &registry.vars) {
                values.push(Zeroizing::new(value.to_owned()));
            }
        }
        values
    };
    // Longest first, so a secret that contains another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = Cow::Borrowed(text);
    for value in &values {
        if out.contains(value.as_str()) {
            out = Cow::Owned(out.replace(value.as_str(), "***"));
        }
    }
    out
}

/// A password or token.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `value`.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret itself, for handing to a child process's environment.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 9, bug 4: a dependency's Debug output put the S3 secret in `-vv` logs.
    #[test]
    fn log_lines_never_show_a_protected_value() {
        protect_value("file-held-secret");
        protect_env_var("NFREPO_TEST_SECRET_UNSET_VAR");
        let line = "signing with key file-held-secret and more";
        assert_eq!(redact_secrets(line), "signing with key *** and more");
        assert_eq!(redact_secrets("nothing here"), "nothing here");
        assert!(is_protected_var("NFREPO_TEST_SECRET_UNSET_VAR"));
        assert!(is_protected_var("NFREPO_S3_SECRET_ACCESS_KEY"));
        assert!(is_protected_var("PGPASSWORD"));
        assert!(!is_protected_var("PATH"));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
