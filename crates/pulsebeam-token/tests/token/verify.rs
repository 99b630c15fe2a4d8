//! Verification: time, keys, options and tampering.

use pulsebeam_token::{
    AccessToken, Claim, FixedClock, KeyPair, KeySet, TokenOptions, TokenPart, Verifier, VerifyError,
};

use crate::{app, claims, verifier, GOLDEN_NOW, KID};

#[test]
fn minted_tokens_verify_with_claims_intact() {
    let token = app()
        .create_token(&claims("room1", "alice", ("room*", "*")), 600)
        .unwrap();
    let verified = verifier().verify(&token).unwrap();
    assert_eq!(verified.key_id(), KID);
    assert_eq!(verified.group_id(), "room1");
    assert_eq!(verified.peer_id(), "alice");
    assert_eq!(verified.expires_at(), GOLDEN_NOW + 600);
    assert_eq!(verified.allow_policy().unwrap().to_string(), "room*:*");
    assert!(verified.peer().allows("room2", "bob"));
    assert!(!verified.peer().allows("lobby", "bob"));
}

#[test]
fn expiry_honours_the_leeway_exactly() {
    let token = app()
        .create_token(&claims("g", "p", ("*", "*")), 100)
        .unwrap();
    let exp = GOLDEN_NOW + 100;
    let strict = verifier().with_leeway(0);
    assert!(strict.verify_at(&token, exp - 1).is_ok());
    assert_eq!(
        strict.verify_at(&token, exp),
        Err(VerifyError::Expired { exp, now: exp })
    );
    let lenient = verifier().with_leeway(30);
    assert!(lenient.verify_at(&token, exp + 29).is_ok());
    assert!(matches!(
        lenient.verify_at(&token, exp + 30),
        Err(VerifyError::Expired { .. })
    ));
    let err = strict.verify_at(&token, exp + 5).unwrap_err();
    assert_eq!(err.code(), "token_expired");
    assert!(err.to_string().contains("mint a new one"));
}

#[test]
fn optional_claims_are_added_on_request_and_honoured() {
    let options = TokenOptions::new(300)
        .with_issued_at()
        .with_not_before(GOLDEN_NOW + 100)
        .with_token_id("req-42");
    let minted = app().mint(&claims("g", "p", ("*", "*")), &options).unwrap();
    let payload = payload_json(&minted.token);
    assert_eq!(
        payload,
        format!(
            r#"{{"exp":{},"gid":"g","pid":"p","ap":{{"group_id":"*","peer_id":"*"}},"iat":{GOLDEN_NOW},"nbf":{},"jti":"req-42"}}"#,
            GOLDEN_NOW + 300,
            GOLDEN_NOW + 100
        )
    );
    let v = verifier().with_leeway(0);
    assert_eq!(
        v.verify_at(&minted.token, GOLDEN_NOW + 99),
        Err(VerifyError::NotYetValid {
            nbf: GOLDEN_NOW + 100,
            now: GOLDEN_NOW + 99
        })
    );
    let ok = v.verify_at(&minted.token, GOLDEN_NOW + 100).unwrap();
    assert_eq!(ok.issued_at(), Some(GOLDEN_NOW));
    assert_eq!(ok.not_before(), Some(GOLDEN_NOW + 100));
    assert_eq!(ok.token_id(), Some("req-42"));

    let random = TokenOptions::new(60).with_random_token_id().unwrap();
    let a = app().mint(&claims("g", "p", ("*", "*")), &random).unwrap();
    let jti = verifier()
        .verify(&a.token)
        .unwrap()
        .token_id()
        .unwrap()
        .to_owned();
    assert_eq!(jti.len(), 32);
    let b = app()
        .mint(
            &claims("g", "p", ("*", "*")),
            &TokenOptions::new(60).with_random_token_id().unwrap(),
        )
        .unwrap();
    assert_ne!(a.token, b.token);
}

#[test]
fn mint_side_rules_are_enforced() {
    let app = app();
    let c = claims("g", "p", ("*", "*"));
    assert_eq!(app.create_token(&c, 0).unwrap_err().code(), "zero_ttl");
    assert_eq!(
        app.create_token(&c, u64::from(u32::MAX) + 1)
            .unwrap_err()
            .code(),
        "ttl_too_long"
    );
    assert!(app.create_token(&c, u64::from(u32::MAX)).is_ok());
    let bare = pulsebeam_token::PeerClaims::new("g", "p").unwrap();
    let err = app.create_token(&bare, 60).unwrap_err();
    assert_eq!(err.code(), "missing_policy");
    assert!(err.to_string().contains("`*:*`"), "{err}");
    let err = app
        .mint(&c, &TokenOptions::new(60).with_token_id(""))
        .unwrap_err();
    assert_eq!(err.code(), "invalid_token_id");
    // A receive-only token is possible when asked for, and verifies with no policy.
    let minted = app
        .mint(&bare, &TokenOptions::new(60).allow_no_policy())
        .unwrap();
    let verified = verifier().verify(&minted.token).unwrap();
    assert!(verified.allow_policy().is_none());
    assert!(!verified.peer().allows("g", "p"));
}

#[test]
fn unknown_kid_and_rotation() {
    let token = app()
        .create_token(&claims("g", "p", ("*", "*")), 60)
        .unwrap();
    let other = KeyPair::generate().unwrap();
    let stranger = Verifier::new(
        KeySet::new()
            .with(other.api_key(), other.public_key())
            .unwrap(),
    )
    .with_clock(FixedClock(GOLDEN_NOW));
    assert_eq!(stranger.verify(&token), Err(VerifyError::UnknownKeyId));

    // Two keys side by side: tokens of both verify.
    let keys = KeySet::new()
        .with(KID, app().public_key())
        .unwrap()
        .with(other.api_key(), other.public_key())
        .unwrap();
    let both = Verifier::new(keys).with_clock(FixedClock(GOLDEN_NOW));
    let new_app = AccessToken::new(other.api_key(), &other.api_secret())
        .unwrap()
        .with_clock(FixedClock(GOLDEN_NOW));
    let new_token = new_app
        .create_token(&claims("g", "p", ("*", "*")), 60)
        .unwrap();
    assert_eq!(both.verify(&token).unwrap().key_id(), KID);
    assert_eq!(both.verify(&new_token).unwrap().key_id(), other.api_key());

    // Same kid, wrong key: the signature fails, nothing more is said.
    let impostor = Verifier::new(KeySet::new().with(KID, other.public_key()).unwrap())
        .with_clock(FixedClock(GOLDEN_NOW));
    let err = impostor.verify(&token).unwrap_err();
    assert_eq!(err, VerifyError::InvalidSignature);
    assert_eq!(err.to_string(), "invalid signature");
}

#[test]
fn tampering_with_each_part_fails_with_the_right_kind() {
    let token = app()
        .create_token(&claims("g", "alice", ("g", "*")), 600)
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let v = verifier();

    // A payload re-encoded with a different peer id keeps a valid shape but not the signature.
    let forged_payload = b64(payload_json(&token).replace("alice", "mallory").as_bytes());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(v.verify(&forged), Err(VerifyError::InvalidSignature));

    // Signature from another token of the same key.
    let other = app()
        .create_token(&claims("g", "bob", ("g", "*")), 600)
        .unwrap();
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        other.split('.').nth(2).unwrap()
    );
    assert_eq!(v.verify(&spliced), Err(VerifyError::InvalidSignature));

    // Truncations and segment counts.
    assert!(matches!(
        v.verify(&format!("{}.{}", parts[0], parts[1])),
        Err(VerifyError::Malformed {
            part: TokenPart::Token,
            ..
        })
    ));
    assert!(matches!(
        v.verify(&format!("{token}.x")),
        Err(VerifyError::Malformed {
            part: TokenPart::Token,
            ..
        })
    ));
    assert!(matches!(
        v.verify(&token[..token.len() - 1]),
        Err(VerifyError::Malformed {
            part: TokenPart::Signature,
            ..
        })
    ));
    assert_eq!(
        v.verify(""),
        Err(VerifyError::Malformed {
            part: TokenPart::Token,
            detail: "expected three base64url segments separated by `.`"
        })
    );
    // Padding is not canonical base64url.
    assert!(matches!(
        v.verify(&format!("{}=.{}.{}", parts[0], parts[1], parts[2])),
        Err(VerifyError::Malformed {
            part: TokenPart::Header,
            ..
        })
    ));
}

#[test]
fn bad_claims_under_a_valid_signature_are_typed() {
    let cases: &[(&str, VerifyError)] = &[
        (
            r#"{"gid":"g","pid":"p","ap":null}"#,
            VerifyError::MissingClaim {
                claim: Claim::Expiry,
            },
        ),
        (
            r#"{"exp":"9999999999","gid":"g","pid":"p","ap":null}"#,
            invalid(Claim::Expiry),
        ),
        (
            r#"{"exp":9999999999.5,"gid":"g","pid":"p","ap":null}"#,
            invalid(Claim::Expiry),
        ),
        (
            r#"{"exp":-1,"gid":"g","pid":"p","ap":null}"#,
            invalid(Claim::Expiry),
        ),
        (
            r#"{"exp":1e300,"gid":"g","pid":"p","ap":null}"#,
            invalid(Claim::Expiry),
        ),
        (
            r#"{"exp":9999999999,"pid":"p","ap":null}"#,
            VerifyError::MissingClaim {
                claim: Claim::GroupId,
            },
        ),
        (
            r#"{"exp":9999999999,"gid":7,"pid":"p","ap":null}"#,
            invalid(Claim::GroupId),
        ),
        (
            r#"{"exp":9999999999,"gid":"g","pid":"way-too-long-peer-id","ap":null}"#,
            invalid(Claim::PeerId),
        ),
        (
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":"*:*"}"#,
            invalid(Claim::AllowPolicy),
        ),
        (
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"**","peer_id":"*"}}"#,
            invalid(Claim::AllowPolicy),
        ),
        (
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"nbf":"soon"}"#,
            invalid(Claim::NotBefore),
        ),
        (
            r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"jti":5}"#,
            invalid(Claim::TokenId),
        ),
    ];
    let v = verifier();
    for (payload, want) in cases {
        let token = sign(r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#, payload);
        let got = v.verify(&token).unwrap_err();
        match (want, &got) {
            (
                VerifyError::InvalidClaim { claim: a, .. },
                VerifyError::InvalidClaim { claim: b, .. },
            ) => {
                assert_eq!(a, b, "{payload}")
            }
            _ => assert_eq!(&got, want, "{payload}"),
        }
    }
    // Duplicate claims are refused rather than resolved one way or the other.
    let dup = sign(
        r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","pid":"admin","ap":null}"#,
    );
    assert!(matches!(
        v.verify(&dup),
        Err(VerifyError::Malformed {
            part: TokenPart::Payload,
            ..
        })
    ));
    // Unknown extra claims are tolerated.
    let extra = sign(
        r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","typ":"JWT"}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"role":{"x":[1,2]}}"#,
    );
    assert!(v.verify(&extra).is_ok());
}

fn invalid(claim: Claim) -> VerifyError {
    VerifyError::InvalidClaim {
        claim,
        detail: String::new(),
    }
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn payload_json(token: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Signs arbitrary header and payload JSON with the golden key, the way a key holder could.
pub fn sign(header: &str, payload: &str) -> String {
    use ed25519_dalek::Signer as _;
    let seed: [u8; 32] = hex::decode(&crate::SECRET[3..])
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = key.sign(input.as_bytes()).to_bytes();
    format!("{input}.{}", b64(&signature))
}

#[test]
fn a_lifetime_cap_refuses_tokens_that_expire_too_far_ahead() {
    let day = 24 * 60 * 60;
    let capped = verifier().with_leeway(30).with_max_lifetime(day);
    assert_eq!(capped.max_lifetime_secs(), Some(day));
    assert_eq!(verifier().max_lifetime_secs(), None);
    let now = GOLDEN_NOW + 10;
    // Exactly at the cap (plus the leeway) is accepted, one second more is not.
    let at_cap = sign(
        r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#,
        &format!(
            r#"{{"exp":{},"gid":"g","pid":"p","ap":null}}"#,
            now + day + 30
        ),
    );
    assert!(capped.verify_at(&at_cap, now).is_ok());
    let over = sign(
        r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#,
        &format!(
            r#"{{"exp":{},"gid":"g","pid":"p","ap":null}}"#,
            now + day + 31
        ),
    );
    assert_eq!(
        capped.verify_at(&over, now),
        Err(VerifyError::LifetimeTooLong {
            exp: now + day + 31,
            max_exp: now + day + 30,
        })
    );
    // The largest `exp` a token can carry: accepted without a cap, refused with one.
    let forever = sign(
        r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#,
        &format!(r#"{{"exp":{},"gid":"g","pid":"p","ap":null}}"#, u64::MAX),
    );
    assert!(verifier().verify_at(&forever, now).is_ok());
    let err = capped.verify_at(&forever, now).unwrap_err();
    assert_eq!(err.code(), "token_lifetime_too_long");
    let message = err.to_string();
    assert!(message.contains("mint shorter-lived tokens"), "{message}");
    assert!(message.contains(&u64::MAX.to_string()), "{message}");
    // No overflow at the far end of the clock, and minted tokens within the cap verify.
    assert!(capped.verify_at(&forever, u64::MAX - 5).is_ok());
    let minted = app()
        .create_token(&claims("g", "p", ("*", "*")), day)
        .unwrap();
    assert!(capped.verify(&minted).is_ok());
    let long = app()
        .create_token(&claims("g", "p", ("*", "*")), 2 * day)
        .unwrap();
    assert!(matches!(
        capped.verify(&long),
        Err(VerifyError::LifetimeTooLong { .. })
    ));
}
