//! The CLI's own errors. Every one of them ends the command with exit code 2; a rejected token
//! or a denied peer is an answer, not an error, and is reported by the command itself.

use std::error::Error as _;
use std::io;

use pulsebeam_token::{CreateError, KeyError, ValueError};

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The command line parsed but cannot work; the message names the fix.
    #[error("{0}")]
    Usage(String),
    /// Reading an input failed.
    #[error("cannot read {what}")]
    Read {
        /// What was being read, e.g. "--env-file `.env`".
        what: String,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {what}")]
    Write {
        /// What was being written.
        what: String,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Writing to standard output failed (a broken pipe ends the command quietly).
    #[error("cannot write to standard output")]
    Output(#[source] io::Error),
    /// Credentials or key material could not be used.
    #[error("{context}")]
    Key {
        /// What was being used, and where it came from.
        context: String,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// An id given on the command line breaks the rules.
    #[error("invalid {flag}")]
    Value {
        /// The flag.
        flag: &'static str,
        /// The broken rule.
        #[source]
        source: ValueError,
    },
    /// The server could not be configured or stopped with an error.
    #[error("{context}")]
    Server {
        /// What failed.
        context: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SDK refused to mint.
    #[error("cannot mint the token")]
    Create(#[source] CreateError),
}

/// `error` and its causes on one line, `outer: inner: innermost`. A cause already spelled out
/// in the message before it (some messages embed their source) is not repeated.
pub(crate) fn chain(error: &CliError) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut cause = error.source();
    while let Some(e) = cause {
        let message = e.to_string();
        if !last.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        last = message;
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_causes_once() {
        let e = CliError::Read {
            what: "--env-file `x`".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(chain(&e), "cannot read --env-file `x`: no such file");

        let e = CliError::Create(CreateError::ZeroTtl);
        assert_eq!(
            chain(&e),
            format!("cannot mint the token: {}", CreateError::ZeroTtl)
        );
    }
}
