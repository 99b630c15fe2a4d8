//! `pulsebeam dev` as a user runs it: start on a free port, read the URL it prints, fetch a
//! token and the public keys over HTTP, stop it with SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the server if a test fails half way.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_get(base: &str, path: &str) -> (u16, String) {
    let authority = base.strip_prefix("http://").unwrap().trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn start(args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let child = Command::new(env!("CARGO_BIN_EXE_pulsebeam"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));
    let stdout = running.child().stdout.take().unwrap();
    let (lines, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (running, rx)
}

#[test]
fn dev_serves_tokens_and_keys_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut server, lines) =
        start(&["dev", "--port", "0", "--state-dir", state.to_str().unwrap()]);

    let first = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    let url = first
        .strip_prefix("PulseBeam dev server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .trim_end_matches('/')
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":0"), "the real port is printed: {url}");
    let banner: Vec<String> = lines
        .iter()
        .take_while(|l| !l.starts_with("and the key"))
        .collect();
    assert!(
        banner
            .iter()
            .any(|l| l.starts_with("WARNING: for development only")),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(|l| l.contains("created now")),
        "{banner:?}"
    );

    let (status, body) = http_get(&url, "/auth?groupId=default&peerId=alice");
    assert_eq!(status, 200, "{body}");
    let auth: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(auth["groupId"], "default");
    assert_eq!(auth["peerId"], "alice");
    let token = auth["token"].as_str().unwrap().to_owned();

    let (status, jwks) = http_get(&url, "/.well-known/jwks.json");
    assert_eq!(status, 200);
    let keys = pulsebeam_token::KeySet::from_jwks_json(&jwks).unwrap();
    let claims = pulsebeam_token::Verifier::new(keys).verify(&token).unwrap();
    assert_eq!(claims.peer_id(), "alice");

    let (status, body) = http_get(&url, "/auth?groupId=default");
    assert_eq!(status, 400);
    assert!(body.contains("peerId is missing"), "{body}");

    // SIGTERM: a graceful stop with exit code 0.
    let pid = server.child().id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let (done, exited) = mpsc::channel();
    let mut child = server.0.take().unwrap();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = exited
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    // A second run reuses the key.
    let (_server, lines) = start(&["dev", "--port", "0", "--state-dir", state.to_str().unwrap()]);
    let banner: Vec<String> = lines
        .iter()
        .take_while(|l| !l.starts_with("and the key"))
        .collect();
    assert!(banner.iter().any(|l| l.contains("reused")), "{banner:?}");
}

#[test]
fn dev_refuses_bad_command_lines() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["dev", "--host", "0.0.0.0", "--port", "0"],
            "dev mode listens only on loopback",
        ),
        (
            &["dev", "--turn-url", "turn:127.0.0.1:3478"],
            "--turn-secret",
        ),
        (&["dev", "--turn-secret", "s"], "--turn-url"),
        (&["dev", "--port", "70000"], "70000"),
    ];
    for (args, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_pulsebeam"))
            .args(*args)
            .args(["--state-dir", dir.path().join("s").to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
