//! Wake-ups on a Redis Cluster go over sharded pub/sub: only to the master serving the peer's
//! slot, subscribed to when a poll there begins, and followed when the slot moves. Each test
//! has a three-master Cluster of its own, since it counts commands per master or moves a slot.

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsebeam_server::store::{PeerAddr, PollOptions, StoreError};
use pulsebeam_server::{Limits, MailboxStore, RedisStore, StoreConfig};

use crate::common::{
    cli, cluster_ports, create_cluster, envelope, redis_available, spawn_cluster_node,
    store_config, unique_prefix, wait_healthy, NOW,
};

/// How long a store may take to reach a Cluster of its own.
const HEALTHY: Duration = Duration::from_secs(10);

/// Three masters without replicas, killed when dropped.
struct OwnCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = cluster_ports(3);
        let children = ports
            .iter()
            .map(|port| spawn_cluster_node(dir.path(), *port, &[]))
            .collect();
        create_cluster(&ports, 0);
        let cluster = OwnCluster {
            ports,
            children,
            _dir: dir,
        };
        let start = Instant::now();
        while !cluster
            .ports
            .iter()
            .all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the cluster did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The slot of `peer`'s keys.
    fn slot_of(&self, peer: PeerAddr<'_>) -> u16 {
        let tag = format!("{{{}:{}:{}}}", peer.project, peer.group, peer.peer);
        cli(self.ports[0], &["cluster", "keyslot", &tag])
            .trim()
            .parse()
            .unwrap()
    }

    /// `(node id, port)` of every master.
    fn masters(&self) -> Vec<(String, u16)> {
        cli(self.ports[0], &["cluster", "nodes"])
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 2 && f[2].contains("master"))
            .map(|f| {
                let port = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
                (f[0].to_owned(), port)
            })
            .collect()
    }

    /// `(node id, port)` of the master serving `slot`, as the master at `ports[0]` sees it.
    fn owner(&self, slot: u16) -> (String, u16) {
        let nodes = cli(self.ports[0], &["cluster", "nodes"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let serves = f.iter().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                lo.parse::<u16>().is_ok_and(|lo| lo <= slot)
                    && hi.parse::<u16>().is_ok_and(|hi| slot <= hi)
            });
            if serves {
                let port = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
                return (f[0].to_owned(), port);
            }
        }
        panic!("no master serves slot {slot}: {nodes}");
    }

    /// Moves `slot` to another master (`SETSLOT` IMPORTING and MIGRATING, `MIGRATE` of its
    /// keys, `SETSLOT NODE` on every master); the new master's port.
    fn move_slot(&self, slot: u16) -> u16 {
        let slot_s = slot.to_string();
        let (source_id, source) = self.owner(slot);
        let (target_id, target) = self
            .masters()
            .into_iter()
            .find(|(id, _)| *id != source_id)
            .unwrap();
        let ok = |out: String| assert_eq!(out.trim(), "OK");
        ok(cli(
            target,
            &["cluster", "setslot", &slot_s, "importing", &source_id],
        ));
        ok(cli(
            source,
            &["cluster", "setslot", &slot_s, "migrating", &target_id],
        ));
        loop {
            let keys = cli(source, &["cluster", "getkeysinslot", &slot_s, "100"]);
            if keys.trim().is_empty() {
                break;
            }
            let target_s = target.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &target_s, "", "0", "5000", "keys"];
            args.extend(keys.lines());
            let migrated = cli(source, &args);
            assert!(
                matches!(migrated.trim(), "OK" | "NOKEY"),
                "MIGRATE failed: {migrated}"
            );
        }
        for (_, port) in self.masters() {
            let _ = cli(port, &["cluster", "setslot", &slot_s, "node", &target_id]);
        }
        assert_eq!(self.owner(slot).1, target);
        target
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cluster_config(cluster: &OwnCluster, prefix: &str) -> StoreConfig {
    let mut config = store_config(&cluster.urls(), prefix);
    config.cluster = true;
    config
}

fn peer(name: &str) -> PeerAddr<'_> {
    PeerAddr {
        project: "main",
        group: "g",
        peer: name,
    }
}

/// A poll long enough that one answered well before its end was woken, not timed out.
const LONG_POLL: PollOptions = PollOptions {
    wait: Duration::from_secs(20),
    batch_window: Duration::from_millis(5),
    max_messages: 64,
    takeover: true,
    ack: None,
};

/// Two nodes of one deployment on `config`, both healthy: one to receive, one to send.
async fn two_nodes(config: &StoreConfig) -> (Arc<RedisStore>, RedisStore) {
    let receiver = Arc::new(RedisStore::new(config, &Limits::default()).unwrap());
    let sender = RedisStore::new(config, &Limits::default()).unwrap();
    wait_healthy(&receiver, HEALTHY).await;
    wait_healthy(&sender, HEALTHY).await;
    (receiver, sender)
}

/// Sends, retrying while the Cluster redirects or asks to try again.
async fn send(store: &RedisStore, to: PeerAddr<'_>, text: &'static str) {
    for _ in 0..100 {
        match store.deliver(to, 100, envelope(text)).await {
            Ok(()) => return,
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(err) => panic!("send failed: {err}"),
        }
    }
    panic!("send not accepted after 100 tries");
}

/// A poll of `to` waits on `receiver`, `sender` sends it `text`: the poll answers with it,
/// woken (well before its 20 s end), and the receiver acknowledges it.
async fn relay(receiver: &Arc<RedisStore>, sender: &RedisStore, to: &str, text: &'static str) {
    let waiting = tokio::spawn({
        let receiver = Arc::clone(receiver);
        let to = to.to_owned();
        async move {
            let start = Instant::now();
            let polled = receiver.poll(peer(&to), 100, LONG_POLL).await.unwrap();
            (polled, start.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(sender, peer(to), text).await;
    let (polled, took) = waiting.await.unwrap();
    assert_eq!(polled.messages, [envelope(text)]);
    assert!(
        took < LONG_POLL.wait / 2,
        "the poll was not woken: it answered after {took:?}"
    );
    receiver
        .ack(peer(to), 100, polled.receipt.unwrap())
        .await
        .unwrap();
}

/// This deployment's wake-up channels subscribed on the master at `port`.
fn shard_channels(port: u16, prefix: &str) -> Vec<String> {
    let mut channels: Vec<String> =
        cli(port, &["pubsub", "shardchannels", &format!("{prefix}:w:*")])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect();
    channels.sort();
    channels
}

/// `(calls of PUBLISH, calls of SPUBLISH)` on the master at `port` since its counters were
/// reset, counting those inside scripts.
fn publishes(port: u16) -> (u64, u64) {
    let stats = cli(port, &["info", "commandstats"]);
    let calls = |command: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
            .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("calls=")))
            .map_or(0, |n| n.parse().unwrap())
    };
    (calls("publish"), calls("spublish"))
}

/// Pub/sub messages the master at `port` has sent over the cluster bus so far: (classic
/// `PUBLISH`, sharded `SPUBLISH`, which goes to the shard's replicas only).
fn bus_publishes(port: u16) -> (u64, u64) {
    let info = cli(port, &["cluster", "info"]);
    let count = |field: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
            .map_or(0, |n| n.parse().unwrap())
    };
    (
        count("cluster_stats_messages_publish_sent"),
        count("cluster_stats_messages_publishshard_sent"),
    )
}

/// A relay between two nodes on a Cluster: the wake-up is published on the master serving the
/// receiver's slot only (`SPUBLISH`), and no master runs a classic `PUBLISH`, which the Cluster
/// would carry to every shard over the cluster bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_reaches_only_the_shard_of_the_peers_slot() {
    if !redis_available("a_wake_up_reaches_only_the_shard_of_the_peers_slot") {
        return;
    }
    let cluster = OwnCluster::start();
    let config = cluster_config(&cluster, &unique_prefix("sharded"));
    let (receiver, sender) = two_nodes(&config).await;
    // The connection's first poll opens it and subscribes to its slot: not counted.
    assert!(receiver
        .poll(peer("bob"), 100, NOW)
        .await
        .unwrap()
        .messages
        .is_empty());
    let (_, owner) = cluster.owner(cluster.slot_of(peer("bob")));

    for port in &cluster.ports {
        cli(*port, &["config", "resetstat"]);
    }
    let bus_before: Vec<(u64, u64)> = cluster.ports.iter().map(|p| bus_publishes(*p)).collect();
    relay(&receiver, &sender, "bob", "offer").await;
    let bus: Vec<(u64, u64)> = cluster
        .ports
        .iter()
        .zip(&bus_before)
        .map(|(p, before)| {
            let after = bus_publishes(*p);
            (after.0 - before.0, after.1 - before.1)
        })
        .collect();
    eprintln!(
        "one relay between two nodes on 3 masters: (PUBLISH, SPUBLISH) per master {:?}, \
         (publish, publishshard) messages each master sent over the cluster bus {bus:?}",
        cluster
            .ports
            .iter()
            .map(|p| publishes(*p))
            .collect::<Vec<_>>()
    );
    assert!(
        bus.iter().all(|(publish, _)| *publish == 0),
        "wake-ups crossed the cluster bus: {bus:?}"
    );
    for port in &cluster.ports {
        let (publish, spublish) = publishes(*port);
        assert_eq!(publish, 0, "classic PUBLISH on the master at {port}");
        if *port == owner {
            // The wake-up, and the receiver's heartbeats on its channel.
            assert!(spublish >= 1, "no SPUBLISH on the master of bob's slot");
        } else {
            assert_eq!(
                spublish, 0,
                "SPUBLISH on the master at {port}, which does not serve bob's slot"
            );
        }
    }
}

/// A node subscribes to its wake-up channel of a slot when the first poll on a peer of that
/// slot begins on it, on the master serving the slot; sending there subscribes to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_to_a_slots_channel_when_a_poll_there_begins() {
    if !redis_available("a_node_subscribes_to_a_slots_channel_when_a_poll_there_begins") {
        return;
    }
    let cluster = OwnCluster::start();
    let prefix = unique_prefix("lazy");
    let config = cluster_config(&cluster, &prefix);
    let store = RedisStore::new(&config, &Limits::default()).unwrap();
    wait_healthy(&store, HEALTHY).await;
    send(&store, peer("bob"), "hello").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    for port in &cluster.ports {
        assert_eq!(shard_channels(*port, &prefix), Vec::<String>::new());
    }

    let polled = store.poll(peer("bob"), 100, NOW).await.unwrap();
    assert_eq!(polled.messages, [envelope("hello")]);
    let slot = cluster.slot_of(peer("bob"));
    let (_, owner) = cluster.owner(slot);
    for port in &cluster.ports {
        let channels = shard_channels(*port, &prefix);
        if *port == owner {
            assert_eq!(channels.len(), 1, "{channels:?}");
            let channel_slot: u16 = cli(*port, &["cluster", "keyslot", &channels[0]])
                .trim()
                .parse()
                .unwrap();
            assert_eq!(channel_slot, slot, "{channels:?}");
        } else {
            assert_eq!(channels, Vec::<String>::new(), "on the master at {port}");
        }
    }
    // Another poll of the same peer subscribes to nothing more.
    assert!(store.poll(peer("bob"), 100, NOW).await.is_ok());
    let all: usize = cluster
        .ports
        .iter()
        .map(|p| shard_channels(*p, &prefix).len())
        .sum();
    assert_eq!(all, 1);
}

/// The slot of a peer whose poll waits moves to another master: the node subscribes to the
/// slot's channel at its new master, and a message sent after the move wakes the poll, which
/// was waiting since before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_poll_is_woken_after_its_peers_slot_moves() {
    if !redis_available("a_waiting_poll_is_woken_after_its_peers_slot_moves") {
        return;
    }
    let cluster = OwnCluster::start();
    let prefix = unique_prefix("moved");
    let config = cluster_config(&cluster, &prefix);
    let (receiver, sender) = two_nodes(&config).await;
    relay(&receiver, &sender, "bob", "before").await;

    let waiting = tokio::spawn({
        let receiver = Arc::clone(&receiver);
        async move {
            let start = Instant::now();
            let polled = receiver.poll(peer("bob"), 100, LONG_POLL).await.unwrap();
            (polled, start.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slot = cluster.slot_of(peer("bob"));
    let target = cluster.move_slot(slot);
    send(&sender, peer("bob"), "moved").await;
    let (polled, took) = waiting.await.unwrap();
    assert_eq!(polled.messages, [envelope("moved")]);
    assert!(
        took < LONG_POLL.wait / 2,
        "the poll was not woken: it answered after {took:?}"
    );
    receiver
        .ack(peer("bob"), 100, polled.receipt.unwrap())
        .await
        .unwrap();
    let start = Instant::now();
    while shard_channels(target, &prefix).len() != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the node's channel of the moved slot is not subscribed at its new master {target}: {:?}",
            cluster.ports.iter().map(|p| (*p, shard_channels(*p, &prefix))).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay(&receiver, &sender, "bob", "after").await;
    assert!(receiver.health().await.is_ok());
    // Followed, not found deaf.
    assert_eq!(receiver.stats().await.unwrap().subscriber_restarts, 0);
}

/// Redis closes the subscriber's connections (`CLIENT KILL TYPE pubsub` on every master): the
/// node reconnects, subscribes to its slot's channel again, and a send wakes a waiting poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sharded_subscription_is_made_again() {
    if !redis_available("a_killed_sharded_subscription_is_made_again") {
        return;
    }
    let cluster = OwnCluster::start();
    let prefix = unique_prefix("killed");
    let config = cluster_config(&cluster, &prefix);
    let (receiver, sender) = two_nodes(&config).await;
    relay(&receiver, &sender, "bob", "before").await;
    let (_, owner) = cluster.owner(cluster.slot_of(peer("bob")));
    assert_eq!(shard_channels(owner, &prefix).len(), 1);

    let killed: u32 = cluster
        .ports
        .iter()
        .map(|p| {
            cli(*p, &["client", "kill", "type", "pubsub"])
                .trim()
                .parse::<u32>()
                .unwrap()
        })
        .sum();
    assert!(killed >= 1, "no subscriber connection was killed");
    let start = Instant::now();
    while shard_channels(owner, &prefix).len() != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the channel was not subscribed again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay(&receiver, &sender, "bob", "after").await;
    assert_eq!(receiver.stats().await.unwrap().subscriber_restarts, 0);
}
