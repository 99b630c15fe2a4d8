//! `pulsebeam-load`: loopback load runs against the PulseBeam signaling server.
//!
//! Exit codes: 0 done, 1 the run failed, 2 bad arguments.

/// jemalloc keeps the server's memory per idle connection low (see BENCHMARKS.md).
#[cfg(not(any(target_env = "msvc", feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pulsebeam_load::process::{ServerKind, Store, StoreKind};
use pulsebeam_load::{baseline, idle, relay, LoadError};
use pulsebeam_token::PublicKey;

/// Loopback load runs against the PulseBeam signaling server, which this tool starts itself in a
/// child process on 127.0.0.1. Every run is bounded in time and count.
#[derive(Debug, Parser)]
#[command(name = "pulsebeam-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Peer pairs relaying messages: messages/s, relay latency, loss and order, server memory.
    Relay {
        /// Sender/receiver pairs (1 to 2000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=2000))]
        pairs: u32,
        /// Seconds of sending (1 to 600).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
        duration: u64,
        /// Messages per second over all pairs (paced, latency measured from each message's
        /// slot); without it every sender sends as fast as `Send` returns.
        #[arg(long, value_parser = positive_rate)]
        rate: Option<f64>,
        /// The protocol the pairs speak: Twirp long-polls or gRPC-web streams.
        #[arg(long, value_enum, default_value_t = relay::Protocol::Twirp)]
        protocol: relay::Protocol,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Long-polling peers that never get a message: server memory per idle peer.
    Idle {
        /// Peers, each with its own connection and token (1 to 50000; needs as many open files).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
        peers: u32,
        /// Measure bare axum + hyper with a handler that never answers, not the server.
        #[arg(long)]
        stack_only: bool,
        /// Twirp long-polls or gRPC-web streams.
        #[arg(long, value_enum, default_value_t = relay::Protocol::Twirp)]
        protocol: relay::Protocol,
        /// Each peer's connection first has one call answered (`GET /_ping`), as a client's
        /// connection has once it polls again: the server's write buffer is then in use.
        #[arg(long)]
        warm: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Seconds of quiet with every poll open, after which the server's memory is read again
        /// (with Redis, Redis's commands per second are measured over it, and over as long with
        /// no poll open) (1 to 120).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
        quiet: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The same clients calling an empty handler behind the same HTTP stack: requests/s.
    Baseline {
        /// Keep-alive connections calling in a closed loop (1 to 4000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=4000))]
        connections: u32,
        /// Seconds measured (1 to 600).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
        duration: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The server child process the other commands start (not for direct use).
    #[command(hide = true)]
    Server {
        #[arg(long, value_enum)]
        kind: ServerKind,
        #[arg(long)]
        kid: String,
        #[arg(long)]
        public_key: String,
        #[arg(long)]
        poll_timeout_ms: u64,
        #[arg(long)]
        peers: usize,
        #[arg(long)]
        redis_url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        redis_cluster_urls: Vec<String>,
        #[arg(long)]
        key_prefix: Option<String>,
    },
}

/// Where the server nodes keep mail, and how many there are.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Server nodes (child processes), each on its own port (1 to 8; above 1 needs Redis).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    nodes: u32,
    /// Where the nodes keep mail.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    store: StoreKind,
    /// The Redis the nodes share, `redis://127.0.0.1:PORT` (default: $PULSEBEAM_TEST_REDIS_URL).
    #[arg(long, env = "PULSEBEAM_TEST_REDIS_URL")]
    redis_url: Option<String>,
    /// With `--store redis-cluster`: seeds of the Redis Cluster, `redis://127.0.0.1:P1,...`
    /// (default: $PULSEBEAM_TEST_REDIS_CLUSTER_URLS); the report then has figures per master.
    #[arg(long, env = "PULSEBEAM_TEST_REDIS_CLUSTER_URLS", value_delimiter = ',')]
    redis_cluster_urls: Vec<String>,
}

impl ClusterArgs {
    fn store(&self) -> Result<Store, LoadError> {
        self.store
            .store(self.redis_url.as_deref(), &self.redis_cluster_urls)
    }
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e7 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate; give messages per second as a number above 0, e.g. 5000"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(json: bool, table: String, value: &impl serde::Serialize) -> Result<(), LoadError> {
    if json {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| LoadError::Protocol(format!("cannot write JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{table}");
    }
    Ok(())
}

async fn run(command: Command) -> Result<(), LoadError> {
    match command {
        Command::Relay {
            pairs,
            duration,
            rate,
            protocol,
            cluster,
            json,
        } => {
            let report = relay::run(relay::RelayOptions {
                pairs: pairs as usize,
                duration: Duration::from_secs(duration),
                rate,
                nodes: cluster.nodes as usize,
                store: cluster.store()?,
                protocol,
            })
            .await?;
            print(json, report.table(), &report)
        }
        Command::Idle {
            peers,
            stack_only,
            protocol,
            warm,
            cluster,
            quiet,
            json,
        } => {
            let report = idle::run(idle::IdleOptions {
                peers: peers as usize,
                stack_only,
                nodes: cluster.nodes as usize,
                store: cluster.store()?,
                quiet: Duration::from_secs(quiet),
                protocol,
                warm,
            })
            .await?;
            print(json, report.table(), &report)
        }
        Command::Baseline {
            connections,
            duration,
            json,
        } => {
            let report = baseline::run(connections as usize, Duration::from_secs(duration)).await?;
            print(json, report.table(), &report)
        }
        Command::Server {
            kind,
            kid,
            public_key,
            poll_timeout_ms,
            peers,
            redis_url,
            redis_cluster_urls,
            key_prefix,
        } => {
            let public_key =
                PublicKey::from_hex(&public_key).map_err(pulsebeam_token::Error::from)?;
            let store = match (redis_url, key_prefix) {
                (Some(url), Some(key_prefix)) => Store::Redis { url, key_prefix },
                (None, Some(key_prefix)) if !redis_cluster_urls.is_empty() => Store::RedisCluster {
                    seeds: redis_cluster_urls,
                    key_prefix,
                },
                _ => Store::Memory,
            };
            pulsebeam_load::process::serve_child(
                kind,
                &kid,
                &public_key,
                poll_timeout_ms,
                peers,
                &store,
            )
            .await
        }
    }
}
