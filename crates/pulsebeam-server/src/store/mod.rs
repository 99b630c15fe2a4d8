//! Mailboxes: where messages wait for their receiver.
//!
//! [`MailboxStore`] is the one interface between the Twirp handlers and the storage of
//! undelivered messages and live connections. Two backends meet it:
//!
//! - [`MemoryStore`] keeps everything in this process (the default, for one node);
//! - [`RedisStore`] keeps everything in Redis or Redis Cluster, so that several server nodes
//!   behind a load balancer serve any call of any peer.
//!
//! The contract below is written once, here, and proven once per backend by the conformance
//! suite (`conformance.rs`, compiled with the `conformance` feature or in tests).
//!
//! What else nodes keep has narrow interfaces of its own, with contracts and suites the same
//! way: [`RevocationStore`] ([`LocalRevocations`], [`RedisRevocations`], mirrored on each
//! node by [`MirroredRevocations`]), [`UsageStore`]
//! ([`MemoryUsage`], [`RedisUsage`]) and [`BindingStore`] ([`MemoryBindings`],
//! [`RedisBindings`]). On Redis all of them share one [`RedisConnection`].
//!
//! Stores start their background work (a purge, a wake-up subscriber) when they are built and
//! end it when they are dropped, so they are built inside a tokio runtime
//! ([`StartError::NoRuntime`] otherwise).
//!
//! # The contract
//!
//! **Addresses.** A *peer* is [`PeerAddr`] `(project, group, peer)`; projects are keyed by their
//! configured string id, so nodes whose configs list projects in different orders agree. A peer
//! has *connections*, conn ids `>= 16`, one per browser page, each with a FIFO mailbox.
//!
//! **Delivery** ([`MailboxStore::deliver`]). A conn id `>= 16` appends to that connection's
//! mailbox, opening it if it never polled (a reply sent before the receiver's first poll still
//! arrives). Conn id 0 is *discovery*: the message goes to the connection of that peer that has
//! a poll in flight right now (if several, the one whose poll began most recently). When none has,
//! it waits in the peer's discovery queue, and whichever connection of that peer polls next takes
//! the whole queue, merged with its mailbox in send order. A connection that polled recently but
//! has no poll in flight does not get it: on a page reload the old page stops polling and the new
//! page, polling 50-500 ms later, must get the `Join`. A full mailbox answers
//! [`StoreError::MailboxFull`]. `deliver` never waits on the receiver and returns once the
//! message is stored (for Redis: in Redis).
//!
//! **Order.** Every message of a peer carries a per-peer sequence number, so what one sender
//! sends to one receiver is handed out in send order, also where discovery and direct messages
//! meet in one mailbox, and also when a hand-out was lost (see below). A store's ordering never
//! depends on state that can vanish before the mail it orders (on Redis: a counter evicted or
//! expired before the mailboxes starts again above every message still stored).
//!
//! **Polling** ([`MailboxStore::poll`]). A poll registers itself as in flight; a newer poll of
//! the same connection ends an older one (on any node) with an empty result marked
//! [`Polled::superseded`]. It takes the
//! discovery queue, returns up to `max_messages` at once if any are waiting, else waits up to
//! `wait` for one, and then waits `batch_window` once more for others to join it. Dropping the
//! future ends the poll; its messages stay queued.
//!
//! **At-least-once hand-out.** Messages a poll returns are *reserved*, not deleted, under the
//! returned [`Receipt`]. The server calls [`MailboxStore::ack`] once the HTTP response carrying
//! them has been handed to the client (once the whole answer, or for a stream every frame of
//! the batch, is written to the connection, issued on the spot; a new `Recv` of the connection
//! on that node first waits, briefly, for the acknowledgements it has under way, since its
//! client may have read the answer before they were issued; a stream's next poll carries the
//! acknowledgement of the batch it has just written, [`PollOptions::ack`]); acknowledged
//! messages are deleted. What is reserved and not acknowledged comes back, before any newer message, in two
//! ways:
//!
//! - a poll with [`PollOptions::takeover`] (every new `Recv`) first takes back everything the
//!   connection's earlier polls handed out and nobody acknowledged: the answer carrying it may
//!   have been lost (a node killed, a request aborted, a reply timed out after the store handed
//!   the messages out). The receiver may so get a batch twice, never out of order;
//! - otherwise (the later polls of one stream) a reservation comes back once the store's *ack
//!   lease* (a few seconds) runs out, also to a poll already waiting, which it wakes.
//!
//! So a node killed between taking messages and writing them out loses nothing, and the next
//! `Recv` of the connection gets them first.
//!
//! What at-least-once covers, exactly: a batch counts as delivered when all of it (a
//! long-poll's whole answer, a stream's frames of the batch) is in the kernel's send buffer of
//! the client's connection (HTTP/1.1; over HTTP/2, within one flush of the connection), not
//! when the client has read it. A server killed before that, or a client that stops reading
//! before it, gets the batch handed out again; a server killed after it has still sent the
//! answer (the kernel delivers what it buffered). A connection that breaks after that (a
//! half-open TCP connection, an HTTP/2 reset, a proxy dropping the answer) loses the batch for
//! good, unless the client calls `Recv` again on that connection before the acknowledgement
//! reached the store.
//! A client that must not lose a message across such a break acknowledges end to end in its
//! own messages.
//!
//! **Expiry.** Messages older than `message_ttl_secs` are dropped. A connection with no poll in
//! flight, idle for `connection_idle_secs`, with an empty mailbox is forgotten and its budget
//! released. The store does this itself (a purge task it owns, or key TTLs); nobody has to call
//! a sweep.
//!
//! **Limits** (from [`Limits`](crate::Limits)). `mailbox_capacity` messages waiting per mailbox
//! and per discovery queue; messages handed out and awaiting their ack are held apart, up to as
//! many again, so a receiver's mailbox is free again as soon as it has taken its mail. A full
//! mailbox costs a store a bounded amount of work per call, however large its messages.
//! `max_connections_per_peer`: a new connection evicts the least recently active connection
//! with no poll in flight, dropping its mail; a mailbox opened by a sender may only evict
//! another mailbox a sender opened, never a connection its receiver polled; if none may go,
//! [`StoreError::TooManyPeerConnections`]. `max_connections_per_project`, as two budgets:
//! connections that have polled, and mailboxes opened by senders for connections or peers that
//! have not polled yet, so junk sends cannot lock real peers out; beyond either,
//! [`StoreError::TooManyProjectConnections`]. An evicted connection gives its unit back at
//! once, and a refused one takes none, so one peer cycling through conn ids never uses up its
//! project's budget.
//!
//! **Failures.** [`StoreError::Unavailable`] when the backend cannot be reached (answered quickly,
//! mapped to Twirp `unavailable`, which clients retry); [`MailboxStore::health`] says whether it
//! can be reached. Nothing panics, and a store reconnects by itself once its backend returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

mod bindings;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;
mod redis;
mod revocation_mirror;
mod revocations;
mod usage;

pub use bindings::{BindingKey, BindingStore, MemoryBindings, KEEP_EXPIRED_SECS};
pub use memory::MemoryStore;
pub use redis::{RedisBindings, RedisConnection, RedisRevocations, RedisStore, RedisUsage};
pub use revocation_mirror::MirroredRevocations;
pub use revocations::{LocalRevocations, RevocationStore, RevocationsVersion};
pub use usage::{HourlyUsage, MemoryUsage, UsageStore};

pub(crate) use redis::{tls_connector, Acquired, Lease};

/// A boxed, sendable future, as the methods of [`MailboxStore`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A peer's address: its project, group id and peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr<'a> {
    /// The project's configured id (`projects[].id`).
    pub project: &'a str,
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
    /// Whether this poll first takes back what earlier polls of its connection handed out and
    /// nobody acknowledged (the answer carrying them may have been lost), so it gets them
    /// before any newer message. A new `Recv` does; the later polls of one stream, whose
    /// earlier batches are still being confirmed, do not.
    pub takeover: bool,
    /// A receipt of this connection to acknowledge before the poll begins, as
    /// [`MailboxStore::ack`] would, in the same store call: a stream's next poll carries the
    /// acknowledgement of the batch it has just written. Acknowledged when the call is made,
    /// even if the returned future is never polled or fails.
    pub ack: Option<Receipt>,
}

/// Names the messages one poll handed out, for [`MailboxStore::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt(pub u64);

/// What a [`MailboxStore::poll`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Polled {
    /// The messages, in send order per sender.
    pub messages: Vec<Envelope>,
    /// Acknowledge with this once the messages reached the client; `None` when there are none.
    pub receipt: Option<Receipt>,
    /// The poll was ended by a newer poll of its connection (or its connection was forgotten),
    /// rather than by its deadline; it then holds no messages.
    pub superseded: bool,
}

impl Polled {
    /// The result of a poll that a newer poll of its connection ended.
    pub fn superseded() -> Self {
        Polled {
            superseded: true,
            ..Polled::default()
        }
    }
}

/// A connection with a poll in flight, as [`MailboxStore::online`] lists it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct OnlineConnection {
    /// The group id.
    pub group: String,
    /// The peer id.
    pub peer: String,
    /// The connection id.
    pub conn_id: u32,
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
    #[error("mailbox store unavailable: {0}; retry shortly")]
    Unavailable(String),
}

/// Why a store could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Stores run their background work on tokio and start it at once.
    #[error("a store starts its background tasks at once and needs a tokio runtime; build it inside one")]
    NoRuntime,
    /// No Redis URL was given.
    #[error("no Redis URL is configured; set store.urls")]
    NoUrl,
    /// A Redis URL cannot be used.
    #[error("cannot use the Redis URL {url}: {problem}; write redis://HOST:PORT or unix:///PATH")]
    BadUrl {
        /// The URL, its password hidden.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The Redis client could not be set up.
    #[error("cannot set up the Redis client: {0}")]
    Client(String),
    /// A file of `[store.tls]` cannot be used.
    #[error("cannot use {key} for TLS to Redis: {problem}; give a readable PEM file")]
    Tls {
        /// The `store.tls.*` key.
        key: &'static str,
        /// What is wrong, with the file's path.
        problem: String,
    },
}

/// Counters a store reports for `/metrics`.
///
/// [`MemoryStore`] reports the whole store. [`RedisStore`] reports `connections` for the projects
/// this node has served (from the project budgets) and the rest as seen by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Connections with a mailbox.
    pub connections: u64,
    /// Connections polling right now.
    pub polling: u64,
    /// Messages waiting in mailboxes (reserved ones included).
    pub queued_messages: u64,
    /// Messages acknowledged by a receiver so far.
    pub delivered_messages: u64,
    /// Messages dropped so far because nobody took them within the message TTL.
    pub expired_messages: u64,
    /// Messages dropped so far with a connection that was replaced.
    pub evicted_messages: u64,
    /// Times the wake-up subscriber (Redis) heard nothing and was reconnected.
    pub subscriber_restarts: u64,
    /// Script calls this node made to Redis.
    pub redis_script_calls: u64,
    /// The `FCALL`s that carried them (calls made at the same moment go as one).
    pub redis_fcalls: u64,
}

/// Storage of mailboxes and live connections; the module docs state the contract.
pub trait MailboxStore: Send + Sync + 'static {
    /// Stores `envelope` for `(dst, conn_id)`; conn id 0 is discovery.
    ///
    /// # Errors
    ///
    /// [`StoreError::MailboxFull`], [`StoreError::TooManyPeerConnections`] or
    /// [`StoreError::TooManyProjectConnections`] when a bound is reached,
    /// [`StoreError::Unavailable`] when the backend cannot be reached.
    fn deliver<'a>(
        &'a self,
        dst: PeerAddr<'a>,
        conn_id: u32,
        envelope: Envelope,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Registers a poll of `(me, conn_id)` and waits, as `options` say, for its messages, which
    /// it reserves under the returned receipt.
    ///
    /// # Errors
    ///
    /// [`StoreError::TooManyPeerConnections`] or [`StoreError::TooManyProjectConnections`] for
    /// a new connection beyond a bound, [`StoreError::Unavailable`] when the backend cannot be
    /// reached.
    fn poll<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        options: PollOptions,
    ) -> BoxFuture<'a, Result<Polled, StoreError>>;

    /// Deletes the messages that the poll which returned `receipt` reserved.
    ///
    /// Acknowledging an unknown or already acknowledged receipt does nothing, nor does one whose
    /// messages a newer poll took over (they are then that poll's to acknowledge).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend cannot be reached (the messages are then
    /// handed out again after the ack lease).
    fn ack<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        receipt: Receipt,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The connections of `project` with a poll in flight (who is online), sorted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend cannot be reached.
    fn online<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OnlineConnection>, StoreError>>;

    /// Current counters.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend cannot be reached.
    fn stats(&self) -> BoxFuture<'_, Result<StoreStats, StoreError>>;

    /// Whether the backend can be reached now.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] saying why not.
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
