//! Properties: round trips, tamper evidence and matcher laws.

use proptest::prelude::*;
use pulsebeam_token::{Field, Pattern, PeerClaims, PeerPolicy, VerifyError};

use crate::{app, verifier, GOLDEN_NOW};

/// 1 to 16 characters, no control characters, no `*`; mixes ASCII, `:`/`\`, non-ASCII.
fn id() -> impl Strategy<Value = String> {
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
fn pattern() -> impl Strategy<Value = String> {
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

fn claims() -> impl Strategy<Value = PeerClaims> {
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

    #[test]
    fn arbitrary_input_never_verifies(input in ".{0,400}") {
        prop_assert!(verifier().verify(&input).is_err());
    }

    #[test]
    fn arbitrary_segments_never_verify(h in "[A-Za-z0-9_-]{0,80}", p in "[A-Za-z0-9_-]{0,200}", s in "[A-Za-z0-9_-]{86}") {
        let err = verifier().verify(&format!("{h}.{p}.{s}")).unwrap_err();
        let bounded = !matches!(err, VerifyError::TooLarge { .. });
        prop_assert!(bounded);
    }
}
