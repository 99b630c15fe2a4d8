//! Passwords out of URLs before they reach a log line or an error message.
//!
//! The text may not be a well-formed URL (that is often why it is being shown), so the
//! redaction does not trust any one reading of it: a password may hold `/`, `@`, `:`, `?` or
//! `#` unescaped, and a query string may carry one (`?password=`). What could be a secret under
//! any reading is hidden; only the scheme, the user name, the host and the path stay.

/// `url` with any password replaced by `***`, for logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (format!("{scheme}://"), rest),
        _ => (String::new(), url),
    };
    // Userinfo ends at the last `@`: a password may hold `@` and `/`, a host never does.
    let Some((userinfo, after)) = rest.rsplit_once('@') else {
        return format!("{prefix}{}", redact_after_host(rest));
    };
    // An `@` behind a `?` or `#` may as well sit in a query value or a fragment, and then the
    // text after it is part of a secret too: nothing but the scheme is safe to show.
    if userinfo.contains(['?', '#']) {
        return format!("{prefix}***");
    }
    let user = match userinfo.split_once(':') {
        Some((user, _)) if user.bytes().all(is_plain) => format!("{user}:"),
        _ => String::new(),
    };
    format!("{prefix}{user}***@{}", redact_after_host(after))
}

/// Host, port and path as they are; a query string or fragment hidden whole: a value may hold
/// `&` or `name=`, so even the parameter names after the first could be a password's tail.
fn redact_after_host(text: &str) -> String {
    match text.find(['?', '#']) {
        Some(cut) => {
            let (head, tail) = text.split_at(cut);
            let mark = if tail.starts_with('?') { '?' } else { '#' };
            format!("{head}{mark}***")
        }
        None => text.to_owned(),
    }
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// Characters of a user name or parameter name that can be shown.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::redact_url;
    use proptest::prelude::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_stays_readable() {
        for (url, shown) in [
            (
                "redis://app:hunter2@10.0.0.5:6379/0",
                "redis://app:***@10.0.0.5:6379/0",
            ),
            (
                "redis://:hunter2@127.0.0.1:6379",
                "redis://:***@127.0.0.1:6379",
            ),
            ("redis://127.0.0.1:6379/2", "redis://127.0.0.1:6379/2"),
            ("rediss://u:a/b@c:d@h:6380/1", "rediss://u:***@h:6380/1"),
            ("redis://hunter2@h:6379", "redis://***@h:6379"),
            (
                "unix:///run/redis.sock?db=2&password=hunter2",
                "unix:///run/redis.sock?***",
            ),
            (
                "redis+unix:///run/redis.sock?password=hun#ter2",
                "redis+unix:///run/redis.sock?***",
            ),
            ("redis://h:1/0?password=hun@ter2", "redis://***"),
            ("redis://h:1/0#hunter2", "redis://h:1/0#***"),
            ("u:hunter2@h:6379", "u:***@h:6379"),
            ("turn:u:hunter2@h:3478", "turn:***@h:3478"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    /// Passwords: upper-case letters and every character a URL gives a meaning to, never
    /// empty of letters; everything else in the URLs is lower case, so any upper-case letter
    /// in the output is a leak.
    fn password() -> impl Strategy<Value = String> {
        let piece = "[A-Z/@:?#=&%;+!~*'()$,\\[\\] ]{0,12}";
        (piece, "[A-Z]", piece).prop_map(|(a, b, c)| format!("{a}{b}{c}"))
    }

    proptest! {
        // Cheap cases: many of them, to meet the rare mixes of `@`, `?` and `#`.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn no_password_survives_redaction(
            password in password(),
            second in password(),
            scheme in prop::sample::select(vec!["redis://", "rediss://", "unix://", "redis+unix://", "foo://", ""]),
            user in "[a-z0-9_]{0,8}",
            host in "[a-z0-9.]{1,12}(:[0-9]{1,5})?",
            path in "(/[a-z0-9.]{0,8}){0,2}",
            form in 0..7u8,
        ) {
            // A userinfo without a user name: its first `:` would make what precedes it the
            // user name, so that form gets passwords without one.
            let lone = password.replace(':', "%3A");
            let url = match form {
                0 => format!("{scheme}{user}:{password}@{host}{path}"),
                1 => format!("{scheme}:{password}@{host}{path}"),
                2 => format!("{scheme}{lone}@{host}{path}"),
                3 => format!("{scheme}{host}{path}?password={password}"),
                4 => format!("{scheme}{host}{path}?db=1&password={password}&protocol=resp3"),
                5 => format!("{scheme}{user}:{password}@{host}{path}?password={second}"),
                _ => format!("{scheme}{path}?password={password}#{second}"),
            };
            let shown = redact_url(&url);
            prop_assert!(!shown.contains(&password), "{url} -> {shown}");
            prop_assert!(
                !shown.chars().any(|c| c.is_ascii_uppercase()),
                "{url} -> {shown}"
            );
        }
    }
}
