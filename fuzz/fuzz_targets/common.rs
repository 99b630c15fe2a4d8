//! What every target shares: the golden keys and tokens of `testdata/original-tokens.json`.

use std::collections::HashSet;
use std::sync::LazyLock;

use pulsebeam_token::{FixedClock, KeySet, PublicKey, Verifier};

/// The pinned clock of the golden vectors (2025-01-01T00:00:00Z): every golden token is valid then.
pub const GOLDEN_NOW: u64 = 1_735_689_600;

/// The golden keys, a verifier for them, and the tokens they really signed.
#[allow(dead_code)] // each target uses its own part
pub struct Golden {
    /// Verifies against every golden key at [`GOLDEN_NOW`].
    pub verifier: Verifier,
    /// Every token the golden keys signed; nothing else may ever verify.
    pub signed: HashSet<String>,
    /// The first vector's key id and Ed25519 seed, to sign fuzzer-made tokens.
    pub kid: String,
    pub signing_key: ed25519_dalek::SigningKey,
}

pub static GOLDEN: LazyLock<Golden> = LazyLock::new(|| {
    let text = include_str!("../../testdata/original-tokens.json");
    let doc: serde_json::Value = serde_json::from_str(text).expect("golden vectors are JSON");
    let vectors = doc["vectors"].as_array().expect("vectors");
    let mut keys = KeySet::new();
    let mut signed = HashSet::new();
    for v in vectors {
        let kid = v["api_key"].as_str().expect("api_key");
        let public = PublicKey::from_hex(v["public_key_hex"].as_str().expect("public key"))
            .expect("golden public key");
        if keys.get(kid).is_none() {
            keys.insert(kid, public).expect("golden kid");
        }
        for form in ["fixed_clock", "original_wallclock"] {
            if let Some(token) = v[form]["token"].as_str() {
                signed.insert(token.to_owned());
            }
        }
    }
    let first = &vectors[0];
    let seed: [u8; 32] = hex_bytes(first["seed_hex"].as_str().expect("seed"))
        .try_into()
        .expect("32-byte seed");
    Golden {
        verifier: Verifier::new(keys).with_clock(FixedClock(GOLDEN_NOW)),
        signed,
        kid: first["api_key"].as_str().expect("kid").to_owned(),
        signing_key: ed25519_dalek::SigningKey::from_bytes(&seed),
    }
});

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[allow(dead_code)]
/// A verifier's error must carry a stable code and never echo the token back.
pub fn check_error(err: &pulsebeam_token::VerifyError, token: &str) {
    assert!(!err.code().is_empty(), "error without a code: {err:?}");
    let message = err.to_string();
    assert!(!message.is_empty());
    // Messages are short fixed sentences with a few numbers, whatever the token's size.
    assert!(
        message.len() <= 512,
        "error message of {} bytes",
        message.len()
    );
    // A long run without spaces is no part of any such sentence: it would be the token itself.
    // (A short one can be: the fuzzer learns the messages' own words.)
    if token.len() >= 48 && !token.contains(char::is_whitespace) {
        assert!(
            !message.contains(token),
            "error message echoes the token: {message}"
        );
    }
}
