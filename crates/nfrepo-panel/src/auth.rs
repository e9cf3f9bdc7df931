//! Who may log in: passwords (argon2 PHC strings), TOTP codes (RFC 6238,
//! each accepted once), and the lockout after repeated failures.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use totp_rs::Totp;
use zeroize::Zeroizing;

use crate::config::UserConfig;
use crate::error::{Error, Result};

/// TOTP period in seconds, and the steps accepted either side of now (RFC 6238's recommendation).
const TOTP_STEP: u64 = 30;
const TOTP_SKEW: u16 = 1;

/// Names whose failures are remembered at once; beyond, the oldest are forgotten.
const MAX_TRACKED_NAMES: usize = 10_000;

/// A user who may log in. `Debug` shows the name only.
pub struct User {
    name: String,
    password_hash: String,
    totp: Totp,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").field("name", &self.name).finish_non_exhaustive()
    }
}

impl User {
    /// A user from its PHC password hash and base32 TOTP secret.
    ///
    /// # Errors
    /// [`Error::User`] for a hash that is not an argon2 PHC string or a
    /// secret that is not base32 of at least 128 bits.
    pub fn new(name: impl Into<String>, password_hash: impl Into<String>, totp_secret_base32: &str) -> Result<Self> {
        let name = name.into();
        let password_hash = password_hash.into();
        let bad = |message: String| Error::User {
            name: name.clone(),
            message,
        };
        let parsed = argon2::PasswordHash::new(&password_hash)
            .map_err(|e| bad(format!("password_hash is not a PHC string: {e}")))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(bad(
                "password_hash is not an argon2 hash (use `nfrepo serve hash-password`)".into(),
            ));
        }
        let totp = build_totp(totp_secret_base32).map_err(bad)?;
        Ok(Self {
            name,
            password_hash,
            totp,
        })
    }

    /// A user from a `users` entry of `[serve]`; the secret file must be
    /// readable by its owner only.
    ///
    /// # Errors
    /// [`Error::User`] naming the file or the rule it breaks, never the secret.
    pub fn load(config: &UserConfig) -> Result<Self> {
        let secret = nfrepo_store::read_token_file(&config.totp_secret_file).map_err(|e| Error::User {
            name: config.name.clone(),
            message: e.to_string(),
        })?;
        Self::new(config.name.clone(), config.password_hash.clone(), &secret)
    }

    /// The login name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn password_matches(&self, password: &[u8]) -> bool {
        Argon2::default()
            .verify_password(password, self.password_hash.as_str())
            .is_ok()
    }

    /// The step `code` is valid for at `now_s`, if any.
    fn code_step(&self, code: &str, now_s: u64) -> Option<u64> {
        // totp-rs' check panics on nothing but digit counts it was built
        // with; it parses the code itself and refuses anything else.
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.totp.check(code, now_s)
    }
}

/// The argon2id PHC string of `password`, with a random salt and the
/// argon2 crate's default cost (19 MiB, 2 passes).
///
/// # Errors
/// [`Error::Hash`] if no random salt can be had.
pub fn hash_password(password: &[u8]) -> Result<String> {
    Argon2::default()
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// A new random TOTP secret, base32 (160 bits, as RFC 4226 recommends).
///
/// # Errors
/// [`Error::Hash`] if the system has no randomness to give.
pub fn new_totp_secret() -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; 20]);
    getrandom::fill(bytes.as_mut()).map_err(|e| Error::Hash(e.to_string()))?;
    Ok(Zeroizing::new(totp_rs::Secret::from(*bytes).to_base32()))
}

/// The code a TOTP secret gives at `unix_s` (tests and `totp-secret`'s check).
///
/// # Errors
/// [`Error::User`] for a secret that is not base32.
pub fn totp_code(secret_base32: &str, unix_s: u64) -> Result<String> {
    let totp = build_totp(secret_base32).map_err(|message| Error::User {
        name: String::new(),
        message,
    })?;
    Ok(totp.generate(unix_s).to_string())
}

/// Six digits every 30 seconds with HMAC-SHA1: what authenticator apps do.
fn build_totp(secret_base32: &str) -> std::result::Result<Totp, String> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32.trim().to_ascii_uppercase())
        .map_err(|_| "the TOTP secret is not base32".to_owned())?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_digits(6)
        .with_step_duration(TOTP_STEP)
        .with_skew(TOTP_SKEW)
        .build()
        .map_err(|e| format!("unusable TOTP secret: {e}"))
}

/// Why a login or an approval was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The name, password or code is wrong (which one is not said).
    Wrong,
    /// The code was right but already used: never accepted twice.
    CodeReused,
    /// Too many failures: no attempt is checked until `until_ns`.
    Locked { until_ns: i64 },
}

impl Refusal {
    /// The detail code sent with `PERMISSION_DENIED`.
    pub(crate) const fn detail(self) -> &'static str {
        match self {
            Self::Locked { .. } => "LOCKED_OUT",
            Self::CodeReused => "TOTP_REUSED",
            Self::Wrong => "WRONG_CREDENTIALS",
        }
    }

    /// The HTTP status of the refusal.
    pub(crate) const fn status(self) -> axum::http::StatusCode {
        match self {
            Self::Locked { .. } => axum::http::StatusCode::TOO_MANY_REQUESTS,
            Self::CodeReused | Self::Wrong => axum::http::StatusCode::UNAUTHORIZED,
        }
    }
}

#[derive(Default)]
struct Failures {
    count: u32,
    first_ns: i64,
    locked_until_ns: i64,
}

/// Lockout counters and the last TOTP step each user spent.
pub(crate) struct Guard {
    failures: Mutex<HashMap<String, Failures>>,
    spent: Mutex<HashMap<String, u64>>,
    /// Steps at or below this were valid before the server started: a code
    /// seen then is never accepted, so a restart opens no replay window.
    fence: u64,
    threshold: u32,
    window_ns: i64,
}

impl Guard {
    pub(crate) fn new(threshold: u32, window_ns: i64, started_ns: i64) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            spent: Mutex::new(HashMap::new()),
            fence: unix_s(started_ns) / TOTP_STEP,
            threshold,
            window_ns,
        }
    }

    /// `Locked` while `name` is locked out.
    pub(crate) fn check_locked(&self, name: &str, now_ns: i64) -> Result<(), Refusal> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match failures.get(name) {
            Some(f) if f.locked_until_ns > now_ns => Err(Refusal::Locked {
                until_ns: f.locked_until_ns,
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `name`; returns `true` when this one locks it.
    pub(crate) fn fail(&self, name: &str, now_ns: i64) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_NAMES && !failures.contains_key(name) {
            let window = self.window_ns;
            failures.retain(|_, f| f.locked_until_ns > now_ns || now_ns - f.first_ns < window);
            if failures.len() >= MAX_TRACKED_NAMES
                && let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.first_ns).map(|(k, _)| k.clone())
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(name.to_owned()).or_default();
        if now_ns - entry.first_ns >= self.window_ns {
            *entry = Failures {
                count: 0,
                first_ns: now_ns,
                locked_until_ns: entry.locked_until_ns,
            };
        }
        entry.count += 1;
        if entry.count >= self.threshold {
            entry.locked_until_ns = now_ns.saturating_add(self.window_ns);
            entry.count = 0;
            entry.first_ns = now_ns;
            return true;
        }
        false
    }

    /// Forgets the failures of `name` (after a successful login).
    pub(crate) fn succeed(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }

    /// Checks `code` for `user` at `now_ns` and spends its step: a code is
    /// accepted only for a step later than every step this user spent
    /// before (and than the server's start), so no code works twice.
    pub(crate) fn spend_code(&self, user: &User, code: &str, now_ns: i64) -> Result<(), Refusal> {
        let step = user.code_step(code.trim(), unix_s(now_ns)).ok_or(Refusal::Wrong)?;
        let mut spent = self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = spent.get(user.name()).copied().unwrap_or(self.fence).max(self.fence);
        if step <= last {
            return Err(Refusal::CodeReused);
        }
        spent.insert(user.name().to_owned(), step);
        Ok(())
    }
}

/// Checks a password, on a blocking thread (argon2 takes tens of
/// milliseconds and 19 MiB). For an unknown name a fixed hash is checked
/// instead, so the time taken does not tell which names exist.
pub(crate) async fn password_matches(user: Option<std::sync::Arc<User>>, password: Zeroizing<String>) -> bool {
    let checked = tokio::task::spawn_blocking(move || match user {
        Some(user) => user.password_matches(password.as_bytes()),
        None => {
            let _ = Argon2::default().verify_password(password.as_bytes(), DECOY_HASH);
            false
        }
    })
    .await;
    checked.unwrap_or(false)
}

/// The argon2id hash of nothing anyone types, at the default cost.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bmZyZXBvLWRlY295LXNhbHQ$7sVu4i+z3cbFzJ7yL3DqGm5hWvUeQnS2xKfT9aPdR0c";

pub(crate) fn unix_s(ns: i64) -> u64 {
    u64::try_from(ns / 1_000_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn user() -> User {
        let hash = hash_password(b"correct horse").expect("hash");
        User::new("alice", hash, SECRET).expect("user")
    }

    #[test]
    fn password_hash_verifies_only_its_password() {
        let user = user();
        assert!(user.password_matches(b"correct horse"));
        assert!(!user.password_matches(b"correct horsE"));
    }

    #[test]
    fn decoy_hash_parses() {
        assert!(argon2::PasswordHash::new(DECOY_HASH).is_ok());
    }

    #[test]
    fn refuses_a_hash_that_is_not_argon2_and_a_secret_that_is_not_base32() {
        let err = User::new("bob", "plain", SECRET).unwrap_err();
        assert!(err.to_string().contains("not a PHC string"), "{err}");
        let hash = hash_password(b"x").expect("hash");
        let err = User::new("bob", hash, "not base32 !").unwrap_err();
        assert!(err.to_string().contains("not base32"), "{err}");
    }

    #[test]
    fn a_code_is_accepted_once_and_never_from_before_the_start() {
        let user = user();
        let start = 1_700_000_000 * 1_000_000_000_i64;
        let guard = Guard::new(5, 900 * 1_000_000_000, start);
        let before = totp_code(SECRET, unix_s(start)).expect("code");
        assert_eq!(guard.spend_code(&user, &before, start), Err(Refusal::CodeReused));
        let later = start + 31 * 1_000_000_000;
        let code = totp_code(SECRET, unix_s(later)).expect("code");
        assert_eq!(guard.spend_code(&user, &code, later), Ok(()));
        assert_eq!(guard.spend_code(&user, &code, later), Err(Refusal::CodeReused));
        assert_eq!(guard.spend_code(&user, "000000x", later), Err(Refusal::Wrong));
        let next = later + 30 * 1_000_000_000;
        let code = totp_code(SECRET, unix_s(next)).expect("code");
        assert_eq!(guard.spend_code(&user, &code, next), Ok(()));
    }

    #[test]
    fn locks_after_the_threshold_until_the_window_ends() {
        let guard = Guard::new(3, 100, 0);
        assert!(!guard.fail("alice", 1));
        assert!(!guard.fail("alice", 2));
        assert_eq!(guard.check_locked("alice", 3), Ok(()));
        assert!(guard.fail("alice", 3));
        assert_eq!(guard.check_locked("alice", 50), Err(Refusal::Locked { until_ns: 103 }));
        assert_eq!(guard.check_locked("bob", 50), Ok(()));
        assert_eq!(guard.check_locked("alice", 103), Ok(()));
    }
}
