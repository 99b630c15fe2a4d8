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
mod ice;
mod limits;
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
pub use ice::{IceConfig, TurnConfig};
pub use limits::Limits;
pub(crate) use limits::MIN_HEADER_BYTES;
pub use projects::{KeyConfig, ProjectConfig};
pub(crate) use redact::redact_url;
pub use store::{StoreBackend, StoreConfig};
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
        self.ice.validate()?;
        self.limits.validate()?;
        self.store.validate()?;
        self.usage.validate()?;
        self.cors.validate()?;
        if let Some(admin) = &self.admin {
            admin.validate(self.listen)?;
        }
        self.audit.validate()
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
    fn unknown_keys_are_refused_with_their_name() {
        let text = format!("{}[limits]\nmailbox_depth = 3\n", base());
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("mailbox_depth"), "{err}");
    }
}
