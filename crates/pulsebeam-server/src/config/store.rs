//! The `[store]` section: where mailboxes live.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::check::has_space;
use super::error::ConfigError;
use super::redact::redact_url;

/// Which mailbox store backs the server (`store.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreBackend {
    /// In this process: one node holds all mail (the default).
    #[default]
    Memory,
    /// In Redis or Redis Cluster, shared by every node configured with the same URLs and prefix.
    Redis,
}

/// Where mailboxes live (`[store]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StoreConfig {
    /// `"memory"` (default) or `"redis"` (`store.backend`).
    pub backend: StoreBackend,
    /// Redis URLs (`store.urls`): `redis://[user:password@]host:port[/db]`,
    /// `unix:///path/redis.sock` or `redis+unix:///path`; one for a standalone server, one or
    /// more seed nodes with `cluster = true`.
    pub urls: Vec<String>,
    /// Whether `urls` are seeds of a Redis Cluster (`store.cluster`).
    pub cluster: bool,
    /// Prefix of every key and channel (`store.key_prefix`); nodes sharing mail use the same.
    pub key_prefix: String,
    /// Redis connections per node for commands (`store.pool_size`); one more subscribes.
    pub pool_size: usize,
    /// How long messages handed to a receiver wait for the acknowledgement that the response
    /// reached it, before they are handed out again, in milliseconds (`store.ack_lease_ms`).
    pub ack_lease_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            urls: Vec::new(),
            cluster: false,
            key_prefix: "pulsebeam".to_owned(),
            pool_size: 4,
            ack_lease_ms: 5_000,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("urls", &urls)
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("ack_lease_ms", &self.ack_lease_ms)
            .finish()
    }
}

impl StoreConfig {
    /// Checks the `[store]` section.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the `store.*` key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ack_lease_ms < 100 || self.ack_lease_ms > 60_000 {
            return Err(ConfigError::invalid(
                "store.ack_lease_ms",
                format!("{} is outside 100 to 60000", self.ack_lease_ms),
                "use a few seconds, e.g. 5000 (the default)",
            ));
        }
        if self.backend == StoreBackend::Memory {
            if !self.urls.is_empty() {
                return Err(ConfigError::invalid(
                    "store.urls",
                    "Redis URLs are set but store.backend is \"memory\"",
                    "set store.backend = \"redis\" to use them, or remove store.urls",
                ));
            }
            return Ok(());
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if !prefix_ok {
            return Err(ConfigError::invalid(
                "store.key_prefix",
                format!("\"{}\" is not 1 to 64 of A-Z a-z 0-9 _ - . :", self.key_prefix),
                "use a short name such as \"pulsebeam\" (braces would break Redis Cluster hash tags)",
            ));
        }
        if self.pool_size == 0 || self.pool_size > 64 {
            return Err(ConfigError::invalid(
                "store.pool_size",
                format!("{} is outside 1 to 64", self.pool_size),
                "use a few connections, e.g. 4 (the default)",
            ));
        }
        if self.urls.is_empty() {
            return Err(ConfigError::invalid(
                "store.urls",
                "store.backend is \"redis\" but no URL is given",
                "add the server, e.g. urls = [\"redis://127.0.0.1:6379\"] (cluster: one or more seed nodes)",
            ));
        }
        if !self.cluster && self.urls.len() > 1 {
            return Err(ConfigError::invalid(
                "store.urls",
                format!("{} URLs given for a standalone server", self.urls.len()),
                "give one URL, or set store.cluster = true if they are seeds of a Redis Cluster",
            ));
        }
        for (i, url) in self.urls.iter().enumerate() {
            let key = format!("store.urls[{i}]");
            let shown = redact_url(url);
            let Some((scheme, rest)) = url.split_once("://") else {
                return Err(ConfigError::invalid(
                    key,
                    format!("\"{shown}\" is not a URL"),
                    "write redis://HOST:PORT or unix:///PATH/redis.sock",
                ));
            };
            match scheme {
                "redis" if !rest.is_empty() && !has_space(rest) => {}
                "unix" | "redis+unix" if self.cluster => {
                    return Err(ConfigError::invalid(
                        key,
                        "a Unix socket cannot be a Redis Cluster seed",
                        "use redis://HOST:PORT seeds, or set store.cluster = false",
                    ));
                }
                "unix" | "redis+unix" if rest.starts_with('/') && !has_space(rest) => {}
                "rediss" => {
                    return Err(ConfigError::invalid(
                        key,
                        "rediss:// (TLS) is not supported by this build",
                        "use redis:// on a private network, or a TLS tunnel such as stunnel in front of Redis",
                    ));
                }
                _ => {
                    return Err(ConfigError::invalid(
                        key,
                        format!("\"{shown}\" is not a Redis URL"),
                        "write redis://[USER:PASSWORD@]HOST:PORT[/DB] or unix:///PATH/redis.sock",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{base, key_of};
    use crate::config::Config;

    #[test]
    fn store_section_is_checked_and_hides_passwords() {
        let config = Config::from_toml_str(&base()).unwrap();
        assert_eq!(config.store, StoreConfig::default());
        let redis = format!(
            "{}[store]\nbackend = \"redis\"\nurls = [\"redis://app:hunter2@10.0.0.5:6379/0\"]\n",
            base()
        );
        let config = Config::from_toml_str(&redis).unwrap();
        assert_eq!(config.store.backend, StoreBackend::Redis);
        let shown = format!("{:?}", config.store);
        assert!(
            !shown.contains("hunter2") && shown.contains("app:***@10.0.0.5"),
            "{shown}"
        );
        for (section, key) in [
            ("backend = \"redis\"\n", "store.urls"),
            ("urls = [\"redis://a:1\"]\n", "store.urls"),
            (
                "backend = \"redis\"\nurls = [\"http://a:1\"]\n",
                "store.urls[0]",
            ),
            (
                "backend = \"redis\"\nurls = [\"rediss://a:1\"]\n",
                "store.urls[0]",
            ),
            (
                "backend = \"redis\"\nurls = [\"redis://a:1\", \"redis://b:1\"]\n",
                "store.urls",
            ),
            (
                "backend = \"redis\"\nurls = [\"redis://a:1\"]\nkey_prefix = \"{x}\"\n",
                "store.key_prefix",
            ),
            ("ack_lease_ms = 5\n", "store.ack_lease_ms"),
        ] {
            let text = format!("{}[store]\n{section}", base());
            assert_eq!(key_of(&text).as_deref(), Some(key), "{section}");
        }
        let secret = format!(
            "{}[store]\nbackend = \"redis\"\nurls = [\"foo://u:hunter2@h\"]\n",
            base()
        );
        let err = Config::from_toml_str(&secret).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
