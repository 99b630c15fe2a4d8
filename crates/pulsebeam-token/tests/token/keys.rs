//! Key generation, export and import.

use pulsebeam_token::{
    AccessToken, FixedClock, Jwk, KeyError, KeyPair, KeySet, PublicKey, Verifier,
};

use crate::{claims, vectors};

#[test]
fn generated_pairs_have_the_documented_shapes_and_work() {
    let pair = KeyPair::generate().unwrap();
    let key = pair.api_key();
    assert!(key.starts_with("kid_") && key.len() == 20, "{key}");
    assert!(key[4..]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let secret = pair.api_secret();
    assert!(secret.starts_with("sk_") && secret.len() == 67);
    let app = AccessToken::new(key, &secret).unwrap();
    assert_eq!(app.public_key(), pair.public_key());
    let token = app.create_token(&claims("g", "p", ("*", "*")), 60).unwrap();
    let keys = KeySet::new().with(key, pair.public_key()).unwrap();
    assert!(Verifier::new(keys).verify(&token).is_ok());
    assert_ne!(KeyPair::generate().unwrap().api_secret(), secret);
}

#[test]
fn debug_output_never_shows_the_secret() {
    let pair = KeyPair::generate().unwrap();
    let secret = pair.api_secret();
    let hex_seed = &secret[3..];
    let app = AccessToken::new(pair.api_key(), &secret).unwrap();
    for shown in [
        format!("{pair:?}"),
        format!("{app:?}"),
        format!("{:?}", pair.signing_key()),
    ] {
        assert!(!shown.contains(hex_seed), "{shown}");
        assert!(shown.contains(&pair.public_key().to_hex()), "{shown}");
    }
}

#[test]
fn golden_public_keys_derive_from_the_seeds() {
    for v in vectors()["vectors"].as_array().unwrap() {
        let app = AccessToken::new("kid_x", v["api_secret"].as_str().unwrap()).unwrap();
        let hex = v["public_key_hex"].as_str().unwrap();
        assert_eq!(app.public_key().to_hex(), hex);
        assert_eq!(PublicKey::from_hex(hex).unwrap(), app.public_key());
    }
}

#[test]
fn jwk_round_trip_and_shape() {
    let pair = KeyPair::generate().unwrap();
    let jwk = pair.to_jwk();
    let json: serde_json::Value = serde_json::from_str(&jwk.to_json()).unwrap();
    assert_eq!(json["kty"], "OKP");
    assert_eq!(json["crv"], "Ed25519");
    assert_eq!(json["kid"], pair.api_key());
    assert_eq!(json["alg"], "EdDSA");
    assert_eq!(json["use"], "sig");
    assert_eq!(json["x"].as_str().unwrap().len(), 43);
    assert!(json.get("d").is_none());
    let back = Jwk::from_json(&jwk.to_json()).unwrap();
    assert_eq!(back.public_key().unwrap(), pair.public_key());

    // RFC 8037 appendix A.2 (the RFC 8032 test 1 key): its public part.
    let rfc = Jwk::from_json(
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
    )
    .unwrap();
    assert_eq!(
        rfc.public_key().unwrap().to_hex(),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
}

#[test]
fn jwks_round_trip_with_several_keys() {
    let a = KeyPair::generate().unwrap();
    let b = KeyPair::generate().unwrap();
    let set = KeySet::new()
        .with(a.api_key(), a.public_key())
        .unwrap()
        .with(b.api_key(), b.public_key())
        .unwrap();
    let jwks = serde_json::to_string(&set.to_jwks()).unwrap();
    let back = KeySet::from_jwks_json(&jwks).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back.get(a.api_key()), Some(&a.public_key()));
    assert_eq!(back.get(b.api_key()), Some(&b.public_key()));
    // A single JWK is accepted as a one-key set.
    let one = KeySet::from_jwks_json(&a.to_jwk().to_json()).unwrap();
    assert_eq!(one.len(), 1);
}

#[test]
fn bad_keys_are_refused_with_reasons() {
    let jwk_err = |text: &str| KeySet::from_jwks_json(text).unwrap_err();
    assert!(matches!(jwk_err("not json"), KeyError::InvalidJwk { .. }));
    assert!(matches!(
        jwk_err(r#"{"keys":5}"#),
        KeyError::InvalidJwk { .. }
    ));
    let pair = KeyPair::generate().unwrap();
    let mut jwk = pair.to_jwk();
    jwk.kid = None;
    assert!(jwk_err(&jwk.to_json()).to_string().contains("kid"));
    let mut private = pair.to_jwk();
    private.d = Some("AAAA".into());
    assert!(jwk_err(&private.to_json()).to_string().contains("private"));
    let mut rsa = pair.to_jwk();
    rsa.kty = "RSA".into();
    assert!(matches!(
        jwk_err(&rsa.to_json()),
        KeyError::InvalidJwk { .. }
    ));
    let mut hs = pair.to_jwk();
    hs.alg = Some("HS256".into());
    assert!(matches!(
        jwk_err(&hs.to_json()),
        KeyError::InvalidJwk { .. }
    ));
    let dup = format!(r#"{{"keys":[{0},{0}]}}"#, pair.to_jwk().to_json());
    assert_eq!(jwk_err(&dup), KeyError::DuplicateKeyId);

    assert!(matches!(
        PublicKey::from_hex("zz"),
        Err(KeyError::InvalidPublicKey { .. })
    ));
    assert!(matches!(
        PublicKey::from_hex("00"),
        Err(KeyError::InvalidPublicKey { .. })
    ));
    // The identity point is a valid encoding but a weak key.
    let identity = format!("01{}", "00".repeat(31));
    assert_eq!(
        PublicKey::from_hex(&identity).unwrap_err(),
        KeyError::InvalidPublicKey {
            reason: "weak (small-order) key"
        }
    );
}

#[test]
fn from_env_reads_both_variables() {
    // Only this test touches these variables.
    std::env::remove_var("PULSEBEAM_API_KEY");
    std::env::remove_var("PULSEBEAM_API_SECRET");
    assert_eq!(
        AccessToken::from_env().unwrap_err(),
        KeyError::MissingEnv {
            name: "PULSEBEAM_API_KEY"
        }
    );
    std::env::set_var("PULSEBEAM_API_KEY", crate::KID);
    assert_eq!(
        AccessToken::from_env().unwrap_err(),
        KeyError::MissingEnv {
            name: "PULSEBEAM_API_SECRET"
        }
    );
    std::env::set_var("PULSEBEAM_API_SECRET", crate::SECRET);
    let app = AccessToken::from_env()
        .unwrap()
        .with_clock(FixedClock(crate::GOLDEN_NOW));
    assert_eq!(app.api_key(), crate::KID);
    assert_eq!(
        app.create_token(&claims("g", "p", ("*", "*")), 1).unwrap(),
        crate::app()
            .create_token(&claims("g", "p", ("*", "*")), 1)
            .unwrap()
    );
}
