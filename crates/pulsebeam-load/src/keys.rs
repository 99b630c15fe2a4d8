//! The project key of a load run, the tokens minted with it, and the server configuration.

use pulsebeam_server::{Config, ProjectConfig};
use pulsebeam_token::{AccessToken, KeyPair, PeerClaims, PeerPolicy, PublicKey};

use crate::LoadError;

/// The group every simulated peer joins.
pub const GROUP: &str = "load";

/// A fresh project key: the tool mints tokens with it and hands the public key to the server.
pub struct ProjectKey {
    pair: KeyPair,
    app: AccessToken,
}

impl std::fmt::Debug for ProjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectKey")
            .field("kid", &self.pair.api_key())
            .finish_non_exhaustive()
    }
}

impl ProjectKey {
    /// Generates a key pair.
    ///
    /// # Errors
    ///
    /// [`LoadError::Token`] when the system random source fails.
    pub fn generate() -> Result<Self, LoadError> {
        let pair = KeyPair::generate().map_err(pulsebeam_token::Error::from)?;
        let app = AccessToken::new(pair.api_key(), &pair.api_secret())?;
        Ok(ProjectKey { pair, app })
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        self.pair.api_key()
    }

    /// The public key the server verifies with.
    pub fn public_key(&self) -> PublicKey {
        self.pair.public_key()
    }

    /// `Bearer <token>` for `peer` in [`GROUP`], allowed to reach everyone in the group, valid
    /// for a day.
    ///
    /// # Errors
    ///
    /// [`LoadError::Token`] when `peer` is not a valid peer id (1 to 16 characters).
    pub fn bearer(&self, peer: &str) -> Result<String, LoadError> {
        let claims = PeerClaims::new(GROUP, peer)?.with_allow_policy(PeerPolicy::new(GROUP, "*")?);
        Ok(format!(
            "Bearer {}",
            self.app.create_token(&claims, 86_400)?
        ))
    }
}

/// The server configuration of a load run: one project with `kid`/`public_key`, and limits that
/// let a few clients make thousands of calls per second (the per-token rate limit is for
/// browsers, not for a load generator standing in for many of them).
pub fn server_config(
    kid: &str,
    public_key: &PublicKey,
    poll_timeout_ms: u64,
    peers: usize,
) -> Config {
    let mut config =
        Config::default().with_project(ProjectConfig::new("load").with_key(kid, public_key));
    config.limits.rate_per_sec = 1_000_000;
    config.limits.rate_burst = 1_000_000;
    config.limits.poll_timeout_ms = poll_timeout_ms;
    config.limits.max_connections_per_project = config
        .limits
        .max_connections_per_project
        .max(peers.saturating_mul(2));
    config.limits.shutdown_grace_secs = 1;
    config
}
