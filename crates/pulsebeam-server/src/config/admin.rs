//! The `[admin]` section: the admin listener and its token.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::socket_addr;
use super::error::ConfigError;

/// The admin API: a separate listener, authenticated with a token whose SHA-256 is configured.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Address of the admin listener (`admin.listen`), loopback by default.
    #[serde(default = "default_admin_listen", deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// SHA-256 of the admin token, 64 hex digits (`admin.token_sha256`); `pulsebeam admin
    /// gen-token` makes a token and prints this line.
    pub token_sha256: String,
    /// Where a single node keeps its revocations across restarts (`admin.state_file`); with the
    /// Redis store they live in Redis and this is the node's copy of them, put back into Redis
    /// if Redis loses its data.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
}

impl AdminConfig {
    /// An admin listener on `listen` for the token whose SHA-256 is `token_sha256` (hex).
    pub fn new(listen: SocketAddr, token_sha256: impl Into<String>) -> Self {
        AdminConfig {
            listen,
            token_sha256: token_sha256.into(),
            state_file: None,
        }
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash of a random token is not a secret, but it has no business in logs either.
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3001))
}

impl AdminConfig {
    /// Checks the token hash, and that the admin listener is not the main one (`listen`); port 0
    /// on both asks the system for two distinct ports, so it is allowed.
    pub(super) fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        let hash = self.token_sha256.trim();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::invalid(
                "admin.token_sha256",
                "not 64 hex digits",
                "give the SHA-256 of the admin token in hex; `pulsebeam admin gen-token` prints a token and this line",
            ));
        }
        if self.listen == listen && listen.port() != 0 {
            return Err(ConfigError::invalid(
                "admin.listen",
                "the same address as `listen`",
                "give the admin API its own address, e.g. \"127.0.0.1:3001\"",
            ));
        }
        Ok(())
    }
}
