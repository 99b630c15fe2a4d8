//! Revocations when Redis loses its data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pulsebeam_server::{Revocation, RevocationTarget, Server};

use crate::common::{eventually, node, redis_available, store_config, unique_prefix, OwnRedis};

fn peer(p: &str) -> RevocationTarget {
    RevocationTarget::Peer {
        project: "main".into(),
        group: "g".into(),
        peer: p.into(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn revocation(p: &str) -> Revocation {
    Revocation::new(peer(p), now() + 3_600, now())
}

fn holds(server: &Server, p: &str) -> bool {
    server.revocations().iter().any(|r| r.target == peer(p))
}

const SYNC: Duration = Duration::from_secs(5);

/// Redis loses its data (`FLUSHALL`, as a restart without persistence) between two
/// revocations: the change counter starts again from zero, yet every node sees the later
/// revocation, and the earlier one is put back into Redis by the nodes holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_after_redis_lost_its_data_reach_every_node() {
    if !redis_available("revocations_after_redis_lost_its_data_reach_every_node") {
        return;
    }
    let redis = OwnRedis::start(&[]);
    let store = store_config(&[redis.url()], &unique_prefix("flush"));
    let a = node(store.clone(), None);
    let b = node(store.clone(), None);
    a.revoke(revocation("bob")).await.unwrap();
    eventually(SYNC, "b sees bob", || holds(&b, "bob")).await;

    assert!(redis.cli(&["flushall"]).contains("OK"));
    a.revoke(revocation("carol")).await.unwrap();
    eventually(SYNC, "b sees carol after the flush", || holds(&b, "carol")).await;
    assert!(holds(&b, "bob"), "b still enforces bob");

    // bob is in Redis again: a node that never saw it gets it from there.
    let c = node(store, None);
    eventually(SYNC, "a new node sees bob", || holds(&c, "bob")).await;
}

/// With `admin.state_file`, a node on Redis keeps its copy there: a revocation survives the
/// whole deployment restarting on a Redis that lost its data, enforced at once by the node
/// with the file and put back into Redis for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_puts_revocations_back_into_a_redis_that_lost_them() {
    if !redis_available("a_state_file_puts_revocations_back_into_a_redis_that_lost_them") {
        return;
    }
    let redis = OwnRedis::start(&[]);
    let store = store_config(&[redis.url()], &unique_prefix("state-file"));
    let file = redis.path().join("revocations.json");
    let a = node(store.clone(), Some(file.clone()));
    a.revoke(revocation("bob")).await.unwrap();
    drop(a);

    assert!(redis.cli(&["flushall"]).contains("OK"));
    let again = node(store.clone(), Some(file));
    assert!(holds(&again, "bob"), "enforced from the file at start");
    let other = node(store, None);
    eventually(SYNC, "another node sees bob again", || holds(&other, "bob")).await;
}
