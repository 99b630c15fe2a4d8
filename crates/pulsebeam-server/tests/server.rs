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
        let now = Arc::new(AtomicU64::new(T0));
        let clock_now = Arc::clone(&now);
        let server = Server::builder(config)
            .clock(move || clock_now.load(Ordering::SeqCst))
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
        let h = Harness::start_with(|c| c.limits.poll_timeout_ms = 100).await;
        let alice = h.peer("room", "alice", 100);
        let reply = alice.recv_reply().await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body.is_empty(),
            "RecvResp.empty is a zero-length body"
        );
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
            "pulsebeam_calls_total{method=\"Recv\",code=\"unauthenticated\"} 4",
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
            "pulsebeam_calls_total{method=\"Send\",code=\"ok\"} 1",
            "pulsebeam_messages_relayed_total 1",
            "pulsebeam_mailbox_messages 1",
            "pulsebeam_connections 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(bob.recv().await.len(), 1);
        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        let text = String::from_utf8(metrics.body.to_vec()).unwrap();
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
