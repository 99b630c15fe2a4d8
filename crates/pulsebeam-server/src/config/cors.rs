//! The `[cors]` section: cross-origin access for browsers.

use serde::{Deserialize, Serialize};

use super::check::has_space;
use super::error::ConfigError;
use super::redact::redact_url;

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

impl CorsConfig {
    /// Checks that every allowed origin is `"*"` or a bare `scheme://host[:port]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        validate_origins(&self.allowed_origins)
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
                format!("\"{}\" is not an origin", redact_url(origin)),
                "write scheme://host[:port] with no path or trailing slash, e.g. \"https://app.example.com\", or \"*\"",
            ));
        }
    }
    Ok(())
}
