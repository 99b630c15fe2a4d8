//! A load tool for the PulseBeam signaling server, on loopback only, bounded in time and count.
//!
//! - [`relay`]: N peer pairs relay messages through the server; messages per second, relay
//!   latency percentiles, order and loss checks, server memory.
//! - [`idle`]: N peers each hold a `Recv` long-poll; server memory per idle peer.
//! - [`baseline`]: the same clients calling an empty handler behind the same HTTP stack; the
//!   rate the relay rate is compared with.
//!
//! With `--store redis` the server runs as several nodes (child processes) sharing one Redis,
//! and [`redis_stats`] reads what Redis did from `INFO commandstats`; with
//! `--store redis-cluster` they share a Redis Cluster, and [`redis_figures`] gives the figures
//! per master.
//!
//! The server runs in a child process (this binary's hidden `server` command) so its memory
//! can be read from `/proc/PID/status` apart from the load generator's. Clients and server share
//! the machine's cores: compare figures taken in one run, not absolute numbers across machines.
//!
//! The [`client`] and [`keys`] modules are also what the fault tests drive the server with.

pub mod baseline;
pub mod client;
mod error;
pub mod grpc_web;
pub mod idle;
pub mod keys;
pub mod process;
pub mod redis_figures;
pub mod redis_stats;
pub mod relay;
pub mod stats;

pub use error::LoadError;
