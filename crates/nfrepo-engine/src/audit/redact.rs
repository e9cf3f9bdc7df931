//! Removing secrets from a command line before it is logged.

/// Replaces what a command line may hold as a secret by `***`:
///
/// - the value of any option whose name says password, secret, token or
///   passphrase (`--password X`, `--s3-secret=X`), except `…-file` and
///   `…-env` options, whose values are paths and variable names;
/// - the password in any URL's user info (`mysql://u:PW@h/db`,
///   `s3://ID:SECRET@bucket`) and query parameters named like a secret
///   (`?secret_access_key=…`);
/// - `NAME=VALUE` words whose name says password, secret, token or key
///   (`PGPASSWORD=…`, `AWS_SECRET_ACCESS_KEY=…`);
/// - a mysql client's `-pPASSWORD`;
/// - anything `mask` finds (the caller's registry of known secret values,
///   such as the repository password and the S3 secret).
#[must_use]
pub fn redact_command_line(args: &[String], mask: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for arg in args {
        if hide_next {
            hide_next = false;
            out.push("***".to_owned());
            continue;
        }
        let mut word = mask(arg);
        if let Some(option) = word.strip_prefix("--") {
            match option.split_once('=') {
                Some((name, _)) if secret_option(name) => word = format!("--{name}=***"),
                None if secret_option(option) => hide_next = true,
                _ => {}
            }
        } else if let Some((name, _)) = word.split_once('=')
            && !name.contains("://")
            && secret_name(name)
        {
            word = format!("{name}=***");
        } else if word.len() > 2 && word.starts_with("-p") && !word.starts_with("--") && word.is_char_boundary(2) {
            word = "-p***".to_owned();
        }
        out.push(redact_urls(&word));
    }
    out
}

fn secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "passphrase",
        "_key",
        "-key",
        "credential",
    ]
    .iter()
    .any(|w| lower.contains(w))
        && !lower.ends_with("key_id")
}

fn secret_option(name: &str) -> bool {
    secret_name(name) && !name.ends_with("-file") && !name.ends_with("-env")
}

/// Masks URL passwords and secret-named query parameters anywhere in `text`.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        out.push_str(&redact_url(url));
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn redact_url(url: &str) -> String {
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, path) = url.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if secret_name(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => path.to_owned(),
    };
    format!("{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        redact_command_line(&args, &|s| s.replace("hunter2", "***"))
    }

    #[test]
    fn secrets_are_masked_and_the_rest_kept() {
        let out = redact(&[
            "nfrepo",
            "--repo",
            "s3://AKID:S3CRETKEY@bucket/p?endpoint=http://h:1&secret_access_key=S3CRETKEY&region=r",
            "restore",
            "db@latest",
            "--into",
            "mysql://root:DBPASS@127.0.0.1:3306/app",
            "--password",
            "PW1",
            "--db-password=PW2",
            "--password-file",
            "/etc/pw",
            "PGPASSWORD=PW3",
            "--",
            "mysqldump",
            "-pPW4",
            "typed-hunter2",
        ]);
        let joined = out.join(" ");
        for secret in ["S3CRETKEY", "DBPASS", "PW1", "PW2", "PW3", "PW4", "hunter2"] {
            assert!(!joined.contains(secret), "{secret} in {joined}");
        }
        assert!(joined.contains("mysql://root:***@127.0.0.1:3306/app"), "{joined}");
        assert!(joined.contains("endpoint=http://h:1"), "{joined}");
        assert!(joined.contains("region=r"), "{joined}");
        assert!(joined.contains("--password-file /etc/pw"), "{joined}");
        assert!(joined.contains("db@latest"), "{joined}");
    }
}
