//! Revocations: tokens refused before they expire.
//!
//! A revocation names one token of a project by its `jti`, or every token of one peer
//! (project, group, peer), which also covers tokens minted without `jti` or `iat` as the original
//! SDK minted them. Each lasts until a time after which the tokens it covers would have expired
//! anyway; then it is dropped. Keys are revoked by removing them from the configuration and
//! reloading.
//!
//! They are kept by a [`RevocationStore`](crate::store::RevocationStore): a single node keeps
//! them in memory or in a JSON state file, a deployment on Redis in Redis. Every call checks
//! [`Revocations`], this node's copy of those in force (a hash lookup in a map swapped whole on
//! change, so readers never wait), which the server keeps in step with the store; open
//! long-polls re-check theirs when the set changes.

use std::collections::HashMap;
use std::path::PathBuf;
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

/// Sorts oldest first (by creation time, then target), the order revocations are listed in.
pub(crate) fn sort_revocations(all: &mut [Revocation]) {
    all.sort_by(|a, b| (a.created_at, &a.target).cmp(&(b.created_at, &b.target)));
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
    /// The revocation store (Redis) failed.
    #[error("the revocation store is unavailable: {0}; retry")]
    Store(String),
}

/// This node's copy of the revocations in force, checked on every call.
pub(crate) struct Revocations {
    current: ArcSwap<HashMap<RevocationTarget, Revocation>>,
    /// Serialises writers (readers never take it).
    write: Mutex<()>,
}

impl Revocations {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Revocations {
            current: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
        }
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
        sort_revocations(&mut all);
        all
    }

    /// Replaces the whole set (as the store lists it), dropping those run out by `now`.
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

    /// Puts `revocation`, which the store says is in force for its target, in force here at
    /// once, without waiting for the next sync.
    pub(crate) fn insert(&self, revocation: Revocation, now: u64) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map: HashMap<RevocationTarget, Revocation> = (**self.current.load()).clone();
        map.retain(|_, r| r.until > now);
        map.insert(revocation.target.clone(), revocation);
        self.current.store(Arc::new(map));
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
    fn revocations_refuse_their_peer_or_token_until_their_time() {
        let set = Revocations::new();
        let jti = RevocationTarget::Token {
            project: "main".into(),
            jti: "t-1".into(),
        };
        set.insert(Revocation::new(peer("bob"), 2_000, 1_000), 1_000);
        set.insert(Revocation::new(jti, 1_500, 1_000), 1_000);
        assert!(set.check("main", "g", "bob", None, 1_999).is_some());
        assert!(set.check("main", "g", "bob", None, 2_000).is_none());
        assert!(set.check("other", "g", "bob", None, 1_100).is_none());
        assert!(set
            .check("main", "g", "alice", Some("t-1"), 1_100)
            .is_some());
        assert!(set
            .check("main", "g", "alice", Some("t-2"), 1_100)
            .is_none());
        assert_eq!(set.list(1_600).len(), 1);
        assert_eq!(set.list(1_000).len(), 2);
    }

    #[test]
    fn a_replaced_set_says_whether_it_changed() {
        let set = Revocations::new();
        let bob = Revocation::new(peer("bob"), 2_000, 1_000);
        assert!(set.replace(vec![bob.clone()], 1_000));
        assert!(!set.replace(vec![bob.clone()], 1_000));
        // What the store still lists but has run out here is not in force.
        assert!(set.replace(vec![bob], 2_000));
        assert!(set.list(0).is_empty());
    }
}
