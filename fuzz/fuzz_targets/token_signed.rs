//! A fuzzer-made header and payload (split at the first 0xFF byte, which JSON never holds),
//! correctly signed with the golden key: this reaches the header and claim parsers that an
//! unsigned input never passes. When the verifier accepts, what it returns must be exactly what
//! the JSON says and what the token rules allow.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use libfuzzer_sys::fuzz_target;
use pulsebeam_token::{PeerClaims, PeerPolicy, DEFAULT_LEEWAY_SECS};
use serde_json::Value;

mod common;

fuzz_target!(|data: &[u8]| {
    let golden = &*common::GOLDEN;
    let (header, payload) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = golden.signing_key.sign(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));

    let claims = match golden.verifier.verify(&token) {
        Ok(claims) => claims,
        Err(err) => {
            common::check_error(&err, &token);
            return;
        }
    };
    // The header said EdDSA and named the signing key.
    let header: Value = serde_json::from_slice(header).expect("an accepted header is strict JSON");
    assert_eq!(
        header["alg"], "EdDSA",
        "accepted alg other than EdDSA: {header}"
    );
    assert_eq!(header["kid"], golden.kid.as_str());
    assert_eq!(claims.key_id(), golden.kid);

    // The claims are the payload's, well-formed, and in force at the verifier's clock.
    // An accepted payload is strict JSON (UTF-8 throughout, unknown claims included).
    let payload: Value =
        serde_json::from_slice(payload).expect("an accepted payload is strict JSON");
    let now = common::GOLDEN_NOW;
    assert_eq!(
        payload["exp"].as_u64(),
        Some(claims.expires_at()),
        "exp: {payload}"
    );
    assert!(
        claims.expires_at().saturating_add(DEFAULT_LEEWAY_SECS) > now,
        "expired token accepted: {payload}"
    );
    if let Some(nbf) = claims.not_before() {
        assert!(
            nbf <= now + DEFAULT_LEEWAY_SECS,
            "token accepted before nbf: {payload}"
        );
    }
    assert_eq!(payload["gid"].as_str(), Some(claims.group_id()));
    assert_eq!(payload["pid"].as_str(), Some(claims.peer_id()));
    let expected =
        PeerClaims::new(claims.group_id(), claims.peer_id()).expect("accepted ids are valid ids");
    assert_eq!(expected.group_id(), claims.group_id());
    match (&payload["ap"], claims.allow_policy()) {
        (Value::Object(ap), Some(policy)) => {
            let group = ap["group_id"].as_str().expect("group pattern is a string");
            let peer = ap["peer_id"].as_str().expect("peer pattern is a string");
            assert_eq!(
                &PeerPolicy::new(group, peer).expect("accepted patterns are valid"),
                policy
            );
        }
        (Value::Null, None) => {}
        (ap, policy) => panic!("ap {ap} came out as {policy:?}"),
    }
});
