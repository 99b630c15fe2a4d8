//! Integration tests: the server on 127.0.0.1:0, a client speaking real HTTP/1.1 with
//! protobuf (or JSON) bodies and bearer tokens minted by the SDK.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use pulsebeam_server::proto::{
    Ack, AckRange, Bye, Join, Message, MessageHeader, MessagePayload, PayloadType, PeerInfo,
    PrepareResp, RecvReq, RecvResp, Sdp, SdpKind, SendReq, Signal, SignalData,
};
use pulsebeam_server::{serve, Config, ProjectConfig, Server};
use pulsebeam_token::{AccessToken, FixedClock, KeyPair, PeerClaims, PeerPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const T0: u64 = 1_750_000_000;

/// A running server, its keys and its clock.
struct Harness {
    addr: SocketAddr,
    server: Server,
    pair: KeyPair,
    now: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let pair = KeyPair::generate().unwrap();
        let mut config = Config::default()
            .with_project(ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()));
        config.limits.poll_timeout_ms = 2_000;
        tweak(&mut config);
        Self::start_config(config, pair).await
    }

    async fn start_config(config: Config, pair: KeyPair) -> Self {
        Self::start_built(config, pair, |builder| builder).await
    }

    /// A server whose builder `build` adjusts (a store of the test's own, ...).
    async fn start_built(
        config: Config,
        pair: KeyPair,
        build: impl FnOnce(pulsebeam_server::ServerBuilder) -> pulsebeam_server::ServerBuilder,
    ) -> Self {
        let now = Arc::new(AtomicU64::new(T0));
        let clock_now = Arc::clone(&now);
        let server = build(Server::builder(config).clock(move || clock_now.load(Ordering::SeqCst)))
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, server.clone(), async {
            let _ = stopped.await;
        }));
        Harness {
            addr,
            server,
            pair,
            now,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn app(&self) -> AccessToken {
        self.app_of(&self.pair)
    }

    fn app_of(&self, pair: &KeyPair) -> AccessToken {
        AccessToken::new(pair.api_key(), &pair.api_secret())
            .unwrap()
            .with_clock(FixedClock(self.now.load(Ordering::SeqCst)))
    }

    /// A token for `group/peer` that may reach anyone in `group`.
    fn token(&self, group: &str, peer: &str) -> String {
        self.token_with(group, peer, Some(PeerPolicy::new(group, "*").unwrap()))
    }

    fn token_with(&self, group: &str, peer: &str, policy: Option<PeerPolicy>) -> String {
        mint(&self.app(), group, peer, policy, 3600)
    }

    fn peer(&self, group: &str, peer: &str, conn: u32) -> Peer {
        Peer {
            addr: self.addr,
            token: self.token(group, peer),
            info: info(group, peer, conn),
        }
    }

    async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }
}

fn mint(
    app: &AccessToken,
    group: &str,
    peer: &str,
    policy: Option<PeerPolicy>,
    ttl: u64,
) -> String {
    let mut claims = PeerClaims::new(group, peer).unwrap();
    match policy {
        Some(policy) => {
            claims.set_allow_policy(policy);
            app.create_token(&claims, ttl).unwrap()
        }
        None => {
            app.mint(
                &claims,
                &pulsebeam_token::TokenOptions::new(ttl).allow_no_policy(),
            )
            .unwrap()
            .token
        }
    }
}

fn info(group: &str, peer: &str, conn: u32) -> PeerInfo {
    PeerInfo {
        group_id: group.into(),
        peer_id: peer.into(),
        conn_id: conn,
    }
}

/// What came back from one HTTP call.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    /// The Twirp error code of a non-2xx reply.
    fn code(&self) -> String {
        assert!(!self.status.is_success(), "expected an error, got {self:?}");
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v["code"].as_str().unwrap().to_owned()
    }

    fn decode<T: prost::Message + Default>(&self) -> T {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        T::decode(self.body.as_ref()).unwrap()
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Writes `request` on a fresh connection and reads the answer's head and body as text (the
/// server closes or answers; reading stops at the first complete answer or after 2 s idle).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before all of an oversized request is written.
    let _ = socket.write_all(request).await;
    read_answer(&mut socket).await
}

/// Reads from `socket` until one whole answer (head and `Content-Length` body) arrived, the
/// server closed, or nothing came for 2 s; the bytes as text.
async fn read_answer(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Twirp call with a protobuf body.
async fn call(addr: SocketAddr, method: &str, token: Option<&str>, body: Vec<u8>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("content-type", "application/protobuf"),
        ("accept", "application/protobuf, application/json"),
    ];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    http(
        addr,
        "POST",
        &format!("/twirp/pulsebeam.v1.Tunnel/{method}"),
        &headers,
        body,
    )
    .await
}

/// A client connection of one peer, as the browser SDK would drive it.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    token: String,
    info: PeerInfo,
}

impl Peer {
    fn message(
        &self,
        dst: &PeerInfo,
        seqnum: u32,
        reliable: bool,
        payload: PayloadType,
    ) -> Message {
        Message {
            header: Some(MessageHeader {
                src: Some(self.info.clone()),
                dst: Some(dst.clone()),
                seqnum,
                reliable,
            }),
            payload: Some(MessagePayload {
                payload_type: Some(payload),
            }),
        }
    }

    async fn send_message(&self, msg: Message) -> Reply {
        let body = SendReq { msg: Some(msg) }.encode_to_vec();
        call(self.addr, "Send", Some(&self.token), body).await
    }

    async fn send(
        &self,
        dst: &PeerInfo,
        seqnum: u32,
        reliable: bool,
        payload: PayloadType,
    ) -> Reply {
        self.send_message(self.message(dst, seqnum, reliable, payload))
            .await
    }

    async fn send_ok(&self, dst: &PeerInfo, seqnum: u32, reliable: bool, payload: PayloadType) {
        let reply = self.send(dst, seqnum, reliable, payload).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(reply.body.is_empty(), "SendResp is empty");
    }

    async fn recv_reply(&self) -> Reply {
        let body = RecvReq {
            src: Some(self.info.clone()),
        }
        .encode_to_vec();
        call(self.addr, "Recv", Some(&self.token), body).await
    }

    async fn recv(&self) -> Vec<Message> {
        self.recv_reply().await.decode::<RecvResp>().msgs
    }
}

fn join() -> PayloadType {
    PayloadType::Join(Join {})
}

fn offer(sdp: &str) -> PayloadType {
    PayloadType::Signal(Signal {
        generation_counter: 0,
        data: Some(SignalData::Sdp(Sdp {
            kind: SdpKind::Offer as i32,
            sdp: sdp.into(),
        })),
    })
}

fn answer(sdp: &str) -> PayloadType {
    PayloadType::Signal(Signal {
        generation_counter: 0,
        data: Some(SignalData::Sdp(Sdp {
            kind: SdpKind::Answer as i32,
            sdp: sdp.into(),
        })),
    })
}

fn ack(seq: u32) -> PayloadType {
    PayloadType::Ack(Ack {
        ack_ranges: vec![AckRange {
            seqnum_start: seq,
            seqnum_end: seq + 1,
        }],
    })
}

fn bye() -> PayloadType {
    PayloadType::Bye(Bye {})
}

fn payload_of(msg: &Message) -> &PayloadType {
    msg.payload.as_ref().unwrap().payload_type.as_ref().unwrap()
}

fn src_of(msg: &Message) -> &PeerInfo {
    msg.header.as_ref().unwrap().src.as_ref().unwrap()
}

/// Waits (boundedly) until the server reports `n` open long-polls, so that a test can act
/// while they wait instead of guessing how long registering takes.
async fn wait_polling(addr: SocketAddr, n: u64) {
    let want = format!("pulsebeam_polling_connections {n}\n");
    for _ in 0..500 {
        let metrics = http(addr, "GET", "/metrics", &[], Vec::new()).await;
        if String::from_utf8_lossy(&metrics.body).contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never had {n} polls open");
}

/// Collects messages with repeated polls until `n` arrived.
async fn recv_n(peer: &Peer, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    for _ in 0..20 {
        out.extend(peer.recv().await);
        if out.len() >= n {
            break;
        }
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
}

mod relay {
    use super::*;
    use pulsebeam_server::store;

    #[tokio::test]
    async fn two_peers_exchange_join_signal_ack_bye_in_order() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 2_818_993_334);
        let bob = h.peer("room", "bob", 2_907_437_535);

        // Bob starts polling; alice discovers him through conn 0.
        let bob_poll = tokio::spawn({
            let bob = bob.clone();
            async move { bob.recv().await }
        });
        wait_polling(h.addr, 1).await;
        alice
            .send_ok(&info("room", "bob", 0), 0, false, join())
            .await;
        let got = bob_poll.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(payload_of(&got[0]), &join());
        assert_eq!(src_of(&got[0]), &alice.info);

        // Bob (larger conn id) offers; alice answers; both ack; both say bye.
        bob.send_ok(&alice.info, 1, true, offer("v=0 bob")).await;
        bob.send_ok(&alice.info, 2, true, offer("v=0 bob again"))
            .await;
        let at_alice = recv_n(&alice, 2).await;
        assert_eq!(payload_of(&at_alice[0]), &offer("v=0 bob"));
        assert_eq!(payload_of(&at_alice[1]), &offer("v=0 bob again"));
        assert_eq!(at_alice[1].header.as_ref().unwrap().seqnum, 2);

        alice.send_ok(&bob.info, 0, false, ack(1)).await;
        alice.send_ok(&bob.info, 0, false, ack(2)).await;
        alice.send_ok(&bob.info, 1, true, answer("v=0 alice")).await;
        let at_bob = recv_n(&bob, 3).await;
        assert_eq!(payload_of(&at_bob[0]), &ack(1));
        assert_eq!(payload_of(&at_bob[1]), &ack(2));
        assert_eq!(payload_of(&at_bob[2]), &answer("v=0 alice"));

        bob.send_ok(&alice.info, 0, false, ack(1)).await;
        bob.send_ok(&alice.info, 0, false, bye()).await;
        alice.send_ok(&bob.info, 0, false, bye()).await;
        let at_alice = recv_n(&alice, 2).await;
        assert_eq!(payload_of(&at_alice[0]), &ack(1));
        assert_eq!(payload_of(&at_alice[1]), &bye());
        let at_bob = recv_n(&bob, 1).await;
        assert_eq!(payload_of(&at_bob[0]), &bye());
    }

    /// A long-poll's answer counts as delivered once it is written to the connection, not when
    /// the server took it for writing: a batch stuck behind a client that does not read (or a
    /// server killed before the bytes left it) is handed out again, first, to the next `Recv`.
    #[tokio::test]
    async fn an_answer_not_yet_written_is_handed_out_again_to_the_next_recv() {
        use tokio::io::AsyncWriteExt as _;
        const PAYLOAD: usize = 1 << 20;
        let h = Harness::start_with(|c| {
            c.limits.max_payload_bytes = PAYLOAD + 1024;
            c.limits.max_body_bytes = PAYLOAD + 16 * 1024;
        })
        .await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        // 12 MiB: more than the server's socket send buffer can take (4 MiB at most on Linux
        // by default) and the stuck client's small receive buffer.
        let big = "x".repeat(PAYLOAD);
        for seq in 1..=12 {
            alice.send_ok(&bob.info, seq, true, offer(&big)).await;
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stuck = socket.connect(h.addr).await.unwrap();
        let body = RecvReq {
            src: Some(bob.info.clone()),
        }
        .encode_to_vec();
        let head = format!(
            "POST /twirp/pulsebeam.v1.Tunnel/Recv HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/protobuf\r\ncontent-length: {}\r\n\r\n",
            h.addr,
            bob.token,
            body.len()
        );
        stuck.write_all(head.as_bytes()).await.unwrap();
        stuck.write_all(&body).await.unwrap();
        // The stuck poll takes the batch and starts writing it; it never gets far.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let got = bob.recv().await;
        let seqs: Vec<u32> = got
            .iter()
            .map(|m| m.header.as_ref().unwrap().seqnum)
            .collect();
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
        drop(stuck);
        // Acknowledged now: nothing comes twice.
        assert!(bob.recv().await.is_empty());
    }

    /// The memory store, with acknowledgements held until the test lets them through.
    struct HeldAcks {
        inner: pulsebeam_server::MemoryStore,
        release: Arc<tokio::sync::Semaphore>,
        started: Arc<AtomicU64>,
    }

    impl pulsebeam_server::MailboxStore for HeldAcks {
        fn deliver<'a>(
            &'a self,
            dst: store::PeerAddr<'a>,
            conn_id: u32,
            envelope: store::Envelope,
        ) -> store::BoxFuture<'a, Result<(), store::StoreError>> {
            self.inner.deliver(dst, conn_id, envelope)
        }

        fn poll<'a>(
            &'a self,
            me: store::PeerAddr<'a>,
            conn_id: u32,
            options: store::PollOptions,
        ) -> store::BoxFuture<'a, Result<store::Polled, store::StoreError>> {
            self.inner.poll(me, conn_id, options)
        }

        fn ack<'a>(
            &'a self,
            me: store::PeerAddr<'a>,
            conn_id: u32,
            receipt: store::Receipt,
        ) -> store::BoxFuture<'a, Result<(), store::StoreError>> {
            self.started.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let _permit = self.release.acquire().await;
                self.inner.ack(me, conn_id, receipt).await
            })
        }

        fn online<'a>(
            &'a self,
            project: &'a str,
        ) -> store::BoxFuture<'a, Result<Vec<pulsebeam_server::OnlineConnection>, store::StoreError>>
        {
            self.inner.online(project)
        }

        fn stats(&self) -> store::BoxFuture<'_, Result<store::StoreStats, store::StoreError>> {
            self.inner.stats()
        }

        fn health(&self) -> store::BoxFuture<'_, Result<(), store::StoreError>> {
            self.inner.health()
        }
    }

    /// A server on [`HeldAcks`] with `poll_timeout_ms`; the semaphore lets acknowledgements
    /// through, the counter says how many began.
    async fn held_acks(
        poll_timeout_ms: u64,
    ) -> (Harness, Arc<tokio::sync::Semaphore>, Arc<AtomicU64>) {
        let pair = KeyPair::generate().unwrap();
        let mut config = Config::default()
            .with_project(ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()));
        config.limits.poll_timeout_ms = poll_timeout_ms;
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let store = HeldAcks {
            inner: pulsebeam_server::MemoryStore::new(&config.limits, Duration::from_secs(5))
                .unwrap(),
            release: Arc::clone(&release),
            started: Arc::clone(&started),
        };
        let h = Harness::start_built(config, pair, |b| b.store(store)).await;
        (h, release, started)
    }

    /// The client has the whole answer before its acknowledgement is stored: a server killed
    /// while the store takes the acknowledgement cannot leave the client without the batch
    /// that the store then counts as delivered.
    #[tokio::test]
    async fn the_whole_answer_is_out_before_its_acknowledgement_is_stored() {
        let (h, release, started) = held_acks(2_000).await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        alice.send_ok(&bob.info, 1, true, offer("v=0")).await;
        let got = tokio::time::timeout(Duration::from_secs(10), bob.recv())
            .await
            .expect("the answer waited for its acknowledgement to be stored");
        assert_eq!(got.len(), 1);
        assert_eq!(payload_of(&got[0]), &offer("v=0"));
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "the acknowledgement is under way"
        );
        release.add_permits(1);
        for _ in 0..500 {
            let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
            if String::from_utf8_lossy(&metrics.body)
                .contains("pulsebeam_messages_delivered_total 1\n")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Stored: the next poll gets nothing twice.
        assert!(bob.recv().await.is_empty());
    }

    /// A client that reads its answer and polls again before the server has stored that
    /// answer's acknowledgement does not get the batch twice: the new `Recv` waits for it.
    #[tokio::test]
    async fn a_recv_sent_before_the_last_answers_acknowledgement_is_stored_does_not_get_it_again() {
        let (h, release, started) = held_acks(1_000).await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        alice.send_ok(&bob.info, 1, true, offer("v=0")).await;
        assert_eq!(bob.recv().await.len(), 1);
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // The acknowledgement is under way (held); bob polls again at once.
        let again = tokio::spawn({
            let bob = bob.clone();
            async move { bob.recv().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!again.is_finished(), "the new Recv took the batch over");
        release.add_permits(1);
        assert!(again.await.unwrap().is_empty(), "the batch came twice");
    }

    #[tokio::test]
    async fn a_message_sent_before_the_receiver_polls_is_delivered() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        // Discovery with no live connection waits for the first poll ...
        alice
            .send_ok(&info("room", "bob", 0), 0, false, join())
            .await;
        // ... and so does a direct message to a connection that has never polled.
        alice.send_ok(&bob.info, 1, true, offer("early")).await;
        let got = bob.recv().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(payload_of(&got[0]), &join());
        assert_eq!(payload_of(&got[1]), &offer("early"));
    }

    #[tokio::test]
    async fn discovery_reaches_the_live_connection() {
        let h = Harness::start_with(|c| c.limits.poll_timeout_ms = 1_000).await;
        let alice = h.peer("room", "alice", 100);
        let stale = h.peer("room", "bob", 300);
        let live = h.peer("room", "bob", 400);
        // Bob's old page polled and stopped; his new page is polling now.
        assert!(stale.recv().await.is_empty());
        let polling = tokio::spawn({
            let live = live.clone();
            async move { live.recv().await }
        });
        wait_polling(h.addr, 1).await;
        alice
            .send_ok(&info("room", "bob", 0), 0, false, join())
            .await;
        let got = polling.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(src_of(&got[0]), &alice.info);
        assert!(stale.recv().await.is_empty(), "one live connection gets it");
    }

    #[tokio::test]
    async fn the_wire_examples_are_accepted_and_relayed_verbatim() {
        let vectors: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/wire-examples.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let example = |name: &str| -> Vec<u8> {
            let e = vectors["examples"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .unwrap();
            hex::decode(e["hex"].as_str().unwrap()).unwrap()
        };
        let h = Harness::start().await;
        let alice = h.peer("default", "alice", 2_818_993_334);
        let bob = Peer {
            token: h.token("default", "bob"),
            ..alice.clone()
        };
        let reply = call(
            h.addr,
            "Send",
            Some(&alice.token),
            example("SendReq.join_discovery"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = call(
            h.addr,
            "Send",
            Some(&bob.token),
            example("SendReq.signal_offer"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        // Bob polls with his own conn id: the Join (to discovery) is there, byte for byte.
        let bob = Peer {
            info: info("default", "bob", 2_907_437_535),
            ..bob
        };
        let reply = bob.recv_reply().await;
        assert_eq!(reply.body.as_ref(), example("RecvResp.one").as_slice());
        // Alice's poll, the wire example's RecvReq, gets bob's offer.
        let reply = call(h.addr, "Recv", Some(&alice.token), example("RecvReq")).await;
        let got = reply.decode::<RecvResp>().msgs;
        let sent = SendReq::decode(example("SendReq.signal_offer").as_slice()).unwrap();
        assert_eq!(got, vec![sent.msg.unwrap()]);
    }

    #[tokio::test]
    async fn an_idle_poll_answers_empty_after_the_bounded_wait() {
        let h = Harness::start_with(|c| c.limits.poll_timeout_ms = 300).await;
        let alice = h.peer("room", "alice", 100);
        let started = std::time::Instant::now();
        let reply = alice.recv_reply().await;
        let waited = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body.is_empty(),
            "RecvResp.empty is a zero-length body"
        );
        // It held the poll open for the whole wait rather than answering at once.
        assert!(
            waited >= Duration::from_millis(290),
            "answered after {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_join_sent_while_the_receiver_reloads_reaches_the_new_page() {
        use tokio::io::AsyncWriteExt as _;
        let h = Harness::start_with(|c| c.limits.poll_timeout_ms = 5_000).await;
        let alice = h.peer("room", "alice", 100);
        let old_page = h.peer("room", "bob", 200);
        // Bob's old page has a Recv in flight on its own TCP connection ...
        let body = RecvReq {
            src: Some(old_page.info.clone()),
        }
        .encode_to_vec();
        let head = format!(
            "POST /twirp/pulsebeam.v1.Tunnel/Recv HTTP/1.1\r\nhost: x\r\ncontent-type: application/protobuf\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
            old_page.token,
            body.len()
        );
        let mut socket = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&body).await.unwrap();
        wait_polling(h.addr, 1).await;
        // ... and the reload aborts it.
        drop(socket);
        wait_polling(h.addr, 0).await;
        // Alice calls bob before the new page's first Recv: one Join, to conn 0.
        alice
            .send_ok(&info("room", "bob", 0), 0, false, join())
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let new_page = h.peer("room", "bob", 300);
        let got = new_page.recv().await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(payload_of(&got[0]), &join());
        assert_eq!(src_of(&got[0]), &alice.info);
    }

    /// Appends field `number` as a length-delimited unknown field to an encoded message.
    fn with_unknown(mut encoded: Vec<u8>, number: u32, value: &[u8]) -> Vec<u8> {
        prost::encoding::encode_key(
            number,
            prost::encoding::WireType::LengthDelimited,
            &mut encoded,
        );
        prost::encoding::encode_varint(value.len() as u64, &mut encoded);
        encoded.extend_from_slice(value);
        encoded
    }

    /// A `SendReq` whose message is given as its raw protobuf bytes.
    fn send_req_of(message: &[u8]) -> Vec<u8> {
        with_unknown(Vec::new(), 1, message)
    }

    #[tokio::test]
    async fn payloads_are_relayed_byte_for_byte_with_unknown_fields_and_kinds() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        let header = MessageHeader {
            src: Some(alice.info.clone()),
            dst: Some(bob.info.clone()),
            seqnum: 1,
            reliable: true,
        }
        .encode_to_vec();
        let known_payload = MessagePayload {
            payload_type: Some(offer("v=0")),
        }
        .encode_to_vec();
        let payloads = [
            // A payload with a field this server does not know (15) beside a known kind.
            with_unknown(known_payload.clone(), 15, b"newer client"),
            // A payload kind this server does not know: oneof member 6 (5 is `ping`).
            with_unknown(Vec::new(), 6, &with_unknown(Vec::new(), 1, b"x")),
        ];
        let mut sent = Vec::new();
        for payload in &payloads {
            // The header, the payload, and an unknown field of Message itself.
            let message = with_unknown(
                with_unknown(with_unknown(Vec::new(), 1, &header), 2, payload),
                9,
                b"message extension",
            );
            let reply = call(h.addr, "Send", Some(&alice.token), send_req_of(&message)).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            sent.push(message);
        }
        let reply = bob.recv_reply().await;
        assert_eq!(reply.status, StatusCode::OK);
        // RecvResp is `repeated Message msgs = 1`: exactly the bytes alice sent, in order.
        let expected: Vec<u8> = sent.iter().flat_map(|m| send_req_of(m)).collect();
        assert_eq!(reply.body.as_ref(), expected.as_slice());

        // A JSON receiver gets what JSON can carry: the fields this server knows.
        alice.send_ok(&bob.info, 2, true, offer("v=0 again")).await;
        let bytes = with_unknown(known_payload, 15, b"dropped for JSON");
        let message = with_unknown(with_unknown(Vec::new(), 1, &header), 2, &bytes);
        let reply = call(h.addr, "Send", Some(&alice.token), send_req_of(&message)).await;
        assert_eq!(reply.status, StatusCode::OK);
        let auth = format!("Bearer {}", bob.token);
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Recv",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            br#"{"src":{"groupId":"room","peerId":"bob","connId":200}}"#.to_vec(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let msgs = json["msgs"].as_array().unwrap();
        assert_eq!(msgs.len(), 2, "{json}");
        assert_eq!(msgs[1]["payload"]["signal"]["sdp"]["sdp"], "v=0");
        assert!(!reply.body.windows(7).any(|w| w == b"dropped"));
    }

    #[tokio::test]
    async fn a_large_multi_track_offer_is_relayed() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        // Four times Chromium's measured audio + 3 video + data channel offer (13.8 kB).
        let sdp = "a=ssrc-group:SIM 1 2 3\r\n".repeat(4 * 13_800 / 25);
        alice.send_ok(&bob.info, 1, true, offer(&sdp)).await;
        let got = bob.recv().await;
        assert_eq!(got.len(), 1);
        assert_eq!(payload_of(&got[0]), &offer(&sdp));
    }
}

mod auth {
    use super::*;

    #[tokio::test]
    async fn missing_expired_tampered_and_unknown_kid_tokens_are_unauthenticated() {
        let h = Harness::start().await;
        let body = RecvReq {
            src: Some(info("room", "alice", 100)),
        }
        .encode_to_vec();

        let missing = call(h.addr, "Recv", None, body.clone()).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.code(), "unauthenticated");

        // Minted two hours ago with a one hour lifetime.
        let old = AccessToken::new(h.pair.api_key(), &h.pair.api_secret())
            .unwrap()
            .with_clock(FixedClock(T0 - 7200));
        let expired = mint(&old, "room", "alice", Some(PeerPolicy::allow_all()), 3600);
        let reply = call(h.addr, "Recv", Some(&expired), body.clone()).await;
        assert_eq!(reply.code(), "unauthenticated");
        assert!(String::from_utf8_lossy(&reply.body).contains("expired"));

        let good = h.token("room", "alice");
        let mut tampered = good.clone().into_bytes();
        let at = good.find('.').unwrap() + 3;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let reply = call(h.addr, "Recv", Some(&tampered), body.clone()).await;
        assert_eq!(reply.code(), "unauthenticated");

        let stranger = KeyPair::generate().unwrap();
        let unknown = mint(
            &h.app_of(&stranger),
            "room",
            "alice",
            Some(PeerPolicy::allow_all()),
            3600,
        );
        let reply = call(h.addr, "Recv", Some(&unknown), body.clone()).await;
        assert_eq!(reply.code(), "unauthenticated");
        assert!(String::from_utf8_lossy(&reply.body).contains("unknown key id"));

        let reply = call(h.addr, "Prepare", Some("not-a-token"), Vec::new()).await;
        assert_eq!(reply.code(), "unauthenticated");

        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        let text = String::from_utf8(metrics.body.to_vec()).unwrap();
        for line in [
            "pulsebeam_auth_failures_total{kind=\"missing_token\"} 1",
            "pulsebeam_auth_failures_total{kind=\"token_expired\"} 1",
            "pulsebeam_auth_failures_total{kind=\"unknown_key_id\"} 1",
            "pulsebeam_auth_failures_total{kind=\"malformed_token\"} 1",
            "pulsebeam_calls_total{protocol=\"twirp\",method=\"Recv\",code=\"unauthenticated\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[tokio::test]
    async fn a_cached_token_stops_working_when_it_expires() {
        let h = Harness::start_with(|c| c.limits.token_leeway_secs = 0).await;
        let alice = Peer {
            addr: h.addr,
            token: mint(&h.app(), "room", "alice", Some(PeerPolicy::allow_all()), 60),
            info: info("room", "alice", 100),
        };
        let prepare = call(h.addr, "Prepare", Some(&alice.token), Vec::new()).await;
        assert_eq!(prepare.status, StatusCode::OK);
        h.now.store(T0 + 60, Ordering::SeqCst);
        let prepare = call(h.addr, "Prepare", Some(&alice.token), Vec::new()).await;
        assert_eq!(prepare.code(), "unauthenticated");
    }

    #[tokio::test]
    async fn a_spoofed_source_is_permission_denied() {
        let h = Harness::start().await;
        let mallory = Peer {
            token: h.token("room", "mallory"),
            ..h.peer("room", "alice", 100)
        };
        let reply = mallory.recv_reply().await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.code(), "permission_denied");
        let reply = mallory
            .send(&info("room", "bob", 0), 0, false, join())
            .await;
        assert_eq!(reply.code(), "permission_denied");

        // A reserved conn id is never a valid source.
        let reserved = h.peer("room", "alice", 3);
        assert_eq!(reserved.recv_reply().await.code(), "invalid_argument");
    }

    #[tokio::test]
    async fn a_destination_outside_the_policy_is_permission_denied() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let reply = alice.send(&info("other", "bob", 0), 0, false, join()).await;
        assert_eq!(reply.code(), "permission_denied");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(text.contains("room:*") && text.contains("other"), "{text}");

        let nobody = Peer {
            token: h.token_with("room", "alice", None),
            ..alice.clone()
        };
        let reply = nobody.send(&info("room", "bob", 0), 0, false, join()).await;
        assert_eq!(reply.code(), "permission_denied");
        assert!(String::from_utf8_lossy(&reply.body).contains("no allow policy"));
    }

    #[tokio::test]
    async fn the_receivers_policy_must_admit_the_sender() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        // Bob may only talk to carol: alice's messages never reach him.
        let bob = Peer {
            token: h.token_with(
                "room",
                "bob",
                Some(PeerPolicy::new("room", "carol").unwrap()),
            ),
            info: info("room", "bob", 200),
            addr: h.addr,
        };
        let carol = h.peer("room", "carol", 300);
        alice.send_ok(&bob.info, 1, true, offer("from alice")).await;
        carol.send_ok(&bob.info, 1, true, offer("from carol")).await;
        let got = bob.recv().await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(src_of(&got[0]), &carol.info);
    }

    #[tokio::test]
    async fn every_key_of_a_project_opens_the_same_namespace() {
        let old = KeyPair::generate().unwrap();
        let new = KeyPair::generate().unwrap();
        let config = Config::default().with_project(
            ProjectConfig::new("main")
                .with_key(old.api_key(), &old.public_key())
                .with_key(new.api_key(), &new.public_key()),
        );
        let h = Harness::start_config(config, new).await;
        let alice = h.peer("room", "alice", 100);
        let bob = Peer {
            token: mint(
                &h.app_of(&old),
                "room",
                "bob",
                Some(PeerPolicy::allow_all()),
                3600,
            ),
            ..h.peer("room", "bob", 200)
        };
        alice.send_ok(&bob.info, 1, true, offer("rotated")).await;
        let got = bob.recv().await;
        assert_eq!(got.len(), 1);
        assert_eq!(src_of(&got[0]), &alice.info);
    }

    #[tokio::test]
    async fn projects_with_equal_ids_do_not_see_each_other() {
        let north = KeyPair::generate().unwrap();
        let south = KeyPair::generate().unwrap();
        let mut config = Config::default()
            .with_project(
                ProjectConfig::new("north").with_key(north.api_key(), &north.public_key()),
            )
            .with_project(
                ProjectConfig::new("south").with_key(south.api_key(), &south.public_key()),
            );
        config.limits.poll_timeout_ms = 200;
        let h = Harness::start_config(config, north).await;
        let north_alice = h.peer("room", "alice", 100);
        let north_bob = h.peer("room", "bob", 200);
        let south_app = h.app_of(&south);
        let south_bob = Peer {
            token: mint(
                &south_app,
                "room",
                "bob",
                Some(PeerPolicy::allow_all()),
                3600,
            ),
            ..north_bob.clone()
        };
        north_alice
            .send_ok(&north_bob.info, 1, true, offer("north only"))
            .await;
        north_alice
            .send_ok(&info("room", "bob", 0), 0, false, join())
            .await;
        assert!(
            south_bob.recv().await.is_empty(),
            "south must not see north's mail"
        );
        let got = north_bob.recv().await;
        assert_eq!(got.len(), 2);
    }
}

mod limits {
    use super::*;

    #[tokio::test]
    async fn oversize_and_malformed_bodies_get_their_codes() {
        let h = Harness::start_with(|c| {
            c.limits.max_body_bytes = 4096;
            c.limits.max_payload_bytes = 2048;
        })
        .await;
        let alice = h.peer("room", "alice", 100);
        let bob = info("room", "bob", 200);

        let reply = call(h.addr, "Send", Some(&alice.token), vec![0u8; 5000]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "invalid_argument");

        let reply = alice.send(&bob, 1, true, offer(&"x".repeat(3000))).await;
        assert_eq!(reply.code(), "invalid_argument");
        assert!(String::from_utf8_lossy(&reply.body).contains("payload"));

        let reply = call(h.addr, "Send", Some(&alice.token), vec![0xff, 0xff, 0xff]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "malformed");

        let reply = call(
            h.addr,
            "Send",
            Some(&alice.token),
            SendReq { msg: None }.encode_to_vec(),
        )
        .await;
        assert_eq!(reply.code(), "invalid_argument");

        let reply = alice.send(&info("room", "bob", 7), 0, false, join()).await;
        assert_eq!(
            reply.code(),
            "invalid_argument",
            "conn ids 1..15 are reserved"
        );
        let reply = alice.send(&info("room", "", 0), 0, false, join()).await;
        assert_eq!(reply.code(), "invalid_argument");

        let auth = format!("Bearer {}", alice.token);
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Send",
            &[("content-type", "text/plain"), ("authorization", &auth)],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.code(), "bad_route");
        let reply = call(h.addr, "Nope", Some(&alice.token), Vec::new()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.code(), "bad_route");
        let reply = http(
            h.addr,
            "GET",
            "/twirp/pulsebeam.v1.Tunnel/Recv",
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.code(), "bad_route");
    }

    #[tokio::test]
    async fn a_flood_fills_the_mailbox_then_the_server_keeps_serving() {
        let h = Harness::start_with(|c| {
            c.limits.mailbox_capacity = 8;
            c.limits.poll_timeout_ms = 200;
        })
        .await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        let mut codes = Vec::new();
        for seq in 1..=12 {
            let reply = alice.send(&bob.info, seq, true, offer("spam")).await;
            codes.push(if reply.status.is_success() {
                "ok".to_owned()
            } else {
                reply.code()
            });
        }
        assert_eq!(&codes[..8], &["ok"; 8]);
        assert!(
            codes[8..].iter().all(|c| c == "resource_exhausted"),
            "{codes:?}"
        );
        // Bob drains his mailbox, in order, and alice can send again.
        let got = bob.recv().await;
        let seqs: Vec<u32> = got
            .iter()
            .map(|m| m.header.as_ref().unwrap().seqnum)
            .collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
        alice.send_ok(&bob.info, 13, true, offer("after")).await;
        assert_eq!(bob.recv().await.len(), 1);
        let ping = http(h.addr, "GET", "/_ping", &[], Vec::new()).await;
        assert_eq!(ping.body.as_ref(), b"Pong");
    }

    #[tokio::test]
    async fn a_call_flood_hits_the_rate_limit_and_other_peers_are_served() {
        let h = Harness::start_with(|c| {
            c.limits.rate_per_sec = 1;
            c.limits.rate_burst = 5;
        })
        .await;
        let alice = h.peer("room", "alice", 100);
        let mut limited = 0;
        for _ in 0..10 {
            let reply = call(h.addr, "Prepare", Some(&alice.token), Vec::new()).await;
            if !reply.status.is_success() {
                assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(reply.code(), "resource_exhausted");
                limited += 1;
            }
        }
        assert!(limited >= 4, "{limited} of 10 limited");
        let bob = h.peer("room", "bob", 200);
        let reply = call(h.addr, "Prepare", Some(&bob.token), Vec::new()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_rate_limit_holds_with_the_token_cache_off_and_fresh_tokens() {
        let h = Harness::start_with(|c| {
            c.limits.token_cache_capacity = 0;
            c.limits.rate_per_sec = 1;
            c.limits.rate_burst = 3;
        })
        .await;
        let mut codes = Vec::new();
        for i in 0..6u64 {
            // A fresh token per call (another ttl gives another token) does not refill the
            // peer's budget, nor does the cache being off.
            let token = mint(
                &h.app(),
                "room",
                "alice",
                Some(PeerPolicy::allow_all()),
                600 + i,
            );
            let reply = call(h.addr, "Prepare", Some(&token), Vec::new()).await;
            codes.push(if reply.status.is_success() {
                "ok".to_owned()
            } else {
                reply.code()
            });
        }
        assert_eq!(&codes[..3], &["ok"; 3], "{codes:?}");
        assert!(
            codes[3..].iter().all(|c| c == "resource_exhausted"),
            "{codes:?}"
        );
    }

    #[tokio::test]
    async fn request_heads_are_bounded() {
        let h = Harness::start_with(|c| c.limits.max_header_bytes = 16 * 1024).await;
        let alice = h.peer("room", "alice", 100);
        let auth = format!("Bearer {}", alice.token);
        let fits = "a".repeat(10 * 1024);
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Prepare",
            &[
                ("content-type", "application/protobuf"),
                ("authorization", &auth),
                ("x-padding", &fits),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let too_much = "a".repeat(20 * 1024);
        let reply = raw_exchange(
            h.addr,
            format!("POST /twirp/pulsebeam.v1.Tunnel/Prepare HTTP/1.1\r\nhost: x\r\nx-padding: {too_much}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
        // The server keeps serving.
        let reply = call(h.addr, "Prepare", Some(&alice.token), Vec::new()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_declared_oversize_body_is_refused_at_once() {
        let h = Harness::start_with(|c| {
            c.limits.max_body_bytes = 4096;
            c.limits.max_payload_bytes = 2048;
            c.limits.body_timeout_secs = 60;
        })
        .await;
        let alice = h.peer("room", "alice", 100);
        let head = format!(
            "POST /twirp/pulsebeam.v1.Tunnel/Send HTTP/1.1\r\nhost: x\r\ncontent-type: application/protobuf\r\nauthorization: Bearer {}\r\ncontent-length: 10000000\r\n\r\n",
            alice.token
        );
        // No body follows: the answer must not wait for it (the body timeout is 60 s).
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            raw_exchange(h.addr, head.as_bytes()),
        )
        .await
        .expect("the server waited for a body it will refuse");
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(reply.contains("\"code\":\"invalid_argument\""), "{reply}");
        assert!(reply.contains("4096"), "{reply}");
    }
    #[tokio::test]
    async fn connections_per_peer_are_bounded() {
        let h = Harness::start_with(|c| {
            c.limits.max_connections_per_peer = 2;
            c.limits.poll_timeout_ms = 10_000;
        })
        .await;
        let polls: Vec<_> = [100, 200]
            .into_iter()
            .map(|conn| {
                let p = h.peer("room", "alice", conn);
                tokio::spawn(async move { p.recv_reply().await })
            })
            .collect();
        wait_polling(h.addr, 2).await;
        let third = h.peer("room", "alice", 300);
        assert_eq!(third.recv_reply().await.code(), "resource_exhausted");
        for p in polls {
            p.abort();
        }
    }
}

mod http_surface {
    use super::*;

    #[tokio::test]
    async fn json_bodies_use_the_proto3_json_mapping() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let auth = format!("Bearer {}", alice.token);
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        let send = r#"{"msg":{"header":{"src":{"groupId":"room","peerId":"alice","connId":100},
            "dst":{"groupId":"room","peerId":"bob","connId":"200"},"seqnum":1,"reliable":true},
            "payload":{"signal":{"sdp":{"kind":"SDP_KIND_OFFER","sdp":"v=0"}}}}}"#;
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Send",
            &headers,
            send.into(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.body.as_ref(), b"{}");

        let bob_auth = format!("Bearer {}", h.token("room", "bob"));
        let bob_headers = [
            ("content-type", "application/json"),
            ("authorization", bob_auth.as_str()),
        ];
        let recv = r#"{"src":{"groupId":"room","peerId":"bob","connId":200}}"#;
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Recv",
            &bob_headers,
            recv.into(),
        )
        .await;
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["msgs"][0]["header"]["src"]["peerId"], "alice");
        assert_eq!(
            v["msgs"][0]["payload"]["signal"]["sdp"]["kind"],
            "SDP_KIND_OFFER"
        );

        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Send",
            &headers,
            b"{nope".to_vec(),
        )
        .await;
        assert_eq!(reply.code(), "malformed");
    }

    #[tokio::test]
    async fn json_with_a_field_pulsebeam_v1_does_not_define_is_refused() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let auth = format!("Bearer {}", alice.token);
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        let send = r#"{"msg":{"header":{"src":{"groupId":"room","peerId":"alice","connId":100},
            "dst":{"groupId":"room","peerId":"bob"}},"payload":{"join":{},"priority":1}}}"#;
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Send",
            &headers,
            send.into(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "malformed");
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.contains("unknown field `priority`"), "{msg}");
        assert!(msg.contains("application/protobuf"), "{msg}");
        assert_eq!(h.peer("room", "bob", 200).recv().await, vec![]);
    }

    #[tokio::test]
    async fn a_json_receiver_gets_an_sdp_kind_the_proto_does_not_name_as_a_number() {
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        // A protobuf sender may put any number in an enum field; the server relays it.
        let odd = PayloadType::Signal(Signal {
            generation_counter: 0,
            data: Some(SignalData::Sdp(Sdp {
                kind: 7,
                sdp: "v=0".into(),
            })),
        });
        alice
            .send_ok(&info("room", "bob", 200), 0, false, odd)
            .await;
        let auth = format!("Bearer {}", h.token("room", "bob"));
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Recv",
            &[
                ("content-type", "application/json"),
                ("authorization", auth.as_str()),
            ],
            r#"{"src":{"groupId":"room","peerId":"bob","connId":200}}"#.into(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            v["msgs"][0]["payload"]["signal"]["sdp"],
            serde_json::json!({"kind": 7, "sdp": "v=0"})
        );
    }

    #[tokio::test]
    async fn cors_preflight_and_responses() {
        let h =
            Harness::start_with(|c| c.cors.allowed_origins = vec!["https://app.example".into()])
                .await;
        let reply = http(
            h.addr,
            "OPTIONS",
            "/twirp/pulsebeam.v1.Tunnel/Send",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type, authorization, x-client-extra",
                ),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(
            reply.headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(reply.headers["access-control-max-age"], "86400");
        let allowed = reply.headers["access-control-allow-headers"]
            .to_str()
            .unwrap();
        for name in [
            "content-type",
            "authorization",
            "accept-encoding",
            "x-client-extra",
        ] {
            assert!(allowed.contains(name), "{allowed}");
        }

        let other = http(
            h.addr,
            "OPTIONS",
            "/twirp/pulsebeam.v1.Tunnel/Send",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
            Vec::new(),
        )
        .await;
        assert!(other.headers.get("access-control-allow-origin").is_none());

        // Errors carry the CORS header too, so the browser can read the Twirp code.
        let reply = http(
            h.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Prepare",
            &[
                ("origin", "https://app.example"),
                ("content-type", "application/protobuf"),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.code(), "unauthenticated");
        assert_eq!(
            reply.headers["access-control-allow-origin"],
            "https://app.example"
        );
    }

    #[tokio::test]
    async fn ping_health_and_metrics() {
        let h = Harness::start().await;
        let ping = http(h.addr, "GET", "/_ping", &[], Vec::new()).await;
        assert_eq!(
            (ping.status, ping.body.as_ref()),
            (StatusCode::OK, &b"Pong"[..])
        );
        let health = http(h.addr, "GET", "/healthz", &[], Vec::new()).await;
        assert_eq!(health.status, StatusCode::OK);

        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        alice.send_ok(&bob.info, 1, true, offer("x")).await;
        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        let text = String::from_utf8(metrics.body.to_vec()).unwrap();
        for line in [
            "pulsebeam_calls_total{protocol=\"twirp\",method=\"Send\",code=\"ok\"} 1",
            "pulsebeam_messages_relayed_total 1",
            "pulsebeam_mailbox_messages 1",
            "pulsebeam_connections 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(bob.recv().await.len(), 1);
        // The store hears that the answer went out just after it was written.
        let mut text = String::new();
        for _ in 0..100 {
            let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
            text = String::from_utf8(metrics.body.to_vec()).unwrap();
            if text.contains("pulsebeam_messages_delivered_total 1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(text.contains("pulsebeam_mailbox_messages 0"), "{text}");
        assert!(
            text.contains("pulsebeam_messages_delivered_total 1"),
            "{text}"
        );
    }
}

mod prepare {
    use super::*;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};

    #[tokio::test]
    async fn stun_and_turn_servers_with_coturn_credentials_bounded_by_the_token() {
        let h = Harness::start_with(|c| {
            c.ice.stun_urls = vec!["stun:stun.example:3478".into()];
            c.ice.turn = vec![pulsebeam_server::TurnConfig::new(
                vec!["turn:turn.example:3478?transport=udp".into()],
                "s3cret",
            )];
        })
        .await;
        // A token with 10 minutes left: the credential ends with it, not after the 1 h TTL.
        let token = mint(
            &h.app(),
            "room",
            "alice",
            Some(PeerPolicy::allow_all()),
            600,
        );
        let resp: PrepareResp = call(h.addr, "Prepare", Some(&token), Vec::new())
            .await
            .decode();
        assert_eq!(resp.ice_servers.len(), 2);
        assert_eq!(resp.ice_servers[0].urls, ["stun:stun.example:3478"]);
        assert_eq!(resp.ice_servers[0].username, None);
        let turn = &resp.ice_servers[1];
        let username = turn.username.clone().unwrap();
        let (expiry, _user) = username.split_once(':').unwrap();
        assert_eq!(expiry.parse::<u64>().unwrap(), T0 + 600);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
        mac.update(username.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(turn.credential.as_deref(), Some(expected.as_str()));

        // A long-lived token gets the configured credential lifetime.
        let token = mint(
            &h.app(),
            "room",
            "alice",
            Some(PeerPolicy::allow_all()),
            86_400,
        );
        let resp: PrepareResp = call(h.addr, "Prepare", Some(&token), Vec::new())
            .await
            .decode();
        let username = resp.ice_servers[1].username.clone().unwrap();
        assert!(
            username.starts_with(&format!("{}:", T0 + 3600)),
            "{username}"
        );
    }

    #[tokio::test]
    async fn the_example_config_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pulsebeam.example.toml"
        ))
        .unwrap();
        let config = Config::from_toml_str(&text).unwrap();
        assert_eq!(config.projects[0].keys.len(), 1);
        assert_eq!(config.ice.turn.len(), 1);
        assert_eq!(config.limits, pulsebeam_server::Limits::default());
        Server::new(config).unwrap();
    }
}

mod shutdown {
    use super::*;

    #[tokio::test]
    async fn shutdown_answers_open_long_polls_and_completes() {
        let mut h = Harness::start_with(|c| c.limits.poll_timeout_ms = 60_000).await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        let polls: Vec<_> = [alice.clone(), bob.clone()]
            .into_iter()
            .map(|p| tokio::spawn(async move { p.recv_reply().await }))
            .collect();
        wait_polling(h.addr, 2).await;
        let started = std::time::Instant::now();
        h.stop().await.unwrap();
        for poll in polls {
            let reply = poll.await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }
        assert!(h.server.is_shutting_down());
        // Long-polls of 60 s did not hold the shutdown (bounded by the test's own timeout).
        let _ = started;
        assert!(
            tokio::net::TcpStream::connect(h.addr).await.is_err(),
            "listener closed"
        );
    }

    #[tokio::test]
    async fn a_direct_shutdown_call_drains_and_stops_serve() {
        let mut h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let poll = tokio::spawn({
            let alice = alice.clone();
            async move { alice.recv_reply().await }
        });
        wait_polling(h.addr, 1).await;
        let bob = h.peer("room", "bob", 200);
        bob.send_ok(&alice.info, 1, true, offer("last words")).await;
        // The poll may have taken the message already; either way it ends with it.
        let reply = poll.await.unwrap();
        let got = reply.decode::<RecvResp>().msgs;
        assert_eq!(got.len(), 1);

        let poll = tokio::spawn({
            let alice = alice.clone();
            async move { alice.recv_reply().await }
        });
        wait_polling(h.addr, 1).await;
        h.server.shutdown();
        assert_eq!(poll.await.unwrap().status, StatusCode::OK);
        // serve() drains and returns on its own.
        h.stop.take();
        h.task.take().unwrap().await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
    }

    #[tokio::test]
    async fn a_draining_server_refuses_new_calls_with_a_retryable_code() {
        use tower::ServiceExt as _;
        // Idle connections are closed at shutdown, so only a call racing it sees the router:
        // drive the router directly to see what such a call gets.
        let h = Harness::start().await;
        let alice = h.peer("room", "alice", 100);
        let router = h.server.router();
        h.server.shutdown();
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/twirp/pulsebeam.v1.Tunnel/Prepare")
            .header("content-type", "application/protobuf")
            .header("authorization", format!("Bearer {}", alice.token))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "unavailable");
        let health = axum::http::Request::builder()
            .uri("/healthz")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(health).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn run_refuses_a_bad_config_and_serves_a_good_one_until_told_to_stop() {
        let err = pulsebeam_server::run(Config::default(), async {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`projects`"), "{err}");

        let pair = KeyPair::generate().unwrap();
        let mut config = Config::default()
            .with_project(ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()));
        config.listen = "127.0.0.1:0".parse().unwrap();
        pulsebeam_server::run(config, async {}).await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sigterm_completes_the_shutdown_signal() {
        use tokio::signal::unix::{signal, SignalKind};
        // Hold a SIGTERM listener of our own first, so the signal can never take the default
        // action (ending the whole test process) whatever the timing below.
        let _guard = signal(SignalKind::terminate()).unwrap();
        let waiting = tokio::spawn(pulsebeam_server::shutdown_signal());
        let pid = std::process::id().to_string();
        for _ in 0..100 {
            if waiting.is_finished() {
                break;
            }
            // Repeat: the first signal may come before shutdown_signal() has registered.
            // The shell's built-in `kill`: no procps needed on a minimal machine.
            let status = std::process::Command::new("sh")
                .args(["-c", &format!("kill -TERM {pid}")])
                .status()
                .unwrap();
            assert!(status.success());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("shutdown_signal() did not see SIGTERM")
            .unwrap();
    }
}

/// Operations: reload, revocation, the admin API, the audit trail, usage, the lifetime cap.
mod ops {
    use super::*;
    use pulsebeam_server::{serve_admin, AdminConfig};

    const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

    fn sha256_hex(text: &str) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }

    fn key_toml(pair: &KeyPair) -> String {
        format!(
            "[[projects.keys]]\nkid = \"{}\"\npublic_key = \"{}\"\n",
            pair.api_key(),
            pair.public_key().to_hex()
        )
    }

    /// A configuration file: project `main` with `main_keys`, project `other` with `other_key`.
    fn config_text(main_keys: &[&KeyPair], other_key: &KeyPair, extra: &str) -> String {
        // Calls come faster than browsers make them: the per-peer rate is not under test here.
        let mut text = String::from(
            "[limits]\npoll_timeout_ms = 10000\nrate_per_sec = 100000\nrate_burst = 100000\n",
        );
        text.push_str(extra);
        text.push_str("\n[[projects]]\nid = \"main\"\n");
        for key in main_keys {
            text.push_str(&key_toml(key));
        }
        text.push_str("[[projects]]\nid = \"other\"\n");
        text.push_str(&key_toml(other_key));
        text
    }

    struct Ops {
        h: Harness,
        dir: tempfile::TempDir,
        file: std::path::PathBuf,
        other: KeyPair,
    }

    impl Ops {
        /// A server started from a file, with an admin listener and an audit file.
        async fn start(extra: &str) -> (Ops, SocketAddr) {
            let pair = KeyPair::generate().unwrap();
            let other = KeyPair::generate().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("pulsebeam.toml");
            let audit = dir.path().join("audit.jsonl");
            let extra = format!(
                "{extra}\n[audit]\nfile = \"{}\"\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken_sha256 = \"{}\"\nstate_file = \"{}\"\n",
                audit.display(),
                sha256_hex(ADMIN_TOKEN),
                dir.path().join("state.json").display()
            );
            std::fs::write(&file, config_text(&[&pair], &other, &extra)).unwrap();
            let config = Config::from_file(&file).unwrap();
            let now = Arc::new(AtomicU64::new(T0));
            let clock_now = Arc::clone(&now);
            let server = Server::builder(config)
                .clock(move || clock_now.load(Ordering::SeqCst))
                .config_file(&file)
                .build()
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, server.clone(), async {
                let _ = stopped.await;
            }));
            let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let admin_addr = admin.local_addr().unwrap();
            tokio::spawn(serve_admin(admin, server.clone(), std::future::pending()));
            let h = Harness {
                addr,
                server,
                pair,
                now,
                stop: Some(stop),
                task: Some(task),
            };
            (
                Ops {
                    h,
                    dir,
                    file,
                    other,
                },
                admin_addr,
            )
        }

        fn audit_lines(&self) -> Vec<serde_json::Value> {
            let path = self.dir.path().join("audit.jsonl");
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }

        /// Waits (boundedly) for the audit writer to have written an event of `kind`.
        async fn wait_audit(&self, kind: &str) -> serde_json::Value {
            for _ in 0..200 {
                if let Some(event) = self
                    .audit_lines()
                    .into_iter()
                    .rev()
                    .find(|e| e["event"] == kind)
                {
                    return event;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "no {kind} event in the audit trail: {:?}",
                self.audit_lines()
            );
        }
    }

    async fn admin_call(
        addr: SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        http(addr, method, path, &headers, body.as_bytes().to_vec()).await
    }

    fn json_of(reply: &Reply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).unwrap()
    }

    /// Starts a `Recv` of `peer` in the background.
    fn poll(peer: &Peer) -> JoinHandle<(Reply, std::time::Instant)> {
        let peer = peer.clone();
        tokio::spawn(async move {
            let reply = peer.recv_reply().await;
            (reply, std::time::Instant::now())
        })
    }

    #[tokio::test]
    async fn a_removed_key_stops_working_at_once_and_other_projects_notice_nothing() {
        let (ops, _) = Ops::start("").await;
        let h = &ops.h;
        let alice = h.peer("room", "alice", 100);
        let other_app = h.app_of(&ops.other);
        let carol = Peer {
            addr: h.addr,
            token: mint(
                &other_app,
                "room",
                "carol",
                Some(PeerPolicy::allow_all()),
                3600,
            ),
            info: info("room", "carol", 300),
        };
        // Alice's token is cached by a first call; both peers then wait in long-polls.
        assert_eq!(
            call(h.addr, "Prepare", Some(&alice.token), Vec::new())
                .await
                .status,
            StatusCode::OK
        );
        let alice_poll = poll(&alice);
        let carol_poll = poll(&carol);
        wait_polling(h.addr, 2).await;

        // Rotation: the file now holds a new key for `main` and no longer alice's.
        let new_pair = KeyPair::generate().unwrap();
        std::fs::write(&ops.file, config_text(&[&new_pair], &ops.other, "")).unwrap();
        let reloaded = std::time::Instant::now();
        let outcome = h.server.reload_from_file().unwrap();
        assert_eq!(outcome.generation, 2);
        // The [admin] and [audit] tables were dropped from the file: they need a restart.
        assert_eq!(outcome.restart_needed, ["admin", "audit"]);

        let (reply, ended) = alice_poll.await.unwrap();
        assert_eq!(reply.code(), "unauthenticated");
        assert!(
            ended.duration_since(reloaded) < Duration::from_secs(1),
            "{:?}",
            ended.duration_since(reloaded)
        );
        let reply = call(h.addr, "Prepare", Some(&alice.token), Vec::new()).await;
        assert_eq!(
            reply.code(),
            "unauthenticated",
            "the cached token is gone too"
        );
        let fresh = mint(
            &h.app_of(&new_pair),
            "room",
            "alice",
            Some(PeerPolicy::allow_all()),
            3600,
        );
        assert_eq!(
            call(h.addr, "Prepare", Some(&fresh), Vec::new())
                .await
                .status,
            StatusCode::OK
        );

        // Carol's project was untouched: her poll is still open, and gets her mail.
        assert!(!carol_poll.is_finished());
        let dave = Peer {
            addr: h.addr,
            token: mint(
                &other_app,
                "room",
                "dave",
                Some(PeerPolicy::allow_all()),
                3600,
            ),
            info: info("room", "dave", 400),
        };
        dave.send_ok(&carol.info, 1, true, offer("still here"))
            .await;
        let (reply, _) = carol_poll.await.unwrap();
        assert_eq!(reply.decode::<RecvResp>().msgs.len(), 1);

        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        let text = String::from_utf8_lossy(&metrics.body);
        assert!(
            text.contains("pulsebeam_config_reloads_total{result=\"applied\"} 1"),
            "{text}"
        );
        assert!(text.contains("pulsebeam_config_generation 2"), "{text}");
    }

    #[tokio::test]
    async fn a_bad_file_keeps_the_running_configuration_and_says_why() {
        let (ops, _) = Ops::start("").await;
        let h = &ops.h;
        std::fs::write(&ops.file, "[[projects]]\nid = \"main\"\n").unwrap();
        let err = h.server.reload_from_file().unwrap_err().to_string();
        assert!(err.contains("projects[0].keys"), "{err}");
        assert!(err.contains("running configuration stays"), "{err}");
        let alice = h.peer("room", "alice", 100);
        assert_eq!(
            call(h.addr, "Prepare", Some(&alice.token), Vec::new())
                .await
                .status,
            StatusCode::OK
        );
        let event = ops.wait_audit("reload").await;
        assert_eq!(event["ok"], false);
        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        assert!(String::from_utf8_lossy(&metrics.body)
            .contains("pulsebeam_config_reloads_total{result=\"refused\"} 1"));
    }

    #[tokio::test]
    async fn rotating_a_key_under_load_fails_no_call_on_the_new_key() {
        // Nobody reads the sink's mailbox: make it large enough for the run.
        let (ops, _) = Ops::start("mailbox_capacity = 1000000").await;
        let h = &ops.h;
        let new_pair = KeyPair::generate().unwrap();
        // Step 1: the new key is added beside the old one.
        std::fs::write(
            &ops.file,
            config_text(&[&h.pair, &new_pair], &ops.other, ""),
        )
        .unwrap();
        h.server.reload_from_file().unwrap();
        // Clients move over and keep calling while the old key is removed.
        let app = h.app_of(&new_pair);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for i in 0..4 {
            let peer = Peer {
                addr: h.addr,
                token: mint(
                    &app,
                    "room",
                    &format!("p{i}"),
                    Some(PeerPolicy::new("room", "*").unwrap()),
                    3600,
                ),
                info: info("room", &format!("p{i}"), 100 + i),
            };
            let stop = Arc::clone(&stop);
            clients.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                let to = info("room", "sink", 999);
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let reply = peer.send(&to, seq, true, offer("x")).await;
                    if reply.status == StatusCode::OK {
                        ok += 1
                    } else {
                        failed += 1
                    }
                    let reply = call(peer.addr, "Prepare", Some(&peer.token), Vec::new()).await;
                    if reply.status == StatusCode::OK {
                        ok += 1
                    } else {
                        failed += 1
                    }
                }
                (ok, failed)
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Step 2: the old key is removed, twice over, under load.
        for _ in 0..2 {
            std::fs::write(&ops.file, config_text(&[&new_pair], &ops.other, "")).unwrap();
            h.server.reload_from_file().unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, 0);
        for c in clients {
            let (o, f) = c.await.unwrap();
            ok += o;
            failed += f;
        }
        assert_eq!(failed, 0, "{failed} failed calls on the new key ({ok} ok)");
        assert!(ok > 20, "too few calls to mean anything: {ok}");
        let old = h.peer("room", "old", 100);
        assert_eq!(
            call(h.addr, "Prepare", Some(&old.token), Vec::new())
                .await
                .code(),
            "unauthenticated"
        );
    }

    #[tokio::test]
    async fn revocations_refuse_cached_tokens_and_end_open_polls() {
        let (ops, admin) = Ops::start("").await;
        let h = &ops.h;
        let app = h.app();
        let with_jti = |peer: &str, jti: &str| {
            let claims = PeerClaims::new("room", peer)
                .unwrap()
                .with_allow_policy(PeerPolicy::allow_all());
            app.mint(
                &claims,
                &pulsebeam_token::TokenOptions::new(3600).with_token_id(jti),
            )
            .unwrap()
            .token
        };
        let alice = Peer {
            addr: h.addr,
            token: with_jti("alice", "jti-a1"),
            info: info("room", "alice", 100),
        };
        let alice_again = Peer {
            addr: h.addr,
            token: with_jti("alice", "jti-a2"),
            info: info("room", "alice", 101),
        };
        // Cached by a first call, then polling.
        assert_eq!(
            call(h.addr, "Prepare", Some(&alice.token), Vec::new())
                .await
                .status,
            StatusCode::OK
        );
        let polling = poll(&alice);
        wait_polling(h.addr, 1).await;

        let revoked_at = std::time::Instant::now();
        let reply = admin_call(
            admin,
            "POST",
            "/admin/v1/revocations",
            Some(ADMIN_TOKEN),
            &format!(
                r#"{{"project":"main","jti":"jti-a1","until":{}}}"#,
                T0 + 3600
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        let (reply, ended) = polling.await.unwrap();
        assert_eq!(reply.code(), "unauthenticated");
        assert!(
            String::from_utf8_lossy(&reply.body).contains("revoked"),
            "{reply:?}"
        );
        assert!(ended.duration_since(revoked_at) < Duration::from_secs(1));
        assert_eq!(
            call(h.addr, "Prepare", Some(&alice.token), Vec::new())
                .await
                .code(),
            "unauthenticated"
        );
        // Another token of the same peer is untouched by a revocation of one jti.
        assert_eq!(
            call(h.addr, "Prepare", Some(&alice_again.token), Vec::new())
                .await
                .status,
            StatusCode::OK
        );

        // Every token of bob, including ones without jti (as the original minted them).
        let bob = h.peer("room", "bob", 200);
        assert_eq!(
            call(h.addr, "Prepare", Some(&bob.token), Vec::new())
                .await
                .status,
            StatusCode::OK
        );
        let reply = admin_call(
            admin,
            "POST",
            "/admin/v1/revocations",
            Some(ADMIN_TOKEN),
            r#"{"project":"main","group":"room","peer":"bob","for_secs":600}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(
            call(h.addr, "Prepare", Some(&bob.token), Vec::new())
                .await
                .code(),
            "unauthenticated"
        );
        let list = json_of(
            &admin_call(admin, "GET", "/admin/v1/revocations", Some(ADMIN_TOKEN), "").await,
        );
        assert_eq!(list["revocations"].as_array().unwrap().len(), 2, "{list}");

        // Revocations survive a restart (the state file) ...
        let state = std::fs::read_to_string(ops.dir.path().join("state.json")).unwrap();
        assert!(
            state.contains("jti-a1") && state.contains("\"bob\""),
            "{state}"
        );
        // ... and are dropped once what they cover would have expired anyway.
        h.now.store(T0 + 601, Ordering::SeqCst);
        let fresh_bob = h.peer("room", "bob", 200);
        assert_eq!(
            call(h.addr, "Prepare", Some(&fresh_bob.token), Vec::new())
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(h.server.revocations().len(), 1);
        let event = ops.wait_audit("revocation").await;
        assert_eq!(event["target"]["peer"], "bob");

        // Bad requests are refused with the reason.
        for (body, want) in [
            (
                r#"{"project":"nope","jti":"x","for_secs":60}"#,
                StatusCode::NOT_FOUND,
            ),
            (r#"{"project":"main","jti":"x"}"#, StatusCode::BAD_REQUEST),
            (
                r#"{"project":"main","jti":"x","group":"g","peer":"p","for_secs":60}"#,
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"project":"main","jti":"x","until":5}"#,
                StatusCode::BAD_REQUEST,
            ),
            ("not json", StatusCode::BAD_REQUEST),
        ] {
            let reply = admin_call(
                admin,
                "POST",
                "/admin/v1/revocations",
                Some(ADMIN_TOKEN),
                body,
            )
            .await;
            assert_eq!(reply.status, want, "{body}: {reply:?}");
            assert!(json_of(&reply)["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()));
        }
    }

    #[tokio::test]
    async fn the_admin_api_needs_its_token_and_audits_every_call() {
        let (ops, admin) = Ops::start("").await;
        for token in [None, Some("wrong"), Some("")] {
            let reply = admin_call(admin, "GET", "/admin/v1/revocations", token, "").await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
        }
        let event = ops.wait_audit("admin_call").await;
        assert_eq!(event["status"], 401);
        assert!(event["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
        let reply = admin_call(admin, "GET", "/admin/v1/nothing", Some(ADMIN_TOKEN), "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);

        // Reload through the API.
        let reply = admin_call(admin, "POST", "/admin/v1/reload", Some(ADMIN_TOKEN), "").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(json_of(&reply)["reloaded"]["generation"], 2);
        std::fs::write(&ops.file, "garbage = [").unwrap();
        let reply = admin_call(admin, "POST", "/admin/v1/reload", Some(ADMIN_TOKEN), "").await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_of(&reply)["error"]
            .as_str()
            .unwrap()
            .contains("running configuration stays"));

        // Who is online, and usage.
        let h = &ops.h;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        let polling = poll(&bob);
        wait_polling(h.addr, 1).await;
        let online = json_of(
            &admin_call(
                admin,
                "GET",
                "/admin/v1/online?project=main",
                Some(ADMIN_TOKEN),
                "",
            )
            .await,
        );
        assert_eq!(
            online["connections"],
            serde_json::json!([{"group": "room", "peer": "bob", "conn_id": 200}]),
            "{online}"
        );
        alice.send_ok(&bob.info, 1, true, offer("hello")).await;
        polling.await.unwrap();
        let usage = json_of(
            &admin_call(
                admin,
                "GET",
                "/admin/v1/usage?project=main&hours=2",
                Some(ADMIN_TOKEN),
                "",
            )
            .await,
        );
        let hours = usage["hours"].as_array().unwrap();
        assert_eq!(hours.len(), 1, "{usage}");
        assert_eq!(hours[0]["messages"], 1);
        assert!(hours[0]["message_bytes"].as_u64().unwrap() > 10);
        assert_eq!(hours[0]["hour"], T0 / 3600 * 3600);
        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        let text = String::from_utf8_lossy(&metrics.body);
        assert!(
            text.contains("pulsebeam_project_messages_total{project=\"main\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pulsebeam_project_messages_total{project=\"other\"} 0"),
            "{text}"
        );
        let reply = admin_call(
            admin,
            "GET",
            "/admin/v1/usage?project=nope",
            Some(ADMIN_TOKEN),
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_audit_trail_records_refusals_and_never_a_token_or_secret() {
        let (ops, admin) = Ops::start("[[ice.turn]]\nurls = [\"turn:127.0.0.1:3478\"]\nsecret = \"turn-secret-never-logged\"\n").await;
        let h = &ops.h;
        let alice = Peer {
            addr: h.addr,
            token: h.token_with(
                "room",
                "alice",
                Some(PeerPolicy::new("room", "bob").unwrap()),
            ),
            info: info("room", "alice", 100),
        };
        // A policy refusal, an expired token, a bad signature, a TURN credential handed out.
        let reply = alice
            .send(&info("room", "carol", 0), 0, false, join())
            .await;
        assert_eq!(reply.code(), "permission_denied");
        let expired = mint(&h.app(), "room", "alice", Some(PeerPolicy::allow_all()), 1);
        h.now.store(T0 + 100, Ordering::SeqCst);
        assert_eq!(
            call(h.addr, "Prepare", Some(&expired), Vec::new())
                .await
                .code(),
            "unauthenticated"
        );
        // A signature byte changed in the middle (the last character also carries padding bits).
        let mut forged = alice.token.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            call(h.addr, "Prepare", Some(&forged), Vec::new())
                .await
                .code(),
            "unauthenticated"
        );
        let prepared = call(h.addr, "Prepare", Some(&alice.token), Vec::new())
            .await
            .decode::<PrepareResp>();
        let credential = prepared.ice_servers[0].credential.clone().unwrap();
        // The TURN username names the project, so relay traffic can be attributed to it.
        assert!(prepared.ice_servers[0]
            .username
            .as_ref()
            .unwrap()
            .ends_with(":main/room/alice"));
        admin_call(
            admin,
            "POST",
            "/admin/v1/revocations",
            Some(ADMIN_TOKEN),
            r#"{"project":"main","group":"room","peer":"zed","for_secs":60}"#,
        )
        .await;

        let refusal = ops.wait_audit("policy_refusal").await;
        assert_eq!(refusal["dst_peer"], "carol");
        assert_eq!(refusal["project"], "main");
        ops.wait_audit("revocation").await;
        ops.wait_audit("admin_call").await;
        let failures: Vec<_> = ops
            .audit_lines()
            .into_iter()
            .filter(|e| e["event"] == "auth_failure")
            .collect();
        let reasons: Vec<&str> = failures
            .iter()
            .map(|e| e["reason"].as_str().unwrap())
            .collect();
        assert!(
            reasons.contains(&"token_expired") && reasons.contains(&"invalid_signature"),
            "{reasons:?}"
        );
        assert!(failures.iter().all(|e| e["kid"] == h.pair.api_key()));
        let trail = std::fs::read_to_string(ops.dir.path().join("audit.jsonl")).unwrap();
        let api_secret: String = h.pair.api_secret().to_string();
        let secrets: [&str; 7] = [
            &alice.token,
            &expired,
            &forged,
            &api_secret,
            &credential,
            ADMIN_TOKEN,
            "turn-secret-never-logged",
        ];
        for secret in secrets {
            // Any 24-character piece of a secret would give it away.
            let piece = &secret[secret.len().saturating_sub(24)..];
            assert!(
                !trail.contains(piece),
                "the audit trail holds a secret: {piece}"
            );
        }
    }

    #[tokio::test]
    async fn tokens_living_longer_than_the_cap_are_refused() {
        let h = Harness::start_with(|c| c.limits.max_token_lifetime_secs = Some(3600)).await;
        let ok = mint(
            &h.app(),
            "room",
            "alice",
            Some(PeerPolicy::allow_all()),
            3600,
        );
        assert_eq!(
            call(h.addr, "Prepare", Some(&ok), Vec::new()).await.status,
            StatusCode::OK
        );
        let long = mint(
            &h.app(),
            "room",
            "alice",
            Some(PeerPolicy::allow_all()),
            7200,
        );
        let reply = call(h.addr, "Prepare", Some(&long), Vec::new()).await;
        assert_eq!(reply.code(), "unauthenticated");
        assert!(
            String::from_utf8_lossy(&reply.body).contains("shorter"),
            "{reply:?}"
        );
        // The longest lifetime the SDK mints: 2^32 - 1 seconds.
        let forever = mint(
            &h.app(),
            "room",
            "alice",
            Some(PeerPolicy::allow_all()),
            u64::from(u32::MAX),
        );
        assert_eq!(
            call(h.addr, "Prepare", Some(&forever), Vec::new())
                .await
                .code(),
            "unauthenticated"
        );
        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        assert!(String::from_utf8_lossy(&metrics.body)
            .contains("pulsebeam_auth_failures_total{kind=\"token_lifetime_too_long\"} 2"));
    }

    #[tokio::test]
    async fn the_usage_page_is_served_without_a_token_and_its_data_needs_one() {
        let (ops, admin) = Ops::start("").await;
        let page = http(admin, "GET", "/admin/usage", &[], Vec::new()).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        let html = String::from_utf8(page.body.to_vec()).unwrap();
        assert!(
            html.contains("<script src=\"/admin/usage/usage.js\""),
            "{html}"
        );
        assert!(!html.contains(&sha256_hex(ADMIN_TOKEN)) && !html.contains(ADMIN_TOKEN));
        for (path, kind) in [
            ("/admin/usage/usage.js", "text/javascript; charset=utf-8"),
            ("/admin/usage/usage.css", "text/css; charset=utf-8"),
        ] {
            let reply = http(admin, "GET", path, &[], Vec::new()).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(reply.headers["content-type"], kind, "{path}");
            assert!(!reply.body.is_empty());
        }
        // The data behind it needs the token.
        for path in ["/admin/v1/projects", "/admin/v1/usage/minutes?project=main"] {
            let reply = admin_call(admin, "GET", path, Some("wrong"), "").await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        }
        let projects = admin_call(admin, "GET", "/admin/v1/projects", Some(ADMIN_TOKEN), "").await;
        assert_eq!(
            json_of(&projects)["projects"],
            serde_json::json!(["main", "other"])
        );

        // Three messages and an open Recv, all in the minute of T0.
        let h = &ops.h;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        for seq in 0..3 {
            alice.send_ok(&bob.info, seq, true, offer("v=0")).await;
        }
        assert_eq!(recv_n(&bob, 3).await.len(), 3);
        let polling = poll(&bob);
        wait_polling(h.addr, 1).await;
        let minutes = |query: &'static str| async move {
            let reply = admin_call(admin, "GET", query, Some(ADMIN_TOKEN), "").await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            json_of(&reply)
        };
        let now = minutes("/admin/v1/usage/minutes?project=main&minutes=5").await;
        assert_eq!(now["online_now"], 1);
        let rows = now["minutes"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        let last = &rows[4];
        assert_eq!(last["minute"], T0 / 60 * 60);
        assert_eq!(last["messages"], 3);
        assert_eq!(last["online"], 1);
        assert!(last["message_bytes"].as_u64().unwrap() > 0);
        assert!(rows[..4]
            .iter()
            .all(|m| m["messages"] == 0 && m["online"] == 0));
        // Without a project: every project in one answer, as the page asks.
        let all = minutes("/admin/v1/usage/minutes?minutes=5").await;
        let projects = all["projects"].as_array().unwrap();
        let ids: Vec<&str> = projects
            .iter()
            .map(|p| p["project"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["main", "other"]);
        assert_eq!(projects[0], now, "the same as the answer for main alone");
        assert_eq!(projects[1]["online_now"], 0);

        // Two minutes later, with the Recv still open: those minutes count it too.
        h.now.store(T0 + 120, Ordering::SeqCst);
        let later = minutes("/admin/v1/usage/minutes?project=main&minutes=3").await;
        let online: Vec<u64> = later["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["online"].as_u64().unwrap())
            .collect();
        assert_eq!(online, [1, 1, 1], "{later}");
        assert_eq!(later["minutes"][0]["messages"], 3);

        let other = minutes("/admin/v1/usage/minutes?project=other").await;
        assert_eq!(
            other["minutes"].as_array().unwrap().len(),
            60,
            "60 by default"
        );
        assert!(other["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["messages"] == 0));
        let most = minutes("/admin/v1/usage/minutes?project=other&minutes=100000").await;
        assert_eq!(
            most["minutes"].as_array().unwrap().len(),
            180,
            "at most three hours"
        );
        let unknown = admin_call(
            admin,
            "GET",
            "/admin/v1/usage/minutes?project=nope",
            Some(ADMIN_TOKEN),
            "",
        )
        .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        polling.abort();
    }

    #[test]
    fn admin_config_is_validated() {
        let mut config = Config::default().with_project(ProjectConfig::new("p").with_key(
            "kid_0000000000000001",
            &KeyPair::generate().unwrap().public_key(),
        ));
        config.admin = Some(AdminConfig::new("127.0.0.1:3001".parse().unwrap(), "abc"));
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), Some("admin.token_sha256"));
        config.admin = Some(AdminConfig::new(config.listen, sha256_hex("t")));
        assert_eq!(config.validate().unwrap_err().key(), Some("admin.listen"));
        // Port 0 on both: the system gives each listener a port of its own.
        let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        config.listen = any_port;
        config.admin = Some(AdminConfig::new(any_port, sha256_hex("t")));
        config.validate().unwrap();
        config.admin = None;
        config.audit.file = Some("/x".into());
        config.audit.max_file_bytes = 10;
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("audit.max_file_bytes")
        );
    }
}

/// The Grafana dashboard in `deploy/grafana/` queries only what the server exposes.
mod dashboard {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const DASHBOARD: &str = include_str!("../../../deploy/grafana/pulsebeam.json");

    /// Labels Prometheus adds to every series when it scrapes: never in `/metrics`.
    const TARGET_LABELS: [&str; 2] = ["instance", "job"];

    /// PromQL words that are neither metrics nor functions called with `(` right after them.
    const KEYWORDS: [&str; 22] = [
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
    ];

    /// What `/metrics` exposes: each family's `# TYPE`, and each sample name's label names.
    #[derive(Default)]
    struct Exposition {
        types: BTreeMap<String, String>,
        labels: BTreeMap<String, BTreeSet<String>>,
    }

    impl Exposition {
        fn parse(text: &str) -> Self {
            let mut out = Exposition::default();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').unwrap();
                    out.types.insert(name.to_owned(), kind.to_owned());
                    continue;
                }
                if line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                let end = line.find(['{', ' ']).unwrap();
                let labels = out.labels.entry(line[..end].to_owned()).or_default();
                if line[end..].starts_with('{') {
                    let close = line.rfind('}').unwrap();
                    let mut rest = &line[end + 1..close];
                    // name="value" pairs; values may hold escaped quotes.
                    while let Some((name, after)) = rest.split_once("=\"") {
                        labels.insert(name.trim_start_matches(',').to_owned());
                        let mut escaped = false;
                        let close = after
                            .char_indices()
                            .find(|&(_, c)| {
                                let end = c == '"' && !escaped;
                                escaped = c == '\\' && !escaped;
                                end
                            })
                            .unwrap()
                            .0;
                        rest = &after[close + 1..];
                    }
                }
            }
            out
        }

        /// The `# TYPE` of the family a sample name belongs to (histogram and summary samples
        /// carry a suffix).
        fn kind(&self, sample: &str) -> Option<&str> {
            if let Some(kind) = self.types.get(sample) {
                return Some(kind);
            }
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| sample.strip_suffix(suffix))
                .find_map(|family| self.types.get(family))
                .map(String::as_str)
        }
    }

    /// What one PromQL expression uses.
    #[derive(Debug, Default)]
    struct Uses {
        /// Metric names, with the label names of their matchers.
        metrics: Vec<(String, Vec<String>)>,
        /// Label names of `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`.
        grouping: Vec<String>,
        /// Metrics read through `rate`, `irate` or `increase`: must be counters.
        counted: Vec<String>,
    }

    /// Reads the metric names and labels out of a PromQL expression as Grafana stores it
    /// (`$variables` and `[$__rate_interval]` included).
    fn uses(expr: &str) -> Uses {
        let chars: Vec<char> = expr.chars().collect();
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let word_at = |start: usize| {
            let mut end = start;
            while end < chars.len() && ident(chars[end]) {
                end += 1;
            }
            (chars[start..end].iter().collect::<String>(), end)
        };
        let skip_string = |mut i: usize| {
            // `i` is at the opening quote; returns the index after the closing one.
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i + 1
        };
        let next_non_space = |mut i: usize| {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            i
        };
        let mut out = Uses::default();
        let mut counting = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '"' {
                i = skip_string(i);
            } else if c == '[' {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            } else if c == '$' {
                i = word_at(i + 1).1;
            } else if c.is_ascii_digit() || c == '.' {
                i = word_at(i).1.max(i + 1);
            } else if c == '{' {
                // Matchers of the metric just read: label names before an operator.
                let mut labels = Vec::new();
                i += 1;
                while i < chars.len() && chars[i] != '}' {
                    if chars[i] == '"' {
                        i = skip_string(i);
                    } else if ident(chars[i]) {
                        let (name, end) = word_at(i);
                        labels.push(name);
                        i = end;
                    } else {
                        i += 1;
                    }
                }
                i += 1;
                if let Some((_, matchers)) = out.metrics.last_mut() {
                    matchers.extend(labels);
                }
            } else if ident(c) {
                let (word, end) = word_at(i);
                let after = next_non_space(end);
                let called = chars.get(after) == Some(&'(');
                if ["by", "without", "on", "ignoring"].contains(&word.as_str()) && called {
                    let close = (after..chars.len()).find(|&j| chars[j] == ')').unwrap();
                    let list: String = chars[after + 1..close].iter().collect();
                    out.grouping.extend(
                        list.split(',')
                            .map(|l| l.trim().to_owned())
                            .filter(|l| !l.is_empty()),
                    );
                    i = close + 1;
                    continue;
                }
                if called || KEYWORDS.contains(&word.as_str()) {
                    counting = ["rate", "irate", "increase"].contains(&word.as_str());
                } else {
                    if counting {
                        out.counted.push(word.clone());
                        counting = false;
                    }
                    out.metrics.push((word.clone(), Vec::new()));
                }
                i = end;
            } else {
                i += 1;
            }
        }
        out
    }

    /// Every query of the dashboard: panel targets (rows included) and query variables.
    fn queries(dashboard: &serde_json::Value) -> Vec<(String, String, Option<String>)> {
        fn walk(panel: &serde_json::Value, out: &mut Vec<(String, String, Option<String>)>) {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {title:?}: a target without a PromQL `expr`: {target}")
                });
                let legend = target["legendFormat"].as_str().map(str::to_owned);
                out.push((title.clone(), expr.to_owned(), legend));
            }
            for inner in panel["panels"].as_array().into_iter().flatten() {
                walk(inner, out);
            }
        }
        let mut out = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            walk(panel, &mut out);
        }
        out
    }

    /// `metric` must be exposed with every label of `labels` (or get it from the scrape).
    fn check_metric(
        exposed: &Exposition,
        problems: &mut Vec<String>,
        checked: &mut BTreeSet<String>,
        panel: &str,
        metric: &str,
        labels: &[String],
    ) {
        let Some(have) = exposed.labels.get(metric) else {
            problems.push(format!("{panel}: `{metric}` is not in /metrics"));
            return;
        };
        checked.insert(metric.to_owned());
        for label in labels {
            if !have.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!("{panel}: `{metric}` has no label `{label}`"));
            }
        }
    }

    #[test]
    fn the_promql_reader_finds_metrics_labels_and_counters() {
        let u = uses(
            r#"sum by (method, code) (rate(pulsebeam_calls_total{instance=~"$instance",code!="o\"k"}[$__rate_interval])) / on (instance) max(pulsebeam_x) * 60"#,
        );
        let names: Vec<&str> = u.metrics.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names, ["pulsebeam_calls_total", "pulsebeam_x"]);
        assert_eq!(u.metrics[0].1, ["instance", "code"]);
        assert_eq!(u.grouping, ["method", "code", "instance"]);
        assert_eq!(u.counted, ["pulsebeam_calls_total"]);
        let u = uses("sum(increase(pulsebeam_a[24h])) / 3600 + pulsebeam_b");
        assert_eq!(u.counted, ["pulsebeam_a"]);
        assert_eq!(u.metrics.len(), 2);
    }

    #[tokio::test]
    async fn every_metric_the_grafana_dashboard_queries_is_exposed() {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD)
            .expect("deploy/grafana/pulsebeam.json is not valid JSON");
        // Import-ready: the data source is a variable, `project` comes from the project metrics.
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        let var = |name: &str| variables.iter().find(|v| v["name"] == name).unwrap();
        assert_eq!(var("datasource")["type"], "datasource");
        assert_eq!(var("datasource")["query"], "prometheus");
        assert_eq!(
            var("project")["query"]["query"],
            "label_values(pulsebeam_project_calls_total, project)"
        );

        // A server with a little traffic of every kind.
        let h = Harness::start_with(|config| {
            config.ice.turn = vec![pulsebeam_server::TurnConfig::new(
                vec!["turn:127.0.0.1:3478".into()],
                "secret",
            )];
        })
        .await;
        let alice = h.peer("room", "alice", 100);
        let bob = h.peer("room", "bob", 200);
        alice.send_ok(&bob.info, 1, true, offer("v=0")).await;
        assert_eq!(bob.recv().await.len(), 1);
        let prepare = call(h.addr, "Prepare", Some(&alice.token), Vec::new()).await;
        assert_eq!(prepare.status, StatusCode::OK);
        let refused = call(h.addr, "Recv", Some("not.a.token"), Vec::new()).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        let text = http(h.addr, "GET", "/metrics", &[], Vec::new()).await.body;
        let exposed = Exposition::parse(std::str::from_utf8(&text).unwrap());

        let mut checked = BTreeSet::new();
        let mut problems = Vec::new();
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            let query = variable["query"]["query"].as_str().unwrap();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(..)"));
            let (metric, label) = inner.split_once(',').unwrap();
            check_metric(
                &exposed,
                &mut problems,
                &mut checked,
                &format!("variable {}", variable["name"]),
                metric.trim(),
                &[label.trim().to_owned()],
            );
        }
        let queries = queries(&dashboard);
        assert!(queries.len() >= 20, "{} queries", queries.len());
        for (panel, expr, legend) in &queries {
            let u = uses(expr);
            assert!(!u.metrics.is_empty(), "{panel}: no metric in {expr}");
            for (metric, labels) in &u.metrics {
                check_metric(&exposed, &mut problems, &mut checked, panel, metric, labels);
            }
            for metric in &u.counted {
                let kind = exposed.kind(metric);
                if kind != Some("counter") {
                    problems.push(format!(
                        "{panel}: rate/increase over `{metric}`, a {kind:?}, not a counter"
                    ));
                }
            }
            for label in &u.grouping {
                let somewhere = u.metrics.iter().any(|(m, _)| {
                    exposed
                        .labels
                        .get(m)
                        .is_some_and(|have| have.contains(label))
                });
                if !somewhere && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.push(format!(
                        "{panel}: grouping by `{label}`, which no metric of {expr} has"
                    ));
                }
            }
            // A legend can only name labels the aggregation keeps.
            for part in legend.iter().flat_map(|l| l.split("{{").skip(1)) {
                let label = part.split("}}").next().unwrap().trim();
                if !u.grouping.iter().any(|g| g == label) {
                    problems.push(format!(
                        "{panel}: legend names `{label}`, which {expr} does not keep"
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        // The dashboard covers every per-project family and the server-wide ones asked for.
        for family in [
            "pulsebeam_project_connections_online",
            "pulsebeam_project_peer_seconds_total",
            "pulsebeam_project_messages_total",
            "pulsebeam_project_message_bytes_total",
            "pulsebeam_project_turn_credentials_total",
            "pulsebeam_project_turn_relay_bytes_total",
            "pulsebeam_calls_total",
            "pulsebeam_auth_failures_total",
            "pulsebeam_mailbox_messages",
            "pulsebeam_polling_connections",
            "pulsebeam_config_reloads_total",
            "pulsebeam_revocations",
        ] {
            assert!(
                checked.contains(family),
                "the dashboard does not show {family}"
            );
        }
    }
}

/// Findings of the review of the call path.
#[path = "server/hardening.rs"]
mod hardening;

/// Reloads of broken files that hold secrets.
#[path = "server/config_secrets.rs"]
mod config_secrets;

/// gRPC-web `pulsebeam.v1.Signaling`.
#[path = "server/grpc_web.rs"]
mod grpc_web;
