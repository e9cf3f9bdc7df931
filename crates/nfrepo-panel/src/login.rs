//! The two checks a person passes: a login (name, password and TOTP code
//! together) and an approval (a fresh code from a logged-in user, for a
//! restore or a download). Pages and the JSON API word their refusals in
//! their own form; the lockout counting, the access log and the audit
//! entry of a lockout happen here, once.

use std::net::SocketAddr;

use nfrepo_engine::AuditEvent;
use zeroize::Zeroizing;

use crate::auth::Refusal;
use crate::state::Shared;

impl Shared {
    /// Checks `name`'s password and `code` and spends the code. Every
    /// failure counts towards the name's lockout; the failure that locks it
    /// is written to the audit log as `PERMISSION_DENIED/LOCKED_OUT`.
    pub(crate) async fn log_in(
        &self,
        name: &str,
        password: Zeroizing<String>,
        code: &str,
        peer: SocketAddr,
    ) -> Result<(), Refusal> {
        let now = self.clock.now_ns();
        if let Err(Refusal::Locked { until_ns }) = self.guard.check_locked(name, now) {
            tracing::info!(target: crate::ACCESS_LOG, %peer, user = name, "login refused: locked out");
            return Err(Refusal::Locked { until_ns });
        }
        let user = self.users.get(name).cloned();
        let checked = match self.password_checks.acquire().await {
            Ok(_permit) => crate::auth::password_matches(user.clone(), password).await,
            Err(_) => false,
        };
        let outcome = match (&user, checked) {
            (Some(user), true) => self.guard.spend_code(user, code, now),
            _ => Err(Refusal::Wrong),
        };
        match outcome {
            Ok(()) => {
                self.guard.succeed(name);
                tracing::info!(target: crate::ACCESS_LOG, %peer, user = name, "logged in");
                Ok(())
            }
            Err(refusal) => {
                self.failed(name, "login", &refusal, peer, now).await;
                Err(refusal)
            }
        }
    }

    /// Spends a fresh `code` of the logged-in `user` as the approval of
    /// `what` (a restore or a download). Wrong codes count towards the
    /// lockout as failed logins do, and a locked name may not guess codes
    /// through its session either.
    pub(crate) async fn approve(&self, user: &str, code: &str, what: &str, peer: SocketAddr) -> Result<(), Refusal> {
        let now = self.clock.now_ns();
        if let Err(Refusal::Locked { until_ns }) = self.guard.check_locked(user, now) {
            return Err(Refusal::Locked { until_ns });
        }
        let outcome = match self.users.get(user) {
            Some(account) => self.guard.spend_code(account, code, now),
            None => Err(Refusal::Wrong),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(refusal) => {
                self.failed(user, what, &refusal, peer, now).await;
                Err(refusal)
            }
        }
    }

    /// Counts a failure; logs it, and audits the lockout it may cause.
    async fn failed(&self, name: &str, what: &str, refusal: &Refusal, peer: SocketAddr, now: i64) {
        let locked = self.guard.fail(name, now);
        tracing::info!(target: crate::ACCESS_LOG, %peer, user = name, reason = ?refusal, locked, "{what} refused");
        if locked {
            let mut event = AuditEvent::new("serve login", vec!["nfrepo".into(), "serve".into(), "login".into()]);
            event.code = "PERMISSION_DENIED".into();
            event.detail = "LOCKED_OUT".into();
            event.exit_code = 16;
            event.message = format!(
                "{name:?} locked after repeated failures ({what}), last from {}",
                peer.ip()
            );
            self.audit(event).await;
        }
    }
}
