//! HTTPS: the server with `[tls]` on 127.0.0.1:0, a self-signed certificate made at test time,
//! and a real TLS client (tokio-rustls) speaking HTTP/1.1 or HTTP/2 as ALPN decides.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use pulsebeam_server::proto::{
    Join, Message, MessageHeader, MessagePayload, PayloadType, PeerInfo, PrepareReq, RecvReq,
    RecvResp, SendReq,
};
use pulsebeam_server::{serve, Config, ProjectConfig, Server, TlsConfig, TlsError};
use pulsebeam_token::{AccessToken, KeyPair, PeerClaims, PeerPolicy};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `localhost` and its key, as PEM.
#[derive(Clone)]
struct Cert {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Cert {
    fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Cert {
            der: made.cert.der().clone(),
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
        }
    }

    /// Writes the chain and the key where `files` says.
    fn write(&self, files: &TlsConfig) {
        std::fs::write(&files.cert_file, &self.cert_pem).unwrap();
        std::fs::write(&files.key_file, &self.key_pem).unwrap();
    }
}

/// A running HTTPS server.
struct Harness {
    addr: SocketAddr,
    server: Server,
    pair: KeyPair,
    files: TlsConfig,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "pulsebeam-tls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files_in(dir: &TempDir) -> TlsConfig {
    TlsConfig::new(dir.0.join("fullchain.pem"), dir.0.join("privkey.pem"))
}

fn config_with(pair: &KeyPair, files: &TlsConfig) -> Config {
    let mut config = Config::default()
        .with_project(ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()));
    config.limits.poll_timeout_ms = 2_000;
    config.tls = Some(files.clone());
    config
}

impl Harness {
    async fn start(cert: &Cert, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new();
        let files = files_in(&dir);
        cert.write(&files);
        let pair = KeyPair::generate().unwrap();
        let mut config = config_with(&pair, &files);
        tweak(&mut config);
        let server = Server::new(config).unwrap();
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
            files,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A token for `group/peer` that may reach anyone in `group`.
    fn token(&self, group: &str, peer: &str) -> String {
        let app = AccessToken::new(self.pair.api_key(), &self.pair.api_secret()).unwrap();
        let mut claims = PeerClaims::new(group, peer).unwrap();
        claims.set_allow_policy(PeerPolicy::new(group, "*").unwrap());
        app.create_token(&claims, 3600).unwrap()
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

/// Opens a TLS connection that trusts `trusted` and offers `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    trusted: &[&Cert],
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

const BOTH_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// An HTTP client on one TLS connection, in the protocol ALPN chose.
enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// What came back from one call.
#[derive(Debug)]
struct Reply {
    version: Version,
    status: StatusCode,
    body: Bytes,
}

impl Client {
    /// Another handle on the same HTTP/2 connection, for concurrent calls.
    fn share(&self) -> Self {
        match self {
            Client::H2(send) => Client::H2(send.clone()),
            Client::H1(_) => panic!("an HTTP/1.1 connection carries one call at a time"),
        }
    }

    /// Connects, checks that ALPN chose `alpn`, and starts the HTTP connection; the handle
    /// completes when the server closes the connection.
    async fn connect(addr: SocketAddr, trusted: &[&Cert], alpn: &[u8]) -> (Self, JoinHandle<()>) {
        let stream = tls_connect(addr, trusted, &[alpn], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        Self::over(stream).await
    }

    async fn over(stream: TlsStream<TcpStream>) -> (Self, JoinHandle<()>) {
        let io = TokioIo::new(stream);
        if io.inner().get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Client::H2(send), task)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Client::H1(send), task)
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> hyper::Result<Reply> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = match self {
            Client::H1(send) => {
                send.ready().await?;
                send.send_request(request).await?
            }
            Client::H2(send) => {
                send.ready().await?;
                send.send_request(request).await?
            }
        };
        let version = response.version();
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            version,
            status,
            body,
        })
    }

    /// A Twirp call with a protobuf body.
    async fn call(&mut self, method: &str, token: &str, body: Vec<u8>) -> Reply {
        let auth = format!("Bearer {token}");
        self.request(
            "POST",
            &format!("/twirp/pulsebeam.v1.Tunnel/{method}"),
            &[
                ("content-type", "application/protobuf"),
                ("authorization", &auth),
            ],
            body,
        )
        .await
        .unwrap()
    }
}

fn info(group: &str, peer: &str, conn: u32) -> PeerInfo {
    PeerInfo {
        group_id: group.into(),
        peer_id: peer.into(),
        conn_id: conn,
    }
}

fn join_from(src: &PeerInfo, dst: &PeerInfo) -> SendReq {
    SendReq {
        msg: Some(Message {
            header: Some(MessageHeader {
                src: Some(src.clone()),
                dst: Some(dst.clone()),
                seqnum: 1,
                reliable: true,
            }),
            payload: Some(MessagePayload {
                payload_type: Some(PayloadType::Join(Join {})),
            }),
        }),
    }
}

/// Reads until the server closes the connection (or `limit` passes); what was read.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

mod protocols {
    use super::*;

    /// Prepare, then alice's Send reaching bob's Recv, all on one connection per peer.
    async fn round_trip(alpn: &[u8], version: Version) {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let (alice, bob) = (info("room", "alice", 101), info("room", "bob", 202));
        let (alice_token, bob_token) =
            (harness.token("room", "alice"), harness.token("room", "bob"));
        let (mut alice_http, _) = Client::connect(harness.addr, &[&cert], alpn).await;
        let (mut bob_http, _) = Client::connect(harness.addr, &[&cert], alpn).await;

        let prepared = alice_http
            .call("Prepare", &alice_token, PrepareReq {}.encode_to_vec())
            .await;
        assert_eq!(prepared.status, StatusCode::OK, "{prepared:?}");
        assert_eq!(prepared.version, version);

        let polling = tokio::spawn(async move {
            let body = RecvReq {
                src: Some(bob.clone()),
            }
            .encode_to_vec();
            bob_http.call("Recv", &bob_token, body).await
        });
        let sent = alice_http
            .call(
                "Send",
                &alice_token,
                join_from(&alice, &info("room", "bob", 0)).encode_to_vec(),
            )
            .await;
        assert_eq!(sent.status, StatusCode::OK, "{sent:?}");
        assert_eq!(sent.version, version);

        let received = polling.await.unwrap();
        assert_eq!(received.status, StatusCode::OK, "{received:?}");
        assert_eq!(received.version, version);
        let msgs = RecvResp::decode(received.body.as_ref()).unwrap().msgs;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        let src = msgs[0].header.as_ref().unwrap().src.as_ref().unwrap();
        assert_eq!(src, &alice);
    }

    #[tokio::test]
    async fn twirp_calls_round_trip_over_http1() {
        round_trip(b"http/1.1", Version::HTTP_11).await;
    }

    #[tokio::test]
    async fn twirp_calls_round_trip_over_http2() {
        round_trip(b"h2", Version::HTTP_2).await;
    }

    #[tokio::test]
    async fn http2_multiplexes_a_long_poll_and_a_send_on_one_connection() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let (carol, dave) = (info("room", "carol", 303), info("room", "dave", 404));
        let (client, _) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let mut poller = client.share();
        let recv_token = harness.token("room", "dave");
        let recv_body = RecvReq {
            src: Some(dave.clone()),
        }
        .encode_to_vec();
        let polling =
            tokio::spawn(async move { poller.call("Recv", &recv_token, recv_body).await });
        // Carol writes to Dave's long-poll, which is open on the same HTTP/2 connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut sender = client.share();
        let sent = sender
            .call(
                "Send",
                &harness.token("room", "carol"),
                join_from(&carol, &dave).encode_to_vec(),
            )
            .await;
        assert_eq!(sent.status, StatusCode::OK, "{sent:?}");
        let received = polling.await.unwrap();
        assert_eq!(received.version, Version::HTTP_2);
        assert_eq!(
            RecvResp::decode(received.body.as_ref()).unwrap().msgs.len(),
            1
        );
    }

    /// gRPC-web over HTTP/2: a `Prepare` binds the peer, its `Recv` stream and a `Send` share
    /// one connection, the message is pushed on the stream, and resetting the stream (what a
    /// browser does when the page goes) ends the server's wait at once.
    #[tokio::test]
    async fn a_grpc_web_stream_shares_an_http2_connection_and_ends_when_reset() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let (alice, bob) = (info("room", "alice", 101), info("room", "bob", 202));
        let (client, _) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let Client::H2(mut send) = client.share() else {
            unreachable!()
        };
        let grpc = |path: &str, token: Option<&str>, message: Vec<u8>| {
            let mut framed = vec![0u8];
            framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            framed.extend_from_slice(&message);
            let mut request = Request::post(format!(
                "https://localhost/grpc/pulsebeam.v1.Signaling/{path}"
            ))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            request.body(Full::new(Bytes::from(framed))).unwrap()
        };
        let bob_token = harness.token("room", "bob");
        send.ready().await.unwrap();
        let prepared = send
            .send_request(grpc("Prepare", Some(&bob_token), Vec::new()))
            .await
            .unwrap();
        assert_eq!(prepared.version(), Version::HTTP_2);
        let body = prepared.into_body().collect().await.unwrap().to_bytes();
        assert!(body.ends_with(b"grpc-status:0\r\n"), "{body:?}");

        let recv = RecvReq {
            src: Some(bob.clone()),
        }
        .encode_to_vec();
        send.ready().await.unwrap();
        let stream = send.send_request(grpc("Recv", None, recv)).await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let mut stream = stream.into_body();
        let mut frames = Vec::new();
        // The keep-alive first, then, once alice sends on the same connection, her message.
        let mut sender = client.share();
        let sent = sender
            .request(
                "POST",
                "/grpc/pulsebeam.v1.Signaling/Send",
                &[
                    ("content-type", "application/grpc-web+proto"),
                    (
                        "authorization",
                        &format!("Bearer {}", harness.token("room", "alice")),
                    ),
                ],
                {
                    let message = join_from(&alice, &bob).encode_to_vec();
                    let mut framed = vec![0u8];
                    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
                    framed.extend_from_slice(&message);
                    framed
                },
            )
            .await
            .unwrap();
        assert!(sent.body.ends_with(b"grpc-status:0\r\n"), "{sent:?}");
        while frames.len() < 2 {
            let frame = tokio::time::timeout(Duration::from_secs(3), stream.frame())
                .await
                .expect("a frame in time")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                let mut at = 0;
                while data.len() >= at + 5 {
                    let len = u32::from_be_bytes([
                        data[at + 1],
                        data[at + 2],
                        data[at + 3],
                        data[at + 4],
                    ]) as usize;
                    frames.push(data.slice(at + 5..at + 5 + len));
                    at += 5 + len;
                }
            }
        }
        let got = RecvResp::decode(frames[1].as_ref()).unwrap();
        assert_eq!(
            got.msgs[0].header.as_ref().unwrap().src.as_ref(),
            Some(&alice)
        );

        // Reset the stream: the server stops waiting for bob's mail at once.
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let metrics = sender
                .request("GET", "/metrics", &[], Vec::new())
                .await
                .unwrap();
            if String::from_utf8_lossy(&metrics.body).contains("pulsebeam_polling_connections 0\n")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stream's wait outlived its reset"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn tls_1_2_clients_are_served_too() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let stream = tls_connect(harness.addr, &[&cert], &[b"h2"], &[&rustls::version::TLS12])
            .await
            .unwrap();
        assert_eq!(
            stream.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let (mut client, _) = Client::over(stream).await;
        let pong = client
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(
            (pong.status, pong.body.as_ref()),
            (StatusCode::OK, b"Pong".as_slice())
        );
    }

    #[tokio::test]
    async fn a_client_without_alpn_gets_http1() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let stream = tls_connect(harness.addr, &[&cert], &[], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), None);
        let (mut client, _) = Client::over(stream).await;
        let pong = client
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(
            (pong.version, pong.status),
            (Version::HTTP_11, StatusCode::OK)
        );
    }
}

mod bounds {
    use super::*;

    #[tokio::test]
    async fn plain_http_to_the_https_port_is_told_to_use_https_and_the_server_keeps_serving() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let mut plain = TcpStream::connect(harness.addr).await.unwrap();
        plain
            .write_all(b"GET /_ping HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut plain, Duration::from_secs(5))
            .await
            .expect("the server closes a connection that is not TLS");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.ends_with("use an https:// URL\n"), "{answer}");

        let (mut client, _) = Client::connect(harness.addr, &[&cert], b"http/1.1").await;
        let pong = client
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_untrusting_client_fails_the_handshake_and_others_are_served() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let other = Cert::new();
        let refused = tls_connect(harness.addr, &[&other], &[b"h2"], BOTH_VERSIONS).await;
        assert!(refused.is_err());
        let (mut client, _) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let pong = client
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_client_that_never_starts_the_handshake_is_closed_after_the_header_timeout() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |c| c.limits.header_timeout_secs = 1).await;
        let started = Instant::now();
        let mut silent = TcpStream::connect(harness.addr).await.unwrap();
        let answer = read_until_closed(&mut silent, Duration::from_secs(5))
            .await
            .expect("closed within the header timeout");
        let waited = started.elapsed();
        assert!(answer.is_empty(), "{answer:?}");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_or_idle_https_connection_is_closed_after_the_header_timeout() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |c| c.limits.header_timeout_secs = 1).await;

        // Handshake done, then nothing: not even the HTTP/2 preface.
        let mut silent = tls_connect(harness.addr, &[&cert], &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the server closes it: {read:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(900));

        // An HTTP/2 connection idle after a call gets a GOAWAY and is closed.
        let (mut client, closed) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let pong = client
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the idle HTTP/2 connection is closed")
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn an_http2_client_that_never_answers_the_goaway_ping_is_closed_too() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |c| c.limits.header_timeout_secs = 1).await;
        let mut raw = tls_connect(harness.addr, &[&cert], &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        // The client preface and an empty SETTINGS frame, then silence: no SETTINGS or PING ack.
        raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(6), async {
            while matches!(raw.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        assert!(closed.is_ok(), "still open after {:?}", started.elapsed());
        // One timeout idle, then one more waiting for the PING answer.
        assert!(
            started.elapsed() >= Duration::from_millis(1_900),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_long_poll_keeps_an_http2_connection_open_past_the_header_timeout() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |c| {
            c.limits.header_timeout_secs = 1;
            c.limits.poll_timeout_ms = 2_500;
        })
        .await;
        let peer = info("room", "dave", 404);
        let token = harness.token("room", "dave");
        let (mut client, _) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let started = Instant::now();
        let body = RecvReq {
            src: Some(peer.clone()),
        }
        .encode_to_vec();
        let polled = client.call("Recv", &token, body).await;
        assert_eq!(polled.status, StatusCode::OK, "{polled:?}");
        assert!(started.elapsed() >= Duration::from_secs(2));
        // Still open: the idle clock starts when the call ends.
        let pong = client
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn request_heads_are_bounded_over_http2() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let (mut client, _) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let big = "x".repeat(20_000);
        let refused = client
            .request("GET", "/_ping", &[("x-padding", &big)], Vec::new())
            .await;
        assert_eq!(
            refused.unwrap().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let (mut fresh, _) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let pong = fresh
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_connection_cap_counts_tls_connections() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |c| c.limits.max_open_connections = 1).await;
        let (mut first, first_connection) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let pong = first
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);

        // The second waits in the backlog: its handshake does not complete while the first is open.
        let addr = harness.addr;
        let trusted = cert.clone();
        let second =
            tokio::spawn(
                async move { tls_connect(addr, &[&trusted], &[b"h2"], BOTH_VERSIONS).await },
            );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!second.is_finished());
        drop(first);
        first_connection.abort();
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("served once the first connection closed")
            .unwrap()
            .unwrap();
        let (mut second, _) = Client::over(second).await;
        let pong = second
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn shutdown_answers_a_long_poll_over_http2_and_closes_the_connection() {
        let cert = Cert::new();
        let mut harness = Harness::start(&cert, |c| c.limits.poll_timeout_ms = 60_000).await;
        let peer = info("room", "erin", 505);
        let token = harness.token("room", "erin");
        let (mut client, closed) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let body = RecvReq {
            src: Some(peer.clone()),
        }
        .encode_to_vec();
        let polling = tokio::spawn(async move { client.call("Recv", &token, body).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        harness.stop().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let polled = polling.await.unwrap();
        assert_eq!(polled.status, StatusCode::OK, "{polled:?}");
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the HTTP/2 connection ends after the GOAWAY")
            .unwrap();
    }
}

mod reload {
    use super::*;

    #[tokio::test]
    async fn new_connections_get_the_new_certificate_and_old_ones_keep_working() {
        let (old, new) = (Cert::new(), Cert::new());
        let harness = Harness::start(&old, |_| {}).await;
        let before = tls_connect(harness.addr, &[&old, &new], &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(presented(&before), old.der);
        let (mut before, _) = Client::over(before).await;

        new.write(&harness.files);
        harness.server.reload_tls().unwrap();

        let after = tls_connect(harness.addr, &[&old, &new], &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(presented(&after), new.der);
        let pong = before
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
        let (mut after, _) = Client::over(after).await;
        let pong = after
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_broken_file_keeps_the_old_certificate_and_says_why() {
        let (old, new) = (Cert::new(), Cert::new());
        let harness = Harness::start(&old, |_| {}).await;

        std::fs::write(&harness.files.key_file, "not a key").unwrap();
        let err = harness.server.reload_tls().unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
        assert_eq!(err.key(), Some("tls.key_file"));

        // The new chain with the old key: they do not belong together.
        std::fs::write(&harness.files.cert_file, &new.cert_pem).unwrap();
        std::fs::write(&harness.files.key_file, &old.key_pem).unwrap();
        let err = harness.server.reload_tls().unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

        std::fs::remove_file(&harness.files.cert_file).unwrap();
        let err = harness.server.reload_tls().unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert_eq!(err.key(), Some("tls.cert_file"));

        let still = tls_connect(harness.addr, &[&old, &new], &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(presented(&still), old.der);
    }

    /// The running configuration with `[tls]` replaced.
    fn with_tls(harness: &Harness, tls: Option<TlsConfig>) -> Config {
        let mut config = (*harness.server.config()).clone();
        config.tls = tls;
        config
    }

    #[tokio::test]
    async fn a_configuration_reload_reads_the_files_again_and_may_move_them() {
        let (old, renewed, moved_cert) = (Cert::new(), Cert::new(), Cert::new());
        let harness = Harness::start(&old, |_| {}).await;

        // Renewed in place, as certbot does: the same paths, read again.
        renewed.write(&harness.files);
        let outcome = harness
            .server
            .reload(with_tls(&harness, Some(harness.files.clone())))
            .unwrap();
        assert!(outcome.restart_needed.is_empty(), "{outcome:?}");
        let trusted = [&old, &renewed, &moved_cert];
        let after = tls_connect(harness.addr, &trusted, &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(presented(&after), renewed.der);

        // Other paths: taken, and read by later reloads; the old files may go.
        let dir = TempDir::new();
        let moved = files_in(&dir);
        moved_cert.write(&moved);
        harness
            .server
            .reload(with_tls(&harness, Some(moved.clone())))
            .unwrap();
        let after = tls_connect(harness.addr, &trusted, &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(presented(&after), moved_cert.der);
        assert_eq!(harness.server.config().tls.as_ref(), Some(&moved));
        std::fs::remove_file(&harness.files.cert_file).unwrap();
        harness.server.reload_tls().unwrap();
    }

    #[tokio::test]
    async fn a_configuration_reload_with_a_bad_key_changes_nothing() {
        let (old, new) = (Cert::new(), Cert::new());
        let harness = Harness::start(&old, |_| {}).await;
        let dir = TempDir::new();
        let moved = files_in(&dir);
        std::fs::write(&moved.cert_file, &new.cert_pem).unwrap();
        std::fs::write(&moved.key_file, &old.key_pem).unwrap();
        let mut config = with_tls(&harness, Some(moved));
        config.limits.rate_per_sec = 7;

        let err = harness.server.reload(config).unwrap_err();
        assert_eq!(err.key(), Some("tls.key_file"), "{err}");
        assert_eq!(harness.server.config().limits.rate_per_sec, 50);
        assert_eq!(harness.server.config().tls.as_ref(), Some(&harness.files));
        let still = tls_connect(harness.addr, &[&old, &new], &[b"h2"], BOTH_VERSIONS)
            .await
            .unwrap();
        assert_eq!(presented(&still), old.der);
    }

    #[tokio::test]
    async fn removing_tls_waits_for_a_restart() {
        let cert = Cert::new();
        let harness = Harness::start(&cert, |_| {}).await;
        let outcome = harness.server.reload(with_tls(&harness, None)).unwrap();
        assert_eq!(outcome.restart_needed, ["tls"]);
        assert_eq!(harness.server.config().tls.as_ref(), Some(&harness.files));
        let (mut client, _) = Client::connect(harness.addr, &[&cert], b"h2").await;
        let pong = client
            .request("GET", "/_ping", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(pong.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_server_without_tls_has_nothing_to_reload() {
        let pair = KeyPair::generate().unwrap();
        let server =
            Server::new(Config::default().with_project(
                ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()),
            ))
            .unwrap();
        let err = server.reload_tls().unwrap_err();
        assert!(matches!(err, TlsError::NotEnabled), "{err}");
        assert!(err.to_string().contains("restart"), "{err}");
    }
}

mod config {
    use super::*;

    fn toml_with(tls: &str) -> String {
        format!(
            "[[projects]]\nid = \"p\"\n[[projects.keys]]\nkid = \"kid_0000000000000001\"\npublic_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"\n{tls}"
        )
    }

    #[test]
    fn both_files_are_required() {
        let only_cert = toml_with("[tls]\ncert_file = \"/etc/fullchain.pem\"\n");
        let err = Config::from_toml_str(&only_cert).unwrap_err();
        assert_eq!(err.key(), Some("tls.key_file"), "{err}");
        assert!(err.to_string().contains("remove [tls]"), "{err}");
        let only_key = toml_with("[tls]\nkey_file = \"/etc/privkey.pem\"\n");
        let err = Config::from_toml_str(&only_key).unwrap_err();
        assert_eq!(err.key(), Some("tls.cert_file"), "{err}");
        let typo = toml_with("[tls]\ncert = \"a\"\nkey_file = \"b\"\n");
        let err = Config::from_toml_str(&typo).unwrap_err().to_string();
        assert!(err.contains("cert"), "{err}");
        let both = toml_with("[tls]\ncert_file = \"a.pem\"\nkey_file = \"b.pem\"\n");
        let config = Config::from_toml_str(&both).unwrap();
        assert_eq!(config.tls, Some(TlsConfig::new("a.pem", "b.pem")));
    }

    /// `check` (what `serve --check` runs, and building a server) reads the files: each
    /// unusable one is refused naming its key.
    fn refusal(write: impl FnOnce(&TlsConfig)) -> (Option<String>, String) {
        let dir = TempDir::new();
        let files = files_in(&dir);
        write(&files);
        let pair = KeyPair::generate().unwrap();
        let err = pulsebeam_server::check(&config_with(&pair, &files)).unwrap_err();
        (err.key().map(str::to_owned), err.to_string())
    }

    #[test]
    fn unusable_files_are_refused_at_startup_naming_the_key() {
        let cert = Cert::new();
        let other = Cert::new();

        let (key, msg) = refusal(|_| {});
        assert_eq!(key.as_deref(), Some("tls.cert_file"), "{msg}");
        assert!(
            msg.contains("cannot read") && msg.contains("fullchain.pem"),
            "{msg}"
        );

        let (key, msg) = refusal(|f| {
            std::fs::write(&f.cert_file, "garbage, not PEM").unwrap();
            std::fs::write(&f.key_file, &cert.key_pem).unwrap();
        });
        assert_eq!(key.as_deref(), Some("tls.cert_file"), "{msg}");
        assert!(msg.contains("no certificate"), "{msg}");

        let (key, msg) = refusal(|f| {
            let broken = cert.cert_pem.replace("-----END CERTIFICATE-----", "");
            std::fs::write(&f.cert_file, broken).unwrap();
            std::fs::write(&f.key_file, &cert.key_pem).unwrap();
        });
        assert_eq!(key.as_deref(), Some("tls.cert_file"), "{msg}");
        assert!(msg.contains("not valid PEM"), "{msg}");

        let (key, msg) = refusal(|f| {
            std::fs::write(&f.cert_file, &cert.cert_pem).unwrap();
            std::fs::write(&f.key_file, &cert.cert_pem).unwrap();
        });
        assert_eq!(key.as_deref(), Some("tls.key_file"), "{msg}");
        assert!(msg.contains("no private key"), "{msg}");

        let (key, msg) = refusal(|f| {
            std::fs::write(&f.cert_file, &cert.cert_pem).unwrap();
            std::fs::write(&f.key_file, &other.key_pem).unwrap();
        });
        assert_eq!(key.as_deref(), Some("tls.key_file"), "{msg}");
        assert!(
            msg.contains("is not the key of the first certificate"),
            "{msg}"
        );
        // Never the key itself.
        let body_line = other.key_pem.lines().nth(1).unwrap();
        assert!(!msg.contains(body_line), "{msg}");

        let (key, msg) = refusal(|f| {
            std::fs::write(&f.cert_file, &cert.cert_pem).unwrap();
            let mangled = cert.key_pem.replacen('M', "*", 1);
            std::fs::write(&f.key_file, mangled).unwrap();
        });
        assert_eq!(key.as_deref(), Some("tls.key_file"), "{msg}");
        assert!(msg.contains("not valid PEM"), "{msg}");
        let rest_of_line = &cert.key_pem.lines().nth(1).unwrap()[1..];
        assert!(!msg.contains(rest_of_line), "{msg}");
    }

    #[tokio::test]
    async fn a_good_pair_passes_the_check_and_builds() {
        let cert = Cert::new();
        let dir = TempDir::new();
        let files = files_in(&dir);
        cert.write(&files);
        let pair = KeyPair::generate().unwrap();
        pulsebeam_server::check(&config_with(&pair, &files)).unwrap();
        Server::new(config_with(&pair, &files)).unwrap();
    }

    #[test]
    fn a_server_is_built_inside_a_runtime_and_says_so_outside_one() {
        let pair = KeyPair::generate().unwrap();
        let mut config = config_with(&pair, &files_in(&TempDir::new()));
        config.tls = None;
        let err = Server::new(config).unwrap_err();
        assert!(
            matches!(err, pulsebeam_server::BuildError::NoRuntime),
            "{err}"
        );
        assert!(err.to_string().contains("inside a tokio runtime"), "{err}");
    }

    #[test]
    fn the_example_config_documents_tls() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pulsebeam.example.toml"
        ))
        .unwrap();
        // The example leaves [tls] commented out; uncommenting its three lines must work.
        let tls_line = |line: &str| {
            ["[tls]", "cert_file", "key_file"]
                .iter()
                .any(|k| line.starts_with(k))
        };
        let uncommented: Vec<&str> = text
            .lines()
            .map(|line| {
                line.strip_prefix("# ")
                    .filter(|l| tls_line(l))
                    .unwrap_or(line)
            })
            .collect();
        let config = Config::from_toml_str(&uncommented.join("\n")).unwrap();
        let tls = config.tls.expect("the example has a commented-out [tls]");
        assert!(tls.cert_file.ends_with("fullchain.pem"), "{tls:?}");
        assert!(tls.key_file.ends_with("privkey.pem"), "{tls:?}");
    }
}
