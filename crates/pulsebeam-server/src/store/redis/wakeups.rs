//! Wake-ups: how a poll waiting on this node hears that mail arrived.
//!
//! Each node has its own channel, `P:node:<node id>`. A script that stores mail for a poll in
//! flight on a node (or replaces that poll) publishes the connection's key there; the node's
//! subscriber task wakes the local waiters of that key, which then take their mail. After the
//! subscriber (re)connects every local waiter is woken to check again, so a wake-up lost while
//! Redis was away costs at most that check.
//!
//! A subscriber connection can die silently (a NAT or firewall forgetting it, a half-open TCP
//! connection): it hears nothing and says nothing. So the node publishes a heartbeat (an empty
//! message) on its own channel every [`HEARTBEAT`] through the command pool, and when the
//! subscriber has heard none for [`HEARTBEAT_LOST`] it is *deaf*: the node's health fails with
//! that reason, the subscriber is reconnected (and subscribes again), and every local waiter is
//! woken to check its mailbox, since its wake-up may have been lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Value;
use fred::types::config::Server;
use fred::types::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::Notify;

use super::connection::{RedisConnection, COMMAND_TIMEOUT};
use crate::store::StoreError;
use crate::tasks::Tasks;

/// How often a node publishes a heartbeat on its own wake-up channel.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long the subscriber may hear no heartbeat before it counts as deaf.
pub(crate) const HEARTBEAT_LOST: Duration = Duration::from_secs(3);

/// This node's wake-up channel and the polls waiting on it.
pub(crate) struct Wakeups {
    channel: String,
    /// Local waiters by connection key, with how many polls share each.
    waiters: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Whether the channel has been subscribed to once.
    subscribed: AtomicBool,
    subscribed_changed: Notify,
    /// When the subscriber last heard this node's channel (or subscribed to it).
    heard: Mutex<Instant>,
    /// How often the subscriber was found deaf and replaced.
    deaf_restarts: AtomicU64,
}

impl Wakeups {
    /// Wake-ups on `channel`, heard through `connection`'s subscriber by a task in `tasks`.
    pub(crate) fn start(connection: &RedisConnection, channel: String, tasks: &Tasks) -> Arc<Self> {
        let wakeups = Arc::new(Wakeups {
            channel,
            waiters: Mutex::default(),
            subscribed: AtomicBool::new(false),
            subscribed_changed: Notify::new(),
            heard: Mutex::new(Instant::now()),
            deaf_restarts: AtomicU64::new(0),
        });
        let subscriber = connection.subscriber().clone();
        // Listen before looking: a connection made after this is announced; one made before
        // is seen as connected.
        let reconnects = subscriber.reconnect_rx();
        let messages = subscriber.message_rx();
        let connected = subscriber.is_connected();
        tasks.spawn(listen(
            Arc::downgrade(&wakeups),
            subscriber.clone(),
            reconnects,
            messages,
            connected,
        ));
        tasks.spawn(heartbeat(
            Arc::downgrade(&wakeups),
            connection.clone(),
            subscriber,
        ));
        wakeups
    }

    /// Whether the subscriber hears this node's channel: an error saying why not once it has
    /// heard no heartbeat for [`HEARTBEAT_LOST`].
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        let silent = self.silent_for();
        if silent > HEARTBEAT_LOST {
            return Err(StoreError::Unavailable(format!(
                "the wake-up subscriber has heard nothing from redis for {} s; reconnecting it",
                silent.as_secs()
            )));
        }
        Ok(())
    }

    /// How many times the subscriber was found deaf and reconnected.
    pub(crate) fn deaf_restarts(&self) -> u64 {
        self.deaf_restarts.load(Ordering::Relaxed)
    }

    fn silent_for(&self) -> Duration {
        self.heard
            .lock()
            .map(|heard| heard.elapsed())
            .unwrap_or_default()
    }

    fn mark_heard(&self) {
        if let Ok(mut heard) = self.heard.lock() {
            *heard = Instant::now();
        }
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
        self.mark_heard();
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
                        wakeups.mark_heard();
                        match message.value.as_str() {
                            // The heartbeat.
                            Some(key) if key.is_empty() => {}
                            Some(key) => wakeups.wake(&key),
                            None => {}
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

/// Publishes the heartbeat on the node's channel every [`HEARTBEAT`] and replaces a subscriber
/// that has heard none for [`HEARTBEAT_LOST`] (see the module docs). Ends with the store.
async fn heartbeat(
    wakeups: Weak<Wakeups>,
    connection: RedisConnection,
    subscriber: SubscriberClient,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = wakeups.upgrade() else {
            return;
        };
        if !node.subscribed.load(Ordering::Acquire) {
            continue;
        }
        let channel = node.channel.clone();
        let published = connection
            .bounded("PUBLISH", |client| {
                client.publish::<Value, _, _>(channel.as_str(), "")
            })
            .await;
        if node.silent_for() <= HEARTBEAT_LOST {
            continue;
        }
        if published.is_err() {
            // Redis itself does not answer; the clients reconnect by themselves when it does,
            // and health fails meanwhile.
            continue;
        }
        // Redis answers the pool but the subscriber hears nothing: replace its connection.
        node.deaf_restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            silent_secs = node.silent_for().as_secs(),
            "the wake-up subscriber hears nothing from redis; reconnecting it"
        );
        node.wake_all();
        drop(node);
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, subscriber.force_reconnection()).await;
        // Give the new connection time to be heard before judging it.
        tokio::time::sleep(HEARTBEAT_LOST).await;
    }
}
