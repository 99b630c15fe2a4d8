//! One module per subcommand: its clap arguments and its `run` function.

use clap::Args;
use pulsebeam_token::{PeerClaims, ValueError};

pub mod create_token;
pub mod dev;
pub mod inspect;
pub mod keygen;
pub mod policy;
pub mod serve;
pub mod verify;

pub use crate::credentials::CredentialArgs;
pub use crate::time::Ttl;

/// A multi-threaded tokio runtime for the commands that serve (`serve`, `dev`).
pub(crate) fn server_runtime() -> Result<tokio::runtime::Runtime, crate::error::CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| crate::error::CliError::Server {
            context: "cannot start the async runtime".to_owned(),
            source: Box::new(source),
        })
}

/// Logs to standard error, filtered by `RUST_LOG` when it is set, else by `default_filter`.
pub(crate) fn init_logging(format: serve::LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A subscriber may already be set (tests driving several commands in one process).
    let _ = match format {
        serve::LogFormat::Text => builder.try_init(),
        serve::LogFormat::Json => builder.json().try_init(),
    };
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
