//! The `[audit]` section: where audit events are written.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

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

impl AuditConfig {
    /// Checks the rotation settings of an audit file.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.file.is_some() && (self.max_file_bytes < 4096 || self.keep_files == 0) {
            return Err(ConfigError::invalid(
                "audit.max_file_bytes",
                "below 4096 bytes, or audit.keep_files is 0",
                "rotate at a few MiB (the default is 10485760) and keep at least one file",
            ));
        }
        Ok(())
    }
}
