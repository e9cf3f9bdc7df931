//! Secrets handed to database tools (passwords), kept out of logs.
//!
//! A [`Secret`] is zeroed when dropped and prints as `***` in `Debug`, so a
//! stray `{:?}` or tracing field cannot leak it. Tools receive secrets only
//! through their environment (`MYSQL_PWD`, `PGPASSWORD`, `REDISCLI_AUTH`),
//! never on the command line, where `ps` and the snapshot record would see them.

use zeroize::Zeroizing;

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
    use super::Secret;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
