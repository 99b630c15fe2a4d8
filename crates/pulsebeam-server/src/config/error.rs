//! [`ConfigError`], the one error every section's check returns.

use std::path::PathBuf;

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
