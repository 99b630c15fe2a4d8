//! TURN relay bytes from coturn's statistics in a real Redis (`[usage] turn_stats_url`): reports
//! shaped as Debian's coturn publishes them are counted for the project their username names, on
//! `/metrics` and in the admin API's hourly totals, and two nodes reading one Redis count every
//! report once, also when the lease key vanishes and the other node takes over.
//!
//! Needs `PULSEBEAM_TEST_REDIS_URL` (`eval "$(scripts/redis.sh start)"`) and `redis-cli`; without
//! them these tests print a SKIP line and pass, unless `PULSEBEAM_REQUIRE_REDIS=1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pulsebeam_server::{serve, serve_admin, AdminConfig, Config, ProjectConfig, Server};
use pulsebeam_token::KeyPair;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;

/// A Redis of a test's own (the Redis operations tests' helper).
#[path = "redis_ops/common.rs"]
#[allow(dead_code)]
mod common;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

fn redis_url(test: &str) -> Option<String> {
    match std::env::var("PULSEBEAM_TEST_REDIS_URL") {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            assert!(
                std::env::var("PULSEBEAM_REQUIRE_REDIS").as_deref() != Ok("1"),
                "PULSEBEAM_TEST_REDIS_URL is not set but PULSEBEAM_REQUIRE_REDIS=1; run `eval \"$(scripts/redis.sh start)\"` first"
            );
            eprintln!("SKIP {test}: PULSEBEAM_TEST_REDIS_URL is not set; run `eval \"$(scripts/redis.sh start)\"`");
            None
        }
    }
}

/// A lease key and a realm no other test or run uses.
fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{}-{nanos}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes as coturn does, with `redis-cli`.
fn publish(url: &str, channel: &str, message: &str) {
    let out = Command::new("redis-cli")
        .args(["-u", url, "publish", channel, message])
        .output()
        .expect("redis-cli runs (apt-get install redis-tools)");
    assert!(out.status.success(), "{out:?}");
}

struct Node {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn start(url: &str, lease_key: &str) -> Node {
        let pair = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let mut config = Config::default()
            .with_project(ProjectConfig::new("acme").with_key(pair.api_key(), &pair.public_key()))
            .with_project(
                ProjectConfig::new("other").with_key(other.api_key(), &other.public_key()),
            );
        config.usage.turn_stats_url = Some(url.to_owned());
        config.usage.turn_stats_lease_key = lease_key.to_owned();
        let hash = hex::encode(sha2::Sha256::digest(ADMIN_TOKEN.as_bytes()));
        config.admin = Some(AdminConfig::new("127.0.0.1:0".parse().unwrap(), hash));
        let server = Server::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (admin_stop, admin_stopped) = oneshot::channel::<()>();
        tokio::spawn(serve_admin(admin_listener, server.clone(), async {
            let _ = admin_stopped.await;
        }));
        let task = tokio::spawn(serve(listener, server, async move {
            let _ = stopped.await;
            let _ = admin_stop.send(());
        }));
        Node {
            addr,
            admin,
            stop: Some(stop),
            task,
        }
    }

    async fn metrics(&self) -> String {
        get(self.addr, "/metrics", None).await
    }

    async fn metric(&self, line_start: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

async fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < end, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn traffic(realm: &str, username: &str, id: u32, rcvb: u64, sentb: u64) -> (String, String) {
    (
        format!("turn/realm/{realm}/user/{username}/allocation/{id:018}/traffic"),
        format!("rcvp=10, rcvb={rcvb}, sentp=10, sentb={sentb}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_reports_are_counted_for_their_project_once_on_two_nodes() {
    let Some(url) = redis_url("coturn_reports_are_counted_for_their_project_once_on_two_nodes")
    else {
        return;
    };
    let lease = unique("lease");
    let realm = unique("realm");
    let a = Node::start(&url, &lease).await;
    let b = Node::start(&url, &lease).await;
    let leader = "pulsebeam_turn_stats_leader ";
    wait_until("one node leads", async || {
        a.metric(leader).await + b.metric(leader).await == 1
    })
    .await;

    // Deltas as coturn sends them; the totals and the peer side must not be added again.
    let user = "1796310368:acme/room/alice";
    let mut expected = 0;
    for (id, rcvb, sentb) in [(1, 311_076, 310_620), (1, 1_000, 2_000), (2, 5, 7)] {
        let (channel, message) = traffic(&realm, user, id, rcvb, sentb);
        publish(&url, &channel, &message);
        expected += rcvb + sentb;
    }
    let base = format!("turn/realm/{realm}/user/{user}/allocation/000000000000000001");
    publish(
        &url,
        &format!("{base}/traffic/peer"),
        "rcvp=1, rcvb=999, sentp=1, sentb=999",
    );
    publish(
        &url,
        &format!("{base}/total_traffic"),
        "rcvp=1, rcvb=999, sentp=1, sentb=999",
    );
    publish(&url, &format!("{base}/status"), "deleted");
    // Another project's, and one no node knows.
    let (channel, message) = traffic(&realm, "1796310368:other/g/bob", 3, 40, 2);
    publish(&url, &channel, &message);
    let (channel, message) = traffic(&realm, "1796310368:stranger/g/eve", 4, 1, 1);
    publish(&url, &channel, &message);
    // Bodies that are not traffic reports are counted as malformed, not as bytes.
    let (channel, _) = traffic(&realm, user, 5, 0, 0);
    publish(&url, &channel, "rcvp=1, rcvb=lots");

    let acme = "pulsebeam_project_turn_relay_bytes_total{project=\"acme\"} ";
    let other = "pulsebeam_project_turn_relay_bytes_total{project=\"other\"} ";
    let malformed = "pulsebeam_turn_stats_reports_total{outcome=\"malformed\"} ";
    wait_until(
        "the malformed report, published last, is read",
        async || a.metric(malformed).await + b.metric(malformed).await == 1,
    )
    .await;
    assert_eq!(a.metric(acme).await + b.metric(acme).await, expected);
    assert_eq!(a.metric(other).await + b.metric(other).await, 42);
    let unknown = "pulsebeam_turn_stats_reports_total{outcome=\"unknown_project\"} ";
    assert_eq!(a.metric(unknown).await + b.metric(unknown).await, 1);
    let counted = "pulsebeam_turn_stats_reports_total{outcome=\"counted\"} ";
    assert_eq!(a.metric(counted).await + b.metric(counted).await, 4);

    // The leader's hourly totals say the same.
    let lead = if a.metric(leader).await == 1 { &a } else { &b };
    let usage = get(
        lead.admin,
        "/admin/v1/usage?project=acme&hours=2",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(
        usage.contains(&format!("\"turn_relay_bytes\":{expected}")),
        "{usage}"
    );

    // The leader stops and gives the lease up; the other node takes over and counts alone.
    let (lead, rest) = if a.metric(leader).await == 1 {
        (a, b)
    } else {
        (b, a)
    };
    lead.stop().await;
    wait_until("the other node takes over", async || {
        rest.metric(leader).await == 1
    })
    .await;
    let before = rest.metric(acme).await;
    let (channel, message) = traffic(&realm, user, 6, 100, 23);
    publish(&url, &channel, &message);
    wait_until("the new leader counts", async || {
        rest.metric(acme).await == before + 123
    })
    .await;
    rest.stop().await;
}

/// The lease key vanishes (a flush, a failover to a replica without it) and the other node
/// takes the lease while the old holder still believes it holds it: the old holder does not
/// count what it read since its last renewal, so no report is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_vanished_does_not_count_with_the_next() {
    if redis_url("a_leader_whose_lease_vanished_does_not_count_with_the_next").is_none() {
        return;
    }
    // A Redis of its own: nodes read every realm's reports, so the other test's nodes would
    // count these.
    let own = common::OwnRedis::start(&[]);
    let url = own.url();
    let lease = unique("lease");
    let realm = unique("realm");
    let leader = "pulsebeam_turn_stats_leader ";
    let old = Node::start(&url, &lease).await;
    wait_until("the first node leads", async || {
        old.metric(leader).await == 1
    })
    .await;
    // Half a renewal period later, so that the two renew at different times and the second
    // can find the key free while the first still believes it holds it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let next = Node::start(&url, &lease).await;

    // Reports flow all along; the key is deleted until the other node has taken the lease.
    let user = "1796310368:acme/room/alice";
    let mut published = 0u64;
    let mut id = 0u32;
    let mut publish_one = || {
        id += 1;
        let (channel, message) = traffic(&realm, user, id, 1, 0);
        publish(&url, &channel, &message);
        published += 1;
    };
    let start = Instant::now();
    while next.metric(leader).await == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no takeover");
        let out = Command::new("redis-cli")
            .args(["-u", &url, "del", &lease])
            .output()
            .unwrap();
        assert!(out.status.success());
        publish_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old holder goes on believing until its next renewal (at most 3 s).
    let overlap = Instant::now();
    while overlap.elapsed() < Duration::from_secs(4) {
        publish_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both renew (counting what they held back) before the totals are read.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let acme = "pulsebeam_project_turn_relay_bytes_total{project=\"acme\"} ";
    let counted = old.metric(acme).await + next.metric(acme).await;
    let fenced = "pulsebeam_turn_stats_reports_total{outcome=\"fenced\"} ";
    assert!(
        counted <= published,
        "{counted} bytes counted of {published} published: counted twice"
    );
    assert!(
        old.metric(fenced).await >= 1,
        "the old holder held nothing back"
    );
    assert!(counted > 0, "nothing counted");
}
