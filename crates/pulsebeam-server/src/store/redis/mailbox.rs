//! The Redis [`MailboxStore`]: deliver, poll and acknowledge through the mailbox scripts, wake
//! polls through [`Wakeups`], open connections within the project [`Budgets`].

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::types::Value;
use tokio::time::Instant;

use super::budgets::{Budget, Budgets};
use super::connection::{node_id, RedisConnection, COMMAND_TIMEOUT};
use super::keys::Keys;
use super::message::{decode, encode, seq_of};
use super::policy;
use super::scripts::{Ack, Begin, ConnId, Deliver, Polling, ScriptCall, Setting, Status, Take};
use super::wakeups::Wakeups;
use crate::config::{Limits, StoreConfig};
use crate::store::{
    BoxFuture, Envelope, MailboxStore, OnlineConnection, PeerAddr, PollOptions, Polled, Receipt,
    StartError, StoreError, StoreStats,
};
use crate::tasks::Tasks;

/// Most connections whose keys one call declares; a peer has at most `max_connections_per_peer`
/// (beyond this a script asking for more is answered with an error, not another round trip).
const MAX_DECLARED: usize = 256;
/// How long a call is tried again while Redis answers `TRYAGAIN` (a slot migrating).
const TRYAGAIN_FOR: Duration = Duration::from_secs(2);
/// The pause between those tries.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(20);
/// A poll's lease outlives its wait by this much, so a slow node's live poll keeps counting.
const POLL_GRACE_MS: u64 = 2_000;
/// Polls being registered at once at most; more wait for a turn before their registration
/// starts. A registration holds a few KiB while it runs (its task, its script calls), and the
/// more run at once during a burst of polls (every client reconnecting after a restart), the
/// larger the node stays for every poll that arrived in it: 8,000 polls at once left 11.2-11.5
/// KiB per waiting poll with 256 registering, 9.2-9.3 with 64, 8.6 with 32 (7.9 on the memory
/// store). Redis runs one call at a time, so 32 in flight still keep it busy: relays of 50
/// pairs ran as fast with 32 as with 256 (BENCHMARKS.md).
const MAX_REGISTERING: usize = 32;

/// Bounds in the units the scripts use.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    capacity: usize,
    ttl_ms: u64,
    idle_ms: u64,
    max_per_peer: usize,
    ack_lease_ms: u64,
    /// TTL of a peer's keys: its longest-lived content plus the longest poll.
    keep_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    polling: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
}

/// What the store's calls and tasks share.
struct Mailboxes {
    connection: RedisConnection,
    keys: Keys,
    node: String,
    bounds: Bounds,
    wakeups: Wakeups,
    budgets: Budgets,
    counters: Counters,
    projects_seen: Mutex<HashSet<String>>,
    /// A permit per poll being registered ([`MAX_REGISTERING`]).
    registering: Arc<tokio::sync::Semaphore>,
    tasks: Tasks,
}

/// The Redis (or Redis Cluster) [`MailboxStore`]. The `store::redis` module docs describe its
/// keys, scripts, round trips and wake-ups.
///
/// It connects in the background and reconnects with backoff: while Redis cannot be reached,
/// operations answer [`StoreError::Unavailable`] within about two seconds and
/// [`MailboxStore::health`] fails. Its tasks (the wake-up subscriber, polls finishing after
/// their caller left, acknowledgements sent alone) end when it is dropped.
pub struct RedisStore {
    inner: Arc<Mailboxes>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.inner.connection)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // The tasks hold the shared state; ending them lets it go.
        self.inner.tasks.abort_all();
    }
}

impl RedisStore {
    /// A store on the Redis that `config` names, enforcing `limits`, on a connection of its
    /// own. It starts connecting and subscribing at once, in the background.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime, [`StartError::NoUrl`] or
    /// [`StartError::BadUrl`] when the URLs cannot be used.
    pub fn new(config: &StoreConfig, limits: &Limits) -> Result<Self, StartError> {
        Self::with_connection(RedisConnection::new(config)?, config, limits)
    }

    /// A store on `connection` (which the revocations and usage of the node may share), with
    /// the key prefix and ack lease of `config`, enforcing `limits`.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime.
    pub fn with_connection(
        connection: RedisConnection,
        config: &StoreConfig,
        limits: &Limits,
    ) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let tasks = Tasks::new(runtime);
        let keys = Keys::new(&config.key_prefix);
        let node = node_id();
        let wakeups = Wakeups::start(&connection, &keys, &node, config.cluster, &tasks);
        tasks.spawn(policy::warn_unless_noeviction(connection.clone()));
        let ttl_ms = limits.message_ttl_secs.saturating_mul(1000);
        let idle_ms = limits.connection_idle_secs.saturating_mul(1000);
        Ok(RedisStore {
            inner: Arc::new(Mailboxes {
                budgets: Budgets::new(
                    connection.clone(),
                    keys.clone(),
                    limits.max_connections_per_project,
                ),
                connection,
                keys,
                node,
                bounds: Bounds {
                    capacity: limits.mailbox_capacity,
                    ttl_ms,
                    idle_ms,
                    max_per_peer: limits.max_connections_per_peer,
                    ack_lease_ms: config.ack_lease_ms,
                    keep_ms: ttl_ms
                        .max(idle_ms)
                        .saturating_add(limits.poll_timeout_ms)
                        .saturating_add(config.ack_lease_ms)
                        .saturating_add(10_000),
                },
                wakeups,
                counters: Counters::default(),
                projects_seen: Mutex::default(),
                registering: Arc::new(tokio::sync::Semaphore::new(MAX_REGISTERING)),
                tasks,
            }),
        })
    }
}

/// Ends a poll in Redis if its future is dropped while the poll is still in flight there.
struct PollGuard<'a> {
    mailboxes: &'a Arc<Mailboxes>,
    base: String,
    conn: u32,
    /// Counted among the polls in flight (`polling`): registered in Redis.
    counted: bool,
    /// The poll's generation while it is in flight in Redis.
    generation: Option<i64>,
}

impl PollGuard<'_> {
    /// The poll ended in Redis (a script ended it): nothing to end once it is dropped.
    fn ended(&mut self) {
        self.generation = None;
    }
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let Some(generation) = self.generation else {
            if self.counted {
                self.mailboxes
                    .counters
                    .polling
                    .fetch_sub(1, Ordering::Relaxed);
            }
            return;
        };
        let mailboxes = Arc::clone(self.mailboxes);
        let base = std::mem::take(&mut self.base);
        let conn = self.conn;
        // The poll counts as in flight until Redis knows it ended: until then discovery
        // messages still go to it.
        self.mailboxes.tasks.spawn(async move {
            let _ = mailboxes.take(&base, conn, generation, 0, true).await;
            mailboxes.counters.polling.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn count(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A poll's answer: `members` as stored, under the poll's `receipt` when there are any.
fn polled(members: Vec<Value>, receipt: u64) -> Result<Polled, StoreError> {
    let messages = members.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    Ok(Polled {
        receipt: (!messages.is_empty()).then_some(Receipt(receipt)),
        messages,
        superseded: false,
    })
}

/// `taken` with the members of `handed` it lacks, in sequence order.
fn with_handed(mut taken: Vec<Value>, handed: Vec<Bytes>) -> Vec<Value> {
    if handed.is_empty() {
        return taken;
    }
    // An unreadable member sorts last (decoding it then says what is wrong).
    let seq = |member: &[u8]| seq_of(member).unwrap_or(u64::MAX);
    let known: HashSet<u64> = taken.iter().filter_map(Value::as_bytes).map(seq).collect();
    taken.extend(
        handed
            .into_iter()
            .filter(|m| !known.contains(&seq(m)))
            .map(Value::Bytes),
    );
    taken.sort_by_key(|m| m.as_bytes().map_or(u64::MAX, seq));
    taken
}

/// A span in the milliseconds the scripts count in.
fn as_millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Mailboxes {
    /// Runs a mailbox script once this node hears its wake-ups.
    ///
    /// While a Cluster moves the peer's slot, Redis answers `TRYAGAIN` to a script whose keys
    /// are half on each node; the call is tried again until the keys are all on one side (or
    /// [`TRYAGAIN_FOR`] has passed).
    async fn run<C: ScriptCall + Clone>(&self, call: C) -> Result<C::Reply, StoreError> {
        // The calls to Redis run in boxes of their own, freed when they end: inline, their
        // futures (several KiB) would size this one, which a waiting poll keeps all along.
        Box::pin(self.wakeups.ready()).await;
        let until = Instant::now() + TRYAGAIN_FOR;
        loop {
            match self.connection.run(call.clone()).await {
                Err(StoreError::Unavailable(why))
                    if why.contains("TRYAGAIN") && Instant::now() < until =>
                {
                    tokio::time::sleep(TRYAGAIN_PAUSE).await;
                }
                result => return result,
            }
        }
    }

    fn remember_project(&self, project: &str) {
        if let Ok(mut seen) = self.projects_seen.lock() {
            if !seen.contains(project) {
                seen.insert(project.to_owned());
            }
        }
    }

    /// Refreshes a budget entry without making the caller wait.
    fn refresh_budget(
        self: &Arc<Self>,
        project: &str,
        budget: Budget,
        member: String,
        span_ms: u64,
    ) {
        let mailboxes = Arc::clone(self);
        let project = project.to_owned();
        self.tasks.spawn(async move {
            let _ = mailboxes
                .budgets
                .refresh(&project, budget, member, span_ms)
                .await;
        });
    }

    async fn deliver(
        self: &Arc<Self>,
        dst: PeerAddr<'_>,
        conn_id: u32,
        envelope: Envelope,
    ) -> Result<(), StoreError> {
        self.remember_project(dst.project);
        let b = self.bounds;
        let base = self.keys.peer(dst);
        let blob = encode(&envelope);
        let publish = self.wakeups.publish_to(&base, &self.keys);
        let mut granted = false;
        let mut declared: Vec<u32> = Vec::new();
        if conn_id != 0 {
            declared.push(conn_id);
        }
        loop {
            let keys = Keys::mailbox_keys(&base, &declared);
            let delivered = self
                .run(Deliver {
                    h: keys.h,
                    conns: keys.conns,
                    d: keys.d,
                    boxes: keys.boxes,
                    base: base.clone(),
                    conn: ConnId(conn_id),
                    envelope: blob.clone(),
                    capacity: Setting(as_u64(b.capacity)),
                    ttl_ms: Setting(b.ttl_ms),
                    idle_ms: Setting(b.idle_ms),
                    max_per_peer: Setting(as_u64(b.max_per_peer)),
                    keep_ms: Setting(b.keep_ms),
                    granted,
                    channel_prefix: publish.channel_prefix.clone(),
                    sharded: publish.sharded,
                    ack_lease_ms: Setting(b.ack_lease_ms),
                })
                .await?;
            count(&self.counters.expired, delivered.expired);
            count(&self.counters.evicted, delivered.evicted);
            self.release_evicted(dst.project, &base, &delivered.evicted_conn)
                .await?;
            let member = || format!("{base}{}", delivered.budget_member);
            match delivered.status {
                Status::Ok => {
                    if delivered.budget_due {
                        self.refresh_budget(dst.project, Budget::Mail, member(), b.ttl_ms);
                    }
                    return Ok(());
                }
                Status::Full => {
                    return Err(StoreError::MailboxFull {
                        capacity: b.capacity,
                    })
                }
                Status::TooManyPeer => {
                    if granted {
                        // Taken for a connection that could not be opened after all.
                        self.budgets.release(dst.project, member()).await?;
                    }
                    return Err(StoreError::TooManyPeerConnections {
                        max: b.max_per_peer,
                    });
                }
                Status::NeedBudget if !granted => {
                    if !self
                        .budgets
                        .take(dst.project, Budget::Mail, member(), b.ttl_ms)
                        .await?
                    {
                        return Err(StoreError::TooManyProjectConnections {
                            max: self.budgets.max_per_project(),
                        });
                    }
                    granted = true;
                }
                Status::NeedKeys => declare(&mut declared, &delivered.need, "deliver")?,
                other => return Err(unexpected("deliver", other)),
            }
        }
    }

    /// For the poll `generation`: takes up to `max` messages (0: none), ending the poll when
    /// it got some or `last`; `None` when a newer poll took over.
    async fn take(
        &self,
        base: &str,
        conn: u32,
        generation: i64,
        max: usize,
        last: bool,
    ) -> Result<Option<(Vec<Value>, u64)>, StoreError> {
        let b = self.bounds;
        let keys = Keys::mailbox_keys(base, &[conn]);
        let taken = self
            .run(Take {
                h: keys.h,
                conns: keys.conns,
                d: keys.d,
                boxes: keys.boxes,
                base: base.to_owned(),
                conn: ConnId(conn),
                generation,
                max: as_u64(max),
                ack_lease_ms: Setting(b.ack_lease_ms),
                ttl_ms: Setting(b.ttl_ms),
                last,
                keep_ms: Setting(b.keep_ms),
            })
            .await?;
        count(&self.counters.expired, taken.expired);
        match taken.status {
            Status::Ok => Ok(Some((taken.messages, taken.lease_left_ms))),
            Status::Superseded => Ok(None),
            other => Err(unexpected("take", other)),
        }
    }

    /// Registers a poll that `options` describe (taking a polled budget unit first if the
    /// connection is new to the budget); returns its generation, the messages it took at once
    /// and, when it took none, the milliseconds until a reservation's lease runs out (0: none).
    async fn begin(
        self: &Arc<Self>,
        base: &str,
        project: &str,
        conn_id: u32,
        options: PollOptions,
    ) -> Result<(i64, Vec<Value>, u64), StoreError> {
        let wait_ms = as_millis(options.wait);
        let b = self.bounds;
        let span = b.idle_ms.max(b.ttl_ms).saturating_add(wait_ms);
        let member = || format!("{base}{conn_id}");
        let publish = self.wakeups.publish_to(base, &self.keys);
        let mut granted = false;
        let mut declared = vec![conn_id];
        // Acknowledged by the first call: every reply stores it.
        let mut ack_receipt = options.ack.map_or(0, |receipt| receipt.0);
        loop {
            let keys = Keys::mailbox_keys(base, &declared);
            let begun = self
                .run(Begin {
                    h: keys.h,
                    conns: keys.conns,
                    d: keys.d,
                    boxes: keys.boxes,
                    base: base.to_owned(),
                    conn: ConnId(conn_id),
                    node: self.node.clone(),
                    wait_ms,
                    max: as_u64(options.max_messages.max(1)),
                    ack_lease_ms: Setting(b.ack_lease_ms),
                    ttl_ms: Setting(b.ttl_ms),
                    idle_ms: Setting(b.idle_ms),
                    max_per_peer: Setting(as_u64(b.max_per_peer)),
                    keep_ms: b.keep_ms.saturating_add(wait_ms),
                    granted,
                    channel_prefix: publish.channel_prefix.clone(),
                    sharded: publish.sharded,
                    budget_span_ms: span,
                    grace_ms: Setting(POLL_GRACE_MS),
                    takeover: options.takeover,
                    ack_receipt,
                    batch_ms: as_millis(options.batch_window),
                })
                .await?;
            ack_receipt = 0;
            count(&self.counters.delivered, begun.acknowledged);
            count(&self.counters.expired, begun.expired);
            count(&self.counters.evicted, begun.evicted);
            self.release_evicted(project, base, &begun.evicted_conn)
                .await?;
            match begun.status {
                Status::Ok => {
                    if begun.budget_due {
                        self.refresh_budget(project, Budget::Polled, member(), span);
                    }
                    return Ok((begun.generation, begun.messages, begun.lease_left_ms));
                }
                Status::TooManyPeer => {
                    if granted {
                        // Taken for a connection that could not be opened after all.
                        self.budgets.release(project, member()).await?;
                    }
                    return Err(StoreError::TooManyPeerConnections {
                        max: b.max_per_peer,
                    });
                }
                Status::NeedBudget if !granted => {
                    if !self
                        .budgets
                        .take(project, Budget::Polled, member(), span)
                        .await?
                    {
                        return Err(StoreError::TooManyProjectConnections {
                            max: self.budgets.max_per_project(),
                        });
                    }
                    granted = true;
                }
                Status::NeedKeys => declare(&mut declared, &begun.need, "begin")?,
                other => return Err(unexpected("begin", other)),
            }
        }
    }

    /// A poll: subscribed, registered in Redis, then waiting for its wake-ups.
    ///
    /// Its future is what a waiting poll keeps (boxed by [`MailboxStore::poll`]), so it holds
    /// only what the wait needs: the registration, which takes a turn and runs `begin`, is made
    /// here and boxed on its own, freed once Redis answers; the call's arguments are used here
    /// and not kept (an `async fn` would keep them for as long as the poll waits).
    fn poll<'a>(
        self: &'a Arc<Self>,
        me: PeerAddr<'_>,
        conn_id: u32,
        options: PollOptions,
    ) -> impl std::future::Future<Output = Result<Polled, StoreError>> + Send + 'a {
        self.remember_project(me.project);
        let base = self.keys.peer(me);
        let registration =
            Box::pin(self.register(base.clone(), me.project.to_owned(), conn_id, options));
        let (waits, batch_window) = (!options.wait.is_zero(), options.batch_window);
        let deadline = Instant::now() + options.wait;
        let max = options.max_messages.max(1);
        // The guard keeps the peer's key prefix for the whole poll: one copy per waiting poll.
        let mut guard = PollGuard {
            mailboxes: self,
            base,
            conn: conn_id,
            counted: false,
            generation: None,
        };
        async move {
            // Subscribed before registering, so that the wake-up of every local waiter after
            // subscribing does not reach this poll; and before the poll begins, so that no
            // wake-up of it goes unheard.
            Box::pin(self.wakeups.listen_for(&guard.base)).await?;
            let waiter = self.wakeups.waiter(format!("{}{conn_id}", guard.base))?;
            let mut notified = pin!(waiter.slot.notify.notified());
            notified.as_mut().enable();
            // (What the registration answered, in a block of its own: a waiting poll keeps no
            // room for what it took at once.)
            let (generation, receipt, mut lease_left_ms) = {
                let (generation, first, lease_left_ms) = registration.await?;
                self.counters.polling.fetch_add(1, Ordering::Relaxed);
                guard.counted = true;
                let receipt = u64::try_from(generation).map_err(|_| {
                    StoreError::Unavailable(format!(
                        "redis answered a poll generation of {generation}"
                    ))
                })?;
                if !first.is_empty() || !waits {
                    return polled(first, receipt);
                }
                (generation, receipt, lease_left_ms)
            };
            guard.generation = Some(generation);
            loop {
                // A reservation whose lease runs out comes back to this poll.
                let until = match lease_left_ms {
                    0 => deadline,
                    ms => (Instant::now() + Duration::from_millis(ms)).min(deadline),
                };
                let woken = tokio::time::timeout_at(until, notified.as_mut())
                    .await
                    .is_ok();
                notified.set(waiter.slot.notify.notified());
                notified.as_mut().enable();
                if woken {
                    // Every wake-up waits the batch window before taking: a wake-up without
                    // mail (a reconnect, a newer poll) must not use up the batching of the real
                    // one.
                    let until = (Instant::now() + batch_window).min(deadline);
                    tokio::time::sleep_until(until).await;
                }
                let (handed, plain) = waiter.slot.take_handed(generation);
                if !handed.is_empty() && !plain {
                    // Delivers handed these over in their wake-ups (the first one ended the poll
                    // in Redis), and no other mail came within the batch window.
                    guard.ended();
                    return polled(handed.into_iter().map(Value::Bytes).collect(), receipt);
                }
                let last = Instant::now() >= deadline;
                let taken =
                    Box::pin(self.take(&guard.base, conn_id, generation, max, last)).await?;
                let Some((members, left)) = taken else {
                    // A newer poll of this connection took over (its script ended this one, and
                    // took back what was handed over to it).
                    guard.ended();
                    return Ok(Polled::superseded());
                };
                // The take hands out again what was handed over to this poll.
                let members = with_handed(members, handed);
                if !members.is_empty() || last {
                    guard.ended();
                    return polled(members, receipt);
                }
                lease_left_ms = left;
            }
        }
    }

    /// Registers a poll in Redis once it has a turn: its generation, what it takes at once, and
    /// how long until the lease of a reservation it waits on runs out.
    ///
    /// `begin` runs in a task of its own: if the poll is dropped while Redis registers it, the
    /// task still sees the answer and ends the poll there, so a poll abandoned mid-way never
    /// keeps counting as in flight (and never draws discovery messages) until its lease runs
    /// out.
    async fn register(
        self: &Arc<Self>,
        base: String,
        project: String,
        conn_id: u32,
        options: PollOptions,
    ) -> Result<(i64, Vec<Value>, u64), StoreError> {
        let turn = self.registration_turn().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mailboxes = Arc::clone(self);
        let wait_ms = as_millis(options.wait);
        self.tasks.spawn(async move {
            let begun = mailboxes.begin(&base, &project, conn_id, options).await;
            drop(turn);
            if let Err(Ok((generation, _, _))) = tx.send(begun) {
                if wait_ms > 0 {
                    let _ = mailboxes.take(&base, conn_id, generation, 0, true).await;
                }
            }
        });
        rx.await
            .map_err(|_| StoreError::Unavailable("the poll's registration task ended".into()))?
    }

    /// Waits for a turn among the polls being registered ([`MAX_REGISTERING`]), at most
    /// [`COMMAND_TIMEOUT`].
    async fn registration_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        let acquire = Arc::clone(&self.registering).acquire_owned();
        match tokio::time::timeout(COMMAND_TIMEOUT, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(StoreError::Unavailable("the store is closing".into())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the poll waited {} s for one of the {MAX_REGISTERING} registrations under way to end; redis answers too slowly for this load",
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Gives back the budget unit of a connection a script evicted (`conn` empty: none).
    async fn release_evicted(
        &self,
        project: &str,
        base: &str,
        conn: &str,
    ) -> Result<(), StoreError> {
        if conn.is_empty() {
            return Ok(());
        }
        self.budgets.release(project, format!("{base}{conn}")).await
    }

    /// Deletes what the poll with `receipt` reserved, at once: a newer poll of the connection,
    /// on any node, takes over what is still reserved, so a late acknowledgement would make a
    /// duplicate.
    async fn ack(
        &self,
        me: PeerAddr<'_>,
        conn_id: u32,
        receipt: Receipt,
    ) -> Result<(), StoreError> {
        let base = self.keys.peer(me);
        let keys = Keys::mailbox_keys(&base, &[conn_id]);
        let acked = self
            .run(Ack {
                h: keys.h,
                conns: keys.conns,
                d: keys.d,
                boxes: keys.boxes,
                base,
                conn: ConnId(conn_id),
                receipts: vec![receipt.0],
            })
            .await?;
        count(&self.counters.delivered, acked.acknowledged);
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let projects: Vec<String> = self
            .projects_seen
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default();
        let mut connections = 0u64;
        for project in projects {
            self.wakeups.ready().await;
            connections += self.budgets.count(&project).await?;
        }
        let c = &self.counters;
        let batches = self.connection.batch_figures();
        Ok(StoreStats {
            connections,
            polling: c.polling.load(Ordering::Relaxed),
            queued_messages: 0,
            delivered_messages: c.delivered.load(Ordering::Relaxed),
            expired_messages: c.expired.load(Ordering::Relaxed),
            evicted_messages: c.evicted.load(Ordering::Relaxed),
            subscriber_restarts: self.wakeups.deaf_restarts(),
            redis_script_calls: batches.calls,
            redis_fcalls: batches.fcalls,
        })
    }

    /// Connections of the project's polled budget whose poll is in flight: one round trip for
    /// the budget, then one per peer in it.
    async fn online(&self, project: &str) -> Result<Vec<OnlineConnection>, StoreError> {
        self.wakeups.ready().await;
        let members = self.budgets.polled_members(project).await?;
        let mut peers: HashMap<&str, (String, String, Vec<u32>)> = HashMap::new();
        for member in &members {
            if let Some((base, group, peer, conn)) = self.keys.parse_member(member) {
                peers
                    .entry(base)
                    .or_insert_with(|| (group, peer, Vec::new()))
                    .2
                    .push(conn);
            }
        }
        let mut out = Vec::new();
        for (base, (group, peer, conns)) in peers {
            let keys = Keys::mailbox_keys(base, &[]);
            let in_flight = self
                .run(Polling {
                    h: keys.h,
                    conns: keys.conns,
                    d: keys.d,
                    boxes: keys.boxes,
                    base: base.to_owned(),
                    asked: conns,
                })
                .await?;
            out.extend(in_flight.conns.into_iter().map(|conn_id| OnlineConnection {
                group: group.clone(),
                peer: peer.clone(),
                conn_id,
            }));
        }
        out.sort();
        Ok(out)
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.wakeups.ready().await;
        self.connection.ping().await?;
        self.wakeups.check()
    }
}

/// Adds the connections a script named in `need` (`NEED_KEYS`) to those a call declares; an
/// error when it names none that are new, so a call never loops.
fn declare(declared: &mut Vec<u32>, need: &str, script: &str) -> Result<(), StoreError> {
    let before = declared.len();
    for conn in need
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
    {
        if !declared.contains(&conn) {
            declared.push(conn);
        }
    }
    if declared.len() == before || declared.len() > MAX_DECLARED {
        return Err(StoreError::Unavailable(format!(
            "the {script} script asked for the keys of connections {need:?} again"
        )));
    }
    Ok(())
}

fn unexpected(script: &str, status: Status) -> StoreError {
    StoreError::Unavailable(format!("the {script} script answered {status:?}"))
}

impl MailboxStore for RedisStore {
    fn deliver<'a>(
        &'a self,
        dst: PeerAddr<'a>,
        conn_id: u32,
        envelope: Envelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.inner.deliver(dst, conn_id, envelope))
    }

    fn poll<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        options: PollOptions,
    ) -> BoxFuture<'a, Result<Polled, StoreError>> {
        Box::pin(self.inner.poll(me, conn_id, options))
    }

    fn ack<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        receipt: Receipt,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.inner.ack(me, conn_id, receipt))
    }

    fn online<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OnlineConnection>, StoreError>> {
        Box::pin(self.inner.online(project))
    }

    fn stats(&self) -> BoxFuture<'_, Result<StoreStats, StoreError>> {
        Box::pin(self.inner.stats())
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.inner.health())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StoreBackend, StoreConfig};
    use crate::store::conformance;

    /// A store on a Redis that is not there: what needs no answer from Redis can be tested.
    fn store_without_redis() -> RedisStore {
        let config = StoreConfig {
            backend: StoreBackend::Redis,
            urls: vec!["redis://127.0.0.1:1".to_owned()],
            ..StoreConfig::default()
        };
        RedisStore::new(&config, &Limits::default()).unwrap()
    }

    /// What a take hands out again of what came in wake-ups is counted once, and the whole
    /// answer is in sequence order.
    #[test]
    fn handed_over_messages_join_a_take_once_and_in_order() {
        let member = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let taken = vec![Value::Bytes(member("5|1|b")), Value::Bytes(member("9|1|d"))];
        let handed = vec![member("5|1|b"), member("3|1|a"), member("7|1|c")];
        let joined: Vec<Bytes> = with_handed(taken, handed)
            .into_iter()
            .filter_map(|v| v.as_bytes().map(Bytes::copy_from_slice))
            .collect();
        assert_eq!(
            joined,
            [
                member("3|1|a"),
                member("5|1|b"),
                member("7|1|c"),
                member("9|1|d")
            ]
        );
        assert!(with_handed(Vec::new(), Vec::new()).is_empty());
    }

    /// At most [`MAX_REGISTERING`] polls register at once: the next one waits for a turn, gets
    /// it as soon as a registration ends, and is answered `unavailable` naming the bound when
    /// none ends within the command timeout.
    #[tokio::test]
    async fn polls_beyond_the_bound_wait_for_a_turn_to_register() {
        let store = store_without_redis();
        let mut turns = Vec::new();
        for _ in 0..MAX_REGISTERING {
            turns.push(store.inner.registration_turn().await.unwrap());
        }
        let next = store.inner.registration_turn();
        tokio::pin!(next);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut next)
                .await
                .is_err(),
            "a registration beyond the bound started"
        );
        drop(turns.pop());
        let turn = tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("the waiting registration got no turn once one ended")
            .unwrap();
        turns.push(turn);
        let start = Instant::now();
        let err = store.inner.registration_turn().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(why) if why.contains("32 registrations")),
            "{err}"
        );
        assert!(start.elapsed() >= COMMAND_TIMEOUT, "{:?}", start.elapsed());
    }

    /// What a waiting poll keeps, with its connection, for as long as it waits: its future
    /// (boxed by [`MailboxStore::poll`]). The script calls it makes run in boxes of their own,
    /// freed once Redis answers, so they do not size it.
    #[tokio::test]
    async fn a_waiting_poll_keeps_a_small_future() {
        let store = store_without_redis();
        // (The suite's waiting poll: a future's size does not depend on the values.)
        let (me, options) = (conformance::addr("bob"), conformance::LONG);
        let size = std::mem::size_of_val(&store.inner.poll(me, 16, options));
        println!("a Redis poll's future: {size} bytes");
        // A poll's registration runs in a task of its own, which holds it until Redis answers.
        let begin = std::mem::size_of_val(&store.inner.begin("b", "p", 16, options));
        println!("a Redis poll's registration: {begin} bytes");
        assert!(
            begin <= 2_048,
            "a Redis poll's registration is {begin} bytes"
        );
        let take = std::mem::size_of_val(&store.inner.take("b", 16, 1, 64, true));
        assert!(take <= 1_536, "a Redis poll's take is {take} bytes");
        // The registration (a turn, then `begin` in its task) is boxed apart, freed once Redis
        // answers.
        let register =
            std::mem::size_of_val(&store.inner.register("b".into(), "p".into(), 16, options));
        println!("a Redis poll's registration turn: {register} bytes");
        // (Kept while the poll waits for a turn, beyond the registrations under way.)
        assert!(
            register <= 512,
            "a Redis poll's registration turn is {register} bytes"
        );
        // 384 bytes is one of jemalloc's size classes: a byte more and each waiting poll's box
        // takes the next one, 448.
        assert!(size <= 384, "a Redis poll's future is {size} bytes");
    }
}
