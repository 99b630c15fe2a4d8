//! A bounded loopback load test: P sender/receiver pairs relay messages through the server
//! for a few seconds over keep-alive HTTP/1.1 connections, next to the same clients calling an
//! empty axum handler. Prints messages per second, Send→Recv latency percentiles, and the
//! ratio to the empty handler. Clients and server share the process (and the 2 cores), so read
//! the ratio, not the absolute numbers.
//!
//! `cargo run --release -p pulsebeam-server --example relay_load -- [PAIRS] [SECONDS]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use pulsebeam_server::proto::{
    Join, Message, MessageHeader, MessagePayload, PayloadType, PeerInfo, RecvReq, RecvResp, SendReq,
};
use pulsebeam_server::{serve, Config, ProjectConfig, Server};
use pulsebeam_token::{AccessToken, KeyPair, PeerClaims, PeerPolicy};

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    auth: &str,
    body: Vec<u8>,
) -> (u16, Bytes) {
    sender.ready().await.unwrap();
    let request = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/protobuf")
        .header("authorization", auth)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn info(peer: String, conn: u32) -> PeerInfo {
    PeerInfo {
        group_id: "room".into(),
        peer_id: peer,
        conn_id: conn,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: usize = args.next().map_or(50, |a| a.parse().expect("PAIRS"));
    let seconds: u64 = args.next().map_or(3, |a| a.parse().expect("SECONDS"));
    let run_for = Duration::from_secs(seconds.clamp(1, 30));

    let pair = KeyPair::generate().unwrap();
    let mut config = Config::default()
        .with_project(ProjectConfig::new("load").with_key(pair.api_key(), &pair.public_key()));
    config.limits.rate_per_sec = 100_000;
    config.limits.rate_burst = 100_000;
    config.limits.poll_timeout_ms = 1_000;
    let server = Server::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let empty = axum::Router::new().route("/empty", axum::routing::post(|| async { "" }));
    let server = server.with_routes(empty);
    tokio::spawn(serve(listener, server, std::future::pending()));

    let app = AccessToken::new(pair.api_key(), &pair.api_secret()).unwrap();
    let auth = |peer: &str| {
        let claims = PeerClaims::new("room", peer)
            .unwrap()
            .with_allow_policy(PeerPolicy::new("room", "*").unwrap());
        format!("Bearer {}", app.create_token(&claims, 3600).unwrap())
    };

    // Baseline: the same clients, closed loop, against an empty handler.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..pairs {
        let (stop, count, token) = (stop.clone(), count.clone(), auth(&format!("s{i}")));
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                post(&mut c, addr, "/empty", &token, Vec::new()).await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks.drain(..) {
        t.await.unwrap();
    }
    let empty_rate = count.load(Ordering::Relaxed) as f64 / run_for.as_secs_f64();

    // Relay: sender i sends to receiver i as fast as Send returns; seqnum carries the send time.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    for i in 0..pairs {
        let (stop, token) = (stop.clone(), auth(&format!("r{i}")));
        receivers.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let body = RecvReq {
                src: Some(info(format!("r{i}"), 1000 + i as u32)),
            }
            .encode_to_vec();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, bytes) = post(
                    &mut c,
                    addr,
                    "/twirp/pulsebeam.v1.Tunnel/Recv",
                    &token,
                    body.clone(),
                )
                .await;
                assert_eq!(status, 200);
                let now = start.elapsed().as_micros() as u64;
                for m in RecvResp::decode(bytes).unwrap().msgs {
                    let at = u64::from(m.header.unwrap().seqnum);
                    latencies.push(now.saturating_sub(at));
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut senders = Vec::new();
    for i in 0..pairs {
        let (stop, sent, refused) = (stop.clone(), sent.clone(), refused.clone());
        let token = auth(&format!("s{i}"));
        senders.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let msg = Message {
                    header: Some(MessageHeader {
                        src: Some(info(format!("s{i}"), 5000 + i as u32)),
                        dst: Some(info(format!("r{i}"), 1000 + i as u32)),
                        seqnum: start.elapsed().as_micros() as u32,
                        reliable: false,
                    }),
                    payload: Some(MessagePayload {
                        payload_type: Some(PayloadType::Join(Join {})),
                    }),
                };
                let body = SendReq { msg: Some(msg) }.encode_to_vec();
                let (status, _) = post(
                    &mut c,
                    addr,
                    "/twirp/pulsebeam.v1.Tunnel/Send",
                    &token,
                    body,
                )
                .await;
                if status == 200 {
                    sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    for t in senders {
        t.await.unwrap();
    }
    let mut latencies = Vec::new();
    for r in receivers {
        latencies.extend(r.await.unwrap());
    }
    latencies.sort_unstable();
    let relay_rate = latencies.len() as f64 / run_for.as_secs_f64();
    println!("pairs: {pairs}, {} s each phase", run_for.as_secs());
    println!("empty handler: {empty_rate:.0} calls/s");
    println!(
        "relay: {relay_rate:.0} messages/s delivered ({} sent, {} refused), {:.2} of the empty handler's call rate",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        relay_rate / empty_rate
    );
    println!(
        "Send->Recv latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
}
