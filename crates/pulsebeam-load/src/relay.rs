//! `relay`: peer pairs relaying messages through the server, for throughput and latency.
//!
//! Pair `i` is a receiver `r<i>` long-polling `Recv` in a loop on its own connection (Twirp), or
//! holding a `Recv` stream open on it (gRPC-web), and a sender `s<i>` calling `Send` to it on
//! another, in the same protocol. Each message carries its sequence number in
//! `header.seqnum` and its send time (microseconds since the run began) in the signal's
//! `generationCounter`, so the receiver checks order and measures latency without shared
//! state. A refused `Send` (`resource_exhausted`, `unavailable`) is retried, as the browser
//! client does, so every message is eventually accepted and must then be delivered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use pulsebeam_server::proto::{
    IceCandidate, Message, MessageHeader, MessagePayload, PayloadType, PeerInfo, RecvReq, RecvResp,
    SendReq, Signal, SignalData,
};
use serde::Serialize;

use crate::client::{metric, Connection, RECV, SEND};
use crate::grpc_web::{Frame, GrpcConnection, SIGNALING};
use crate::keys::{ProjectKey, GROUP};
use crate::process::{spawn_nodes, ServerKind, ServerProcess, Store};
use crate::redis_figures::{RelayRedis, ShardPeers};
use crate::redis_stats::RedisShards;
use crate::stats::Percentiles;
use crate::LoadError;

/// What a relay run is asked to do.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Sender/receiver pairs.
    pub pairs: usize,
    /// How long the senders send.
    pub duration: Duration,
    /// Messages per second over all pairs; `None`: each sender sends as fast as `Send` returns.
    pub rate: Option<f64>,
    /// Server nodes (child processes); with more than one, each pair's receiver and sender are
    /// on different nodes, so every message crosses nodes.
    pub nodes: usize,
    /// Where the nodes keep mail; more than one node needs Redis.
    pub store: Store,
    /// The protocol the pairs speak.
    pub protocol: Protocol,
}

/// The protocol of a run's clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Twirp `pulsebeam.v1.Tunnel`: `Recv` long-polls (the 0.0.17 client).
    #[default]
    Twirp,
    /// gRPC-web `pulsebeam.v1.Signaling`: `Recv` streams (the 0.0.18 on clients).
    GrpcWeb,
}

impl Protocol {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Twirp => "twirp",
            Protocol::GrpcWeb => "grpc-web",
        }
    }
}

/// The figures of a relay run.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    /// Server nodes.
    pub nodes: usize,
    /// `memory`, `redis` or `redis-cluster`.
    pub store: &'static str,
    /// `twirp` or `grpc-web`.
    pub protocol: &'static str,
    /// Pairs.
    pub pairs: usize,
    /// Seconds the senders sent.
    pub duration_s: f64,
    /// The asked rate, if any (messages per second over all pairs).
    pub target_rate: Option<f64>,
    /// Messages the server accepted (`Send` answered 200).
    pub accepted: u64,
    /// `Send` answers that asked to retry (429/503); the message was sent again.
    pub retried: u64,
    /// Messages received.
    pub delivered: u64,
    /// Accepted but never received (must be 0).
    pub lost: u64,
    /// Received out of order or twice (must be 0).
    pub out_of_order: u64,
    /// Delivered messages per second of sending.
    pub messages_per_s: f64,
    /// Twirp: `Recv` calls that returned at least one message; gRPC-web: streams opened.
    pub recv_batches: u64,
    /// Relay latency: from the moment the message was due to be sent (its slot at a set rate,
    /// else the start of its `Send`) to the moment its `Recv` answer was decoded.
    pub latency: Percentiles,
    /// Messages delivered whose sender called a different node than their receiver.
    pub cross_node: u64,
    /// What Redis did from the first `Send` to the last delivery (Redis store only).
    pub redis: Option<RelayRedis>,
    /// Server CPU seconds (user + system, summed over the nodes) from the first `Send` to the
    /// last delivery.
    pub server_cpu_s: f64,
    /// Server CPU per delivered message, microseconds.
    pub server_cpu_us_per_message: f64,
    /// Server RSS before the run, KiB (summed over the nodes).
    pub server_rss_before_kib: u64,
    /// Server RSS after the run, KiB (summed over the nodes).
    pub server_rss_after_kib: u64,
}

impl RelayReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let rate = self
            .target_rate
            .map_or("as fast as Send returns".to_owned(), |r| {
                format!("{r:.0} msg/s")
            });
        let redis = self.redis.as_ref().map_or(String::new(), RelayRedis::table);
        format!(
            "relay: {pairs} pairs, {nodes} node(s), {store} store, {protocol}, {dur:.1} s, {rate}\n\
             \x20 messages/s        {mps:>10.0}\n\
             \x20 accepted          {acc:>10}\n\
             \x20 delivered         {del:>10}   (lost {lost}, out of order {ooo}, retried sends {ret})\n\
             \x20 messages per Recv {batch:>10.2}   (gRPC-web: per stream)\n\
             \x20 latency p50       {p50:>10.2} ms\n\
             \x20 latency p90       {p90:>10.2} ms\n\
             \x20 latency p99       {p99:>10.2} ms\n\
             \x20 latency max       {max:>10.2} ms\n\
             \x20 across nodes      {cross:>10}\n\
             {redis}\
             \x20 server CPU        {cpu:>10.1} µs per message ({cpu_s:.2} s)\n\
             \x20 server RSS        {before:>10} KiB -> {after} KiB\n",
            nodes = self.nodes,
            store = self.store,
            protocol = self.protocol,
            cross = self.cross_node,
            pairs = self.pairs,
            dur = self.duration_s,
            mps = self.messages_per_s,
            acc = self.accepted,
            del = self.delivered,
            lost = self.lost,
            ooo = self.out_of_order,
            ret = self.retried,
            batch = if self.recv_batches == 0 { 0.0 } else { self.delivered as f64 / self.recv_batches as f64 },
            p50 = self.latency.p50_ms,
            p90 = self.latency.p90_ms,
            p99 = self.latency.p99_ms,
            max = self.latency.max_ms,
            cpu = self.server_cpu_us_per_message,
            cpu_s = self.server_cpu_s,
            before = self.server_rss_before_kib,
            after = self.server_rss_after_kib,
        )
    }
}

/// A pair's shared progress.
struct Pair {
    accepted: AtomicU64,
}

#[derive(Default)]
struct ReceiverResult {
    latencies: Vec<u64>,
    delivered: u64,
    out_of_order: u64,
    batches: u64,
}

/// Starts the server in a child process and runs the pairs against it.
///
/// # Errors
///
/// A [`LoadError`] when the server cannot start or a call fails in a way no client would retry.
pub async fn run(options: RelayOptions) -> Result<RelayReport, LoadError> {
    crate::process::ensure_open_files(options.pairs as u64 * 4 + 64)?;
    if options.nodes > 1 && options.store == Store::Memory {
        return Err(LoadError::ServerProcess(
            "nodes share mail only through Redis: give --store redis with --nodes above 1".into(),
        ));
    }
    let mut counters = RedisShards::connect(&options.store).await?;
    let key = ProjectKey::generate()?;
    let servers = spawn_nodes(
        options.nodes,
        ServerKind::Pulsebeam,
        &key,
        20_000,
        options.pairs * 2,
        &options.store,
    )
    .await?;
    let addrs: Vec<SocketAddr> = servers.iter().map(ServerProcess::addr).collect();
    let rss = || -> Result<u64, LoadError> { servers.iter().map(ServerProcess::rss_kib).sum() };
    let cpu = || -> Result<f64, LoadError> { servers.iter().map(ServerProcess::cpu_seconds).sum() };
    let result = drive(&addrs, &key, options, counters.as_mut(), rss, cpu).await;
    for server in servers {
        server.stop().await;
    }
    result
}

/// The node pair `i`'s receiver polls (and the sender's is the next one, so with several
/// nodes every message crosses nodes).
fn receiver_node(i: usize, nodes: usize) -> usize {
    i % nodes
}

fn sender_node(i: usize, nodes: usize) -> usize {
    (i + 1) % nodes
}

/// Runs the pairs against nodes already listening on `addrs`; `rss_kib` reads their memory,
/// `cpu_seconds` the CPU time they have used, `counters` (if any) the Redis they share.
///
/// # Errors
///
/// A [`LoadError`] when a call fails in a way no client would retry.
pub async fn drive(
    addrs: &[SocketAddr],
    key: &ProjectKey,
    options: RelayOptions,
    mut counters: Option<&mut RedisShards>,
    rss_kib: impl Fn() -> Result<u64, LoadError>,
    cpu_seconds: impl Fn() -> Result<f64, LoadError>,
) -> Result<RelayReport, LoadError> {
    let pairs = options.pairs;
    let nodes = addrs.len().max(1);
    let node_addr = |n: usize| addrs.get(n).copied();
    let missing = || LoadError::ServerProcess("no server node to call".into());
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let senders_done = Arc::new(AtomicBool::new(false));
    let retried = Arc::new(AtomicU64::new(0));
    let progress: Vec<Arc<Pair>> = (0..pairs)
        .map(|_| {
            Arc::new(Pair {
                accepted: AtomicU64::new(0),
            })
        })
        .collect();

    let rss_before = rss_kib()?;
    let mut receivers = Vec::with_capacity(pairs);
    for (i, pair) in progress.iter().enumerate() {
        let bearer = key.bearer(&format!("r{i}"))?;
        let (pair, done) = (Arc::clone(pair), Arc::clone(&senders_done));
        let addr = node_addr(receiver_node(i, nodes)).ok_or_else(missing)?;
        receivers.push(match options.protocol {
            Protocol::Twirp => {
                let mut connection = Connection::open(addr).await?;
                tokio::spawn(async move {
                    receive(&mut connection, &bearer, i, start, &pair, &done).await
                })
            }
            Protocol::GrpcWeb => {
                let mut connection = GrpcConnection::open(addr).await?;
                tokio::spawn(async move {
                    receive_stream(&mut connection, &bearer, i, start, &pair, &done).await
                })
            }
        });
    }
    for (n, addr) in addrs.iter().enumerate() {
        let polling_here = (0..pairs).filter(|&i| receiver_node(i, nodes) == n).count();
        wait_for_polls(*addr, polling_here).await?;
    }
    let redis_before = match counters.as_deref_mut() {
        Some(c) => {
            // Which shard each receiver's keys live on, read before the counted span (`SCAN`).
            let receiver_shard: Vec<Option<usize>> = if c.is_cluster() {
                let peers = c.peers_with_keys().await?;
                (0..pairs)
                    .map(|i| {
                        let name = format!("r{i}");
                        peers.iter().position(|on_shard| on_shard.contains(&name))
                    })
                    .collect()
            } else {
                vec![Some(0); pairs]
            };
            Some((c.snapshot().await?, receiver_shard, Instant::now()))
        }
        None => None,
    };

    let cpu_before = cpu_seconds()?;
    let interval = options
        .rate
        .map(|rate| Duration::from_secs_f64(pairs as f64 / rate.max(f64::MIN_POSITIVE)));
    let send_start = Instant::now();
    let mut senders = Vec::with_capacity(pairs);
    for (i, pair) in progress.iter().enumerate() {
        let bearer = key.bearer(&format!("s{i}"))?;
        let (pair, stop, retried) = (Arc::clone(pair), Arc::clone(&stop), Arc::clone(&retried));
        let addr = node_addr(sender_node(i, nodes)).ok_or_else(missing)?;
        let mut connection = SendConnection::open(addr, options.protocol).await?;
        // Spread the senders' slots over one interval so paced sends do not arrive in bursts.
        let offset = interval.map_or(Duration::ZERO, |d| d.mul_f64(i as f64 / pairs as f64));
        senders.push(tokio::spawn(async move {
            send(
                &mut connection,
                &bearer,
                i,
                start,
                interval,
                offset,
                &pair,
                &stop,
                &retried,
            )
            .await
        }));
    }
    tokio::time::sleep(options.duration).await;
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender
            .await
            .map_err(|e| LoadError::Protocol(format!("a sender task failed: {e}")))??;
    }
    let duration = send_start.elapsed().as_secs_f64();
    senders_done.store(true, Ordering::SeqCst);

    let mut total = ReceiverResult::default();
    let mut cross_node = 0;
    let mut delivered_to = Vec::with_capacity(pairs);
    for (i, receiver) in receivers.into_iter().enumerate() {
        // A receiver whose messages never all arrive gives up after a drain period.
        let result = tokio::time::timeout(Duration::from_secs(30), receiver)
            .await
            .map_err(|_| LoadError::Protocol("a receiver did not finish within 30 s".into()))?
            .map_err(|e| LoadError::Protocol(format!("a receiver task failed: {e}")))??;
        total.latencies.extend(result.latencies);
        total.delivered += result.delivered;
        delivered_to.push(result.delivered);
        if receiver_node(i, nodes) != sender_node(i, nodes) {
            cross_node += result.delivered;
        }
        total.out_of_order += result.out_of_order;
        total.batches += result.batches;
    }
    let server_cpu_s = cpu_seconds()? - cpu_before;
    let accepted: u64 = progress
        .iter()
        .map(|p| p.accepted.load(Ordering::SeqCst))
        .sum();
    let redis = match (counters, redis_before) {
        (Some(c), Some((before, receiver_shard, since))) => {
            let seconds = since.elapsed().as_secs_f64();
            let after = c.snapshot().await?;
            let shards: Vec<_> = c.shards().cloned().collect();
            let mut peers = vec![ShardPeers::default(); shards.len()];
            for (shard, delivered) in receiver_shard.iter().zip(&delivered_to) {
                if let Some(p) = shard.and_then(|n| peers.get_mut(n)) {
                    p.receivers += 1;
                    p.messages += delivered;
                }
            }
            Some(RelayRedis::between(
                &shards,
                (&before, &after),
                &peers,
                total.delivered,
                seconds,
                c.is_cluster(),
            ))
        }
        _ => None,
    };
    let rss_after = rss_kib()?;
    Ok(RelayReport {
        nodes,
        store: options.store.name(),
        protocol: options.protocol.name(),
        pairs,
        duration_s: duration,
        target_rate: options.rate,
        accepted,
        retried: retried.load(Ordering::SeqCst),
        delivered: total.delivered,
        lost: accepted.saturating_sub(total.delivered),
        out_of_order: total.out_of_order,
        messages_per_s: total.delivered as f64 / duration,
        recv_batches: total.batches,
        latency: Percentiles::of(&mut total.latencies),
        cross_node,
        redis,
        server_cpu_s,
        server_cpu_us_per_message: server_cpu_s * 1e6 / total.delivered.max(1) as f64,
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
    })
}

fn receiver_conn(i: usize) -> u32 {
    1_000 + i as u32
}

fn sender_conn(i: usize) -> u32 {
    1_000_000 + i as u32
}

fn peer(name: String, conn_id: u32) -> PeerInfo {
    PeerInfo {
        group_id: GROUP.into(),
        peer_id: name,
        conn_id,
    }
}

/// How long the polls get to open on a server whose `/metrics` does not count them (404).
const UNCOUNTED_POLLS_WAIT: Duration = Duration::from_secs(2);

/// Waits until `n` long-polls are open (the server's `pulsebeam_polling_connections` gauge), or
/// [`UNCOUNTED_POLLS_WAIT`] on a server without `/metrics`.
///
/// # Errors
///
/// [`LoadError::Protocol`] when they are not all open within 60 s.
pub async fn wait_for_polls(addr: SocketAddr, n: usize) -> Result<(), LoadError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut connection = Connection::open(addr).await?;
    loop {
        let reply = connection.get("/metrics").await?;
        if reply.status == 404 {
            // Another server under comparison (run through `PULSEBEAM_LOAD_SERVER_WRAPPER`)
            // that counts no polls: give its clients a fixed time to open them.
            tokio::time::sleep(UNCOUNTED_POLLS_WAIT).await;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&reply.body);
        let polling = metric(&text, "pulsebeam_polling_connections").unwrap_or(0.0);
        if polling >= n as f64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadError::Protocol(format!(
                "only {polling} of {n} long-polls were open after 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn receive(
    connection: &mut Connection,
    bearer: &str,
    i: usize,
    start: Instant,
    pair: &Pair,
    senders_done: &AtomicBool,
) -> Result<ReceiverResult, LoadError> {
    let body = Bytes::from(
        RecvReq {
            src: Some(peer(format!("r{i}"), receiver_conn(i))),
        }
        .encode_to_vec(),
    );
    let mut result = ReceiverResult::default();
    let mut expected = 1u32;
    loop {
        if senders_done.load(Ordering::SeqCst)
            && result.delivered >= pair.accepted.load(Ordering::SeqCst)
        {
            return Ok(result);
        }
        // Once the senders are done and everything accepted has arrived, the open poll would
        // only wait out its timeout: leave it. Never earlier, so no answer is abandoned.
        let delivered = result.delivered;
        let finished = async {
            while !(senders_done.load(Ordering::SeqCst)
                && delivered >= pair.accepted.load(Ordering::SeqCst))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let reply = tokio::select! {
            reply = connection.post(RECV, bearer, body.clone()) => reply?,
            () = finished => return Ok(result),
        };
        if reply.is_retryable() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if reply.status != 200 {
            return Err(LoadError::Protocol(format!(
                "Recv answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            )));
        }
        let now = start.elapsed().as_micros() as u64;
        let messages = RecvResp::decode(reply.body)
            .map_err(|e| LoadError::Protocol(format!("Recv answer does not decode: {e}")))?
            .msgs;
        if !messages.is_empty() {
            result.batches += 1;
        }
        for message in messages {
            let (seq, sent_at) = stamp(&message);
            if seq != expected {
                result.out_of_order += 1;
            }
            expected = seq.wrapping_add(1);
            result.delivered += 1;
            result.latencies.push(now.saturating_sub(sent_at));
        }
    }
}

/// A receiver on gRPC-web: one `Recv` stream, reopened when it ends, each message a frame.
async fn receive_stream(
    connection: &mut GrpcConnection,
    bearer: &str,
    i: usize,
    start: Instant,
    pair: &Pair,
    senders_done: &AtomicBool,
) -> Result<ReceiverResult, LoadError> {
    let body = RecvReq {
        src: Some(peer(format!("r{i}"), receiver_conn(i))),
    }
    .encode_to_vec();
    let mut result = ReceiverResult::default();
    let mut expected = 1u32;
    let done = |result: &ReceiverResult| {
        senders_done.load(Ordering::SeqCst)
            && result.delivered >= pair.accepted.load(Ordering::SeqCst)
    };
    while !done(&result) {
        let mut stream = connection
            .call(&format!("{SIGNALING}/Recv"), Some(bearer), &body)
            .await?;
        result.batches += 1;
        loop {
            // Short reads, so a finished run is noticed while the stream stays open.
            let frame = stream.next(Duration::from_millis(20)).await?;
            let Some(frame) = frame else {
                if done(&result) {
                    return Ok(result);
                }
                continue;
            };
            let data = match frame {
                Frame::Data(data) => data,
                Frame::Status(0, _) => break,
                // RESOURCE_EXHAUSTED, UNAVAILABLE: reopened after a pause, as the clients do.
                Frame::Status(8 | 14, _) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    break;
                }
                Frame::Status(code, message) => {
                    return Err(LoadError::Protocol(format!(
                        "Recv stream ended with {code}: {message}"
                    )))
                }
            };
            let now = start.elapsed().as_micros() as u64;
            let mut resp = RecvResp::decode(data)
                .map_err(|e| LoadError::Protocol(format!("a Recv frame does not decode: {e}")))?;
            let Some(message) = resp.msgs.pop() else {
                continue;
            };
            if message.header.is_none() {
                // A keep-alive.
                continue;
            }
            let (seq, sent_at) = stamp(&message);
            if seq != expected {
                result.out_of_order += 1;
            }
            expected = seq.wrapping_add(1);
            result.delivered += 1;
            result.latencies.push(now.saturating_sub(sent_at));
        }
    }
    Ok(result)
}

fn stamp(message: &Message) -> (u32, u64) {
    let seq = message.header.as_ref().map_or(0, |h| h.seqnum);
    let sent_at = match message
        .payload
        .as_ref()
        .and_then(|p| p.payload_type.as_ref())
    {
        Some(PayloadType::Signal(signal)) => u64::from(signal.generation_counter),
        _ => 0,
    };
    (seq, sent_at)
}

/// A sender's connection, in the run's protocol.
enum SendConnection {
    Twirp(Connection),
    GrpcWeb(GrpcConnection),
}

/// What became of one `Send`.
enum Sent {
    Accepted,
    Retry,
    Refused(String),
}

impl SendConnection {
    async fn open(addr: SocketAddr, protocol: Protocol) -> Result<Self, LoadError> {
        Ok(match protocol {
            Protocol::Twirp => SendConnection::Twirp(Connection::open(addr).await?),
            Protocol::GrpcWeb => SendConnection::GrpcWeb(GrpcConnection::open(addr).await?),
        })
    }

    /// Sends `request` (a `SendReq`) as the clients of the protocol do.
    async fn send(&mut self, bearer: &str, request: &Bytes) -> Result<Sent, LoadError> {
        match self {
            SendConnection::Twirp(connection) => {
                let reply = connection.post(SEND, bearer, request.clone()).await?;
                Ok(if reply.status == 200 {
                    Sent::Accepted
                } else if reply.is_retryable() {
                    Sent::Retry
                } else {
                    Sent::Refused(format!(
                        "Send answered {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    ))
                })
            }
            SendConnection::GrpcWeb(connection) => {
                let call = connection
                    .call(&format!("{SIGNALING}/Send"), Some(bearer), request)
                    .await?;
                let (_, status) = call.finish(Duration::from_secs(30)).await?;
                Ok(match status {
                    Some((0, _)) => Sent::Accepted,
                    // RESOURCE_EXHAUSTED and UNAVAILABLE, which the clients retry.
                    Some((8 | 14, _)) => Sent::Retry,
                    other => Sent::Refused(format!("Send ended with {other:?}")),
                })
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    connection: &mut SendConnection,
    bearer: &str,
    i: usize,
    start: Instant,
    interval: Option<Duration>,
    offset: Duration,
    pair: &Pair,
    stop: &AtomicBool,
    retried: &AtomicU64,
) -> Result<(), LoadError> {
    let src = peer(format!("s{i}"), sender_conn(i));
    let dst = peer(format!("r{i}"), receiver_conn(i));
    let mut seq = 1u32;
    let mut slot = Instant::now() + offset;
    while !stop.load(Ordering::SeqCst) {
        let due = match interval {
            Some(interval) => {
                tokio::time::sleep_until(slot.into()).await;
                let due = slot;
                slot += interval;
                due
            }
            None => Instant::now(),
        };
        // The send time travels in the message; u32 microseconds last 71 minutes, runs are shorter.
        let sent_at = due.saturating_duration_since(start).as_micros() as u32;
        let body = Bytes::from(
            SendReq {
                msg: Some(candidate(&src, &dst, seq, sent_at)),
            }
            .encode_to_vec(),
        );
        loop {
            match connection.send(bearer, &body).await? {
                Sent::Accepted => break,
                Sent::Retry => {
                    retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Sent::Refused(why) => return Err(LoadError::Protocol(why)),
            }
        }
        pair.accepted.fetch_add(1, Ordering::SeqCst);
        seq += 1;
    }
    Ok(())
}

/// A message the size of a real one: an ICE candidate, as most signaling traffic is.
fn candidate(src: &PeerInfo, dst: &PeerInfo, seq: u32, sent_at: u32) -> Message {
    Message {
        header: Some(MessageHeader {
            src: Some(src.clone()),
            dst: Some(dst.clone()),
            seqnum: seq,
            reliable: true,
        }),
        payload: Some(MessagePayload {
            payload_type: Some(PayloadType::Signal(Signal {
                generation_counter: sent_at,
                data: Some(SignalData::IceCandidate(IceCandidate {
                    candidate: "candidate:842163049 1 udp 1677729535 192.0.2.10 61665 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag abcd network-cost 999".into(),
                    sdp_m_line_index: Some(0),
                    sdp_mid: Some("0".into()),
                    username: Some("abcd".into()),
                    password: None,
                })),
            })),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A server that counts no polls (`/metrics` answers 404, as another implementation run
    /// for comparison does) gets a fixed time for its polls instead of failing after 60 s.
    #[tokio::test]
    async fn a_server_without_metrics_gets_a_fixed_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
        let start = Instant::now();
        wait_for_polls(addr, 5)
            .await
            .expect("a fixed wait, not an error");
        let waited = start.elapsed();
        assert!(
            (UNCOUNTED_POLLS_WAIT..Duration::from_secs(30)).contains(&waited),
            "waited {waited:?}"
        );
    }
}
