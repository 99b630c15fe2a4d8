//! Allow policies: a pattern for the group and one for the peer, compiled once, matched often.

use std::fmt;
use std::str::FromStr;

use crate::error::{Field, ValueError};
use crate::value::{check, Wildcards, MAX_ID_CHARS};

/// One side of a policy: `*`, `exact`, `prefix*`, `*suffix` or `prefix*suffix`.
///
/// At most one `*`; prefix and suffix never overlap, so `a*a` does not match `a`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: Box<str>,
    /// Byte index of the `*`, if any.
    star: Option<usize>,
}

impl Pattern {
    /// Parses and checks a pattern for `field` ([`Field::GroupPattern`] or [`Field::PeerPattern`]).
    ///
    /// # Errors
    ///
    /// A [`ValueError`] when the pattern is empty, longer than 16 characters, holds a control
    /// character or more than one `*`.
    pub fn new(source: &str, field: Field) -> Result<Self, ValueError> {
        let star = check(source, field, MAX_ID_CHARS, Wildcards::AtMostOne)?;
        Ok(Pattern {
            source: source.into(),
            star,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `value` matches the pattern.
    pub fn matches(&self, value: &str) -> bool {
        match self.star {
            None => *self.source == *value,
            Some(at) => {
                let (prefix, rest) = self.source.split_at(at);
                let suffix = rest.get(1..).unwrap_or("");
                value.len() >= prefix.len() + suffix.len()
                    && value.starts_with(prefix)
                    && value.ends_with(suffix)
            }
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.source, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Which peers a token's holder may reach: a group pattern and a peer pattern, both of which
/// must match.
///
/// ```
/// use pulsebeam_token::PeerPolicy;
///
/// let policy: PeerPolicy = "dev*:*".parse()?;
/// assert!(policy.allows("devs", "alice"));
/// assert!(!policy.allows("ops", "alice"));
/// assert_eq!(policy.to_string(), "dev*:*");
/// # Ok::<(), pulsebeam_token::ParsePolicyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerPolicy {
    group: Pattern,
    peer: Pattern,
}

impl PeerPolicy {
    /// A policy from a group pattern and a peer pattern.
    ///
    /// # Errors
    ///
    /// A [`ValueError`] naming the pattern that breaks the rules.
    pub fn new(group_pattern: &str, peer_pattern: &str) -> Result<Self, ValueError> {
        Ok(PeerPolicy {
            group: Pattern::new(group_pattern, Field::GroupPattern)?,
            peer: Pattern::new(peer_pattern, Field::PeerPattern)?,
        })
    }

    /// The policy `*:*`, which admits every peer of the project.
    pub fn allow_all() -> Self {
        let any = || Pattern {
            source: "*".into(),
            star: Some(0),
        };
        PeerPolicy {
            group: any(),
            peer: any(),
        }
    }

    /// The group pattern.
    pub fn group_pattern(&self) -> &Pattern {
        &self.group
    }

    /// The peer pattern.
    pub fn peer_pattern(&self) -> &Pattern {
        &self.peer
    }

    /// Whether the policy admits the peer `(group_id, peer_id)`.
    pub fn allows(&self, group_id: &str, peer_id: &str) -> bool {
        self.group.matches(group_id) && self.peer.matches(peer_id)
    }

    /// Whether this is `*:*`.
    pub fn is_allow_all(&self) -> bool {
        &*self.group.source == "*" && &*self.peer.source == "*"
    }
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerPolicy({self})")
    }
}

/// The CLI form `group:peer`. A `:` or `\` inside a pattern is written `\:` or `\\`, so that
/// every policy round-trips through [`FromStr`].
impl fmt::Display for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.group.source)?;
        f.write_str(":")?;
        write_escaped(f, &self.peer.source)
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c == ':' || c == '\\' {
            f.write_str("\\")?;
        }
        fmt::Write::write_char(f, c)?;
    }
    Ok(())
}

/// Why a `group:peer` policy string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePolicyError {
    /// No `:` separates the two patterns.
    #[error("policy `{input}` has no `:`; write it as GROUP:PEER, e.g. `*:*` or `room1:*`")]
    MissingSeparator {
        /// The text given.
        input: String,
    },
    /// More than one unescaped `:`.
    #[error("policy `{input}` has more than one `:`; write it as GROUP:PEER and escape a literal colon as `\\:`")]
    ExtraSeparator {
        /// The text given.
        input: String,
    },
    /// A `\` at the very end escapes nothing.
    #[error("policy `{input}` ends with a lone `\\`; write a literal backslash as `\\\\`")]
    TrailingEscape {
        /// The text given.
        input: String,
    },
    /// One of the patterns breaks the rules.
    #[error("policy `{input}`: {source}")]
    Invalid {
        /// The text given.
        input: String,
        /// The broken rule.
        source: ValueError,
    },
}

impl ParsePolicyError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ParsePolicyError::Invalid { source, .. } => source.field().code(),
            _ => "invalid_policy",
        }
    }
}

impl FromStr for PeerPolicy {
    type Err = ParsePolicyError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut parts = [String::new(), String::new()];
        let mut current = 0usize;
        let mut chars = input.chars();
        while let Some(c) = chars.next() {
            let c = match c {
                '\\' => chars
                    .next()
                    .ok_or_else(|| ParsePolicyError::TrailingEscape {
                        input: input.to_owned(),
                    })?,
                ':' if current == 0 => {
                    current = 1;
                    continue;
                }
                ':' => {
                    return Err(ParsePolicyError::ExtraSeparator {
                        input: input.to_owned(),
                    })
                }
                c => c,
            };
            if let Some(part) = parts.get_mut(current) {
                part.push(c);
            }
        }
        if current == 0 {
            return Err(ParsePolicyError::MissingSeparator {
                input: input.to_owned(),
            });
        }
        let [group, peer] = parts;
        PeerPolicy::new(&group, &peer).map_err(|source| ParsePolicyError::Invalid {
            input: input.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Pattern {
        Pattern::new(s, Field::PeerPattern).unwrap()
    }

    #[test]
    fn pattern_semantics() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("ab*", "ab", true),
            ("ab*", "abz", true),
            ("ab*", "a", false),
            ("*ab", "xab", true),
            ("*ab", "abx", false),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("é*", "éa", true),
            ("*🙂", "ピア🙂", true),
        ];
        for (p, v, want) in cases {
            assert_eq!(pat(p).matches(v), want, "{p:?} vs {v:?}");
        }
    }

    #[test]
    fn policy_text_form() {
        let p: PeerPolicy = "test:peer-*".parse().unwrap();
        assert_eq!(p.group_pattern().as_str(), "test");
        assert_eq!(p.peer_pattern().as_str(), "peer-*");
        assert!(p.allows("test", "peer-1"));
        assert!(!p.allows("test2", "peer-1"));

        let odd = PeerPolicy::new("a:b", "c\\d").unwrap();
        assert_eq!(odd.to_string(), "a\\:b:c\\\\d");
        assert_eq!(odd.to_string().parse::<PeerPolicy>().unwrap(), odd);

        assert!(matches!(
            "nocolon".parse::<PeerPolicy>(),
            Err(ParsePolicyError::MissingSeparator { .. })
        ));
        assert!(matches!(
            "a:b:c".parse::<PeerPolicy>(),
            Err(ParsePolicyError::ExtraSeparator { .. })
        ));
        assert!(matches!(
            "a:b\\".parse::<PeerPolicy>(),
            Err(ParsePolicyError::TrailingEscape { .. })
        ));
        let err = ":".parse::<PeerPolicy>().unwrap_err();
        assert_eq!(err.code(), "invalid_group_pattern");
        assert!(PeerPolicy::allow_all().is_allow_all());
        assert_eq!(PeerPolicy::allow_all(), "*:*".parse().unwrap());
    }
}
