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
