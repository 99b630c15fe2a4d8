//! The conformance suite: the contract of [`MailboxStore`] as tests that every backend runs.
//!
//! Each test is a `pub async fn` taking a [`Factory`]. The factory builds a store for a
//! [`Setup`]; calling it twice with the same `Setup::namespace` must give two *nodes* on the same
//! data (two handles of one memory store, or two Redis stores with one key prefix), which is how
//! the tests check that a node sees what another did. [`run_all`] runs every test at once and
//! names the ones that failed.
//!
//! The tests use `tokio::time` and short real durations, so they run under a paused clock for
//! the memory store and in real time against Redis.
//!
//! The contracts of [`RevocationStore`](super::RevocationStore) and
//! [`UsageStore`](super::UsageStore) have suites of their own, [`revocations`] and [`usage`],
//! built the same way.
//!
//! Compiled in tests and with the crate feature `conformance`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

pub mod bindings;
pub mod revocations;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{
    BoxFuture, Envelope, MailboxStore, OnlineConnection, PeerAddr, PollOptions, Polled, StoreError,
};
use crate::config::Limits;

/// What a test needs of its store.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Stores built for the same namespace share their data.
    pub namespace: String,
    /// The bounds.
    pub limits: Limits,
    /// How long handed-out messages wait for their acknowledgement.
    pub ack_lease: Duration,
}

/// Builds a store (a node) for a setup.
pub type Factory = Arc<dyn Fn(&Setup) -> Arc<dyn MailboxStore> + Send + Sync>;

/// A test of the suite.
pub type Test = fn(Factory) -> BoxFuture<'static, ()>;

const ACK_LEASE: Duration = Duration::from_millis(800);

fn setup(namespace: &str, tweak: impl FnOnce(&mut Limits)) -> Setup {
    let mut limits = Limits::default();
    tweak(&mut limits);
    Setup {
        namespace: namespace.to_owned(),
        limits,
        ack_lease: ACK_LEASE,
    }
}

/// The peer `peer` of the suite's project and group.
pub(crate) fn addr(peer: &str) -> PeerAddr<'_> {
    PeerAddr {
        project: "p",
        group: "g",
        peer,
    }
}

fn envelope(text: &str) -> Envelope {
    Envelope {
        src_group: Arc::from("g"),
        src_peer: Arc::from("sender"),
        message: Bytes::copy_from_slice(text.as_bytes()),
    }
}

fn texts(polled: &Polled) -> Vec<String> {
    polled
        .messages
        .iter()
        .map(|e| String::from_utf8_lossy(&e.message).into_owned())
        .collect()
}

const NOW: PollOptions = PollOptions {
    wait: Duration::ZERO,
    batch_window: Duration::ZERO,
    max_messages: 64,
    takeover: true,
    ack: None,
};

/// A poll that waits (a `Recv` with its batch window).
pub(crate) const LONG: PollOptions = PollOptions {
    wait: Duration::from_secs(10),
    batch_window: Duration::from_millis(150),
    max_messages: 64,
    takeover: true,
    ack: None,
};

/// A node for `setup`, once it can serve (connected, subscribed to its wake-ups).
async fn node(f: &Factory, setup: &Setup) -> Arc<dyn MailboxStore> {
    let store = f(setup);
    let start = Instant::now();
    while let Err(err) = store.health().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "store not ready: {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store
}

/// Polls now and acknowledges what came.
async fn take(store: &dyn MailboxStore, me: PeerAddr<'_>, conn: u32) -> Vec<String> {
    let polled = store.poll(me, conn, NOW).await.unwrap();
    if let Some(receipt) = polled.receipt {
        store.ack(me, conn, receipt).await.unwrap();
    }
    texts(&polled)
}

fn spawn_poll(
    store: &Arc<dyn MailboxStore>,
    peer: &'static str,
    conn: u32,
    options: PollOptions,
) -> tokio::task::JoinHandle<Polled> {
    let store = Arc::clone(store);
    tokio::spawn(async move { store.poll(addr(peer), conn, options).await.unwrap() })
}

/// Lets spawned polls register (and a dropped poll's end reach the backend).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Discovery messages wait for the first poll and merge with direct ones in send order;
/// projects are apart.
pub async fn discovery_waits_and_keeps_send_order(f: Factory) {
    let s = node(&f, &setup("order", |_| {})).await;
    s.deliver(addr("bob"), 0, envelope("join")).await.unwrap();
    s.deliver(addr("bob"), 100, envelope("direct"))
        .await
        .unwrap();
    s.deliver(addr("bob"), 0, envelope("join again"))
        .await
        .unwrap();
    assert_eq!(
        take(&*s, addr("bob"), 100).await,
        ["join", "direct", "join again"]
    );
    let other = PeerAddr {
        project: "q",
        ..addr("bob")
    };
    assert!(take(&*s, other, 100).await.is_empty());
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
}

/// Many messages alternating between discovery and a direct address arrive in send order.
pub async fn order_is_kept_across_many_messages(f: Factory) {
    let s = node(&f, &setup("many", |_| {})).await;
    let sent: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    for (i, text) in sent.iter().enumerate() {
        let conn = if i % 3 == 0 { 0 } else { 100 };
        s.deliver(addr("bob"), conn, envelope(text)).await.unwrap();
    }
    let mut got = Vec::new();
    loop {
        let polled = s
            .poll(
                addr("bob"),
                100,
                PollOptions {
                    max_messages: 7,
                    ..NOW
                },
            )
            .await
            .unwrap();
        assert!(polled.messages.len() <= 7);
        let Some(receipt) = polled.receipt else { break };
        got.extend(texts(&polled));
        s.ack(addr("bob"), 100, receipt).await.unwrap();
    }
    assert_eq!(got, sent);
}

/// Ids containing the key separators of a backend never collide.
pub async fn ids_with_separators_stay_apart(f: Factory) {
    let s = node(&f, &setup("ids", |_| {})).await;
    let a = PeerAddr {
        project: "p",
        group: "a:b",
        peer: "c",
    };
    let b = PeerAddr {
        project: "p",
        group: "a",
        peer: "b:c",
    };
    let c = PeerAddr {
        project: "p:a",
        group: "b",
        peer: "c",
    };
    let d = PeerAddr {
        project: "p",
        group: "{a}",
        peer: "}%3A{",
    };
    s.deliver(a, 100, envelope("for a")).await.unwrap();
    s.deliver(d, 100, envelope("for d")).await.unwrap();
    assert!(take(&*s, b, 100).await.is_empty());
    assert!(take(&*s, c, 100).await.is_empty());
    assert_eq!(take(&*s, a, 100).await, ["for a"]);
    assert_eq!(take(&*s, d, 100).await, ["for d"]);
}

/// A discovery message goes to the connection whose poll is in flight, the newest if several.
pub async fn discovery_goes_to_the_newest_poll_in_flight(f: Factory) {
    let s = node(&f, &setup("inflight", |_| {})).await;
    assert!(take(&*s, addr("bob"), 200).await.is_empty());
    let older = spawn_poll(&s, "bob", 100, LONG);
    settle().await;
    let newer = spawn_poll(&s, "bob", 300, LONG);
    settle().await;
    s.deliver(addr("bob"), 0, envelope("hello")).await.unwrap();
    assert_eq!(texts(&newer.await.unwrap()), ["hello"]);
    assert!(!older.is_finished(), "the older poll got a message");
    s.deliver(addr("bob"), 100, envelope("yours"))
        .await
        .unwrap();
    assert_eq!(texts(&older.await.unwrap()), ["yours"]);
    assert!(take(&*s, addr("bob"), 200).await.is_empty());
}

/// Page reload: a connection that polled recently but has no poll in flight does not get a
/// discovery message; the next connection to poll does.
pub async fn discovery_skips_a_connection_that_stopped_polling(f: Factory) {
    let s = node(&f, &setup("reload", |_| {})).await;
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
    s.deliver(addr("bob"), 0, envelope("join")).await.unwrap();
    assert_eq!(take(&*s, addr("bob"), 200).await, ["join"]);
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
}

/// A poll whose future is dropped ends: later discovery messages wait for the next poll, and
/// the connection's messages stay queued.
pub async fn a_dropped_poll_ends_and_keeps_its_messages(f: Factory) {
    let s = node(&f, &setup("dropped", |_| {})).await;
    let poll = spawn_poll(&s, "bob", 100, LONG);
    settle().await;
    poll.abort();
    let _ = poll.await;
    settle().await;
    s.deliver(addr("bob"), 100, envelope("kept")).await.unwrap();
    s.deliver(addr("bob"), 0, envelope("join")).await.unwrap();
    assert_eq!(take(&*s, addr("bob"), 200).await, ["join"]);
    assert_eq!(take(&*s, addr("bob"), 100).await, ["kept"]);
}

/// A newer poll of a connection ends the older one with nothing, marked superseded, also from
/// another node; a poll that ends at its deadline is not marked.
pub async fn a_newer_poll_ends_the_older_one_on_any_node(f: Factory) {
    let first = setup("newer", |_| {});
    let a = node(&f, &first).await;
    let b = node(&f, &first).await;
    let old = spawn_poll(&a, "bob", 100, LONG);
    settle().await;
    let new = spawn_poll(&b, "bob", 100, LONG);
    let ended = tokio::time::timeout(Duration::from_secs(3), old)
        .await
        .expect("the older poll was not ended by the newer one")
        .unwrap();
    assert!(ended.messages.is_empty() && ended.receipt.is_none());
    assert!(ended.superseded, "{ended:?}");
    a.deliver(addr("bob"), 100, envelope("x")).await.unwrap();
    let got = new.await.unwrap();
    assert_eq!(texts(&got), ["x"]);
    assert!(!got.superseded);
    b.ack(addr("bob"), 100, got.receipt.unwrap()).await.unwrap();
    let short = PollOptions {
        wait: Duration::from_millis(200),
        ..LONG
    };
    let timed_out = spawn_poll(&a, "bob", 100, short).await.unwrap();
    assert!(timed_out.messages.is_empty() && !timed_out.superseded);
}

/// A waiting poll wakes when a message arrives (sent through another node) and batches what
/// arrives within the window.
pub async fn a_waiting_poll_wakes_and_batches(f: Factory) {
    let first = setup("batch", |_| {});
    let a = node(&f, &first).await;
    let b = node(&f, &first).await;
    let start = Instant::now();
    let poll = spawn_poll(&a, "bob", 100, LONG);
    settle().await;
    b.deliver(addr("bob"), 100, envelope("1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.deliver(addr("bob"), 0, envelope("2")).await.unwrap();
    let polled = poll.await.unwrap();
    assert_eq!(texts(&polled), ["1", "2"]);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the poll was not woken"
    );
    a.ack(addr("bob"), 100, polled.receipt.unwrap())
        .await
        .unwrap();
}

/// An idle poll answers empty at its deadline, not before.
pub async fn an_idle_poll_returns_empty_at_its_deadline(f: Factory) {
    let s = node(&f, &setup("idle", |_| {})).await;
    let wait = Duration::from_millis(400);
    let start = Instant::now();
    let polled = s
        .poll(addr("bob"), 100, PollOptions { wait, ..LONG })
        .await
        .unwrap();
    assert_eq!(polled, Polled::default());
    let took = start.elapsed();
    assert!(
        took >= wait && took < wait + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(s.stats().await.unwrap().polling, 0);
}

/// A batch handed out and never acknowledged (an answer lost on its way, a node killed) is
/// taken over by the connection's next poll and handed out again before any newer message:
/// a duplicate is possible, a broken order is not. Acknowledged messages are gone for good, and
/// a late acknowledgement of the lost batch loses nothing.
pub async fn a_newer_poll_takes_over_an_unacknowledged_batch_first(f: Factory) {
    let s = node(&f, &setup("takeover", |_| {})).await;
    s.deliver(addr("bob"), 100, envelope("a")).await.unwrap();
    s.deliver(addr("bob"), 100, envelope("b")).await.unwrap();
    let lost = s.poll(addr("bob"), 100, NOW).await.unwrap();
    assert_eq!(texts(&lost), ["a", "b"]);
    s.deliver(addr("bob"), 100, envelope("c")).await.unwrap();
    let again = s.poll(addr("bob"), 100, NOW).await.unwrap();
    assert_eq!(texts(&again), ["a", "b", "c"]);
    assert_ne!(again.receipt, lost.receipt);
    // The lost answer's acknowledgement arrives late: what the newer poll holds stays held.
    s.ack(addr("bob"), 100, lost.receipt.unwrap())
        .await
        .unwrap();
    // A waiting poll gets an unacknowledged batch at once, before newer mail.
    let waiting = spawn_poll(&s, "bob", 100, LONG);
    settle().await;
    s.deliver(addr("bob"), 100, envelope("d")).await.unwrap();
    let polled = waiting.await.unwrap();
    assert_eq!(texts(&polled)[..3], ["a", "b", "c"]);
    s.ack(addr("bob"), 100, polled.receipt.unwrap())
        .await
        .unwrap();
    let mut rest = texts(&polled).split_off(3);
    rest.extend(take(&*s, addr("bob"), 100).await);
    assert_eq!(rest, ["d"]);
    tokio::time::sleep(ACK_LEASE + Duration::from_millis(300)).await;
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
}

/// The later polls of one stream (no takeover) leave its unconfirmed batches reserved and get
/// newer mail only; a batch whose lease runs out comes back to such a poll while it waits.
pub async fn a_streams_later_polls_get_its_lapsed_batches_while_waiting(f: Factory) {
    let s = node(&f, &setup("stream", |_| {})).await;
    let next = PollOptions {
        takeover: false,
        ..NOW
    };
    s.deliver(addr("bob"), 100, envelope("a")).await.unwrap();
    assert_eq!(texts(&s.poll(addr("bob"), 100, NOW).await.unwrap()), ["a"]);
    s.deliver(addr("bob"), 100, envelope("b")).await.unwrap();
    let second = s.poll(addr("bob"), 100, next).await.unwrap();
    assert_eq!(texts(&second), ["b"]);
    s.ack(addr("bob"), 100, second.receipt.unwrap())
        .await
        .unwrap();
    let start = Instant::now();
    let waiting = PollOptions {
        takeover: false,
        ..LONG
    };
    let lapsed = s.poll(addr("bob"), 100, waiting).await.unwrap();
    assert_eq!(texts(&lapsed), ["a"]);
    assert!(
        start.elapsed() < ACK_LEASE + Duration::from_secs(2),
        "the waiting poll was not woken when the lease ran out: {:?}",
        start.elapsed()
    );
    s.ack(addr("bob"), 100, lapsed.receipt.unwrap())
        .await
        .unwrap();
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
}

/// A stream's next poll carries the acknowledgement of the batch it has just written: that
/// batch is gone as if acknowledged on its own (counted as delivered, not handed out again,
/// after the lease either), and the poll hands out newer mail as any later poll of a stream
/// does. Carrying a receipt already acknowledged changes nothing.
pub async fn a_poll_acknowledges_the_receipt_it_carries(f: Factory) {
    let s = node(&f, &setup("carried", |_| {})).await;
    s.deliver(addr("bob"), 100, envelope("a")).await.unwrap();
    let first = s.poll(addr("bob"), 100, NOW).await.unwrap();
    assert_eq!(texts(&first), ["a"]);
    s.deliver(addr("bob"), 100, envelope("b")).await.unwrap();
    let delivered = s.stats().await.unwrap().delivered_messages;
    let carrying = |receipt| PollOptions {
        takeover: false,
        ack: receipt,
        ..NOW
    };
    let second = s
        .poll(addr("bob"), 100, carrying(first.receipt))
        .await
        .unwrap();
    assert_eq!(texts(&second), ["b"]);
    assert_eq!(
        s.stats().await.unwrap().delivered_messages,
        delivered + 1,
        "the carried acknowledgement counts as a delivery"
    );
    let again = s
        .poll(addr("bob"), 100, carrying(first.receipt))
        .await
        .unwrap();
    assert!(again.messages.is_empty(), "{:?}", texts(&again));
    tokio::time::sleep(ACK_LEASE + Duration::from_millis(300)).await;
    // Only the batch nobody acknowledged comes back.
    let later = s.poll(addr("bob"), 100, NOW).await.unwrap();
    assert_eq!(texts(&later), ["b"]);
    // A poll that waits carries it as well.
    let waiting = spawn_poll(
        &s,
        "bob",
        100,
        PollOptions {
            takeover: false,
            ack: later.receipt,
            ..LONG
        },
    );
    settle().await;
    s.deliver(addr("bob"), 100, envelope("c")).await.unwrap();
    assert_eq!(texts(&waiting.await.unwrap()), ["c"]);
    // What a new call takes over is the waiting poll's batch alone.
    assert_eq!(take(&*s, addr("bob"), 100).await, ["c"]);
}

/// Messages handed out and not acknowledged come back to the connection's next poll also after
/// the ack lease ran out; once acknowledged they are gone.
pub async fn an_unacknowledged_batch_comes_back_after_the_lease(f: Factory) {
    let s = node(&f, &setup("lease", |_| {})).await;
    s.deliver(addr("bob"), 100, envelope("a")).await.unwrap();
    assert_eq!(texts(&s.poll(addr("bob"), 100, NOW).await.unwrap()), ["a"]);
    s.deliver(addr("bob"), 100, envelope("b")).await.unwrap();
    tokio::time::sleep(ACK_LEASE + Duration::from_millis(300)).await;
    let later = s.poll(addr("bob"), 100, NOW).await.unwrap();
    assert_eq!(texts(&later), ["a", "b"]);
    s.ack(addr("bob"), 100, later.receipt.unwrap())
        .await
        .unwrap();
    tokio::time::sleep(ACK_LEASE + Duration::from_millis(300)).await;
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
}

/// A peer's connections share one sequence, so one connection's batch need not be a run of
/// consecutive sequence numbers, and a lapsed batch handed out again can span another batch
/// still reserved: acknowledging a batch deletes exactly its messages, and each batch comes
/// back whole and in order.
pub async fn batches_that_interleave_stay_apart(f: Factory) {
    let lease = Duration::from_millis(2_000);
    let s = node(
        &f,
        &Setup {
            ack_lease: lease,
            ..setup("interleave", |_| {})
        },
    )
    .await;
    let next = PollOptions {
        takeover: false,
        ..NOW
    };
    for i in 0..3 {
        s.deliver(addr("bob"), 100, envelope(&format!("a{i}")))
            .await
            .unwrap();
        s.deliver(addr("bob"), 200, envelope(&format!("b{i}")))
            .await
            .unwrap();
    }
    let other = s.poll(addr("bob"), 200, NOW).await.unwrap();
    assert_eq!(texts(&other), ["b0", "b1", "b2"]);
    // Batch 1 of conn 100: a0 a1 a2, not acknowledged.
    assert_eq!(
        texts(&s.poll(addr("bob"), 100, NOW).await.unwrap()),
        ["a0", "a1", "a2"]
    );
    s.ack(addr("bob"), 200, other.receipt.unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // Batch 2: a3 a4, not acknowledged either; batch 1 still within its lease.
    s.deliver(addr("bob"), 100, envelope("a3")).await.unwrap();
    s.deliver(addr("bob"), 100, envelope("a4")).await.unwrap();
    assert_eq!(
        texts(&s.poll(addr("bob"), 100, next).await.unwrap()),
        ["a3", "a4"]
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Batch 1 lapsed and comes back with newer mail around batch 2, which stays reserved.
    s.deliver(addr("bob"), 100, envelope("a5")).await.unwrap();
    let third = s.poll(addr("bob"), 100, next).await.unwrap();
    assert_eq!(texts(&third), ["a0", "a1", "a2", "a5"]);
    s.ack(addr("bob"), 100, third.receipt.unwrap())
        .await
        .unwrap();
    tokio::time::sleep(lease).await;
    // Batch 2 lapsed in turn, untouched by that acknowledgement; nothing else is left.
    let fourth = s.poll(addr("bob"), 100, next).await.unwrap();
    assert_eq!(texts(&fourth), ["a3", "a4"]);
    s.ack(addr("bob"), 100, fourth.receipt.unwrap())
        .await
        .unwrap();
    assert!(take(&*s, addr("bob"), 200).await.is_empty());
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
}

/// A mailbox and a discovery queue hold at most `mailbox_capacity` waiting messages; handed-out
/// ones awaiting their ack are held apart, up to as many again.
pub async fn mailboxes_are_bounded(f: Factory) {
    let s = node(&f, &setup("full", |l| l.mailbox_capacity = 2)).await;
    s.deliver(addr("bob"), 100, envelope("1")).await.unwrap();
    s.deliver(addr("bob"), 100, envelope("2")).await.unwrap();
    assert_eq!(
        s.deliver(addr("bob"), 100, envelope("3")).await,
        Err(StoreError::MailboxFull { capacity: 2 })
    );
    let polled = s.poll(addr("bob"), 100, NOW).await.unwrap();
    assert_eq!(texts(&polled), ["1", "2"]);
    s.deliver(addr("bob"), 100, envelope("3")).await.unwrap();
    s.deliver(addr("bob"), 100, envelope("4")).await.unwrap();
    assert_eq!(
        s.deliver(addr("bob"), 100, envelope("5")).await,
        Err(StoreError::MailboxFull { capacity: 2 })
    );
    s.ack(addr("bob"), 100, polled.receipt.unwrap())
        .await
        .unwrap();
    s.deliver(addr("carol"), 0, envelope("1")).await.unwrap();
    s.deliver(addr("carol"), 0, envelope("2")).await.unwrap();
    assert_eq!(
        s.deliver(addr("carol"), 0, envelope("3")).await,
        Err(StoreError::MailboxFull { capacity: 2 })
    );
    assert_eq!(take(&*s, addr("bob"), 100).await, ["3", "4"]);
}

/// A new connection beyond `max_connections_per_peer` evicts the least recently active one
/// that is not polling, with its mail; when all are polling it is refused.
pub async fn connections_per_peer_are_bounded(f: Factory) {
    let s = node(&f, &setup("perpeer", |l| l.max_connections_per_peer = 2)).await;
    s.deliver(addr("bob"), 100, envelope("lost")).await.unwrap();
    let p200 = spawn_poll(&s, "bob", 200, LONG);
    settle().await;
    let p300 = spawn_poll(&s, "bob", 300, LONG);
    settle().await;
    assert!(
        !p300.is_finished(),
        "conn 300 should have replaced conn 100"
    );
    assert_eq!(
        s.poll(addr("bob"), 400, NOW).await,
        Err(StoreError::TooManyPeerConnections { max: 2 })
    );
    s.deliver(addr("bob"), 200, envelope("x")).await.unwrap();
    s.deliver(addr("bob"), 300, envelope("y")).await.unwrap();
    assert_eq!(texts(&p200.await.unwrap()), ["x"]);
    assert_eq!(texts(&p300.await.unwrap()), ["y"]);
    // Conn 100 was evicted with its message: polling it now evicts another and finds nothing.
    assert!(take(&*s, addr("bob"), 100).await.is_empty());
}

/// Two budgets per project: mailboxes senders open, and connections that poll; one being
/// full does not block the other, nor another project.
pub async fn project_budgets_are_separate(f: Factory) {
    let s = node(&f, &setup("budgets", |l| l.max_connections_per_project = 2)).await;
    s.deliver(addr("carol"), 0, envelope("hi")).await.unwrap();
    s.deliver(addr("dave"), 100, envelope("hi")).await.unwrap();
    assert_eq!(
        s.deliver(addr("erin"), 0, envelope("hi")).await,
        Err(StoreError::TooManyProjectConnections { max: 2 })
    );
    assert!(take(&*s, addr("zed"), 100).await.is_empty());
    assert!(take(&*s, addr("yan"), 100).await.is_empty());
    assert_eq!(
        s.poll(addr("xi"), 100, NOW).await,
        Err(StoreError::TooManyProjectConnections { max: 2 })
    );
    let other = PeerAddr {
        project: "q",
        ..addr("erin")
    };
    s.deliver(other, 0, envelope("hi")).await.unwrap();
    assert_eq!(take(&*s, other, 100).await, ["hi"]);
}

/// Messages expire after the TTL; idle connections are forgotten and their budget returns,
/// with nobody calling a sweep.
pub async fn messages_expire_and_idle_connections_are_forgotten(f: Factory) {
    let expiry = setup("expiry", |l| {
        l.message_ttl_secs = 1;
        l.connection_idle_secs = 1;
        l.max_connections_per_project = 1;
    });
    let s = node(&f, &expiry).await;
    s.deliver(addr("bob"), 100, envelope("old")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.deliver(addr("bob"), 100, envelope("new")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(take(&*s, addr("bob"), 100).await, ["new"]);
    assert_eq!(
        s.poll(addr("yan"), 100, NOW).await,
        Err(StoreError::TooManyProjectConnections { max: 1 })
    );
    let start = Instant::now();
    loop {
        match s.poll(addr("yan"), 100, NOW).await {
            Ok(_) => break,
            Err(StoreError::TooManyProjectConnections { .. })
                if start.elapsed() < Duration::from_secs(8) =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => panic!("bob's budget was not released: {err}"),
        }
    }
}

/// A mailbox that senders keep writing to holds its own budget unit past the first span: its
/// unit is refreshed under its own name, so two such mailboxes still fill a budget of two when
/// their first units would have run out.
pub async fn a_busy_mailbox_keeps_its_budget_unit(f: Factory) {
    let s = node(
        &f,
        &setup("busybudget", |l| {
            l.message_ttl_secs = 1;
            l.connection_idle_secs = 60;
            l.max_connections_per_project = 2;
        }),
    )
    .await;
    // A unit is taken for 3 s (twice the TTL and a second) and refreshed once less than the
    // TTL is left: keep writing for longer than the first span.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3_600) {
        s.deliver(addr("bob"), 100, envelope("x")).await.unwrap();
        s.deliver(addr("bob"), 101, envelope("y")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        s.deliver(addr("carol"), 100, envelope("z")).await,
        Err(StoreError::TooManyProjectConnections { max: 2 })
    );
}

/// Budget units come back when a connection is evicted or refused: one peer cycling through
/// fresh conn ids, or a sender writing to them, never uses up the project's budgets.
pub async fn evicted_and_refused_connections_give_their_budget_back(f: Factory) {
    let s = node(
        &f,
        &setup("giveback", |l| {
            l.max_connections_per_project = 20;
            l.max_connections_per_peer = 2;
        }),
    )
    .await;
    for conn in 100..141 {
        assert!(take(&*s, addr("bob"), conn).await.is_empty(), "bob:{conn}");
    }
    assert!(take(&*s, addr("carol"), 100).await.is_empty());
    for conn in 100..141 {
        s.deliver(addr("dave"), conn, envelope("x")).await.unwrap();
    }
    s.deliver(addr("erin"), 100, envelope("x")).await.unwrap();
    // Both of frank's connections are polling: new ones are refused, and cost nothing.
    let p1 = spawn_poll(&s, "frank", 100, LONG);
    let p2 = spawn_poll(&s, "frank", 101, LONG);
    settle().await;
    for conn in 200..241 {
        assert_eq!(
            s.poll(addr("frank"), conn, NOW).await,
            Err(StoreError::TooManyPeerConnections { max: 2 })
        );
        assert_eq!(
            s.deliver(addr("frank"), conn + 100, envelope("x")).await,
            Err(StoreError::TooManyPeerConnections { max: 2 })
        );
    }
    assert!(take(&*s, addr("gus"), 100).await.is_empty());
    s.deliver(addr("hank"), 100, envelope("x")).await.unwrap();
    s.deliver(addr("frank"), 100, envelope("1")).await.unwrap();
    s.deliver(addr("frank"), 101, envelope("2")).await.unwrap();
    assert_eq!(texts(&p1.await.unwrap()), ["1"]);
    assert_eq!(texts(&p2.await.unwrap()), ["2"]);
}

/// A sender's message to a fresh conn id never evicts a connection the receiver opened by
/// polling, nor its mail: it evicts only a mailbox a sender opened, or is refused.
pub async fn senders_never_evict_the_receivers_own_connections(f: Factory) {
    let s = node(&f, &setup("own", |l| l.max_connections_per_peer = 8)).await;
    assert!(take(&*s, addr("bob"), 42).await.is_empty());
    s.deliver(addr("bob"), 42, envelope("from carol"))
        .await
        .unwrap();
    for conn in 1000..1008 {
        s.deliver(addr("bob"), conn, envelope("junk"))
            .await
            .unwrap();
    }
    assert_eq!(take(&*s, addr("bob"), 42).await, ["from carol"]);
    // The newest sender-opened mailboxes are still there; the oldest made room.
    assert_eq!(take(&*s, addr("bob"), 1007).await, ["junk"]);
    // All of a peer's connections opened by polling: a sender's new one is refused.
    let small = node(&f, &setup("own2", |l| l.max_connections_per_peer = 2)).await;
    assert!(take(&*small, addr("bob"), 1).await.is_empty());
    assert!(take(&*small, addr("bob"), 2).await.is_empty());
    small
        .deliver(addr("bob"), 1, envelope("kept"))
        .await
        .unwrap();
    assert_eq!(
        small.deliver(addr("bob"), 3, envelope("x")).await,
        Err(StoreError::TooManyPeerConnections { max: 2 })
    );
    assert_eq!(take(&*small, addr("bob"), 1).await, ["kept"]);
}

/// `online` lists the connections of a project with a poll in flight, on any node.
pub async fn online_lists_the_polls_in_flight(f: Factory) {
    let first = setup("online", |_| {});
    let a = node(&f, &first).await;
    let b = node(&f, &first).await;
    assert!(take(&*a, addr("carol"), 200).await.is_empty());
    let waiting = spawn_poll(&a, "bob", 100, LONG);
    let other = PeerAddr {
        project: "q",
        ..addr("dave")
    };
    let elsewhere = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.poll(other, 300, LONG).await.unwrap() })
    };
    settle().await;
    let bob = OnlineConnection {
        group: "g".into(),
        peer: "bob".into(),
        conn_id: 100,
    };
    assert_eq!(b.online("p").await.unwrap(), [bob]);
    a.deliver(addr("bob"), 100, envelope("x")).await.unwrap();
    b.deliver(other, 300, envelope("y")).await.unwrap();
    assert_eq!(texts(&waiting.await.unwrap()), ["x"]);
    assert_eq!(texts(&elsewhere.await.unwrap()), ["y"]);
    assert!(a.online("p").await.unwrap().is_empty());
}

/// Every test of the suite, by name.
pub fn all() -> Vec<(&'static str, Test)> {
    macro_rules! tests {
        ($($name:ident),* $(,)?) => {
            vec![$((stringify!($name), (|f| Box::pin($name(f))) as Test)),*]
        };
    }
    tests![
        discovery_waits_and_keeps_send_order,
        order_is_kept_across_many_messages,
        ids_with_separators_stay_apart,
        discovery_goes_to_the_newest_poll_in_flight,
        discovery_skips_a_connection_that_stopped_polling,
        a_dropped_poll_ends_and_keeps_its_messages,
        a_newer_poll_ends_the_older_one_on_any_node,
        a_waiting_poll_wakes_and_batches,
        an_idle_poll_returns_empty_at_its_deadline,
        a_newer_poll_takes_over_an_unacknowledged_batch_first,
        an_unacknowledged_batch_comes_back_after_the_lease,
        a_streams_later_polls_get_its_lapsed_batches_while_waiting,
        a_poll_acknowledges_the_receipt_it_carries,
        batches_that_interleave_stay_apart,
        mailboxes_are_bounded,
        connections_per_peer_are_bounded,
        project_budgets_are_separate,
        messages_expire_and_idle_connections_are_forgotten,
        a_busy_mailbox_keeps_its_budget_unit,
        online_lists_the_polls_in_flight,
        evicted_and_refused_connections_give_their_budget_back,
        senders_never_evict_the_receivers_own_connections,
    ]
}

/// Runs every test at once (each in its own task and namespace) and returns the names of the
/// failed ones with their panic messages.
pub async fn run_all(factory: Factory) -> Vec<String> {
    run_each(all(), factory).await
}

/// A test of a suite, by name, for a factory of type `F`.
pub(crate) type Named<F> = (&'static str, fn(F) -> BoxFuture<'static, ()>);

/// Runs `tests` at once, each in its own task with a clone of `factory`, and returns the names
/// of the failed ones with their panic messages.
pub(crate) async fn run_each<F: Clone + Send + 'static>(
    tests: Vec<Named<F>>,
    factory: F,
) -> Vec<String> {
    let tasks: Vec<_> = tests
        .into_iter()
        .map(|(name, test)| (name, tokio::spawn(test(factory.clone()))))
        .collect();
    let mut failed = Vec::new();
    for (name, task) in tasks {
        if let Err(err) = task.await {
            let why = err
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                })
                .unwrap_or_default();
            failed.push(format!("{name}: {why}"));
        }
    }
    failed
}
