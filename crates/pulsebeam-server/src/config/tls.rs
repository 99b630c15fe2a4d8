//! The `[tls]` section: HTTPS on the listen address.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// HTTPS on the listen address (`[tls]`): both files are PEM, read at startup and again on
/// every [reload](crate::Server::reload) (and [`Server::reload_tls`](crate::Server::reload_tls)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// The certificate chain, leaf first (`tls.cert_file`), e.g. Let's Encrypt's `fullchain.pem`.
    #[serde(default)]
    pub cert_file: PathBuf,
    /// The leaf certificate's private key (`tls.key_file`): PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[serde(default)]
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// HTTPS with the chain in `cert_file` and its key in `key_file`.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        TlsConfig {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }
    }

    /// Checks that both files are named; reading them is [`Server::new`](crate::Server::new)'s.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fix_of_half =
            "[tls] needs both cert_file and key_file; or remove [tls] to serve plain HTTP";
        if self.cert_file.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "tls.cert_file",
                "not set",
                format!("set it to the PEM certificate chain (e.g. fullchain.pem): {fix_of_half}"),
            ));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "tls.key_file",
                "not set",
                format!(
                    "set it to the certificate's PEM private key (e.g. privkey.pem): {fix_of_half}"
                ),
            ));
        }
        Ok(())
    }
}
