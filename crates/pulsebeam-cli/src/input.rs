//! Reading tokens and small files, bounded before anything is decoded.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::CliError;

/// The most bytes read from standard input or from a key or credentials file.
pub(crate) const MAX_INPUT_BYTES: u64 = 64 * 1024;

/// Reads at most [`MAX_INPUT_BYTES`] of UTF-8 text from `reader`.
pub(crate) fn read_bounded(reader: &mut dyn Read, what: &str) -> Result<String, CliError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| CliError::Read {
            what: what.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::Usage(format!(
            "{what} is larger than {} KiB; give a single token or key document",
            MAX_INPUT_BYTES / 1024
        )));
    }
    String::from_utf8(bytes).map_err(|_| CliError::Usage(format!("{what} is not UTF-8 text")))
}

/// Reads a small text file, naming it in errors as `what`.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<String, CliError> {
    let what = format!("{what} `{}`", path.display());
    let mut file = File::open(path).map_err(|source| CliError::Read {
        what: what.clone(),
        source,
    })?;
    read_bounded(&mut file, &what)
}

/// The token named by a `TOKEN|-` argument: the argument itself, or standard input for `-`.
/// Surrounding whitespace (such as a trailing newline) is removed.
pub(crate) fn token(arg: &str, stdin: &mut dyn Read) -> Result<String, CliError> {
    let text = if arg == "-" {
        read_bounded(stdin, "the token on standard input")?
    } else {
        arg.to_owned()
    };
    let token = text.trim();
    if token.is_empty() {
        let hint = if arg == "-" {
            "standard input is empty; pipe a token in, e.g. `pulsebeam create-token … | pulsebeam verify … -`"
        } else {
            "the token argument is empty; pass a token, or `-` to read one from standard input"
        };
        return Err(CliError::Usage(hint.to_owned()));
    }
    if token.contains(char::is_whitespace) {
        return Err(CliError::Usage(
            "the input holds whitespace inside the token; give exactly one token".to_owned(),
        ));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_argument_or_stdin() {
        let mut empty: &[u8] = b"";
        assert_eq!(token(" a.b.c\n", &mut empty).unwrap(), "a.b.c");
        let mut input: &[u8] = b"a.b.c\n";
        assert_eq!(token("-", &mut input).unwrap(), "a.b.c");
        let mut blank: &[u8] = b"\n\n";
        assert!(
            matches!(token("-", &mut blank), Err(CliError::Usage(m)) if m.contains("standard input is empty"))
        );
        let mut two: &[u8] = b"a.b.c\nd.e.f\n";
        assert!(
            matches!(token("-", &mut two), Err(CliError::Usage(m)) if m.contains("exactly one token"))
        );
        assert!(matches!(token("", &mut empty), Err(CliError::Usage(_))));
    }

    #[test]
    fn input_is_bounded() {
        let big = vec![b'a'; (MAX_INPUT_BYTES + 1) as usize];
        let mut reader: &[u8] = &big;
        assert!(
            matches!(read_bounded(&mut reader, "x"), Err(CliError::Usage(m)) if m.contains("larger than 64 KiB"))
        );
        let exact = vec![b'a'; MAX_INPUT_BYTES as usize];
        let mut reader: &[u8] = &exact;
        assert_eq!(read_bounded(&mut reader, "x").unwrap().len(), exact.len());
        let mut bad: &[u8] = &[0xff, 0xfe];
        assert!(
            matches!(read_bounded(&mut bad, "x"), Err(CliError::Usage(m)) if m.contains("not UTF-8"))
        );
    }
}
