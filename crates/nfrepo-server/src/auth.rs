//! Bearer-token authentication.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The token clients must present (`Authorization: Bearer <token>`).
///
/// Only its SHA-256 is kept, and a presented token is hashed and compared
/// to it in constant time, so neither the comparison's timing nor a memory
/// dump of the server gives the token away. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the token from `path`, which must be readable by its owner
    /// only, with at least [`nfrepo_store::MIN_TOKEN_LEN`] visible ASCII
    /// characters ([`nfrepo_store::read_token_file`]).
    ///
    /// # Errors
    /// [`Error::Token`] naming the file and the rule it breaks, never its contents.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = nfrepo_store::read_token_file(path).map_err(Error::Token)?;
        Ok(Self::from_secret(text.as_bytes()))
    }

    /// A token from its bytes (tests).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            digest: Sha256::digest(secret).into(),
        }
    }

    /// Whether an `Authorization` header value presents this token.
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(digest.ct_eq(&self.digest))
    }
}

/// Who may use the server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Auth {
    /// Requests must carry the token.
    Token(Token),
    /// Anyone who can connect (allowed only on a loopback address).
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_only_the_bearer_token() {
        let token = Token::from_secret(b"0123456789abcdef-secret");
        assert!(token.admits(Some(b"Bearer 0123456789abcdef-secret")));
        assert!(!token.admits(Some(b"Bearer 0123456789abcdef-secreT")));
        assert!(!token.admits(Some(b"Bearer 0123456789abcdef-secret ")));
        assert!(!token.admits(Some(b"Basic 0123456789abcdef-secret")));
        assert!(!token.admits(Some(b"0123456789abcdef-secret")));
        assert!(!token.admits(None));
        assert!(!format!("{token:?}").contains("secret"));
    }
}
