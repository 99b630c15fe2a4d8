//! Policy text and matching: `GROUP:PEER` parsing never panics, what parses prints back to
//! itself, and matching agrees with the spec's reading of a pattern (`*` anything, `ab*` prefix,
//! `*ab` suffix, `a*b` a prefix and a suffix that do not overlap).
//!
//! Input: the policy text, a newline, a group id, a newline, a peer id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsebeam_token::{Field, Pattern, PeerPolicy};

/// The spec's meaning of a pattern, written independently of the crate's.
fn spec_matches(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, suffix)) => value
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.ends_with(suffix)),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let source = lines.next().unwrap_or("");
    let group = lines.next().unwrap_or("");
    let peer = lines.next().unwrap_or("");

    match source.parse::<PeerPolicy>() {
        Ok(policy) => {
            let printed = policy.to_string();
            let again: PeerPolicy = printed.parse().expect("a printed policy parses");
            assert_eq!(again, policy, "{source:?} printed as {printed:?}");
            for (pattern, field) in [
                (policy.group_pattern(), Field::GroupPattern),
                (policy.peer_pattern(), Field::PeerPattern),
            ] {
                let fresh =
                    Pattern::new(pattern.as_str(), field).expect("a parsed pattern is valid");
                assert_eq!(fresh.as_str(), pattern.as_str());
                assert!(pattern.as_str().matches('*').count() <= 1);
            }
            assert_eq!(
                policy.allows(group, peer),
                spec_matches(policy.group_pattern().as_str(), group)
                    && spec_matches(policy.peer_pattern().as_str(), peer),
                "policy {printed:?} on ({group:?}, {peer:?})"
            );
        }
        Err(err) => {
            assert!(!err.code().is_empty());
            assert!(!err.to_string().is_empty());
        }
    }

    // A bare pattern against a value, and the constructor's own checks.
    if let Ok(pattern) = Pattern::new(source, Field::PeerPattern) {
        assert_eq!(
            pattern.matches(group),
            spec_matches(source, group),
            "{source:?} vs {group:?}"
        );
        let chars = source.chars().count();
        assert!((1..=pulsebeam_token::MAX_ID_CHARS).contains(&chars));
        assert!(!source.chars().any(char::is_control));
    }
});
