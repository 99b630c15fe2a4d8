//! Bearer-token authentication with a bounded cache of verified tokens.
//!
//! A token is fully verified (signature, algorithm, key, claims, time) the first time it is
//! seen; the resulting [`Identity`] is then reused for every call carrying the same token
//! until the token expires, so a busy peer costs one hash lookup per call instead of an
//! Ed25519 verification. Only successes are cached. The cache is sharded and bounded; when a
//! shard is full, expired entries are dropped first, then an arbitrary one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use pulsebeam_token::{Clock, KeySet, PeerPolicy, Verifier, VerifyError};

use crate::code::{CallError as TwirpError, Code};

const SHARDS: usize = 16;

/// Who is calling: the verified claims of a token.
#[derive(Debug)]
pub(crate) struct Identity {
    /// The project's configured id.
    pub(crate) project_id: Arc<str>,
    /// The token's `jti`, when it has one.
    pub(crate) token_id: Option<Arc<str>>,
    pub(crate) group: Arc<str>,
    pub(crate) peer: Arc<str>,
    pub(crate) policy: Option<PeerPolicy>,
    /// `exp`, Unix seconds.
    pub(crate) expires_at: u64,
    /// First second the token is refused (`exp` plus leeway), Unix seconds.
    pub(crate) valid_until: u64,
}

impl Identity {
    /// Whether the policy admits `(group, peer)`; no policy admits no one.
    pub(crate) fn allows(&self, group: &str, peer: &str) -> bool {
        self.policy.as_ref().is_some_and(|p| p.allows(group, peer))
    }
}

/// Why a call was not authenticated, for the metric label.
pub(crate) fn failure_kind(err: &AuthError) -> &'static str {
    match err {
        AuthError::MissingToken => "missing_token",
        AuthError::Token(e) => e.code(),
        AuthError::Revoked(_) => "revoked",
    }
}

/// An authentication failure.
#[derive(Debug)]
pub(crate) enum AuthError {
    MissingToken,
    Token(VerifyError),
    /// The token verifies but was revoked; the text says which revocation and until when.
    Revoked(String),
}

impl From<AuthError> for TwirpError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::MissingToken => TwirpError::new(
                Code::Unauthenticated,
                "missing bearer token; send `Authorization: Bearer <token>` with a token minted for this server's project",
            ),
            AuthError::Token(e) => TwirpError::new(Code::Unauthenticated, e.to_string()),
            AuthError::Revoked(why) => TwirpError::new(Code::Unauthenticated, why),
        }
    }
}

type Shard = Mutex<HashMap<Box<str>, Arc<Identity>>>;

pub(crate) struct Authenticator {
    verifier: Verifier,
    project_of_kid: HashMap<Box<str>, (u32, Arc<str>)>,
    clock: Arc<dyn Clock>,
    leeway_secs: u64,
    hasher: RandomState,
    shards: Box<[Shard]>,
    shard_capacity: usize,
}

impl Authenticator {
    /// One key set and id per project, in order.
    pub(crate) fn new(
        key_sets: &[KeySet],
        project_ids: &[Arc<str>],
        clock: Arc<dyn Clock>,
        leeway_secs: u64,
        cache_capacity: usize,
        max_lifetime_secs: Option<u64>,
    ) -> Self {
        let mut all = KeySet::new();
        let mut project_of_kid = HashMap::new();
        for (index, set) in key_sets.iter().enumerate() {
            let id = project_ids
                .get(index)
                .map_or_else(|| Arc::from(""), Arc::clone);
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            for (kid, key) in set.iter() {
                // Config validation already refused duplicate kids, so insert cannot fail.
                if all.insert(kid, *key).is_ok() {
                    project_of_kid.insert(Box::from(kid), (index, Arc::clone(&id)));
                }
            }
        }
        let mut verifier = Verifier::new(all).with_leeway(leeway_secs);
        if let Some(max) = max_lifetime_secs {
            verifier = verifier.with_max_lifetime(max);
        }
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Authenticator {
            verifier,
            project_of_kid,
            clock,
            leeway_secs,
            hasher: RandomState::new(),
            shards,
            shard_capacity: cache_capacity.div_ceil(SHARDS),
        }
    }

    /// Authenticates the value of an `Authorization` header.
    pub(crate) fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<Identity>, AuthError> {
        let token = header
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(bearer_token)
            .ok_or(AuthError::MissingToken)?;
        let now = self.clock.now_unix();
        let shard = self.shard(token);
        if let Some(shard) = shard {
            if let Ok(map) = shard.lock() {
                if let Some(identity) = map.get(token) {
                    if now < identity.valid_until {
                        return Ok(Arc::clone(identity));
                    }
                }
            }
        }
        let claims = self
            .verifier
            .verify_at(token, now)
            .map_err(AuthError::Token)?;
        let (_, project_id) = self
            .project_of_kid
            .get(claims.key_id())
            .cloned()
            .ok_or(AuthError::Token(VerifyError::UnknownKeyId))?;
        let identity = Arc::new(Identity {
            project_id,
            token_id: claims.token_id().map(Arc::from),
            group: Arc::from(claims.group_id()),
            peer: Arc::from(claims.peer_id()),
            policy: claims.allow_policy().cloned(),
            expires_at: claims.expires_at(),
            valid_until: claims.expires_at().saturating_add(self.leeway_secs),
        });
        if let Some(shard) = shard {
            if let Ok(mut map) = shard.lock() {
                if map.len() >= self.shard_capacity {
                    map.retain(|_, id| now < id.valid_until);
                }
                if map.len() >= self.shard_capacity {
                    if let Some(victim) = map.keys().next().cloned() {
                        map.remove(&victim);
                    }
                }
                // Another call may have inserted the same token meanwhile: keep the first.
                let entry = map
                    .entry(Box::from(token))
                    .or_insert_with(|| Arc::clone(&identity));
                return Ok(Arc::clone(entry));
            }
        }
        Ok(identity)
    }

    /// Number of cached tokens.
    pub(crate) fn cached(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// The shard of `token`; `None` only when caching is off.
    fn shard(&self, token: &str) -> Option<&Shard> {
        if self.shard_capacity == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(token);
        let index = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        self.shards.get(index)
    }
}

/// The `kid` a refused token names, for the audit trail: taken from its header without
/// verifying anything, cut to 64 characters, `None` when there is none to read.
pub(crate) fn claimed_kid(header: Option<&[u8]>) -> Option<String> {
    let token = header
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(bearer_token)?;
    let unverified = pulsebeam_token::dangerous::decode_unverified(token).ok()?;
    unverified.kid().map(|kid| kid.chars().take(64).collect())
}

/// The token of `Bearer <token>` (scheme case-insensitive), trimmed; `None` when absent.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsebeam_token::{AccessToken, KeyPair, PeerClaims};
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn bearer_scheme_is_parsed_strictly() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[tokio::test]
    async fn cached_tokens_still_expire() {
        let pair = KeyPair::generate().unwrap();
        let keys = KeySet::new()
            .with(pair.api_key(), pair.public_key())
            .unwrap();
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock_now = Arc::clone(&now);
        let clock: Arc<dyn Clock> = Arc::new(move || clock_now.load(Ordering::SeqCst));
        let auth = Authenticator::new(&[keys], &[Arc::from("p")], clock, 0, 100, None);
        let app = AccessToken::new(pair.api_key(), &pair.api_secret())
            .unwrap()
            .with_clock(pulsebeam_token::FixedClock(1_000_000));
        let claims = PeerClaims::new("g", "p")
            .unwrap()
            .with_allow_policy(PeerPolicy::allow_all());
        let token = app.create_token(&claims, 60).unwrap();
        let header = format!("Bearer {token}");

        let first = auth.authenticate(Some(header.as_bytes())).unwrap();
        let second = auth.authenticate(Some(header.as_bytes())).unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "second call must hit the cache"
        );
        assert_eq!(auth.cached(), 1);

        now.store(1_000_060, Ordering::SeqCst);
        let err = auth.authenticate(Some(header.as_bytes())).unwrap_err();
        assert_eq!(failure_kind(&err), "token_expired");
    }

    #[tokio::test]
    async fn cache_stays_bounded() {
        let pair = KeyPair::generate().unwrap();
        let keys = KeySet::new()
            .with(pair.api_key(), pair.public_key())
            .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(pulsebeam_token::FixedClock(1_000_000));
        let auth = Authenticator::new(&[keys], &[Arc::from("p")], clock, 0, 16, None);
        let app = AccessToken::new(pair.api_key(), &pair.api_secret())
            .unwrap()
            .with_clock(pulsebeam_token::FixedClock(1_000_000));
        for i in 0..200 {
            let claims = PeerClaims::new("g", &format!("p{i}")).unwrap();
            let claims = claims.with_allow_policy(PeerPolicy::allow_all());
            let token = app.create_token(&claims, 60).unwrap();
            auth.authenticate(Some(format!("Bearer {token}").as_bytes()))
                .unwrap();
        }
        assert!(auth.cached() <= 16, "{}", auth.cached());
    }
}
