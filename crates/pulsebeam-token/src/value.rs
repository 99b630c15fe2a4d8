//! The value rules of `tokens.md` section 4, shared by ids, patterns and key ids.

use crate::error::{Field, ValueError};

/// Most characters (Unicode scalar values) in a group id, peer id or policy pattern.
pub const MAX_ID_CHARS: usize = 16;
/// Most characters in an API key (`kid`) or a token id (`jti`).
pub const MAX_KEY_ID_CHARS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wildcards {
    /// Ids: `*` is refused.
    None,
    /// Patterns: at most one `*`.
    AtMostOne,
    /// Key ids and token ids: `*` is an ordinary character.
    Literal,
}

/// Checks `value` against the rules for `field`; returns the byte index of the wildcard, if any.
pub(crate) fn check(
    value: &str,
    field: Field,
    max: usize,
    wildcards: Wildcards,
) -> Result<Option<usize>, ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty { field, max });
    }
    let mut len = 0usize;
    let mut stars = 0usize;
    let mut star_at = None;
    for (position, (byte_index, c)) in value.char_indices().enumerate() {
        len += 1;
        if c.is_control() {
            return Err(ValueError::ControlCharacter { field, position });
        }
        if c == '*' && wildcards != Wildcards::Literal {
            if wildcards == Wildcards::None {
                return Err(ValueError::Wildcard { field });
            }
            stars += 1;
            star_at = Some(byte_index);
        }
    }
    if len > max {
        return Err(ValueError::TooLong { field, len, max });
    }
    if stars > 1 {
        return Err(ValueError::TooManyWildcards {
            field,
            count: stars,
        });
    }
    Ok(star_at)
}

pub(crate) fn check_id(value: &str, field: Field) -> Result<(), ValueError> {
    check(value, field, MAX_ID_CHARS, Wildcards::None).map(|_| ())
}

pub(crate) fn check_key_id(value: &str, field: Field) -> Result<(), ValueError> {
    check(value, field, MAX_KEY_ID_CHARS, Wildcards::Literal).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rules() {
        assert!(check_id("alice", Field::PeerId).is_ok());
        assert!(check_id("ピア🙂", Field::PeerId).is_ok());
        assert!(check_id(&"x".repeat(16), Field::PeerId).is_ok());
        assert!(
            check_id(&"é".repeat(16), Field::PeerId).is_ok(),
            "chars, not bytes"
        );
        assert_eq!(
            check_id("", Field::GroupId),
            Err(ValueError::Empty {
                field: Field::GroupId,
                max: 16
            })
        );
        assert_eq!(
            check_id(&"x".repeat(17), Field::PeerId),
            Err(ValueError::TooLong {
                field: Field::PeerId,
                len: 17,
                max: 16
            })
        );
        assert_eq!(
            check_id("a\nb", Field::PeerId),
            Err(ValueError::ControlCharacter {
                field: Field::PeerId,
                position: 1
            })
        );
        assert_eq!(
            check_id("a\u{85}", Field::PeerId),
            Err(ValueError::ControlCharacter {
                field: Field::PeerId,
                position: 1
            })
        );
        assert_eq!(
            check_id("a*", Field::GroupId),
            Err(ValueError::Wildcard {
                field: Field::GroupId
            })
        );
    }

    #[test]
    fn patterns_take_one_wildcard() {
        let p = Field::PeerPattern;
        assert_eq!(check("*", p, 16, Wildcards::AtMostOne), Ok(Some(0)));
        assert_eq!(check("ab*", p, 16, Wildcards::AtMostOne), Ok(Some(2)));
        assert_eq!(check("abc", p, 16, Wildcards::AtMostOne), Ok(None));
        assert_eq!(
            check("*a*", p, 16, Wildcards::AtMostOne),
            Err(ValueError::TooManyWildcards { field: p, count: 2 })
        );
    }

    #[test]
    fn key_ids_allow_longer_values() {
        assert!(check_key_id("kid_Ycl5ClRWJWNw8bqB25DMH", Field::ApiKey).is_ok());
        assert!(check_key_id(&"k".repeat(64), Field::ApiKey).is_ok());
        assert!(check_key_id(&"k".repeat(65), Field::ApiKey).is_err());
        assert!(check_key_id("", Field::ApiKey).is_err());
    }
}
