//! Mailboxes: where messages wait for their receiver.
//!
//! [`MailboxStore`] is the small interface between the Twirp handlers and the storage of
//! undelivered messages and live connections. [`MemoryStore`] keeps everything in this
//! process and is the default; a shared store (e.g. on Redis) can implement the same trait so
//! that several server processes behind a load balancer serve the same peers.
//!
//! # Model
//!
//! A *peer* is `(project, group, peer)`. It has up to `max_connections_per_peer`
//! *connections*, one per conn id (a browser page), each with a FIFO mailbox. A connection is
//! *live* while it is polling or has polled within `connection_idle_secs`. Messages sent to
//! conn id 0 (discovery) go to the connection of the peer that has a poll in flight (the newest
//! such poll), or, when none has, wait in the peer's discovery queue for whichever connection
//! polls next (a page reload: the old page stopped polling, the new one polls soon after).
//! Messages sent to a conn id that has never polled open its mailbox, so a reply sent before
//! the receiver's first poll still arrives. Every message carries a per-peer sequence number,
//! so what one sender sends to one receiver is delivered in order, also when discovery and
//! direct messages meet in one mailbox. Undelivered messages are dropped after
//! `message_ttl_secs`.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;

/// A boxed, sendable future, as the methods of [`MailboxStore`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A project, by its position in [`crate::Config::projects`]. A store shared by several
/// processes should key by the project's configured `id` (`config.projects[n].id`) so that
/// processes whose configs list projects in different orders still agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(pub u32);

/// A peer's address: its project, group id and peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr<'a> {
    /// The project.
    pub project: ProjectId,
    /// The group id.
    pub group: &'a str,
    /// The peer id.
    pub peer: &'a str,
}

/// A message waiting for delivery, with its authenticated sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender's group id, as its token states it.
    pub src_group: Arc<str>,
    /// The sender's peer id, as its token states it.
    pub src_peer: Arc<str>,
    /// The `pulsebeam.v1.Message`, protobuf-encoded.
    pub message: Bytes,
}

/// How a [`MailboxStore::poll`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollOptions {
    /// Longest wait for a first message; zero takes what is there without waiting.
    pub wait: Duration,
    /// After the first message arrives, how long to wait for more.
    pub batch_window: Duration,
    /// Most messages returned at once.
    pub max_messages: usize,
}

/// Why a store refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The destination mailbox holds as many messages as allowed.
    #[error("the receiver's mailbox is full ({capacity} messages waiting); retry later")]
    MailboxFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// The peer has as many live connections as allowed.
    #[error("the peer has {max} live connections, the most allowed; close one or retry later")]
    TooManyPeerConnections {
        /// The configured limit.
        max: usize,
    },
    /// The project has as many connections (or peers with mail) as allowed.
    #[error("the project has {max} connections, the most allowed; retry later")]
    TooManyProjectConnections {
        /// The configured limit.
        max: usize,
    },
    /// The store cannot be reached or failed.
    #[error("mailbox store unavailable: {0}")]
    Unavailable(String),
}

/// Counters a store reports for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Connections with a mailbox.
    pub connections: u64,
    /// Connections polling right now.
    pub polling: u64,
    /// Messages waiting in mailboxes.
    pub queued_messages: u64,
    /// Messages delivered to a receiver so far.
    pub delivered_messages: u64,
    /// Messages dropped so far because nobody took them within the message TTL.
    pub expired_messages: u64,
    /// Messages dropped so far with a connection that was replaced.
    pub evicted_messages: u64,
}

/// Storage of mailboxes and live connections.
///
/// Implementations must keep messages from one sender to one connection in order, bound every
/// queue, and never block a `deliver` on a receiver.
pub trait MailboxStore: Send + Sync + 'static {
    /// Puts `envelope` into the mailbox of `(dst, conn_id)`; conn id 0 is discovery.
    fn deliver<'a>(
        &'a self,
        dst: PeerAddr<'a>,
        conn_id: u32,
        envelope: Envelope,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Registers `(me, conn_id)` as polling and waits, as `options` say, for its messages.
    ///
    /// A newer poll of the same connection ends an older one (with no messages). Dropping the
    /// future ends the poll; its messages stay queued.
    fn poll<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        options: PollOptions,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>>;

    /// Drops expired messages and idle connections; the server calls it about once a second.
    fn sweep(&self) -> BoxFuture<'_, ()>;

    /// Current counters.
    fn stats(&self) -> StoreStats;

    /// The connections of `project` with a poll in flight (who is online).
    fn online(
        &self,
        project: ProjectId,
    ) -> BoxFuture<'_, Result<Vec<OnlineConnection>, StoreError>>;
}

/// A connection with a poll in flight.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct OnlineConnection {
    /// The group id.
    pub group: String,
    /// The peer id.
    pub peer: String,
    /// The connection id.
    pub conn_id: u32,
}

const SHARDS: usize = 64;

#[derive(Debug, PartialEq, Eq)]
struct PeerKey {
    project: ProjectId,
    group: Box<str>,
    peer: Box<str>,
}

impl Hash for PeerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_peer(self.project, &self.group, &self.peer, state);
    }
}

fn hash_peer<H: Hasher>(project: ProjectId, group: &str, peer: &str, state: &mut H) {
    project.0.hash(state);
    group.hash(state);
    peer.hash(state);
}

/// A borrowed [`PeerKey`] for lookups without allocating.
struct PeerRef<'a>(PeerAddr<'a>);

impl From<&PeerRef<'_>> for PeerKey {
    fn from(r: &PeerRef<'_>) -> Self {
        PeerKey {
            project: r.0.project,
            group: r.0.group.into(),
            peer: r.0.peer.into(),
        }
    }
}

impl Hash for PeerRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_peer(self.0.project, self.0.group, self.0.peer, state);
    }
}

impl hashbrown::Equivalent<PeerKey> for PeerRef<'_> {
    fn equivalent(&self, key: &PeerKey) -> bool {
        self.0.project == key.project && *self.0.group == *key.group && *self.0.peer == *key.peer
    }
}

#[derive(Debug)]
struct Queued {
    seq: u64,
    at: Instant,
    envelope: Envelope,
}

#[derive(Debug)]
struct Conn {
    id: u32,
    queue: VecDeque<Queued>,
    notify: Arc<Notify>,
    polls: u32,
    generation: u64,
    /// When a poll last ended or began; `None` for a mailbox opened by a sender.
    last_seen: Option<Instant>,
    created: Instant,
}

impl Conn {
    fn is_live(&self, now: Instant, idle: Duration) -> bool {
        self.polls > 0 || self.last_seen.is_some_and(|t| now.duration_since(t) < idle)
    }

    fn last_activity(&self) -> Instant {
        self.last_seen.unwrap_or(self.created)
    }
}

#[derive(Debug, Default)]
struct Peer {
    conns: Vec<Conn>,
    discovery: VecDeque<Queued>,
    next_seq: u64,
    /// Created by a sender before the peer ever polled; counted in `ProjectCounters::mail`
    /// until the peer polls or the entry is swept.
    opened_by_sender: bool,
}

type Shard = Mutex<hashbrown::HashMap<PeerKey, Peer, RandomState>>;

/// Two budgets per project, so that senders opening mailboxes for peers that never show up
/// cannot lock real, polling peers out.
#[derive(Debug, Default)]
struct ProjectCounters {
    /// Connections that have polled.
    polled: AtomicUsize,
    /// Mailboxes opened by senders: never-polled connections and peer entries.
    mail: AtomicUsize,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    polling: AtomicU64,
    queued: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
}

fn dec(counter: &AtomicU64, n: u64) {
    // Saturating, so a bookkeeping slip can never wrap a gauge.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

fn dec_usize(counter: &AtomicUsize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(1))
    });
}

/// The in-process [`MailboxStore`]: sharded maps behind short-held locks, a [`Notify`] per
/// connection to wake its poll.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Shard]>,
    hasher: RandomState,
    projects: Box<[ProjectCounters]>,
    counters: Counters,
    capacity: usize,
    ttl: Duration,
    idle: Duration,
    max_per_peer: usize,
    max_per_project: usize,
}

enum Step {
    Done(Vec<Envelope>),
    Batch,
    Wait,
}

impl MemoryStore {
    /// A store enforcing `limits` for `projects` projects.
    pub fn new(limits: &Limits, projects: usize) -> Self {
        let hasher = RandomState::new();
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(hashbrown::HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
            projects: (0..projects).map(|_| ProjectCounters::default()).collect(),
            counters: Counters::default(),
            capacity: limits.mailbox_capacity,
            ttl: Duration::from_secs(limits.message_ttl_secs),
            idle: Duration::from_secs(limits.connection_idle_secs),
            max_per_peer: limits.max_connections_per_peer,
            max_per_project: limits.max_connections_per_project,
        }
    }

    fn lock(
        &self,
        addr: PeerAddr<'_>,
    ) -> Result<MutexGuard<'_, hashbrown::HashMap<PeerKey, Peer, RandomState>>, StoreError> {
        let index =
            usize::try_from(self.hasher.hash_one(PeerRef(addr)) % SHARDS as u64).unwrap_or(0);
        self.shards
            .get(index)
            .ok_or_else(|| StoreError::Unavailable("shard out of range".into()))?
            .lock()
            .map_err(|_| StoreError::Unavailable("a mailbox lock was poisoned".into()))
    }

    fn project(&self, project: ProjectId) -> Result<&ProjectCounters, StoreError> {
        usize::try_from(project.0)
            .ok()
            .and_then(|i| self.projects.get(i))
            .ok_or_else(|| StoreError::Unavailable(format!("unknown project {}", project.0)))
    }

    /// Takes one unit of `budget`, or says the project is full.
    fn take(&self, budget: &AtomicUsize) -> Result<(), StoreError> {
        if budget.load(Ordering::Relaxed) >= self.max_per_project {
            return Err(StoreError::TooManyProjectConnections {
                max: self.max_per_project,
            });
        }
        budget.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Returns the budget a removed connection held.
    fn release(&self, counters: Option<&ProjectCounters>, conn: &Conn) {
        dec(&self.counters.connections, 1);
        if let Some(c) = counters {
            dec_usize(if conn.last_seen.is_some() {
                &c.polled
            } else {
                &c.mail
            });
        }
    }

    /// The peer's entry, created if needed, in one lookup. A sender creating it spends the
    /// project's mail budget; the peer's own poll gives that back.
    fn peer_mut<'m>(
        &self,
        map: &'m mut hashbrown::HashMap<PeerKey, Peer, RandomState>,
        addr: PeerAddr<'_>,
        by_sender: bool,
    ) -> Result<&'m mut Peer, StoreError> {
        match map.entry_ref(&PeerRef(addr)) {
            hashbrown::hash_map::EntryRef::Occupied(entry) => {
                let peer = entry.into_mut();
                if !by_sender && peer.opened_by_sender {
                    peer.opened_by_sender = false;
                    dec_usize(&self.project(addr.project)?.mail);
                }
                Ok(peer)
            }
            hashbrown::hash_map::EntryRef::Vacant(entry) => {
                if by_sender {
                    self.take(&self.project(addr.project)?.mail)?;
                }
                let key = PeerKey::from(entry.key());
                let peer = Peer {
                    opened_by_sender: by_sender,
                    ..Peer::default()
                };
                Ok(entry.insert_with_key(key, peer))
            }
        }
    }

    /// Index of the connection `conn_id`, creating it (evicting an idle one if the peer is
    /// full). A connection opened by a sender spends the mail budget until it first polls.
    fn conn_index(
        &self,
        peer: &mut Peer,
        project: ProjectId,
        conn_id: u32,
        now: Instant,
        by_sender: bool,
    ) -> Result<usize, StoreError> {
        let counters = self.project(project)?;
        if let Some(i) = peer.conns.iter().position(|c| c.id == conn_id) {
            if !by_sender && peer.conns.get(i).is_some_and(|c| c.last_seen.is_none()) {
                // First poll of a mailbox a sender opened: it moves to the polled budget.
                self.take(&counters.polled)?;
                dec_usize(&counters.mail);
            }
            return Ok(i);
        }
        if peer.conns.len() >= self.max_per_peer {
            let victim = peer
                .conns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.is_live(now, self.idle))
                .min_by_key(|(_, c)| c.last_activity())
                .map(|(i, _)| i)
                .ok_or(StoreError::TooManyPeerConnections {
                    max: self.max_per_peer,
                })?;
            let old = peer.conns.swap_remove(victim);
            let dropped = old.queue.len() as u64;
            dec(&self.counters.queued, dropped);
            self.counters.evicted.fetch_add(dropped, Ordering::Relaxed);
            self.release(Some(counters), &old);
        }
        self.take(if by_sender {
            &counters.mail
        } else {
            &counters.polled
        })?;
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        if peer.conns.capacity() == 0 {
            // Most peers have one page open: do not let `push` reserve room for four.
            peer.conns.reserve_exact(1);
        }
        peer.conns.push(Conn {
            id: conn_id,
            queue: VecDeque::new(),
            notify: Arc::new(Notify::new()),
            polls: 0,
            generation: 0,
            last_seen: None,
            created: now,
        });
        Ok(peer.conns.len() - 1)
    }

    fn expire(&self, queue: &mut VecDeque<Queued>, now: Instant) {
        let mut dropped = 0;
        while queue
            .front()
            .is_some_and(|q| now.duration_since(q.at) >= self.ttl)
        {
            queue.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            dec(&self.counters.queued, dropped);
            self.counters.expired.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    fn push(&self, queue: &mut VecDeque<Queued>, item: Queued) -> Result<(), StoreError> {
        self.expire(queue, item.at);
        if queue.len() >= self.capacity {
            return Err(StoreError::MailboxFull {
                capacity: self.capacity,
            });
        }
        queue.push_back(item);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn deliver_now(
        &self,
        dst: PeerAddr<'_>,
        conn_id: u32,
        envelope: Envelope,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut map = self.lock(dst)?;
        let peer = self.peer_mut(&mut map, dst, true)?;
        let item = Queued {
            seq: peer.next_seq,
            at: now,
            envelope,
        };
        let target = if conn_id == 0 {
            // Only a connection with a poll in flight is sure to be there: one that polled a
            // moment ago may be a page that just reloaded, whose successor must get the Join.
            peer.conns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.polls > 0)
                .max_by_key(|(_, c)| c.last_activity())
                .map(|(i, _)| i)
        } else {
            Some(self.conn_index(peer, dst.project, conn_id, now, true)?)
        };
        match target.and_then(|i| peer.conns.get_mut(i)) {
            Some(conn) => {
                self.push(&mut conn.queue, item)?;
                conn.notify.notify_one();
            }
            None => self.push(&mut peer.discovery, item)?,
        }
        peer.next_seq += 1;
        Ok(())
    }

    /// Registers a poll; returns what the poll needs to wait.
    fn begin_poll(&self, me: PeerAddr<'_>, conn_id: u32) -> Result<(Arc<Notify>, u64), StoreError> {
        let now = Instant::now();
        let mut map = self.lock(me)?;
        let peer = self.peer_mut(&mut map, me, false)?;
        let index = self.conn_index(peer, me.project, conn_id, now, false)?;
        let discovery = std::mem::take(&mut peer.discovery);
        let conn = peer
            .conns
            .get_mut(index)
            .ok_or_else(|| StoreError::Unavailable("connection vanished".into()))?;
        if !discovery.is_empty() {
            conn.queue = merge_by_seq(std::mem::take(&mut conn.queue), discovery);
        }
        if conn.polls > 0 {
            // A newer poll replaces older ones: their HTTP clients have most likely gone.
            conn.notify.notify_waiters();
        }
        conn.polls += 1;
        conn.generation += 1;
        conn.last_seen = Some(now);
        self.counters.polling.fetch_add(1, Ordering::Relaxed);
        Ok((Arc::clone(&conn.notify), conn.generation))
    }

    fn end_poll(&self, me: PeerAddr<'_>, conn_id: u32) {
        dec(&self.counters.polling, 1);
        let Ok(mut map) = self.lock(me) else { return };
        let Some(conn) = map
            .get_mut(&PeerRef(me))
            .and_then(|p| p.conns.iter_mut().find(|c| c.id == conn_id))
        else {
            return;
        };
        conn.polls = conn.polls.saturating_sub(1);
        conn.last_seen = Some(Instant::now());
    }

    fn step(
        &self,
        me: PeerAddr<'_>,
        conn_id: u32,
        generation: u64,
        options: &PollOptions,
        may_batch: bool,
    ) -> Result<Step, StoreError> {
        let now = Instant::now();
        let mut map = self.lock(me)?;
        let Some(conn) = map
            .get_mut(&PeerRef(me))
            .and_then(|p| p.conns.iter_mut().find(|c| c.id == conn_id))
        else {
            return Ok(Step::Done(Vec::new()));
        };
        if conn.generation != generation {
            return Ok(Step::Done(Vec::new()));
        }
        self.expire(&mut conn.queue, now);
        if conn.queue.is_empty() {
            return Ok(Step::Wait);
        }
        if may_batch {
            return Ok(Step::Batch);
        }
        let n = conn.queue.len().min(options.max_messages.max(1));
        let out: Vec<Envelope> = conn.queue.drain(..n).map(|q| q.envelope).collect();
        dec(&self.counters.queued, n as u64);
        self.counters
            .delivered
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(Step::Done(out))
    }

    async fn poll_inner(
        &self,
        me: PeerAddr<'_>,
        conn_id: u32,
        options: PollOptions,
    ) -> Result<Vec<Envelope>, StoreError> {
        let start = Instant::now();
        let deadline = start + options.wait;
        let (notify, generation) = self.begin_poll(me, conn_id)?;
        let _guard = PollGuard {
            store: self,
            me,
            conn_id,
        };
        let mut waited = false;
        let mut batched = options.batch_window.is_zero();
        loop {
            let mut notified = pin!(notify.notified());
            notified.as_mut().enable();
            match self.step(me, conn_id, generation, &options, waited && !batched)? {
                Step::Done(messages) => return Ok(messages),
                Step::Batch => {
                    batched = true;
                    let until = (Instant::now() + options.batch_window).min(deadline);
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                Step::Wait => {}
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            waited = true;
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    fn sweep_now(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let Ok(mut map) = shard.lock() else { continue };
            map.retain(|key, peer| {
                self.expire(&mut peer.discovery, now);
                let counters = self.project(key.project).ok();
                peer.conns.retain_mut(|conn| {
                    self.expire(&mut conn.queue, now);
                    let keep = conn.polls > 0
                        || !conn.queue.is_empty()
                        || now.duration_since(conn.last_activity()) < self.idle;
                    if !keep {
                        self.release(counters, conn);
                    }
                    keep
                });
                let keep = !peer.conns.is_empty() || !peer.discovery.is_empty();
                if !keep && peer.opened_by_sender {
                    if let Some(c) = counters {
                        dec_usize(&c.mail);
                    }
                }
                keep
            });
        }
    }
}

/// Marks the end of a poll even when its future is dropped.
struct PollGuard<'a> {
    store: &'a MemoryStore,
    me: PeerAddr<'a>,
    conn_id: u32,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.store.end_poll(self.me, self.conn_id);
    }
}

fn merge_by_seq(a: VecDeque<Queued>, b: VecDeque<Queued>) -> VecDeque<Queued> {
    let mut out = VecDeque::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.seq <= y.seq,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
}

impl MailboxStore for MemoryStore {
    fn deliver<'a>(
        &'a self,
        dst: PeerAddr<'a>,
        conn_id: u32,
        envelope: Envelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.deliver_now(dst, conn_id, envelope);
        Box::pin(std::future::ready(result))
    }

    fn poll<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        options: PollOptions,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>> {
        Box::pin(self.poll_inner(me, conn_id, options))
    }

    fn sweep(&self) -> BoxFuture<'_, ()> {
        self.sweep_now();
        Box::pin(std::future::ready(()))
    }

    fn online(
        &self,
        project: ProjectId,
    ) -> BoxFuture<'_, Result<Vec<OnlineConnection>, StoreError>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let Ok(map) = shard.lock() else { continue };
            for (key, peer) in map.iter().filter(|(k, _)| k.project == project) {
                out.extend(
                    peer.conns
                        .iter()
                        .filter(|c| c.polls > 0)
                        .map(|c| OnlineConnection {
                            group: key.group.to_string(),
                            peer: key.peer.to_string(),
                            conn_id: c.id,
                        }),
                );
            }
        }
        out.sort();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            connections: c.connections.load(Ordering::Relaxed),
            polling: c.polling.load(Ordering::Relaxed),
            queued_messages: c.queued.load(Ordering::Relaxed),
            delivered_messages: c.delivered.load(Ordering::Relaxed),
            expired_messages: c.expired.load(Ordering::Relaxed),
            evicted_messages: c.evicted.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tweak: impl FnOnce(&mut Limits)) -> Arc<MemoryStore> {
        let mut limits = Limits::default();
        tweak(&mut limits);
        Arc::new(MemoryStore::new(&limits, 2))
    }

    fn addr(peer: &str) -> PeerAddr<'_> {
        PeerAddr {
            project: ProjectId(0),
            group: "g",
            peer,
        }
    }

    fn envelope(text: &'static str) -> Envelope {
        Envelope {
            src_group: Arc::from("g"),
            src_peer: Arc::from("sender"),
            message: Bytes::from_static(text.as_bytes()),
        }
    }

    fn texts(envelopes: &[Envelope]) -> Vec<&[u8]> {
        envelopes.iter().map(|e| e.message.as_ref()).collect()
    }

    const NOW: PollOptions = PollOptions {
        wait: Duration::ZERO,
        batch_window: Duration::ZERO,
        max_messages: 64,
    };

    const LONG: PollOptions = PollOptions {
        wait: Duration::from_secs(20),
        batch_window: Duration::from_millis(5),
        max_messages: 64,
    };

    #[tokio::test(start_paused = true)]
    async fn undelivered_messages_expire_after_the_ttl() {
        let s = store(|l| l.message_ttl_secs = 30);
        s.deliver(addr("bob"), 100, envelope("old")).await.unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        s.deliver(addr("bob"), 100, envelope("new")).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let got = s.poll(addr("bob"), 100, NOW).await.unwrap();
        assert_eq!(texts(&got), [b"new"]);
        assert_eq!(s.stats().expired_messages, 1);
        assert_eq!(s.stats().queued_messages, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_poll_returns_empty_exactly_at_its_deadline() {
        let s = store(|_| {});
        let start = Instant::now();
        let got = s.poll(addr("bob"), 100, LONG).await.unwrap();
        assert!(got.is_empty());
        assert_eq!(start.elapsed(), LONG.wait);
        assert_eq!(s.stats().polling, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_poll_batches_what_arrives_within_the_window() {
        let s = store(|_| {});
        let poll = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.poll(addr("bob"), 100, LONG).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.deliver(addr("bob"), 100, envelope("1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        s.deliver(addr("bob"), 0, envelope("2")).await.unwrap();
        let got = poll.await.unwrap().unwrap();
        assert_eq!(texts(&got), [b"1", b"2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_waits_for_the_first_poll_and_keeps_send_order() {
        let s = store(|_| {});
        s.deliver(addr("bob"), 0, envelope("join")).await.unwrap();
        s.deliver(addr("bob"), 100, envelope("direct"))
            .await
            .unwrap();
        s.deliver(addr("bob"), 0, envelope("join again"))
            .await
            .unwrap();
        let got = s.poll(addr("bob"), 100, NOW).await.unwrap();
        assert_eq!(texts(&got), [&b"join"[..], b"direct", b"join again"]);
        // Another peer's mailbox and another project's are untouched.
        let other = PeerAddr {
            project: ProjectId(1),
            ..addr("bob")
        };
        assert!(s.poll(other, 100, NOW).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_goes_to_a_poll_in_flight_or_waits_for_the_next_poll() {
        let s = store(|l| l.connection_idle_secs = 15);
        // Conn 100 polled a moment ago but has no poll in flight (its page is reloading): the
        // Join waits for whichever connection polls next, here the new page's conn 200.
        s.poll(addr("bob"), 100, NOW).await.unwrap();
        tokio::time::advance(Duration::from_millis(50)).await;
        s.deliver(addr("bob"), 0, envelope("a")).await.unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        let got = s.poll(addr("bob"), 200, NOW).await.unwrap();
        assert_eq!(texts(&got), [b"a"]);
        assert!(s.poll(addr("bob"), 100, NOW).await.unwrap().is_empty());

        // With a poll in flight, discovery goes to it at once.
        let poll = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.poll(addr("bob"), 300, LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        s.deliver(addr("bob"), 0, envelope("b")).await.unwrap();
        assert_eq!(texts(&poll.await.unwrap().unwrap()), [b"b"]);
        assert!(s.poll(addr("bob"), 200, NOW).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_poll_ends_the_older_one() {
        let s = store(|_| {});
        let old = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.poll(addr("bob"), 100, LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let new = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.poll(addr("bob"), 100, LONG).await }
        });
        assert!(old.await.unwrap().unwrap().is_empty());
        s.deliver(addr("bob"), 100, envelope("x")).await.unwrap();
        assert_eq!(texts(&new.await.unwrap().unwrap()), [b"x"]);
    }

    #[tokio::test(start_paused = true)]
    async fn mailboxes_and_connections_are_bounded() {
        let s = store(|l| {
            l.mailbox_capacity = 2;
            l.max_connections_per_peer = 2;
            l.max_connections_per_project = 3;
        });
        s.deliver(addr("bob"), 100, envelope("1")).await.unwrap();
        s.deliver(addr("bob"), 100, envelope("2")).await.unwrap();
        assert_eq!(
            s.deliver(addr("bob"), 100, envelope("3")).await,
            Err(StoreError::MailboxFull { capacity: 2 })
        );
        // Two live (polling) connections fill the peer ...
        let polls: Vec<_> = [200, 300]
            .into_iter()
            .map(|conn| {
                let s = Arc::clone(&s);
                tokio::spawn(async move { s.poll(addr("bob"), conn, LONG).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // ... (the never-polled mailbox of conn 100 was given up for them) ...
        assert_eq!(s.stats().evicted_messages, 2);
        assert_eq!(
            s.poll(addr("bob"), 400, NOW).await,
            Err(StoreError::TooManyPeerConnections { max: 2 })
        );
        // ... senders may open three mailboxes for peers that have not polled ...
        for peer in ["carol", "dave", "erin"] {
            s.deliver(addr(peer), 0, envelope("hi")).await.unwrap();
        }
        assert_eq!(
            s.deliver(addr("frank"), 0, envelope("f")).await,
            Err(StoreError::TooManyProjectConnections { max: 3 })
        );
        // ... which does not keep real peers out: three may poll, whatever senders did.
        s.poll(addr("zed"), 500, NOW).await.unwrap();
        assert_eq!(
            s.poll(addr("yan"), 600, NOW).await,
            Err(StoreError::TooManyProjectConnections { max: 3 })
        );
        // A peer that senders were waiting for shows up (refused here, the polled budget being
        // full): it is real now, so its entry no longer counts against the senders' budget.
        s.poll(addr("carol"), 700, NOW).await.unwrap_err();
        let budgets = &s.projects[0];
        assert_eq!(budgets.mail.load(Ordering::Relaxed), 2);
        s.deliver(addr("frank"), 0, envelope("f")).await.unwrap();
        for p in polls {
            p.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_drops_idle_connections_and_empty_peers() {
        let s = store(|l| {
            l.connection_idle_secs = 15;
            l.message_ttl_secs = 30;
        });
        s.poll(addr("bob"), 100, NOW).await.unwrap();
        s.deliver(addr("carol"), 0, envelope("c")).await.unwrap();
        assert_eq!(s.stats().connections, 1);
        tokio::time::advance(Duration::from_secs(31)).await;
        s.sweep().await;
        let stats = s.stats();
        assert_eq!((stats.connections, stats.queued_messages), (0, 0));
        assert_eq!(stats.expired_messages, 1);
        assert!(s.shards.iter().all(|m| m.lock().unwrap().is_empty()));
        assert!(s
            .projects
            .iter()
            .all(|p| p.polled.load(Ordering::Relaxed) == 0 && p.mail.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn merge_keeps_sequence_order() {
        let q = |seqs: &[u64]| -> VecDeque<Queued> {
            seqs.iter()
                .map(|&seq| Queued {
                    seq,
                    at: Instant::now(),
                    envelope: envelope("x"),
                })
                .collect()
        };
        let merged = merge_by_seq(q(&[1, 4, 5]), q(&[0, 2, 3, 6]));
        let seqs: Vec<u64> = merged.iter().map(|x| x.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5, 6]);
    }
}
