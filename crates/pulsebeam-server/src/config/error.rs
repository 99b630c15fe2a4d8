//! [`ConfigError`], the one error every section's check returns.

use std::path::{Path, PathBuf};

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
    /// The file is not valid TOML or does not fit the schema. The message names the place,
    /// the key and the problem, but never quotes the file: its lines may hold secrets.
    #[error(
        "invalid config{}{}{}: {problem}; {fix}",
        in_file(file.as_deref()),
        at(*line, *column),
        key.as_deref().map(|key| format!(", key `{key}`")).unwrap_or_default()
    )]
    Parse {
        /// The file, when the text was read from one.
        file: Option<PathBuf>,
        /// The line, from 1, when the parser gave a place.
        line: Option<u32>,
        /// The column on that line, in characters from 1.
        column: Option<u32>,
        /// The key of that line, e.g. `ice.turn[0].secret`, when it reads as a plain key.
        key: Option<String>,
        /// What is wrong, in the parser's or schema's words without the value.
        problem: String,
        /// How to fix it.
        fix: String,
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

    /// The error, said to be about `path` when it is a parse error.
    pub(super) fn in_file(mut self, path: &Path) -> Self {
        if let ConfigError::Parse { file, .. } = &mut self {
            *file = Some(path.to_owned());
        }
        self
    }

    /// The TOML key a broken rule is about ([`ConfigError::Invalid`]). A parse error's key,
    /// read from the file where it could be, is its `key` field.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn in_file(file: Option<&Path>) -> String {
    file.map(|file| format!(" {}", file.display()))
        .unwrap_or_default()
}

fn at(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}
