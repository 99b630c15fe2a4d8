//! Where revocations are kept: [`RevocationStore`], and its local implementation.
//!
//! # The contract
//!
//! A store holds at most one [`Revocation`] per [`RevocationTarget`](crate::RevocationTarget).
//! [`RevocationStore::put`] keeps the longer of the one given and the one already held (on an
//! equal `until`, the one held), and returns the one in force afterwards: a second revocation
//! of the same target never shortens the first. [`RevocationStore::list`] returns those holding
//! at `now` (`until > now`), ordered by `(created_at, target)`; a store may forget the others.
//! [`RevocationStore::version`] changes whenever a `put` changed what is held, so a node that
//! caches the set reads it again only when it changed. Every node sharing a store sees every
//! `put` of the others.
//!
//! [`LocalRevocations`] serves one node, in memory or in a state file;
//! [`RedisRevocations`](super::RedisRevocations) serves every node of a deployment. The
//! conformance suite (`conformance::revocations`) proves the contract on each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::BoxFuture;
use crate::revoke::{sort_revocations, Revocation, RevocationError, RevocationTarget};

/// Names one state of a [`RevocationStore`]: a different version means the set may have
/// changed since.
///
/// A version is an *epoch*, a random id naming one life of the store's data, and a count of
/// changes within it. A store that loses its data (Redis restarted without persistence,
/// `FLUSHALL`) starts a new epoch, so its count starting again from zero can never repeat a
/// version a node has already seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RevocationsVersion {
    epoch: String,
    changes: u64,
}

impl RevocationsVersion {
    /// The version `changes` changes into the epoch `epoch`.
    pub(crate) fn new(epoch: impl Into<String>, changes: u64) -> Self {
        RevocationsVersion {
            epoch: epoch.into(),
            changes,
        }
    }

    /// Whether `other` is of the same epoch (the store kept its data in between).
    pub fn same_epoch(&self, other: &RevocationsVersion) -> bool {
        self.epoch == other.epoch
    }
}

/// A random epoch id.
pub(crate) fn new_epoch() -> String {
    crate::random_id::random_id()
}

/// Storage of revocations; the module docs state the contract.
pub trait RevocationStore: Send + Sync + 'static {
    /// Puts `revocation` in force unless one of the same target holds as long or longer, and
    /// returns the one in force for that target. `now` (Unix seconds) lets a store drop those
    /// run out.
    ///
    /// # Errors
    ///
    /// [`RevocationError::StateFile`] when a state file cannot be written,
    /// [`RevocationError::Store`] when the backend cannot be reached.
    fn put<'a>(
        &'a self,
        revocation: &'a Revocation,
        now: u64,
    ) -> BoxFuture<'a, Result<Revocation, RevocationError>>;

    /// The revocations holding at `now` (Unix seconds), ordered by `(created_at, target)`.
    ///
    /// # Errors
    ///
    /// [`RevocationError::Store`] when the backend cannot be reached.
    fn list(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, RevocationError>>;

    /// The current version, which changes whenever a `put` changed the set.
    ///
    /// # Errors
    ///
    /// [`RevocationError::Store`] when the backend cannot be reached.
    fn version(&self) -> BoxFuture<'_, Result<RevocationsVersion, RevocationError>>;
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    revocations: Vec<Revocation>,
}

#[derive(Default)]
struct Held {
    map: HashMap<RevocationTarget, Revocation>,
    changes: u64,
}

/// The revocations of one node: in memory, or also in a JSON state file (`admin.state_file`)
/// that survives a restart.
pub struct LocalRevocations {
    held: Mutex<Held>,
    state_file: Option<PathBuf>,
    /// This set's epoch: it lives as long as the process.
    epoch: String,
}

impl std::fmt::Debug for LocalRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRevocations")
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl LocalRevocations {
    /// An empty set, kept only in memory.
    pub fn in_memory() -> Self {
        LocalRevocations {
            held: Mutex::new(Held::default()),
            state_file: None,
            epoch: new_epoch(),
        }
    }

    /// The set kept in `path`, loaded now (a missing file is an empty set), without those run
    /// out by `now`.
    ///
    /// # Errors
    ///
    /// [`RevocationError::StateFile`] when the file cannot be read,
    /// [`RevocationError::Corrupt`] when it is not what this server writes.
    pub fn with_state_file(path: &Path, now: u64) -> Result<Self, RevocationError> {
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
        Ok(LocalRevocations {
            held: Mutex::new(Held { map, changes: 0 }),
            state_file: Some(path.to_owned()),
            epoch: new_epoch(),
        })
    }

    /// The revocations holding at `now`, as [`RevocationStore::list`] returns them, at once.
    pub fn in_force(&self, now: u64) -> Vec<Revocation> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<Revocation> = held
            .map
            .values()
            .filter(|r| r.until > now)
            .cloned()
            .collect();
        sort_revocations(&mut all);
        all
    }

    fn put_now(&self, revocation: &Revocation, now: u64) -> Result<Revocation, RevocationError> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map = held.map.clone();
        map.retain(|_, r| r.until > now);
        let kept = match map.get(&revocation.target) {
            // The rule "a longer revocation wins", for this store.
            Some(existing) if existing.until >= revocation.until => existing.clone(),
            _ => revocation.clone(),
        };
        let changed = map.get(&kept.target) != Some(&kept);
        map.insert(kept.target.clone(), kept.clone());
        // Saved before it is in force: a revocation that cannot be kept is refused.
        self.save(&map)?;
        held.map = map;
        if changed {
            held.changes += 1;
        }
        Ok(kept)
    }

    /// Takes in `all` (as another store lists them) by the rule "a longer revocation wins",
    /// saving the state file once if anything changed.
    ///
    /// # Errors
    ///
    /// [`RevocationError::StateFile`] when the state file cannot be written; then nothing
    /// changed here.
    pub(crate) fn absorb(&self, all: &[Revocation], now: u64) -> Result<(), RevocationError> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map = held.map.clone();
        map.retain(|_, r| r.until > now);
        let mut changed = map.len() != held.map.len();
        for revocation in all.iter().filter(|r| r.until > now) {
            if map
                .get(&revocation.target)
                .is_some_and(|held| held.until >= revocation.until)
            {
                continue;
            }
            map.insert(revocation.target.clone(), revocation.clone());
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        self.save(&map)?;
        held.map = map;
        held.changes += 1;
        Ok(())
    }

    fn save(&self, map: &HashMap<RevocationTarget, Revocation>) -> Result<(), RevocationError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let mut revocations: Vec<Revocation> = map.values().cloned().collect();
        sort_revocations(&mut revocations);
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

impl RevocationStore for LocalRevocations {
    fn put<'a>(
        &'a self,
        revocation: &'a Revocation,
        now: u64,
    ) -> BoxFuture<'a, Result<Revocation, RevocationError>> {
        Box::pin(std::future::ready(self.put_now(revocation, now)))
    }

    fn list(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, RevocationError>> {
        Box::pin(std::future::ready(Ok(self.in_force(now))))
    }

    fn version(&self) -> BoxFuture<'_, Result<RevocationsVersion, RevocationError>> {
        let changes = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .changes;
        Box::pin(std::future::ready(Ok(RevocationsVersion::new(
            self.epoch.as_str(),
            changes,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::revocations as suite;
    use std::sync::Arc;

    #[tokio::test]
    async fn conformance_in_memory() {
        let stores: Mutex<HashMap<String, Arc<LocalRevocations>>> = Mutex::default();
        let factory: suite::Factory = Arc::new(move |namespace: &str| {
            let mut stores = stores.lock().unwrap();
            let store = stores
                .entry(namespace.to_owned())
                .or_insert_with(|| Arc::new(LocalRevocations::in_memory()));
            Arc::clone(store) as Arc<dyn RevocationStore>
        });
        let failed = suite::run_all(factory).await;
        assert!(failed.is_empty(), "failed: {failed:#?}");
    }

    #[tokio::test]
    async fn conformance_in_a_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let stores: Mutex<HashMap<String, Arc<LocalRevocations>>> = Mutex::default();
        let factory: suite::Factory = Arc::new(move |namespace: &str| {
            let mut stores = stores.lock().unwrap();
            let store = stores.entry(namespace.to_owned()).or_insert_with(|| {
                let path = root.join(format!("{namespace}.json"));
                Arc::new(LocalRevocations::with_state_file(&path, 0).unwrap())
            });
            Arc::clone(store) as Arc<dyn RevocationStore>
        });
        let failed = suite::run_all(factory).await;
        assert!(failed.is_empty(), "failed: {failed:#?}");
    }

    #[test]
    fn the_state_file_survives_a_restart_without_what_ran_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let set = LocalRevocations::with_state_file(&path, 1_000).unwrap();
        set.put_now(
            &Revocation::new(suite::peer("g", "bob"), 2_000, 1_000),
            1_000,
        )
        .unwrap();
        let jti = RevocationTarget::Token {
            project: "main".into(),
            jti: "t-1".into(),
        };
        set.put_now(&Revocation::new(jti, 1_500, 1_000), 1_000)
            .unwrap();
        assert_eq!(set.in_force(1_000).len(), 2);

        let reloaded = LocalRevocations::with_state_file(&path, 1_600).unwrap();
        let held = reloaded.in_force(1_600);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].target, suite::peer("g", "bob"));
        assert_eq!(held[0].until, 2_000);
    }

    #[test]
    fn a_revocation_that_cannot_be_saved_is_refused_and_not_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("state.json");
        let set = LocalRevocations::with_state_file(&path, 0).unwrap();
        let err = set
            .put_now(
                &Revocation::new(suite::peer("g", "bob"), 2_000, 1_000),
                1_000,
            )
            .unwrap_err();
        assert!(matches!(err, RevocationError::StateFile { .. }), "{err}");
        assert!(err.to_string().contains("writable"), "{err}");
        assert!(set.in_force(1_000).is_empty());
    }

    #[test]
    fn a_corrupt_state_file_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = LocalRevocations::with_state_file(&path, 0).err().unwrap();
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
