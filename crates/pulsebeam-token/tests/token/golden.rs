//! The original SDK's tokens, reproduced byte for byte and verified.

use pulsebeam_token::{
    AccessToken, FixedClock, KeyError, KeySet, PeerClaims, PeerPolicy, SigningKey, TokenOptions,
    Verifier,
};

use crate::{public_key_hex, vectors};

pub fn claims_of(inputs: &serde_json::Value) -> PeerClaims {
    let mut claims = PeerClaims::new(
        inputs["group_id"].as_str().unwrap(),
        inputs["peer_id"].as_str().unwrap(),
    )
    .unwrap();
    if let Some(ap) = inputs["allow_policy"].as_object() {
        claims.set_allow_policy(
            PeerPolicy::new(
                ap["group_id"].as_str().unwrap(),
                ap["peer_id"].as_str().unwrap(),
            )
            .unwrap(),
        );
    }
    claims
}

#[test]
fn every_fixed_clock_vector_reproduces_byte_for_byte() {
    let all = vectors();
    let list = all["vectors"].as_array().unwrap();
    assert_eq!(list.len(), 6);
    for v in list {
        let fixed = &v["fixed_clock"];
        let app = AccessToken::new(
            v["api_key"].as_str().unwrap(),
            v["api_secret"].as_str().unwrap(),
        )
        .unwrap()
        .with_clock(FixedClock(fixed["now_unix"].as_u64().unwrap()));
        let claims = claims_of(&v["inputs"]);
        let mut options = TokenOptions::new(fixed["duration_secs"].as_u64().unwrap());
        if claims.allow_policy().is_none() {
            options = options.allow_no_policy();
        }
        let minted = app.mint(&claims, &options).unwrap();
        assert_eq!(
            minted.token,
            fixed["token"].as_str().unwrap(),
            "vector {}",
            v["id"]
        );
        assert_eq!(minted.expires_at, fixed["exp"].as_u64().unwrap());
        assert_eq!(
            app.public_key().to_hex(),
            v["public_key_hex"].as_str().unwrap()
        );
        if claims.allow_policy().is_some() {
            // The original's own entry point gives the same bytes.
            assert_eq!(
                app.create_token(&claims, 3600).unwrap(),
                fixed["token"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn every_original_wallclock_token_verifies() {
    for v in vectors()["vectors"].as_array().unwrap() {
        let kid = v["api_key"].as_str().unwrap();
        let keys = KeySet::new()
            .with(kid, public_key_hex(v["public_key_hex"].as_str().unwrap()))
            .unwrap();
        let verifier = Verifier::new(keys);
        let wall = &v["original_wallclock"];
        let verified = verifier.verify(wall["token"].as_str().unwrap()).unwrap();
        let inputs = &v["inputs"];
        assert_eq!(verified.key_id(), kid);
        assert_eq!(verified.group_id(), inputs["group_id"].as_str().unwrap());
        assert_eq!(verified.peer_id(), inputs["peer_id"].as_str().unwrap());
        assert_eq!(verified.expires_at(), wall["exp"].as_u64().unwrap());
        assert_eq!(verified.allow_policy(), claims_of(inputs).allow_policy());
        assert_eq!(verified.issued_at(), None);
    }
}

#[test]
fn fixed_clock_tokens_verify_at_their_time() {
    for v in vectors()["vectors"].as_array().unwrap() {
        let keys = KeySet::new()
            .with(
                v["api_key"].as_str().unwrap(),
                public_key_hex(v["public_key_hex"].as_str().unwrap()),
            )
            .unwrap();
        let fixed = &v["fixed_clock"];
        let now = fixed["now_unix"].as_u64().unwrap();
        let verifier = Verifier::new(keys).with_leeway(0);
        assert!(verifier
            .verify_at(fixed["token"].as_str().unwrap(), now)
            .is_ok());
        let exp = fixed["exp"].as_u64().unwrap();
        assert!(verifier
            .verify_at(fixed["token"].as_str().unwrap(), exp)
            .is_err());
    }
}

#[test]
fn secret_parsing_matches_the_original() {
    for case in vectors()["secret_error_cases"].as_array().unwrap() {
        let Some(secret) = case["api_secret"].as_str() else {
            continue;
        };
        if case["case"].as_str().unwrap().starts_with("api_key") {
            continue;
        }
        let got = SigningKey::from_api_secret(secret);
        match case["result"].as_str().unwrap() {
            "ok" => assert!(got.is_ok(), "{}", case["case"]),
            "error: invalid api_secret" => {
                assert_eq!(
                    got.unwrap_err(),
                    KeyError::MissingSeparator,
                    "{}",
                    case["case"]
                )
            }
            "error: invalid secret format, expecting hex" => {
                assert_eq!(got.unwrap_err(), KeyError::NotHex, "{}", case["case"])
            }
            "error: invalid secret length" => assert!(
                matches!(got.unwrap_err(), KeyError::WrongSecretLength { .. }),
                "{}",
                case["case"]
            ),
            other => panic!("unexpected result {other}"),
        }
    }
}

#[test]
fn secret_errors_keep_the_original_words_and_name_the_fix() {
    let err = AccessToken::new("kid_1", "nounderscore").unwrap_err();
    assert!(err.to_string().starts_with("invalid api_secret"));
    assert!(err.to_string().contains("sk_"));
    let err = AccessToken::new("kid_1", "sk_zz").unwrap_err();
    assert!(err
        .to_string()
        .starts_with("invalid secret format, expecting hex"));
    let err = AccessToken::new("kid_1", "sk_00").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid secret length: 1 bytes, expected 32 (64 hex digits after `sk_`)"
    );
    assert_eq!(err.code(), "invalid_api_secret");
}

#[test]
fn api_key_is_escaped_like_serde_json() {
    // The original accepted any key; ours must still be 1..=64 chars without control characters,
    // and what it accepts must serialise exactly as serde_json does.
    let app = AccessToken::new("anything goes", crate::SECRET)
        .unwrap()
        .with_clock(FixedClock(crate::GOLDEN_NOW));
    let token = app
        .create_token(&crate::claims("g", "p", ("*", "*")), 60)
        .unwrap();
    let header = token.split('.').next().unwrap();
    use base64::Engine as _;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    assert_eq!(json, br#"{"alg":"EdDSA","kid":"anything goes"}"#);
    let quoted = AccessToken::new("a\"b\\c/d", crate::SECRET).unwrap();
    let token = quoted
        .create_token(&crate::claims("g", "p", ("*", "*")), 60)
        .unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    assert_eq!(json, br#"{"alg":"EdDSA","kid":"a\"b\\c/d"}"#);
    assert_eq!(
        AccessToken::new("", crate::SECRET).unwrap_err().code(),
        "invalid_api_key"
    );
}
