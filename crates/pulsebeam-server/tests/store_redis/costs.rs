//! What the mailbox scripts cost Redis, counted by Redis itself, and that spending less never
//! leaves a key without its TTL.

use std::collections::BTreeMap;

use super::*;

/// Calls per command of `INFO commandstats` (`cmdstat_zadd:calls=3,...` gives `zadd` -> 3).
fn calls(stats: &str) -> BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let n = fields.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), n.parse().ok()?))
        })
        .collect()
}

/// Commands the node itself sends besides its scripts (health checks, heartbeats on its
/// wake-up channel, the counters' own reads), left out of a script's count.
const NOT_IN_SCRIPTS: &[&str] = &[
    "fcall",
    "function|load",
    "script|load",
    "config|resetstat",
    "config|get",
    "info",
    "ping",
    "publish",
    "spublish",
    "subscribe",
    "ssubscribe",
    "hello",
    "client|setname",
];

/// One relayed message (a waiting poll, the deliver that wakes it, its take, the ack and the
/// client's next poll) runs at most a few commands inside the scripts: each script reads the
/// peer's hash once and writes it once, refreshes TTLs only when they run low, and moves a
/// batch with one command per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_message_runs_few_commands_inside_the_scripts() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_relayed_message_runs_few_commands_inside_the_scripts",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let (_redis, receiver, sender) = own_pair(port, "cost", Duration::from_secs(5)).await;
    // Open the connection, then relay once, so every script is loaded and the keys are made.
    nothing_for_bob(&receiver).await;
    relay(&receiver, &sender).await;
    let relays = 5u64;
    cli_at(port, &["config", "resetstat"]);
    for _ in 0..relays {
        relay(&receiver, &sender).await;
    }
    let stats = cli_at(port, &["info", "commandstats"]);
    let by_command = calls(&stats);
    let inside: u64 = by_command
        .iter()
        .filter(|(name, _)| !NOT_IN_SCRIPTS.contains(&name.as_str()))
        .map(|(_, n)| n)
        .sum();
    // begin, deliver (which hands the message to the waiting poll), ack per relay; the
    // deliver's wake-up is a PUBLISH, left out above with the heartbeats, and counted here.
    assert_eq!(
        by_command.get("fcall"),
        Some(&(3 * relays)),
        "{by_command:?}"
    );
    let per_message = (inside + relays) as f64 / relays as f64;
    // TIME twice, HMGET twice and HGET, HSET three times, ZPOPMIN, ZADD, PEXPIRE, PUBLISH,
    // ZREMRANGEBYSCORE.
    assert!(
        per_message <= 13.0,
        "{per_message} commands per relayed message inside the scripts: {by_command:?}"
    );
    // Nothing is counted: the deliver knows the waiting poll's mailbox empty (`e:c`), the poll
    // knows the discovery queue empty (`b:d`) and the reservations' key empty (`v:c`).
    assert_eq!(by_command.get("zcard"), None, "{by_command:?}");
    // An acknowledgement that empties the reservations writes the list empty in the hash's one
    // HSET: no HDEL.
    assert_eq!(by_command.get("hdel"), None, "{by_command:?}");
    // No TTL is set again while plenty is left; only the key made again gets its own: the
    // reservations the ack emptied (made again by the deliver's hand-over).
    assert!(
        by_command.get("pexpire").copied().unwrap_or(0) <= relays,
        "{by_command:?}"
    );
}

/// The keys of a peer, every one with a TTL of at least the message TTL, after each kind of
/// call: TTLs are set when keys are made and refreshed when they run low, never forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_peer_keeps_a_ttl() {
    let Some(urls) = urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "every_key_of_a_peer_keeps_a_ttl",
    ) else {
        return;
    };
    let prefix = unique_prefix("ttl");
    let config = store_config(&urls, false, &prefix, Duration::from_millis(300));
    let limits = Limits::default();
    let ttl_ms = i64::try_from(limits.message_ttl_secs * 1000).unwrap();
    let store = RedisStore::new(&config, &limits).unwrap();
    wait_healthy(&store).await;
    let cli = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args(["-u", &urls[0]])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let check = |step: &str| {
        let pattern = format!("{prefix}:{{p:g:*");
        let keys = cli(&["--scan", "--pattern", &pattern]);
        assert!(!keys.is_empty(), "{step}: no keys");
        for key in keys.lines() {
            let pttl: i64 = cli(&["pttl", key]).parse().unwrap();
            assert!(pttl >= ttl_ms, "{step}: {key} has PTTL {pttl}");
        }
    };
    store.deliver(bob(), 100, envelope("a")).await.unwrap();
    check("a sender opened a mailbox");
    store.deliver(bob(), 0, envelope("d")).await.unwrap();
    let carol = PeerAddr {
        peer: "carol",
        ..bob()
    };
    store.deliver(carol, 0, envelope("d")).await.unwrap();
    check("discovery queues");
    let polled = store.poll(bob(), 100, NOW).await.unwrap();
    assert_eq!(polled.messages, [envelope("a"), envelope("d")]);
    check("a poll reserved a batch");
    store
        .ack(bob(), 100, polled.receipt.unwrap())
        .await
        .unwrap();
    store.deliver(bob(), 100, envelope("b")).await.unwrap();
    check("a mailbox emptied and made again");
    let next = PollOptions {
        takeover: false,
        ack: None,
        ..NOW
    };
    let lapsing = store.poll(bob(), 100, next).await.unwrap();
    assert_eq!(lapsing.messages, [envelope("b")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = store.poll(bob(), 100, next).await.unwrap();
    assert_eq!(back.messages, [envelope("b")]);
    check("a lapsed reservation came back");
    store.deliver(bob(), 200, envelope("c")).await.unwrap();
    let again = store.poll(bob(), 100, NOW).await.unwrap();
    assert_eq!(again.messages, [envelope("b")]);
    check("a takeover");
    assert_eq!(
        store.poll(carol, 7, NOW).await.unwrap().messages,
        [envelope("d")]
    );
    check("a discovery queue taken");
}
