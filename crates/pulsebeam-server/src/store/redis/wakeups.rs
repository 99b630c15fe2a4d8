//! Wake-ups: how a poll waiting on this node hears that mail arrived.
//!
//! A script that stores mail for a poll in flight on a node (or replaces that poll) publishes
//! the connection's key on that node's wake-up channel; the node's subscriber task wakes the
//! local waiters of that key, which then take their mail. After the subscriber (re)connects
//! every local waiter is woken to check again, so a wake-up lost while Redis was away costs at
//! most that check. The channels:
//!
//! - **Standalone Redis and Sentinel:** one channel per node, `P:node:<node id>`, subscribed to
//!   at start, with `PUBLISH` (this module).
//! - **Redis Cluster:** one channel per node and slot, `P:w:{tag}:<node id>`, subscribed to
//!   lazily with `SSUBSCRIBE`, with `SPUBLISH`, so a shard carries only its own peers'
//!   wake-ups (`shard_channels`).
//!
//! A subscriber connection can die silently (a NAT or firewall forgetting it, a half-open TCP
//! connection): it hears nothing and says nothing. So the node publishes a heartbeat (an empty
//! message) on its own channel every [`HEARTBEAT`] through the command pool, and when the
//! subscriber has heard none for [`HEARTBEAT_LOST`] it is *deaf*: the node's health fails with
//! that reason, the subscriber is reconnected (and subscribes again), and every local waiter is
//! woken to check its mailbox, since its wake-up may have been lost. On a Cluster the same
//! holds per shard (`shard_channels` module docs).

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
use super::keys::Keys;
use super::shard_channels::ShardChannels;
use super::waiters::{Waiter, Waiters, HEARTBEAT, HEARTBEAT_LOST};
use crate::store::StoreError;
use crate::tasks::Tasks;

/// This node's wake-up channels and the polls waiting on them.
pub(crate) struct Wakeups {
    waiters: Arc<Waiters>,
    channels: Channels,
}

enum Channels {
    /// One channel for the node (standalone Redis, Sentinel).
    Node(Arc<NodeChannel>),
    /// One sharded channel per slot (Redis Cluster).
    Sharded(Arc<ShardChannels>),
}

/// What a script is told to publish a wake-up with: the channel's start (the node id follows)
/// and whether it is sharded (`SPUBLISH`, else `PUBLISH`).
pub(crate) struct PublishTo {
    pub(crate) channel_prefix: String,
    pub(crate) sharded: bool,
}

impl Wakeups {
    /// Wake-ups of the node `node`, heard through `connection`'s subscriber by tasks in
    /// `tasks`: on sharded channels when `cluster`, else on the node's one channel.
    pub(crate) fn start(
        connection: &RedisConnection,
        keys: &Keys,
        node: &str,
        cluster: bool,
        tasks: &Tasks,
    ) -> Self {
        let waiters = Arc::new(Waiters::default());
        let channels = if cluster {
            Channels::Sharded(ShardChannels::start(
                connection,
                keys.clone(),
                node.to_owned(),
                Arc::clone(&waiters),
                tasks,
            ))
        } else {
            let channel = format!("{}{node}", keys.node_channel_prefix());
            Channels::Node(NodeChannel::start(
                connection,
                channel,
                Arc::clone(&waiters),
                tasks,
            ))
        };
        Wakeups { waiters, channels }
    }

    /// How a script on the peer whose keys start with `base` publishes a wake-up.
    pub(crate) fn publish_to(&self, base: &str, keys: &Keys) -> PublishTo {
        match &self.channels {
            Channels::Node(_) => PublishTo {
                channel_prefix: keys.node_channel_prefix(),
                sharded: false,
            },
            Channels::Sharded(shards) => PublishTo {
                channel_prefix: shards.channel_prefix(base),
                sharded: true,
            },
        }
    }

    /// Waits (at most [`COMMAND_TIMEOUT`]) until the node's channel has been subscribed to
    /// once, so that a new node's first polls hear their wake-ups; after that (and on a
    /// Cluster, where channels are subscribed to per slot by [`Wakeups::listen_for`]),
    /// returns at once.
    pub(crate) async fn ready(&self) {
        if let Channels::Node(node) = &self.channels {
            node.ready().await;
        }
    }

    /// Makes sure this node hears the wake-ups of the peer whose keys start with `base`
    /// before a poll of it begins here.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis does not confirm a Cluster slot's subscription
    /// within [`COMMAND_TIMEOUT`].
    pub(crate) async fn listen_for(&self, base: &str) -> Result<(), StoreError> {
        match &self.channels {
            Channels::Node(node) => {
                node.ready().await;
                Ok(())
            }
            Channels::Sharded(shards) => shards.listen_for(base).await,
        }
    }

    /// Registers a poll waiting for wake-ups of `key`; dropping the waiter unregisters it.
    pub(crate) fn waiter(&self, key: String) -> Result<Waiter<'_>, StoreError> {
        self.waiters.register(key)
    }

    /// Whether the subscriber hears this node's channels: an error saying why not once one
    /// has carried no heartbeat for [`HEARTBEAT_LOST`].
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match &self.channels {
            Channels::Node(node) => node.check(),
            Channels::Sharded(shards) => shards.check(),
        }
    }

    /// How many times the subscriber was found deaf and reconnected.
    pub(crate) fn deaf_restarts(&self) -> u64 {
        match &self.channels {
            Channels::Node(node) => node.deaf_restarts.load(Ordering::Relaxed),
            Channels::Sharded(shards) => shards.deaf_restarts(),
        }
    }
}

/// The node's one wake-up channel (standalone Redis, Sentinel).
struct NodeChannel {
    channel: String,
    waiters: Arc<Waiters>,
    /// Whether the channel has been subscribed to once.
    subscribed: AtomicBool,
    subscribed_changed: Notify,
    /// When the subscriber last heard this node's channel (or subscribed to it).
    heard: Mutex<Instant>,
    /// How often the subscriber was found deaf and replaced.
    deaf_restarts: AtomicU64,
}

impl NodeChannel {
    /// Wake-ups on `channel`, heard through `connection`'s subscriber by a task in `tasks`.
    fn start(
        connection: &RedisConnection,
        channel: String,
        waiters: Arc<Waiters>,
        tasks: &Tasks,
    ) -> Arc<Self> {
        let wakeups = Arc::new(NodeChannel {
            channel,
            waiters,
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

    fn check(&self) -> Result<(), StoreError> {
        let silent = self.silent_for();
        if silent > HEARTBEAT_LOST {
            return Err(StoreError::Unavailable(format!(
                "the wake-up subscriber has heard nothing from redis for {} s; reconnecting it",
                silent.as_secs()
            )));
        }
        Ok(())
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

    async fn ready(&self) {
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

    fn mark_subscribed(&self) {
        self.mark_heard();
        self.subscribed.store(true, Ordering::Release);
        self.subscribed_changed.notify_waiters();
        self.waiters.wake_all();
    }
}

/// The subscriber's life: subscribe at every (re)connection and wake every local waiter, then
/// route each message on the channel to its waiters. Ends with the store.
async fn listen(
    wakeups: Weak<NodeChannel>,
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
                        if let Some(payload) = message.value.as_bytes() {
                            wakeups.waiters.hear(payload);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => wakeups.waiters.wake_all(),
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Subscribes until it works; `false` when the store is gone.
async fn subscribe(
    subscriber: &SubscriberClient,
    channel: &str,
    wakeups: &Weak<NodeChannel>,
) -> bool {
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
    wakeups: Weak<NodeChannel>,
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
        node.waiters.wake_all();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, subscriber.force_reconnection()).await;
        // The new connection gets HEARTBEAT_LOST to be heard, with the heartbeats going on
        // meanwhile (a pause without them would find it silent again when it ends).
        node.mark_heard();
    }
}
