//! Revocations shared in a store that can lose its data (Redis without persistence, a Redis
//! restarted or flushed), mirrored on each node so that an acknowledged revocation outlives
//! that loss.
//!
//! Every node keeps a copy of what it put and listed: in memory, or in `admin.state_file`
//! when one is configured (so it also outlives a restart of the node). Nothing ever removes a
//! revocation before its `until`, so a revocation in force in the copy that the shared store
//! no longer holds (or holds shorter) was lost by the store: the node puts it back when it
//! next reads the set, which it does whenever the store's version changes, and a store that
//! lost its data always has a new version (a new epoch, see [`RevocationsVersion`]).

use std::sync::Arc;

use super::revocations::{LocalRevocations, RevocationStore, RevocationsVersion};
use super::BoxFuture;
use crate::revoke::{Revocation, RevocationError};

/// A shared [`RevocationStore`] with this node's copy of it; see the module docs.
pub struct MirroredRevocations {
    shared: Arc<dyn RevocationStore>,
    mirror: LocalRevocations,
}

impl std::fmt::Debug for MirroredRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredRevocations")
            .field("mirror", &self.mirror)
            .finish_non_exhaustive()
    }
}

impl MirroredRevocations {
    /// `shared`, copied into `mirror` (whose contents, say from a state file, are put back
    /// into `shared` at the first read if `shared` lacks them).
    pub fn new(shared: Arc<dyn RevocationStore>, mirror: LocalRevocations) -> Self {
        MirroredRevocations { shared, mirror }
    }

    /// The revocations of this node's copy holding at `now`, at once (without the shared
    /// store): what a node enforces before it first reaches the shared store.
    pub fn in_force(&self, now: u64) -> Vec<Revocation> {
        self.mirror.in_force(now)
    }

    /// Copies `all` into the mirror; a state file that cannot be written is logged, since the
    /// shared store holds them.
    fn absorb(&self, all: &[Revocation], now: u64) {
        if let Err(err) = self.mirror.absorb(all, now) {
            tracing::warn!(error = %err, "revocations not copied to the state file");
        }
    }
}

/// Whether `listed` holds `revocation` (or a longer one of its target).
fn covered(listed: &[Revocation], revocation: &Revocation) -> bool {
    listed
        .iter()
        .any(|r| r.target == revocation.target && r.until >= revocation.until)
}

impl RevocationStore for MirroredRevocations {
    fn put<'a>(
        &'a self,
        revocation: &'a Revocation,
        now: u64,
    ) -> BoxFuture<'a, Result<Revocation, RevocationError>> {
        Box::pin(async move {
            let kept = self.shared.put(revocation, now).await?;
            // In force everywhere already; a state file that cannot be written is an error the
            // operator must see, as with a single node.
            self.mirror.absorb(std::slice::from_ref(&kept), now)?;
            Ok(kept)
        })
    }

    fn list(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, RevocationError>> {
        Box::pin(async move {
            let listed = self.shared.list(now).await?;
            let lost: Vec<Revocation> = self
                .mirror
                .in_force(now)
                .into_iter()
                .filter(|r| !covered(&listed, r))
                .collect();
            if lost.is_empty() {
                self.absorb(&listed, now);
                return Ok(listed);
            }
            tracing::warn!(
                count = lost.len(),
                "the revocation store lost revocations still in force (did Redis lose its data?); putting them back"
            );
            for revocation in &lost {
                self.shared.put(revocation, now).await?;
            }
            let listed = self.shared.list(now).await?;
            self.absorb(&listed, now);
            Ok(listed)
        })
    }

    fn version(&self) -> BoxFuture<'_, Result<RevocationsVersion, RevocationError>> {
        self.shared.version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::revocations as suite;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[tokio::test]
    async fn conformance_mirrored() {
        // Nodes of one namespace share the store and each has its own mirror.
        let shared: Mutex<HashMap<String, Arc<LocalRevocations>>> = Mutex::default();
        let factory: suite::Factory = Arc::new(move |namespace: &str| {
            let mut shared = shared.lock().unwrap();
            let store = shared
                .entry(namespace.to_owned())
                .or_insert_with(|| Arc::new(LocalRevocations::in_memory()));
            Arc::new(MirroredRevocations::new(
                Arc::clone(store) as Arc<dyn RevocationStore>,
                LocalRevocations::in_memory(),
            )) as Arc<dyn RevocationStore>
        });
        let failed = suite::run_all(factory).await;
        assert!(failed.is_empty(), "failed: {failed:#?}");
    }

    #[tokio::test]
    async fn what_the_shared_store_lost_is_put_back_from_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let bob = Revocation::new(suite::peer("g", "bob"), 2_000, 1_000);
        let first = MirroredRevocations::new(
            Arc::new(LocalRevocations::in_memory()),
            LocalRevocations::with_state_file(&path, 1_000).unwrap(),
        );
        first.put(&bob, 1_000).await.unwrap();
        drop(first);

        // The node restarts and the shared store has lost everything.
        let lost = Arc::new(LocalRevocations::in_memory());
        let again = MirroredRevocations::new(
            Arc::clone(&lost) as Arc<dyn RevocationStore>,
            LocalRevocations::with_state_file(&path, 1_100).unwrap(),
        );
        assert_eq!(again.in_force(1_100), std::slice::from_ref(&bob));
        assert_eq!(again.list(1_100).await.unwrap(), std::slice::from_ref(&bob));
        assert_eq!(lost.in_force(1_100), [bob]);
    }

    #[tokio::test]
    async fn a_longer_revocation_of_another_node_reaches_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let shared = Arc::new(LocalRevocations::in_memory());
        let node = MirroredRevocations::new(
            Arc::clone(&shared) as Arc<dyn RevocationStore>,
            LocalRevocations::with_state_file(&path, 1_000).unwrap(),
        );
        node.put(
            &Revocation::new(suite::peer("g", "bob"), 2_000, 1_000),
            1_000,
        )
        .await
        .unwrap();
        let longer = Revocation::new(suite::peer("g", "bob"), 3_000, 1_010);
        shared.put(&longer, 1_010).await.unwrap();
        assert_eq!(
            node.list(1_020).await.unwrap(),
            std::slice::from_ref(&longer)
        );
        let reloaded = LocalRevocations::with_state_file(&path, 1_030).unwrap();
        assert_eq!(reloaded.in_force(1_030), [longer]);
    }
}
