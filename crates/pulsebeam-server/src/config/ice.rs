//! The `[ice]` section: STUN and TURN servers handed out by `Prepare`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::check::has_space;
use super::error::ConfigError;
use super::redact::redact_url;

/// ICE servers for `Prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IceConfig {
    /// STUN URLs (`ice.stun_urls`), e.g. `["stun:stun.l.google.com:19302"]`.
    #[serde(default)]
    pub stun_urls: Vec<String>,
    /// TURN servers with coturn `use-auth-secret` credentials (`[[ice.turn]]`).
    #[serde(default)]
    pub turn: Vec<TurnConfig>,
}

/// A TURN server (or several URLs of one) sharing a coturn `static-auth-secret`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs (`ice.turn[].urls`).
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret` (`ice.turn[].secret`).
    pub secret: String,
    /// Longest credential lifetime in seconds (`ice.turn[].credential_ttl_secs`); a credential
    /// never outlives the token it was issued for.
    #[serde(default = "default_turn_ttl")]
    pub credential_ttl_secs: u64,
}

fn default_turn_ttl() -> u64 {
    3600
}

impl TurnConfig {
    /// A TURN entry with the default credential lifetime (one hour).
    pub fn new(urls: Vec<String>, secret: impl Into<String>) -> Self {
        TurnConfig {
            urls,
            secret: secret.into(),
            credential_ttl_secs: default_turn_ttl(),
        }
    }
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("credential_ttl_secs", &self.credential_ttl_secs)
            .finish()
    }
}

impl IceConfig {
    /// Checks every STUN URL and TURN entry.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, url) in self.stun_urls.iter().enumerate() {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) || has_space(url) {
                return Err(ConfigError::invalid(
                    format!("ice.stun_urls[{i}]"),
                    format!("\"{}\" is not a STUN URL", redact_url(url)),
                    "write it as stun:HOST:PORT, e.g. \"stun:stun.l.google.com:19302\"",
                ));
            }
        }
        for (t, turn) in self.turn.iter().enumerate() {
            if turn.urls.is_empty() {
                return Err(ConfigError::invalid(
                    format!("ice.turn[{t}].urls"),
                    "no URL given",
                    "add at least one URL such as \"turn:turn.example.com:3478\"",
                ));
            }
            for (i, url) in turn.urls.iter().enumerate() {
                if !(url.starts_with("turn:") || url.starts_with("turns:")) || has_space(url) {
                    return Err(ConfigError::invalid(
                        format!("ice.turn[{t}].urls[{i}]"),
                        format!("\"{}\" is not a TURN URL", redact_url(url)),
                        "write it as turn:HOST:PORT or turns:HOST:PORT (optionally ?transport=udp|tcp)",
                    ));
                }
            }
            if turn.secret.is_empty() {
                return Err(ConfigError::invalid(
                    format!("ice.turn[{t}].secret"),
                    "the secret is empty",
                    "set it to coturn's static-auth-secret",
                ));
            }
            if turn.credential_ttl_secs == 0 {
                return Err(ConfigError::invalid(
                    format!("ice.turn[{t}].credential_ttl_secs"),
                    "a lifetime of 0 makes every credential expired",
                    "use a positive number of seconds, e.g. 3600",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_secret_is_not_printed() {
        let turn = TurnConfig::new(vec!["turn:t:3478".into()], "hunter2");
        assert!(!format!("{turn:?}").contains("hunter2"));
    }
}
