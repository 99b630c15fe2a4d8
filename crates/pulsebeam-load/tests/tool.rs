//! The `pulsebeam-load` binary, run as a user runs it: small, bounded runs whose figures must
//! be consistent, and argument errors that say what to fix.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::{Command, Output};

use serde_json::Value;

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsebeam-load"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json(args: &[&str]) -> Value {
    let output = load(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

#[test]
fn relay_delivers_every_accepted_message_in_order() {
    let report = json(&["relay", "--pairs", "2", "--duration", "2", "--json"]);
    let accepted = report["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{report}");
    assert_eq!(report["delivered"].as_u64(), Some(accepted), "{report}");
    assert_eq!(report["lost"].as_u64(), Some(0), "{report}");
    assert_eq!(report["out_of_order"].as_u64(), Some(0), "{report}");
    let latency = &report["latency"];
    assert_eq!(latency["count"].as_u64(), Some(accepted));
    let p = |k: &str| latency[k].as_f64().unwrap();
    assert!(0.0 <= p("p50_ms") && p("p50_ms") <= p("p90_ms"));
    assert!(p("p90_ms") <= p("p99_ms") && p("p99_ms") <= p("max_ms"));
    let rate = report["messages_per_s"].as_f64().unwrap();
    let duration = report["duration_s"].as_f64().unwrap();
    assert!((2.0..10.0).contains(&duration), "{report}");
    assert!((rate * duration - accepted as f64).abs() < 1.0, "{report}");
    assert!(report["server_rss_before_kib"].as_u64().unwrap() > 0);
    assert!(report["recv_batches"].as_u64().unwrap() >= 1);
}

#[test]
fn paced_relay_sends_about_the_asked_rate() {
    let report = json(&[
        "relay",
        "--pairs",
        "2",
        "--duration",
        "2",
        "--rate",
        "100",
        "--json",
    ]);
    let accepted = report["accepted"].as_u64().unwrap();
    // 100 msg/s for 2 s is 200 messages; pacing may lag, never run ahead.
    assert!((100..=204).contains(&accepted), "{report}");
    assert_eq!(report["lost"].as_u64(), Some(0), "{report}");
    assert_eq!(report["target_rate"].as_f64(), Some(100.0));
}

#[test]
fn idle_counts_memory_per_long_poll() {
    for extra in [None, Some("--stack-only")] {
        let mut args = vec!["idle", "--peers", "200", "--quiet", "1", "--json"];
        args.extend(extra);
        let report = json(&args);
        assert_eq!(report["peers"].as_u64(), Some(200), "{report}");
        let before = report["rss_before_kib"].as_u64().unwrap();
        let after = report["rss_after_kib"].as_u64().unwrap();
        assert!(before > 0 && after >= before, "{report}");
        let per_peer = report["bytes_per_peer"].as_f64().unwrap();
        // 200 open connections cost something, and far less than a MiB each.
        assert!(per_peer > 0.0 && per_peer < 1024.0 * 1024.0, "{report}");
        // Read again after the quiet second, every poll still open.
        assert_eq!(report["quiet_seconds"].as_f64(), Some(1.0), "{report}");
        let settled = report["rss_quiet_kib"].as_u64().unwrap();
        assert!(settled > before, "{report}");
        let per_peer = report["bytes_per_peer_quiet"].as_f64().unwrap();
        assert!(per_peer > 0.0 && per_peer < 1024.0 * 1024.0, "{report}");
    }
}

#[test]
fn baseline_answers_requests() {
    let report = json(&[
        "baseline",
        "--connections",
        "2",
        "--duration",
        "1",
        "--json",
    ]);
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 0, "{report}");
    assert_eq!(report["latency"]["count"].as_u64(), Some(requests));
    assert!(report["requests_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn tables_name_their_figures() {
    let output = load(&["baseline", "--connections", "1", "--duration", "1"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("requests/s") && text.contains("latency p99"),
        "{text}"
    );
}

#[test]
fn bad_arguments_say_what_to_fix() {
    let cases: &[(&[&str], &str)] = &[
        (&["relay", "--pairs", "0"], "--pairs"),
        (&["relay", "--duration", "601"], "--duration"),
        (&["relay", "--rate", "fast"], "messages per second"),
        (&["relay", "--rate=-5"], "messages per second"),
        (&["relay", "--rate", "NaN"], "messages per second"),
        (&["idle", "--peers", "100000"], "--peers"),
        (&["relay", "--nodes", "9"], "--nodes"),
        (&["idle", "--store", "disk"], "--store"),
        (&["idle", "--quiet", "0"], "--quiet"),
        (&["baseline", "--connections", "x"], "--connections"),
        (&["flood"], "unrecognized subcommand"),
    ];
    for (args, says) in cases {
        let output = load(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn too_few_open_files_is_a_clear_error() {
    // A child shell lowers its own limit, then runs the tool.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {} idle --peers 1000",
            env!("CARGO_BIN_EXE_pulsebeam-load")
        ))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ulimit -n 1064"), "{stderr}");
}

/// The tests that run nodes on the shared test Redis take turns: each counts the commands its
/// Redis (or every master of the Cluster) ran over its run, which another test's nodes and
/// `INFO` calls would add to.
fn redis_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The value of `var`, which `eval "$(scripts/redis.sh start)"` sets, or `None` after a SKIP
/// line; with `PULSEBEAM_REQUIRE_REDIS=1` a missing value fails the test.
fn redis_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert!(
                std::env::var("PULSEBEAM_REQUIRE_REDIS").as_deref() != Ok("1"),
                "PULSEBEAM_REQUIRE_REDIS=1 but {var} is unset"
            );
            println!("SKIP: {var} is unset (eval \"$(scripts/redis.sh start)\")");
            None
        }
    }
}

/// The Redis the Redis tests run against.
fn redis_url() -> Option<String> {
    redis_env("PULSEBEAM_TEST_REDIS_URL")
}

#[test]
fn relay_across_two_nodes_on_redis_loses_nothing() {
    let _turn = redis_turn();
    let Some(url) = redis_url() else { return };
    let report = json(&[
        "relay",
        "--pairs",
        "2",
        "--duration",
        "2",
        "--nodes",
        "2",
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--json",
    ]);
    let accepted = report["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{report}");
    assert_eq!(report["nodes"].as_u64(), Some(2), "{report}");
    assert_eq!(report["store"].as_str(), Some("redis"), "{report}");
    assert_eq!(report["delivered"].as_u64(), Some(accepted), "{report}");
    assert_eq!(report["lost"].as_u64(), Some(0), "{report}");
    assert_eq!(report["out_of_order"].as_u64(), Some(0), "{report}");
    // Every pair's sender calls the node its receiver does not poll.
    assert_eq!(report["cross_node"].as_u64(), Some(accepted), "{report}");
    let redis = &report["redis"];
    let script_calls = redis["script_calls"].as_u64().unwrap();
    assert!(script_calls > 0, "{report}");
    // The scripts run as the library's functions.
    assert_eq!(
        redis["by_command"]["fcall"].as_u64(),
        Some(script_calls),
        "{report}"
    );
    let per = redis["script_calls_per_message"].as_f64().unwrap();
    assert!(
        (per * accepted as f64 - script_calls as f64).abs() < 1.0,
        "{report}"
    );
    // A standalone Redis is one shard: no per-shard figures.
    assert!(redis.get("shards").is_none(), "{report}");
}

/// The seeds of the 3-master Redis Cluster.
fn redis_cluster_urls() -> Option<String> {
    redis_env("PULSEBEAM_TEST_REDIS_CLUSTER_URLS")
}

#[test]
fn relay_on_a_redis_cluster_reports_each_shard() {
    let _turn = redis_turn();
    let Some(urls) = redis_cluster_urls() else {
        return;
    };
    let pairs = 12;
    let report = json(&[
        "relay",
        "--pairs",
        &pairs.to_string(),
        "--duration",
        "2",
        "--nodes",
        "2",
        "--store",
        "redis-cluster",
        "--redis-cluster-urls",
        &urls,
        "--json",
    ]);
    let accepted = report["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{report}");
    assert_eq!(report["store"].as_str(), Some("redis-cluster"), "{report}");
    assert_eq!(report["delivered"].as_u64(), Some(accepted), "{report}");
    assert_eq!(report["lost"].as_u64(), Some(0), "{report}");
    assert_eq!(report["out_of_order"].as_u64(), Some(0), "{report}");
    assert_eq!(report["cross_node"].as_u64(), Some(accepted), "{report}");
    let redis = &report["redis"];
    let shards = redis["shards"].as_array().unwrap();
    // scripts/redis.sh starts three masters without replicas.
    assert_eq!(shards.len(), 3, "{report}");
    let sum = |field: &str| -> u64 { shards.iter().map(|s| s[field].as_u64().unwrap()).sum() };
    assert_eq!(sum("slots"), 16384, "{report}");
    assert_eq!(sum("receivers"), pairs, "{report}");
    assert_eq!(sum("messages"), accepted, "{report}");
    assert_eq!(
        Some(sum("commands")),
        redis["commands"].as_u64(),
        "{report}"
    );
    assert_eq!(
        Some(sum("script_calls")),
        redis["script_calls"].as_u64(),
        "{report}"
    );
    let publish = redis["by_command"]["publish"].as_u64().unwrap_or(0);
    assert_eq!(sum("publish"), publish, "{report}");
    // The peers' slots spread the mailboxes, so more than one shard runs scripts.
    let busy = shards
        .iter()
        .filter(|s| s["script_calls"].as_u64().unwrap() > 0)
        .count();
    assert!(busy > 1, "{report}");
    for shard in shards {
        let commands = shard["commands"].as_u64().unwrap();
        let per = shard["commands_per_message"].as_f64().unwrap();
        assert!(
            (per * accepted as f64 - commands as f64).abs() < 1.0,
            "{report}"
        );
        assert!(shard["cpu_us_per_message"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn idle_on_a_redis_cluster_counts_every_master() {
    let _turn = redis_turn();
    let Some(urls) = redis_cluster_urls() else {
        return;
    };
    let report = json(&[
        "idle",
        "--peers",
        "40",
        "--nodes",
        "2",
        "--store",
        "redis-cluster",
        "--redis-cluster-urls",
        &urls,
        "--quiet",
        "1",
        "--json",
    ]);
    assert_eq!(report["store"].as_str(), Some("redis-cluster"), "{report}");
    assert_eq!(report["peers"].as_u64(), Some(40), "{report}");
    for rate in [&report["redis_no_polls"], &report["redis_polls_open"]] {
        // Summed over the three masters: each counted two of the tool's INFO calls between
        // its two reads of commandstats (the first read and one of INFO cpu), which are listed
        // but left out of the count.
        let info = rate["by_command"]["info"].as_u64().unwrap();
        assert_eq!(info, 3 * 2, "{report}");
        let listed: u64 = rate["by_command"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(_, calls)| calls.as_u64().unwrap())
            .sum();
        assert_eq!(rate["commands"].as_u64(), Some(listed), "{report}");
    }
}

#[test]
fn a_cluster_store_needs_cluster_seeds() {
    let output = Command::new(env!("CARGO_BIN_EXE_pulsebeam-load"))
        .args(["relay", "--store", "redis-cluster", "--duration", "1"])
        .env_remove("PULSEBEAM_TEST_REDIS_CLUSTER_URLS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--redis-cluster-urls"), "{stderr}");
    // A standalone Redis given as a seed is named as not being a Cluster node.
    let Some(url) = redis_url() else { return };
    let output = load(&[
        "relay",
        "--store",
        "redis-cluster",
        "--redis-cluster-urls",
        &url,
        "--duration",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a Redis Cluster node"), "{stderr}");
    assert!(stderr.contains("--store redis"), "{stderr}");
}

#[test]
fn several_nodes_need_redis() {
    let output = Command::new(env!("CARGO_BIN_EXE_pulsebeam-load"))
        .args(["relay", "--nodes", "2", "--duration", "1"])
        .env_remove("PULSEBEAM_TEST_REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--store redis"));
    let output = Command::new(env!("CARGO_BIN_EXE_pulsebeam-load"))
        .args(["relay", "--store", "redis", "--duration", "1"])
        .env_remove("PULSEBEAM_TEST_REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--redis-url"));
}
