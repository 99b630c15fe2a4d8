//! Operating on Redis: what a node does when Redis loses its data, freezes, drops a
//! connection or fails over, Redis over TLS, and wake-ups over a Cluster's sharded pub/sub. Each test starts Redis servers of its own (on
//! free loopback ports, without persistence), since it flushes, stops or kills them.
//!
//! They need `redis-server` (`scripts/redis.sh start` installs it). Without
//! `PULSEBEAM_TEST_REDIS_URL` set (as `scripts/redis.sh start` prints) they print a SKIP line
//! and pass, unless `PULSEBEAM_REQUIRE_REDIS=1`, which makes them fail instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "redis_ops/common.rs"]
mod common;
#[path = "redis_ops/failover.rs"]
mod failover;
#[path = "redis_ops/faults.rs"]
mod faults;
#[path = "redis_ops/revocations.rs"]
mod revocations;
#[path = "redis_ops/sentinel.rs"]
mod sentinel;
#[path = "redis_ops/sharded.rs"]
mod sharded;
#[path = "redis_ops/tls.rs"]
mod tls;
