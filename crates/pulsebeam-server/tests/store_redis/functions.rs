//! How the scripts reach Redis: one Functions library, loaded by the first call that finds it
//! missing, and `EVALSHA` of each script where Redis cannot run the library.

use super::*;

/// Waits until `redis-server` on `port` answers, then runs `args` on it with `redis-cli`.
fn ready_cli(port: u16, args: &[&str]) -> String {
    let start = Instant::now();
    while !cli_at(port, &["ping"]).contains("PONG") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cli_at(port, args)
}

/// A user allowed everything but `FUNCTION` (as a managed Redis may set one up, or a Redis
/// before 7.0, which has no functions): the library cannot be loaded, every script runs by
/// `EVALSHA`, and the whole mailbox contract holds on that path too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_function_load_the_scripts_run_by_evalsha_and_keep_the_contract() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "without_function_load_the_scripts_run_by_evalsha_and_keep_the_contract",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let _redis = OwnRedis::start(port).expect("redis-server is installed");
    let set = ready_cli(
        port,
        &[
            "acl",
            "setuser",
            "nofn",
            "on",
            ">nofn-secret",
            "~*",
            "&*",
            "+@all",
            "-function",
        ],
    );
    assert!(set.contains("OK"), "{set}");
    let url = vec![format!("redis://nofn:nofn-secret@127.0.0.1:{port}")];
    run_conformance(url.clone(), false).await;

    let config = store_config(
        &url,
        false,
        &unique_prefix("evalsha"),
        Duration::from_secs(5),
    );
    let limits = Limits::default();
    let receiver = Arc::new(RedisStore::new(&config, &limits).unwrap());
    let sender = RedisStore::new(&config, &limits).unwrap();
    wait_healthy(&*receiver).await;
    nothing_for_bob(&receiver).await;
    cli_at(port, &["config", "resetstat"]);
    relay(&receiver, &sender).await;
    let stats = cli_at(port, &["info", "commandstats"]);
    // The waiting poll's begin, the deliver (which hands the message over) and the ack, each
    // by EVALSHA. The sender's first call tried its function once and the library's load was
    // refused; the receiver, refused before, did not try again.
    assert_eq!(stat(&stats, "evalsha", "calls"), 3, "{stats}");
    assert_eq!(stat(&stats, "evalsha", "failed_calls"), 0, "{stats}");
    assert_eq!(stat(&stats, "fcall", "calls"), 1, "{stats}");
    assert_eq!(stat(&stats, "fcall", "failed_calls"), 1, "{stats}");
    assert_eq!(
        stat(&stats, "function|load", "rejected_calls"),
        1,
        "{stats}"
    );
    assert!(
        cli_at(port, &["function", "list"]).trim().is_empty(),
        "nothing was loaded"
    );
}

/// The library goes missing under running nodes (`FUNCTION FLUSH`, a Redis restarted without
/// persistence, a Cluster master added empty): the next call loads it again and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_gone_from_redis_is_loaded_again_by_the_next_call() {
    if urls(
        "PULSEBEAM_TEST_REDIS_URL",
        "a_library_gone_from_redis_is_loaded_again_by_the_next_call",
    )
    .is_none()
    {
        return;
    }
    let port = free_port();
    let (_redis, receiver, sender) = own_pair(port, "reload", Duration::from_secs(5)).await;
    relay(&receiver, &sender).await;
    let listed = cli_at(port, &["function", "list"]);
    assert!(listed.contains("pulsebeam_"), "{listed}");

    assert!(cli_at(port, &["function", "flush"]).contains("OK"));
    cli_at(port, &["config", "resetstat"]);
    relay(&receiver, &sender).await;
    let stats = cli_at(port, &["info", "commandstats"]);
    // The first call found its function missing, loaded the library once, and ran again; the
    // rest ran at once. No script ran by EVALSHA.
    assert_eq!(stat(&stats, "function|load", "calls"), 1, "{stats}");
    assert_eq!(stat(&stats, "fcall", "failed_calls"), 1, "{stats}");
    assert_eq!(
        stat(&stats, "fcall", "calls") - stat(&stats, "fcall", "failed_calls"),
        3,
        "{stats}"
    );
    assert_eq!(stat(&stats, "evalsha", "calls"), 0, "{stats}");
}
