//! What a binding builds on: the signing input of a token to sign elsewhere, readable options,
//! and verification with a supplied signature check, held to the built-in pipeline's results.

use std::cell::Cell;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use proptest::prelude::*;
use pulsebeam_token::{
    AccessToken, CreateError, FixedClock, KeySet, PeerClaims, PublicKey, TokenOptions, TokenPart,
    VerifiedClaims, Verifier, VerifyError,
};
use sha2::{Digest as _, Sha512};

use crate::golden::claims_of;
use crate::verify::b64;
use crate::{app, claims, public_key_hex, vectors, verifier, GOLDEN_NOW, KID, SECRET};

const PAYLOAD: &str =
    r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"*","peer_id":"*"}}"#;

/// The ed25519-dalek signing key of an `sk_…` secret, to sign signing inputs as a platform would.
fn dalek_key(secret: &str) -> ed25519_dalek::SigningKey {
    let seed: [u8; 32] = hex::decode(secret.split_once('_').unwrap().1)
        .unwrap()
        .try_into()
        .unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn dalek_sign(key: &ed25519_dalek::SigningKey, message: &str) -> [u8; 64] {
    use ed25519_dalek::Signer as _;
    key.sign(message.as_bytes()).to_bytes()
}

// --- signing inputs ----------------------------------------------------------------------------

#[test]
fn every_golden_signing_input_is_the_original_token_before_its_signature() {
    let all = vectors();
    let list = all["vectors"].as_array().unwrap();
    assert_eq!(list.len(), 6);
    for v in list {
        let fixed = &v["fixed_clock"];
        let secret = v["api_secret"].as_str().unwrap();
        let app = AccessToken::new(v["api_key"].as_str().unwrap(), secret).unwrap();
        let claims = claims_of(&v["inputs"]);
        let mut options = TokenOptions::new(fixed["duration_secs"].as_u64().unwrap());
        if claims.allow_policy().is_none() {
            options = options.allow_no_policy();
        }
        let now = fixed["now_unix"].as_u64().unwrap();
        let golden = fixed["token"].as_str().unwrap();
        let unsigned = app.mint_unsigned_at(&claims, &options, now).unwrap();
        let (input, _) = golden.rsplit_once('.').unwrap();
        assert_eq!(unsigned.signing_input(), input, "vector {}", v["id"]);
        assert_eq!(unsigned.issued_at(), now);
        assert_eq!(unsigned.expires_at(), fixed["exp"].as_u64().unwrap());
        // Signed elsewhere with the same secret, it is the original's token byte for byte.
        let signature = dalek_sign(&dalek_key(secret), unsigned.signing_input());
        let minted = unsigned.with_signature(&signature);
        assert_eq!(minted.token, golden, "vector {}", v["id"]);
        assert_eq!(minted.expires_at, fixed["exp"].as_u64().unwrap());
        assert_eq!(minted, app.mint_at(&claims, &options, now).unwrap());
    }
}

#[test]
fn unsigned_tokens_are_refused_as_minting_refuses() {
    let app = app();
    let with_policy = claims("g", "p", ("*", "*"));
    let without = PeerClaims::new("g", "p").unwrap();
    let cases = [
        (&with_policy, TokenOptions::new(0), CreateError::ZeroTtl),
        (
            &with_policy,
            TokenOptions::new(u64::from(u32::MAX) + 1),
            CreateError::TtlTooLong {
                ttl: u64::from(u32::MAX) + 1,
                max: u64::from(u32::MAX),
            },
        ),
        (&without, TokenOptions::new(60), CreateError::MissingPolicy),
    ];
    for (claims, options, error) in cases {
        assert_eq!(
            app.mint_unsigned_at(claims, &options, GOLDEN_NOW),
            Err(error.clone())
        );
        assert_eq!(app.mint_at(claims, &options, GOLDEN_NOW), Err(error));
    }
    for jti in ["", "a\u{0}b", &"j".repeat(65)] {
        let options = TokenOptions::new(60).with_token_id(jti);
        let error = app
            .mint_unsigned_at(&with_policy, &options, GOLDEN_NOW)
            .unwrap_err();
        assert_eq!(error.code(), "invalid_token_id", "{jti:?}");
        assert_eq!(
            app.mint_at(&with_policy, &options, GOLDEN_NOW),
            Err(error),
            "{jti:?}"
        );
    }
}

#[test]
fn unsigned_tokens_read_the_clock_and_never_print_themselves() {
    let app = app().with_clock(FixedClock(GOLDEN_NOW + 5));
    let unsigned = app
        .mint_unsigned(&claims("g", "p", ("*", "*")), &TokenOptions::new(60))
        .unwrap();
    assert_eq!(unsigned.issued_at(), GOLDEN_NOW + 5);
    assert_eq!(unsigned.expires_at(), GOLDEN_NOW + 65);
    let shown = format!("{unsigned:?}");
    assert!(!shown.contains(&unsigned.signing_input()[..20]), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    let input = unsigned.clone().into_signing_input();
    assert_eq!(input, unsigned.signing_input());
}

#[test]
fn token_options_read_back_what_was_set() {
    let plain = TokenOptions::new(60);
    assert_eq!(plain.ttl_secs(), 60);
    assert!(!plain.has_issued_at());
    assert_eq!(plain.not_before(), None);
    assert_eq!(plain.token_id(), None);
    assert!(!plain.allows_no_policy());

    let full = TokenOptions::new(7)
        .with_issued_at()
        .with_not_before(GOLDEN_NOW)
        .with_token_id("req-1")
        .allow_no_policy();
    assert_eq!(full.ttl_secs(), 7);
    assert!(full.has_issued_at());
    assert_eq!(full.not_before(), Some(GOLDEN_NOW));
    assert_eq!(full.token_id(), Some("req-1"));
    assert!(full.allows_no_policy());

    let random = TokenOptions::new(1).with_random_token_id().unwrap();
    let jti = random.token_id().unwrap();
    assert_eq!(jti.len(), 32);
    assert!(jti.bytes().all(|b| b.is_ascii_hexdigit()), "{jti}");
}

// --- a supplied signature check ----------------------------------------------------------------

/// The laxest plain Ed25519 verify that still follows RFC 8032's equation: `S` reduced mod L
/// whatever its size, `R` compared by encoding, no small-order checks. Stricter verifies
/// (OpenSSL, ed25519-dalek's `verify`) accept a subset of what this accepts.
fn lax_verify(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
    let Some(a) = CompressedEdwardsY(*key.as_bytes()).decompress() else {
        return false;
    };
    let (r, s) = signature.split_at(32);
    let s = Scalar::from_bytes_mod_order(s.try_into().unwrap());
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r)
            .chain_update(key.as_bytes())
            .chain_update(message),
    );
    let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s);
    expected.compress().as_bytes() == r
}

/// Why a detached verification failed, in the tests: the pipeline's error, or the check's.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Token(VerifyError),
    Check(&'static str),
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Self {
        Failure::Token(e)
    }
}

/// The built-in result, and the result with `lax_verify` supplied; with how often it was asked.
fn both(
    verifier: &Verifier,
    token: &str,
    now: u64,
) -> (
    Result<VerifiedClaims, VerifyError>,
    Result<VerifiedClaims, VerifyError>,
    usize,
) {
    let calls = Cell::new(0);
    let supplied =
        verifier
            .dangerous()
            .verify_at_with(token, now, |kid, key, message, signature| {
                calls.set(calls.get() + 1);
                assert_eq!(verifier.keys().get(kid), Some(key));
                Ok::<_, VerifyError>(lax_verify(key, message, signature))
            });
    (verifier.verify_at(token, now), supplied, calls.get())
}

/// RFC 8032 by hand with the golden seed, to forge what a plain verify may accept.
struct Signer {
    a: Scalar,
    prefix: [u8; 32],
    public: [u8; 32],
}

impl Signer {
    fn golden() -> Signer {
        let key = dalek_key(SECRET);
        let h = Sha512::digest(key.to_bytes());
        let mut scalar: [u8; 32] = h[..32].try_into().unwrap();
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        Signer {
            a: Scalar::from_bytes_mod_order(scalar),
            prefix: h[32..].try_into().unwrap(),
            public: key.verifying_key().to_bytes(),
        }
    }

    fn challenge(&self, r: &[u8; 32], message: &[u8]) -> Scalar {
        Scalar::from_hash(
            Sha512::new()
                .chain_update(r)
                .chain_update(self.public)
                .chain_update(message),
        )
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        let r = Scalar::from_hash(
            Sha512::new()
                .chain_update(self.prefix)
                .chain_update(message),
        );
        let big_r = EdwardsPoint::mul_base(&r).compress().to_bytes();
        let s = r + self.challenge(&big_r, message) * self.a;
        join(&big_r, &s.to_bytes())
    }

    /// `R` chosen freely and `S = k·a`: the plain equation holds exactly when `R` is the
    /// identity, which `verify_strict` refuses as a small-order point.
    fn with_r(&self, r: [u8; 32], message: &[u8]) -> [u8; 64] {
        join(&r, &(self.challenge(&r, message) * self.a).to_bytes())
    }
}

fn join(r: &[u8; 32], s: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r);
    out[32..].copy_from_slice(s);
    out
}

/// L, the group order, little-endian.
const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `s + times·L` as 32 little-endian bytes (no overflow for `s < L`, `times <= 15`).
fn add_order(s: &[u8], times: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for ((o, x), l) in out.iter_mut().zip(s).zip(ORDER) {
        let sum = u16::from(*x) + u16::from(l) * u16::from(times) + carry;
        *o = sum as u8;
        carry = sum >> 8;
    }
    out
}

/// Encodings of small-order points: the canonical ones, and some that are not.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for point in curve25519_dalek::constants::EIGHT_TORSION {
        let bytes = point.compress().to_bytes();
        out.push(bytes);
        let mut flipped = bytes;
        flipped[31] ^= 0x80;
        out.push(flipped);
    }
    // y = 1 + p: the identity, not canonically encoded.
    let mut identity_plus_p = [0xffu8; 32];
    identity_plus_p[0] = 0xee;
    identity_plus_p[31] = 0x7f;
    out.push(identity_plus_p);
    out
}

fn golden_token_input() -> String {
    let header = format!(r#"{{"alg":"EdDSA","kid":"{KID}"}}"#);
    format!("{}.{}", b64(header.as_bytes()), b64(PAYLOAD.as_bytes()))
}

#[test]
fn golden_vectors_verify_alike_with_a_supplied_check() {
    for v in vectors()["vectors"].as_array().unwrap() {
        let keys = KeySet::new()
            .with(
                v["api_key"].as_str().unwrap(),
                public_key_hex(v["public_key_hex"].as_str().unwrap()),
            )
            .unwrap();
        let verifier = Verifier::new(keys).with_leeway(0);
        let fixed = &v["fixed_clock"];
        let token = fixed["token"].as_str().unwrap();
        let now = fixed["now_unix"].as_u64().unwrap();
        let exp = fixed["exp"].as_u64().unwrap();
        for at in [now, exp - 1, exp, exp + 1000] {
            let (built_in, supplied, calls) = both(&verifier, token, at);
            assert_eq!(supplied, built_in, "vector {} at {at}", v["id"]);
            assert_eq!(calls, 1);
        }
        assert!(both(&verifier, token, now).1.is_ok());
        assert!(matches!(
            both(&verifier, token, exp).1,
            Err(VerifyError::Expired { .. })
        ));
        let wall = v["original_wallclock"]["token"].as_str().unwrap();
        let at = v["original_wallclock"]["exp"].as_u64().unwrap() - 1;
        let (built_in, supplied, _) = both(&verifier, wall, at);
        assert_eq!(supplied, built_in, "vector {}", v["id"]);
        assert!(supplied.is_ok(), "vector {}", v["id"]);
    }
}

#[test]
fn signatures_a_plain_verify_accepts_and_strict_refuses_are_refused() {
    let v = verifier();
    let signer = Signer::golden();
    let input = golden_token_input();
    let message = input.as_bytes();
    let good = signer.sign(message);
    let token = |signature: &[u8; 64]| format!("{input}.{}", b64(signature));

    let (built_in, supplied, calls) = both(&v, &token(&good), GOLDEN_NOW);
    assert!(built_in.is_ok() && supplied == built_in && calls == 1);

    let mut lax_accepts = Vec::new();
    for times in 1..=15 {
        lax_accepts.push(join(
            good[..32].try_into().unwrap(),
            &add_order(&good[32..], times),
        ));
    }
    for r in small_order_encodings() {
        lax_accepts.push(signer.with_r(r, message));
    }
    let mut forgeries = 0;
    for signature in lax_accepts {
        let key = PublicKey::from_bytes(&signer.public).unwrap();
        let (built_in, supplied, calls) = both(&v, &token(&signature), GOLDEN_NOW);
        assert_eq!(built_in, Err(VerifyError::InvalidSignature));
        assert_eq!(supplied, built_in);
        // The lax verify alone would have accepted some: the crate's checks refused them.
        if lax_verify(&key, message, &signature) {
            forgeries += 1;
            assert_eq!(calls, 0, "refused before the check");
        }
    }
    // All 15 S + kL, and the identity as R (canonical, with the sign bit is not accepted).
    assert_eq!(forgeries, 16);
}

#[test]
fn header_claims_and_time_errors_are_the_built_in_ones() {
    let v = verifier();
    let signer = Signer::golden();
    let signed = |header: &str, payload: &str| {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature = signer.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    };
    let kid = format!(r#""kid":"{KID}""#);
    let good_header = format!(r#"{{"alg":"EdDSA",{kid}}}"#);
    let mut tokens = vec![
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        "x".repeat(5000),
    ];
    for header in [
        format!(r#"{{"alg":"none",{kid}}}"#),
        format!(r#"{{"alg":"HS256",{kid}}}"#),
        format!(r#"{{"alg":["EdDSA"],{kid}}}"#),
        format!(r#"{{{kid}}}"#),
        r#"{"alg":"EdDSA"}"#.into(),
        r#"{"alg":"EdDSA","kid":null}"#.into(),
        r#"{"alg":"EdDSA","kid":7}"#.into(),
        r#"{"alg":"EdDSA","kid":"kid_other"}"#.into(),
        format!(r#"{{"alg":"EdDSA","alg":"EdDSA",{kid}}}"#),
        format!(r#"{{"alg":"EdDSA",{kid},"x":1,"x":2}}"#),
        format!(r#"{{"alg":"EdDSA",{kid},"crit":["exp"]}}"#),
        format!(r#"{{"alg":"EdDSA",{kid},"crit":null}}"#),
        r#"["alg","EdDSA"]"#.into(),
        r#"{"alg":"EdDSA""#.into(),
    ] {
        tokens.push(signed(&header, PAYLOAD));
    }
    for payload in [
        r#"{"gid":"g","pid":"p","ap":null}"#,
        r#"{"exp":-1,"gid":"g","pid":"p","ap":null}"#,
        r#"{"exp":9999999999,"exp":9999999999,"gid":"g","pid":"p","ap":null}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"x":1,"x":2}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"*","group_id":"*","peer_id":"*"}}"#,
        r#"{"exp":9999999999,"gid":"g*","pid":"p","ap":null}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"**","peer_id":"*"}}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"jti":""}"#,
        r#"{"exp":1000,"gid":"g","pid":"p","ap":null}"#,
        r#"{"exp":9999999999,"nbf":9999999000,"gid":"g","pid":"p","ap":null}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"a*","peer_id":"*b"},"iat":1,"nbf":2,"jti":"t-1"}"#,
        "{",
    ] {
        tokens.push(signed(&good_header, payload));
    }
    let input = golden_token_input();
    for signature in [
        "",
        "AAAA",
        &"A".repeat(85),
        &"A".repeat(87),
        &format!("{}==", "A".repeat(86)),
    ] {
        tokens.push(format!("{input}.{signature}"));
    }
    let mut kinds = std::collections::BTreeSet::new();
    for token in &tokens {
        let (built_in, supplied, calls) = both(&v, token, GOLDEN_NOW);
        assert_eq!(supplied, built_in, "{token}");
        // The check is asked once a well-formed signature by a known key is at hand.
        let asked = built_in
            .as_ref()
            .map_or_else(reached_the_signature, |_| true);
        assert_eq!(calls, usize::from(asked), "{token}: {built_in:?}");
        kinds.insert(match built_in {
            Ok(_) => "ok",
            Err(e) => e.code(),
        });
    }
    // The table reaches every stage of the pipeline.
    for code in [
        "ok",
        "token_too_large",
        "malformed_token",
        "unsupported_algorithm",
        "missing_key_id",
        "unknown_key_id",
        "missing_claim",
        "invalid_claim",
        "token_expired",
        "token_not_yet_valid",
    ] {
        assert!(kinds.contains(code), "{code} not reached: {kinds:?}");
    }
}

/// Whether verification got as far as the signature step before failing with `error`.
fn reached_the_signature(error: &VerifyError) -> bool {
    match error {
        VerifyError::TooLarge { .. }
        | VerifyError::UnsupportedAlgorithm
        | VerifyError::MissingKeyId
        | VerifyError::UnknownKeyId => false,
        // The payload is decoded only after the signature verified.
        VerifyError::Malformed { part, .. } => *part == TokenPart::Payload,
        _ => true,
    }
}

/// A valid, non-weak point whose encoding is not canonical (y ≥ p).
fn noncanonical_key() -> PublicKey {
    for low in 0xefu8..=0xff {
        for sign in [0u8, 0x80] {
            let mut bytes = [0xffu8; 32];
            bytes[0] = low;
            bytes[31] = 0x7f | sign;
            if let Ok(key) = PublicKey::from_bytes(&bytes) {
                return key;
            }
        }
    }
    panic!("no valid key among the non-canonical encodings");
}

#[test]
fn keys_not_canonically_encoded_are_checked_by_the_crate() {
    let odd = noncanonical_key();
    assert!(!odd.is_canonical());
    assert!(app().public_key().is_canonical());
    let keys = KeySet::new()
        .with("kid_odd", odd)
        .unwrap()
        .with(KID, app().public_key())
        .unwrap();
    let v = Verifier::new(keys);
    let header = b64(br#"{"alg":"EdDSA","kid":"kid_odd"}"#);
    let input = format!("{header}.{}", b64(PAYLOAD.as_bytes()));
    let signer = Signer::golden();
    let mut asked = 0;
    for signature in [signer.sign(input.as_bytes()), [7u8; 64], [0u8; 64]] {
        let token = format!("{input}.{}", b64(&signature));
        let result = v
            .dangerous()
            .verify_at_with(&token, GOLDEN_NOW, |_, _, _, _| {
                asked += 1;
                Ok::<_, VerifyError>(true)
            });
        assert_eq!(result, v.verify_at(&token, GOLDEN_NOW));
        assert_eq!(result, Err(VerifyError::InvalidSignature));
    }
    assert_eq!(
        asked, 0,
        "a check that says yes to anything was never asked"
    );
}

#[test]
fn the_check_decides_and_its_error_ends_verification() {
    let v = verifier();
    let token = app()
        .create_token(&claims("g", "p", ("*", "*")), 60)
        .unwrap();
    let refuse = v
        .dangerous()
        .verify_at_with(&token, GOLDEN_NOW, |_, _, _, _| Ok::<_, VerifyError>(false));
    assert_eq!(refuse, Err(VerifyError::InvalidSignature));
    let fail = v
        .dangerous()
        .verify_at_with(&token, GOLDEN_NOW, |_, _, _, _| {
            Err(Failure::Check("unplugged"))
        });
    assert_eq!(fail, Err(Failure::Check("unplugged")));
    // Errors before the signature step come as the pipeline's, converted.
    let unknown = v
        .dangerous()
        .verify_at_with("a.b.c", GOLDEN_NOW, |_, _, _, _| {
            Err(Failure::Check("never"))
        });
    assert!(matches!(
        unknown,
        Err(Failure::Token(VerifyError::Malformed { .. }))
    ));

    // The verdict is the check's: what makes the door dangerous. A forged (well-formed)
    // signature passes a check that says yes to anything.
    let (input, _) = token.rsplit_once('.').unwrap();
    let forged = format!(
        "{input}.{}",
        b64(&join(
            &EdwardsPoint::mul_base(&Scalar::ONE).compress().to_bytes(),
            &[1u8; 32]
        ))
    );
    assert_eq!(
        v.verify_at(&forged, GOLDEN_NOW),
        Err(VerifyError::InvalidSignature)
    );
    let yes = v
        .dangerous()
        .verify_at_with(&forged, GOLDEN_NOW, |_, _, _, _| Ok::<_, VerifyError>(true));
    assert_eq!(yes.unwrap().peer_id(), "p");
}

#[test]
fn verify_with_reads_the_verifiers_clock() {
    let token = app()
        .create_token(&claims("g", "p", ("*", "*")), 60)
        .unwrap();
    let plain = |key: &PublicKey, message: &[u8], signature: &[u8; 64]| {
        Ok::<_, VerifyError>(lax_verify(key, message, signature))
    };
    let early = verifier().with_clock(FixedClock(GOLDEN_NOW + 1));
    let claims = early
        .dangerous()
        .verify_with(&token, |_, k, m, s| plain(k, m, s))
        .unwrap();
    assert_eq!(claims.expires_at(), GOLDEN_NOW + 60);
    let late = verifier()
        .with_leeway(0)
        .with_clock(FixedClock(GOLDEN_NOW + 60));
    assert_eq!(
        late.dangerous()
            .verify_with(&token, |_, k, m, s| plain(k, m, s)),
        Err(VerifyError::Expired {
            exp: GOLDEN_NOW + 60,
            now: GOLDEN_NOW + 60
        })
    );
}

/// How a property test spoils a valid signature.
#[derive(Debug, Clone)]
enum Spoil {
    /// Flip one of its 512 bits.
    Bit(usize),
    /// `S + k·L`.
    AddOrder(u8),
    /// A small-order `R` (by index into [`small_order_encodings`]) with `S = k·a`.
    SmallOrderR(usize),
    /// A small-order point added to `R`.
    Torsion(usize),
    /// 64 other bytes.
    Bytes(Vec<u8>),
}

fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        (0usize..512).prop_map(Spoil::Bit),
        (1u8..=15).prop_map(Spoil::AddOrder),
        (0usize..17).prop_map(Spoil::SmallOrderR),
        (0usize..8).prop_map(Spoil::Torsion),
        proptest::collection::vec(any::<u8>(), 64).prop_map(Spoil::Bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The signing input signed elsewhere is the token `mint_at` makes, and both refuse alike.
    #[test]
    fn signing_input_and_signature_make_the_minted_token(
        claims in crate::props::claims(),
        ttl in prop_oneof![Just(0u64), 1u64..=u64::from(u32::MAX), Just(u64::from(u32::MAX) + 1)],
        iat in any::<bool>(),
        nbf in proptest::option::of(any::<u64>()),
        jti in proptest::option::of("[a-z0-9\\x00_-]{0,66}"),
        allow in any::<bool>(),
        no_policy in any::<bool>(),
        now in any::<u64>(),
    ) {
        let claims = if no_policy { PeerClaims::new(claims.group_id(), claims.peer_id()).unwrap() } else { claims };
        let mut options = TokenOptions::new(ttl);
        if iat { options = options.with_issued_at(); }
        if let Some(nbf) = nbf { options = options.with_not_before(nbf); }
        if let Some(jti) = &jti { options = options.with_token_id(jti.clone()); }
        if allow { options = options.allow_no_policy(); }
        let app = app();
        let minted = app.mint_at(&claims, &options, now);
        let unsigned = app.mint_unsigned_at(&claims, &options, now);
        match (minted, unsigned) {
            (Ok(minted), Ok(unsigned)) => {
                let signature = dalek_sign(&dalek_key(SECRET), unsigned.signing_input());
                prop_assert_eq!(unsigned.with_signature(&signature), minted);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "mint {:?} but unsigned {:?}", a, b),
        }
    }

    /// A plain verify supplied as the check gives the built-in verdict on spoiled signatures.
    #[test]
    fn a_supplied_plain_verify_agrees_with_the_built_in_one(
        claims in crate::props::claims(),
        spoil in spoil(),
    ) {
        let token = app().create_token(&claims, 3600).unwrap();
        let (input, _) = token.rsplit_once('.').unwrap();
        let signer = Signer::golden();
        let good = signer.sign(input.as_bytes());
        let (r, s) = good.split_at(32);
        let signature = match spoil {
            Spoil::Bit(bit) => {
                let mut out = good;
                out[bit / 8] ^= 1 << (bit % 8);
                out
            }
            Spoil::AddOrder(times) => join(r.try_into().unwrap(), &add_order(s, times)),
            Spoil::SmallOrderR(i) => signer.with_r(small_order_encodings()[i], input.as_bytes()),
            Spoil::Torsion(i) => {
                let r = CompressedEdwardsY(r.try_into().unwrap()).decompress().unwrap();
                let t = curve25519_dalek::constants::EIGHT_TORSION[i];
                join(&(r + t).compress().to_bytes(), s.try_into().unwrap())
            }
            Spoil::Bytes(bytes) => bytes.try_into().unwrap(),
        };
        let spoiled = format!("{input}.{}", b64(&signature));
        let (built_in, supplied, _) = both(&verifier(), &spoiled, GOLDEN_NOW);
        prop_assert_eq!(&supplied, &built_in);
        // Only the identity torsion point leaves the signature valid.
        let valid = signature == good;
        prop_assert_eq!(built_in.is_ok(), valid, "{:?}", built_in);
    }
}
