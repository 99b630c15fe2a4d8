//! Redis Sentinel: a node finds the master through the sentinels and follows a failover
//! (the Sentinel set of `scripts/redis.sh start`: `PULSEBEAM_TEST_REDIS_SENTINEL_*`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pulsebeam_server::store::{Envelope, PeerAddr, PollOptions};
use pulsebeam_server::{Limits, MailboxStore, RedisStore, SentinelConfig, StoreConfig};

use crate::common::{cli, store_config, unique_prefix};

/// The sentinels' addresses and the master's name, or `None` after a SKIP line (a failure
/// with `PULSEBEAM_REQUIRE_REDIS=1`).
fn sentinel_env(test: &str) -> Option<(Vec<String>, String)> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (
        get("PULSEBEAM_TEST_REDIS_SENTINEL_ADDRS"),
        get("PULSEBEAM_TEST_REDIS_SENTINEL_MASTER"),
    ) {
        (Some(addrs), Some(master)) => Some((
            addrs.split(',').map(|a| a.trim().to_owned()).collect(),
            master,
        )),
        _ => {
            assert!(
                std::env::var("PULSEBEAM_REQUIRE_REDIS").as_deref() != Ok("1"),
                "PULSEBEAM_TEST_REDIS_SENTINEL_* are not set but PULSEBEAM_REQUIRE_REDIS=1; run `eval \"$(scripts/redis.sh start)\"` first"
            );
            eprintln!("SKIP {test}: PULSEBEAM_TEST_REDIS_SENTINEL_ADDRS is not set; run `eval \"$(scripts/redis.sh start)\"`");
            None
        }
    }
}

/// A `[store]` through the sentinels.
pub fn sentinel_store(addresses: &[String], master: &str, prefix: &str) -> StoreConfig {
    let mut config = store_config(&[], prefix);
    config.sentinel = Some(SentinelConfig::new(master, addresses.to_vec()));
    config
}

/// The port of the master the sentinel at `address` names.
pub fn master_port(address: &str, master: &str) -> String {
    let port = address.rsplit_once(':').unwrap().1.parse().unwrap();
    let out = cli(port, &["sentinel", "get-master-addr-by-name", master]);
    out.lines().nth(1).unwrap_or_default().trim().to_owned()
}

/// Asks the sentinel at `address` to fail `master` over, until it accepts (it needs to have
/// found the replica first, which takes it up to ten seconds after it starts).
pub async fn fail_over(address: &str, master: &str) {
    let port = address.rsplit_once(':').unwrap().1.parse().unwrap();
    let start = Instant::now();
    loop {
        let out = cli(port, &["sentinel", "failover", master]);
        if out.contains("OK") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the sentinel refuses to fail over: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn bob() -> PeerAddr<'static> {
    PeerAddr {
        project: "main",
        group: "g",
        peer: "bob",
    }
}

fn envelope(n: u32) -> Envelope {
    Envelope {
        src_group: Arc::from("g"),
        src_peer: Arc::from("alice"),
        message: Bytes::from(n.to_string()),
    }
}

const NOW: PollOptions = PollOptions {
    wait: Duration::ZERO,
    batch_window: Duration::ZERO,
    max_messages: 64,
    takeover: true,
};

/// A node on Sentinel serves; the master is failed over while it sends; it follows the new
/// master by itself and every message sent after that is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_a_sentinel_failover_and_keeps_serving() {
    let Some((addresses, master)) =
        sentinel_env("a_node_follows_a_sentinel_failover_and_keeps_serving")
    else {
        return;
    };
    let config = sentinel_store(&addresses, &master, &unique_prefix("sentinel"));
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    let start = Instant::now();
    while let Err(err) = store.health().await {
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.deliver(bob(), 100, envelope(0)).await.unwrap();
    assert_eq!(
        store.poll(bob(), 100, NOW).await.unwrap().messages,
        [envelope(0)]
    );

    let before = master_port(&addresses[0], &master);
    fail_over(&addresses[0], &master).await;
    // Sends go on; some may answer `unavailable` while the master changes.
    let start = Instant::now();
    let mut n = 0;
    let mut refused = 0;
    loop {
        n += 1;
        let sent = store.deliver(bob(), 100, envelope(n)).await;
        let moved = master_port(&addresses[0], &master) != before;
        if sent.is_ok() && moved {
            break;
        }
        if sent.is_err() {
            refused += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no send accepted on the new master within 30 s ({refused} refused)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Serving on the new master: what is sent now arrives.
    let last = n + 1;
    store.deliver(bob(), 100, envelope(last)).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    while !got.contains(&envelope(last)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the message sent after the failover did not arrive: {got:?}"
        );
        let polled = store.poll(bob(), 100, NOW).await.unwrap();
        if let Some(receipt) = polled.receipt {
            store.ack(bob(), 100, receipt).await.unwrap();
        }
        got.extend(polled.messages);
    }
}

/// With `store.wait_replicas = 1` a delivery is accepted once a replica has it; with no
/// replica it answers `unavailable`, naming the setting, instead of accepting what a failover
/// could lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_waits_for_a_replica_when_asked_to() {
    let Some((addresses, master)) = sentinel_env("a_send_waits_for_a_replica_when_asked_to") else {
        return;
    };
    let mut config = sentinel_store(&addresses, &master, &unique_prefix("wait"));
    config.wait_replicas = 1;
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    let start = Instant::now();
    while let Err(err) = store.health().await {
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The replica may still be syncing after a failover of another test.
    let start = Instant::now();
    while let Err(err) = store.deliver(bob(), 100, envelope(1)).await {
        assert!(start.elapsed() < Duration::from_secs(20), "{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A standalone Redis has no replica.
    let redis = crate::common::OwnRedis::start(&[]);
    let mut alone = store_config(&[redis.url()], &unique_prefix("wait-alone"));
    alone.wait_replicas = 1;
    alone.wait_timeout_ms = 50;
    let store = RedisStore::new(&alone, &Limits::default()).unwrap();
    let start = Instant::now();
    while store.health().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = store.deliver(bob(), 100, envelope(2)).await.unwrap_err();
    assert!(err.to_string().contains("store.wait_replicas"), "{err}");
}
