//! Writes the package's corpus of hostile tokens (test/hostile-tokens.json) with the outcome the
//! Rust crate gives each, run natively: the signature-level attacks that a plain Ed25519 verify
//! may accept and ed25519-dalek's `verify_strict` refuses (a non-canonical `S`, a small-order
//! `R` that satisfies the plain equation, non-canonical encodings of `R`), next to the header and
//! encoding attacks of the crate's own corpus. Every runtime's tests verify each token on both
//! backends and expect the crate's outcome.
//!
//! Usage: `hostile_tokens > test/hostile-tokens.json` (the Node tests check it is up to date).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable as _;
use pulsebeam_token::{KeySet, PublicKey, Verifier};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha512};

/// The seed and key id of the first golden vector (testdata/original-tokens.json).
const SECRET_HEX: &str = "7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67";
const KID: &str = "kid_73d8caa6c387d46c";
/// A second key id, for a key that is not canonically encoded.
const ODD_KID: &str = "kid_noncanonical";
const NOW: u64 = 1_735_689_600;
const PAYLOAD: &str =
    r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"*","peer_id":"*"}}"#;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Signer {
    /// The secret scalar `a` (clamped, reduced).
    a: Scalar,
    /// The nonce prefix of RFC 8032.
    prefix: [u8; 32],
    public: [u8; 32],
}

impl Signer {
    fn new(seed: &[u8]) -> Signer {
        let h = Sha512::digest(seed);
        let (low, high) = h.split_at(32);
        let mut scalar = [0u8; 32];
        scalar.copy_from_slice(low);
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        let a = Scalar::from_bytes_mod_order(scalar);
        let mut prefix = [0u8; 32];
        prefix.copy_from_slice(high);
        let public = curve25519_dalek::constants::ED25519_BASEPOINT_TABLE
            .mul_base(&a)
            .compress()
            .to_bytes();
        Signer { a, prefix, public }
    }

    /// k = SHA-512(R || A || M) mod L.
    fn challenge(&self, r: &[u8; 32], message: &[u8]) -> Scalar {
        let mut hash = Sha512::new();
        hash.update(r);
        hash.update(self.public);
        hash.update(message);
        Scalar::from_hash(hash)
    }

    /// An RFC 8032 signature.
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut hash = Sha512::new();
        hash.update(self.prefix);
        hash.update(message);
        let r = Scalar::from_hash(hash);
        let big_r = curve25519_dalek::constants::ED25519_BASEPOINT_TABLE
            .mul_base(&r)
            .compress()
            .to_bytes();
        let s = r + self.challenge(&big_r, message) * self.a;
        signature(&big_r, &s.to_bytes())
    }

    /// `R` chosen freely, and `S = k·a`: the plain equation [S]B = R + [k]A holds exactly when
    /// `R` is the identity, which `verify_strict` refuses as a small-order point.
    fn with_r(&self, r: [u8; 32], message: &[u8]) -> [u8; 64] {
        let s = self.challenge(&r, message) * self.a;
        signature(&r, &s.to_bytes())
    }
}

fn signature(r: &[u8; 32], s: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r);
    out[32..].copy_from_slice(s);
    out
}

/// Adds `b` to the 32 little-endian bytes `a` (mod 2^256).
fn add(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        let sum = u16::from(*x) + u16::from(*y) + carry;
        *o = sum as u8;
        carry = sum >> 8;
    }
    out
}

const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// A valid, non-weak point whose encoding is not canonical (y ≥ p), if one exists among the
/// encodings of y = p + 2 … p + 18.
fn noncanonical_key() -> Option<[u8; 32]> {
    for low in 0xefu8..=0xff {
        for sign in [0u8, 0x80] {
            let mut bytes = [0xffu8; 32];
            bytes[0] = low;
            bytes[31] = 0x7f | sign;
            if let Some(point) = CompressedEdwardsY(bytes).decompress() {
                if !point.is_small_order() && PublicKey::from_bytes(&bytes).is_ok() {
                    return Some(bytes);
                }
            }
        }
    }
    None
}

fn main() {
    let seed = hex::decode(SECRET_HEX).unwrap_or_default();
    let signer = Signer::new(&seed);
    let header = |kid: &str| b64(format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#).as_bytes());
    let input = format!("{}.{}", header(KID), b64(PAYLOAD.as_bytes()));
    let message = input.as_bytes();
    let token = |sig: &[u8; 64]| format!("{input}.{}", b64(sig));
    let good = signer.sign(message);
    let (good_r, good_s) = good.split_at(32);
    let good_r: [u8; 32] = good_r.try_into().unwrap_or_default();
    let good_s: [u8; 32] = good_s.try_into().unwrap_or_default();

    let identity = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    let with_sign_bit = |mut b: [u8; 32]| {
        b[31] |= 0x80;
        b
    };
    // y = 1 + p: the identity, non-canonically encoded.
    let identity_plus_p = {
        let mut b = [0xffu8; 32];
        b[0] = 0xee;
        b[31] = 0x7f;
        b
    };
    let order_two = {
        let mut b = [0xffu8; 32];
        b[0] = 0xec;
        b[31] = 0x7f;
        b
    };
    let order_eight: [u8; 32] =
        hex_bytes("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05");

    let mixed_r = match (
        CompressedEdwardsY(good_r).decompress(),
        CompressedEdwardsY(order_eight).decompress(),
    ) {
        (Some(r), Some(t)) => (r + t).compress().to_bytes(),
        _ => good_r,
    };
    let flipped_r = {
        let mut r = good_r;
        r[31] ^= 0x80;
        r
    };
    let flipped_s = {
        let mut s = good;
        s[40] ^= 1;
        s
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("a valid signature", token(&good)),
        (
            "S + L (the same point equation, a non-canonical S)",
            token(&signature(&good_r, &add(&good_s, &ORDER))),
        ),
        (
            "S + 2L",
            token(&signature(&good_r, &add(&add(&good_s, &ORDER), &ORDER))),
        ),
        ("S = L", token(&signature(&good_r, &ORDER))),
        (
            "S with the top bit set",
            token(&signature(&good_r, &with_sign_bit(good_s))),
        ),
        (
            "R the identity, S = k·a (a plain verify accepts it)",
            token(&signer.with_r(identity, message)),
        ),
        (
            "R the identity with the sign bit, S = k·a",
            token(&signer.with_r(with_sign_bit(identity), message)),
        ),
        (
            "R the identity encoded as y = 1 + p, S = k·a",
            token(&signer.with_r(identity_plus_p, message)),
        ),
        (
            "R of order 2, S = k·a",
            token(&signer.with_r(order_two, message)),
        ),
        (
            "R of order 4, S = k·a",
            token(&signer.with_r([0u8; 32], message)),
        ),
        (
            "R of order 8, S = k·a",
            token(&signer.with_r(order_eight, message)),
        ),
        (
            "R of order 8 added to a valid R",
            token(&signature(&mixed_r, &good_s)),
        ),
        (
            "R with the sign bit flipped",
            token(&signature(&flipped_r, &good_s)),
        ),
        ("R and S swapped", token(&signature(&good_s, &good_r))),
        ("all zero", token(&[0u8; 64])),
        ("all ones", token(&[0xffu8; 64])),
        ("a bit of S flipped", token(&flipped_s)),
        (
            "the signature of another message",
            token(&signer.sign(b"another message")),
        ),
    ];
    // The crate's own header corpus, with genuine signatures.
    for (name, header_json) in [
        ("alg none", r#"{"alg":"none","kid":"kid_73d8caa6c387d46c"}"#),
        (
            "alg HS256",
            r#"{"alg":"HS256","kid":"kid_73d8caa6c387d46c"}"#,
        ),
        (
            "alg eddsa (lower case)",
            r#"{"alg":"eddsa","kid":"kid_73d8caa6c387d46c"}"#,
        ),
        (
            "alg as an array",
            r#"{"alg":["EdDSA"],"kid":"kid_73d8caa6c387d46c"}"#,
        ),
        ("no alg", r#"{"kid":"kid_73d8caa6c387d46c"}"#),
        ("no kid", r#"{"alg":"EdDSA"}"#),
        ("kid null", r#"{"alg":"EdDSA","kid":null}"#),
        ("kid a number", r#"{"alg":"EdDSA","kid":42}"#),
        (
            "alg twice",
            r#"{"alg":"EdDSA","alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#,
        ),
        (
            "crit",
            r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","crit":["exp"]}"#,
        ),
        (
            "crit null",
            r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","crit":null}"#,
        ),
        (
            "an unknown header member twice",
            r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","x":1,"x":2}"#,
        ),
        ("header an array", r#"["alg","EdDSA"]"#),
        ("header cut short", r#"{"alg":"EdDSA""#),
    ] {
        let input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(PAYLOAD.as_bytes())
        );
        let sig = signer.sign(input.as_bytes());
        cases.push((name, format!("{input}.{}", b64(&sig))));
    }
    // Payloads that only a valid signature lets through to the claims checks.
    for (name, payload) in [
        ("exp missing", r#"{"gid":"g","pid":"p","ap":null}"#),
        (
            "exp negative",
            r#"{"exp":-1,"gid":"g","pid":"p","ap":null}"#,
        ),
        (
            "exp twice",
            r#"{"exp":9999999999,"exp":9999999999,"gid":"g","pid":"p","ap":null}"#,
        ),
        (
            "gid with a wildcard",
            r#"{"exp":9999999999,"gid":"g*","pid":"p","ap":null}"#,
        ),
        (
            "ap with two wildcards",
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"**","peer_id":"*"}}"#,
        ),
        (
            "jti empty",
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"jti":""}"#,
        ),
        (
            "an unknown claim twice",
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"x":1,"x":2}"#,
        ),
        (
            "ap peer_id twice",
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"*","peer_id":"*","peer_id":"x"}}"#,
        ),
        ("expired", r#"{"exp":1000,"gid":"g","pid":"p","ap":null}"#),
        (
            "not yet valid",
            r#"{"exp":9999999999,"nbf":9999999000,"gid":"g","pid":"p","ap":null}"#,
        ),
        (
            "every optional claim",
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"a*","peer_id":"*b"},"iat":1,"nbf":2,"jti":"t-1"}"#,
        ),
        ("payload not JSON", "{"),
    ] {
        let input = format!("{}.{}", header(KID), b64(payload.as_bytes()));
        let sig = signer.sign(input.as_bytes());
        cases.push((name, format!("{input}.{}", b64(&sig))));
    }

    let mut keys = KeySet::new();
    let _ = keys.insert(
        KID,
        PublicKey::from_bytes(&signer.public).unwrap_or_else(|_| unreachable!()),
    );
    let odd = noncanonical_key();
    if let Some(odd) = odd {
        if let Ok(key) = PublicKey::from_bytes(&odd) {
            let _ = keys.insert(ODD_KID, key);
        }
        // A key that is not canonically encoded is checked by the crate on every backend.
        let input = format!("{}.{}", header(ODD_KID), b64(PAYLOAD.as_bytes()));
        let forged = {
            let k = {
                let mut hash = Sha512::new();
                hash.update(identity);
                hash.update(odd);
                hash.update(input.as_bytes());
                Scalar::from_hash(hash)
            };
            signature(&identity, &(k * signer.a).to_bytes())
        };
        cases.push((
            "a key encoded with y ≥ p",
            format!("{input}.{}", b64(&forged)),
        ));
    }
    let verifier = Verifier::new(keys.clone());
    let out: Vec<Value> = cases
        .iter()
        .map(|(name, token)| {
            let outcome = match verifier.verify_at(token, NOW) {
                Ok(claims) => json!({ "ok": true, "value": claims.peer_id() }),
                Err(e) => json!({ "ok": false, "code": e.code(), "message": e.to_string() }),
            };
            json!({ "name": name, "token": token, "outcome": outcome })
        })
        .collect();
    let jwks = serde_json::to_value(keys.to_jwks()).unwrap_or_default();
    let doc = json!({
        "about": "Generated by `cargo run --example hostile_tokens`: tokens and the outcome of the Rust crate's Verifier::verify_at(token, now) with these keys.",
        "now_unix": NOW,
        "jwks": jwks,
        "noncanonical_key_hex": odd.map(hex::encode),
        "cases": out,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

fn hex_bytes(text: &str) -> [u8; 32] {
    hex::decode(text)
        .ok()
        .and_then(|v| v.try_into().ok())
        .unwrap_or_default()
}
