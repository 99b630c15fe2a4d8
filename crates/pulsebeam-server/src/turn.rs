//! TURN REST API credentials, as coturn checks them with `use-auth-secret`.
//!
//! username = `<expiry unix seconds>:<opaque user>`,
//! credential = `base64(HMAC-SHA1(static-auth-secret, username))`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A time-limited TURN username and credential.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `<expiry>:<user>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
}

impl std::fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The credential for `user` valid until `expires_at` (Unix seconds).
pub fn turn_credential(secret: &str, user: &str, expires_at: u64) -> TurnCredential {
    let username = format!("{expires_at}:{user}");
    // HMAC takes keys of any length, so `new_from_slice` cannot fail for it.
    let credential = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    TurnCredential {
        username,
        credential,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independently_computed_credential() {
        // Python: base64(hmac.new(b"north-secret", b"1700003600:room1/alice", sha1).digest())
        let c = turn_credential("north-secret", "room1/alice", 1_700_003_600);
        assert_eq!(c.username, "1700003600:room1/alice");
        assert_eq!(c.credential, "H37zBXpYsnMkGI8GrpxGo8cnCJk=");
        assert!(!format!("{c:?}").contains(&c.credential));
    }
}
