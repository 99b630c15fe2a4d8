//! Integration tests of the token SDK: golden vectors from the original, verification,
//! hostile input, keys, and properties.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod detached;
mod golden;
mod hostile;
mod keys;
mod props;
mod verify;

use pulsebeam_token::{
    AccessToken, FixedClock, KeySet, PeerClaims, PeerPolicy, PublicKey, Verifier,
};

/// 2025-01-01T00:00:00Z, the pinned clock of the golden vectors.
pub const GOLDEN_NOW: u64 = 1_735_689_600;

pub const KID: &str = "kid_73d8caa6c387d46c";
pub const SECRET: &str = "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67";

pub fn vectors() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/original-tokens.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn app() -> AccessToken {
    AccessToken::new(KID, SECRET)
        .unwrap()
        .with_clock(FixedClock(GOLDEN_NOW))
}

pub fn verifier() -> Verifier {
    let keys = KeySet::new().with(KID, app().public_key()).unwrap();
    Verifier::new(keys).with_clock(FixedClock(GOLDEN_NOW + 10))
}

pub fn claims(group: &str, peer: &str, policy: (&str, &str)) -> PeerClaims {
    PeerClaims::new(group, peer)
        .unwrap()
        .with_allow_policy(PeerPolicy::new(policy.0, policy.1).unwrap())
}

pub fn public_key_hex(hex: &str) -> PublicKey {
    PublicKey::from_hex(hex).unwrap()
}
