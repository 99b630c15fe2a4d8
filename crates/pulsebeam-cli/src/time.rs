//! Durations on the command line, and times shown to people.

use std::fmt;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const YEAR: u64 = 365 * DAY;

/// A token lifetime from the command line: `3600`, `90s`, `15m`, `1h` or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// The lifetime in seconds.
    pub secs: u64,
    /// Whether it was written as a bare number (which might have been meant as milliseconds).
    pub bare: bool,
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", span(self.secs))
    }
}

/// Parses a [`Ttl`]; the clap value parser of `--duration`.
pub(crate) fn parse_ttl(text: &str) -> Result<Ttl, String> {
    let text = text.trim();
    let (digits, unit, bare) = match text.char_indices().last() {
        Some((at, c @ ('s' | 'm' | 'h' | 'd'))) => (text.get(..at).unwrap_or(""), c, false),
        _ => (text, 's', true),
    };
    let hint = "give seconds (e.g. 3600) or a number with s, m, h or d (e.g. 90m, 1h, 7d)";
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a duration; {hint}"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large; {hint}"))?;
    let scale = match unit {
        'm' => MINUTE,
        'h' => HOUR,
        'd' => DAY,
        _ => 1,
    };
    let secs = n
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large; {hint}"))?;
    Ok(Ttl { secs, bare })
}

/// A span in one or two units, floor-rounded: `42s`, `59m`, `1h 30m`, `3d`, `137y`.
pub(crate) fn span(secs: u64) -> String {
    let units = [
        (YEAR, "y"),
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (1, "s"),
    ];
    for (i, (size, name)) in units.iter().enumerate() {
        if secs >= *size {
            let count = secs / size;
            let rest = secs % size;
            if let Some((next, next_name)) = units.get(i + 1) {
                let extra = rest / next;
                if count < 10 && extra > 0 {
                    return format!("{count}{name} {extra}{next_name}");
                }
            }
            return format!("{count}{name}");
        }
    }
    "0s".to_owned()
}

/// `at` relative to `now`: `in 59m`, `3h ago`, or `now`.
pub(crate) fn relative(at: u64, now: u64) -> String {
    match at.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", span(at - now)),
        std::cmp::Ordering::Less => format!("{} ago", span(now - at)),
        std::cmp::Ordering::Equal => "now".to_owned(),
    }
}

/// A Unix time as RFC 3339 UTC, e.g. `2025-01-01T01:00:00Z`.
pub(crate) fn utc(unix: u64) -> String {
    let days = unix / DAY;
    let rem = unix % DAY;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / HOUR,
        rem % HOUR / MINUTE,
        rem % MINUTE
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        let ok = [
            ("3600", 3600, true),
            ("90s", 90, false),
            ("15m", 900, false),
            ("1h", 3600, false),
            ("7d", 604_800, false),
            (" 5 ", 5, true),
        ];
        for (text, secs, bare) in ok {
            assert_eq!(parse_ttl(text), Ok(Ttl { secs, bare }), "{text}");
        }
        for bad in [
            "",
            "h",
            "-5",
            "1.5h",
            "1w",
            "1 h",
            "99999999999999999999",
            "999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn spans_and_relative_times() {
        let cases = [
            (0, "0s"),
            (42, "42s"),
            (60, "1m"),
            (90, "1m 30s"),
            (3595, "59m"),
            (3600, "1h"),
            (5400, "1h 30m"),
            (3 * HOUR + 5, "3h"),
            (DAY + HOUR, "1d 1h"),
            (400 * DAY, "1y 35d"),
            (137 * YEAR, "137y"),
        ];
        for (secs, want) in cases {
            assert_eq!(span(secs), want, "{secs}");
        }
        assert_eq!(relative(1000 + 3595, 1000), "in 59m");
        assert_eq!(relative(1000, 1000 + 3 * HOUR), "3h ago");
        assert_eq!(relative(5, 5), "now");
    }

    /// Text near the grammar as well as anywhere: a number with an optional sign, fraction,
    /// unit and surrounding spaces (some too long for a `u64`); the same pieces in any order;
    /// and any printable text.
    fn ttl_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let space = "[ \t\u{a0}\u{3000}]{0,2}";
        let near = (
            space,
            "[-+]?",
            "[0-9]{0,22}",
            "(\\.[0-9])?",
            "[smhdwy ]?",
            space,
        )
            .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f].concat());
        let piece = prop_oneof![
            4 => "[0-9]{1,22}",
            2 => "[smhdwy]",
            1 => "[ \t\u{a0}\u{3000}]",
            1 => "[-+._,eE]",
            1 => "\\PC",
        ];
        prop_oneof![
            3 => near,
            2 => proptest::collection::vec(piece, 0..5).prop_map(|parts| parts.concat()),
            1 => "\\PC{0,24}",
        ]
    }

    /// The grammar read independently: optional surrounding whitespace, ASCII digits, at most
    /// one unit letter at the end; the value must fit in a `u64` once scaled.
    fn reference_ttl(text: &str) -> Option<Ttl> {
        let text = text.trim();
        let (digits, scale, bare) = if let Some(d) = text.strip_suffix('d') {
            (d, u128::from(DAY), false)
        } else if let Some(h) = text.strip_suffix('h') {
            (h, u128::from(HOUR), false)
        } else if let Some(m) = text.strip_suffix('m') {
            (m, u128::from(MINUTE), false)
        } else if let Some(s) = text.strip_suffix('s') {
            (s, 1, false)
        } else {
            (text, 1, true)
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut value: u128 = 0;
        for c in digits.chars() {
            value = value
                .checked_mul(10)?
                .checked_add(u128::from(c.to_digit(10)?))?;
        }
        let secs = u64::try_from(value.checked_mul(scale)?).ok()?;
        Some(Ttl { secs, bare })
    }

    proptest::proptest! {
        #[test]
        fn ttl_units_scale(n in 0u64..1_000_000, unit in 0usize..5) {
            let (suffix, scale) = [("", 1), ("s", 1), ("m", MINUTE), ("h", HOUR), ("d", DAY)][unit];
            let ttl = parse_ttl(&format!("{n}{suffix}")).unwrap();
            proptest::prop_assert_eq!(ttl.secs, n * scale);
            proptest::prop_assert_eq!(ttl.bare, suffix.is_empty());
        }

        /// Every input gets an answer, and it is the right one: an `Ok` exactly when the
        /// reference reading below accepts the text, with the same seconds, and otherwise an
        /// error that names the input and says what to write instead.
        #[test]
        fn ttl_parsing_is_total(text in ttl_text()) {
            match (parse_ttl(&text), reference_ttl(&text)) {
                (Ok(ttl), Some(want)) => proptest::prop_assert_eq!(ttl, want, "{:?}", text),
                (Err(message), None) => {
                    proptest::prop_assert!(message.starts_with(&format!("`{}` is ", text.trim())), "{}", message);
                    proptest::prop_assert!(message.ends_with("(e.g. 90m, 1h, 7d)"), "{}", message);
                }
                (got, want) => proptest::prop_assert!(false, "{:?}: got {:?}, want {:?}", text, got, want),
            }
        }

        #[test]
        fn times_render_for_every_input(a in proptest::num::u64::ANY, b in proptest::num::u64::ANY) {
            let when = utc(a);
            proptest::prop_assert!(when.ends_with('Z'));
            let rel = relative(a, b);
            proptest::prop_assert!(rel == "now" || rel.starts_with("in ") || rel.ends_with(" ago"));
        }

        #[test]
        fn utc_counts_whole_days(days in 0u64..3_000_000) {
            // Midnight of consecutive days: the date changes and the clock reads zero.
            let today = utc(days * DAY);
            let tomorrow = utc((days + 1) * DAY);
            proptest::prop_assert!(today.ends_with("T00:00:00Z"));
            proptest::prop_assert!(today < tomorrow || today.len() < tomorrow.len());
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_735_693_200), "2025-01-01T01:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(6_090_792_305), "2163-01-04T06:45:05Z");
        // The largest input must not overflow.
        assert!(utc(u64::MAX).ends_with('Z'));
    }
}
