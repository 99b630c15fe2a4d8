//! The token format around a signature made or checked by the JavaScript runtime's own Ed25519
//! (`node:crypto`): the signing input of a token to mint, and the checks of a token to verify
//! before and after the runtime checks its signature.
//!
//! The `pulsebeam-token` crate signs and verifies inside its own pipeline; these functions
//! follow that pipeline step by step (same order, same errors) with the signature step left to
//! the caller (the runtime's Ed25519, or ed25519-dalek's `verify_strict` as in the crate). The package's tests hold the two to the same outcomes: the golden vectors byte
//! for byte, and a table of valid and hostile tokens compared with the crate run natively.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use pulsebeam_token::{
    self as sdk, Claim, CreateError, Field, PeerClaims, PeerPolicy, TokenPart, ValueError,
    VerifyError, MAX_KEY_ID_CHARS, MAX_TTL_SECS,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

// --- minting -----------------------------------------------------------------------------------

/// What a token carries beyond its claims (the crate's `TokenOptions`, whose fields are private).
#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) issued_at: bool,
    pub(crate) not_before: Option<u64>,
    pub(crate) token_id: Option<String>,
    pub(crate) allow_no_policy: bool,
}

/// `B64({"alg":"EdDSA","kid":…})`, as the crate writes it.
pub(crate) fn header_b64(api_key: &str) -> String {
    let mut header = Vec::with_capacity(32 + MAX_KEY_ID_CHARS * 4);
    header.extend_from_slice(br#"{"alg":"EdDSA","kid":"#);
    write_json_str(&mut header, api_key);
    header.push(b'}');
    URL_SAFE_NO_PAD.encode(&header)
}

/// The signing input `header.payload` of the token the crate's `mint_at` would make, with the
/// crate's checks in the crate's order; the signature is the caller's.
pub(crate) fn signing_input(
    header_b64: &str,
    claims: &PeerClaims,
    ttl: u64,
    extras: &Extras,
    now_unix: u64,
) -> Result<(String, u64), CreateError> {
    if ttl == 0 {
        return Err(CreateError::ZeroTtl);
    }
    if ttl > MAX_TTL_SECS {
        return Err(CreateError::TtlTooLong {
            ttl,
            max: MAX_TTL_SECS,
        });
    }
    if claims.allow_policy().is_none() && !extras.allow_no_policy {
        return Err(CreateError::MissingPolicy);
    }
    if let Some(jti) = &extras.token_id {
        check_token_id(jti)?;
    }
    let exp = now_unix.saturating_add(ttl);
    let payload = payload_json(claims, exp, now_unix, extras);
    let mut input = String::with_capacity(header_b64.len() + payload.len().div_ceil(3) * 4 + 90);
    input.push_str(header_b64);
    input.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut input);
    Ok((input, exp))
}

/// `{"exp":…,"gid":…,"pid":…,"ap":…}` then `iat`, `nbf`, `jti` when asked, as the crate writes it.
fn payload_json(claims: &PeerClaims, exp: u64, now: u64, extras: &Extras) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"exp\":");
    write_u64(&mut out, exp);
    out.extend_from_slice(b",\"gid\":");
    write_json_str(&mut out, claims.group_id());
    out.extend_from_slice(b",\"pid\":");
    write_json_str(&mut out, claims.peer_id());
    out.extend_from_slice(b",\"ap\":");
    match claims.allow_policy() {
        Some(policy) => {
            out.extend_from_slice(b"{\"group_id\":");
            write_json_str(&mut out, policy.group_pattern().as_str());
            out.extend_from_slice(b",\"peer_id\":");
            write_json_str(&mut out, policy.peer_pattern().as_str());
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    if extras.issued_at {
        out.extend_from_slice(b",\"iat\":");
        write_u64(&mut out, now);
    }
    if let Some(nbf) = extras.not_before {
        out.extend_from_slice(b",\"nbf\":");
        write_u64(&mut out, nbf);
    }
    if let Some(jti) = &extras.token_id {
        out.extend_from_slice(b",\"jti\":");
        write_json_str(&mut out, jti);
    }
    out.push(b'}');
    out
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// A JSON string with serde_json's escaping, as the crate writes it.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The crate's rules for a token id (`jti`): 1 to 64 characters, no control characters.
fn check_token_id(jti: &str) -> Result<(), ValueError> {
    let field = Field::TokenId;
    if jti.is_empty() {
        return Err(ValueError::Empty {
            field,
            max: MAX_KEY_ID_CHARS,
        });
    }
    let mut len = 0usize;
    for (position, c) in jti.chars().enumerate() {
        len += 1;
        if c.is_control() {
            return Err(ValueError::ControlCharacter { field, position });
        }
    }
    if len > MAX_KEY_ID_CHARS {
        return Err(ValueError::TooLong {
            field,
            len,
            max: MAX_KEY_ID_CHARS,
        });
    }
    Ok(())
}

// --- verifying ---------------------------------------------------------------------------------

/// Length of an Ed25519 signature in base64url without padding.
const SIGNATURE_B64_LEN: usize = 86;

/// The three segments of a compact token, and the signed part.
pub(crate) struct Parts<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) signing_input: &'a str,
}

pub(crate) fn split(token: &str, max_len: usize) -> Result<Parts<'_>, VerifyError> {
    if token.len() > max_len {
        return Err(VerifyError::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    let malformed = || VerifyError::Malformed {
        part: TokenPart::Token,
        detail: "expected three base64url segments separated by `.`",
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
        .map_err(|_| VerifyError::Malformed {
            part,
            detail: "not canonical base64url without padding",
        })
}

pub(crate) fn decode_signature(segment: &str) -> Result<[u8; 64], VerifyError> {
    if segment.len() != SIGNATURE_B64_LEN {
        return Err(VerifyError::Malformed {
            part: TokenPart::Signature,
            detail: "an Ed25519 signature is 64 bytes (86 base64url characters)",
        });
    }
    let mut signature = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(segment, &mut signature) {
        Ok(64) => Ok(signature),
        _ => Err(VerifyError::Malformed {
            part: TokenPart::Signature,
            detail: "not canonical base64url without padding",
        }),
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<IgnoredAny>,
}

fn json_text(bytes: &[u8], part: TokenPart) -> Result<&str, VerifyError> {
    std::str::from_utf8(bytes).map_err(|_| VerifyError::Malformed {
        part,
        detail: "JSON text is not valid UTF-8",
    })
}

fn json_error(part: TokenPart, e: &serde_json::Error) -> VerifyError {
    use serde_json::error::Category;
    VerifyError::Malformed {
        part,
        detail: match e.classify() {
            Category::Data => "a member is duplicated or of the wrong type",
            Category::Syntax | Category::Eof | Category::Io => "not a valid JSON object",
        },
    }
}

/// The header's `kid`, after the checks of `alg` and `crit`.
pub(crate) fn parse_header(segment: &str) -> Result<Option<String>, VerifyError> {
    let bytes = decode_b64(segment, TokenPart::Header)?;
    let raw: RawHeader = serde_json::from_str(json_text(&bytes, TokenPart::Header)?)
        .map_err(|e| json_error(TokenPart::Header, &e))?;
    if raw.crit.is_some() {
        return Err(VerifyError::Malformed {
            part: TokenPart::Header,
            detail: "`crit` extensions are not supported",
        });
    }
    match raw.alg {
        Some(Value::String(alg)) if alg == "EdDSA" => {}
        _ => return Err(VerifyError::UnsupportedAlgorithm),
    }
    match raw.kid {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(kid)) => Ok(Some(kid)),
        Some(_) => Err(VerifyError::Malformed {
            part: TokenPart::Header,
            detail: "`kid` must be a string",
        }),
    }
}

/// The claims of a token, typed as the crate types them.
pub(crate) struct Claims {
    pub(crate) peer: PeerClaims,
    pub(crate) expires_at: u64,
    pub(crate) issued_at: Option<u64>,
    pub(crate) not_before: Option<u64>,
    pub(crate) token_id: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    exp: Option<Value>,
    gid: Option<Value>,
    pid: Option<Value>,
    ap: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    jti: Option<Value>,
}

fn invalid(claim: Claim, detail: impl Into<String>) -> VerifyError {
    VerifyError::InvalidClaim {
        claim,
        detail: detail.into(),
    }
}

fn time_claim(value: Option<Value>, claim: Claim) -> Result<Option<u64>, VerifyError> {
    let detail = "must be a non-negative integer of seconds";
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| invalid(claim, detail)),
        Some(_) => Err(invalid(claim, detail)),
    }
}

fn string_claim(value: Option<Value>, claim: Claim) -> Result<String, VerifyError> {
    match value {
        None | Some(Value::Null) => Err(VerifyError::MissingClaim { claim }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(claim, "must be a string")),
    }
}

fn policy_claim(value: Option<Value>) -> Result<Option<PeerPolicy>, VerifyError> {
    let shape = "must be null or {\"group_id\": string, \"peer_id\": string}";
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid(Claim::AllowPolicy, shape)),
    };
    match (map.get("group_id"), map.get("peer_id")) {
        (Some(Value::String(g)), Some(Value::String(p))) => PeerPolicy::new(g, p)
            .map(Some)
            .map_err(|e| invalid(Claim::AllowPolicy, e.to_string())),
        _ => Err(invalid(Claim::AllowPolicy, shape)),
    }
}

/// Decodes and types the payload segment: types and value rules, not time.
pub(crate) fn parse_claims(segment: &str) -> Result<Claims, VerifyError> {
    let payload = decode_b64(segment, TokenPart::Payload)?;
    let raw: RawClaims = serde_json::from_str(json_text(&payload, TokenPart::Payload)?)
        .map_err(|e| json_error(TokenPart::Payload, &e))?;
    let expires_at = time_claim(raw.exp, Claim::Expiry)?.ok_or(VerifyError::MissingClaim {
        claim: Claim::Expiry,
    })?;
    let issued_at = time_claim(raw.iat, Claim::IssuedAt)?;
    let not_before = time_claim(raw.nbf, Claim::NotBefore)?;
    let group_id = string_claim(raw.gid, Claim::GroupId)?;
    let peer_id = string_claim(raw.pid, Claim::PeerId)?;
    let mut peer = PeerClaims::new(&group_id, &peer_id).map_err(|e| {
        let claim = match e.field() {
            Field::GroupId => Claim::GroupId,
            _ => Claim::PeerId,
        };
        invalid(claim, e.to_string())
    })?;
    if let Some(policy) = policy_claim(raw.ap)? {
        peer.set_allow_policy(policy);
    }
    let token_id = match raw.jti {
        None | Some(Value::Null) => None,
        Some(Value::String(jti)) => {
            check_token_id(&jti).map_err(|e| invalid(Claim::TokenId, e.to_string()))?;
            Some(jti)
        }
        Some(_) => return Err(invalid(Claim::TokenId, "must be a string")),
    };
    Ok(Claims {
        peer,
        expires_at,
        issued_at,
        not_before,
        token_id,
    })
}

/// The crate's time checks: `exp` required and `nbf` honoured, both with `leeway`.
pub(crate) fn check_time(claims: &Claims, now_unix: u64, leeway: u64) -> Result<(), VerifyError> {
    if now_unix >= claims.expires_at.saturating_add(leeway) {
        return Err(VerifyError::Expired {
            exp: claims.expires_at,
            now: now_unix,
        });
    }
    if let Some(nbf) = claims.not_before {
        if now_unix.saturating_add(leeway) < nbf {
            return Err(VerifyError::NotYetValid { nbf, now: now_unix });
        }
    }
    Ok(())
}

// --- what makes a plain Ed25519 verify as strict as ed25519-dalek's verify_strict -------------
//
// `verify_strict` accepts exactly when: `S` is canonical (S < L); `R` decompresses and is not of
// small order; the key is not of small order; and the canonical encoding of [S]B - [k]A equals
// the bytes of `R` (k = SHA-512(R || A || M)). A plain RFC 8032 verifier (OpenSSL, BoringSSL)
// checks the last condition with the same bytes in the hash, given a canonically encoded key.
// So: the key is refused at import if weak (the crate does that), sent to the crate's own
// verify if not canonically encoded (`native_key`), and the signature is refused here if `S` is
// not canonical or `R` is one of the small-order points (an `R` equal to the canonical encoding
// of [S]B - [k]A is canonical, so only the canonical encodings need to be listed).

/// L, the order of the base point, little-endian.
const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The canonical encodings of the eight points of small order (1, 2, 4 and 8).
const SMALL_ORDER: [[u8; 32]; 8] = [
    // the identity (0, 1)
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    // (0, -1), order 2
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // (±sqrt(-1), 0), order 4
    [0; 32],
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0x80,
    ],
    // order 8
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0xfa,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x85,
    ],
];

/// Whether 32 little-endian bytes are below `bound` (also little-endian).
fn less_than(value: &[u8; 32], bound: &[u8; 32]) -> bool {
    for (v, b) in value.iter().rev().zip(bound.iter().rev()) {
        if v != b {
            return v < b;
        }
    }
    false
}

/// Whether `signature` may go to a plain Ed25519 verifier: `S` canonical and `R` not of small
/// order. A `false` is an invalid signature under `verify_strict` whatever the equation says.
pub(crate) fn strict_prechecks(signature: &[u8; 64]) -> bool {
    let (r, s) = signature.split_at(32);
    let (Ok(r), Ok(s)) = (<&[u8; 32]>::try_from(r), <&[u8; 32]>::try_from(s)) else {
        return false;
    };
    less_than(s, &ORDER) && !SMALL_ORDER.contains(r)
}

/// Whether a (non-weak) public key is canonically encoded (y < p), so that a plain verifier
/// decodes it as ed25519-dalek does. Other keys are verified by the crate itself.
pub(crate) fn native_key(key: &sdk::PublicKey) -> bool {
    // p = 2^255 - 19, little-endian, without the sign bit.
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    let mut y = *key.as_bytes();
    y[31] &= 0x7f;
    less_than(&y, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_points_are_listed_with_their_canonical_encodings() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        for bytes in SMALL_ORDER {
            let point = CompressedEdwardsY(bytes).decompress().expect("a point");
            assert!(point.is_small_order());
            assert_eq!(point.compress().to_bytes(), bytes, "canonical");
        }
        let mut all: Vec<_> = SMALL_ORDER.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn order_is_l() {
        use curve25519_dalek::scalar::Scalar;
        let below = {
            let mut b = ORDER;
            b[0] -= 1;
            b
        };
        assert!(bool::from(Scalar::from_canonical_bytes(below).is_some()));
        assert!(bool::from(Scalar::from_canonical_bytes(ORDER).is_none()));
        assert!(less_than(&below, &ORDER) && !less_than(&ORDER, &ORDER));
    }
}
