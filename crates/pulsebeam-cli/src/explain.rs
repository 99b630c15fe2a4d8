//! Policies in plain words.

use pulsebeam_token::{Pattern, PeerPolicy};

/// What one side of a policy admits, e.g. `groups starting with "dev"` or `any peer`.
pub(crate) fn pattern(pattern: &Pattern, noun: &str) -> String {
    let text = pattern.as_str();
    match text.split_once('*') {
        None => format!("the {noun} {text:?}"),
        Some(("", "")) => format!("any {noun}"),
        Some((prefix, "")) => format!("{noun}s starting with {prefix:?}"),
        Some(("", suffix)) => format!("{noun}s ending with {suffix:?}"),
        Some((prefix, suffix)) => {
            format!("{noun}s starting with {prefix:?} and ending with {suffix:?}")
        }
    }
}

/// What a whole policy admits, e.g. `any peer in groups starting with "dev"`.
pub(crate) fn policy(policy: &PeerPolicy) -> String {
    format!(
        "{} in {}",
        pattern(policy.peer_pattern(), "peer"),
        pattern(policy.group_pattern(), "group")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_in_words() {
        let cases = [
            ("*:*", "any peer in any group"),
            ("default:*", "any peer in the group \"default\""),
            (
                "dev*:bob",
                "the peer \"bob\" in groups starting with \"dev\"",
            ),
            ("*:*bob", "peers ending with \"bob\" in any group"),
            (
                "a*b:p",
                "the peer \"p\" in groups starting with \"a\" and ending with \"b\"",
            ),
        ];
        for (text, want) in cases {
            let parsed: PeerPolicy = text.parse().unwrap();
            assert_eq!(policy(&parsed), want, "{text}");
        }
    }
}
