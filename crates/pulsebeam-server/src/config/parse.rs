//! TOML text to a typed section, with errors that say where and what went wrong but never
//! quote the text.
//!
//! The TOML parser's own message shows the offending line, and a configuration line may be
//! `secret = "…`, a Redis URL with its password or the admin token's hash: on a failed reload
//! that message would reach the log and the audit trail. So the error is rebuilt from parts
//! that cannot hold the file's values: the position, the key (read from the file only where it
//! is a plain `name.name`, with `[i]` for arrays of tables), and a problem and fix chosen from
//! the parser's message, keeping only the parts the grammar or the schema wrote.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::check::{SOCKET_ADDR_FIX, SOCKET_ADDR_PROBLEM};
use super::error::ConfigError;

/// Parses `text` as TOML into `T`.
///
/// # Errors
///
/// [`ConfigError::Parse`] naming line, column, key, problem and fix, without the file's text.
pub(super) fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|err| describe(text, &err))
}

/// The safe form of `err`, a failure to read `text`.
fn describe(text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map(|span| span.start);
    let (line, column) = offset.map_or((None, None), |offset| {
        let (line, column) = position(text, offset);
        (u32::try_from(line).ok(), u32::try_from(column).ok())
    });
    // Grammar errors come from the parser alone, whose messages are fixed text; once the
    // text is valid TOML, the error is the schema's, whose messages quote values.
    let (problem, fix) = if text.parse::<toml::Table>().is_err() {
        syntax_problem(err.message())
    } else {
        schema_problem(err.message())
    };
    ConfigError::Parse {
        file: None,
        line,
        column,
        key: offset.and_then(|offset| key_at(text, offset)),
        problem,
        fix,
    }
}

/// Line and column (both from 1, the column in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (before.matches('\n').count() + 1, column)
}

/// What went wrong in the TOML grammar, and the usual fix.
fn syntax_problem(message: &str) -> (String, String) {
    let fix = if message.starts_with("string values must be quoted") {
        "put the value in double quotes, e.g. key = \"value\""
    } else if message.contains("escape") {
        "inside \"...\" a backslash starts an escape: write \\\\ for one backslash, or use single quotes '...'"
    } else if message.contains("string") {
        "close the string with its quote on the same line (\"\"\" or ''' for a value over several lines)"
    } else if message.starts_with("duplicate key") {
        "keep one of the two: a key or table may appear only once ([[name]] makes a list of tables)"
    } else if message.contains("array") {
        "separate the elements with commas and close the list with ]"
    } else if message.starts_with("key with no value") {
        "write the line as key = value"
    } else {
        "fix the TOML syntax at this place (https://toml.io)"
    };
    let problem = if grammar_only(message) {
        message.to_owned()
    } else {
        "invalid TOML syntax".to_owned()
    };
    (problem, fix.to_owned())
}

/// Whether `message` is made only of the grammar's words: every back-quoted part is a token of
/// at most three characters (`=`, `]`, `"`, `\`), so no value of the file can sit in it.
fn grammar_only(message: &str) -> bool {
    message.len() <= 200
        && message.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && message
            .split('`')
            .skip(1)
            .step_by(2)
            .all(|quoted| quoted.len() <= 3)
}

/// What in the schema went wrong, without the value: serde's messages quote it
/// ("invalid type: string \"…\", expected usize").
fn schema_problem(message: &str) -> (String, String) {
    if message == SOCKET_ADDR_PROBLEM {
        return (SOCKET_ADDR_PROBLEM.to_owned(), SOCKET_ADDR_FIX.to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let problem = if is_plain_key(name) {
            format!("unknown key `{name}`")
        } else {
            "unknown key".to_owned()
        };
        let fix = match expected.strip_prefix(", expected ") {
            Some(keys) if schema_words(keys) => {
                format!("check the spelling; this table takes {keys}")
            }
            _ if expected.contains("there are no fields") => {
                "remove it: this table takes no keys".to_owned()
            }
            _ => "check the spelling against the README's list of keys".to_owned(),
        };
        return (problem, fix);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split_once('`').map_or(rest, |(name, _)| name);
        if is_plain_key(name) {
            return (
                format!("missing key `{name}`"),
                format!("add `{name}` to this table"),
            );
        }
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        let name = rest.split_once('`').map_or(rest, |(name, _)| name);
        if is_plain_key(name) {
            return (
                format!("key `{name}` given twice"),
                "keep one of the two".to_owned(),
            );
        }
    }
    // "invalid type: VALUE, expected WHAT", "invalid value: …", "unknown variant `VALUE`,
    // expected …", "invalid length N, expected …": the schema's half comes last, and what it
    // expects never holds ", expected ".
    let expected = message
        .rsplit_once(", expected ")
        .map(|(_, expected)| expected)
        .filter(|expected| schema_words(expected));
    let problem = if message.starts_with("invalid type") {
        "wrong type of value"
    } else if message.starts_with("unknown variant") {
        "not one of the accepted values"
    } else if message.starts_with("invalid length") {
        "wrong number of elements"
    } else {
        "invalid value"
    };
    match expected {
        Some(expected) => (
            format!("{problem}, expected {expected}"),
            format!("give {expected} (the README documents every key)"),
        ),
        None => (
            problem.to_owned(),
            "give a value of the kind the README documents for this key".to_owned(),
        ),
    }
}

/// Whether `text` reads like the schema's own words: type names and back-quoted key or
/// variant names, nothing a value would need (quotes, `:`, `/`, `@`, `=`).
fn schema_words(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 1024
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" `,_-".contains(&b))
}

/// A bare TOML key (`A-Z a-z 0-9 _ -`), short enough to be a name and not a value.
fn is_plain_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A dotted key of bare keys (`a.b`, spaces around the dots allowed), as its parts.
fn plain_path(text: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = text.trim().split('.').map(str::trim).collect();
    parts.iter().all(|part| is_plain_key(part)).then_some(parts)
}

/// The key of the line that holds byte `offset` of `text`, as `table[i].key`, read from the
/// headers and `key =` lines before it; `None` where the lines do not read as plain TOML.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut tables = Tables::default();
    // The table the lines belong to; `None` after a header that is not a plain name.
    let mut table = Some(String::new());
    // A value still open at the end of the previous line, and the key it belongs to.
    let mut open: Option<(Option<String>, Value)> = None;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let here = offset < end || end == text.len();
        if let Some((key, value)) = open.as_mut() {
            let still_open = value.feed(line);
            if here {
                return key.clone();
            }
            if !still_open {
                open = None;
            }
            start = end;
            continue;
        }
        let code = line.trim_start();
        if code.starts_with('[') {
            table = tables.header(code);
            if here {
                return table;
            }
        } else if let Some((name, rest)) = code.split_once('=').filter(|_| !code.starts_with('#')) {
            let key = plain_path(name).and_then(|parts| {
                let table = table.as_deref()?;
                let mut key = table.to_owned();
                for part in parts {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(part);
                }
                Some(key)
            });
            if here {
                return key;
            }
            let mut value = Value::default();
            if value.feed(rest) {
                open = Some((key, value));
            }
        } else if here {
            return None;
        }
        start = end;
    }
    None
}

/// How often each array of tables has appeared, under the element of its parent it is in.
#[derive(Default)]
struct Tables {
    counts: HashMap<String, usize>,
}

impl Tables {
    /// Reads a `[a.b]` or `[[a.b]]` line and returns the table it opens, as `a[1].b[0]`.
    fn header(&mut self, code: &str) -> Option<String> {
        let (array, inner) = match code.strip_prefix("[[") {
            Some(rest) => (true, rest.split_once("]]")?.0),
            None => (false, code.strip_prefix('[')?.split_once(']')?.0),
        };
        let parts = plain_path(inner)?;
        let mut path = String::new();
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.into_iter().enumerate() {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
            let count = if array && i == last {
                let count = self.counts.entry(path.clone()).or_insert(0);
                *count += 1;
                Some(*count)
            } else {
                self.counts.get(&path).copied()
            };
            if let Some(count) = count {
                path.push_str(&format!("[{}]", count.saturating_sub(1)));
            }
        }
        Some(path)
    }
}

/// What of a value is still open at the end of a line: a multi-line string, or brackets.
#[derive(Default)]
struct Value {
    depth: usize,
    multi_line: Option<&'static str>,
}

impl Value {
    /// Reads one more piece of the value; whether it is still open after it.
    fn feed(&mut self, mut rest: &str) -> bool {
        loop {
            if let Some(quote) = self.multi_line {
                match closing(rest, quote) {
                    Some(after) => {
                        rest = after;
                        self.multi_line = None;
                    }
                    None => return true,
                }
            }
            let Some(at) = rest.find(['"', '\'', '[', ']', '{', '}', '#']) else {
                break;
            };
            let (_, from) = rest.split_at(at);
            let mut chars = from.chars();
            let Some(c) = chars.next() else { break };
            let after = chars.as_str();
            rest = match c {
                '"' | '\'' => {
                    let quote = if c == '"' { "\"\"\"" } else { "'''" };
                    if let Some(inside) = from.strip_prefix(quote) {
                        self.multi_line = Some(quote);
                        inside
                    } else {
                        // A one-line string ends on this line, closed or not.
                        closing(after, if c == '"' { "\"" } else { "'" }).unwrap_or("")
                    }
                }
                '[' | '{' => {
                    self.depth += 1;
                    after
                }
                ']' | '}' => {
                    self.depth = self.depth.saturating_sub(1);
                    after
                }
                _ => break, // a comment
            };
        }
        self.depth > 0 || self.multi_line.is_some()
    }
}

/// The text after the first `quote` in `text` that a backslash does not escape (only `"`
/// strings have escapes, but a `\` before a `'` changes nothing here that matters).
fn closing<'a>(text: &'a str, quote: &str) -> Option<&'a str> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote.starts_with('"') {
            escaped = true;
        } else if text.get(i..).is_some_and(|t| t.starts_with(quote)) {
            return text.get(i + quote.len()..);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        // `é` is two bytes but one column.
        assert_eq!(position(text, 10), (2, 4));
        assert_eq!(position(text, text.len()), (3, 1));
        assert_eq!(position(text, 9), (2, 3));
    }

    #[test]
    fn the_key_of_a_line_is_read_with_its_table_and_index() {
        let text = "listen = \"x\"\n\
            [[projects]]\nid = \"a\"\n[[projects.keys]]\nkid = \"k\"\n\
            [[projects]]\nid = \"b\"\n[[projects.keys]]\nkid = \"k\"\n[[projects.keys]]\npublic_key = \"p\"\n\
            [store]\nurls = [\n  \"redis://a\",\n  \"redis://b\",\n]\nbackend = \"redis\"\n\
            [ice]\nturn = [{ urls = [\"turn:a\"],\n  secret = \"\"\"\nline = 1\n\"\"\" }]\nstun_urls = []\n";
        let key_of_line = |n: usize| {
            let offset: usize = text.split_inclusive('\n').take(n - 1).map(str::len).sum();
            key_at(text, offset)
        };
        assert_eq!(key_of_line(1).as_deref(), Some("listen"));
        assert_eq!(key_of_line(3).as_deref(), Some("projects[0].id"));
        assert_eq!(key_of_line(5).as_deref(), Some("projects[0].keys[0].kid"));
        assert_eq!(key_of_line(7).as_deref(), Some("projects[1].id"));
        assert_eq!(key_of_line(9).as_deref(), Some("projects[1].keys[0].kid"));
        assert_eq!(key_of_line(10).as_deref(), Some("projects[1].keys[1]"));
        assert_eq!(
            key_of_line(11).as_deref(),
            Some("projects[1].keys[1].public_key")
        );
        // Inside a list over several lines: the list's key.
        assert_eq!(key_of_line(14).as_deref(), Some("store.urls"));
        assert_eq!(key_of_line(16).as_deref(), Some("store.urls"));
        assert_eq!(key_of_line(17).as_deref(), Some("store.backend"));
        // Inside a multi-line string, a line that looks like a key is still the string.
        assert_eq!(key_of_line(21).as_deref(), Some("ice.turn"));
        assert_eq!(key_of_line(23).as_deref(), Some("ice.stun_urls"));
    }

    #[test]
    fn a_key_that_is_not_plain_is_not_shown() {
        for text in [
            "\"redis://u:pw@h\" = 1\n",
            "[\"pw\"]\na = 1\n",
            "hunter2\n",
            "# a = 1\n",
        ] {
            let offset = text.len().saturating_sub(2);
            assert_eq!(key_at(text, offset), None, "{text:?}");
        }
    }

    #[test]
    fn schema_messages_lose_their_values() {
        for (message, shown) in [
            (
                "invalid type: string \"hunter2\", expected usize",
                "wrong type of value, expected usize",
            ),
            (
                "invalid type: string \"a, expected usize\", expected a sequence",
                "wrong type of value, expected a sequence",
            ),
            (
                "unknown variant `hunter2`, expected `memory` or `redis`",
                "not one of the accepted values, expected `memory` or `redis`",
            ),
            (
                "invalid value: integer `-1`, expected usize",
                "invalid value, expected usize",
            ),
            (
                "invalid type: integer `12345`, expected a string",
                "wrong type of value, expected a string",
            ),
            ("something \"hunter2\" else", "invalid value"),
            ("unknown field `a:hunter2`, expected `b`", "unknown key"),
        ] {
            assert_eq!(schema_problem(message).0, shown, "{message}");
        }
    }

    #[test]
    fn grammar_messages_with_a_long_quoted_part_are_not_repeated() {
        assert!(grammar_only("invalid basic string, expected `\"`"));
        assert!(grammar_only(
            "missing escaped value, expected `b`, `e`, `f`, `n`, `r`, `\\`, `\"`, `x`, `u`, `U`"
        ));
        assert!(!grammar_only("unexpected `hunter2`"));
        assert_eq!(
            syntax_problem("unexpected `hunter2`").0,
            "invalid TOML syntax"
        );
    }
}
