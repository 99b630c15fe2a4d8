//! `idle`: thousands of peers each holding a `Recv` long-poll (Twirp) or stream (gRPC-web) open;
//! the server's memory per idle peer.
//!
//! With several nodes (Redis store) the peers are spread over them, each node's memory is read
//! on its own, and Redis's commands per second are measured over a quiet interval with no poll
//! open and again with every poll open: a waiting poll should cost Redis nothing.
//!
//! The clients are raw sockets that write one request each and wait, in this process; the
//! server runs in a child process, so its resident memory is its own.

use std::time::Duration;

use prost::Message as _;
use pulsebeam_server::proto::{PeerInfo, RecvReq};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::keys::{ProjectKey, GROUP};
use crate::process::{spawn_nodes, ServerKind, ServerProcess, Store};
use crate::redis_stats::{QuietRate, RedisShards};
use crate::relay::Protocol;
use crate::LoadError;

/// The figures of an idle run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// What served: `pulsebeam`, or `pending` (bare axum + hyper, never answering).
    pub server: &'static str,
    /// `memory`, `redis` or `redis-cluster`.
    pub store: &'static str,
    /// `twirp` (long-polls) or `grpc-web` (streams).
    pub protocol: &'static str,
    /// Whether each connection had a call answered before its poll (`--warm`).
    pub warm: bool,
    /// Long-polls open when measured.
    pub peers: usize,
    /// Server RSS before the peers connected, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every peer polling, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / peers, bytes (all nodes together).
    pub bytes_per_peer: f64,
    /// Server RSS after the quiet interval with every peer still polling, KiB: what the
    /// allocator kept of the pages the polls' arrival used for a moment is given back by now.
    pub rss_quiet_kib: u64,
    /// (quiet - before) / peers, bytes (all nodes together).
    pub bytes_per_peer_quiet: f64,
    /// Seconds of quiet before `rss_quiet_kib` was read.
    pub quiet_seconds: f64,
    /// Each node's share.
    pub nodes: Vec<NodeIdle>,
    /// Redis commands over the quiet interval with the nodes up and no poll open (on a
    /// Cluster, summed over its masters).
    pub redis_no_polls: Option<QuietRate>,
    /// Redis commands over the quiet interval with every poll open.
    pub redis_polls_open: Option<QuietRate>,
}

/// One node of an idle run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeIdle {
    /// Long-polls open on this node.
    pub peers: usize,
    /// RSS before its peers connected, KiB.
    pub rss_before_kib: u64,
    /// RSS with its peers polling, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / peers, bytes.
    pub bytes_per_peer: f64,
    /// RSS after the quiet interval, its peers still polling, KiB.
    pub rss_quiet_kib: u64,
    /// (quiet - before) / peers, bytes.
    pub bytes_per_peer_quiet: f64,
}

/// What an idle run is asked to do.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// Long-polls to open, spread over the nodes.
    pub peers: usize,
    /// Serve them with bare axum + hyper (one node, memory) instead of the server.
    pub stack_only: bool,
    /// Server nodes.
    pub nodes: usize,
    /// Where the nodes keep mail.
    pub store: Store,
    /// How long Redis's command rate is measured, with no poll and with all polls open; the
    /// memory is read again after that long with every poll open.
    pub quiet: Duration,
    /// Twirp long-polls or gRPC-web streams.
    pub protocol: Protocol,
    /// Have one call (`GET /_ping`) answered on each connection before its poll.
    pub warm: bool,
}

impl IdleReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut extra = String::new();
        if self.nodes.len() > 1 {
            for (n, node) in self.nodes.iter().enumerate() {
                extra += &format!(
                    "  node {n}: {} polls, {} KiB -> {} KiB, {:.0} bytes ({:.1} KiB) per poll; \
                     after the quiet {} KiB, {:.0} bytes ({:.1} KiB)\n",
                    node.peers,
                    node.rss_before_kib,
                    node.rss_after_kib,
                    node.bytes_per_peer,
                    node.bytes_per_peer / 1024.0,
                    node.rss_quiet_kib,
                    node.bytes_per_peer_quiet,
                    node.bytes_per_peer_quiet / 1024.0
                );
            }
        }
        if let (Some(none), Some(open)) = (&self.redis_no_polls, &self.redis_polls_open) {
            extra += &format!(
                "  redis commands/s  {:>10.1} with no poll open, {:.1} with {} open ({:.0} s each)\n",
                none.commands_per_s, open.commands_per_s, self.peers, open.seconds
            );
        }
        format!(
            "idle ({server}, {store} store, {nodes} node(s)): {peers} peers waiting on {protocol}{warm}\n\
             \x20 server RSS        {before:>10} KiB -> {after} KiB\n\
             \x20 per idle peer     {per:>10.0} bytes ({kib:.1} KiB)\n\
             \x20 after {quiet:.0} s quiet  {quiet_rss:>8} KiB, {quiet_per:.0} bytes ({quiet_kib:.1} KiB) per idle peer\n{extra}",
            store = self.store,
            protocol = self.protocol,
            warm = if self.warm { " (warm connections)" } else { "" },
            nodes = self.nodes.len(),
            server = self.server,
            peers = self.peers,
            before = self.rss_before_kib,
            after = self.rss_after_kib,
            per = self.bytes_per_peer,
            kib = self.bytes_per_peer / 1024.0,
            quiet = self.quiet_seconds,
            quiet_rss = self.rss_quiet_kib,
            quiet_per = self.bytes_per_peer_quiet,
            quiet_kib = self.bytes_per_peer_quiet / 1024.0,
        )
    }
}

/// Opens `peers` long-polls spread over server child processes and measures their memory and,
/// with Redis, Redis's command rate with no poll and with every poll open.
///
/// `stack_only` serves them with bare axum + hyper instead (a handler that never answers), to
/// show what the HTTP stack alone costs.
///
/// # Errors
///
/// [`LoadError::FileLimit`] when the open-file limit is too low for `peers` connections, or
/// another [`LoadError`] when the server cannot start or a connection fails.
pub async fn run(options: IdleOptions) -> Result<IdleReport, LoadError> {
    let IdleOptions {
        peers,
        stack_only,
        nodes,
        ref store,
        quiet,
        protocol,
        warm,
    } = options;
    crate::process::ensure_open_files(peers as u64 + 64)?;
    if nodes > 1 && (stack_only || *store == Store::Memory) {
        return Err(LoadError::ServerProcess(
            "nodes share mail only through Redis: give --store redis with --nodes above 1".into(),
        ));
    }
    let key = ProjectKey::generate()?;
    let kind = if stack_only {
        ServerKind::Pending
    } else {
        ServerKind::Pulsebeam
    };
    let mut counters = RedisShards::connect(store).await?;
    // The longest poll the server allows, so none returns while they are counted.
    let servers = spawn_nodes(nodes, kind, &key, 120_000, peers, store).await?;
    let result = measure(
        &servers,
        &key,
        peers,
        counters.as_mut(),
        quiet,
        (protocol, warm),
    )
    .await;
    for server in servers {
        server.stop().await;
    }
    let (node_figures, redis_no_polls, redis_polls_open) = result?;
    let before: u64 = node_figures.iter().map(|n| n.rss_before_kib).sum();
    let after: u64 = node_figures.iter().map(|n| n.rss_after_kib).sum();
    let settled: u64 = node_figures.iter().map(|n| n.rss_quiet_kib).sum();
    Ok(IdleReport {
        server: if stack_only { "pending" } else { "pulsebeam" },
        store: store.name(),
        protocol: protocol.name(),
        warm,
        peers,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_peer: per_peer(before, after, peers),
        rss_quiet_kib: settled,
        bytes_per_peer_quiet: per_peer(before, settled, peers),
        quiet_seconds: quiet.as_secs_f64(),
        nodes: node_figures,
        redis_no_polls,
        redis_polls_open,
    })
}

type Measured = (Vec<NodeIdle>, Option<QuietRate>, Option<QuietRate>);

/// Bytes per peer that memory grew from `before_kib` to `now_kib` over `peers` peers.
fn per_peer(before_kib: u64, now_kib: u64, peers: usize) -> f64 {
    now_kib.saturating_sub(before_kib) as f64 * 1024.0 / peers.max(1) as f64
}

/// Every node's RSS, KiB, in node order.
fn rss_of(servers: &[ServerProcess]) -> Result<Vec<u64>, LoadError> {
    servers.iter().map(ServerProcess::rss_kib).collect()
}

async fn measure(
    servers: &[ServerProcess],
    key: &ProjectKey,
    peers: usize,
    mut counters: Option<&mut RedisShards>,
    quiet: Duration,
    (protocol, warm): (Protocol, bool),
) -> Result<Measured, LoadError> {
    let count = servers.len().max(1);
    let mut requests = Vec::with_capacity(peers);
    for i in 0..peers {
        let server = servers
            .get(i % count)
            .ok_or_else(|| LoadError::ServerProcess("no server node".into()))?;
        requests.push((
            server.addr(),
            recv_request(key, server.addr(), i, protocol)?,
        ));
    }
    // Each server has answered a call (`/metrics`) before `before` is read, so its runtime's and
    // allocator's first-use costs are not counted against the peers.
    for server in servers {
        crate::relay::wait_for_polls(server.addr(), 0).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let redis_no_polls = match counters.as_deref_mut() {
        Some(c) => Some(c.rate_over(quiet).await?),
        None => None,
    };
    let before = rss_of(servers)?;
    let mut sockets = Vec::with_capacity(peers);
    for (addr, request) in &requests {
        let mut socket = TcpStream::connect(addr).await?;
        if warm {
            ping(&mut socket, *addr).await?;
        }
        socket.write_all(request).await?;
        sockets.push(socket);
    }
    let mut node_figures = Vec::with_capacity(count);
    for (n, server) in servers.iter().enumerate() {
        let here = (0..peers).filter(|i| i % count == n).count();
        crate::relay::wait_for_polls(server.addr(), here).await?;
        node_figures.push(here);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_of(servers)?;
    let redis_polls_open = match counters {
        Some(c) => Some(c.rate_over(quiet).await?),
        None => {
            tokio::time::sleep(quiet).await;
            None
        }
    };
    let settled = rss_of(servers)?;
    drop(sockets);
    let nodes = node_figures
        .into_iter()
        .zip(before.into_iter().zip(after.into_iter().zip(settled)))
        .map(|(here, (before, (after, settled)))| NodeIdle {
            peers: here,
            rss_before_kib: before,
            rss_after_kib: after,
            bytes_per_peer: per_peer(before, after, here),
            rss_quiet_kib: settled,
            bytes_per_peer_quiet: per_peer(before, settled, here),
        })
        .collect();
    Ok((nodes, redis_no_polls, redis_polls_open))
}

/// One `GET /_ping` answered on `socket` (the server's answer is `Pong`).
async fn ping(socket: &mut TcpStream, addr: std::net::SocketAddr) -> Result<(), LoadError> {
    socket
        .write_all(format!("GET /_ping HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::with_capacity(512);
    while !answer.ends_with(b"Pong") {
        if answer.len() > 4096 || socket.read_buf(&mut answer).await? == 0 {
            return Err(LoadError::Protocol(
                "the server did not answer GET /_ping with Pong".into(),
            ));
        }
    }
    Ok(())
}

fn recv_request(
    key: &ProjectKey,
    addr: std::net::SocketAddr,
    i: usize,
    protocol: Protocol,
) -> Result<Vec<u8>, LoadError> {
    let peer = format!("i{i}");
    let bearer = key.bearer(&peer)?;
    let body = RecvReq {
        src: Some(PeerInfo {
            group_id: GROUP.into(),
            peer_id: peer,
            conn_id: 1_000,
        }),
    }
    .encode_to_vec();
    let (path, content_type, body) = match protocol {
        Protocol::Twirp => (
            "/twirp/pulsebeam.v1.Tunnel/Recv",
            "application/protobuf",
            body,
        ),
        Protocol::GrpcWeb => (
            "/grpc/pulsebeam.v1.Signaling/Recv",
            "application/grpc-web+proto\r\nx-grpc-web: 1\r\ngrpc-timeout: 900000m",
            crate::grpc_web::framed(&body).to_vec(),
        ),
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\nauthorization: {bearer}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    Ok(request)
}
