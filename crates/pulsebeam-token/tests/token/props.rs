//! Properties: round trips, tamper evidence and matcher laws.

use proptest::prelude::*;
use pulsebeam_token::{Field, Pattern, PeerClaims, PeerPolicy, TokenPart, VerifyError};

use crate::verify::b64;
use crate::{app, verifier, GOLDEN_NOW};

/// The errors a token can get before its signature is known to be good. The payload is
/// decoded only after the signature verifies, so it cannot be the malformed part.
fn refused_before_the_claims(error: &VerifyError) -> bool {
    matches!(
        error,
        VerifyError::TooLarge { .. }
            | VerifyError::Malformed {
                part: TokenPart::Token | TokenPart::Header | TokenPart::Signature,
                ..
            }
            | VerifyError::UnsupportedAlgorithm
            | VerifyError::MissingKeyId
            | VerifyError::UnknownKeyId
            | VerifyError::InvalidSignature
    )
}

/// 1 to 16 characters, no control characters, no `*`; mixes ASCII, `:`/`\`, non-ASCII.
pub fn id() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => Just(':'),
            1 => Just('\\'),
            1 => Just('"'),
            1 => Just('/'),
            1 => Just('é'),
            1 => Just('群'),
            1 => Just('🙂'),
        ],
        1..=16,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// A valid pattern: `*`, an id, or an id with one `*` put somewhere inside it.
pub fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        id(),
        (id(), any::<prop::sample::Index>()).prop_map(|(s, at)| {
            let mut chars: Vec<char> = s.chars().collect();
            chars.truncate(15);
            let at = at.index(chars.len() + 1);
            chars.insert(at, '*');
            chars.into_iter().collect()
        }),
    ]
}

pub fn claims() -> impl Strategy<Value = PeerClaims> {
    (id(), id(), pattern(), pattern()).prop_map(|(g, p, gp, pp)| {
        PeerClaims::new(&g, &p)
            .unwrap()
            .with_allow_policy(PeerPolicy::new(&gp, &pp).unwrap())
    })
}

/// The obvious, slow definition of a match, to check the compiled matcher against.
fn reference_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, suffix)) => {
            value.chars().count() >= prefix.chars().count() + suffix.chars().count()
                && value.starts_with(prefix)
                && value.ends_with(suffix)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mint_then_verify_round_trips(claims in claims(), ttl in 1u64..=u64::from(u32::MAX)) {
        let token = app().create_token(&claims, ttl).unwrap();
        let verified = verifier().verify_at(&token, GOLDEN_NOW).unwrap();
        prop_assert_eq!(verified.peer(), &claims);
        prop_assert_eq!(verified.expires_at(), GOLDEN_NOW + ttl);
    }

    #[test]
    fn any_single_byte_change_fails_verification(
        claims in claims(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let token = app().create_token(&claims, 3600).unwrap();
        let mut bytes = token.clone().into_bytes();
        let at = at.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        let changed = String::from_utf8_lossy(&bytes);
        prop_assert!(verifier().verify(&changed).is_err());
    }

    #[test]
    fn policy_text_round_trips(g in pattern(), p in pattern()) {
        let policy = PeerPolicy::new(&g, &p).unwrap();
        let parsed: PeerPolicy = policy.to_string().parse().unwrap();
        prop_assert_eq!(&parsed, &policy);
        prop_assert_eq!(parsed.group_pattern().as_str(), g.as_str());
    }

    #[test]
    fn matcher_agrees_with_the_definition(p in pattern(), v in id()) {
        let compiled = Pattern::new(&p, Field::PeerPattern).unwrap();
        prop_assert_eq!(compiled.matches(&v), reference_match(&p, &v));
    }

    #[test]
    fn matcher_laws(s in id(), extra in id()) {
        let exact = Pattern::new(&s, Field::PeerPattern).unwrap();
        prop_assert!(exact.matches(&s));
        prop_assert!(Pattern::new("*", Field::PeerPattern).unwrap().matches(&s));
        let mut prefix: String = s.chars().take(15).collect();
        let base = prefix.clone();
        prefix.push('*');
        let prefix = Pattern::new(&prefix, Field::PeerPattern).unwrap();
        let longer = format!("{base}{extra}");
        prop_assert!(prefix.matches(&longer));
        let suffix = Pattern::new(&format!("*{base}"), Field::PeerPattern).unwrap();
        let ending = format!("{extra}{base}");
        prop_assert!(suffix.matches(&ending));
        let grown = format!("{s}{extra}");
        prop_assert!(!exact.matches(&grown));
    }

    /// Text that the key never signed is refused before its claims are read: the reason is
    /// about the token's shape, algorithm, key or signature, never about claims or time.
    #[test]
    fn arbitrary_input_never_verifies(input in prop_oneof![
        ".{0,400}".boxed(),
        "[A-Za-z0-9_-]{0,120}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,100}".boxed(),
    ]) {
        let result = verifier().verify(&input);
        prop_assert!(
            matches!(result, Err(ref e) if refused_before_the_claims(e)),
            "{:?} gave {:?}", input, result
        );
    }

    /// A real token with its payload, signature or header replaced is refused, for the reason
    /// that fits the part replaced.
    #[test]
    fn tampered_tokens_never_verify(
        claims in claims(),
        other in claims(),
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        signature in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let token = app().create_token(&claims, 3600).unwrap();
        let [h, p, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let v = verifier();

        // Arbitrary bytes as the payload, and another genuine payload: the signature fails.
        let payload = b64(&bytes);
        let swapped = app().create_token(&other, 60).unwrap();
        let swapped = swapped.split('.').nth(1).unwrap();
        for payload in [payload.as_str(), swapped] {
            prop_assume!(payload != p);
            prop_assert_eq!(v.verify(&format!("{h}.{payload}.{s}")), Err(VerifyError::InvalidSignature));
        }

        // Any other 64 bytes as the signature: the signature fails.
        let forged = b64(&signature);
        prop_assume!(forged != s);
        prop_assert_eq!(v.verify(&format!("{h}.{p}.{forged}")), Err(VerifyError::InvalidSignature));
        // A signature of another length is malformed.
        if bytes.len() != 64 {
            let result = v.verify(&format!("{h}.{p}.{}", b64(&bytes)));
            let malformed = matches!(
                result,
                Err(VerifyError::Malformed { part: TokenPart::Signature, .. })
            );
            prop_assert!(malformed, "{:?}", result);
        }

        // Arbitrary bytes as the header: refused before the claims are read.
        let header = b64(&bytes);
        prop_assume!(header != h);
        let result = v.verify(&format!("{header}.{p}.{s}"));
        prop_assert!(
            matches!(result, Err(ref e) if refused_before_the_claims(e)),
            "{:?} gave {:?}", header, result
        );
    }

    #[test]
    fn arbitrary_segments_never_verify(h in "[A-Za-z0-9_-]{0,80}", p in "[A-Za-z0-9_-]{0,200}", s in "[A-Za-z0-9_-]{86}") {
        let err = verifier().verify(&format!("{h}.{p}.{s}")).unwrap_err();
        let bounded = !matches!(err, VerifyError::TooLarge { .. });
        prop_assert!(bounded);
    }
}
