//! The `[[projects]]` tables: projects and the keys that sign their tokens.

use std::collections::{HashMap, HashSet};

use pulsebeam_token::{KeySet, PublicKey};
use serde::{Deserialize, Serialize};

use super::error::ConfigError;

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

/// One key set per project, in order, after checking ids and keys.
pub(super) fn key_sets(projects: &[ProjectConfig]) -> Result<Vec<KeySet>, ConfigError> {
    if projects.is_empty() {
        return Err(ConfigError::invalid(
            "projects",
            "no project is configured, so no token could be accepted",
            "add a [[projects]] table with an `id` and at least one [[projects.keys]] entry",
        ));
    }
    let mut ids = HashSet::new();
    let mut kids = HashSet::new();
    // Public key -> (project index, key index) of its first use.
    let mut owners: HashMap<[u8; 32], (usize, usize)> = HashMap::new();
    let mut sets = Vec::with_capacity(projects.len());
    for (p, project) in projects.iter().enumerate() {
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
                                projects.get(fp).map_or("", |x| x.id.as_str())
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

#[cfg(test)]
mod tests {
    use crate::config::testing::{base, KEY};
    use crate::config::Config;

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
}
