//! The `[usage]` section: usage fed from outside this server (coturn's statistics).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::redact::redact_url;

/// Usage fed from outside (`[usage]`): coturn's per-allocation traffic.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct UsageConfig {
    /// The Redis that coturn publishes its statistics to (`usage.turn_stats_url`, coturn's
    /// `redis-statsdb`), e.g. `redis://127.0.0.1:6379`; absent: TURN relay bytes are not counted.
    pub turn_stats_url: Option<String>,
    /// The key in that Redis whose holder counts coturn's reports (`usage.turn_stats_lease_key`):
    /// nodes sharing it count every report once, on one node at a time.
    pub turn_stats_lease_key: String,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            turn_stats_url: None,
            turn_stats_lease_key: "pulsebeam:turn-stats:leader".to_owned(),
        }
    }
}

impl fmt::Debug for UsageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageConfig")
            .field(
                "turn_stats_url",
                &self.turn_stats_url.as_deref().map(redact_url),
            )
            .field("turn_stats_lease_key", &self.turn_stats_lease_key)
            .finish()
    }
}

impl UsageConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.turn_stats_url {
            let scheme_ok = ["redis://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !scheme_ok || url.len() > 1024 {
                return Err(ConfigError::invalid(
                    "usage.turn_stats_url",
                    format!("{:?} is not a redis:// or unix:// URL", redact_url(url)),
                    "give the Redis of coturn's redis-statsdb, e.g. \"redis://127.0.0.1:6379\"; coturn reaches that Redis without TLS (redis-statsdb has no TLS option), so rediss:// would not be the Redis coturn writes to",
                ));
            }
        }
        let key = &self.turn_stats_lease_key;
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "usage.turn_stats_lease_key",
                "not 1 to 128 characters without control characters",
                "use a short key such as \"pulsebeam:turn-stats:leader\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{base, key_of};
    use crate::config::Config;

    #[test]
    fn usage_turn_stats_url_must_be_a_redis_url_and_is_not_printed_with_its_password() {
        let with = |body: &str| format!("{}[usage]\n{body}\n", base());
        let config = Config::from_toml_str(&with(
            "turn_stats_url = \"redis://:hunter2@127.0.0.1:6379\"",
        ))
        .unwrap();
        assert!(!format!("{:?}", config.usage).contains("hunter2"));
        assert_eq!(
            config.usage.turn_stats_lease_key,
            "pulsebeam:turn-stats:leader"
        );
        for bad in [
            "turn_stats_url = \"http://127.0.0.1:6379\"",
            "turn_stats_url = \"rediss://127.0.0.1:6379\"",
        ] {
            assert_eq!(
                key_of(&with(bad)).as_deref(),
                Some("usage.turn_stats_url"),
                "{bad}"
            );
        }
        assert_eq!(
            key_of(&with("turn_stats_lease_key = \"\"")).as_deref(),
            Some("usage.turn_stats_lease_key")
        );
        assert_eq!(key_of(&with("turn_stats = 1")), None);
        assert!(Config::from_toml_str(&with("turn_stats = 1")).is_err());
    }
}
