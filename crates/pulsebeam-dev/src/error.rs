//! What can stop the dev server from starting or running.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why `pulsebeam dev` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The state directory could not be created.
    #[error("cannot create the dev state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file could not be read or written.
    #[error("cannot use the dev key file {path}: {source}")]
    KeyFileIo {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is readable by other users.
    #[error("the dev key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`", path = path.display())]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but does not hold a usable key.
    #[error("the dev key file {path} is invalid: {reason}", path = path.display())]
    KeyFileInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key in the key file was refused by the token SDK (or no key could be generated).
    #[error("the dev key in {path} is unusable: {source}; delete the file to get a fresh key", path = path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// The SDK's reason.
        source: pulsebeam_token::KeyError,
    },
    /// The listen address is not a loopback address.
    #[error("dev mode listens only on loopback (127.0.0.1 or ::1), not {addr}: its /auth endpoint gives a token to anyone who asks; run the production server for a network-facing one")]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// An option is out of range or malformed.
    #[error("invalid dev option {option}: {reason}")]
    InvalidOption {
        /// The option, e.g. `--turn-url`.
        option: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The signaling server refused the configuration built from the options.
    #[error("the signaling server refused the dev configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; pick another port with --port (0 picks a free one)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the dev server stopped with an error: {0}")]
    Serve(#[source] std::io::Error),
}

impl DevError {
    /// A stable, machine-readable code for scripts and tests.
    pub fn code(&self) -> &'static str {
        match self {
            DevError::StateDir { .. } => "state_dir",
            DevError::KeyFileIo { .. } => "key_file_io",
            DevError::KeyFilePermissions { .. } => "key_file_permissions",
            DevError::KeyFileInvalid { .. } => "key_file_invalid",
            DevError::Key { .. } => "key_invalid",
            DevError::NotLoopback { .. } => "not_loopback",
            DevError::InvalidOption { .. } => "invalid_option",
            DevError::Config(_) => "config",
            DevError::Bind { .. } => "bind",
            DevError::Serve(_) => "serve",
        }
    }
}
