//! The server's configuration: one TOML file, or built in code.
//!
//! Every key is documented in the crate README; `pulsebeam.example.toml` shows them all.
//! [`Config::validate`] checks everything that can be checked before binding a socket and names
//! the offending key and the fix.

//!
//! One file per section, each with its type and its checks; this module holds the whole
//! [`Config`], loading it and the order in which the sections are checked.

mod admin;
mod audit;
mod check;
mod cors;
mod error;
mod grpc_web;
mod ice;
mod limits;
mod parse;
mod projects;
mod redact;
mod store;
#[cfg(test)]
mod testing;
mod tls;
mod usage;

use std::net::SocketAddr;
use std::path::Path;

use pulsebeam_token::KeySet;
use serde::{Deserialize, Serialize};

pub use admin::AdminConfig;
pub use audit::AuditConfig;
use check::{default_true, socket_addr};
pub use cors::CorsConfig;
pub use error::ConfigError;
pub(crate) use grpc_web::Cidr;
pub use grpc_web::{GrpcWebConfig, TokenlessRecv};
pub use ice::{IceConfig, TurnConfig};
pub use limits::Limits;
pub(crate) use limits::MIN_HEADER_BYTES;
pub use projects::{KeyConfig, ProjectConfig};
pub(crate) use redact::redact_url;
pub use store::{SentinelConfig, StoreBackend, StoreConfig, StoreTls};
pub use tls::TlsConfig;
pub use usage::UsageConfig;

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
    /// The gRPC-web service of the 0.0.18 to 0.1.0-rc.2 clients (`[grpc_web]`).
    #[serde(default)]
    pub grpc_web: GrpcWebConfig,
    /// Threads that serve calls (`workers`, 1 to [`MAX_WORKERS`]); absent: the runtime's
    /// default, one per CPU the process may use (`TOKIO_WORKER_THREADS` when set). Read by the
    /// runtime `pulsebeam serve` builds, at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

/// The most threads `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

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
            grpc_web: GrpcWebConfig::default(),
            workers: None,
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
        let config: Config = parse::from_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when the file cannot be read, then as [`Config::from_toml_str`], a
    /// [`ConfigError::Parse`] naming `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|err| err.in_file(path))
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
        self.validate_workers()?;
        self.tls.as_ref().map_or(Ok(()), TlsConfig::validate)?;
        self.ice.validate()?;
        self.limits.validate()?;
        self.store.validate()?;
        self.usage.validate()?;
        self.grpc_web.validate()?;
        self.cors.validate()?;
        if let Some(admin) = &self.admin {
            admin.validate(self.listen)?;
        }
        self.audit.validate()
    }

    fn validate_workers(&self) -> Result<(), ConfigError> {
        match self.workers {
            Some(0) => Err(ConfigError::invalid(
                "workers",
                "is 0",
                "give 1 or more threads, or leave it out for one per CPU the process may use",
            )),
            Some(n) if n > MAX_WORKERS => Err(ConfigError::invalid(
                "workers",
                format!("is {n}, above {MAX_WORKERS}"),
                "give at most one per CPU the server may use; more threads only contend",
            )),
            _ => Ok(()),
        }
    }

    /// One key set per project, in order, after checking ids and keys.
    pub(crate) fn key_sets(&self) -> Result<Vec<KeySet>, ConfigError> {
        projects::key_sets(&self.projects)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{base, key_of, KEY, KEY2};
    use super::*;

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
    fn a_bad_listen_address_says_how_to_write_one() {
        let err = Config::from_toml_str(&format!("listen = \"localhost:3000\"\n{}", base()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.0.0.0:3000"), "{err}");
        let ok = Config::from_toml_str(&format!("listen = \"[::1]:8080\"\n{}", base())).unwrap();
        assert_eq!(ok.listen.port(), 8080);
    }

    #[test]
    fn workers_are_one_to_the_bound_or_the_runtime_default() {
        assert_eq!(Config::from_toml_str(&base()).unwrap().workers, None);
        let two = Config::from_toml_str(&format!("workers = 2\n{}", base())).unwrap();
        assert_eq!(two.workers, Some(2));
        let zero = Config::from_toml_str(&format!("workers = 0\n{}", base())).unwrap_err();
        assert_eq!(zero.key(), Some("workers"));
        assert!(zero.to_string().contains("leave it out"), "{zero}");
        let many = format!("workers = {}\n{}", MAX_WORKERS + 1, base());
        let err = Config::from_toml_str(&many).unwrap_err().to_string();
        assert!(err.contains("above 1024"), "{err}");
        let negative = Config::from_toml_str(&format!("workers = -1\n{}", base())).unwrap_err();
        assert!(negative.to_string().contains("workers"), "{negative}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = format!("{}[limits]\nmailbox_depth = 3\n", base());
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("mailbox_depth"), "{err}");
    }

    /// Pieces of a secret, split at a `/` as a Redis password may be: neither may be shown.
    const SECRET_HEAD: &str = "Sekr3tHead";
    const SECRET_TAIL: &str = "Passw0rdTail";
    const SECRET_NUMBER: &str = "98765432123";

    fn secret() -> String {
        format!("{SECRET_HEAD}/{SECRET_TAIL}")
    }

    /// The key a parse or validation error names.
    fn named_key(err: &ConfigError) -> Option<&str> {
        match err {
            ConfigError::Parse { key, .. } => key.as_deref(),
            other => other.key(),
        }
    }

    /// Files that break at a line holding a secret, for every key that holds one, and the key
    /// the error must name.
    fn files_with_broken_secrets() -> Vec<(String, &'static str)> {
        let s = secret();
        let turn =
            |line: &str| format!("{}[[ice.turn]]\nurls = [\"turn:t:3478\"]\n{line}\n", base());
        let store = |line: &str| format!("{}[store]\nbackend = \"redis\"\n{line}\n", base());
        let usage = |line: &str| format!("{}[usage]\n{line}\n", base());
        let admin = |line: &str| format!("{}[admin]\n{line}\n", base());
        let key2 = |value: &str| {
            format!(
                "{}[[projects.keys]]\nkid = \"kid_0000000000000002\"\npublic_key = {value}\n",
                base()
            )
        };
        let secret = "ice.turn[0].secret";
        let urls = "store.urls";
        let stats = "usage.turn_stats_url";
        let hash = "admin.token_sha256";
        let public = "projects[0].keys[1].public_key";
        vec![
            (turn(&format!("secret = \"{s}")), secret),
            (turn(&format!("secret = '{s}")), secret),
            (turn(&format!("secret = \"\"\"{s}\nline = 2")), secret),
            (turn(&format!("secret = {s}")), secret),
            (turn(&format!("secret = \"{s}\\q\"")), secret),
            (turn(&format!("secret = {SECRET_NUMBER}")), secret),
            (turn(&format!("secret = [\"{s}\"]")), secret),
            (turn(&format!("secret = \"{s}\"\nsecret = \"{s}\"")), secret),
            (store(&format!("urls = [\"redis://app:{s}@h:6379\"")), urls),
            (store(&format!("urls = \"redis://app:{s}@h:6379\"")), urls),
            (
                store(&format!(
                    "urls = [\n  \"redis://app:{s}@h:6379\",\n  \"redis://app:{s}@h:6380\n]"
                )),
                urls,
            ),
            (
                store(&format!("urls = [\"foo://app:{s}@h:6379\"]")),
                "store.urls[0]",
            ),
            (
                store(&format!("urls = [\"app:{s}@h:6379\"]")),
                "store.urls[0]",
            ),
            (
                store(&format!("urls = [\"redis://h:6379/0?password={s}\"")),
                urls,
            ),
            (
                usage(&format!("turn_stats_url = \"redis://:{s}@h:6379")),
                stats,
            ),
            (
                usage(&format!("turn_stats_url = \"redis://:{s}@h:6379\" x")),
                stats,
            ),
            (
                usage(&format!("turn_stats_url = [\"redis://:{s}@h\"]")),
                stats,
            ),
            (
                usage(&format!("turn_stats_url = \"http://:{s}@h:6379\"")),
                stats,
            ),
            (admin(&format!("token_sha256 = \"{s}")), hash),
            (admin(&format!("token_sha256 = {s}")), hash),
            (admin(&format!("token_sha256 = {SECRET_NUMBER}")), hash),
            (admin(&format!("token_sha256 = \"{s}\"")), hash),
            // The API secret pasted where the public key goes.
            (key2(&format!("\"sk_{s}")), public),
            (key2(&format!("\"sk_{s}\"")), public),
            (key2(&format!("sk_{s}")), public),
            (
                format!("{}[store]\nbackend = \"{s}\"\n", base()),
                "store.backend",
            ),
            (
                format!(
                    "{}[[ice.turn]]\nurls = [\"turns:u:{s}@t x\"]\nsecret = \"s\"\n",
                    base()
                ),
                "ice.turn[0].urls[0]",
            ),
            (
                format!(
                    "{}[cors]\nallowed_origins = [\"https://u:{s}@app/\"]\n",
                    base()
                ),
                "cors.allowed_origins[0]",
            ),
        ]
    }

    #[test]
    fn no_error_about_a_broken_file_repeats_a_secret_of_it() {
        for (text, key) in files_with_broken_secrets() {
            let err = Config::from_toml_str(&text).unwrap_err();
            let shown = format!("{err} {err:?}");
            for piece in [SECRET_HEAD, SECRET_TAIL, SECRET_NUMBER] {
                assert!(!shown.contains(piece), "{text}\n=> {shown}");
            }
            assert_eq!(named_key(&err), Some(key), "{text}\n=> {shown}");
            if let ConfigError::Parse { line, column, .. } = &err {
                assert!(line.is_some() && column.is_some(), "{text}\n=> {shown}");
            }
        }
        // A line without `=` names no key: its first word may be the secret itself.
        for line in [format!("secret \"{}\"", secret()), secret()] {
            let text = format!("{}[[ice.turn]]\nurls = [\"turn:t:3478\"]\n{line}\n", base());
            let err = Config::from_toml_str(&text).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(SECRET_HEAD), "{shown}");
            assert!(!shown.contains(SECRET_TAIL), "{shown}");
            assert_eq!(named_key(&err), None, "{shown}");
            assert!(shown.contains("line 8, column"), "{shown}");
        }
    }

    #[test]
    fn a_parse_error_names_file_line_column_key_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulsebeam.toml");
        let text = format!(
            "{}[[ice.turn]]\nurls = [\"turn:t:3478\"]\nsecret = \"{}\n",
            base(),
            secret()
        );
        std::fs::write(&path, &text).unwrap();
        let err = Config::from_file(&path).unwrap_err();
        let shown = err.to_string();
        let line = text.lines().count();
        let column = "secret = \"".len() + secret().len() + 1;
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(
            shown.contains(&format!("line {line}, column {column}")),
            "{shown}"
        );
        assert!(shown.contains("key `ice.turn[0].secret`"), "{shown}");
        assert!(shown.contains("close the string"), "{shown}");
        assert!(!shown.contains(SECRET_HEAD), "{shown}");
    }

    #[test]
    fn a_schema_error_names_the_expected_kind_not_the_value() {
        let text = format!("{}[store]\npool_size = \"{}\"\n", base(), secret());
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("key `store.pool_size`"), "{err}");
        assert!(err.contains("expected usize"), "{err}");
        assert!(!err.contains(SECRET_HEAD), "{err}");
    }
}
