//! Verification: strict, bounded, and typed.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::claims::PeerClaims;
use crate::clock::{Clock, ClockDebug, DynClock, SystemClock};
use crate::error::{Claim, Field, TokenPart, ValueError, VerifyError};
use crate::keys::{KeySet, PublicKey};
use crate::policy::PeerPolicy;
use crate::value::check_key_id;

/// The default largest token accepted, in bytes. Ours are about 270 bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 4096;
/// The default clock skew tolerated on `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Length of an Ed25519 signature in base64url without padding.
const SIGNATURE_B64_LEN: usize = 86;

/// The claims of a token whose signature, algorithm, key and time checks all passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    key_id: String,
    peer: PeerClaims,
    expires_at: u64,
    issued_at: Option<u64>,
    not_before: Option<u64>,
    token_id: Option<String>,
}

impl VerifiedClaims {
    /// The `kid` of the key that signed the token.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The peer's identity and policy.
    pub fn peer(&self) -> &PeerClaims {
        &self.peer
    }

    /// The group id (`gid`).
    pub fn group_id(&self) -> &str {
        self.peer.group_id()
    }

    /// The peer id (`pid`).
    pub fn peer_id(&self) -> &str {
        self.peer.peer_id()
    }

    /// The allow policy (`ap`); `None` when the token's `ap` is `null`.
    pub fn allow_policy(&self) -> Option<&PeerPolicy> {
        self.peer.allow_policy()
    }

    /// `exp`, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// `iat`, when present.
    pub fn issued_at(&self) -> Option<u64> {
        self.issued_at
    }

    /// `nbf`, when present.
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }

    /// `jti`, when present.
    pub fn token_id(&self) -> Option<&str> {
        self.token_id.as_deref()
    }
}

/// Verifies tokens against a [`KeySet`].
///
/// Checks, in order: length bound; three base64url segments; header JSON with `alg` exactly
/// `EdDSA` and a known `kid`; strict Ed25519 signature; then the claims (`exp` required, `nbf`
/// honoured, ids and patterns valid, unknown claims ignored, no member name twice) and, when a
/// maximum lifetime is set, how far ahead `exp` lies.
#[derive(Clone)]
pub struct Verifier {
    keys: KeySet,
    leeway_secs: u64,
    max_token_len: usize,
    max_lifetime_secs: Option<u64>,
    clock: DynClock,
}

impl Verifier {
    /// A verifier for `keys` with the default leeway and size bound and the system clock.
    pub fn new(keys: KeySet) -> Self {
        Verifier {
            keys,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            max_lifetime_secs: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the clock skew tolerated on `exp` and `nbf`.
    #[must_use]
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Sets the largest token accepted, in bytes.
    #[must_use]
    pub fn with_max_token_len(mut self, bytes: usize) -> Self {
        self.max_token_len = bytes;
        self
    }

    /// Refuses tokens whose `exp` lies more than `secs` (plus the leeway) ahead of the current
    /// time, with [`VerifyError::LifetimeTooLong`]. Tokens cannot be revoked, so this bounds how
    /// long a leaked token stays usable, whatever lifetime it was minted with. No cap by default:
    /// the original SDK minted tokens with any `exp`.
    #[must_use]
    pub fn with_max_lifetime(mut self, secs: u64) -> Self {
        self.max_lifetime_secs = Some(secs);
        self
    }

    /// Replaces the clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The key set.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The leeway in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// The maximum lifetime in seconds, if one is set.
    pub fn max_lifetime_secs(&self) -> Option<u64> {
        self.max_lifetime_secs
    }

    /// Verifies `token` at the clock's current time.
    ///
    /// # Errors
    ///
    /// A [`VerifyError`] saying why the token is rejected.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, VerifyError> {
        self.verify_at(token, self.clock.now_unix())
    }

    /// Verifies `token` as if the time were `now_unix`.
    ///
    /// # Errors
    ///
    /// As [`Verifier::verify`].
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<VerifiedClaims, VerifyError> {
        self.verify_with_check(token, now_unix, |_, key, message, signature| {
            Ok(key.verify_strict(message, signature))
        })
    }

    /// Opens the door to options that weaken verification when misused (rustls's
    /// `dangerous()`): a signature check supplied from outside the crate.
    pub fn dangerous(&self) -> dangerous::DangerousVerifier<'_> {
        dangerous::DangerousVerifier { verifier: self }
    }

    /// The whole pipeline, with the signature step given by `check(kid, key, signing input,
    /// signature)`: `Ok(false)` is an invalid signature, `Err` stops verification with that error.
    fn verify_with_check<E: From<VerifyError>>(
        &self,
        token: &str,
        now_unix: u64,
        mut check: impl FnMut(&str, &PublicKey, &[u8], &[u8; 64]) -> Result<bool, E>,
    ) -> Result<VerifiedClaims, E> {
        let parts = split(token, self.max_token_len)?;
        // The tokens of one issuer share their header, written by this crate: found as text,
        // it need not be decoded, and decoding it would give the same kid.
        let (kid, key) = match self.keys.by_header(parts.header) {
            Some((kid, key)) => (kid.to_owned(), key),
            None => {
                let kid = parse_header(parts.header)?
                    .kid
                    .ok_or(VerifyError::MissingKeyId)?;
                let key = self.keys.get(&kid).ok_or(VerifyError::UnknownKeyId)?;
                (kid, key)
            }
        };
        let signature = decode_signature(parts.signature)?;
        if !check(&kid, key, parts.signing_input.as_bytes(), &signature)? {
            return Err(VerifyError::InvalidSignature.into());
        }
        self.check_claims(parts.payload, kid, now_unix)
            .map_err(E::from)
    }

    /// The steps after the signature: the claims, then the time and lifetime rules.
    fn check_claims(
        &self,
        payload: &str,
        kid: String,
        now_unix: u64,
    ) -> Result<VerifiedClaims, VerifyError> {
        let payload = decode_b64(payload, TokenPart::Payload)?;
        let claims = parse_claims(&payload, kid)?;
        if now_unix >= claims.expires_at.saturating_add(self.leeway_secs) {
            return Err(VerifyError::Expired {
                exp: claims.expires_at,
                now: now_unix,
            });
        }
        if let Some(nbf) = claims.not_before {
            if now_unix.saturating_add(self.leeway_secs) < nbf {
                return Err(VerifyError::NotYetValid { nbf, now: now_unix });
            }
        }
        if let Some(max_lifetime) = self.max_lifetime_secs {
            let max_exp = now_unix
                .saturating_add(max_lifetime)
                .saturating_add(self.leeway_secs);
            if claims.expires_at > max_exp {
                return Err(VerifyError::LifetimeTooLong {
                    exp: claims.expires_at,
                    max_exp,
                });
            }
        }
        Ok(claims)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("leeway_secs", &self.leeway_secs)
            .field("max_token_len", &self.max_token_len)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .field("clock", &ClockDebug)
            .finish()
    }
}

struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    signing_input: &'a str,
}

fn split(token: &str, max_len: usize) -> Result<Parts<'_>, VerifyError> {
    if token.len() > max_len {
        return Err(VerifyError::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    let malformed = || {
        VerifyError::malformed(
            TokenPart::Token,
            "expected three base64url segments separated by `.`",
        )
    };
    let (signing_input, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or_else(malformed)?;
    if payload.contains('.') {
        return Err(malformed());
    }
    Ok(Parts {
        header,
        payload,
        signature,
        signing_input,
    })
}

fn decode_b64(segment: &str, part: TokenPart) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::malformed(part, "not canonical base64url without padding"))
}

fn decode_signature(segment: &str) -> Result<[u8; 64], VerifyError> {
    if segment.len() != SIGNATURE_B64_LEN {
        return Err(VerifyError::malformed(
            TokenPart::Signature,
            "an Ed25519 signature is 64 bytes (86 base64url characters)",
        ));
    }
    let mut signature = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(segment, &mut signature) {
        Ok(64) => Ok(signature),
        _ => Err(VerifyError::malformed(
            TokenPart::Signature,
            "not canonical base64url without padding",
        )),
    }
}

/// The header members the verifier reads; others are skipped unread.
#[derive(Default)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: bool,
}

impl Members for RawHeader {
    fn read<'de, A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "alg" => self.alg = Some(map.next_value()?),
            "kid" => self.kid = Some(map.next_value()?),
            "crit" => {
                map.next_value::<IgnoredAny>()?;
                self.crit = true;
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

pub(crate) struct Header {
    pub(crate) kid: Option<String>,
}

/// JSON text must be UTF-8 (RFC 8259); serde_json checks that only in the members it reads, so
/// the whole text is checked first, including unknown members it would skip.
fn json_text(bytes: &[u8], part: TokenPart) -> Result<&str, VerifyError> {
    std::str::from_utf8(bytes)
        .map_err(|_| VerifyError::malformed(part, "JSON text is not valid UTF-8"))
}

fn json_error(part: TokenPart, e: &serde_json::Error) -> VerifyError {
    use serde_json::error::Category;
    VerifyError::malformed(
        part,
        match e.classify() {
            Category::Data => "a member is duplicated or of the wrong type",
            Category::Syntax | Category::Eof | Category::Io => "not a valid JSON object",
        },
    )
}

fn parse_header(segment: &str) -> Result<Header, VerifyError> {
    let bytes = decode_b64(segment, TokenPart::Header)?;
    let raw: RawHeader = serde_json::from_str(json_text(&bytes, TokenPart::Header)?)
        .map_err(|e| json_error(TokenPart::Header, &e))?;
    if raw.crit {
        return Err(VerifyError::malformed(
            TokenPart::Header,
            "`crit` extensions are not supported",
        ));
    }
    match raw.alg {
        Some(Value::String(alg)) if alg == "EdDSA" => {}
        _ => return Err(VerifyError::UnsupportedAlgorithm),
    }
    let kid = match raw.kid {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid),
        Some(_) => {
            return Err(VerifyError::malformed(
                TokenPart::Header,
                "`kid` must be a string",
            ))
        }
    };
    Ok(Header { kid })
}

/// The claims the verifier reads; others are skipped unread.
#[derive(Default)]
struct RawClaims {
    exp: Option<Value>,
    gid: Option<Value>,
    pid: Option<Value>,
    ap: Option<RawPolicy>,
    iat: Option<Value>,
    nbf: Option<Value>,
    jti: Option<Value>,
}

impl Members for RawClaims {
    fn read<'de, A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "exp" => self.exp = Some(map.next_value()?),
            "gid" => self.gid = Some(map.next_value()?),
            "pid" => self.pid = Some(map.next_value()?),
            "ap" => self.ap = Some(map.next_value()?),
            "iat" => self.iat = Some(map.next_value()?),
            "nbf" => self.nbf = Some(map.next_value()?),
            "jti" => self.jti = Some(map.next_value()?),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `ap` claim as written: `null`, an object (whose members the verifier reads, refusing
/// duplicates as everywhere else), or a value of another type.
enum RawPolicy {
    Null,
    Object {
        group_id: Option<Value>,
        peer_id: Option<Value>,
    },
    Other,
}

#[derive(Default)]
struct RawPolicyMembers {
    group_id: Option<Value>,
    peer_id: Option<Value>,
}

impl Members for RawPolicyMembers {
    fn read<'de, A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "group_id" => self.group_id = Some(map.next_value()?),
            "peer_id" => self.peer_id = Some(map.next_value()?),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for RawPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PolicyVisitor)
    }
}

struct PolicyVisitor;

impl<'de> Visitor<'de> for PolicyVisitor {
    type Value = RawPolicy;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or an allow policy object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawPolicy, E> {
        Ok(RawPolicy::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPolicy, A::Error> {
        let members = MembersVisitor::<RawPolicyMembers>::new().visit_map(map)?;
        Ok(RawPolicy::Object {
            group_id: members.group_id,
            peer_id: members.peer_id,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawPolicy, A::Error> {
        // Read as JSON values, so that nesting in a known claim meets serde_json's depth limit.
        while seq.next_element::<Value>()?.is_some() {}
        Ok(RawPolicy::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawPolicy, E> {
        Ok(RawPolicy::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawPolicy, E> {
        Ok(RawPolicy::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawPolicy, E> {
        Ok(RawPolicy::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawPolicy, E> {
        Ok(RawPolicy::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawPolicy, E> {
        Ok(RawPolicy::Other)
    }
}

/// A JSON object read member by member: each member the type knows is stored, the others are
/// skipped unread.
trait Members: Default {
    /// Reads the value of the member `name`.
    fn read<'de, A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error>;
}

/// Reads a JSON object into a [`Members`] type, refusing a member name that appears twice.
/// RFC 7515 and RFC 7519 (section 4 of each) allow either refusing or keeping the last; keeping
/// one silently would let two readers of the same token disagree on what it says. Names are
/// compared after unescaping, so `"p\u0069d"` and `"pid"` are the same name.
struct MembersVisitor<T>(PhantomData<T>);

impl<T> MembersVisitor<T> {
    fn new() -> Self {
        MembersVisitor(PhantomData)
    }
}

impl<'de, T: Members> Visitor<'de> for MembersVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut raw = T::default();
        // The token length bounds the number of members, so this set stays small.
        let mut seen = BTreeSet::new();
        while let Some(MemberName(name)) = map.next_key()? {
            if seen.contains(&name) {
                return Err(de::Error::custom("duplicate member"));
            }
            raw.read(&name, &mut map)?;
            seen.insert(name);
        }
        Ok(raw)
    }
}

/// A member name, borrowed from the JSON text unless it has escapes (then unescaped): names
/// are compared on every member, and most need no copy.
struct MemberName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(MemberNameVisitor)
    }
}

struct MemberNameVisitor;

impl<'de> Visitor<'de> for MemberNameVisitor {
    type Value = MemberName<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(MemberName(Cow::Borrowed(name)))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(MemberName(Cow::Owned(name.to_owned())))
    }

    fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
        Ok(MemberName(Cow::Owned(name)))
    }
}

/// `Deserialize` for a [`Members`] type: a JSON object, duplicates refused.
macro_rules! deserialize_members {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(MembersVisitor::<$ty>::new())
            }
        }
    )*};
}

deserialize_members!(RawHeader, RawClaims);

fn time_claim(value: Option<Value>, claim: Claim) -> Result<Option<u64>, VerifyError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            VerifyError::invalid(claim, "must be a non-negative integer of seconds")
        }),
        Some(_) => Err(VerifyError::invalid(
            claim,
            "must be a non-negative integer of seconds",
        )),
    }
}

fn string_claim(value: Option<Value>, claim: Claim) -> Result<String, VerifyError> {
    match value {
        None | Some(Value::Null) => Err(VerifyError::MissingClaim { claim }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(VerifyError::invalid(claim, "must be a string")),
    }
}

fn value_claim(claim: Claim) -> impl Fn(ValueError) -> VerifyError {
    move |e| VerifyError::invalid(claim, e.to_string())
}

fn policy_claim(value: Option<RawPolicy>) -> Result<Option<PeerPolicy>, VerifyError> {
    let shape = "must be null or {\"group_id\": string, \"peer_id\": string}";
    match value {
        None | Some(RawPolicy::Null) => Ok(None),
        Some(RawPolicy::Object {
            group_id: Some(Value::String(g)),
            peer_id: Some(Value::String(p)),
        }) => PeerPolicy::new(&g, &p)
            .map(Some)
            .map_err(value_claim(Claim::AllowPolicy)),
        Some(_) => Err(VerifyError::invalid(Claim::AllowPolicy, shape)),
    }
}

/// Parses the claims JSON into typed claims; checks types and value rules, not time.
pub(crate) fn parse_claims(payload: &[u8], key_id: String) -> Result<VerifiedClaims, VerifyError> {
    let raw: RawClaims = serde_json::from_str(json_text(payload, TokenPart::Payload)?)
        .map_err(|e| json_error(TokenPart::Payload, &e))?;
    let expires_at = time_claim(raw.exp, Claim::Expiry)?.ok_or(VerifyError::MissingClaim {
        claim: Claim::Expiry,
    })?;
    let issued_at = time_claim(raw.iat, Claim::IssuedAt)?;
    let not_before = time_claim(raw.nbf, Claim::NotBefore)?;
    let group_id = string_claim(raw.gid, Claim::GroupId)?;
    let peer_id = string_claim(raw.pid, Claim::PeerId)?;
    let mut peer = PeerClaims::new(&group_id, &peer_id).map_err(|e| match e.field() {
        Field::GroupId => value_claim(Claim::GroupId)(e),
        _ => value_claim(Claim::PeerId)(e),
    })?;
    if let Some(policy) = policy_claim(raw.ap)? {
        peer.set_allow_policy(policy);
    }
    let token_id = match raw.jti {
        None | Some(Value::Null) => None,
        Some(Value::String(jti)) => {
            check_key_id(&jti, Field::TokenId).map_err(value_claim(Claim::TokenId))?;
            Some(jti)
        }
        Some(_) => return Err(VerifyError::invalid(Claim::TokenId, "must be a string")),
    };
    Ok(VerifiedClaims {
        key_id,
        peer,
        expires_at,
        issued_at,
        not_before,
        token_id,
    })
}

/// What can weaken verification when misused: reading a token without verifying it, and
/// verifying with a signature check supplied from outside the crate.
///
/// Nothing that [`decode_unverified`] returns proves who made a token; use it only to show a
/// token to a person, never to decide what its holder may do.
pub mod dangerous {
    use super::*;

    /// A [`Verifier`] whose signature step is supplied by the caller, from
    /// [`Verifier::dangerous`]: for a platform's own Ed25519 (the JavaScript runtime's
    /// `node:crypto`, a hardware module) in place of the crate's.
    #[derive(Debug, Clone, Copy)]
    pub struct DangerousVerifier<'a> {
        pub(super) verifier: &'a Verifier,
    }

    impl DangerousVerifier<'_> {
        /// Verifies `token` as [`Verifier::verify_at`] does, step for step and error for error,
        /// except that an Ed25519 signature is checked by `check(kid, key, message, signature)`:
        /// `Ok(true)` when `signature` is a valid signature of `message` (the token's signing
        /// input) by `key` (the key registered under `kid`), `Ok(false)` when it is not, and `Err`
        /// when the check itself fails, which ends verification with that error.
        ///
        /// The crate keeps what makes the result equal to its own strict check, so that `check`
        /// may be any cofactorless RFC 8032 verify that compares encodings (OpenSSL, BoringSSL,
        /// AWS-LC, ed25519-dalek's `verify`): it refuses a non-canonical `S` and a small-order
        /// `R` before `check` sees them, and checks the signatures of a key that is not
        /// canonically encoded ([`PublicKey::is_canonical`]) itself. `check` is called at most
        /// once, and only after the header and key checks passed.
        ///
        /// This is dangerous because the verdict is the check's: a check that says `true` for
        /// anything makes every token with a known `kid` valid.
        ///
        /// # Errors
        ///
        /// A [`VerifyError`] (converted into `E`) saying why the token is rejected, or the
        /// check's own error.
        pub fn verify_at_with<E: From<VerifyError>>(
            &self,
            token: &str,
            now_unix: u64,
            mut check: impl FnMut(&str, &PublicKey, &[u8], &[u8; 64]) -> Result<bool, E>,
        ) -> Result<VerifiedClaims, E> {
            self.verifier
                .verify_with_check(token, now_unix, |kid, key, message, signature| {
                    if !crate::strict::signature_prechecks(signature) {
                        return Ok(false);
                    }
                    if !key.is_canonical() {
                        return Ok(key.verify_strict(message, signature));
                    }
                    check(kid, key, message, signature)
                })
        }

        /// As [`DangerousVerifier::verify_at_with`], at the verifier's clock's current time.
        ///
        /// # Errors
        ///
        /// As [`DangerousVerifier::verify_at_with`].
        pub fn verify_with<E: From<VerifyError>>(
            &self,
            token: &str,
            check: impl FnMut(&str, &PublicKey, &[u8], &[u8; 64]) -> Result<bool, E>,
        ) -> Result<VerifiedClaims, E> {
            self.verify_at_with(token, self.verifier.clock.now_unix(), check)
        }
    }

    /// A token decoded without any check of its signature, key or time.
    #[derive(Debug, Clone)]
    pub struct UnverifiedToken {
        /// The JOSE header as JSON.
        pub header: serde_json::Map<String, Value>,
        /// The claims as JSON.
        pub payload: serde_json::Map<String, Value>,
        /// The decoded signature's length in bytes (64 for Ed25519).
        pub signature_len: usize,
    }

    impl UnverifiedToken {
        /// The header's `alg`, when it is a string.
        pub fn alg(&self) -> Option<&str> {
            self.header.get("alg").and_then(Value::as_str)
        }

        /// The header's `kid`, when it is a string.
        pub fn kid(&self) -> Option<&str> {
            self.header.get("kid").and_then(Value::as_str)
        }

        /// The claims typed as a verifier would type them, with no signature or time check.
        ///
        /// # Errors
        ///
        /// The [`VerifyError`] a verifier would give for the claims.
        pub fn claims(&self) -> Result<VerifiedClaims, VerifyError> {
            let bytes = serde_json::to_vec(&self.payload).unwrap_or_default();
            parse_claims(&bytes, self.kid().unwrap_or_default().to_owned())
        }
    }

    /// The `kid` that `token`'s header names, read exactly as [`Verifier::verify`] reads it (the
    /// same length bound, segments, base64url, JSON and `alg` rules), without any signature
    /// check. `Ok(None)` when the header has no `kid`.
    ///
    /// For tools that trust one key and take its label from the token: registering the key under
    /// this `kid` makes [`Verifier::verify`] give the same verdict, for the same reason, as when
    /// the `kid` is known beforehand. A token this refuses, the verifier refuses with the same
    /// error.
    ///
    /// # Errors
    ///
    /// The [`VerifyError`] the verifier gives for this token before it looks up the key.
    pub fn header_key_id(token: &str) -> Result<Option<String>, VerifyError> {
        let parts = split(token, DEFAULT_MAX_TOKEN_LEN)?;
        Ok(parse_header(parts.header)?.kid)
    }

    /// Decodes `token` without verifying it. The length bound of [`DEFAULT_MAX_TOKEN_LEN`]
    /// still applies.
    ///
    /// # Errors
    ///
    /// [`VerifyError::TooLarge`] or [`VerifyError::Malformed`].
    pub fn decode_unverified(token: &str) -> Result<UnverifiedToken, VerifyError> {
        let parts = split(token.trim(), DEFAULT_MAX_TOKEN_LEN)?;
        let object = |segment: &str, part: TokenPart| {
            let bytes = decode_b64(segment, part)?;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(VerifyError::malformed(part, "not a JSON object")),
            }
        };
        let header = object(parts.header, TokenPart::Header)?;
        let payload = object(parts.payload, TokenPart::Payload)?;
        let signature_len = decode_b64(parts.signature, TokenPart::Signature)?.len();
        Ok(UnverifiedToken {
            header,
            payload,
            signature_len,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::keys::SigningKey;
    use crate::wire::header_b64;

    proptest! {
        /// What makes the verifier's header shortcut sound: the header this crate writes for a
        /// kid decodes, with every header check, to that kid.
        #[test]
        fn the_header_written_for_a_kid_reads_back_as_that_kid(
            kid in "[^\\p{Cc}]{1,64}",
        ) {
            prop_assume!(check_key_id(&kid, Field::ApiKey).is_ok());
            let segment = header_b64(&kid);
            let header = parse_header(&segment).unwrap();
            prop_assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
            let key = SigningKey::from_seed(&[7; 32]).unwrap().public_key();
            let keys = KeySet::new().with(&kid, key).unwrap();
            prop_assert_eq!(keys.by_header(&segment), Some((kid.as_str(), &key)));
        }
    }

    #[test]
    fn headers_written_otherwise_are_decoded() {
        let key = SigningKey::from_seed(&[7; 32]).unwrap().public_key();
        let keys = KeySet::new().with("kid_a\"/é", key).unwrap();
        let other_spellings = [
            r#"{"kid":"kid_a\"/é","alg":"EdDSA"}"#,
            r#"{"alg":"EdDSA", "kid":"kid_a\"/é"}"#,
            r#"{"alg":"EdDSA","kid":"kid_a\"\/\u00e9"}"#,
            r#"{"alg":"EdDSA","kid":"kid_a\"/é","typ":"JWT"}"#,
        ];
        for header in other_spellings {
            let segment = URL_SAFE_NO_PAD.encode(header);
            assert_eq!(keys.by_header(&segment), None, "{header}");
            assert_eq!(
                parse_header(&segment).unwrap().kid.as_deref(),
                Some("kid_a\"/é"),
                "{header}"
            );
        }
        assert_eq!(
            keys.by_header(&header_b64("kid_a\"/é")),
            Some(("kid_a\"/é", &key))
        );
        assert_eq!(keys.by_header(&header_b64("kid_b")), None);
    }
}
