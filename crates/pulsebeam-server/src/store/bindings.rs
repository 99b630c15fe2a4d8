//! Which token admits a gRPC-web `Recv` that carries none: [`BindingStore`], and its in-memory
//! implementation. `crate::binding` documents the binding and its threat model.
//!
//! # The contract
//!
//! [`BindingStore::put`] binds a [`BindingKey`] (group, peer, client address) to a credential
//! (the text of a bearer `Authorization` value) valid until a time; a later put of the same key
//! replaces it. [`BindingStore::get`] returns the credential bound to a key, also after it
//! expired, for [`KEEP_EXPIRED_SECS`] (so that the client is told its token expired), then
//! nothing. Keys that differ in any part never meet. [`MemoryBindings`] serves one node,
//! [`RedisBindings`](super::RedisBindings) every node of a deployment; the conformance suite
//! (`conformance::bindings`) proves the contract on each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::{BoxFuture, StoreError};

/// How long an expired binding is kept.
pub const KEEP_EXPIRED_SECS: u64 = 3600;

/// Most bindings [`MemoryBindings`] keeps; when full, those past [`KEEP_EXPIRED_SECS`] go first,
/// then the one that expires first.
const CAPACITY: usize = 200_000;

/// What a binding is for: a peer, at a client address (already reduced to what identifies a
/// client: an IPv4 address, or an IPv6 /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingKey<'a> {
    /// The group id.
    pub group: &'a str,
    /// The peer id.
    pub peer: &'a str,
    /// The client address.
    pub client: IpAddr,
}

/// Storage of bindings; the module docs state the contract.
pub trait BindingStore: Send + Sync + 'static {
    /// Binds `key` to `credential`, valid until `valid_until` (Unix seconds), as of `now`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend cannot be reached.
    fn put<'a>(
        &'a self,
        key: BindingKey<'a>,
        credential: &'a str,
        valid_until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The credential bound to `key` as of `now`, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend cannot be reached.
    fn get<'a>(
        &'a self,
        key: BindingKey<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
}

type Owned = (String, String, IpAddr);

/// The bindings of one node, in memory.
#[derive(Debug, Default)]
pub struct MemoryBindings {
    map: Mutex<HashMap<Owned, (String, u64)>>,
}

impl MemoryBindings {
    /// An empty store.
    pub fn new() -> Self {
        MemoryBindings::default()
    }
}

fn owned(key: BindingKey<'_>) -> Owned {
    (key.group.to_owned(), key.peer.to_owned(), key.client)
}

impl BindingStore for MemoryBindings {
    fn put<'a>(
        &'a self,
        key: BindingKey<'a>,
        credential: &'a str,
        valid_until: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let done = (|| {
            let mut map = self
                .map
                .lock()
                .map_err(|_| StoreError::Unavailable("the binding table is poisoned".into()))?;
            let key = owned(key);
            if map.len() >= CAPACITY && !map.contains_key(&key) {
                map.retain(|_, (_, until)| until.saturating_add(KEEP_EXPIRED_SECS) > now);
                if map.len() >= CAPACITY {
                    let first = map
                        .iter()
                        .min_by_key(|(_, (_, until))| *until)
                        .map(|(k, _)| k.clone());
                    if let Some(first) = first {
                        map.remove(&first);
                    }
                }
            }
            map.insert(key, (credential.to_owned(), valid_until));
            Ok(())
        })();
        Box::pin(std::future::ready(done))
    }

    fn get<'a>(
        &'a self,
        key: BindingKey<'a>,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let found = self.map.lock().ok().and_then(|map| {
            map.get(&owned(key))
                .filter(|(_, until)| until.saturating_add(KEEP_EXPIRED_SECS) > now)
                .map(|(credential, _)| credential.clone())
        });
        Box::pin(std::future::ready(Ok(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::bindings as suite;
    use std::sync::Arc;

    #[tokio::test]
    async fn conformance() {
        let stores: Mutex<HashMap<String, Arc<MemoryBindings>>> = Mutex::default();
        let factory: suite::Factory = Arc::new(move |namespace: &str| {
            let mut stores = stores
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let store = stores.entry(namespace.to_owned()).or_default();
            Arc::clone(store) as Arc<dyn BindingStore>
        });
        let failed = suite::run_all(factory).await;
        assert!(failed.is_empty(), "failed: {failed:#?}");
    }
}
