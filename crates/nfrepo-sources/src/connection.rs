//! Database and Redis connection URLs: `mysql://user@host:port/db`,
//! `postgres://user@host:port/db`, `redis://host:port`.
//!
//! A password in the URL is refused: it would end up in shell history,
//! `ps` output and the snapshot record. Passwords come separately as a
//! [`Secret`] (from the environment or a file).

use crate::{Error, Result, Secret};

/// Where a database server is, and as whom to connect.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `mysql`, `postgres` or `redis`.
    pub scheme: String,
    /// The user, if given.
    pub user: Option<String>,
    /// Host name or address.
    pub host: String,
    /// Port, if given (else the tool's default).
    pub port: Option<u16>,
    /// The database named in the path, if any.
    pub database: Option<String>,
    /// A Unix socket (`?socket=/path`), used instead of TCP when given.
    pub socket: Option<String>,
    /// The password, handed to tools through their environment.
    pub password: Option<Secret>,
}

impl Connection {
    /// Parses a connection URL. `postgresql://` is taken as `postgres://`,
    /// `mariadb://` as `mysql://`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed URL, an unknown scheme, or a
    /// password in the URL (the message never repeats the URL).
    pub fn parse(text: &str) -> Result<Self> {
        let url = url::Url::parse(text)
            .map_err(|e| Error::Invalid(format!("bad connection URL: {e} (expected scheme://user@host:port/db)")))?;
        if url.password().is_some() {
            return Err(Error::Invalid(
                "connection URL holds a password: give it through password_env or password_file instead".into(),
            ));
        }
        let scheme = match url.scheme() {
            "mysql" | "mariadb" => "mysql",
            "postgres" | "postgresql" => "postgres",
            "redis" => "redis",
            other => {
                return Err(Error::Invalid(format!(
                    "unknown connection scheme {other:?} (mysql, postgres or redis)"
                )));
            }
        };
        let host = url.host_str().unwrap_or("").to_owned();
        let socket = url
            .query_pairs()
            .find(|(k, _)| k == "socket")
            .map(|(_, v)| v.into_owned());
        if host.is_empty() && socket.is_none() {
            return Err(Error::Invalid("connection URL names no host".into()));
        }
        let user = (!url.username().is_empty()).then(|| url.username().to_owned());
        let database = url.path().trim_matches('/');
        let database = (!database.is_empty()).then(|| database.to_owned());
        if let Some(db) = &database {
            check_database_name(db)?;
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            user,
            host: if host.is_empty() { "localhost".into() } else { host },
            port: url.port(),
            database,
            socket,
            password: None,
        })
    }

    /// The same connection with `password`.
    #[must_use]
    pub fn with_password(mut self, password: Option<Secret>) -> Self {
        self.password = password;
        self
    }
}

impl std::fmt::Display for Connection {
    /// The URL without any secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(db) = &self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

/// Database names end up in SQL statements and file names: keep them to a
/// safe set rather than quoting for every dialect.
pub(crate) fn check_database_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "database name {name:?} is not supported (letters, digits, _, - and $ only)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::Connection;

    #[test]
    fn parses_and_prints_without_secrets() {
        let c = Connection::parse("mysql://backup@127.0.0.1:13306/app").unwrap();
        assert_eq!(c.scheme, "mysql");
        assert_eq!(c.user.as_deref(), Some("backup"));
        assert_eq!(c.port, Some(13306));
        assert_eq!(c.database.as_deref(), Some("app"));
        assert_eq!(c.to_string(), "mysql://backup@127.0.0.1:13306/app");
        let c = Connection::parse("postgresql://postgres@localhost").unwrap();
        assert_eq!((c.scheme.as_str(), c.database), ("postgres", None));
    }

    #[test]
    fn refuses_passwords_and_odd_names_without_echoing_them() {
        let err = Connection::parse("mysql://u:hunter2@h/db").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(Connection::parse("mysql://u@h/a;drop").is_err());
        assert!(Connection::parse("ftp://h/x").is_err());
    }
}
