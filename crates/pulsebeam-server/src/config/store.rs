//! The `[store]` section: where mailboxes live.

use std::fmt;
use std::path::PathBuf;

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
    /// TLS to Redis (`[store.tls]`): the CA to trust and a client certificate, for `rediss://`
    /// URLs (which without it trust the system's roots) and Sentinel.
    pub tls: Option<StoreTls>,
    /// Redis Sentinel (`[store.sentinel]`): the master's name and the sentinels' addresses.
    pub sentinel: Option<SentinelConfig>,
    /// How many replicas must have a message before `Send` accepts it (`store.wait_replicas`,
    /// `WAIT` after each delivery; 0, the default, does not wait). Redis replicates
    /// asynchronously, so without it a failover can lose messages already accepted. Not on
    /// Redis Cluster.
    pub wait_replicas: u32,
    /// How long a delivery waits for those replicas, in milliseconds (`store.wait_timeout_ms`);
    /// when fewer have it by then, `Send` answers `unavailable` and the client sends again (the
    /// message may then arrive twice).
    pub wait_timeout_ms: u64,
}

/// TLS to Redis (`[store.tls]`). Every file is PEM.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StoreTls {
    /// The CA certificates that sign Redis's certificate (`store.tls.ca_file`), the only ones
    /// trusted; required. (`rediss://` without `[store.tls]` trusts the system's roots.)
    pub ca_file: Option<PathBuf>,
    /// This node's client certificate chain (`store.tls.cert_file`), for a Redis started with
    /// `tls-auth-clients yes`; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (`store.tls.key_file`).
    pub key_file: Option<PathBuf>,
}

/// Redis Sentinel (`[store.sentinel]`): nodes ask the sentinels which server is the master
/// and follow a failover by themselves.
///
/// The master's and replicas' credentials are those of the URL (`store.urls`); the sentinels'
/// own (their `requirepass`, or an ACL user) are `username` and `password` here, since
/// sentinels are often set up without a password while the data servers have one.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SentinelConfig {
    /// The master's name as the sentinels know it (`store.sentinel.master`, the name in
    /// `sentinel monitor <name> …`).
    pub master: String,
    /// The sentinels, `host:port` (`store.sentinel.addresses`); list several, so that one being
    /// down does not matter.
    pub addresses: Vec<String>,
    /// The sentinels' ACL user (`store.sentinel.username`), when they require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The sentinels' password (`store.sentinel.password`), when they require one; never
    /// printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master", &self.master)
            .field("addresses", &self.addresses)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SentinelConfig {
    /// Sentinels at `addresses` (`host:port`) watching the master named `master`, that take no
    /// password of their own.
    pub fn new(master: impl Into<String>, addresses: Vec<String>) -> Self {
        SentinelConfig {
            master: master.into(),
            addresses,
            username: None,
            password: None,
        }
    }

    /// The same, for sentinels that require `password` (with `username`, an ACL user).
    #[must_use]
    pub fn with_auth(mut self, username: Option<String>, password: impl Into<String>) -> Self {
        self.username = username;
        self.password = Some(password.into());
        self
    }

    /// Each address as host and port.
    pub(crate) fn hosts(&self) -> Vec<(String, u16)> {
        self.addresses
            .iter()
            .filter_map(|a| split_host_port(a))
            .collect()
    }
}

/// `host:port` (the host may be `[v6]`) as its parts.
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || has_space(host) {
        return None;
    }
    Some((host.to_owned(), port))
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
            tls: None,
            sentinel: None,
            wait_replicas: 0,
            wait_timeout_ms: 100,
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
            .field("tls", &self.tls)
            .field("sentinel", &self.sentinel)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
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
            if self.tls.is_some() || self.sentinel.is_some() {
                return Err(ConfigError::invalid(
                    if self.tls.is_some() {
                        "store.tls"
                    } else {
                        "store.sentinel"
                    },
                    "it is set but store.backend is \"memory\"",
                    "set store.backend = \"redis\" to use it, or remove it",
                ));
            }
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
        self.validate_tls()?;
        self.validate_wait()?;
        if let Some(sentinel) = &self.sentinel {
            return self.validate_sentinel(sentinel);
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
                "rediss" if !rest.is_empty() && !has_space(rest) => {}
                _ => {
                    return Err(ConfigError::invalid(
                        key,
                        format!("\"{shown}\" is not a Redis URL"),
                        "write redis://[USER:PASSWORD@]HOST:PORT[/DB] or unix:///PATH/redis.sock",
                    ));
                }
            }
            if self.tls.is_some() && scheme != "rediss" {
                return Err(ConfigError::invalid(
                    key,
                    format!("[store.tls] is set but \"{shown}\" is not rediss://"),
                    "write rediss://HOST:PORT to connect with TLS, or remove [store.tls]",
                ));
            }
        }
        Ok(())
    }

    fn validate_wait(&self) -> Result<(), ConfigError> {
        if self.wait_replicas > 16 {
            return Err(ConfigError::invalid(
                "store.wait_replicas",
                format!("{} is more than 16", self.wait_replicas),
                "use the number of replicas a message must reach, usually 1",
            ));
        }
        if self.wait_replicas > 0 && self.cluster {
            return Err(ConfigError::invalid(
                "store.wait_replicas",
                "waiting for replicas is not supported on Redis Cluster",
                "remove store.wait_replicas, or use Sentinel (one master with replicas)",
            ));
        }
        if self.wait_timeout_ms == 0 || self.wait_timeout_ms > 1_000 {
            return Err(ConfigError::invalid(
                "store.wait_timeout_ms",
                format!("{} is outside 1 to 1000", self.wait_timeout_ms),
                "use a little more than the replication delay, e.g. 100 (the default)",
            ));
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        if tls.ca_file.is_none() {
            return Err(ConfigError::invalid(
                "store.tls.ca_file",
                "[store.tls] is set without ca_file",
                "give the PEM file of the CA that signs Redis's certificate, or remove [store.tls] to trust the system's roots",
            ));
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => Err(ConfigError::invalid(
                "store.tls.key_file",
                "cert_file is set without key_file",
                "give the client certificate's private key as well, or remove cert_file",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                "store.tls.cert_file",
                "key_file is set without cert_file",
                "give the client certificate chain as well, or remove key_file",
            )),
            _ => Ok(()),
        }
    }

    fn validate_sentinel(&self, sentinel: &SentinelConfig) -> Result<(), ConfigError> {
        if self.cluster {
            return Err(ConfigError::invalid(
                "store.sentinel",
                "Sentinel and store.cluster = true are both set",
                "use Sentinel for one master with replicas, or a Redis Cluster, not both",
            ));
        }
        if sentinel.master.is_empty() || has_space(&sentinel.master) {
            return Err(ConfigError::invalid(
                "store.sentinel.master",
                format!("\"{}\" is not a master name", sentinel.master),
                "give the name of `sentinel monitor <name> …`, e.g. \"mymaster\"",
            ));
        }
        if sentinel.addresses.is_empty() {
            return Err(ConfigError::invalid(
                "store.sentinel.addresses",
                "no sentinel is given",
                "list the sentinels as \"host:port\", e.g. [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]",
            ));
        }
        if sentinel.password.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "store.sentinel.password",
                "is empty",
                "give the sentinels' password (their `requirepass`), or remove the key if they take none",
            ));
        }
        if sentinel.username.is_some() && sentinel.password.is_none() {
            return Err(ConfigError::invalid(
                "store.sentinel.username",
                "is set without store.sentinel.password",
                "give the ACL user's password as store.sentinel.password as well",
            ));
        }
        for (i, address) in sentinel.addresses.iter().enumerate() {
            if split_host_port(address).is_none() {
                return Err(ConfigError::invalid(
                    format!("store.sentinel.addresses[{i}]"),
                    format!("\"{address}\" is not host:port"),
                    "write the sentinel's address as \"HOST:PORT\", e.g. \"10.0.0.1:26379\"",
                ));
            }
        }
        if self.urls.len() > 1 {
            return Err(ConfigError::invalid(
                "store.urls",
                "more than one URL given with Sentinel",
                "give at most one URL, for the password, database and rediss://; Sentinel names the master",
            ));
        }
        for url in &self.urls {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss")) {
                return Err(ConfigError::invalid(
                    "store.urls[0]",
                    format!("\"{}\" is not a redis:// or rediss:// URL", redact_url(url)),
                    "write redis://[USER:PASSWORD@]HOST:PORT[/DB]; with Sentinel its host is not used",
                ));
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
                "backend = \"redis\"\nurls = [\"redis://a:1\"]\n[store.tls]\nca_file = \"ca.pem\"\n",
                "store.urls[0]",
            ),
            (
                "backend = \"redis\"\nurls = [\"rediss://a:1\"]\n[store.tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\n",
                "store.tls.key_file",
            ),
            (
                "backend = \"redis\"\nurls = [\"rediss://a:1\"]\n[store.tls]\nca_file = \"ca.pem\"\nkey_file = \"k.pem\"\n",
                "store.tls.cert_file",
            ),
            (
                "backend = \"redis\"\nurls = [\"rediss://a:1\"]\n[store.tls]\n",
                "store.tls.ca_file",
            ),
            ("[store.tls]\nca_file = \"ca.pem\"\n", "store.tls"),
            (
                "backend = \"redis\"\n[store.sentinel]\nmaster = \"m\"\naddresses = []\n",
                "store.sentinel.addresses",
            ),
            (
                "backend = \"redis\"\n[store.sentinel]\nmaster = \"m\"\naddresses = [\"h\"]\n",
                "store.sentinel.addresses[0]",
            ),
            (
                "backend = \"redis\"\n[store.sentinel]\nmaster = \"\"\naddresses = [\"h:1\"]\n",
                "store.sentinel.master",
            ),
            (
                "backend = \"redis\"\ncluster = true\n[store.sentinel]\nmaster = \"m\"\naddresses = [\"h:1\"]\n",
                "store.sentinel",
            ),
            (
                "backend = \"redis\"\n[store.sentinel]\nmaster = \"m\"\naddresses = [\"h:1\"]\npassword = \"\"\n",
                "store.sentinel.password",
            ),
            (
                "backend = \"redis\"\n[store.sentinel]\nmaster = \"m\"\naddresses = [\"h:1\"]\nusername = \"u\"\n",
                "store.sentinel.username",
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
            (
                "backend = \"redis\"\nurls = [\"redis://a:1\"]\nwait_replicas = 17\n",
                "store.wait_replicas",
            ),
            (
                "backend = \"redis\"\nurls = [\"redis://a:1\"]\ncluster = true\nwait_replicas = 1\n",
                "store.wait_replicas",
            ),
            (
                "backend = \"redis\"\nurls = [\"redis://a:1\"]\nwait_replicas = 1\nwait_timeout_ms = 0\n",
                "store.wait_timeout_ms",
            ),
        ] {
            let text = format!("{}[store]\n{section}", base());
            assert_eq!(key_of(&text).as_deref(), Some(key), "{section}");
        }
        for good in [
            "backend = \"redis\"\nurls = [\"rediss://a:1\"]\n",
            "backend = \"redis\"\nurls = [\"rediss://a:1\"]\n[store.tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
            "backend = \"redis\"\n[store.sentinel]\nmaster = \"m\"\naddresses = [\"10.0.0.1:26379\", \"[::1]:26380\"]\n",
            "backend = \"redis\"\nurls = [\"rediss://:pw@ignored:1/2\"]\n[store.tls]\nca_file = \"ca.pem\"\n[store.sentinel]\nmaster = \"m\"\naddresses = [\"h:1\"]\n",
        ] {
            let text = format!("{}[store]\n{good}", base());
            Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let sentinel = format!(
            "{}[store]\nbackend = \"redis\"\n[store.sentinel]\nmaster = \"m\"\naddresses = [\"h:1\"]\nusername = \"watcher\"\npassword = \"hunter2\"\n",
            base()
        );
        let config = Config::from_toml_str(&sentinel).unwrap();
        let parsed = config.store.sentinel.as_ref().unwrap();
        assert_eq!(parsed.username.as_deref(), Some("watcher"));
        assert_eq!(parsed.password.as_deref(), Some("hunter2"));
        let shown = format!("{:?}", config.store);
        assert!(
            shown.contains("watcher") && !shown.contains("hunter2"),
            "{shown}"
        );
        let secret = format!(
            "{}[store]\nbackend = \"redis\"\nurls = [\"foo://u:hunter2@h\"]\n",
            base()
        );
        let err = Config::from_toml_str(&secret).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
