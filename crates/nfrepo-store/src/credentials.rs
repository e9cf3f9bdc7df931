//! S3 credentials, looked up only where we say: never `~/.aws`, never instance metadata.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

/// The environment variables [`Credentials::from_env`] reads, in order of precedence.
pub const NFREPO_ACCESS_KEY_ID: &str = "NFREPO_S3_ACCESS_KEY_ID";
/// See [`NFREPO_ACCESS_KEY_ID`].
pub const NFREPO_SECRET_ACCESS_KEY: &str = "NFREPO_S3_SECRET_ACCESS_KEY";
/// A file of two lines: the access key id, then the secret.
pub const NFREPO_CREDENTIALS_FILE: &str = "NFREPO_S3_CREDENTIALS_FILE";
const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// S3 access credentials.
///
/// The secret and session token are zeroized on drop and `Debug` prints
/// `<redacted>` in their place; the access key id is not secret and is shown.
/// Local and in-memory stores ignore credentials, so [`Credentials::none`] is fine for them.
#[derive(Clone, Default)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl Credentials {
    /// Static credentials.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: None,
        }
    }

    /// No credentials: enough for `file://` and `memory://`; `open` refuses S3 with them.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds a temporary session token (`AWS_SESSION_TOKEN`).
    #[must_use]
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Zeroizing::new(token.into()));
        self
    }

    /// Looks credentials up in this order, taking the first source that is set:
    /// 1. `NFREPO_S3_ACCESS_KEY_ID` and `NFREPO_S3_SECRET_ACCESS_KEY`;
    /// 2. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, with `AWS_SESSION_TOKEN` if set;
    /// 3. the file named by `NFREPO_S3_CREDENTIALS_FILE`: the key id on the first line,
    ///    the secret on the second.
    ///
    /// Nothing set gives [`Credentials::none`]. AWS config files and instance metadata
    /// are never consulted.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Credentials`] if only half of a variable pair is set, or the
    /// credentials file can't be read or doesn't hold exactly two non-empty lines.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok(), |path| std::fs::read_to_string(path))
    }

    /// [`Credentials::from_env`] over injectable variable and file lookups.
    fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        if let Some(creds) = pair(&var, NFREPO_ACCESS_KEY_ID, NFREPO_SECRET_ACCESS_KEY)? {
            return Ok(creds);
        }
        if let Some(creds) = pair(&var, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)? {
            return Ok(match var(AWS_SESSION_TOKEN) {
                Some(token) => creds.with_session_token(token),
                None => creds,
            });
        }
        match var(NFREPO_CREDENTIALS_FILE) {
            Some(path) => read_pair_file(Path::new(&path), read_file),
            None => Ok(Self::none()),
        }
    }

    /// The credentials in the file at `path`, as `NFREPO_S3_CREDENTIALS_FILE`
    /// names it for [`Credentials::from_env`]: the key id on the first
    /// non-empty line, the secret on the second.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Credentials`] if the file can't be read or doesn't hold
    /// exactly two non-empty lines.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_pair_file(path, |path| std::fs::read_to_string(path))
    }

    /// Whether no access key is set.
    pub fn is_empty(&self) -> bool {
        self.access_key_id.is_empty()
    }

    /// The access key id (not a secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub(crate) fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    pub(crate) fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref().map(String::as_str)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn pair(var: &impl Fn(&str) -> Option<String>, id_name: &str, secret_name: &str) -> Result<Option<Credentials>> {
    match (var(id_name), var(secret_name)) {
        (Some(id), Some(secret)) => Ok(Some(Credentials::new(id, secret))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::new(
            ErrorKind::Credentials,
            format!("{id_name} is set but {secret_name} is not"),
        )),
        (None, Some(_)) => Err(Error::new(
            ErrorKind::Credentials,
            format!("{secret_name} is set but {id_name} is not"),
        )),
    }
}

fn read_pair_file(path: &Path, read_file: impl Fn(&Path) -> std::io::Result<String>) -> Result<Credentials> {
    let contents = Zeroizing::new(read_file(path).map_err(|e| {
        Error::new(
            ErrorKind::Credentials,
            format!("cannot read credentials file {}: {e}", path.display()),
        )
        .with_source(e)
    })?);
    let mut lines = contents.lines().map(str::trim).filter(|line| !line.is_empty());
    match (lines.next(), lines.next(), lines.next()) {
        (Some(id), Some(secret), None) => Ok(Credentials::new(id, secret)),
        _ => Err(Error::new(
            ErrorKind::Credentials,
            format!(
                "credentials file {} must hold two lines: the access key id, then the secret",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)], file: Option<&str>) -> Result<Credentials> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Credentials::from_lookup(
            |name| vars.get(name).cloned(),
            |_| {
                file.map(str::to_owned)
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            },
        )
    }

    #[test]
    fn precedence() {
        let all = [
            ("NFREPO_S3_ACCESS_KEY_ID", "nf-id"),
            ("NFREPO_S3_SECRET_ACCESS_KEY", "nf-secret"),
            ("AWS_ACCESS_KEY_ID", "aws-id"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
            ("AWS_SESSION_TOKEN", "aws-token"),
            ("NFREPO_S3_CREDENTIALS_FILE", "/creds"),
        ];
        let c = lookup(&all, Some("file-id\nfile-secret\n")).unwrap();
        assert_eq!((c.access_key_id(), c.secret_access_key()), ("nf-id", "nf-secret"));
        assert_eq!(c.session_token(), None);

        let c = lookup(&all[2..], Some("file-id\nfile-secret\n")).unwrap();
        assert_eq!((c.access_key_id(), c.secret_access_key()), ("aws-id", "aws-secret"));
        assert_eq!(c.session_token(), Some("aws-token"));

        let c = lookup(&all[5..], Some("  file-id \r\n\nfile-secret\n\n")).unwrap();
        assert_eq!((c.access_key_id(), c.secret_access_key()), ("file-id", "file-secret"));

        assert!(lookup(&[], None).unwrap().is_empty());
    }

    #[test]
    fn incomplete_sources_fail() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: [Case; 4] = [
            (&[("NFREPO_S3_ACCESS_KEY_ID", "id")], None),
            (&[("AWS_SECRET_ACCESS_KEY", "s")], None),
            (&[("NFREPO_S3_CREDENTIALS_FILE", "/missing")], None),
            (&[("NFREPO_S3_CREDENTIALS_FILE", "/creds")], Some("only-one-line\n")),
        ];
        for (vars, file) in cases {
            let err = lookup(vars, file).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Credentials, "{vars:?}");
        }
        let err = lookup(&[("NFREPO_S3_CREDENTIALS_FILE", "/creds")], Some("id\nsecret\nextra")).unwrap_err();
        assert!(!err.to_string().contains("secret\n"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI").with_session_token("tok3n");
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(!shown.contains("tok3n"));
    }
}
