//! `pulsebeam dev` over real HTTP on 127.0.0.1: tokens, keys, the demo assets, key storage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::Path;

use pulsebeam_dev::{DevError, DevOptions, DevServer};
use pulsebeam_token::{KeySet, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A one-shot HTTP/1.1 request (Connection: close), enough for these tests.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"").await
}

struct Running {
    addr: SocketAddr,
    api_key: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), DevError>>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

async fn start(options: DevOptions) -> Running {
    let server = DevServer::bind(options).await.unwrap();
    let addr = server.local_addr();
    let api_key = server.api_key().to_owned();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        api_key,
        stop: Some(stop),
        task,
    }
}

fn options(dir: &Path) -> DevOptions {
    DevOptions::default()
        .with_state_dir(dir.join("state"))
        .with_port(0)
}

mod tokens {
    use super::*;

    #[tokio::test]
    async fn auth_mints_a_token_that_the_published_jwks_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(options(dir.path())).await;

        let jwks = get(server.addr, "/.well-known/jwks.json").await;
        assert_eq!(jwks.status, 200);
        assert_eq!(jwks.header("content-type"), Some("application/json"));
        let keys = KeySet::from_jwks_json(jwks.text()).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.get(&server.api_key).is_some());

        // A front end on another local port may fetch tokens (the server's CORS layer).
        let auth = request(
            server.addr,
            "GET",
            "/auth?groupId=default&peerId=alice",
            &[("origin", "http://localhost:5173")],
            b"",
        )
        .await;
        assert_eq!(auth.status, 200, "{}", auth.text());
        assert_eq!(auth.header("cache-control"), Some("no-store"));
        assert!(auth.header("access-control-allow-origin").is_some());
        let body = auth.json();
        assert_eq!(body["groupId"], "default");
        assert_eq!(body["peerId"], "alice");
        let verified = Verifier::new(keys)
            .verify(body["token"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            (verified.group_id(), verified.peer_id()),
            ("default", "alice")
        );
        assert!(verified.peer().allows("any-group", "anyone"));
        server.stop().await;
    }

    #[tokio::test]
    async fn allow_narrows_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(options(dir.path())).await;
        let keys = KeySet::from_jwks_json(get(server.addr, "/.well-known/jwks.json").await.text())
            .unwrap();
        let auth = get(
            server.addr,
            "/auth?groupId=room1&peerId=alice&allow=room1%3Acarol",
        )
        .await;
        assert_eq!(auth.status, 200, "{}", auth.text());
        let verified = Verifier::new(keys)
            .verify(auth.json()["token"].as_str().unwrap())
            .unwrap();
        assert!(verified.peer().allows("room1", "carol"));
        assert!(!verified.peer().allows("room1", "bob"));
        assert!(!verified.peer().allows("room2", "carol"));
        server.stop().await;
    }

    #[tokio::test]
    async fn bad_requests_get_400_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(options(dir.path())).await;
        let long = "x".repeat(17);
        let cases = [
            ("/auth".to_owned(), "groupId is missing"),
            ("/auth?peerId=alice".to_owned(), "groupId is missing"),
            ("/auth?groupId=default".to_owned(), "peerId is missing"),
            (
                "/auth?groupId=&peerId=alice".to_owned(),
                "group id is empty",
            ),
            (
                format!("/auth?groupId=g&peerId={long}"),
                "peer id is 17 characters long",
            ),
            (
                "/auth?groupId=g&peerId=a*".to_owned(),
                "peer id contains `*`",
            ),
            (
                "/auth?groupId=g&peerId=a%07".to_owned(),
                "control character",
            ),
            (
                "/auth?groupId=g&peerId=a&allow=nocolon".to_owned(),
                "bad allow policy",
            ),
            (
                "/auth?groupId=g&peerId=a&allow=a**%3Ab".to_owned(),
                "bad allow policy",
            ),
            (
                "/auth?groupId=g&peerId=a&peerId=b".to_owned(),
                "given twice",
            ),
            (
                "/auth?groupId=g&peerId=a&token=1".to_owned(),
                "unknown query parameter `token`",
            ),
        ];
        for (path, want) in cases {
            let resp = get(server.addr, &path).await;
            assert_eq!(resp.status, 400, "{path}");
            let body = resp.json();
            assert_eq!(body["code"], "invalid_argument", "{path}");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(want), "{path}: {error}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn minted_tokens_open_the_signaling_api() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(options(dir.path()).with_turn(
            vec!["turn:127.0.0.1:3478?transport=udp".to_owned()],
            "turn-secret",
        ))
        .await;
        let token = get(server.addr, "/auth?groupId=default&peerId=alice")
            .await
            .json()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let bearer = format!("Bearer {token}");
        let headers = [
            ("content-type", "application/protobuf"),
            ("authorization", bearer.as_str()),
        ];
        let prepare = request(
            server.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Prepare",
            &headers,
            b"",
        )
        .await;
        assert_eq!(
            prepare.status,
            200,
            "{}",
            String::from_utf8_lossy(&prepare.body)
        );
        // The TURN URL and a `<expiry>:<user>` username are in the answer.
        let body = String::from_utf8_lossy(&prepare.body).into_owned();
        assert!(
            body.contains("turn:127.0.0.1:3478?transport=udp"),
            "{body:?}"
        );

        let refused = request(
            server.addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Prepare",
            &[
                ("content-type", "application/protobuf"),
                ("authorization", "Bearer nope"),
            ],
            b"",
        )
        .await;
        assert_eq!(refused.status, 401);

        // The same token on the gRPC-web route the banner names: one data frame (the
        // PrepareResp with the TURN URL) and an OK trailer frame.
        let grpc = request(
            server.addr,
            "POST",
            "/grpc/pulsebeam.v1.Signaling/Prepare",
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
                ("authorization", bearer.as_str()),
            ],
            &[0, 0, 0, 0, 0],
        )
        .await;
        assert_eq!(grpc.status, 200);
        assert_eq!(
            grpc.header("content-type"),
            Some("application/grpc-web+proto")
        );
        let body = &grpc.body;
        assert_eq!(body[0], 0, "a data frame first");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let message = String::from_utf8_lossy(&body[5..5 + len]).into_owned();
        assert!(
            message.contains("turn:127.0.0.1:3478?transport=udp"),
            "{message:?}"
        );
        assert_eq!(&body[5 + len..], b"\x80\0\0\0\x0fgrpc-status:0\r\n");
        server.stop().await;
    }
}

mod demo {
    use super::*;

    #[tokio::test]
    async fn serves_the_page_and_its_modules() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(options(dir.path())).await;
        let page = get(server.addr, "/").await;
        assert_eq!(page.status, 200);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(page.text().contains("<title>PulseBeam dev demo</title>"));
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        for file in [
            "app.js",
            "session.js",
            "tunnel.js",
            "twirp.js",
            "grpcweb.js",
            "proto.js",
        ] {
            let resp = get(server.addr, &format!("/demo/{file}")).await;
            assert_eq!(resp.status, 200, "{file}");
            assert_eq!(
                resp.header("content-type"),
                Some("text/javascript; charset=utf-8")
            );
            assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
            assert!(!resp.body.is_empty());
        }
        let css = get(server.addr, "/demo/style.css").await;
        assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
        let missing = get(server.addr, "/demo/secret.env").await;
        assert_eq!(missing.status, 404);
        assert!(missing.text().contains("the demo page is at /"));
        server.stop().await;
    }
}

mod state {
    use super::*;

    #[tokio::test]
    async fn the_key_is_created_owner_only_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevServer::bind(options(dir.path())).await.unwrap();
        assert!(first.key_created());
        assert!(first.banner().contains("created now"));
        assert!(first.banner().contains("WARNING: for development only"));
        let key_path = first.key_path().to_owned();
        let api_key = first.api_key().to_owned();
        drop(first);

        let text = std::fs::read_to_string(&key_path).unwrap();
        assert!(text.contains(&format!("PULSEBEAM_API_KEY={api_key}\n")));
        assert!(text.contains("PULSEBEAM_API_SECRET=sk_"));
        let gitignore = std::fs::read_to_string(dir.path().join("state/.gitignore")).unwrap();
        assert!(gitignore.lines().any(|l| l == "*"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&key_path), 0o600);
            assert_eq!(mode(&dir.path().join("state")), 0o700);
        }

        let second = DevServer::bind(options(dir.path())).await.unwrap();
        assert!(!second.key_created());
        assert_eq!(second.api_key(), api_key);
        assert!(second.banner().contains("reused"));
        let first_line = second.banner().lines().next().unwrap().to_owned();
        assert_eq!(
            first_line,
            format!("PulseBeam dev server listening on {}/", second.url())
        );
        // Both signaling base URLs, each with the clients it is for.
        let banner = second.banner();
        let url = second.url();
        assert!(
            banner.contains(&format!(
                "{url}/grpc   (baseUrl for @pulsebeam/peer 0.0.18 to 0.1.0-rc.2: gRPC-web)"
            )),
            "{banner}"
        );
        assert!(
            banner.contains(&format!(
                "{url}/twirp  (baseUrl for @pulsebeam/peer 0.0.17: Twirp)"
            )),
            "{banner}"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_path = DevServer::bind(options(dir.path()))
            .await
            .unwrap()
            .key_path()
            .to_owned();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = DevServer::bind(options(dir.path())).await.unwrap_err();
        assert_eq!(err.code(), "key_file_permissions");
        assert!(err.to_string().contains("run `chmod 600"), "{err}");
    }

    #[tokio::test]
    async fn a_broken_key_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = DevServer::bind(options(dir.path()))
            .await
            .unwrap()
            .key_path()
            .to_owned();
        let cases = [
            (
                "PULSEBEAM_API_KEY=kid_0011223344556677\n",
                "key_file_invalid",
                "PULSEBEAM_API_SECRET is missing",
            ),
            (
                "PULSEBEAM_API_KEY=kid_0011223344556677\nPULSEBEAM_API_SECRET=sk_zz\n",
                "key_invalid",
                "delete the file to get a fresh key",
            ),
        ];
        for (contents, code, want) in cases {
            std::fs::write(&key_path, contents).unwrap();
            let err = DevServer::bind(options(dir.path())).await.unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(err.to_string().contains(want), "{err}");
            assert!(!err.to_string().contains("sk_zz"), "secret leaked: {err}");
        }
    }

    #[tokio::test]
    async fn bad_options_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                options(dir.path()).with_listen("0.0.0.0:0".parse().unwrap()),
                "not_loopback",
            ),
            (
                options(dir.path()).with_turn(vec!["http://x".to_owned()], "s"),
                "invalid_option",
            ),
            (
                options(dir.path()).with_turn(vec!["turn:127.0.0.1:3478".to_owned()], ""),
                "invalid_option",
            ),
            (
                options(dir.path()).with_stun_url("127.0.0.1"),
                "invalid_option",
            ),
            (options(dir.path()).with_token_ttl_secs(0), "invalid_option"),
            (
                options(dir.path()).with_turn_stats_url("http://127.0.0.1:6379"),
                "invalid_option",
            ),
            (
                options(dir.path()).with_store_redis_url("127.0.0.1:6379"),
                "invalid_option",
            ),
        ];
        for (opts, code) in cases {
            let err = DevServer::bind(opts).await.unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
        assert!(!dir.path().join("state").exists());
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = DevServer::bind(options(dir.path()).with_port(port))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "bind");
        assert!(err.to_string().contains("--port"), "{err}");
    }
}

mod concurrency {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn servers_starting_together_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let starts = (0..4).map(|_| DevServer::bind(options(dir.path())));
        let servers: Vec<DevServer> = futures_join_all(starts).await;
        let created = servers.iter().filter(|s| s.key_created()).count();
        assert_eq!(created, 1);
        assert!(servers.iter().all(|s| s.api_key() == servers[0].api_key()));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "dev.env" && name != ".gitignore")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<DevServer>
    where
        F: std::future::Future<Output = Result<DevServer, DevError>> + Send + 'static,
    {
        let tasks: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap().unwrap());
        }
        out
    }
}
