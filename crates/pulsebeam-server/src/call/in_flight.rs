//! Acknowledgements on their way, per connection, on this node.
//!
//! A batch is acknowledged once its answer is written to the client's connection (no sooner, or a
//! server killed in between would lose it). The client can read that answer and call `Recv`
//! again before the writing thread has issued the acknowledgement; that new `Recv` takes over
//! what its connection's earlier calls left unacknowledged and would hand the batch out twice.
//! So a new `Recv` first waits, briefly, for the acknowledgements of its connection that this
//! node has under way: each batch handed out holds an [`InFlight`] until its acknowledgement is
//! stored or given up (the connection closed before the answer was written).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a new `Recv` waits for its connection's acknowledgements under way before it takes
/// over what is still unacknowledged: an acknowledgement takes a store call once the answer is
/// written; a connection that never writes its answer (a client that stopped reading) is not
/// waited for longer.
pub(crate) const SETTLE_WAIT: Duration = Duration::from_millis(500);

/// One connection of one peer: project, group, peer, conn id.
pub(crate) type Key = (Arc<str>, Arc<str>, Arc<str>, u32);

/// The connections with acknowledgements under way.
#[derive(Debug, Default)]
pub(crate) struct AcksInFlight {
    by_connection: Mutex<HashMap<Key, (usize, Arc<Notify>)>>,
}

/// A batch handed out whose acknowledgement is not stored yet; dropping it says it is (or that
/// it never will be).
#[derive(Debug)]
pub(crate) struct InFlight {
    acks: Arc<AcksInFlight>,
    key: Key,
}

impl InFlight {
    /// The connection whose batch this is.
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }
}

impl AcksInFlight {
    /// Marks a batch of `key`'s connection as handed out and not yet acknowledged.
    pub(crate) fn begin(self: &Arc<Self>, key: Key) -> InFlight {
        let mut map = self
            .by_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(key.clone())
            .or_insert_with(|| (0, Arc::new(Notify::new())))
            .0 += 1;
        InFlight {
            acks: Arc::clone(self),
            key,
        }
    }

    /// Waits until `key`'s connection has no acknowledgement under way, for at most
    /// [`SETTLE_WAIT`]; at once when it has none.
    pub(crate) async fn settled(&self, key: &Key) {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let notify = {
                let map = self
                    .by_connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match map.get(key) {
                    Some((_, notify)) => Arc::clone(notify),
                    None => return,
                }
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Checked again once enabled: the last one may have ended in between.
            if !self.is_under_way(key) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Whether `key`'s connection has an acknowledgement under way.
    pub(crate) fn is_under_way(&self, key: &Key) -> bool {
        self.by_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self
            .acks
            .by_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((count, notify)) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                notify.notify_waiters();
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conn: u32) -> Key {
        (Arc::from("p"), Arc::from("g"), Arc::from("bob"), conn)
    }

    #[tokio::test]
    async fn a_new_recv_waits_for_its_connections_acknowledgements_only() {
        let acks = Arc::new(AcksInFlight::default());
        let first = acks.begin(key(1));
        let second = acks.begin(key(1));
        let other = acks.begin(key(2));
        drop(other);
        // Another connection's acknowledgement does not hold this one up.
        tokio::time::timeout(Duration::from_millis(50), acks.settled(&key(2)))
            .await
            .expect("nothing under way for conn 2");
        let waiting = tokio::spawn({
            let acks = Arc::clone(&acks);
            async move { acks.settled(&key(1)).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "one acknowledgement is still under way"
        );
        drop(second);
        tokio::time::timeout(Duration::from_millis(200), waiting)
            .await
            .expect("settled once both are stored")
            .unwrap();
        assert!(!acks.is_under_way(&key(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledgement_that_never_comes_holds_a_new_recv_up_briefly() {
        let acks = Arc::new(AcksInFlight::default());
        let _stuck = acks.begin(key(1));
        let start = tokio::time::Instant::now();
        acks.settled(&key(1)).await;
        assert_eq!(start.elapsed(), SETTLE_WAIT);
    }
}
