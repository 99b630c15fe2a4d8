//! A corpus of hostile tokens: each is refused with the right kind of error.

use pulsebeam_token::{dangerous, TokenPart, VerifyError, DEFAULT_MAX_TOKEN_LEN};

use crate::verify::{b64, sign};
use crate::{app, claims, verifier};

const PAYLOAD: &str =
    r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"*","peer_id":"*"}}"#;

#[test]
fn algorithm_confusion_is_impossible() {
    let v = verifier();
    let headers = [
        r#"{"alg":"none","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"alg":"HS256","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"alg":"RS256","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"alg":"ES256","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"alg":"eddsa","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"alg":"Ed25519","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"alg":["EdDSA"],"kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"kid":"kid_73d8caa6c387d46c"}"#,
    ];
    for header in headers {
        // Even with a genuine Ed25519 signature by the right key, a wrong alg is refused.
        let token = sign(header, PAYLOAD);
        assert_eq!(
            v.verify(&token),
            Err(VerifyError::UnsupportedAlgorithm),
            "{header}"
        );
        // `none` with an empty signature.
        let bare = format!("{}.{}.", b64(header.as_bytes()), b64(PAYLOAD.as_bytes()));
        assert_eq!(
            v.verify(&bare),
            Err(VerifyError::UnsupportedAlgorithm),
            "{header}"
        );
    }

    // HS256 keyed with the public key, the classic confusion attack.
    use hmac::{Mac as _, SimpleHmac};
    let header = r#"{"alg":"HS256","kid":"kid_73d8caa6c387d46c"}"#;
    let input = format!("{}.{}", b64(header.as_bytes()), b64(PAYLOAD.as_bytes()));
    let mut mac =
        SimpleHmac::<sha2::Sha256>::new_from_slice(app().public_key().as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let mac = mac.finalize().into_bytes();
    assert_eq!(
        v.verify(&format!("{input}.{}", b64(&mac))),
        Err(VerifyError::UnsupportedAlgorithm)
    );
}

#[test]
fn header_shapes() {
    let v = verifier();
    let cases: &[(&str, VerifyError)] = &[
        (r#"{"alg":"EdDSA"}"#, VerifyError::MissingKeyId),
        (r#"{"alg":"EdDSA","kid":null}"#, VerifyError::MissingKeyId),
        (
            r#"{"alg":"EdDSA","kid":"kid_unknown"}"#,
            VerifyError::UnknownKeyId,
        ),
        (
            r#"{"alg":"EdDSA","kid":42}"#,
            VerifyError::Malformed {
                part: TokenPart::Header,
                detail: "`kid` must be a string",
            },
        ),
        (
            r#"{"alg":"EdDSA","alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#,
            VerifyError::Malformed {
                part: TokenPart::Header,
                detail: "a member is duplicated or of the wrong type",
            },
        ),
        (
            r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","kid":"kid_other"}"#,
            VerifyError::Malformed {
                part: TokenPart::Header,
                detail: "a member is duplicated or of the wrong type",
            },
        ),
        (
            r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","crit":["exp"]}"#,
            VerifyError::Malformed {
                part: TokenPart::Header,
                detail: "`crit` extensions are not supported",
            },
        ),
        (
            r#"["alg","EdDSA"]"#,
            VerifyError::Malformed {
                part: TokenPart::Header,
                detail: "a member is duplicated or of the wrong type",
            },
        ),
        (
            r#"{"alg":"EdDSA""#,
            VerifyError::Malformed {
                part: TokenPart::Header,
                detail: "not a valid JSON object",
            },
        ),
    ];
    for (header, want) in cases {
        assert_eq!(
            &v.verify(&sign(header, PAYLOAD)).unwrap_err(),
            want,
            "{header}"
        );
    }
}

#[test]
fn encodings_and_sizes() {
    let v = verifier();
    let good = app()
        .create_token(&claims("g", "p", ("*", "*")), 60)
        .unwrap();
    let [h, p, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let malformed = |t: &str| matches!(v.verify(t), Err(VerifyError::Malformed { .. }));
    assert!(malformed(&format!("{h}.{p}.{s}==")));
    assert!(
        malformed(&format!(
            "{h}.{p}.{}",
            s.replace('-', "+").replace('_', "/")
        )) || !s.contains(['-', '_'])
    );
    assert!(malformed(&format!("{h}!.{p}.{s}")));
    assert!(malformed(&format!(" {h}.{p}.{s}")));
    assert!(malformed(&format!("{h}.{p}.{s}\n")));
    assert!(malformed(&format!("{h}..{p}.{s}")));
    assert!(malformed(&format!("{h}.{p}.{}", &s[..40])));
    assert!(malformed("...."));
    assert!(malformed("a.b.c"));
    // Non-canonical trailing bits in the last signature character.
    let last = s.chars().last().unwrap();
    let bumped = match last {
        'A' => 'B',
        'Q' => 'R',
        'g' => 'h',
        'w' => 'x',
        _ => 'A',
    };
    let altered = format!("{h}.{p}.{}{bumped}", &s[..s.len() - 1]);
    assert!(v.verify(&altered).is_err());

    // Huge tokens are refused before decoding, whatever they hold.
    let huge = format!("{h}.{}.{s}", "A".repeat(DEFAULT_MAX_TOKEN_LEN));
    assert!(matches!(v.verify(&huge), Err(VerifyError::TooLarge { .. })));
    assert!(matches!(
        dangerous::decode_unverified(&huge),
        Err(VerifyError::TooLarge { .. })
    ));
    let tight = verifier().with_max_token_len(100);
    assert_eq!(
        tight.verify(&good),
        Err(VerifyError::TooLarge {
            len: good.len(),
            max: 100
        })
    );

    // Deeply nested JSON inside the size bound never overflows the stack: in an unknown claim
    // it is skipped, in a known one it is refused.
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let header = r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#;
    let unknown = format!(r#"{{"exp":9999999999,"gid":"g","pid":"p","ap":null,"x":{deep}}}"#);
    assert!(v.verify(&sign(header, &unknown)).is_ok());
    let known = format!(r#"{{"exp":9999999999,"gid":"g","pid":"p","ap":{deep}}}"#);
    assert!(matches!(
        v.verify(&sign(header, &known)),
        Err(VerifyError::Malformed {
            part: TokenPart::Payload,
            ..
        })
    ));
    let wide = format!(
        r#"{{"exp":9999999999,"gid":"g","pid":"p","ap":null,"x":"{}"}}"#,
        "y".repeat(3500)
    );
    let token = sign(r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#, &wide);
    assert!(matches!(
        v.verify(&token),
        Err(VerifyError::TooLarge { .. })
    ));
}

#[test]
fn json_must_be_utf8_even_in_ignored_members() {
    use ed25519_dalek::Signer as _;
    let seed: [u8; 32] = hex::decode(&crate::SECRET[3..])
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let header = br#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#.to_vec();
    let mut payload = br#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"x":"a"#.to_vec();
    payload.extend_from_slice(&[0x8e, 0x90]);
    payload.extend_from_slice(br#""}"#);
    let mut bad_header = br#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","x":""#.to_vec();
    bad_header.extend_from_slice(&[0xff]);
    bad_header.extend_from_slice(br#""}"#);
    let good_payload = br#"{"exp":9999999999,"gid":"g","pid":"p","ap":null}"#.to_vec();
    for (h, p, part) in [
        (&header, &payload, TokenPart::Payload),
        (&bad_header, &good_payload, TokenPart::Header),
    ] {
        let input = format!("{}.{}", b64(h), b64(p));
        let token = format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()));
        assert_eq!(
            verifier().verify(&token),
            Err(VerifyError::Malformed {
                part,
                detail: "JSON text is not valid UTF-8"
            })
        );
    }
}

#[test]
fn errors_never_echo_token_bytes() {
    let v = verifier();
    let secretish = "c2VjcmV0LXRva2VuLWJ5dGVz";
    for token in [
        format!("{secretish}.{secretish}.{secretish}"),
        sign(r#"{"alg":"EdDSA","kid":"kid_zzzzzzzzzz"}"#, PAYLOAD),
        sign(
            r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#,
            r#"{"exp":"zzzzzzzzzz"}"#,
        ),
    ] {
        let message = v.verify(&token).unwrap_err().to_string();
        assert!(!message.contains(secretish), "{message}");
        assert!(!message.contains("zzzzzzzzzz"), "{message}");
    }
}

#[test]
fn decode_unverified_reads_but_never_vouches() {
    let token = sign(r#"{"alg":"none","kid":"who-knows"}"#, PAYLOAD);
    let decoded = dangerous::decode_unverified(&token).unwrap();
    assert_eq!(decoded.alg(), Some("none"));
    assert_eq!(decoded.kid(), Some("who-knows"));
    assert_eq!(decoded.signature_len, 64);
    let claims = decoded.claims().unwrap();
    assert_eq!(claims.peer_id(), "p");
    assert!(dangerous::decode_unverified("not a token").is_err());
}

#[test]
fn duplicate_members_are_refused_everywhere() {
    let v = verifier();
    let header = r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#;
    let duplicated = |part| VerifyError::Malformed {
        part,
        detail: "a member is duplicated or of the wrong type",
    };
    let payloads = [
        // The last value would widen the policy to everyone.
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"g","peer_id":"x","peer_id":"*"}}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"g","group_id":"*","peer_id":"*"}}"#,
        // The same name written with an escape is the same name.
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"g","peer_\u0069d":"x","peer_id":"*"}}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"g","peer_id":"x","extra":1,"extra":2}}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":null,"role":"a","role":"b"}"#,
        r#"{"exp":9999999999,"gid":"g","pid":"p","p\u0069d":"q","ap":null}"#,
    ];
    for payload in payloads {
        assert_eq!(
            v.verify(&sign(header, payload)),
            Err(duplicated(TokenPart::Payload)),
            "{payload}"
        );
    }
    let headers = [
        r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","typ":"JWT","typ":"JWT"}"#,
        r#"{"alg":"EdDSA","k\u0069d":"kid_73d8caa6c387d46c","kid":"kid_73d8caa6c387d46c"}"#,
        r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","crit":null,"crit":null}"#,
    ];
    for header in headers {
        assert_eq!(
            v.verify(&sign(header, PAYLOAD)),
            Err(duplicated(TokenPart::Header)),
            "{header}"
        );
    }
    // Without the duplicate, the same token verifies: the refusal is about the duplicate.
    let single =
        r#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"g","peer_id":"x","extra":1}}"#;
    let verified = v.verify(&sign(header, single)).unwrap();
    assert_eq!(verified.allow_policy().unwrap().to_string(), "g:x");
    let typed = r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","typ":"JWT"}"#;
    assert!(v.verify(&sign(typed, PAYLOAD)).is_ok());
}

#[test]
fn header_key_id_reads_the_header_as_the_verifier_does() {
    let v = verifier();
    let good = app()
        .create_token(&claims("g", "p", ("*", "*")), 60)
        .unwrap();
    let [h, p, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    assert_eq!(
        dangerous::header_key_id(&good),
        Ok(Some(crate::KID.to_owned()))
    );
    // Whatever is wrong after the header is the verifier's to say, not this function's.
    for token in [
        format!("{h}.{p}.{}", &s[..85]),
        format!("{h}.{p}.{s}=="),
        format!("{h}.{p}=.{s}"),
        format!("{h}.{p}.{s}xyz"),
    ] {
        assert_eq!(
            dangerous::header_key_id(&token),
            Ok(Some(crate::KID.to_owned()))
        );
        assert!(matches!(
            v.verify(&token),
            Err(VerifyError::Malformed { .. } | VerifyError::InvalidSignature)
        ));
    }
    // A header it refuses, the verifier refuses with the same error.
    for token in [
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{s}.x"),
        sign(r#"{"alg":"none","kid":"kid_73d8caa6c387d46c"}"#, PAYLOAD),
        sign(r#"{"alg":"EdDSA","kid":7}"#, PAYLOAD),
        sign(r#"{"alg":"EdDSA","kid":"a","kid":"b"}"#, PAYLOAD),
        "x".repeat(DEFAULT_MAX_TOKEN_LEN + 1),
    ] {
        let error = dangerous::header_key_id(&token).unwrap_err();
        assert_eq!(v.verify(&token), Err(error));
    }
    assert_eq!(
        dangerous::header_key_id(&sign(r#"{"alg":"EdDSA"}"#, PAYLOAD)),
        Ok(None)
    );
}
