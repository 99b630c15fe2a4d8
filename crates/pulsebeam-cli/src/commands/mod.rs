//! One module per subcommand: its clap arguments and its `run` function.

use clap::Args;
use pulsebeam_token::{PeerClaims, ValueError};

pub mod admin;
pub mod create_token;
pub mod dev;
pub mod health;
pub mod inspect;
pub mod keygen;
pub mod policy;
pub mod serve;
pub mod verify;

pub use crate::credentials::CredentialArgs;
pub use crate::time::Ttl;

/// A multi-threaded tokio runtime for the commands that serve (`serve`, `dev`), with `workers`
/// threads (a validated configuration's `workers`: 1 or more); `None`, the runtime's default
/// (`TOKIO_WORKER_THREADS` when set, else one per CPU the process may use).
pub(crate) fn server_runtime(
    workers: Option<usize>,
) -> Result<tokio::runtime::Runtime, crate::error::CliError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers.filter(|&n| n > 0) {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .map_err(|source| crate::error::CliError::Server {
            context: "cannot start the async runtime".to_owned(),
            source: Box::new(source),
        })
}

/// Logs to standard error, filtered by `RUST_LOG` when it is set, else by `default_filter`.
/// Text logs are coloured only when standard error is a terminal and `NO_COLOR` is unset or
/// empty, so that log files and collectors never receive escape sequences.
pub(crate) fn init_logging(
    format: serve::LogFormat,
    default_filter: &str,
    session: &crate::Session<'_, '_>,
) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let no_color = session.env_os("NO_COLOR");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(std::io::stderr().is_terminal(), no_color.as_deref()))
        .with_writer(std::io::stderr);
    // A subscriber may already be set (tests driving several commands in one process).
    let _ = match format {
        serve::LogFormat::Text => builder.try_init(),
        serve::LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether to colour log lines: only on a terminal, and not when `NO_COLOR` has a non-empty
/// value (<https://no-color.org>).
pub(crate) fn colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// `--now`, for commands that read the clock.
#[derive(Debug, Clone, Default, Args)]
pub struct ClockArgs {
    /// Act as if the time were this Unix time, in seconds (for reproducible tokens and tests).
    #[arg(long, value_name = "UNIX", help_heading = "Testing")]
    pub now: Option<u64>,
}

/// Clap value parser for a group id: 1 to 16 characters, no control characters, no `*`.
pub(crate) fn group_id(text: &str) -> Result<String, ValueError> {
    PeerClaims::new(text, "p").map(|_| text.to_owned())
}

/// Clap value parser for a peer id: 1 to 16 characters, no control characters, no `*`.
pub(crate) fn peer_id(text: &str) -> Result<String, ValueError> {
    PeerClaims::new("g", text).map(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            !colour(true, Some(OsStr::new("0"))),
            "any non-empty value disables colour"
        );
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}
