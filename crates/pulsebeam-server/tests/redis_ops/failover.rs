//! Failover figures (run by hand, printed, not asserted: the machine is shared and noisy):
//!
//! ```text
//! eval "$(scripts/redis.sh start)"
//! cargo test -p pulsebeam-server --test redis_ops failover -- --ignored --nocapture
//! ```
//!
//! A Sentinel set of its own (a master, two replicas in sync, one sentinel with
//! `down-after-milliseconds 1000`), one sender sending about 200 messages a second to one
//! receiver that polls and acknowledges; after 3 s the master is killed (SIGKILL). Reported: how
//! long no send was accepted, messages accepted and lost, duplicates; without and with
//! `store.wait_replicas = 1`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pulsebeam_server::store::{Envelope, PeerAddr, PollOptions};
use pulsebeam_server::{Limits, MailboxStore, RedisStore};

use crate::common::{
    cli, cluster_ports, create_cluster, free_port, redis_available, spawn_cluster_node,
    unique_prefix, wait_pong,
};
use crate::sentinel::sentinel_store;

/// A master, its two replicas and a sentinel, killed when dropped.
struct SentinelSet {
    master: u16,
    sentinel: u16,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    fn start() -> SentinelSet {
        let dir = tempfile::tempdir().unwrap();
        let (master, sentinel) = (free_port(), free_port());
        let replicas = [free_port(), free_port()];
        let server = |port: u16, extra: &[&str]| {
            let sub = dir.path().join(port.to_string());
            std::fs::create_dir_all(&sub).unwrap();
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&sub)
                .args(extra)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut children = vec![server(master, &[])];
        wait_pong(master);
        for replica in replicas {
            children.push(server(
                replica,
                &["--replicaof", "127.0.0.1", &master.to_string()],
            ));
            wait_pong(replica);
        }
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor m 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds m 1000\n\
                 sentinel failover-timeout m 5000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        children.push(
            Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_pong(sentinel);
        // The replicas in sync, and the sentinel knowing them (through the master's INFO,
        // within ten seconds).
        let start = Instant::now();
        loop {
            let info = cli(master, &["info", "replication"]);
            let known = cli(sentinel, &["sentinel", "replicas", "m"]);
            if info.matches("state=online").count() == 2
                && replicas.iter().all(|r| known.contains(&r.to_string()))
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "replicas not ready: {info}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        SentinelSet {
            master,
            sentinel,
            children,
            _dir: dir,
        }
    }

    fn kill_master(&mut self) {
        // The master is the first child.
        let _ = self.children[0].kill();
        let _ = self.children[0].wait();
        assert!(cli(self.master, &["ping"]).is_empty());
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bob() -> PeerAddr<'static> {
    PeerAddr {
        project: "main",
        group: "g",
        peer: "bob",
    }
}

/// What one run measured.
#[derive(Debug)]
struct Figures {
    accepted: usize,
    refused: usize,
    lost: usize,
    duplicates: usize,
    unavailable: Duration,
}

/// Something whose master can be killed.
trait Killable {
    fn kill_master(&mut self);
}

impl Killable for SentinelSet {
    fn kill_master(&mut self) {
        SentinelSet::kill_master(self);
    }
}

async fn measure(wait_replicas: u32) -> Figures {
    let set = SentinelSet::start();
    let sentinels = vec![format!("127.0.0.1:{}", set.sentinel)];
    let mut config = sentinel_store(&sentinels, "m", &unique_prefix("failover"));
    config.wait_replicas = wait_replicas;
    measure_on(set, config).await
}

async fn measure_on(mut set: impl Killable, config: pulsebeam_server::StoreConfig) -> Figures {
    let mut limits = Limits::default();
    limits.mailbox_capacity = 4_096;
    let sender = RedisStore::new(&config, &limits).unwrap();
    let receiver = Arc::new(RedisStore::new(&config, &limits).unwrap());
    let start = Instant::now();
    while sender.health().await.is_err() || receiver.health().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = tokio::spawn({
        let (receiver, received, stop) = (
            Arc::clone(&receiver),
            Arc::clone(&received),
            Arc::clone(&stop),
        );
        async move {
            let wait = PollOptions {
                wait: Duration::from_millis(500),
                batch_window: Duration::ZERO,
                max_messages: 256,
                takeover: true,
                ack: None,
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match receiver.poll(bob(), 100, wait).await {
                    Ok(polled) => {
                        {
                            let mut seen = received.lock().unwrap();
                            for m in &polled.messages {
                                let n: u32 =
                                    std::str::from_utf8(&m.message).unwrap().parse().unwrap();
                                *seen.entry(n).or_default() += 1;
                            }
                        }
                        if let Some(receipt) = polled.receipt {
                            let _ = receiver.ack(bob(), 100, receipt).await;
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    });

    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut last_ok = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let began = Instant::now();
    let mut killed = false;
    let mut n = 0u32;
    while began.elapsed() < Duration::from_secs(20) {
        if !killed && began.elapsed() > Duration::from_secs(3) {
            set.kill_master();
            killed = true;
        }
        n += 1;
        let envelope = Envelope {
            src_group: Arc::from("g"),
            src_peer: Arc::from("alice"),
            message: Bytes::from(n.to_string()),
        };
        match sender.deliver(bob(), 100, envelope).await {
            Ok(()) => {
                longest_gap = longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
                accepted.push(n);
            }
            Err(err) => {
                if refused == 0 {
                    println!(
                        "first refusal, after {:.1} s: {err}",
                        began.elapsed().as_secs_f64()
                    );
                }
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the receiver drain what is left (and what the ack lease hands out again).
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = polling.await;
    let seen = received.lock().unwrap();
    Figures {
        accepted: accepted.len(),
        refused,
        lost: accepted.iter().filter(|n| !seen.contains_key(n)).count(),
        duplicates: seen.values().map(|c| c - 1).sum(),
        unavailable: longest_gap,
    }
}

/// Kills a Sentinel master under relay load, without and with `store.wait_replicas = 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
async fn failover_figures_of_sentinel() {
    if !redis_available("failover_figures_of_sentinel") {
        return;
    }
    for wait in [0, 1] {
        let f = measure(wait).await;
        println!(
            "sentinel, wait_replicas = {wait}: unavailable {:.1} s, accepted {}, refused {}, lost {}, duplicates {}",
            f.unavailable.as_secs_f64(),
            f.accepted,
            f.refused,
            f.lost,
            f.duplicates
        );
    }
}

/// Three masters with a replica each, killed when dropped; `kill_master` kills the master of
/// the slot of bob's keys.
struct ClusterSet {
    ports: Vec<u16>,
    children: Vec<(u16, Child)>,
    prefix: String,
    _dir: tempfile::TempDir,
}

impl ClusterSet {
    fn start(prefix: &str) -> ClusterSet {
        let dir = tempfile::tempdir().unwrap();
        let ports = cluster_ports(6);
        let extra = [
            "--cluster-node-timeout",
            "1000",
            "--repl-diskless-sync-delay",
            "0",
        ];
        let children = ports
            .iter()
            .map(|port| (*port, spawn_cluster_node(dir.path(), *port, &extra)))
            .collect();
        create_cluster(&ports, 1);
        let start = Instant::now();
        loop {
            let info = cli(ports[0], &["cluster", "info"]);
            let replicas_online = ports
                .iter()
                .filter(|p| cli(**p, &["info", "replication"]).contains("master_link_status:up"))
                .count();
            if info.contains("cluster_state:ok") && replicas_online == 3 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cluster not ready: {info}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ClusterSet {
            ports,
            children,
            prefix: prefix.to_owned(),
            _dir: dir,
        }
    }
}

impl Killable for ClusterSet {
    fn kill_master(&mut self) {
        // Any key of bob's hash tag names the slot: `prefix:{p:g:bob}:h`.
        let key = format!("{}:{{main:g:bob}}:h", self.prefix);
        let slot = cli(self.ports[0], &["cluster", "keyslot", &key]);
        let slot: u32 = slot.trim().parse().unwrap();
        let nodes = cli(self.ports[0], &["cluster", "nodes"]);
        let owner = nodes
            .lines()
            .filter(|l| l.contains("master"))
            .find(|l| {
                l.split_whitespace().skip(8).any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    match (a.parse::<u32>(), b.parse::<u32>()) {
                        (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                        _ => false,
                    }
                })
            })
            .unwrap();
        let port: u16 = owner
            .split_whitespace()
            .nth(1)
            .unwrap()
            .split(['@', ':'])
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let (_, child) = self.children.iter_mut().find(|(p, _)| *p == port).unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ClusterSet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills the master of the shard holding the receiver's keys in a 3 + 3 Redis Cluster under
/// relay load (`cluster-node-timeout 1000`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
async fn failover_figures_of_cluster() {
    if !redis_available("failover_figures_of_cluster") {
        return;
    }
    let prefix = unique_prefix("cluster-failover");
    let set = ClusterSet::start(&prefix);
    let urls: Vec<String> = set.ports[..3]
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let mut config = crate::common::store_config(&urls, &prefix);
    config.cluster = true;
    let f = measure_on(set, config).await;
    println!(
        "cluster 3+3: unavailable {:.1} s, accepted {}, refused {}, lost {}, duplicates {}",
        f.unavailable.as_secs_f64(),
        f.accepted,
        f.refused,
        f.lost,
        f.duplicates
    );
}
