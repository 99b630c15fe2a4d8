//! Redis connections that freeze, drop or go silent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use pulsebeam_server::store::{PeerAddr, PollOptions, Polled, StoreError};
use pulsebeam_server::{Limits, MailboxStore, RedisStore, Server, StoreConfig};
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::common::{
    envelope, node, redis_available, store_config, unique_prefix, wait_healthy, OwnRedis, NOW,
};

fn bob() -> PeerAddr<'static> {
    PeerAddr {
        project: "main",
        group: "g",
        peer: "bob",
    }
}

const LONG_POLL: PollOptions = PollOptions {
    wait: Duration::from_secs(20),
    batch_window: Duration::ZERO,
    max_messages: 64,
    takeover: true,
    ack: None,
};

async fn healthz(server: &Server) -> (StatusCode, String) {
    let request = Request::get("/healthz").body(Body::empty()).unwrap();
    let response = server.router().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_status(server: &Server, want: StatusCode, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = healthz(server).await;
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "/healthz not {want} within {limit:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A receiver and a sender sharing one key prefix, on Redis at `receiver_url` and
/// `sender_url`, with their configurations as `tweak` leaves them.
fn pair(
    receiver_url: String,
    sender_url: String,
    name: &str,
    tweak: impl Fn(&mut StoreConfig),
) -> (Arc<RedisStore>, RedisStore) {
    let prefix = unique_prefix(name);
    let config = |url| {
        let mut config = store_config(&[url], &prefix);
        tweak(&mut config);
        config
    };
    let receiver = Arc::new(RedisStore::new(&config(receiver_url), &Limits::default()).unwrap());
    let sender = RedisStore::new(&config(sender_url), &Limits::default()).unwrap();
    (receiver, sender)
}

/// A poll of `bob:100` that finds nothing (and opens the connection, the first time).
async fn nothing_for_bob(store: &RedisStore) {
    let polled = store.poll(bob(), 100, NOW).await.unwrap();
    assert!(polled.messages.is_empty(), "{polled:?}");
}

/// A long poll of `bob:100` in a task of its own, registered once this returns; the task ends
/// with what the poll got and how long it waited.
async fn long_poll(receiver: &Arc<RedisStore>) -> tokio::task::JoinHandle<(Polled, Duration)> {
    let waiting = tokio::spawn({
        let receiver = Arc::clone(receiver);
        async move {
            let start = Instant::now();
            let polled = receiver.poll(bob(), 100, LONG_POLL).await.unwrap();
            (polled, start.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    waiting
}

/// A receiver polling `bob:100` for a long time gets `text` delivered by `sender` promptly:
/// the wake-up reached it, not the poll's deadline.
async fn wakes_promptly(receiver: &Arc<RedisStore>, sender: &RedisStore, text: &'static str) {
    let waiting = long_poll(receiver).await;
    sender.deliver(bob(), 100, envelope(text)).await.unwrap();
    let (polled, waited) = waiting.await.unwrap();
    assert_eq!(polled.messages, [envelope(text)]);
    assert!(
        waited < Duration::from_secs(10),
        "the poll waited {waited:?}: woken by its deadline, not by the delivery"
    );
    receiver
        .ack(bob(), 100, polled.receipt.unwrap())
        .await
        .unwrap();
}

/// Redis frozen (SIGSTOP): `/healthz` turns 503 with the reason, calls answer `unavailable`
/// within the command timeout instead of hanging; after SIGCONT both recover by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_fails_health_and_calls_then_recovers() {
    if !redis_available("a_frozen_redis_fails_health_and_calls_then_recovers") {
        return;
    }
    let redis = OwnRedis::start(&[]);
    let config = store_config(&[redis.url()], &unique_prefix("frozen"));
    let server = node(config.clone(), None);
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    wait_status(&server, StatusCode::OK, Duration::from_secs(10)).await;
    wait_healthy(&store, Duration::from_secs(10)).await;

    redis.signal("STOP");
    let reason = wait_status(
        &server,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(8),
    )
    .await;
    assert!(reason.contains("redis"), "{reason}");
    let start = Instant::now();
    let err = store.deliver(bob(), 100, envelope("x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    redis.signal("CONT");
    wait_status(&server, StatusCode::OK, Duration::from_secs(15)).await;
    wait_healthy(&store, Duration::from_secs(15)).await;
    store.deliver(bob(), 100, envelope("y")).await.unwrap();
}

/// The subscriber connections killed by Redis (`CLIENT KILL TYPE pubsub`): deliveries still
/// wake a waiting poll promptly afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_still_wakes_waiting_polls() {
    if !redis_available("a_killed_subscriber_still_wakes_waiting_polls") {
        return;
    }
    let redis = OwnRedis::start(&[]);
    let (receiver, sender) = pair(redis.url(), redis.url(), "pubsub-kill", |_| {});
    wait_healthy(&receiver, Duration::from_secs(10)).await;
    nothing_for_bob(&receiver).await;
    wakes_promptly(&receiver, &sender, "before").await;

    let killed = redis.cli(&["client", "kill", "type", "pubsub"]);
    assert!(killed.trim().parse::<u32>().unwrap() >= 2, "{killed}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    wakes_promptly(&receiver, &sender, "after").await;
}

/// A loopback proxy to a Redis that can silence the connections open through it: they stay
/// open and forward nothing more (a NAT or firewall that forgot them), while new ones work.
struct Proxy {
    port: u16,
    generation: Arc<watch::Sender<u64>>,
}

impl Proxy {
    /// The URL that reaches Redis through the proxy.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let generation = Arc::new(watch::channel(0u64).0);
        let shared = Arc::clone(&generation);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let born = *shared.borrow();
                let mut silenced = shared.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let forward = async {
                        let _ = tokio::join!(
                            tokio::io::copy(&mut client_read, &mut server_write),
                            tokio::io::copy(&mut server_read, &mut client_write)
                        );
                    };
                    tokio::select! {
                        () = forward => {}
                        () = async { let _ = silenced.wait_for(|g| *g > born).await.is_ok(); } => {
                            // Both sockets stay open, and nothing passes any more.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Proxy { port, generation }
    }

    fn silence_open_connections(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Every connection of a node to Redis goes silent without closing: the node notices (the
/// wake-up subscriber hears no heartbeat, commands go unanswered), says so in its health,
/// reconnects, and deliveries wake waiting polls promptly again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dropped_connection_is_noticed_and_replaced() {
    if !redis_available("a_silently_dropped_connection_is_noticed_and_replaced") {
        return;
    }
    let redis = OwnRedis::start(&[]);
    let proxy = Proxy::start(redis.port).await;
    let (receiver, sender) = pair(proxy.url(), redis.url(), "silent", |_| {});
    wait_healthy(&receiver, Duration::from_secs(10)).await;
    nothing_for_bob(&receiver).await;
    wakes_promptly(&receiver, &sender, "before").await;

    proxy.silence_open_connections();
    // Health fails while the node's connections are dead; the node replaces them (counting
    // the subscriber's replacement) and is healthy again.
    let start = Instant::now();
    let mut reasons = Vec::new();
    loop {
        let health = receiver.health().await;
        if let Err(err) = &health {
            reasons.push(err.to_string());
        }
        let restarts = receiver.stats().await.map_or(0, |s| s.subscriber_restarts);
        if health.is_ok() && restarts >= 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not replaced and healthy within 30 s: {restarts} restarts, {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!reasons.is_empty(), "health never failed");
    wakes_promptly(&receiver, &sender, "after").await;
    // The new subscriber is heard: it is not replaced again once the node is healthy.
    let restarts = receiver.stats().await.unwrap().subscriber_restarts;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        receiver.stats().await.unwrap().subscriber_restarts,
        restarts,
        "the subscriber was replaced again after it was heard"
    );
    receiver.health().await.unwrap();
}

/// A deliver hands its message to the waiting poll in the wake-up itself; when that wake-up is
/// lost (the node's connections went silent), the poll still gets the message once its node
/// hears again, from Redis, where it was reserved for the poll, long before the poll's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_handed_over_in_a_lost_wake_up_still_reaches_its_poll() {
    if !redis_available("a_message_handed_over_in_a_lost_wake_up_still_reaches_its_poll") {
        return;
    }
    let redis = OwnRedis::start(&[]);
    let proxy = Proxy::start(redis.port).await;
    // A lease longer than the poll: the reservation does not come back by running out.
    let (receiver, sender) = pair(proxy.url(), redis.url(), "lost-handed", |config| {
        config.ack_lease_ms = 60_000;
    });
    wait_healthy(&receiver, Duration::from_secs(10)).await;
    nothing_for_bob(&receiver).await;
    let waiting = long_poll(&receiver).await;
    proxy.silence_open_connections();
    sender
        .deliver(bob(), 100, envelope("handed over"))
        .await
        .unwrap();
    let (polled, waited) = waiting.await.unwrap();
    assert_eq!(polled.messages, [envelope("handed over")]);
    assert!(
        waited < LONG_POLL.wait - Duration::from_secs(5),
        "the poll waited {waited:?}: it got the message at its deadline"
    );
    receiver
        .ack(bob(), 100, polled.receipt.unwrap())
        .await
        .unwrap();
    nothing_for_bob(&receiver).await;
}
