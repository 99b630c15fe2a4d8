//! TURN REST API credentials, as coturn checks them with `use-auth-secret`.
//!
//! username = `<expiry unix seconds>:<opaque user>`,
//! credential = `base64(HMAC-SHA1(static-auth-secret, username))`.
//!
//! The opaque user is [`turn_user`]: the peer's project, group and peer, so that coturn's
//! statistics, which name allocations by username, tell whose traffic they count
//! ([`project_of_turn_username`]).

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

/// The opaque user part of a TURN username: project, group and peer, joined by `/`, each with
/// every byte outside ASCII letters, digits and `-._` written as `~` and two hex digits. Not
/// `%`: coturn writes the username into its statistics channel names through a `printf`-style
/// format, where a `%` would be read as a conversion. The project comes first so TURN traffic
/// (which coturn reports by username) can be attributed to it.
pub(crate) fn turn_user(project: &str, group: &str, peer: &str) -> String {
    fn encode(out: &mut String, text: &str) {
        use std::fmt::Write as _;
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._".contains(&byte) {
                out.push(char::from(byte));
            } else {
                let _ = write!(out, "~{byte:02X}");
            }
        }
    }
    let mut out = String::with_capacity(project.len() + group.len() + peer.len() + 2);
    encode(&mut out, project);
    out.push('/');
    encode(&mut out, group);
    out.push('/');
    encode(&mut out, peer);
    out
}

/// The project of a TURN username made by [`turn_user`] (`<expiry>:<project>/<group>/<peer>`);
/// `None` for a username it cannot have made.
pub(crate) fn project_of_turn_username(username: &str) -> Option<String> {
    let (_, user) = username.split_once(':')?;
    let project = user.split('/').next()?;
    let bytes = project.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'~') => {
                let hex = project.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            Some(&b) => {
                out.push(b);
                i += 1;
            }
            None => break,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any ids give a username without `%` (which coturn would read as a format
        /// conversion), whose project reads back exactly.
        #[test]
        fn turn_usernames_never_hold_a_percent_and_name_their_project(
            project in "\\PC{1,64}",
            group in "\\PC{1,16}",
            peer in "\\PC{1,16}",
        ) {
            let username = format!("1796310368:{}", turn_user(&project, &group, &peer));
            prop_assert!(!username.contains('%'));
            prop_assert_eq!(username.matches('/').count(), 2);
            prop_assert_eq!(project_of_turn_username(&username), Some(project));
        }
    }

    #[test]
    fn usernames_it_cannot_have_made_name_no_project() {
        for bad in ["no-colon", "1:~4", "1:~ZZ/g/p", "1:~FF/g/p"] {
            assert_eq!(project_of_turn_username(bad), None, "{bad}");
        }
        assert_eq!(turn_user("a/b", "g~", "é"), "a~2Fb/g~7E/~C3~A9");
    }

    #[test]
    fn matches_an_independently_computed_credential() {
        // Python: base64(hmac.new(b"north-secret", b"1700003600:room1/alice", sha1).digest())
        let c = turn_credential("north-secret", "room1/alice", 1_700_003_600);
        assert_eq!(c.username, "1700003600:room1/alice");
        assert_eq!(c.credential, "H37zBXpYsnMkGI8GrpxGo8cnCJk=");
        assert!(!format!("{c:?}").contains(&c.credential));
    }
}
