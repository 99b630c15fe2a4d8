//! The polls waiting on this node, by connection key, and waking them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::StoreError;

/// How often a node publishes a heartbeat on the wake-up channels it listens to.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a wake-up channel may carry no heartbeat before the subscriber counts as deaf.
pub(crate) const HEARTBEAT_LOST: Duration = Duration::from_secs(3);

/// Local waiters by connection key (`P:{project:group:peer}:conn`), with how many polls share
/// each.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Waiters {
    /// Registers a poll waiting for wake-ups of `key`; dropping the waiter unregisters it.
    pub(crate) fn register(&self, key: String) -> Result<Waiter<'_>, StoreError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| StoreError::Unavailable("the waiter map lock was poisoned".into()))?;
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let notify = Arc::clone(&entry.0);
        Ok(Waiter {
            waiters: self,
            key,
            notify,
        })
    }

    /// Wakes the polls waiting on `key`.
    pub(crate) fn wake(&self, key: &str) {
        if let Ok(map) = self.map.lock() {
            if let Some((notify, _)) = map.get(key) {
                notify.notify_waiters();
            }
        }
    }

    /// Wakes every poll waiting on this node.
    pub(crate) fn wake_all(&self) {
        self.wake_where(|_| true);
    }

    /// Wakes the polls whose key `chosen` accepts.
    pub(crate) fn wake_where(&self, chosen: impl Fn(&str) -> bool) {
        if let Ok(map) = self.map.lock() {
            for (key, (notify, _)) in map.iter() {
                if chosen(key) {
                    notify.notify_waiters();
                }
            }
        }
    }
}

/// A poll's registration among the local waiters.
pub(crate) struct Waiter<'a> {
    waiters: &'a Waiters,
    /// The connection's key.
    pub(crate) key: String,
    /// Notified on every wake-up of the key.
    pub(crate) notify: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiters.map.lock() {
            if let Some(entry) = map.get_mut(&self.key) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_woken_by_key_and_forgotten_when_dropped() {
        use futures_util::FutureExt as _;
        let waiters = Waiters::default();
        let a = waiters.register("k:{a}:1".into()).unwrap();
        let b = waiters.register("k:{b}:1".into()).unwrap();
        {
            let a_woken = a.notify.notified();
            let b_woken = b.notify.notified();
            tokio::pin!(a_woken, b_woken);
            a_woken.as_mut().enable();
            b_woken.as_mut().enable();
            waiters.wake_where(|key| key.contains("{a}"));
            assert!(a_woken.now_or_never().is_some());
            assert!(b_woken.as_mut().now_or_never().is_none());
            waiters.wake("k:{b}:1");
            assert!(b_woken.now_or_never().is_some());
        }
        drop((a, b));
        assert!(waiters.map.lock().unwrap().is_empty());
    }
}
