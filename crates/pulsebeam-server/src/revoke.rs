//! Revocations: tokens refused before they expire.
//!
//! A revocation names one token of a project by its `jti`, or every token of one peer
//! (project, group, peer), which also covers tokens minted without `jti` or `iat` as the original
//! SDK minted them. Each lasts until a time after which the tokens it covers would have expired
//! anyway; then it is dropped. Keys are revoked by removing them from the configuration and
//! reloading.
//!
//! Every call checks the revocations in force (a hash lookup in a map swapped whole on change,
//! so readers never wait); open long-polls re-check theirs when the set changes. A single node
//! keeps them in a JSON state file; with the Redis store they live in Redis and reach every node
//! within a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// What a revocation refuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevocationTarget {
    /// The token of `project` whose `jti` is `jti`.
    Token {
        /// The project id.
        project: String,
        /// The token's `jti`.
        jti: String,
    },
    /// Every token of one peer of `project`.
    Peer {
        /// The project id.
        project: String,
        /// The group id.
        group: String,
        /// The peer id.
        peer: String,
    },
}

impl RevocationTarget {
    /// The project it belongs to.
    pub fn project(&self) -> &str {
        match self {
            RevocationTarget::Token { project, .. } | RevocationTarget::Peer { project, .. } => {
                project
            }
        }
    }
}

impl std::fmt::Display for RevocationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevocationTarget::Token { project, jti } => {
                write!(f, "token jti {jti:?} of project {project:?}")
            }
            RevocationTarget::Peer {
                project,
                group,
                peer,
            } => write!(
                f,
                "every token of peer {peer:?} in group {group:?} of project {project:?}"
            ),
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Revocation {
    /// What it refuses.
    #[serde(flatten)]
    pub target: RevocationTarget,
    /// Unix seconds until which it holds; then it is dropped.
    pub until: u64,
    /// Unix seconds when it was made.
    pub created_at: u64,
}

impl Revocation {
    /// A revocation of `target` made at `created_at`, holding until `until`.
    pub fn new(target: RevocationTarget, until: u64, created_at: u64) -> Self {
        Revocation {
            target,
            until,
            created_at,
        }
    }
}

/// Why revocations could not be kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The state file could not be written or read.
    #[error("cannot keep revocations in {path}: {source}; check the directory exists and is writable (admin.state_file)")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file is not what this server writes.
    #[error("the revocation state file {path} is not valid: {message}; move it away to start with no revocations")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The shared store failed.
    #[error("the revocation store is unavailable: {0}; retry")]
    Store(String),
}

/// The revocations in force on this node.
pub(crate) struct Revocations {
    current: ArcSwap<HashMap<RevocationTarget, Revocation>>,
    state_file: Option<PathBuf>,
    /// Serialises writers (readers never take it).
    write: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    revocations: Vec<Revocation>,
}

impl Revocations {
    /// An empty set, kept only in memory.
    pub(crate) fn in_memory() -> Self {
        Revocations {
            current: ArcSwap::from_pointee(HashMap::new()),
            state_file: None,
            write: Mutex::new(()),
        }
    }

    /// The set kept in `path`, loaded now (a missing file is an empty set), dropping those
    /// that have run out by `now`.
    pub(crate) fn with_state_file(path: &Path, now: u64) -> Result<Self, RevocationError> {
        let map = match std::fs::read(path) {
            Ok(bytes) => {
                let state: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| RevocationError::Corrupt {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                state
                    .revocations
                    .into_iter()
                    .filter(|r| r.until > now)
                    .map(|r| (r.target.clone(), r))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => {
                return Err(RevocationError::StateFile {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(Revocations {
            current: ArcSwap::from_pointee(map),
            state_file: Some(path.to_owned()),
            write: Mutex::new(()),
        })
    }

    /// The revocation that refuses a token of `peer` with `jti`, if one holds at `now`.
    pub(crate) fn check(
        &self,
        project: &str,
        group: &str,
        peer: &str,
        jti: Option<&str>,
        now: u64,
    ) -> Option<Revocation> {
        let map = self.current.load();
        if map.is_empty() {
            return None;
        }
        let by_peer = RevocationTarget::Peer {
            project: project.to_owned(),
            group: group.to_owned(),
            peer: peer.to_owned(),
        };
        let by_token = jti.map(|jti| RevocationTarget::Token {
            project: project.to_owned(),
            jti: jti.to_owned(),
        });
        std::iter::once(by_peer)
            .chain(by_token)
            .filter_map(|target| map.get(&target))
            .find(|r| r.until > now)
            .cloned()
    }

    /// Every revocation in force at `now`, oldest first.
    pub(crate) fn list(&self, now: u64) -> Vec<Revocation> {
        let mut all: Vec<Revocation> = self
            .current
            .load()
            .values()
            .filter(|r| r.until > now)
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.target).cmp(&(b.created_at, &b.target)));
        all
    }

    /// Adds (or extends) `revocation`, drops those run out by `now`, and saves the set.
    /// Returns the revocation in force for that target afterwards.
    pub(crate) fn add(
        &self,
        revocation: Revocation,
        now: u64,
    ) -> Result<Revocation, RevocationError> {
        self.put(revocation, now, true)
    }

    /// Puts `revocation` in force (a second one of the same target never shortens the first),
    /// drops those run out by `now`, and saves the set to the state file when `save`.
    fn put(
        &self,
        revocation: Revocation,
        now: u64,
        save: bool,
    ) -> Result<Revocation, RevocationError> {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map: HashMap<RevocationTarget, Revocation> = (**self.current.load()).clone();
        map.retain(|_, r| r.until > now);
        let kept = match map.get(&revocation.target) {
            Some(existing) if existing.until >= revocation.until => existing.clone(),
            _ => revocation,
        };
        map.insert(kept.target.clone(), kept.clone());
        if save {
            self.save(&map)?;
        }
        self.current.store(Arc::new(map));
        Ok(kept)
    }

    /// Replaces the whole set (from the shared store), dropping those run out by `now`.
    /// Returns whether anything changed.
    pub(crate) fn replace(&self, all: Vec<Revocation>, now: u64) -> bool {
        let map: HashMap<RevocationTarget, Revocation> = all
            .into_iter()
            .filter(|r| r.until > now)
            .map(|r| (r.target.clone(), r))
            .collect();
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if **self.current.load() == map {
            return false;
        }
        self.current.store(Arc::new(map));
        true
    }

    /// Puts `revocation` (from the shared store) in force here at once.
    pub(crate) fn replace_one(&self, revocation: Revocation, now: u64) {
        // Without saving, `put` cannot fail.
        let _ = self.put(revocation, now, false);
    }

    fn save(&self, map: &HashMap<RevocationTarget, Revocation>) -> Result<(), RevocationError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let mut revocations: Vec<Revocation> = map.values().cloned().collect();
        revocations.sort_by(|a, b| (a.created_at, &a.target).cmp(&(b.created_at, &b.target)));
        let bytes = serde_json::to_vec_pretty(&StateFile { revocations }).map_err(|e| {
            RevocationError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        // Written beside and renamed over, so a crash leaves the old file or the new one.
        let tmp = path.with_extension("tmp");
        let io = |source| RevocationError::StateFile {
            path: path.clone(),
            source,
        };
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(p: &str) -> RevocationTarget {
        RevocationTarget::Peer {
            project: "main".into(),
            group: "g".into(),
            peer: p.into(),
        }
    }

    #[test]
    fn revocations_hold_until_their_time_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let set = Revocations::with_state_file(&path, 1_000).unwrap();
        set.add(Revocation::new(peer("bob"), 2_000, 1_000), 1_000)
            .unwrap();
        let jti = RevocationTarget::Token {
            project: "main".into(),
            jti: "t-1".into(),
        };
        set.add(Revocation::new(jti, 1_500, 1_000), 1_000).unwrap();
        assert!(set.check("main", "g", "bob", None, 1_999).is_some());
        assert!(set.check("main", "g", "bob", None, 2_000).is_none());
        assert!(set.check("other", "g", "bob", None, 1_100).is_none());
        assert!(set
            .check("main", "g", "alice", Some("t-1"), 1_100)
            .is_some());
        assert!(set
            .check("main", "g", "alice", Some("t-2"), 1_100)
            .is_none());
        // A shorter revocation of the same target does not shorten the first.
        let kept = set
            .add(Revocation::new(peer("bob"), 1_200, 1_100), 1_100)
            .unwrap();
        assert_eq!(kept.until, 2_000);

        // Another process reading the file later sees what still holds.
        let reloaded = Revocations::with_state_file(&path, 1_600).unwrap();
        assert_eq!(reloaded.list(1_600).len(), 1);
        assert!(reloaded.check("main", "g", "bob", None, 1_600).is_some());
    }

    #[test]
    fn a_corrupt_state_file_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = Revocations::with_state_file(&path, 0).err().unwrap();
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
