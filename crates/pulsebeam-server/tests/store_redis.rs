//! The Redis store against real servers: the conformance suites (mailboxes, revocations, usage)
//! on a standalone Redis and on a Redis Cluster, several nodes sharing one Redis, a node that
//! dies holding mail, and Redis going away and coming back.
//!
//! `scripts/redis.sh start` starts the servers and prints `PULSEBEAM_TEST_REDIS_URL` and
//! `PULSEBEAM_TEST_REDIS_CLUSTER_URLS` (comma-separated seeds). Without them these tests print a
//! SKIP line and pass, unless `PULSEBEAM_REQUIRE_REDIS=1` (as `scripts/test.sh` sets), which
//! makes them fail instead. Every test uses its own key prefix, so they run in parallel on one
//! Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pulsebeam_server::store::conformance::{self, Factory, Setup};
use pulsebeam_server::store::{
    BindingStore, Envelope, PeerAddr, PollOptions, Polled, RedisBindings, RedisConnection,
    RedisRevocations, RedisUsage, RevocationStore, StoreError, UsageStore,
};
use pulsebeam_server::{Limits, MailboxStore, RedisStore, StoreBackend, StoreConfig};

#[path = "store_redis/costs.rs"]
mod costs;
#[path = "store_redis/functions.rs"]
mod functions;

/// The URLs in `var`, or `None` after a loud SKIP line (a failure with `PULSEBEAM_REQUIRE_REDIS=1`).
fn urls(var: &str, test: &str) -> Option<Vec<String>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.split(',').map(|u| u.trim().to_owned()).collect()),
        _ => {
            assert!(
                std::env::var("PULSEBEAM_REQUIRE_REDIS").as_deref() != Ok("1"),
                "{var} is not set but PULSEBEAM_REQUIRE_REDIS=1; run `eval \"$(scripts/redis.sh start)\"` first"
            );
            eprintln!(
                "SKIP {test}: {var} is not set; run `eval \"$(scripts/redis.sh start)\"` to test the Redis store"
            );
            None
        }
    }
}

/// A key prefix no other test or run uses.
fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{}-{nanos}-{}:{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn store_config(urls: &[String], cluster: bool, prefix: &str, ack_lease: Duration) -> StoreConfig {
    let mut config = StoreConfig::default();
    config.backend = StoreBackend::Redis;
    config.urls = urls.to_vec();
    config.cluster = cluster;
    config.key_prefix = prefix.to_owned();
    config.pool_size = 2;
    config.ack_lease_ms = u64::try_from(ack_lease.as_millis()).unwrap();
    config
}

/// Stores for one namespace share a prefix: they are nodes of one deployment.
fn factory(urls: Vec<String>, cluster: bool) -> Factory {
    let run = unique_prefix("conformance");
    Arc::new(move |setup: &Setup| {
        let prefix = format!("{run}:{}", setup.namespace);
        let config = store_config(&urls, cluster, &prefix, setup.ack_lease);
        Arc::new(RedisStore::new(&config, &setup.limits).unwrap()) as Arc<dyn MailboxStore>
    })
}

async fn wait_healthy(store: &dyn MailboxStore) {
    let start = Instant::now();
    while let Err(err) = store.health().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis not reachable: {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bob() -> PeerAddr<'static> {
    PeerAddr {
        project: "p",
        group: "g",
        peer: "bob",
    }
}

fn envelope(text: &'static str) -> Envelope {
    Envelope {
        src_group: Arc::from("g"),
        src_peer: Arc::from("alice"),
        message: Bytes::from_static(text.as_bytes()),
    }
}

const NOW: PollOptions = PollOptions {
    wait: Duration::ZERO,
    batch_window: Duration::ZERO,
    max_messages: 64,
    takeover: true,
    ack: None,
};

async fn run_conformance(urls: Vec<String>, cluster: bool) {
    let probe = factory(urls.clone(), cluster)(&Setup {
        namespace: "probe".into(),
        limits: Limits::default(),
        ack_lease: Duration::from_secs(1),
    });
    wait_healthy(&*probe).await;
    let failed = conformance::run_all(factory(urls, cluster)).await;
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_standalone_redis() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "conformance_on_standalone_redis",
    ) else {
        return;
    };
    run_conformance(urls, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_redis_cluster() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_CLUSTER_URLS",
        "conformance_on_redis_cluster",
    ) else {
        return;
    };
    run_conformance(urls, true).await;
}

/// Revocation stores for one namespace share a prefix, each on a connection of its own: nodes.
fn revocations_factory(urls: Vec<String>, cluster: bool) -> conformance::revocations::Factory {
    let run = unique_prefix("revocations");
    Arc::new(move |namespace: &str| {
        let prefix = format!("{run}:{namespace}");
        let config = store_config(&urls, cluster, &prefix, Duration::from_secs(5));
        let connection = RedisConnection::new(&config).unwrap();
        Arc::new(RedisRevocations::new(connection, &prefix)) as Arc<dyn RevocationStore>
    })
}

/// Usage stores for one namespace share a prefix, each on a connection of its own: nodes.
fn usage_factory(urls: Vec<String>, cluster: bool) -> conformance::usage::Factory {
    let run = unique_prefix("usage");
    Arc::new(move |namespace: &str| {
        let prefix = format!("{run}:{namespace}");
        let config = store_config(&urls, cluster, &prefix, Duration::from_secs(5));
        let connection = RedisConnection::new(&config).unwrap();
        Arc::new(RedisUsage::new(connection, &prefix)) as Arc<dyn UsageStore>
    })
}

/// Binding stores for one namespace share a prefix, each on a connection of its own: nodes.
fn bindings_factory(urls: Vec<String>, cluster: bool) -> conformance::bindings::Factory {
    let run = unique_prefix("bindings");
    Arc::new(move |namespace: &str| {
        let prefix = format!("{run}:{namespace}");
        let config = store_config(&urls, cluster, &prefix, Duration::from_secs(5));
        let connection = RedisConnection::new(&config).unwrap();
        Arc::new(RedisBindings::new(connection, &prefix)) as Arc<dyn BindingStore>
    })
}

async fn run_shared_conformance(urls: Vec<String>, cluster: bool) {
    let failed =
        conformance::revocations::run_all(revocations_factory(urls.clone(), cluster)).await;
    assert!(failed.is_empty(), "revocations failed: {failed:#?}");
    let failed = conformance::usage::run_all(usage_factory(urls.clone(), cluster)).await;
    assert!(failed.is_empty(), "usage failed: {failed:#?}");
    let failed = conformance::bindings::run_all(bindings_factory(urls, cluster)).await;
    assert!(failed.is_empty(), "bindings failed: {failed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_usage_conformance_on_standalone_redis() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "revocation_and_usage_conformance_on_standalone_redis",
    ) else {
        return;
    };
    run_shared_conformance(urls, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_usage_conformance_on_redis_cluster() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_CLUSTER_URLS",
        "revocation_and_usage_conformance_on_redis_cluster",
    ) else {
        return;
    };
    run_shared_conformance(urls, true).await;
}

/// A node that took messages and died before acknowledging them loses nothing: the
/// connection's next poll, on another node, takes them over at once, before newer mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_holding_mail_loses_nothing() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_node_that_dies_holding_mail_loses_nothing",
    ) else {
        return;
    };
    let lease = Duration::from_millis(600);
    let config = store_config(&urls, false, &unique_prefix("dies"), lease);
    let limits = Limits::default();
    let a = RedisStore::new(&config, &limits).unwrap();
    let b = RedisStore::new(&config, &limits).unwrap();
    wait_healthy(&a).await;
    b.deliver(bob(), 100, envelope("offer")).await.unwrap();
    b.deliver(bob(), 0, envelope("join")).await.unwrap();
    let taken = a.poll(bob(), 100, NOW).await.unwrap();
    assert_eq!(taken.messages.len(), 2);
    drop(a); // killed between taking the messages and writing them out
    b.deliver(bob(), 100, envelope("newer")).await.unwrap();
    let again = b.poll(bob(), 100, NOW).await.unwrap();
    assert_eq!(again.messages[..2], taken.messages);
    assert_eq!(again.messages[2..], [envelope("newer")]);
}

/// A free loopback port for a Redis of our own (cluster bus ports are not needed).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

struct OwnRedis {
    child: Child,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start(port: u16) -> Option<OwnRedis> {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--enable-debug-command", "local"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(OwnRedis { child, _dir: dir })
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// While Redis is down, calls answer `unavailable` quickly and health fails; when it is back the
/// store reconnects by itself and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_answers_unavailable_then_recovers() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "redis_going_away_answers_unavailable_then_recovers",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let url = vec![format!("redis://127.0.0.1:{port}")];
    let config = store_config(
        &url,
        false,
        &unique_prefix("outage"),
        Duration::from_secs(5),
    );
    let store = RedisStore::new(&config, &Limits::default()).unwrap();

    // Not there at all yet: refused within the command timeout, not hanging.
    let start = Instant::now();
    let err = store.deliver(bob(), 100, envelope("x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(store.health().await.is_err());

    let redis =
        OwnRedis::start(port).expect("redis-server is installed (scripts/redis.sh installs it)");
    wait_healthy(&store).await;
    store.deliver(bob(), 100, envelope("x")).await.unwrap();

    drop(redis);
    let start = Instant::now();
    let err = store.poll(bob(), 100, NOW).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(store.health().await.is_err());

    let _redis = OwnRedis::start(port).expect("redis-server restarts");
    wait_healthy(&store).await;
    // A fresh Redis (no persistence): the scripts are loaded again on NOSCRIPT.
    store.deliver(bob(), 100, envelope("y")).await.unwrap();
    let polled = store.poll(bob(), 100, NOW).await.unwrap();
    assert_eq!(polled.messages, [envelope("y")]);
}

/// A store owns its connections and tasks: dropping it closes every connection it opened
/// (its pooled clients and its wake-up subscriber), with no task left behind to hold one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_closes_its_connections() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_dropped_store_closes_its_connections",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let _redis = OwnRedis::start(port).expect("redis-server is installed");
    let url = vec![format!("redis://127.0.0.1:{port}")];
    let config = store_config(&url, false, &unique_prefix("drop"), Duration::from_secs(5));
    // Connections other than the redis-cli asking.
    let clients = || {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "client", "list"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("cmd=client|list"))
            .count()
    };
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    wait_healthy(&store).await;
    store.deliver(bob(), 100, envelope("x")).await.unwrap();
    assert_eq!(clients(), 3, "two pooled clients and the subscriber");
    drop(store);
    let start = Instant::now();
    while clients() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} connections still open",
            clients()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A poll of `bob:100` that finds nothing (and opens the connection, the first time).
async fn nothing_for_bob(store: &RedisStore) {
    let polled = store.poll(bob(), 100, NOW).await.unwrap();
    assert!(polled.messages.is_empty(), "{polled:?}");
}

/// A long-poll's wait: up to 10 s, then a batch window of 5 ms.
const WAIT: PollOptions = PollOptions {
    wait: Duration::from_secs(10),
    batch_window: Duration::from_millis(5),
    ..NOW
};

/// A poll of `bob:100` with `options` in a task of its own, registered once this returns.
async fn waiting_poll(
    receiver: &Arc<RedisStore>,
    options: PollOptions,
) -> tokio::task::JoinHandle<Polled> {
    let waiting = tokio::spawn({
        let receiver = Arc::clone(receiver);
        async move { receiver.poll(bob(), 100, options).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    waiting
}

/// A poll waits, a message arrives and wakes it, and the receiver acknowledges it.
async fn relay(receiver: &Arc<RedisStore>, sender: &RedisStore) {
    let waiting = waiting_poll(receiver, WAIT).await;
    sender.deliver(bob(), 100, envelope("offer")).await.unwrap();
    let polled = waiting.await.unwrap();
    assert_eq!(polled.messages, [envelope("offer")]);
    receiver
        .ack(bob(), 100, polled.receipt.unwrap())
        .await
        .unwrap();
}

/// The round trips of one relayed message, counted by Redis itself on a server of our own: the
/// sender's deliver, which hands the message to the waiting receiver in its wake-up, and the
/// acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_message_costs_two_round_trips() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_relayed_message_costs_two_round_trips",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let lease = Duration::from_millis(600);
    let (_redis, receiver, sender) = own_pair(port, "trips", lease).await;
    // The connection's first poll opens it (and takes a project budget unit): not counted.
    nothing_for_bob(&receiver).await;

    cli_at(port, &["config", "resetstat"]);
    relay(&receiver, &sender).await;
    // The client polls again at once.
    nothing_for_bob(&receiver).await;
    let stats = cli_at(port, &["info", "commandstats"]);
    let field = |command: &str, name: &str| stat(&stats, command, name);
    // deliver + ack for the message itself, and a begin for each of the two polls, each one
    // FCALL of the library's functions (the library was loaded by the first calls, before the
    // counters were reset).
    assert_eq!(field("fcall", "calls"), 4, "{stats}");
    assert_eq!(field("fcall", "failed_calls"), 0, "{stats}");
    // Each node counts its calls and the FCALLs that carried them (/metrics).
    let figures = receiver.stats().await.unwrap();
    assert!(figures.redis_fcalls >= 4, "{figures:?}");
    assert!(
        figures.redis_fcalls <= figures.redis_script_calls,
        "{figures:?}"
    );
    assert_eq!(field("function|load", "calls"), 0, "{stats}");
    assert_eq!(
        field("evalsha", "calls") + field("eval", "calls"),
        0,
        "{stats}"
    );
    // And the acknowledgement took effect: nothing comes back after the lease.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    nothing_for_bob(&receiver).await;
}

/// Delivers a node makes at the same moment go to Redis as one `FCALL`, which reads the clock
/// once, and the messages keep the order the node made the calls in. On one thread, so that
/// all ten calls are made before the task sending their batch runs.
#[tokio::test]
async fn delivers_made_together_are_one_fcall_with_one_clock_reading() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "delivers_made_together_are_one_fcall_with_one_clock_reading",
    )
    .is_none()
    {
        return;
    }
    const TEXTS: [&str; 10] = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"];
    let port = free_port();
    let (_redis, receiver, sender) = own_pair(port, "together", Duration::from_secs(5)).await;
    nothing_for_bob(&receiver).await;
    // The sender's first deliver loads nothing and opens nothing the ten below would.
    sender.deliver(bob(), 100, envelope("first")).await.unwrap();

    cli_at(port, &["config", "resetstat"]);
    let delivers = TEXTS.map(|text| sender.deliver(bob(), 100, envelope(text)));
    for delivered in futures_util::future::join_all(delivers).await {
        delivered.unwrap();
    }
    let stats = cli_at(port, &["info", "commandstats"]);
    assert_eq!(stat(&stats, "fcall", "calls"), 1, "{stats}");
    assert_eq!(stat(&stats, "time", "calls"), 1, "{stats}");
    // A call on its own after the batch reads the clock afresh.
    cli_at(port, &["config", "resetstat"]);
    sender.deliver(bob(), 100, envelope("last")).await.unwrap();
    let stats = cli_at(port, &["info", "commandstats"]);
    assert_eq!(stat(&stats, "time", "calls"), 1, "{stats}");

    let polled = receiver.poll(bob(), 100, NOW).await.unwrap();
    let mut expected = vec![envelope("first")];
    expected.extend(TEXTS.map(envelope));
    expected.push(envelope("last"));
    assert_eq!(polled.messages, expected);
}

/// On a stream the acknowledgement rides on the next poll: the sender's deliver (which hands
/// the message to the waiting poll) and the next poll's begin, which stores the acknowledgement
/// too; one call fewer than a long-poll's answer and the poll after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_relayed_to_a_stream_costs_one_call_fewer() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_message_relayed_to_a_stream_costs_one_call_fewer",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let lease = Duration::from_millis(600);
    let (_redis, receiver, sender) = own_pair(port, "stream", lease).await;
    nothing_for_bob(&receiver).await;
    let later = PollOptions {
        takeover: false,
        ..NOW
    };
    let waiting = waiting_poll(
        &receiver,
        PollOptions {
            wait: Duration::from_secs(10),
            ..later
        },
    )
    .await;
    cli_at(port, &["config", "resetstat"]);
    sender.deliver(bob(), 100, envelope("offer")).await.unwrap();
    let polled = waiting.await.unwrap();
    assert_eq!(polled.messages, [envelope("offer")]);
    let carrying = PollOptions {
        ack: polled.receipt,
        ..later
    };
    assert!(receiver
        .poll(bob(), 100, carrying)
        .await
        .unwrap()
        .messages
        .is_empty());
    let stats = cli_at(port, &["info", "commandstats"]);
    assert_eq!(stat(&stats, "fcall", "calls"), 2, "{stats}");
    assert_eq!(stat(&stats, "fcall", "failed_calls"), 0, "{stats}");
    // The carried acknowledgement took effect: nothing comes back, after the lease either.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    nothing_for_bob(&receiver).await;
}

/// A poll registered by a node of an older version, whose `begin` does not say it takes
/// messages in wake-ups (`x:c`), is woken with its key, as that node expects, and takes its
/// message: no message is handed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_of_an_older_node_is_woken_not_handed_a_message() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_poll_of_an_older_node_is_woken_not_handed_a_message",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let (_redis, receiver, sender) = own_pair(port, "older", Duration::from_millis(600)).await;
    nothing_for_bob(&receiver).await;
    let waiting = waiting_poll(&receiver, WAIT).await;
    // What an older node's begin leaves: the field it does not know about is not there.
    let hash = cli_at(port, &["--scan", "--pattern", "*{p:g:bob}:h"]);
    let hash = hash.trim();
    assert!(hash.ends_with(":h"), "{hash}");
    assert_eq!(cli_at(port, &["hdel", hash, "x:100"]).trim(), "1");
    cli_at(port, &["config", "resetstat"]);
    sender.deliver(bob(), 100, envelope("offer")).await.unwrap();
    let polled = waiting.await.unwrap();
    assert_eq!(polled.messages, [envelope("offer")]);
    let stats = cli_at(port, &["info", "commandstats"]);
    // The deliver and the poll's take: the message went through the mailbox, which the take
    // took whole (or popped).
    assert_eq!(stat(&stats, "fcall", "calls"), 2, "{stats}");
    assert_eq!(
        stat(&stats, "renamenx", "calls") + stat(&stats, "zpopmin", "calls"),
        1,
        "{stats}"
    );
    receiver
        .ack(bob(), 100, polled.receipt.unwrap())
        .await
        .unwrap();
}

/// A server configured with `[store] backend = "redis"` answers `/healthz` with 503 while Redis
/// is away (so load balancers drain it), counts the failure, and 200 once Redis is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_redis() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use pulsebeam_server::{Config, ProjectConfig, Server};
    use pulsebeam_token::KeyPair;
    use tower::ServiceExt as _;

    if urls("PULSEBEAM_TEST_REDIS_URL", "healthz_follows_redis").is_none() {
        return;
    }
    let port = free_port();
    let pair = KeyPair::generate().unwrap();
    let mut config = Config::default()
        .with_project(ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()));
    config.store = store_config(
        &[format!("redis://127.0.0.1:{port}")],
        false,
        &unique_prefix("healthz"),
        Duration::from_secs(5),
    );
    let server = Server::new(config).unwrap();
    let get = |path: &'static str| {
        let router = server.router();
        async move {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = get("/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains("pulsebeam_store_errors_total{op=\"health\"} 1"),
        "{metrics}"
    );
    let _redis = OwnRedis::start(port).expect("redis-server is installed");
    let start = Instant::now();
    loop {
        let (status, body) = get("/healthz").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `usec_per_call` of one command in `INFO commandstats` output.
fn usec_per_call(stats: &str, command: &str) -> (u64, f64) {
    (
        stat(stats, command, "calls"),
        stat_text(stats, command, "usec_per_call").map_or(0.0, |n| n.parse().unwrap()),
    )
}

/// A value of `INFO commandstats` (`field` of `command`), as Redis wrote it.
fn stat_text<'a>(stats: &'a str, command: &str, field: &str) -> Option<&'a str> {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
        .and_then(|rest| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        })
        .map(str::trim)
}

/// A count of `INFO commandstats` (`field` of `command`), 0 when the command never ran.
fn stat(stats: &str, command: &str, field: &str) -> u64 {
    stat_text(stats, command, field).map_or(0, |n| n.parse().unwrap())
}

/// A Redis server of the test's own on `port`, and two nodes of one deployment on it (keys
/// under a fresh prefix named after `name`, acknowledgement lease `lease`), both healthy: one to
/// receive, one to send.
async fn own_pair(
    port: u16,
    name: &str,
    lease: Duration,
) -> (OwnRedis, Arc<RedisStore>, RedisStore) {
    let redis = OwnRedis::start(port).expect("redis-server is installed");
    let url = vec![format!("redis://127.0.0.1:{port}")];
    let config = store_config(&url, false, &unique_prefix(name), lease);
    let limits = Limits::default();
    let receiver = Arc::new(RedisStore::new(&config, &limits).unwrap());
    let sender = RedisStore::new(&config, &limits).unwrap();
    wait_healthy(&*receiver).await;
    wait_healthy(&sender).await;
    (redis, receiver, sender)
}

/// What one store call costs Redis once a peer's eight connections hold full mailboxes of
/// 128 x 60 kB (what one token can send): `usec_per_call` of FCALL from `INFO commandstats`,
/// for refused deliveries to the full mailboxes and for a live connection of the same peer
/// (deliver, poll, ack), the full ones idle. A measurement for BENCHMARKS.md, not a test of speed:
/// `cargo test -p pulsebeam-server --test store_redis -- --ignored --nocapture script_cost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md; run it with --ignored --nocapture"]
async fn script_cost_with_full_mailboxes() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "script_cost_with_full_mailboxes",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let _redis = OwnRedis::start(port).expect("redis-server is installed");
    let url = vec![format!("redis://127.0.0.1:{port}")];
    let config = store_config(&url, false, &unique_prefix("cost"), Duration::from_secs(5));
    let mut limits = Limits::default();
    limits.max_connections_per_peer = 9;
    limits.message_ttl_secs = 300;
    let filler = RedisStore::new(&config, &limits).unwrap();
    // The measured node counts connections idle after 2 s, so the full ones are idle at once.
    limits.connection_idle_secs = 2;
    let store = RedisStore::new(&config, &limits).unwrap();
    wait_healthy(&store).await;
    wait_healthy(&filler).await;
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let big = Envelope {
        src_group: Arc::from("g"),
        src_peer: Arc::from("alice"),
        message: Bytes::from(vec![b'x'; 60_000]),
    };
    // The live connection polls first, so the full ones are never its eviction victims.
    assert!(store
        .poll(bob(), 16, NOW)
        .await
        .unwrap()
        .messages
        .is_empty());
    for conn in 100..108 {
        for _ in 0..limits.mailbox_capacity {
            filler.deliver(bob(), conn, big.clone()).await.unwrap();
        }
        assert!(matches!(
            filler.deliver(bob(), conn, big.clone()).await,
            Err(StoreError::MailboxFull { .. })
        ));
    }
    let rounds: u64 = 50;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cli(&["config", "resetstat"]);
    for i in 0..rounds {
        let conn = 100 + u32::try_from(i % 8).unwrap();
        let refused = store.deliver(bob(), conn, big.clone()).await;
        assert!(
            matches!(refused, Err(StoreError::MailboxFull { .. })),
            "{refused:?}"
        );
    }
    let (calls, refused) = usec_per_call(&cli(&["info", "commandstats"]), "fcall");
    assert_eq!(calls, rounds);
    cli(&["config", "resetstat"]);
    for _ in 0..rounds {
        store.deliver(bob(), 16, envelope("small")).await.unwrap();
        let polled = store.poll(bob(), 16, NOW).await.unwrap();
        assert_eq!(polled.messages.len(), 1);
        store.ack(bob(), 16, polled.receipt.unwrap()).await.unwrap();
    }
    // Let the last acknowledgement go out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (calls, live) = usec_per_call(&cli(&["info", "commandstats"]), "fcall");
    println!(
        "usec_per_call of FCALL with 8 full mailboxes of 128 x 60 kB: refused deliver {refused:.2}, \
         live connection of the same peer {live:.2} ({calls} calls)"
    );
}

/// A peer's hash (with its sequence counter) evicted or expired before its mailboxes: messages
/// sent after that still come after the ones waiting, in send order, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_survives_a_lost_sequence_counter() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "order_survives_a_lost_sequence_counter",
    ) else {
        return;
    };
    let prefix = unique_prefix("counter");
    let config = store_config(&urls, false, &prefix, Duration::from_secs(5));
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    wait_healthy(&store).await;
    store.deliver(bob(), 100, envelope("1")).await.unwrap();
    store.deliver(bob(), 0, envelope("2")).await.unwrap();
    store.deliver(bob(), 100, envelope("3")).await.unwrap();
    let out = Command::new("redis-cli")
        .args(["-u", &urls[0], "del", &format!("{prefix}:{{p:g:bob}}:h")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
    store.deliver(bob(), 0, envelope("4")).await.unwrap();
    store.deliver(bob(), 100, envelope("5")).await.unwrap();
    let polled = store.poll(bob(), 100, NOW).await.unwrap();
    let texts: Vec<_> = polled.messages.iter().map(|e| e.message.clone()).collect();
    assert_eq!(texts, ["1", "2", "3", "4", "5"].map(Bytes::from));
}

/// Redis stalls (`DEBUG SLEEP`) while a poll begins: the node gives up waiting and answers
/// `unavailable`, but Redis runs the script afterwards and reserves the messages for a poll
/// that will never answer. The connection's next poll gets them first, before newer mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_out_lost_to_a_stalled_redis_comes_first_to_the_next_poll() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_hand_out_lost_to_a_stalled_redis_comes_first_to_the_next_poll",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let _redis = OwnRedis::start(port).expect("redis-server is installed");
    let url = vec![format!("redis://127.0.0.1:{port}")];
    let config = store_config(&url, false, &unique_prefix("stall"), Duration::from_secs(5));
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    wait_healthy(&store).await;
    // The connection is open (a poll's budget unit taken): the next poll is one script.
    nothing_for_bob(&store).await;
    store.deliver(bob(), 100, envelope("m1")).await.unwrap();
    store.deliver(bob(), 100, envelope("m2")).await.unwrap();
    let sleeper = std::thread::spawn(move || {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "debug", "sleep", "3"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let lost = store.poll(bob(), 100, NOW).await;
    assert!(matches!(lost, Err(StoreError::Unavailable(_))), "{lost:?}");
    sleeper.join().unwrap();
    store.deliver(bob(), 100, envelope("m3")).await.unwrap();
    let polled = store.poll(bob(), 100, NOW).await.unwrap();
    assert_eq!(
        polled.messages,
        [envelope("m1"), envelope("m2"), envelope("m3")]
    );
}

/// `redis-cli -p port args…`, its output trimmed.
fn cli_at(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A peer's slot moves to another master of the Cluster (`CLUSTER SETSLOT` MIGRATING and
/// IMPORTING, `MIGRATE` of its keys, `SETSLOT NODE`) while its mail waits and a sender keeps
/// sending: the migration completes (no script created a key on the wrong node, which would
/// make `MIGRATE` fail with BUSYKEY), every send is accepted within a few retries, and every
/// accepted message arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_slot_migrates_under_sends_and_loses_nothing() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_CLUSTER_URLS",
        "a_peers_slot_migrates_under_sends_and_loses_nothing",
    ) else {
        return;
    };
    let ports: Vec<u16> = urls
        .iter()
        .map(|u| u.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let prefix = unique_prefix("reshard");
    // A peer of its own, so that its slot holds no other test's keys.
    let name = format!("mover-{}", prefix.len() + std::process::id() as usize);
    let peer = PeerAddr {
        project: "p",
        group: "g",
        peer: &name,
    };
    let config = store_config(&urls, true, &prefix, Duration::from_secs(5));
    let store = Arc::new(RedisStore::new(&config, &Limits::default()).unwrap());
    wait_healthy(&*store).await;
    // Mail waiting in a polled connection, a sender-opened one and the discovery queue.
    assert!(store
        .poll(peer, 100, NOW)
        .await
        .unwrap()
        .messages
        .is_empty());
    let text = |i: u32| Envelope {
        src_group: Arc::from("g"),
        src_peer: Arc::from("alice"),
        message: Bytes::from(i.to_string()),
    };
    let mut accepted = Vec::new();
    for i in 0..10 {
        store.deliver(peer, 100, text(i)).await.unwrap();
        accepted.push(i);
    }
    store.deliver(peer, 200, text(1000)).await.unwrap();

    let slot = cli_at(
        ports[0],
        &["cluster", "keyslot", &format!("{{p:g:{name}}}")],
    );
    let nodes = cli_at(ports[0], &["cluster", "nodes"]);
    let owner_of = |slot: u32| -> (String, u16) {
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in &fields[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if (lo.parse::<u32>().unwrap()..=hi.parse::<u32>().unwrap()).contains(&slot) {
                    return (fields[0].to_owned(), port);
                }
            }
        }
        panic!("no owner of slot {slot}: {nodes}");
    };
    let (source_id, source) = owner_of(slot.parse().unwrap());
    let (target_id, target) = nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[0] != source_id && f[2].contains("master"))
        .map(|f| {
            let port: u16 = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            (f[0].to_owned(), port)
        })
        .unwrap();

    // The sender: sends keep coming during the migration, each retried until accepted.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = tokio::spawn({
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        let name = name.clone();
        async move {
            let peer = PeerAddr {
                project: "p",
                group: "g",
                peer: &name,
            };
            let (mut sent, mut retries, mut worst) = (Vec::new(), 0u32, Duration::ZERO);
            let mut i = 10u32;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let mut tries = 0;
                loop {
                    match store.deliver(peer, 100, text(i)).await {
                        Ok(()) => break,
                        Err(StoreError::Unavailable(why)) if tries < 50 => {
                            tries += 1;
                            retries += 1;
                            eprintln!("retrying a send during the migration: {why}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(err) => panic!("a send failed during the migration: {err}"),
                    }
                }
                worst = worst.max(start.elapsed());
                sent.push(i);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (sent, retries, worst)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let source_s = source.to_string();
    let target_s = target.to_string();
    assert_eq!(
        cli_at(
            target,
            &["cluster", "setslot", &slot, "importing", &source_id]
        ),
        "OK"
    );
    assert_eq!(
        cli_at(
            source,
            &["cluster", "setslot", &slot, "migrating", &target_id]
        ),
        "OK"
    );
    // Calls meet the slot half-way for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    loop {
        let keys = cli_at(source, &["cluster", "getkeysinslot", &slot, "100"]);
        if keys.is_empty() {
            break;
        }
        let mut args = vec!["migrate", "127.0.0.1", &target_s, "", "0", "5000", "keys"];
        args.extend(keys.lines());
        let migrated = cli_at(source, &args);
        assert!(
            migrated == "OK" || migrated == "NOKEY",
            "MIGRATE failed: {migrated}"
        );
    }
    for port in &ports {
        let _ = cli_at(*port, &["cluster", "setslot", &slot, "node", &target_id]);
    }
    let _ = source_s;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, retries, worst) = sender.await.unwrap();
    accepted.extend(sent);
    assert_eq!(owner_of_now(ports[0], &slot), target_id);

    let mut got = Vec::new();
    loop {
        let polled = store.poll(peer, 100, NOW).await;
        let polled = match polled {
            Ok(polled) => polled,
            Err(err) => {
                eprintln!("after the migration: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(receipt) = polled.receipt else { break };
        got.extend(
            polled
                .messages
                .iter()
                .map(|e| String::from_utf8_lossy(&e.message).parse::<u32>().unwrap()),
        );
        store.ack(peer, 100, receipt).await.unwrap();
    }
    assert_eq!(got, accepted);
    let other = store.poll(peer, 200, NOW).await.unwrap();
    assert_eq!(other.messages, [text(1000)]);
    eprintln!(
        "slot {slot} moved from {source} to {target}: {} messages accepted, 0 lost, \
         {retries} retried sends, longest send {worst:?}",
        accepted.len()
    );
}

/// The id of the master that serves `slot` now, as the node at `port` sees it.
fn owner_of_now(port: u16, slot: &str) -> String {
    let slot: u32 = slot.parse().unwrap();
    let nodes = cli_at(port, &["cluster", "nodes"]);
    nodes
        .lines()
        .find(|line| {
            line.split_whitespace().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                lo.parse::<u32>().is_ok_and(|lo| lo <= slot)
                    && hi.parse::<u32>().is_ok_and(|hi| slot <= hi)
            })
        })
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_default()
}
