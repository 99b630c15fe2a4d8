//! Measures the server's memory per idle long-polling peer: N peers, each with its own token,
//! open a `Recv` on its own HTTP/1.1 connection and wait; the resident set size is read before
//! and after. The clients are raw sockets that write one request and never read, so the
//! process's growth is the server's.
//!
//! `cargo run --release -p pulsebeam-server --example idle_memory -- 2000` (Linux only: reads
//! `/proc/self/status`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use prost::Message as _;
use pulsebeam_server::proto::{PeerInfo, RecvReq};
use pulsebeam_server::{serve, Config, ProjectConfig, Server};
use pulsebeam_token::{AccessToken, KeyPair, PeerClaims, PeerPolicy};
use tokio::io::AsyncWriteExt as _;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1000, |a| a.parse().expect("N peers"));
    let pair = KeyPair::generate().unwrap();
    let mut config = Config::default()
        .with_project(ProjectConfig::new("mem").with_key(pair.api_key(), &pair.public_key()));
    config.limits.poll_timeout_ms = 60_000;
    let server = Server::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let baseline = std::env::args().nth(2).is_some_and(|a| a == "--baseline");
    if baseline {
        // The same stack with a handler that never answers: what axum + hyper cost alone.
        let waiting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&waiting);
        let router = axum::Router::new()
            .route(
                "/twirp/pulsebeam.v1.Tunnel/Recv",
                axum::routing::post(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::future::pending::<&'static str>()
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let n = waiting.load(std::sync::atomic::Ordering::SeqCst);
                    async move { format!("pulsebeam_polling_connections {n}\n") }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
    } else {
        tokio::spawn(serve(listener, server, std::future::pending()));
    }

    let app = AccessToken::new(pair.api_key(), &pair.api_secret()).unwrap();
    let requests: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let peer = format!("p{i}");
            let claims = PeerClaims::new("room", &peer)
                .unwrap()
                .with_allow_policy(PeerPolicy::new("room", "*").unwrap());
            let token = app.create_token(&claims, 3600).unwrap();
            let body = RecvReq {
                src: Some(PeerInfo {
                    group_id: "room".into(),
                    peer_id: peer,
                    conn_id: 1000,
                }),
            }
            .encode_to_vec();
            let mut request = format!(
                "POST /twirp/pulsebeam.v1.Tunnel/Recv HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/protobuf\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(&body);
            request
        })
        .collect();
    // Warm up the runtime and allocator with one poll before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let mut sockets = Vec::with_capacity(n);
    for request in &requests {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(request).await.unwrap();
        sockets.push(socket);
    }
    // Wait until every poll is registered (the metrics gauge), then measure.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut probe, &mut text)
            .await
            .unwrap();
        let polling = text
            .lines()
            .find_map(|l| l.strip_prefix("pulsebeam_polling_connections "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if polling >= n {
            break;
        }
    }
    let after = rss_kib();
    let per_peer = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "{n} idle long-polling peers: RSS {before} KiB -> {after} KiB, {per_peer:.0} bytes per peer (incl. the raw client socket and the token cache entry)"
    );
    drop(sockets);
}
