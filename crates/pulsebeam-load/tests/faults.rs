//! Server faults, with the server in this process on 127.0.0.1:0: clients that vanish mid
//! long-poll, slow and stalled clients, connection floods, a restart while peers poll, and a
//! receiver that never polls. In each, no accepted message is lost and memory stays bounded
//! (resident set size from /proc/self/status before and after, with generous bounds).
//!
//! No test asserts a timing except a generous upper bound on "the server answered at all".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use pulsebeam_load::client::{metric, Connection, PREPARE, RECV, SEND};
use pulsebeam_load::keys::{server_config, ProjectKey, GROUP};
use pulsebeam_server::proto::{
    Join, Message, MessageHeader, MessagePayload, PayloadType, PeerInfo, RecvReq, RecvResp, Sdp,
    SendReq, Signal, SignalData,
};
use pulsebeam_server::{serve, Config, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Memory-measuring tests run one at a time: they share the process's RSS.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Generous bound for "the server answered at all".
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(key: Arc<ProjectKey>, tweak: impl FnOnce(&mut Config)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, key, tweak)
    }

    fn start_on(
        listener: TcpListener,
        key: Arc<ProjectKey>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = server_config(key.kid(), &key.public_key(), 20_000, 1_000);
        tweak(&mut config);
        let server = Server::new(config).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(serve(listener, server, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            serving,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(ANSWER_WITHIN, &mut self.serving)
            .await
            .expect("serve() returns after shutdown")
            .unwrap()
            .unwrap();
    }

    async fn metric(&self, name: &str) -> f64 {
        let mut connection = Connection::open(self.addr).await.unwrap();
        let reply = connection.get("/metrics").await.unwrap();
        metric(&String::from_utf8_lossy(&reply.body), name).unwrap_or(0.0)
    }

    /// Waits until `name` satisfies `ok`, for at most [`ANSWER_WITHIN`].
    async fn wait_metric(&self, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            let value = self.metric(name).await;
            if ok(value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{name} stayed at {value}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn peer(name: &str, conn_id: u32) -> PeerInfo {
    PeerInfo {
        group_id: GROUP.into(),
        peer_id: name.into(),
        conn_id,
    }
}

fn recv_body(name: &str, conn_id: u32) -> Bytes {
    Bytes::from(
        RecvReq {
            src: Some(peer(name, conn_id)),
        }
        .encode_to_vec(),
    )
}

fn send_body(from: &str, to: &str, to_conn: u32, seq: u32, payload_bytes: usize) -> Bytes {
    let payload = if payload_bytes == 0 {
        PayloadType::Join(Join {})
    } else {
        PayloadType::Signal(Signal {
            generation_counter: 0,
            data: Some(SignalData::Sdp(Sdp {
                kind: 1,
                sdp: "v".repeat(payload_bytes),
            })),
        })
    };
    let message = Message {
        header: Some(MessageHeader {
            src: Some(peer(from, 5_000)),
            dst: Some(peer(to, to_conn)),
            seqnum: seq,
            reliable: true,
        }),
        payload: Some(MessagePayload {
            payload_type: Some(payload),
        }),
    };
    Bytes::from(SendReq { msg: Some(message) }.encode_to_vec())
}

/// A raw HTTP/1.1 `Recv` request, to write on a bare socket.
fn raw_recv(addr: SocketAddr, bearer: &str, name: &str, conn_id: u32) -> Vec<u8> {
    let body = recv_body(name, conn_id);
    let mut request = format!(
        "POST {RECV} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/protobuf\r\nauthorization: {bearer}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

fn rss_kib() -> u64 {
    pulsebeam_load::process::rss_kib("/proc/self/status").unwrap()
}

fn seqs(reply_body: Bytes) -> Vec<u32> {
    RecvResp::decode(reply_body)
        .unwrap()
        .msgs
        .iter()
        .map(|m| m.header.as_ref().unwrap().seqnum)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_long_poll_frees_the_poll_and_loses_no_message() {
    let _serial = MEMORY.lock().await;
    let key = Arc::new(ProjectKey::generate().unwrap());
    let server = TestServer::start(key.clone(), |_| {}).await;
    let sender = key.bearer("sender").unwrap();
    let requests: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let name = format!("c{i}");
            raw_recv(server.addr, &key.bearer(&name).unwrap(), &name, 1_000)
        })
        .collect();
    let mut rounds = Vec::new();
    for round in 0..4 {
        let before = rss_kib();
        let mut sockets = Vec::new();
        for request in &requests {
            let mut socket = TcpStream::connect(server.addr).await.unwrap();
            socket.write_all(request).await.unwrap();
            sockets.push(socket);
        }
        server
            .wait_metric("pulsebeam_polling_connections", |n| n >= 300.0)
            .await;
        drop(sockets);
        // The server notices every vanished client and ends its poll.
        server
            .wait_metric("pulsebeam_polling_connections", |n| n == 0.0)
            .await;
        rounds.push(rss_kib().saturating_sub(before));
        if round == 0 {
            // A message for a receiver whose client vanished waits for its next poll.
            let mut connection = Connection::open(server.addr).await.unwrap();
            let reply = connection
                .post(SEND, &sender, send_body("sender", "c7", 1_000, 1, 0))
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
            let reply = connection
                .post(RECV, &key.bearer("c7").unwrap(), recv_body("c7", 1_000))
                .await
                .unwrap();
            assert_eq!(seqs(reply.body), vec![1]);
        }
    }
    // After the first round has sized the allocator, further rounds of 300 vanished polls do
    // not keep growing memory (bounded generously: 8 MiB a round, ~27 KiB per poll).
    for growth in rounds.iter().skip(1) {
        assert!(
            *growth < 8 * 1024,
            "RSS grew {growth} KiB in a round: {rounds:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_as_the_receiver_vanishes_is_not_lost() {
    let key = Arc::new(ProjectKey::generate().unwrap());
    let server = TestServer::start(key.clone(), |_| {}).await;
    let sender = key.bearer("sender").unwrap();
    let receiver = key.bearer("gone").unwrap();
    let mut send = Connection::open(server.addr).await.unwrap();
    for seq in 1..=20u32 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        socket
            .write_all(&raw_recv(server.addr, &receiver, "gone", 1_000))
            .await
            .unwrap();
        server
            .wait_metric("pulsebeam_polling_connections", |n| n >= 1.0)
            .await;
        // Close and send at once: the poll may still be open when the message arrives.
        drop(socket);
        let reply = send
            .post(SEND, &sender, send_body("sender", "gone", 1_000, seq, 0))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        server
            .wait_metric("pulsebeam_polling_connections", |n| n == 0.0)
            .await;
        let mut fresh = Connection::open(server.addr).await.unwrap();
        let reply = fresh
            .post(RECV, &receiver, recv_body("gone", 1_000))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            seqs(reply.body),
            vec![seq],
            "message {seq} went to a vanished client"
        );
    }
    server.shutdown().await;
}

/// Stalled clients: half a header block, or full headers and part of the body.
async fn stall(addr: SocketAddr, bearer: &str, i: usize) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let head = if i % 2 == 0 {
        format!("POST {SEND} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: applic")
    } else {
        format!(
            "POST {SEND} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/protobuf\r\nauthorization: {bearer}\r\ncontent-length: 1000\r\n\r\n0123456789"
        )
    };
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_cost_bounded_memory_and_block_no_one() {
    let _serial = MEMORY.lock().await;
    let key = Arc::new(ProjectKey::generate().unwrap());
    let server = TestServer::start(key.clone(), |_| {}).await;
    let bearer = key.bearer("slow").unwrap();
    let before = rss_kib();
    let mut stalled = Vec::new();
    for i in 0..400 {
        stalled.push(stall(server.addr, &bearer, i).await);
    }
    // A well-behaved peer still relays through the server while 400 clients hang.
    let receiver = key.bearer("fine").unwrap();
    let mut poll = Connection::open(server.addr).await.unwrap();
    let polling =
        tokio::spawn(async move { poll.post(RECV, &receiver, recv_body("fine", 1_000)).await });
    server
        .wait_metric("pulsebeam_polling_connections", |n| n >= 1.0)
        .await;
    let mut send = Connection::open(server.addr).await.unwrap();
    let reply = tokio::time::timeout(
        ANSWER_WITHIN,
        send.post(
            SEND,
            &key.bearer("sender").unwrap(),
            send_body("sender", "fine", 1_000, 1, 0),
        ),
    )
    .await
    .expect("Send answered while clients stall")
    .unwrap();
    assert_eq!(reply.status, 200);
    let reply = tokio::time::timeout(ANSWER_WITHIN, polling)
        .await
        .expect("Recv answered while clients stall")
        .unwrap()
        .unwrap();
    assert_eq!(seqs(reply.body), vec![1]);
    // Each stalled connection holds at most its buffers: far under 64 KiB.
    let per_connection = rss_kib().saturating_sub(before) / 400;
    assert!(
        per_connection < 64,
        "{per_connection} KiB per stalled connection"
    );
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_costs_bounded_memory() {
    let _serial = MEMORY.lock().await;
    let key = Arc::new(ProjectKey::generate().unwrap());
    let server = TestServer::start(key.clone(), |_| {}).await;
    let bearer = key.bearer("deaf").unwrap();
    let addr = server.addr;
    let request = format!(
        "POST {PREPARE} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/protobuf\r\nauthorization: {bearer}\r\ncontent-length: 0\r\n\r\n"
    );
    let before = rss_kib();
    // Pipelined calls whose answers are never read: once the socket buffers fill, the server
    // must stop reading rather than queue answers in memory.
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut writer = tokio::spawn(async move {
        for _ in 0..20_000 {
            if socket.write_all(request.as_bytes()).await.is_err() {
                break;
            }
        }
        socket
    });
    // The writer blocks once the server stops reading; give it a moment to get there.
    let _ = tokio::time::timeout(Duration::from_secs(3), &mut writer).await;
    let mut connection = Connection::open(addr).await.unwrap();
    let reply = tokio::time::timeout(ANSWER_WITHIN, connection.get("/healthz"))
        .await
        .expect("the server answers others meanwhile")
        .unwrap();
    assert_eq!(reply.status, 200);
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "RSS grew {grown} KiB for one client that never reads"
    );
    writer.abort();
    server.shutdown().await;
}

/// A client that stops halfway through its headers is disconnected after
/// `limits.header_timeout_secs`; one that stops halfway through its body gets
/// `deadline_exceeded` (408) after `limits.body_timeout_secs`, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_are_closed_by_the_server() {
    let key = Arc::new(ProjectKey::generate().unwrap());
    let server = TestServer::start(key.clone(), |config| {
        config.limits.header_timeout_secs = 1;
        config.limits.body_timeout_secs = 1;
    })
    .await;
    let bearer = key.bearer("slow").unwrap();
    for (i, what) in ["header", "body"].into_iter().enumerate() {
        let mut socket = stall(server.addr, &bearer, i).await;
        let mut answer = Vec::new();
        // Read until the server closes; generous bound, the timeouts are 1 s.
        let read =
            tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "a stalled request ({what}) was kept open for 30 s"
        );
        let answer = String::from_utf8_lossy(&answer);
        if what == "body" {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("deadline_exceeded"), "{answer}");
        }
    }
    // A kept-alive connection that stays idle after its answer is closed too.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr);
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "an idle kept-alive connection was kept open for 30 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The server still serves.
    let mut connection = Connection::open(server.addr).await.unwrap();
    let reply = connection.get("/healthz").await.unwrap();
    assert_eq!(reply.status, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_leaves_the_server_serving() {
    let _serial = MEMORY.lock().await;
    let key = Arc::new(ProjectKey::generate().unwrap());
    let server = TestServer::start(key.clone(), |_| {}).await;
    // Both ends of every connection are in this process: stay well inside the open-file limit.
    let limit = pulsebeam_load::process::open_files_limit().unwrap();
    let count = 1_500.min(limit.saturating_sub(256) / 2) as u64;
    assert!(
        count >= 100,
        "raise the open-file limit (ulimit -n) above 456 for this test"
    );
    let before = rss_kib();
    let mut flood = Vec::new();
    for _ in 0..count {
        flood.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut connection = tokio::time::timeout(ANSWER_WITHIN, Connection::open(server.addr))
        .await
        .expect("connect during the flood")
        .unwrap();
    let reply = tokio::time::timeout(
        ANSWER_WITHIN,
        connection.post(PREPARE, &key.bearer("p").unwrap(), Bytes::new()),
    )
    .await
    .expect("Prepare answered during the flood")
    .unwrap();
    assert_eq!(reply.status, 200);
    let per_connection = rss_kib().saturating_sub(before) / 1_500;
    assert!(
        per_connection < 64,
        "{per_connection} KiB per idle connection"
    );
    drop(flood);
    // And after it.
    let reply = connection.get("/healthz").await.unwrap();
    assert_eq!(reply.status, 200);
    server.shutdown().await;
}

/// What a polling client saw.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Ok,
    Code(u16, Option<String>),
    ConnectionError,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_ride_out_a_restart_through_retryable_answers() {
    let key = Arc::new(ProjectKey::generate().unwrap());
    let first = TestServer::start(key.clone(), |_| {}).await;
    let addr = first.addr;
    const PEERS: usize = 10;
    let restarted = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut peers = Vec::new();
    for i in 0..PEERS {
        let name = format!("p{i}");
        let bearer = key.bearer(&name).unwrap();
        let (restarted, recovered, seen, stop) = (
            restarted.clone(),
            recovered.clone(),
            seen.clone(),
            stop.clone(),
        );
        peers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            let mut counted = false;
            let mut connection: Option<Connection> = None;
            while !stop.load(Ordering::SeqCst) {
                if connection.is_none() {
                    match Connection::open(addr).await {
                        Ok(c) => connection = Some(c),
                        Err(_) => {
                            seen.lock().unwrap().push(Seen::ConnectionError);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let Some(open) = connection.as_mut() else {
                    continue;
                };
                match open.post(RECV, &bearer, recv_body(&name, 1_000)).await {
                    Ok(reply) if reply.status == 200 => {
                        received.extend(seqs(reply.body));
                        seen.lock().unwrap().push(Seen::Ok);
                        if restarted.load(Ordering::SeqCst) && !counted {
                            counted = true;
                            recovered.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(reply) => {
                        seen.lock()
                            .unwrap()
                            .push(Seen::Code(reply.status, reply.twirp_code()));
                        // The 0.0.17 client backs off and retries these.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => {
                        seen.lock().unwrap().push(Seen::ConnectionError);
                        connection = None;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            received
        }));
    }
    first
        .wait_metric("pulsebeam_polling_connections", |n| n >= PEERS as f64)
        .await;
    // Messages accepted just before the restart reach their polling receivers.
    let sender = key.bearer("sender").unwrap();
    let mut send = Connection::open(addr).await.unwrap();
    for i in 0..PEERS {
        let reply = send
            .post(
                SEND,
                &sender,
                send_body("sender", &format!("p{i}"), 1_000, 1, 0),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    first.shutdown().await;

    // The same address again, as a restarted process would bind it.
    let deadline = Instant::now() + ANSWER_WITHIN;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    restarted.store(true, Ordering::SeqCst);
    let second = TestServer::start_on(listener, key.clone(), |_| {});
    let deadline = Instant::now() + ANSWER_WITHIN;
    while recovered.load(Ordering::SeqCst) < PEERS {
        assert!(
            Instant::now() < deadline,
            "only {} of {PEERS} peers recovered",
            recovered.load(Ordering::SeqCst)
        );
        // Wake the restarted server's polls so each peer completes one.
        let mut send = Connection::open(addr).await.unwrap();
        for i in 0..PEERS {
            let _ = send
                .post(
                    SEND,
                    &sender,
                    send_body("sender", &format!("p{i}"), 1_000, 2, 0),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    second.shutdown().await;
    for peer in peers {
        let received = tokio::time::timeout(ANSWER_WITHIN, peer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            received.first(),
            Some(&1),
            "the message sent before the restart: {received:?}"
        );
    }
    // Nothing but answers the client retries: never a code that would close the peer.
    for s in seen.lock().unwrap().iter() {
        match s {
            Seen::Ok | Seen::ConnectionError => {}
            Seen::Code(503, Some(code)) if code == "unavailable" => {}
            other => panic!("a peer saw {other:?} across the restart"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_for_receivers_that_never_poll_is_bounded_and_expires() {
    let _serial = MEMORY.lock().await;
    let key = Arc::new(ProjectKey::generate().unwrap());
    const CAPACITY: usize = 16;
    const MAILBOXES: usize = 50;
    let server = TestServer::start(key.clone(), |config| {
        config.limits.mailbox_capacity = CAPACITY;
        config.limits.max_connections_per_project = MAILBOXES;
        config.limits.message_ttl_secs = 1;
        config.limits.connection_idle_secs = 1;
    })
    .await;
    let sender = key.bearer("sender").unwrap();
    let mut connection = Connection::open(server.addr).await.unwrap();
    let before = rss_kib();
    let (mut accepted, mut refused) = (0usize, 0usize);
    // 80 receivers that never poll, 20 messages of 1 KiB each.
    for i in 0..80 {
        for seq in 1..=20 {
            let reply = connection
                .post(
                    SEND,
                    &sender,
                    send_body("sender", &format!("n{i}"), 2_000, seq, 1_024),
                )
                .await
                .unwrap();
            match reply.status {
                200 => accepted += 1,
                429 => {
                    assert_eq!(reply.twirp_code().as_deref(), Some("resource_exhausted"));
                    refused += 1;
                }
                other => panic!("Send answered {other}"),
            }
        }
    }
    assert!(
        accepted <= CAPACITY * MAILBOXES,
        "{accepted} queued past the bounds"
    );
    assert!(
        refused >= 80 * 20 - CAPACITY * MAILBOXES,
        "{refused} refused"
    );
    let queued = server.metric("pulsebeam_mailbox_messages").await;
    assert!(queued <= (CAPACITY * MAILBOXES) as f64, "{queued} queued");
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "RSS grew {grown} KiB for at most {} KiB of mail",
        CAPACITY * MAILBOXES
    );
    // Undelivered mail expires: the mailboxes empty, and the drops are counted.
    server
        .wait_metric("pulsebeam_mailbox_messages", |n| n == 0.0)
        .await;
    let expired = server
        .metric("pulsebeam_messages_dropped_total{reason=\"expired\"}")
        .await;
    assert!(
        expired >= accepted as f64,
        "{expired} expired of {accepted}"
    );
    // And the budget comes back once the empty mailboxes have idled out.
    server
        .wait_metric("pulsebeam_connections", |n| n == 0.0)
        .await;
    let reply = connection
        .post(SEND, &sender, send_body("sender", "later", 2_000, 1, 0))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    server.shutdown().await;
}

/// Beyond `limits.max_open_connections` TCP connections, further clients wait (in the listen
/// backlog) until one closes, and are then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped() {
    let key = Arc::new(ProjectKey::generate().unwrap());
    let server = TestServer::start(key.clone(), |config| {
        config.limits.max_open_connections = 1;
    })
    .await;
    let mut first = Connection::open(server.addr).await.unwrap();
    assert_eq!(first.get("/healthz").await.unwrap().status, 200);
    let waiting = tokio::spawn(async move {
        let mut second = Connection::open(server.addr).await.unwrap();
        second.get("/healthz").await.unwrap().status
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a connection beyond the cap was served"
    );
    drop(first);
    let status = tokio::time::timeout(ANSWER_WITHIN, waiting)
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(status, 200);
    server.shutdown().await;
}
