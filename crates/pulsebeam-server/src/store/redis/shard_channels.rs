//! Wake-ups on a Redis Cluster over sharded pub/sub (`SSUBSCRIBE`, `SPUBLISH`, Redis 7), so
//! that each shard carries only the wake-ups of its own peers (a classic `PUBLISH` on a Cluster
//! goes to every shard over the cluster bus).
//!
//! A node has one wake-up channel per slot, `P:w:{tag}:<node id>`, where `tag` is a short
//! string whose hash slot is that slot ([`slot_tag`]): a script on a peer's keys may only
//! `SPUBLISH` to a channel of their own slot. The node subscribes to its channel of a slot the
//! first time a poll on a peer of that slot begins here, and the poll does not begin before
//! Redis confirmed the subscription; subscriptions stay for the life of the process (at most
//! one per slot).
//!
//! Keeping them heard:
//!
//! - **Deafness.** Every [`HEARTBEAT`] the node publishes an empty message, through the command
//!   pool, on one subscribed channel per shard (its lowest slot), and on every channel not yet
//!   heard since it was subscribed. One of them unheard for [`HEARTBEAT_LOST`] while Redis
//!   answers the publish makes the subscriber *deaf*: health fails with that reason, the
//!   subscriber is reconnected (and subscribes to every slot again), and every local waiter is
//!   woken to check its mailbox.
//! - **Slots moving.** When a slot moves to another master, the old one drops its
//!   subscriptions (it sends `SUNSUBSCRIBE`, which fred does not report). So every heartbeat
//!   the node also reads which master serves each slot (`CLUSTER SLOTS`); a subscribed slot
//!   whose master changed is subscribed again (fred follows the `MOVED` answer to its new
//!   master) and the local waiters of its peers are woken, since a wake-up published between
//!   the move and the new subscription was lost. Until a heartbeat is heard on it, the slot's
//!   channel gets a heartbeat of its own, so a subscription that landed on the old master just
//!   before it let go of the slot is noticed as deaf.
//!
//! A lost wake-up costs the waiting poll one look at its mailbox, never a message.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Value;
use fred::types::config::Server;
use fred::types::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::OnceCell;

use super::connection::{RedisConnection, COMMAND_TIMEOUT};
use super::keys::{slot_of, slot_tag, Keys};
use super::waiters::{Waiters, HEARTBEAT, HEARTBEAT_LOST};
use crate::store::StoreError;
use crate::tasks::Tasks;

/// Which master serves each slot: `(first, last, master)` ranges from `CLUSTER SLOTS`.
type Owners = Vec<(u16, u16, String)>;

/// How many times a subscription is tried before the call gives up.
const SUBSCRIBE_ATTEMPTS: u32 = 3;
/// The pause between those tries.
const SUBSCRIBE_PAUSE: Duration = Duration::from_millis(50);

/// This node's sharded wake-up channels, one per slot of the peers polled here.
pub(crate) struct ShardChannels {
    keys: Keys,
    node: String,
    connection: RedisConnection,
    waiters: Arc<Waiters>,
    slots: Mutex<HashMap<u16, Arc<Slot>>>,
    /// The masters by slot as last read; empty before the first read.
    owners: Mutex<Owners>,
    deaf_restarts: AtomicU64,
}

/// One slot's subscription.
#[derive(Default)]
struct Slot {
    /// Set once Redis has confirmed the first subscription.
    subscribed: OnceCell<()>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// When its channel was last heard, or (re)subscribed to.
    heard: Option<Instant>,
    /// The master serving the slot as read just before it was last subscribed to.
    owner: Option<String>,
    /// Whether its channel was heard since it was last subscribed to.
    confirmed: bool,
    /// Whether it carries a heartbeat.
    beats: bool,
}

impl Slot {
    fn state<T>(&self, f: impl FnOnce(&mut SlotState) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }

    fn silent_for(&self) -> Duration {
        self.state(|s| s.heard.map(|h| h.elapsed()).unwrap_or_default())
    }

    /// Subscribed again (or for the first time) while `owner` served it.
    fn subscribed_at(&self, owner: Option<String>, confirmed: bool) {
        self.state(|s| {
            s.heard = Some(Instant::now());
            s.owner = owner;
            s.confirmed = confirmed;
        });
    }

    fn heard(&self) {
        self.state(|s| {
            s.heard = Some(Instant::now());
            s.confirmed = true;
        });
    }
}

impl ShardChannels {
    /// Sharded wake-ups heard through `connection`'s subscriber, for the waiters in `waiters`,
    /// with their tasks in `tasks`.
    pub(crate) fn start(
        connection: &RedisConnection,
        keys: Keys,
        node: String,
        waiters: Arc<Waiters>,
        tasks: &Tasks,
    ) -> Arc<Self> {
        let channels = Arc::new(ShardChannels {
            keys,
            node,
            connection: connection.clone(),
            waiters,
            slots: Mutex::default(),
            owners: Mutex::default(),
            deaf_restarts: AtomicU64::new(0),
        });
        let subscriber = connection.subscriber().clone();
        tasks.spawn(listen(
            Arc::downgrade(&channels),
            subscriber.reconnect_rx(),
            subscriber.message_rx(),
        ));
        tasks.spawn(heartbeat(Arc::downgrade(&channels), subscriber));
        channels
    }

    /// What the scripts on the peer whose keys start with `base` append this node's id (or
    /// another node's) to, for the wake-up channel of the peer's slot.
    pub(crate) fn channel_prefix(&self, base: &str) -> String {
        self.keys.shard_channel_prefix(slot_tag(slot_of(base)))
    }

    fn channel(&self, slot: u16) -> String {
        format!(
            "{}{}",
            self.keys.shard_channel_prefix(slot_tag(slot)),
            self.node
        )
    }

    /// Makes sure this node hears the wake-ups of the peer whose keys start with `base`: the
    /// first time for its slot, subscribes and waits (at most [`COMMAND_TIMEOUT`]) for Redis
    /// to confirm; after that, returns at once.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis does not confirm the subscription in time.
    pub(crate) async fn listen_for(&self, base: &str) -> Result<(), StoreError> {
        let slot = slot_of(base);
        let entry = {
            let mut slots = self.slots.lock().map_err(|_| {
                StoreError::Unavailable("the wake-up subscriptions' lock was poisoned".into())
            })?;
            Arc::clone(slots.entry(slot).or_default())
        };
        if entry.subscribed.initialized() {
            return Ok(());
        }
        let first = entry.subscribed.get_or_try_init(|| async {
            let owner = self.owner_of(slot).await?;
            self.ssubscribe(slot).await?;
            entry.subscribed_at(owner, false);
            Ok::<(), StoreError>(())
        });
        match tokio::time::timeout(COMMAND_TIMEOUT, first).await {
            Ok(done) => done.map(|_| ()),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis did not confirm this node's wake-up subscription of slot {slot} within {} s",
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The master serving `slot`, as last read (read now if never).
    async fn owner_of(&self, slot: u16) -> Result<Option<String>, StoreError> {
        let known = self
            .owners
            .lock()
            .map(|o| owner_in(&o, slot))
            .ok()
            .flatten();
        if known.is_some() {
            return Ok(known);
        }
        let owners = self.connection.cluster_slots().await?;
        let owner = owner_in(&owners, slot);
        self.set_owners(owners);
        Ok(owner)
    }

    fn set_owners(&self, owners: Owners) {
        if let Ok(mut known) = self.owners.lock() {
            *known = owners;
        }
    }

    /// `SSUBSCRIBE` to this node's channel of `slot`, on the master serving it, within
    /// [`COMMAND_TIMEOUT`]. Tried a few times: when the slot has moved since the subscriber
    /// last read the slot map, fred gives up the first `SSUBSCRIBE` ("Too many failed write
    /// attempts") while it reads the map again, and the next goes to the new master.
    async fn ssubscribe(&self, slot: u16) -> Result<(), StoreError> {
        let subscriber = self.connection.subscriber();
        let channel = self.channel(slot);
        let attempts = async {
            let mut last = None;
            for attempt in 0..SUBSCRIBE_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(SUBSCRIBE_PAUSE).await;
                }
                match subscriber.ssubscribe(channel.as_str()).await {
                    Ok(()) => return Ok(()),
                    Err(err) => last = Some(err),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, attempts).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                let details = err.as_ref().map(|e| e.details()).unwrap_or_default();
                let hint = if details.to_ascii_lowercase().contains("unknown command") {
                    "; wake-ups on a Redis Cluster use sharded pub/sub, which needs Redis 7.0 or newer"
                } else {
                    ""
                };
                Err(StoreError::Unavailable(format!(
                    "redis refused this node's wake-up subscription of slot {slot}: {details}{hint}"
                )))
            }
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis did not confirm this node's wake-up subscription of slot {slot} within {} s",
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The slots subscribed to, lowest first.
    fn subscribed(&self) -> Vec<(u16, Arc<Slot>)> {
        let mut slots: Vec<_> = self
            .slots
            .lock()
            .map(|slots| {
                slots
                    .iter()
                    .filter(|(_, entry)| entry.subscribed.initialized())
                    .map(|(slot, entry)| (*slot, Arc::clone(entry)))
                    .collect()
            })
            .unwrap_or_default();
        slots.sort_by_key(|(slot, _)| *slot);
        slots
    }

    /// Whether the subscriber hears every channel carrying a heartbeat: an error saying why not
    /// once one has been silent for [`HEARTBEAT_LOST`].
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        let silent = self
            .subscribed()
            .iter()
            .filter(|(_, entry)| entry.state(|s| s.beats))
            .map(|(_, entry)| entry.silent_for())
            .max()
            .unwrap_or_default();
        if silent > HEARTBEAT_LOST {
            return Err(StoreError::Unavailable(format!(
                "the wake-up subscriber has heard nothing from a redis shard for {} s; reconnecting it",
                silent.as_secs()
            )));
        }
        Ok(())
    }

    /// How many times the subscriber was found deaf and reconnected.
    pub(crate) fn deaf_restarts(&self) -> u64 {
        self.deaf_restarts.load(Ordering::Relaxed)
    }

    fn wake_slot(&self, slot: u16) {
        self.waiters.wake_where(|key| slot_of(key) == slot);
    }

    /// Routes a message: a heartbeat or wake-up on one of this node's channels.
    fn hear(&self, message: &Message) {
        let slot = slot_of(&message.channel);
        if *message.channel != *self.channel(slot) {
            return;
        }
        if let Some(entry) = self.slots.lock().ok().and_then(|s| s.get(&slot).cloned()) {
            entry.heard();
        }
        if let Some(payload) = message.value.as_bytes() {
            self.waiters.hear(payload);
        }
    }

    /// Subscribes again to every slot (after the subscriber reconnected), then wakes every
    /// local waiter.
    async fn resubscribe_all(&self) {
        let slots = self.subscribed();
        if slots.is_empty() {
            return;
        }
        for (slot, entry) in slots {
            let owner = entry.state(|s| s.owner.clone());
            // A reconnected client has read the slot map afresh: a subscription it confirms is
            // on the right master; one that failed is watched by a heartbeat of its own.
            let confirmed = match self.ssubscribe(slot).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot subscribe to this node's wake-up channel again");
                    false
                }
            };
            entry.subscribed_at(owner, confirmed);
        }
        self.waiters.wake_all();
    }

    /// Subscribes again to the slots whose master changed since they were subscribed to, and
    /// wakes their waiters.
    async fn follow_moves(&self, slots: &[(u16, Arc<Slot>)], owners: &Owners) {
        for (slot, entry) in slots {
            let owner = owner_in(owners, *slot);
            if entry.state(|s| s.owner == owner) {
                continue;
            }
            tracing::info!(
                slot,
                "a slot moved to another redis master; subscribing to its wake-up channel there"
            );
            if let Err(err) = self.ssubscribe(*slot).await {
                tracing::warn!(error = %err, "cannot subscribe to a moved slot's wake-up channel");
            }
            entry.subscribed_at(owner, false);
            self.wake_slot(*slot);
        }
    }

    /// The slots carrying a heartbeat: each master's lowest subscribed slot, and every slot not
    /// heard since it was subscribed to. Marks them (a slot starting to carry one counts as
    /// heard now).
    fn choose_beats(&self, slots: &[(u16, Arc<Slot>)], owners: &Owners) -> Vec<(u16, Arc<Slot>)> {
        let mut lowest: BTreeMap<Option<String>, u16> = BTreeMap::new();
        for (slot, _) in slots {
            lowest.entry(owner_in(owners, *slot)).or_insert(*slot);
        }
        let mut beats = Vec::new();
        for (slot, entry) in slots {
            let beats_now = !entry.state(|s| s.confirmed) || lowest.values().any(|s| s == slot);
            entry.state(|s| {
                if beats_now && !s.beats {
                    s.heard = Some(Instant::now());
                }
                s.beats = beats_now;
            });
            if beats_now {
                beats.push((*slot, Arc::clone(entry)));
            }
        }
        beats
    }
}

/// The master serving `slot` in `owners`.
fn owner_in(owners: &Owners, slot: u16) -> Option<String> {
    owners
        .iter()
        .find(|(first, last, _)| (*first..=*last).contains(&slot))
        .map(|(_, _, owner)| owner.clone())
}

/// The subscriber's life: subscribe again after every reconnection (and wake every local
/// waiter), and route each message on this node's channels. Ends with the store.
async fn listen(
    channels: Weak<ShardChannels>,
    mut reconnects: Receiver<Server>,
    mut messages: Receiver<Message>,
) {
    loop {
        tokio::select! {
            event = reconnects.recv() => {
                if let Err(RecvError::Closed) = event {
                    return;
                }
                // One pass for the reconnections announced so far (one per master).
                while reconnects.try_recv().is_ok() {}
                let Some(channels) = channels.upgrade() else { return };
                channels.resubscribe_all().await;
            }
            message = messages.recv() => {
                let Some(channels) = channels.upgrade() else { return };
                match message {
                    Ok(message) => channels.hear(&message),
                    Err(RecvError::Lagged(_)) => channels.waiters.wake_all(),
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Every [`HEARTBEAT`]: follows slots that moved, publishes the heartbeats, and replaces a
/// subscriber that has heard one of them for [`HEARTBEAT_LOST`] (see the module docs). Ends
/// with the store.
async fn heartbeat(channels: Weak<ShardChannels>, subscriber: SubscriberClient) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = channels.upgrade() else {
            return;
        };
        let slots = node.subscribed();
        if slots.is_empty() {
            continue;
        }
        // Redis not answering: the clients reconnect by themselves when it does, and health
        // fails meanwhile.
        let Ok(owners) = node.connection.cluster_slots().await else {
            continue;
        };
        node.follow_moves(&slots, &owners).await;
        node.set_owners(owners.clone());
        let mut deaf = None;
        for (slot, entry) in node.choose_beats(&slots, &owners) {
            let channel = node.channel(slot);
            let published = node
                .connection
                .bounded("SPUBLISH", |client| {
                    client.spublish::<Value, _, _>(channel.as_str(), "")
                })
                .await;
            if published.is_ok() && entry.silent_for() > HEARTBEAT_LOST {
                deaf = Some(entry.silent_for());
            }
        }
        let Some(silent) = deaf else {
            continue;
        };
        // Redis answers the pool but the subscriber hears nothing: replace its connections.
        node.deaf_restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            silent_secs = silent.as_secs(),
            "the wake-up subscriber hears nothing from a redis shard; reconnecting it"
        );
        node.waiters.wake_all();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, subscriber.force_reconnection()).await;
        // On a Cluster fred's reconnection keeps the connections it finds healthy (it only
        // reads the slot map again and connects to new masters) and announces none: subscribe
        // again here (a connection dead without a word leaves that unanswered, and fred
        // replaces an unresponsive connection by itself). Subscribing counts as being heard,
        // so the next heartbeats have [`HEARTBEAT_LOST`] to arrive before the next judgement.
        node.resubscribe_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_belongs_to_the_master_of_its_range() {
        let owners = vec![(0, 99, "a".to_owned()), (100, 16_383, "b".to_owned())];
        assert_eq!(owner_in(&owners, 0).as_deref(), Some("a"));
        assert_eq!(owner_in(&owners, 99).as_deref(), Some("a"));
        assert_eq!(owner_in(&owners, 100).as_deref(), Some("b"));
        assert_eq!(owner_in(&Vec::new(), 5), None);
    }
}
