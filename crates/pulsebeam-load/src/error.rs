//! The tool's one error type.

/// Why a load run could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Minting a token failed.
    #[error("cannot mint a token: {0}")]
    Token(#[from] pulsebeam_token::Error),
    /// The server rejected its configuration.
    #[error("the server configuration is not valid: {0}")]
    Config(#[from] pulsebeam_server::ConfigError),
    /// The server could not be built.
    #[error(transparent)]
    Build(#[from] pulsebeam_server::BuildError),
    /// A call failed at the HTTP level.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The server process could not be started or watched.
    #[error("server process: {0}")]
    ServerProcess(String),
    /// Reading the operating system's figures (`/proc`) failed.
    #[error("cannot read {what}: {source}; the load tool needs Linux's /proc")]
    Proc {
        /// What was read.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not enough file descriptors for the run.
    #[error("{needed} open files are needed but the limit is {limit}; raise it with `ulimit -n {needed}` (scripts/load.sh does) or ask for fewer peers")]
    FileLimit {
        /// Descriptors the run needs.
        needed: u64,
        /// The soft limit in force.
        limit: u64,
    },
    /// The server answered a call in a way the run cannot go on from.
    #[error("{0}")]
    Protocol(String),
    /// Reading Redis's counters failed.
    #[error("redis counters: {0}")]
    Redis(String),
    /// An I/O error on a raw socket or the runtime.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! token_error {
    ($($kind:ty),*) => {$(
        impl From<$kind> for LoadError {
            fn from(err: $kind) -> Self {
                LoadError::Token(pulsebeam_token::Error::from(err))
            }
        }
    )*};
}
token_error!(
    pulsebeam_token::KeyError,
    pulsebeam_token::ValueError,
    pulsebeam_token::CreateError
);
