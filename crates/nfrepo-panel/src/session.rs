//! Sessions: random ids in a cookie, a CSRF token each, idle and absolute
//! expiry, and the extractor handlers use to require one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use crate::state::Shared;

/// The session cookie. `__Host-` when served over TLS: the browser then
/// accepts it only with `Secure`, `Path=/` and no `Domain`.
pub(crate) const COOKIE_PLAIN: &str = "nfrepo_session";
pub(crate) const COOKIE_TLS: &str = "__Host-nfrepo_session";
/// The login form's own CSRF cookie (double submit: no session exists yet).
pub(crate) const LOGIN_COOKIE: &str = "nfrepo_login";
/// The header a JSON `POST` carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sessions kept at once; a login beyond it ends the least recently used.
const MAX_SESSIONS: usize = 1024;

/// 32 random bytes, hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // No randomness means no safe session: fail closed with an empty token
    // that `Sessions::get` never matches.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    hex::encode(bytes)
}

#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) csrf: String,
    created_ns: i64,
    last_ns: i64,
}

pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    idle_ns: i64,
    max_ns: i64,
}

impl Sessions {
    pub(crate) fn new(idle_ns: i64, max_ns: i64) -> Self {
        Self {
            by_id: Mutex::new(HashMap::new()),
            idle_ns,
            max_ns,
        }
    }

    /// A new session of `user`: its id (the cookie's value).
    pub(crate) fn create(&self, user: &str, now_ns: i64) -> Option<String> {
        let id = random_token();
        let csrf = random_token();
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let mut by_id = self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_id.retain(|_, s| self.alive(s, now_ns));
        if by_id.len() >= MAX_SESSIONS
            && let Some(oldest) = by_id.iter().min_by_key(|(_, s)| s.last_ns).map(|(k, _)| k.clone())
        {
            by_id.remove(&oldest);
        }
        by_id.insert(
            id.clone(),
            Session {
                user: user.to_owned(),
                csrf,
                created_ns: now_ns,
                last_ns: now_ns,
            },
        );
        Some(id)
    }

    fn alive(&self, session: &Session, now_ns: i64) -> bool {
        now_ns - session.last_ns < self.idle_ns && now_ns - session.created_ns < self.max_ns
    }

    /// The live session `id` names, touched.
    pub(crate) fn get(&self, id: &str, now_ns: i64) -> Option<Session> {
        if id.len() != 64 {
            return None;
        }
        let mut by_id = self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let alive = by_id.get(id).is_some_and(|s| self.alive(s, now_ns));
        if !alive {
            by_id.remove(id);
            return None;
        }
        let session = by_id.get_mut(id)?;
        session.last_ns = now_ns;
        Some(session.clone())
    }

    pub(crate) fn remove(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// The value of cookie `name` in `headers`.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for `name=value`: HttpOnly, SameSite=Strict,
/// Path=/, and Secure when served over TLS. `max_age_s` 0 deletes it.
pub(crate) fn set_cookie(name: &str, value: &str, secure: bool, max_age_s: u64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

/// Whether two tokens are equal, in constant time; an empty one never is.
pub(crate) fn tokens_match(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The live session the request's cookie names, with its id.
pub(crate) fn session_of(shared: &Shared, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers, shared.cookie_name())?;
    let session = shared.sessions.get(id, shared.clock.now_ns())?;
    Some((id.to_owned(), session))
}

/// Who is asking: a logged-in user (who may do everything), or the
/// read-only API token (`GET /api/*` and `/metrics` only).
#[derive(Clone, Debug)]
pub(crate) enum Principal {
    User { id: String, session: Session },
    ApiToken,
}

/// A request with a live session (or, for reads, the API token).
/// Without one: 401 for `/api/*`, `/metrics` and every `POST`; a redirect
/// to the login page for other `GET`s.
pub(crate) struct Authed(pub(crate) Principal);

impl Authed {
    /// The logged-in user and session, or the refusal a write gets from the API token.
    pub(crate) fn user(&self) -> Result<(&str, &Session), crate::reply::Refused> {
        match &self.0 {
            Principal::User { session, .. } => Ok((session.user.as_str(), session)),
            Principal::ApiToken => Err(Box::new(
                (StatusCode::FORBIDDEN, "the API token is read-only").into_response(),
            )),
        }
    }
}

impl FromRequestParts<Arc<Shared>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        if let Some((id, session)) = session_of(shared, &parts.headers) {
            return Ok(Self(Principal::User { id, session }));
        }
        let path = parts.uri.path();
        let api = path.starts_with("/api/") || path == "/metrics";
        if api
            && parts.method == axum::http::Method::GET
            && let Some(token) = &shared.api_token
            && token.admits(parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes()))
        {
            return Ok(Self(Principal::ApiToken));
        }
        if api || parts.method != axum::http::Method::GET {
            let mut response = (StatusCode::UNAUTHORIZED, "log in first").into_response();
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"nfrepo\""),
            );
            return Err(response);
        }
        Err(Redirect::to("/login").into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_at_their_maximum() {
        let sessions = Sessions::new(100, 1000);
        let id = sessions.create("alice", 0).expect("session");
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.get(&id, 99).expect("alive").user, "alice");
        assert!(sessions.get(&id, 198).is_some(), "touched at 99");
        assert!(sessions.get(&id, 298).is_none(), "idle for 100");
        let id = sessions.create("alice", 0).expect("session");
        for t in (90..1000).step_by(90) {
            assert!(sessions.get(&id, t).is_some());
        }
        assert!(sessions.get(&id, 1000).is_none(), "past the maximum");
    }

    #[test]
    fn cookies_are_parsed_and_set_strictly() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; nfrepo_session=abc; b=2".parse().expect("header"));
        assert_eq!(cookie(&headers, "nfrepo_session"), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        let set = set_cookie(COOKIE_TLS, "v", true, 60);
        assert_eq!(
            set,
            "__Host-nfrepo_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!tokens_match("", ""));
        assert!(tokens_match("ab", "ab"));
        assert!(!tokens_match("ab", "ac"));
    }
}
