//! Redis Sentinel: a node finds the master through the sentinels and follows a failover
//! (the Sentinel set of `scripts/redis.sh start`: `PULSEBEAM_TEST_REDIS_SENTINEL_*`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pulsebeam_server::store::{Envelope, PeerAddr};
use pulsebeam_server::{Limits, MailboxStore, RedisStore, SentinelConfig, StoreConfig};

use std::process::Command;

use crate::common::{store_config, unique_prefix, NOW};

/// The Sentinel set of `scripts/redis.sh`: its sentinels, the master's name, and the passwords
/// of the data servers and of the sentinel (they differ, as they may in a deployment).
struct SentinelSet {
    addresses: Vec<String>,
    master: String,
    data_password: String,
    sentinel_password: String,
}

impl SentinelSet {
    /// From `PULSEBEAM_TEST_REDIS_SENTINEL_*`, or `None` after a SKIP line (a failure with
    /// `PULSEBEAM_REQUIRE_REDIS=1`).
    fn from_env(test: &str) -> Option<SentinelSet> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (
            get("PULSEBEAM_TEST_REDIS_SENTINEL_ADDRS"),
            get("PULSEBEAM_TEST_REDIS_SENTINEL_MASTER"),
            get("PULSEBEAM_TEST_REDIS_SENTINEL_DATA_PASSWORD"),
            get("PULSEBEAM_TEST_REDIS_SENTINEL_PASSWORD"),
        ) {
            (Some(addrs), Some(master), Some(data_password), Some(sentinel_password)) => {
                Some(SentinelSet {
                    addresses: addrs.split(',').map(|a| a.trim().to_owned()).collect(),
                    master,
                    data_password,
                    sentinel_password,
                })
            }
            _ => {
                assert!(
                    std::env::var("PULSEBEAM_REQUIRE_REDIS").as_deref() != Ok("1"),
                    "PULSEBEAM_TEST_REDIS_SENTINEL_* are not set but PULSEBEAM_REQUIRE_REDIS=1; run `eval \"$(scripts/redis.sh start)\"` first"
                );
                eprintln!("SKIP {test}: PULSEBEAM_TEST_REDIS_SENTINEL_* are not set; run `eval \"$(scripts/redis.sh start)\"`");
                None
            }
        }
    }

    /// A `[store]` through these sentinels, with both passwords.
    fn store(&self, prefix: &str) -> StoreConfig {
        let mut config = store_config(
            &[format!("redis://:{}@127.0.0.1", self.data_password)],
            prefix,
        );
        config.sentinel = Some(
            SentinelConfig::new(&self.master, self.addresses.clone())
                .with_auth(None, &self.sentinel_password),
        );
        config
    }

    /// `redis-cli` to the first sentinel.
    fn cli(&self, args: &[&str]) -> String {
        let port = self.addresses[0].rsplit_once(':').unwrap().1;
        let out = Command::new("redis-cli")
            .env("REDISCLI_AUTH", &self.sentinel_password)
            .args(["-p", port])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the master the sentinel names now.
    fn master_port(&self) -> String {
        let out = self.cli(&["sentinel", "get-master-addr-by-name", &self.master]);
        out.lines().nth(1).unwrap_or_default().trim().to_owned()
    }

    /// Asks the sentinel to fail the master over, until it accepts (it needs to have found
    /// the replica first, which takes it up to ten seconds after it starts).
    async fn fail_over(&self) {
        let start = Instant::now();
        loop {
            let out = self.cli(&["sentinel", "failover", &self.master]);
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
}

/// A `[store]` through the sentinels at `addresses`, which take no password.
pub fn sentinel_store(addresses: &[String], master: &str, prefix: &str) -> StoreConfig {
    let mut config = store_config(&[], prefix);
    config.sentinel = Some(SentinelConfig::new(master, addresses.to_vec()));
    config
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

/// A node on Sentinel serves; the master is failed over while it sends; it follows the new
/// master by itself and every message sent after that is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_a_sentinel_failover_and_keeps_serving() {
    let Some(set) = SentinelSet::from_env("a_node_follows_a_sentinel_failover_and_keeps_serving")
    else {
        return;
    };
    let config = set.store(&unique_prefix("sentinel"));
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

    let before = set.master_port();
    set.fail_over().await;
    // Sends go on; some may answer `unavailable` while the master changes.
    let start = Instant::now();
    let mut n = 0;
    let mut refused = 0;
    loop {
        n += 1;
        let sent = store.deliver(bob(), 100, envelope(n)).await;
        let moved = set.master_port() != before;
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
    let Some(set) = SentinelSet::from_env("a_send_waits_for_a_replica_when_asked_to") else {
        return;
    };
    let mut config = set.store(&unique_prefix("wait"));
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

/// The sentinels' password is their own: a node without it, or with the data servers' in its
/// place, cannot reach them and says why in its health (the connection error, never a
/// password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_that_require_a_password_of_their_own_get_it() {
    let Some(set) = SentinelSet::from_env("sentinels_that_require_a_password_of_their_own_get_it")
    else {
        return;
    };
    for (what, sentinel_password) in [
        ("no sentinel password", None),
        (
            "the data password for the sentinels",
            Some(set.data_password.clone()),
        ),
    ] {
        let mut config = set.store(&unique_prefix("sentinel-auth"));
        let sentinel = config.sentinel.as_mut().unwrap();
        sentinel.password = sentinel_password;
        let store = RedisStore::new(&config, &Limits::default()).unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let err = store.health().await.expect_err(what);
        eprintln!("{what}: {err}");
        let text = err.to_string();
        assert!(text.contains("connecting failed: "), "{what}: {text}");
        assert!(!text.contains(&set.data_password), "{text}");
        assert!(!text.contains(&set.sentinel_password), "{text}");
    }
    let store = RedisStore::new(
        &set.store(&unique_prefix("sentinel-auth")),
        &Limits::default(),
    )
    .unwrap();
    let start = Instant::now();
    while let Err(err) = store.health().await {
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
