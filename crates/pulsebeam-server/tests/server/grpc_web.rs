//! gRPC-web `pulsebeam.v1.Signaling`, as the 0.0.18 to 0.1.0-rc.2 clients speak it: binary
//! frames over HTTP/1.1, the token on unary calls only, `Recv` as a server stream.

use super::*;
use pulsebeam_server::proto::{AnalyticsEvent, AnalyticsMetrics, AnalyticsReportReq, PrepareReq};
use pulsebeam_server::{Revocation, RevocationTarget};

const SERVICE: &str = "/grpc/pulsebeam.v1.Signaling";

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// What a gRPC-web answer held.
#[derive(Debug, Default)]
struct Frames {
    data: Vec<Bytes>,
    /// The trailer frame's `grpc-status` and `grpc-message`.
    trailer: Option<(u8, String)>,
}

/// Splits complete frames off the front of `buf`.
fn take_frames(buf: &mut Vec<u8>, into: &mut Frames) {
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            return;
        }
        let flag = buf[0];
        let payload: Vec<u8> = buf[5..5 + len].to_vec();
        buf.drain(..5 + len);
        if flag == 0x80 {
            let text = String::from_utf8(payload).unwrap();
            let mut status = None;
            let mut message = String::new();
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                let (k, v) = line.split_once(':').unwrap();
                match k {
                    "grpc-status" => status = Some(v.parse().unwrap()),
                    "grpc-message" => message = v.to_owned(),
                    other => panic!("unexpected trailer {other}"),
                }
            }
            into.trailer = Some((status.unwrap(), message));
        } else {
            assert_eq!(flag, 0, "only data and trailer frames");
            into.data.push(Bytes::from(payload));
        }
    }
}

type Answer = hyper::Result<hyper::Response<hyper::body::Incoming>>;

/// An open gRPC-web call whose answer is read frame by frame. A `Recv` stream's headers come
/// with its first frame, so they are awaited with it.
struct Call {
    answer: Option<tokio::task::JoinHandle<Answer>>,
    head: Option<hyper::http::response::Parts>,
    body: Option<hyper::body::Incoming>,
    buf: Vec<u8>,
    frames: Frames,
}

impl Call {
    /// The answer's headers, awaited until `deadline`.
    async fn head_by(&mut self, deadline: tokio::time::Instant) -> &hyper::http::response::Parts {
        if let Some(answer) = self.answer.take() {
            let response = tokio::time::timeout_at(deadline, answer)
                .await
                .expect("no headers in time")
                .unwrap()
                .unwrap();
            let (head, body) = response.into_parts();
            assert_eq!(head.status, StatusCode::OK);
            assert_eq!(head.headers["content-type"], "application/grpc-web+proto");
            self.head = Some(head);
            self.body = Some(body);
        }
        self.head.as_ref().unwrap()
    }

    async fn head(&mut self) -> &hyper::http::response::Parts {
        self.head_by(tokio::time::Instant::now() + SHORT).await
    }

    /// Reads until the next data frame (returned) or the trailer (`None`), within `within`.
    async fn next(&mut self, within: Duration) -> Option<Bytes> {
        let deadline = tokio::time::Instant::now() + within;
        self.head_by(deadline).await;
        let body = self.body.as_mut().unwrap();
        loop {
            if !self.frames.data.is_empty() {
                return Some(self.frames.data.remove(0));
            }
            if self.frames.trailer.is_some() {
                return None;
            }
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .expect("no frame in time");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        take_frames(&mut self.buf, &mut self.frames);
                    }
                }
                Some(Err(err)) => panic!("body error {err}"),
                None => {
                    assert!(self.buf.is_empty(), "premature end: {:?}", self.buf);
                    return None;
                }
            }
        }
    }

    /// The next data frame as a stream message, skipping keep-alive pings.
    async fn message(&mut self, within: Duration) -> Message {
        loop {
            let data = self.next(within).await.expect("the stream ended");
            let msg = RecvResp::decode(data.as_ref()).unwrap().msgs.remove(0);
            if msg.header.is_some() {
                return msg;
            }
            assert!(is_ping(&msg), "{msg:?}");
        }
    }

    /// Reads to the end and returns the status.
    async fn status(&mut self, within: Duration) -> (u8, String) {
        while self.next(within).await.is_some() {}
        self.frames.trailer.clone().unwrap()
    }
}

fn is_ping(msg: &Message) -> bool {
    msg.header.is_none()
        && matches!(
            msg.payload.as_ref().and_then(|p| p.payload_type.as_ref()),
            Some(PayloadType::Ping(_))
        )
}

/// Opens a gRPC-web call from `from` (a loopback address) to `path` with `headers`.
async fn open(
    addr: SocketAddr,
    from: &str,
    path: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> Call {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(framed(message))))
        .unwrap();
    sender.ready().await.unwrap();
    let answer = sender.send_request(request);
    Call {
        answer: Some(tokio::spawn(answer)),
        head: None,
        body: None,
        buf: Vec::new(),
        frames: Frames::default(),
    }
}

/// A unary call from 127.0.0.1 with the token in the `Authorization` header.
async fn unary(addr: SocketAddr, method: &str, token: Option<&str>, message: &[u8]) -> Call {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("grpc-timeout", "900000m")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    open(
        addr,
        "127.0.0.1",
        &format!("{SERVICE}/{method}"),
        &headers,
        message,
    )
    .await
}

/// A `Recv` stream from `from` without a token, as the clients open it.
async fn recv_stream(addr: SocketAddr, from: &str, src: &PeerInfo, timeout: &str) -> Call {
    let body = RecvReq {
        src: Some(src.clone()),
    }
    .encode_to_vec();
    open(
        addr,
        from,
        &format!("{SERVICE}/Recv"),
        &[("grpc-timeout", timeout)],
        &body,
    )
    .await
}

const SHORT: Duration = Duration::from_secs(3);

async fn prepare_ok(addr: SocketAddr, token: &str) {
    let mut call = unary(addr, "Prepare", Some(token), &PrepareReq {}.encode_to_vec()).await;
    let data = call.next(SHORT).await.expect("a PrepareResp");
    PrepareResp::decode(data.as_ref()).unwrap();
    assert_eq!(call.status(SHORT).await, (0, String::new()));
}

async fn grpc_send(addr: SocketAddr, token: &str, msg: Message) -> (u8, String) {
    let mut call = unary(
        addr,
        "Send",
        Some(token),
        &SendReq { msg: Some(msg) }.encode_to_vec(),
    )
    .await;
    let status = call.status(SHORT).await;
    if status.0 == 0 {
        assert_eq!(call.frames.data.len(), 0, "consumed by status()");
    }
    status
}

#[tokio::test]
async fn a_unary_answer_is_one_data_frame_and_an_ok_trailer() {
    let h = Harness::start().await;
    let alice = h.peer("room", "alice", 100);
    let mut call = unary(
        h.addr,
        "Prepare",
        Some(&alice.token),
        &PrepareReq {}.encode_to_vec(),
    )
    .await;
    assert!(call.head().await.headers.get("grpc-status").is_none());
    let data = call.next(SHORT).await.unwrap();
    PrepareResp::decode(data.as_ref()).unwrap();
    assert_eq!(call.next(SHORT).await, None);
    assert_eq!(call.frames.trailer, Some((0, String::new())));

    // `SendResp{}` is one zero-length data frame: without it the client reports DATA_LOSS.
    let bob = h.peer("room", "bob", 200);
    let msg = alice.message(&bob.info, 1, true, join());
    let mut call = unary(
        h.addr,
        "Send",
        Some(&alice.token),
        &SendReq { msg: Some(msg) }.encode_to_vec(),
    )
    .await;
    assert_eq!(call.next(SHORT).await, Some(Bytes::new()));
    assert_eq!(call.status(SHORT).await, (0, String::new()));
}

#[tokio::test]
async fn a_tokenless_stream_after_prepare_gets_messages_pushed_in_order() {
    let h = Harness::start().await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let mut stream = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    for seq in 1..=5 {
        alice
            .send_ok(&bob.info, seq, true, offer(&format!("v={seq}")))
            .await;
    }
    // The headers come with the first message (nothing is written while a stream waits).
    // Proxies that buffer answers (nginx) are asked not to.
    assert_eq!(stream.head().await.headers["x-accel-buffering"], "no");
    for seq in 1..=5 {
        let msg = stream.message(SHORT).await;
        assert_eq!(msg.header.as_ref().unwrap().seqnum, seq);
        assert_eq!(payload_of(&msg), &offer(&format!("v={seq}")));
    }
    // Pushed as they come, one at a time, without a new request.
    let started = std::time::Instant::now();
    alice.send_ok(&bob.info, 6, true, bye()).await;
    let msg = stream.message(SHORT).await;
    assert_eq!(payload_of(&msg), &bye());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn twirp_and_grpc_web_peers_reach_each_other_through_the_same_mailboxes() {
    let h = Harness::start().await;
    let twirp = h.peer("room", "alice", 100);
    let grpc = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &grpc.token).await;
    let mut stream = recv_stream(h.addr, "127.0.0.1", &grpc.info, "900000m").await;
    // Twirp -> gRPC-web, discovery included.
    let discover = PeerInfo {
        conn_id: 0,
        ..grpc.info.clone()
    };
    twirp.send_ok(&discover, 1, true, join()).await;
    let msg = stream.message(SHORT).await;
    assert_eq!(payload_of(&msg), &join());
    assert_eq!(src_of(&msg), &twirp.info);
    // gRPC-web -> Twirp.
    let reply = grpc.message(&twirp.info, 1, true, answer("v=0"));
    assert_eq!(
        grpc_send(h.addr, &grpc.token, reply).await,
        (0, String::new())
    );
    let got = twirp.recv().await;
    assert_eq!(got.len(), 1);
    assert_eq!(payload_of(&got[0]), &answer("v=0"));
}

#[tokio::test]
async fn a_stranger_cannot_read_another_peers_stream() {
    let h = Harness::start().await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    alice.send_ok(&bob.info, 1, true, offer("secret")).await;
    // Same ids, another client address: no binding, nothing handed out.
    let mut stranger = recv_stream(h.addr, "127.0.0.2", &bob.info, "900000m").await;
    let (code, message) = stranger.status(SHORT).await;
    assert_eq!(code, 14, "{message}");
    assert!(
        message.contains("no token has authenticated this peer"),
        "{message}"
    );
    assert_eq!(stranger.head().await.headers["grpc-status"], "14");
    // Another conn id of the same peer from the stranger's address: the same.
    let mut other_conn =
        recv_stream(h.addr, "127.0.0.2", &info("room", "bob", 999), "900000m").await;
    assert_eq!(other_conn.status(SHORT).await.0, 14);
    // The message is still there for bob.
    let mut stream = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    assert_eq!(payload_of(&stream.message(SHORT).await), &offer("secret"));
}

#[tokio::test]
async fn a_token_in_the_path_authenticates_every_call_recv_included() {
    let h = Harness::start().await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    alice.send_ok(&bob.info, 1, true, offer("v=0")).await;
    for base in [
        format!("/grpc/t/{}", bob.token),
        format!("/t/{}", bob.token),
    ] {
        let body = RecvReq {
            src: Some(bob.info.clone()),
        }
        .encode_to_vec();
        // From an address that never called Prepare: the path token is enough.
        let mut stream = open(
            h.addr,
            "127.0.0.3",
            &format!("{base}/pulsebeam.v1.Signaling/Recv"),
            &[("grpc-timeout", "2000m")],
            &body,
        )
        .await;
        if base.starts_with("/grpc") {
            assert_eq!(payload_of(&stream.message(SHORT).await), &offer("v=0"));
        }
        assert_eq!(stream.status(SHORT).await, (0, String::new()));
    }
    // A bad token in the path is refused like a bad header.
    let mut refused = open(
        h.addr,
        "127.0.0.3",
        "/grpc/t/not-a-token/pulsebeam.v1.Signaling/Prepare",
        &[],
        &PrepareReq {}.encode_to_vec(),
    )
    .await;
    assert_eq!(refused.status(SHORT).await.0, 16);
}

#[tokio::test]
async fn refusing_tokenless_streams_leaves_the_path_token() {
    let h = Harness::start_with(|c| {
        c.grpc_web.tokenless_recv = pulsebeam_server::TokenlessRecv::Refuse;
    })
    .await;
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let mut stream = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    let (code, message) = stream.status(SHORT).await;
    assert_eq!(code, 16);
    assert!(message.contains("tokenless_recv"), "{message}");
}

#[tokio::test]
async fn a_revoked_peers_stream_ends_unauthenticated_within_a_second() {
    // A Ping within a second says the stream is open.
    let h = Harness::start_with(|c| c.grpc_web.keepalive_secs = 1).await;
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let mut stream = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    stream.next(SHORT).await.unwrap();
    let target = RevocationTarget::Peer {
        project: "main".into(),
        group: "room".into(),
        peer: "bob".into(),
    };
    let revoked_at = std::time::Instant::now();
    h.server
        .revoke(Revocation::new(target, T0 + 3600, T0))
        .await
        .unwrap();
    let (code, message) = stream.status(SHORT).await;
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked_at.elapsed()
    );
    assert_eq!(code, 16, "{message}");
    assert!(message.contains("revoked"), "{message}");
    // And a new stream of the revoked peer is refused, bound or not.
    let mut again = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    assert_eq!(again.status(SHORT).await.0, 16);
}

#[tokio::test]
async fn a_newer_stream_of_the_connection_ends_the_older_one() {
    let h = Harness::start_with(|c| c.grpc_web.keepalive_secs = 1).await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let mut old = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    old.next(SHORT).await.unwrap();
    let mut new = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    new.next(SHORT).await.unwrap();
    assert_eq!(old.status(SHORT).await, (0, String::new()));
    alice.send_ok(&bob.info, 1, true, join()).await;
    assert_eq!(payload_of(&new.message(SHORT).await), &join());
}

#[tokio::test]
async fn a_stream_ends_ok_at_its_grpc_timeout_and_pings_while_idle() {
    let h = Harness::start_with(|c| c.grpc_web.keepalive_secs = 1).await;
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let started = std::time::Instant::now();
    let mut stream = recv_stream(h.addr, "127.0.0.1", &bob.info, "2500m").await;
    let mut pings = 0;
    while let Some(data) = stream.next(SHORT).await {
        assert!(is_ping(&RecvResp::decode(data.as_ref()).unwrap().msgs[0]));
        pings += 1;
    }
    let took = started.elapsed();
    assert_eq!(stream.frames.trailer, Some((0, String::new())));
    // One a second, the first (with the headers) a second after the stream opened.
    assert!((2..=3).contains(&pings), "{pings} pings");
    assert!(
        took >= Duration::from_millis(2400) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn bad_requests_get_a_clear_grpc_status() {
    let h = Harness::start().await;
    let bob = h.peer("room", "bob", 200);
    let auth = format!("Bearer {}", bob.token);
    // Unknown method, unknown service (under /grpc and at the root).
    for path in [
        format!("{SERVICE}/Subscribe"),
        "/grpc/pulsebeam.v2.Other/Prepare".to_owned(),
        "/pulsebeam.v1.Nothing/Prepare".to_owned(),
    ] {
        let mut call = open(h.addr, "127.0.0.1", &path, &[("authorization", &auth)], b"").await;
        let (code, message) = call.status(SHORT).await;
        assert_eq!(code, 12, "{path}: {message}");
        assert!(message.contains("pulsebeam.v1.Signaling"), "{message}");
    }
    // A malformed grpc-timeout, a body that is not one frame, a message that is not the type.
    let cases = [
        (Some("soon"), Vec::new(), 3, "grpc-timeout"),
        (None, vec![0xff, 0xff], 3, "protobuf"),
    ];
    for (timeout, message, code, needle) in cases {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(timeout) = timeout {
            headers.push(("grpc-timeout", timeout));
        }
        let mut call = open(
            h.addr,
            "127.0.0.1",
            &format!("{SERVICE}/Prepare"),
            &headers,
            &message,
        )
        .await;
        let (got, text) = call.status(SHORT).await;
        assert_eq!(got, code, "{text}");
        assert!(text.contains(needle), "{text}");
    }
    // No token on a unary call.
    let mut call = unary(h.addr, "Prepare", None, &PrepareReq {}.encode_to_vec()).await;
    assert_eq!(call.status(SHORT).await.0, 16);
    // Raw framing errors: a compressed frame.
    let reply = http(
        h.addr,
        "POST",
        &format!("{SERVICE}/Prepare"),
        &[
            ("content-type", "application/grpc-web+proto"),
            ("authorization", &auth),
        ],
        vec![1, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["grpc-status"], "3");
    assert!(reply.headers["grpc-message"]
        .to_str()
        .unwrap()
        .contains("compressed"));
}

#[tokio::test]
async fn a_stream_through_an_unknown_proxy_is_refused_and_a_trusted_one_is_believed() {
    let h = Harness::start_with(|c| c.grpc_web.trusted_proxies = vec!["127.0.0.5".into()]).await;
    let bob = h.peer("room", "bob", 200);
    let body = RecvReq {
        src: Some(bob.info.clone()),
    }
    .encode_to_vec();
    // Prepare through the trusted proxy for client 198.51.100.7.
    let auth = format!("Bearer {}", bob.token);
    let mut call = open(
        h.addr,
        "127.0.0.5",
        &format!("{SERVICE}/Prepare"),
        &[
            ("authorization", &auth),
            ("x-forwarded-for", "198.51.100.7"),
        ],
        &PrepareReq {}.encode_to_vec(),
    )
    .await;
    assert_eq!(call.status(SHORT).await.0, 0);
    // The same client through the same proxy: admitted.
    let mut stream = open(
        h.addr,
        "127.0.0.5",
        &format!("{SERVICE}/Recv"),
        &[
            ("x-forwarded-for", "198.51.100.7"),
            ("grpc-timeout", "1000m"),
        ],
        &body,
    )
    .await;
    assert_eq!(stream.status(SHORT).await, (0, String::new()));
    // Another client through the same proxy: not.
    let mut other = open(
        h.addr,
        "127.0.0.5",
        &format!("{SERVICE}/Recv"),
        &[("x-forwarded-for", "198.51.100.8")],
        &body,
    )
    .await;
    assert_eq!(other.status(SHORT).await.0, 14);
    // Forwarding headers from a proxy nobody configured: refused, saying what to do.
    let mut untrusted = open(
        h.addr,
        "127.0.0.6",
        &format!("{SERVICE}/Recv"),
        &[("x-forwarded-for", "198.51.100.7")],
        &body,
    )
    .await;
    let (code, message) = untrusted.status(SHORT).await;
    assert_eq!(code, 16);
    assert!(message.contains("trusted_proxies"), "{message}");
}

#[tokio::test]
async fn analytics_reports_are_accepted_and_counted_per_project_and_type() {
    let h = Harness::start().await;
    let bob = h.peer("room", "bob", 200);
    let report = AnalyticsReportReq {
        events: vec![AnalyticsEvent {
            tags: None,
            metrics: vec![
                AnalyticsMetrics {
                    timestamp_us: 1,
                    event_type: Some(2011),
                    quality_score: None,
                    rtt_us: Some(1000),
                },
                AnalyticsMetrics {
                    timestamp_us: 2,
                    event_type: Some(3009),
                    quality_score: Some(90),
                    rtt_us: None,
                },
            ],
        }],
    };
    let mut call = unary(
        h.addr,
        "AnalyticsReport",
        Some(&bob.token),
        &report.encode_to_vec(),
    )
    .await;
    assert_eq!(call.next(SHORT).await, Some(Bytes::new()));
    assert_eq!(call.status(SHORT).await, (0, String::new()));
    let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        "pulsebeam_analytics_reports_total{project=\"main\"} 1",
        "pulsebeam_analytics_events_total{project=\"main\",type=\"EVENT_ICE_CANDIDATE_PAIRING_SUCCESS\"} 1",
        "pulsebeam_analytics_events_total{project=\"main\",type=\"EVENT_SIGNALING_CONNECTED\"} 1",
        "pulsebeam_calls_total{protocol=\"grpc-web\",method=\"AnalyticsReport\",code=\"ok\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing");
    }
}

#[tokio::test]
async fn cross_origin_pages_may_send_grpc_web_headers_and_read_the_status() {
    let h = Harness::start().await;
    let reply = http(
        h.addr,
        "OPTIONS",
        &format!("{SERVICE}/Prepare"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type,grpc-timeout,x-grpc-web",
            ),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let allowed = reply.headers["access-control-allow-headers"]
        .to_str()
        .unwrap();
    for name in [
        "x-grpc-web",
        "grpc-timeout",
        "authorization",
        "content-type",
        "x-user-agent",
    ] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    let bob = h.peer("room", "bob", 200);
    let auth = format!("Bearer {}", bob.token);
    let reply = http(
        h.addr,
        "POST",
        &format!("{SERVICE}/Prepare"),
        &[
            ("origin", "https://app.example.com"),
            ("content-type", "application/grpc-web+proto"),
            ("authorization", &auth),
        ],
        framed(&[]),
    )
    .await;
    let exposed = reply.headers["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
}

#[tokio::test]
async fn shutting_down_ends_streams_ok_so_clients_reconnect_elsewhere() {
    let mut h = Harness::start_with(|c| c.grpc_web.keepalive_secs = 1).await;
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let mut stream = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    stream.next(SHORT).await.unwrap();
    let stopping = std::time::Instant::now();
    let stop = tokio::spawn(async move { h.stop().await });
    assert_eq!(stream.status(SHORT).await, (0, String::new()));
    stop.await.unwrap().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(3));
}

/// While messages flow, each batch a stream hands out is acknowledged once written: the
/// mailbox never fills with messages waiting for an acknowledgement, so a sender
/// faster than that delay is not refused.
#[tokio::test]
async fn a_busy_stream_confirms_batches_as_they_flow() {
    let h = Harness::start_with(|c| {
        c.limits.mailbox_capacity = 4;
        c.limits.max_batch_messages = 2;
    })
    .await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let mut stream = recv_stream(h.addr, "127.0.0.1", &bob.info, "900000m").await;
    let sent = 40u32;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < sent as usize {
            got.push(stream.message(SHORT).await.header.unwrap().seqnum);
        }
        got
    });
    let started = std::time::Instant::now();
    for seq in 1..=sent {
        loop {
            let reply = alice.send(&bob.info, seq, true, join()).await;
            if reply.status == StatusCode::OK {
                break;
            }
            assert_eq!(reply.code(), "resource_exhausted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let got = reader.await.unwrap();
    assert_eq!(got, (1..=sent).collect::<Vec<_>>());
    // Forty messages through a mailbox of four (eight with those handed out), in batches of
    // two: waiting out a delay of a second before acknowledging every eight messages would
    // take five.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// An idle stream writes nothing, not even its headers, until its first frame is due: the
/// headers go out with the first message (or the first keep-alive Ping), so a waiting stream
/// leaves hyper's write buffer untouched, as a waiting long-poll does.
#[tokio::test]
async fn an_idle_stream_writes_nothing_until_its_first_frame() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let h = Harness::start().await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    prepare_ok(h.addr, &bob.token).await;
    let body = framed(
        &RecvReq {
            src: Some(bob.info.clone()),
        }
        .encode_to_vec(),
    );
    let mut socket = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut request = format!(
        "POST {SERVICE}/Recv HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ngrpc-timeout: 900000m\r\ncontent-length: {}\r\n\r\n",
        h.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    socket.write_all(&request).await.unwrap();
    // The stream is open (its connection is polling) and has written nothing.
    let deadline = std::time::Instant::now() + SHORT;
    loop {
        let metrics = http(h.addr, "GET", "/metrics", &[], Vec::new()).await;
        if String::from_utf8_lossy(&metrics.body).contains("pulsebeam_polling_connections 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never polled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got = Vec::new();
    let quiet = tokio::time::timeout(Duration::from_millis(300), socket.read_buf(&mut got)).await;
    assert!(
        quiet.is_err(),
        "an idle stream wrote {:?}",
        String::from_utf8_lossy(&got)
    );
    // A message: the headers and its frame.
    alice.send_ok(&bob.info, 1, true, offer("v=1")).await;
    while !got.windows(3).any(|w| w == b"v=1") {
        let read = tokio::time::timeout(SHORT, socket.read_buf(&mut got))
            .await
            .expect("the message in time")
            .unwrap();
        assert!(read > 0, "the connection closed");
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("content-type: application/grpc-web+proto"),
        "{text}"
    );
}
