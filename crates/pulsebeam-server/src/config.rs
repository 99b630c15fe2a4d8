//! The server's configuration: one TOML file, or built in code.
//!
//! Every key is documented in the crate README; `pulsebeam.example.toml` shows them all.
//! [`Config::validate`] checks everything that can be checked before binding a socket and names
//! the offending key and the fix.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pulsebeam_token::{KeySet, PublicKey};
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on (`listen`), e.g. `0.0.0.0:3000`.
    #[serde(default = "default_listen", deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Projects, each with its own keys (`[[projects]]`).
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// STUN and TURN servers handed out by `Prepare` (`[ice]`).
    #[serde(default)]
    pub ice: IceConfig,
    /// Limits (`[limits]`).
    #[serde(default)]
    pub limits: Limits,
    /// HTTPS on `listen` (`[tls]`); without it the server speaks plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Cross-origin access for browsers (`[cors]`).
    #[serde(default)]
    pub cors: CorsConfig,
    /// Whether a message is delivered only when the receiver's own policy also admits the
    /// sender (`mutual_policy`, default `true`). The sender's policy is always checked.
    #[serde(default = "default_true")]
    pub mutual_policy: bool,
    /// Where mailboxes live (`[store]`): in this process, or in Redis for several nodes.
    #[serde(default)]
    pub store: StoreConfig,
    /// The admin listener (`[admin]`); absent: no admin API.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Where audit events go (`[audit]`).
    #[serde(default)]
    pub audit: AuditConfig,
    /// Where usage comes from besides this server's own calls (`[usage]`).
    #[serde(default)]
    pub usage: UsageConfig,
}

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
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.turn_stats_url {
            let scheme_ok = ["redis://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !scheme_ok || url.len() > 1024 {
                return Err(ConfigError::invalid(
                    "usage.turn_stats_url",
                    format!("{:?} is not a redis:// or unix:// URL", redact_url(url)),
                    "give the Redis of coturn's redis-statsdb, e.g. \"redis://127.0.0.1:6379\" (rediss:// is not supported by this build)",
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
    /// Redis store they live in Redis and this is not used.
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

/// Where audit events (authentication failures, policy refusals, revocations, admin calls,
/// reloads) are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AuditConfig {
    /// A JSON-lines file (`audit.file`); absent: events go to the log under the target
    /// `pulsebeam::audit`.
    pub file: Option<PathBuf>,
    /// Size at which the file is rotated (`audit.max_file_bytes`).
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.keep_files`): `FILE.1` (newest) .. `FILE.N`.
    pub keep_files: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 5,
        }
    }
}

fn default_true() -> bool {
    true
}

fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP:PORT address; write e.g. \"0.0.0.0:3000\" (all interfaces) or \"127.0.0.1:3000\" (host names are not accepted)"
        ))
    })
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            projects: Vec::new(),
            ice: IceConfig::default(),
            limits: Limits::default(),
            tls: None,
            cors: CorsConfig::default(),
            mutual_policy: true,
            store: StoreConfig::default(),
            admin: None,
            audit: AuditConfig::default(),
            usage: UsageConfig::default(),
        }
    }
}

/// One project: an isolated namespace of groups and peers, with the keys that sign its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProjectConfig {
    /// The project's name, used in logs and metrics (`projects[].id`), 1 to 64 characters.
    pub id: String,
    /// The keys whose tokens belong to this project (`[[projects.keys]]`); several allow rotation.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

impl ProjectConfig {
    /// A project named `id` with no keys yet.
    pub fn new(id: impl Into<String>) -> Self {
        ProjectConfig {
            id: id.into(),
            keys: Vec::new(),
        }
    }

    /// Adds a verifying key.
    #[must_use]
    pub fn with_key(mut self, kid: impl Into<String>, public_key: &PublicKey) -> Self {
        self.keys.push(KeyConfig::new(kid, public_key));
        self
    }
}

/// A verifying key of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyConfig {
    /// The API key (`kid`), e.g. `kid_73d8caa6c387d46c`. Unique across all projects.
    pub kid: String,
    /// The Ed25519 public key, 64 hex digits (as `pulsebeam keygen` prints it).
    pub public_key: String,
}

impl KeyConfig {
    /// A key entry for `kid`.
    pub fn new(kid: impl Into<String>, public_key: &PublicKey) -> Self {
        KeyConfig {
            kid: kid.into(),
            public_key: public_key.to_hex(),
        }
    }
}

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

/// The default payload limit: Chromium's offers measure 4.2 kB (video) to 13.8 kB (audio, three
/// video tracks and a data channel), and grow with simulcast and more tracks; the protocol's
/// documented 10 kB would refuse real calls, which the 0.0.17 client answers by closing the peer.
const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The HTTP stack reads request heads into a buffer of at least this size.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Every bound the server enforces. Defaults suit the 0.0.17 browser client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request body in bytes; larger bodies get `invalid_argument`, a larger declared
    /// `Content-Length` at once.
    pub max_body_bytes: usize,
    /// Largest encoded message payload in bytes; larger get `invalid_argument`.
    pub max_payload_bytes: usize,
    /// Largest request head (request line and headers) in bytes; larger get `431`. At least
    /// 8192 (the HTTP stack's smallest read buffer).
    pub max_header_bytes: usize,
    /// Messages waiting per connection (and per peer for discovery); more get `resource_exhausted`.
    pub mailbox_capacity: usize,
    /// How long an undelivered message waits before it is dropped, in seconds.
    pub message_ttl_secs: u64,
    /// Longest `Recv` long-poll in milliseconds; then it answers empty.
    pub poll_timeout_ms: u64,
    /// Once a message is there, how long `Recv` waits for more to batch, in milliseconds.
    pub batch_window_ms: u64,
    /// Most messages in one `Recv` answer.
    pub max_batch_messages: usize,
    /// A connection that has not polled for this long is no longer live, in seconds.
    pub connection_idle_secs: u64,
    /// Connections (conn ids) per peer; a new one beyond this gets `resource_exhausted`.
    pub max_connections_per_peer: usize,
    /// Connections per project that have polled, and separately mailboxes that senders opened
    /// for peers or connections that have not polled yet; beyond either, `resource_exhausted`.
    pub max_connections_per_project: usize,
    /// Sustained calls per second allowed per peer (project, group, peer), whatever its token.
    pub rate_per_sec: u32,
    /// Calls a peer may make in a burst above the sustained rate.
    pub rate_burst: u32,
    /// Verified tokens remembered so repeated calls skip signature checks; 0 disables.
    pub token_cache_capacity: usize,
    /// Clock skew tolerated on token `exp`/`nbf`, in seconds.
    pub token_leeway_secs: u64,
    /// On shutdown, how long in-flight calls may take to finish, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send a request's headers, in seconds; also how long a
    /// kept-alive connection may sit idle between requests. Then the connection is closed.
    pub header_timeout_secs: u64,
    /// How long a client may take to send a request's body once its headers arrived, in
    /// seconds; then the call gets `deadline_exceeded`.
    pub body_timeout_secs: u64,
    /// TCP connections served at once; further clients wait in the listen backlog.
    pub max_open_connections: usize,
    /// Longest token lifetime accepted, in seconds: a token whose `exp` lies further ahead is
    /// refused. Absent: no cap (tokens are refused only once expired).
    pub max_token_lifetime_secs: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_PAYLOAD_BYTES + 8 * 1024,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_header_bytes: 16 * 1024,
            mailbox_capacity: 128,
            message_ttl_secs: 30,
            poll_timeout_ms: 20_000,
            batch_window_ms: 5,
            max_batch_messages: 64,
            connection_idle_secs: 15,
            max_connections_per_peer: 8,
            max_connections_per_project: 10_000,
            rate_per_sec: 50,
            rate_burst: 200,
            token_cache_capacity: 65_536,
            token_leeway_secs: pulsebeam_token::DEFAULT_LEEWAY_SECS,
            shutdown_grace_secs: 10,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            max_open_connections: 20_000,
            max_token_lifetime_secs: None,
        }
    }
}

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

/// `url` with any password replaced by `***`, for logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
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

/// Cross-origin resource sharing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CorsConfig {
    /// Origins allowed to call from a browser (`cors.allowed_origins`): `"*"` for any, or exact
    /// origins such as `"https://app.example.com"`. Empty: no cross-origin access.
    #[serde(default = "default_origins")]
    pub allowed_origins: Vec<String>,
}

fn default_origins() -> Vec<String> {
    vec!["*".to_owned()]
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: default_origins(),
        }
    }
}

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
    fn validate(&self) -> Result<(), ConfigError> {
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

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("invalid config: {message}")]
    Parse {
        /// The parser's message, with the key and position.
        message: String,
    },
    /// A value breaks a rule.
    #[error("config key `{key}`: {problem}; {fix}")]
    Invalid {
        /// The TOML key path, e.g. `projects[0].keys[1].public_key`.
        key: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The TOML key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Adds a project (builder style), e.g. `Config::default().with_project(project)`.
    #[must_use]
    pub fn with_project(mut self, project: ProjectConfig) -> Self {
        self.projects.push(project);
        self
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for bad TOML or unknown keys, [`ConfigError::Invalid`] from
    /// [`Config::validate`].
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when the file cannot be read, then as [`Config::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Checks every rule that does not need the network.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError::Invalid`] found, naming the key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.key_sets()?;
        self.validate_without_keys()
    }

    /// Every check of [`Config::validate`] but the projects and keys ([`Config::key_sets`]).
    pub(crate) fn validate_without_keys(&self) -> Result<(), ConfigError> {
        self.tls.as_ref().map_or(Ok(()), TlsConfig::validate)?;
        self.validate_ice()?;
        self.limits.validate()?;
        self.store.validate()?;
        self.usage.validate()?;
        validate_origins(&self.cors.allowed_origins)?;
        if let Some(admin) = &self.admin {
            let hash = admin.token_sha256.trim();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::invalid(
                    "admin.token_sha256",
                    "not 64 hex digits",
                    "give the SHA-256 of the admin token in hex; `pulsebeam admin gen-token` prints a token and this line",
                ));
            }
            if admin.listen == self.listen {
                return Err(ConfigError::invalid(
                    "admin.listen",
                    "the same address as `listen`",
                    "give the admin API its own address, e.g. \"127.0.0.1:3001\"",
                ));
            }
        }
        if self.audit.file.is_some()
            && (self.audit.max_file_bytes < 4096 || self.audit.keep_files == 0)
        {
            return Err(ConfigError::invalid(
                "audit.max_file_bytes",
                "below 4096 bytes, or audit.keep_files is 0",
                "rotate at a few MiB (the default is 10485760) and keep at least one file",
            ));
        }
        Ok(())
    }

    /// One key set per project, in order, after checking ids and keys.
    pub(crate) fn key_sets(&self) -> Result<Vec<KeySet>, ConfigError> {
        if self.projects.is_empty() {
            return Err(ConfigError::invalid(
                "projects",
                "no project is configured, so no token could be accepted",
                "add a [[projects]] table with an `id` and at least one [[projects.keys]] entry",
            ));
        }
        let mut ids = HashSet::new();
        let mut kids = HashSet::new();
        // Public key -> (project index, key index) of its first use.
        let mut owners: std::collections::HashMap<[u8; 32], (usize, usize)> =
            std::collections::HashMap::new();
        let mut sets = Vec::with_capacity(self.projects.len());
        for (p, project) in self.projects.iter().enumerate() {
            let id_len = project.id.chars().count();
            if id_len == 0 || id_len > 64 || project.id.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("projects[{p}].id"),
                    "must be 1 to 64 characters without control characters",
                    "give the project a short name such as \"prod\"",
                ));
            }
            if !ids.insert(project.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("projects[{p}].id"),
                    format!("project id \"{}\" is used twice", project.id),
                    "give every project its own id",
                ));
            }
            if project.keys.is_empty() {
                return Err(ConfigError::invalid(
                    format!("projects[{p}].keys"),
                    "the project has no key",
                    "add a [[projects.keys]] entry with `kid` and `public_key`",
                ));
            }
            let mut set = KeySet::new();
            for (k, key) in project.keys.iter().enumerate() {
                let public = PublicKey::from_hex(key.public_key.trim()).map_err(|e| {
                    ConfigError::invalid(
                        format!("projects[{p}].keys[{k}].public_key"),
                        e.to_string(),
                        "give the 64 hex digit Ed25519 public key (not the `sk_` secret)",
                    )
                })?;
                match owners.entry(*public.as_bytes()) {
                    std::collections::hash_map::Entry::Occupied(first) if first.get().0 != p => {
                        let (fp, fk) = *first.get();
                        return Err(ConfigError::invalid(
                            format!("projects[{p}].keys[{k}].public_key"),
                            format!(
                                "the same public key is also projects[{fp}].keys[{fk}] of project \"{}\", so whoever holds its secret could act in either project by picking the kid",
                                self.projects.get(fp).map_or("", |x| x.id.as_str())
                            ),
                            "give each project its own key pair (`pulsebeam keygen`)",
                        ));
                    }
                    std::collections::hash_map::Entry::Occupied(_) => {}
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert((p, k));
                    }
                }
                if !kids.insert(key.kid.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("projects[{p}].keys[{k}].kid"),
                        format!("kid \"{}\" appears more than once", key.kid),
                        "a kid selects its project, so each must be unique across all projects",
                    ));
                }
                set.insert(&key.kid, public).map_err(|e| {
                    ConfigError::invalid(
                        format!("projects[{p}].keys[{k}].kid"),
                        e.to_string(),
                        "use the API key exactly as issued, e.g. \"kid_73d8caa6c387d46c\"",
                    )
                })?;
            }
            sets.push(set);
        }
        Ok(sets)
    }

    fn validate_ice(&self) -> Result<(), ConfigError> {
        for (i, url) in self.ice.stun_urls.iter().enumerate() {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) || has_space(url) {
                return Err(ConfigError::invalid(
                    format!("ice.stun_urls[{i}]"),
                    format!("\"{url}\" is not a STUN URL"),
                    "write it as stun:HOST:PORT, e.g. \"stun:stun.l.google.com:19302\"",
                ));
            }
        }
        for (t, turn) in self.ice.turn.iter().enumerate() {
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
                        format!("\"{url}\" is not a TURN URL"),
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

/// Longest `Recv` wait allowed: beyond it, proxies' idle timeouts (often 60 to 120 s) cut polls.
const MAX_POLL_TIMEOUT_MS: u64 = 120_000;

fn has_space(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Limits {
    /// Checks that every limit is usable.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the `limits.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_payload_bytes", self.max_payload_bytes as u64),
            ("mailbox_capacity", self.mailbox_capacity as u64),
            ("message_ttl_secs", self.message_ttl_secs),
            ("poll_timeout_ms", self.poll_timeout_ms),
            ("max_batch_messages", self.max_batch_messages as u64),
            ("connection_idle_secs", self.connection_idle_secs),
            (
                "max_connections_per_peer",
                self.max_connections_per_peer as u64,
            ),
            (
                "max_connections_per_project",
                self.max_connections_per_project as u64,
            ),
            ("rate_per_sec", u64::from(self.rate_per_sec)),
            ("rate_burst", u64::from(self.rate_burst)),
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("max_open_connections", self.max_open_connections as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("limits.{name}"),
                    "must be greater than 0",
                    "remove the key to use the default, or give a positive number",
                ));
            }
        }
        if self.max_payload_bytes > self.max_body_bytes {
            return Err(ConfigError::invalid(
                "limits.max_payload_bytes",
                format!(
                    "{} is larger than limits.max_body_bytes ({}), so such payloads could never arrive",
                    self.max_payload_bytes, self.max_body_bytes
                ),
                "raise limits.max_body_bytes above it (leave about 1 KiB for the header)",
            ));
        }
        if self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_body_bytes",
                "more than 16 MiB",
                "signaling messages are small; use at most a few tens of KiB",
            ));
        }
        if self.poll_timeout_ms > MAX_POLL_TIMEOUT_MS {
            return Err(ConfigError::invalid(
                "limits.poll_timeout_ms",
                format!("{} ms is longer than the {MAX_POLL_TIMEOUT_MS} ms allowed", self.poll_timeout_ms),
                format!("use at most {MAX_POLL_TIMEOUT_MS}, and less than your proxies' idle timeout (the default is 20000)"),
            ));
        }
        if self.max_token_lifetime_secs == Some(0) {
            return Err(ConfigError::invalid(
                "limits.max_token_lifetime_secs",
                "0 would refuse every token",
                "remove the key for no cap, or give the longest lifetime you mint, e.g. 86400",
            ));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES || self.max_header_bytes > 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_header_bytes",
                format!(
                    "{} is outside {MIN_HEADER_BYTES}..=1048576",
                    self.max_header_bytes
                ),
                "use a few tens of KiB at most (the default is 16384); a token needs under 1 KiB",
            ));
        }
        if self.batch_window_ms >= self.poll_timeout_ms {
            return Err(ConfigError::invalid(
                "limits.batch_window_ms",
                "not shorter than limits.poll_timeout_ms",
                "keep the batching window to a few milliseconds (the default is 5)",
            ));
        }
        Ok(())
    }
}

fn validate_origins(origins: &[String]) -> Result<(), ConfigError> {
    for (i, origin) in origins.iter().enumerate() {
        if origin == "*" {
            continue;
        }
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let ok = rest.is_some_and(|host| {
            !host.is_empty() && !host.contains('/') && !has_space(host) && host.is_ascii()
        });
        if !ok {
            return Err(ConfigError::invalid(
                format!("cors.allowed_origins[{i}]"),
                format!("\"{origin}\" is not an origin"),
                "write scheme://host[:port] with no path or trailing slash, e.g. \"https://app.example.com\", or \"*\"",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    // RFC 8032 test 2's public key.
    const KEY2: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    fn base() -> String {
        format!("[[projects]]\nid = \"p\"\n[[projects.keys]]\nkid = \"kid_0000000000000001\"\npublic_key = \"{KEY}\"\n")
    }

    fn key_of(text: &str) -> Option<String> {
        Config::from_toml_str(text)
            .err()
            .and_then(|e| e.key().map(str::to_owned))
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let config = Config::from_toml_str(&base()).unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.cors.allowed_origins, ["*"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(key_of("").as_deref(), Some("projects"));
        let bad_key = base().replace(KEY, "00");
        assert_eq!(
            key_of(&bad_key).as_deref(),
            Some("projects[0].keys[0].public_key")
        );
        let twice = format!(
            "{}[[projects]]\nid = \"q\"\n[[projects.keys]]\nkid = \"kid_0000000000000001\"\npublic_key = \"{KEY2}\"\n",
            base()
        );
        assert_eq!(key_of(&twice).as_deref(), Some("projects[1].keys[0].kid"));
        let stun = format!("{}[ice]\nstun_urls = [\"http://x\"]\n", base());
        assert_eq!(key_of(&stun).as_deref(), Some("ice.stun_urls[0]"));
        let limits = format!("{}[limits]\nmailbox_capacity = 0\n", base());
        assert_eq!(key_of(&limits).as_deref(), Some("limits.mailbox_capacity"));
        let cors = format!(
            "{}[cors]\nallowed_origins = [\"https://a.example/\"]\n",
            base()
        );
        assert_eq!(key_of(&cors).as_deref(), Some("cors.allowed_origins[0]"));
    }

    #[test]
    fn one_public_key_in_two_projects_is_refused() {
        let shared = format!(
            "{}[[projects]]\nid = \"q\"\n[[projects.keys]]\nkid = \"kid_0000000000000002\"\npublic_key = \"{KEY}\"\n",
            base()
        );
        let err = Config::from_toml_str(&shared).unwrap_err();
        assert_eq!(err.key(), Some("projects[1].keys[0].public_key"));
        assert!(err.to_string().contains("projects[0].keys[0]"), "{err}");
        // One project listing its own key under two kids stays within that project: allowed.
        let same_project = format!(
            "{}[[projects.keys]]\nkid = \"kid_0000000000000002\"\npublic_key = \"{KEY}\"\n",
            base()
        );
        Config::from_toml_str(&same_project).unwrap();
    }

    #[test]
    fn limit_errors_state_one_bound() {
        let long = format!("{}[limits]\npoll_timeout_ms = 120001\n", base());
        let err = Config::from_toml_str(&long).unwrap_err().to_string();
        assert!(err.contains("120000"), "{err}");
        assert!(!err.contains("60000"), "{err}");
        Config::from_toml_str(&format!("{}[limits]\npoll_timeout_ms = 120000\n", base())).unwrap();
        let small = format!("{}[limits]\nmax_header_bytes = 4096\n", base());
        assert_eq!(key_of(&small).as_deref(), Some("limits.max_header_bytes"));
    }

    #[test]
    fn default_limits_fit_real_offers() {
        // Chromium's audio + 3 video + data channel offer measures 13.8 kB.
        let limits = Limits::default();
        assert!(limits.max_payload_bytes >= 4 * 13_800, "{limits:?}");
        assert!(limits.max_body_bytes > limits.max_payload_bytes + 1024);
        limits.validate().unwrap();
    }

    #[test]
    fn a_bad_listen_address_says_how_to_write_one() {
        let err = Config::from_toml_str(&format!("listen = \"localhost:3000\"\n{}", base()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.0.0.0:3000"), "{err}");
        let ok = Config::from_toml_str(&format!("listen = \"[::1]:8080\"\n{}", base())).unwrap();
        assert_eq!(ok.listen.port(), 8080);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = format!("{}[limits]\nmailbox_depth = 3\n", base());
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("mailbox_depth"), "{err}");
    }

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

    #[test]
    fn turn_secret_is_not_printed() {
        let turn = TurnConfig::new(vec!["turn:t:3478".into()], "hunter2");
        assert!(!format!("{turn:?}").contains("hunter2"));
    }

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
