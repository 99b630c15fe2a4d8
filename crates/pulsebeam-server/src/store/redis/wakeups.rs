//! Wake-ups: how a poll waiting on this node hears that mail arrived.
//!
//! Each node has its own channel, `P:node:<node id>`. A script that stores mail for a poll in
//! flight on a node (or replaces that poll) publishes the connection's key there; the node's
//! subscriber task wakes the local waiters of that key, which then take their mail. After the
//! subscriber (re)connects every local waiter is woken to check again, so a wake-up lost while
//! Redis was away costs at most that check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::Server;
use fred::types::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::Notify;

use super::connection::{RedisConnection, COMMAND_TIMEOUT};
use crate::store::StoreError;
use crate::tasks::Tasks;

/// This node's wake-up channel and the polls waiting on it.
pub(crate) struct Wakeups {
    channel: String,
    /// Local waiters by connection key, with how many polls share each.
    waiters: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Whether the channel has been subscribed to once.
    subscribed: AtomicBool,
    subscribed_changed: Notify,
}

impl Wakeups {
    /// Wake-ups on `channel`, heard through `connection`'s subscriber by a task in `tasks`.
    pub(crate) fn start(connection: &RedisConnection, channel: String, tasks: &Tasks) -> Arc<Self> {
        let wakeups = Arc::new(Wakeups {
            channel,
            waiters: Mutex::default(),
            subscribed: AtomicBool::new(false),
            subscribed_changed: Notify::new(),
        });
        let subscriber = connection.subscriber().clone();
        // Listen before looking: a connection made after this is announced; one made before
        // is seen as connected.
        let reconnects = subscriber.reconnect_rx();
        let messages = subscriber.message_rx();
        let connected = subscriber.is_connected();
        tasks.spawn(listen(
            Arc::downgrade(&wakeups),
            subscriber,
            reconnects,
            messages,
            connected,
        ));
        wakeups
    }

    /// Waits (at most [`COMMAND_TIMEOUT`]) until the channel has been subscribed to once, so
    /// that a new node's first polls hear their wake-ups; after that, returns at once.
    pub(crate) async fn ready(&self) {
        if self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, async {
            loop {
                // Created before the check, so a change between the two is not missed.
                let changed = self.subscribed_changed.notified();
                if self.subscribed.load(Ordering::Acquire) {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }

    /// Registers a poll waiting for wake-ups of `key`; dropping the waiter unregisters it.
    pub(crate) fn waiter(&self, key: String) -> Result<Waiter<'_>, StoreError> {
        let mut map = self
            .waiters
            .lock()
            .map_err(|_| StoreError::Unavailable("the waiter map lock was poisoned".into()))?;
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let notify = Arc::clone(&entry.0);
        Ok(Waiter {
            wakeups: self,
            key,
            notify,
        })
    }

    fn wake(&self, key: &str) {
        if let Ok(map) = self.waiters.lock() {
            if let Some((notify, _)) = map.get(key) {
                notify.notify_waiters();
            }
        }
    }

    fn wake_all(&self) {
        if let Ok(map) = self.waiters.lock() {
            for (notify, _) in map.values() {
                notify.notify_waiters();
            }
        }
    }

    fn mark_subscribed(&self) {
        self.subscribed.store(true, Ordering::Release);
        self.subscribed_changed.notify_waiters();
        self.wake_all();
    }
}

/// A poll's registration among the local waiters.
pub(crate) struct Waiter<'a> {
    wakeups: &'a Wakeups,
    /// The connection's key.
    pub(crate) key: String,
    /// Notified on every wake-up of the key.
    pub(crate) notify: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.wakeups.waiters.lock() {
            if let Some(entry) = map.get_mut(&self.key) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// The subscriber's life: subscribe at every (re)connection and wake every local waiter, then
/// route each message on the channel to its waiters. Ends with the store.
async fn listen(
    wakeups: Weak<Wakeups>,
    subscriber: SubscriberClient,
    mut reconnects: Receiver<Server>,
    mut messages: Receiver<Message>,
    connected: bool,
) {
    let Some(channel) = wakeups.upgrade().map(|w| w.channel.clone()) else {
        return;
    };
    if connected && !subscribe(&subscriber, &channel, &wakeups).await {
        return;
    }
    loop {
        tokio::select! {
            event = reconnects.recv() => {
                if let Err(RecvError::Closed) = event {
                    return;
                }
                if !subscribe(&subscriber, &channel, &wakeups).await {
                    return;
                }
            }
            message = messages.recv() => {
                let Some(wakeups) = wakeups.upgrade() else { return };
                match message {
                    Ok(message) if *message.channel == *channel => {
                        if let Some(key) = message.value.as_str() {
                            wakeups.wake(&key);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => wakeups.wake_all(),
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Subscribes until it works; `false` when the store is gone.
async fn subscribe(subscriber: &SubscriberClient, channel: &str, wakeups: &Weak<Wakeups>) -> bool {
    let mut attempt = 0u32;
    while let Err(err) = subscriber.subscribe(channel).await {
        if wakeups.strong_count() == 0 {
            return false;
        }
        tracing::warn!(error = %err.details(), "cannot subscribe to this node's wake-up channel; retrying");
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(20)))).await;
    }
    match wakeups.upgrade() {
        Some(wakeups) => {
            wakeups.mark_subscribed();
            true
        }
        None => false,
    }
}
