//! Findings of the review of the call path, each with the case that showed it.

use super::*;
use pulsebeam_server::{Revocation, RevocationTarget};
use tokio::io::AsyncWriteExt as _;

/// A revocation made after a `Recv`'s head arrived but before its body did ends that `Recv`:
/// it must not hand out the mail that is waiting (the token was checked before the body came,
/// and nothing checked it again).
#[tokio::test]
async fn a_revocation_made_while_a_recv_body_arrives_ends_that_recv() {
    let h = Harness::start().await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    alice.send_ok(&bob.info, 1, true, offer("v=0")).await;

    let body = RecvReq {
        src: Some(bob.info.clone()),
    }
    .encode_to_vec();
    let head = format!(
        "POST /twirp/pulsebeam.v1.Tunnel/Recv HTTP/1.1\r\nhost: {}\r\ncontent-type: application/protobuf\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        h.addr,
        bob.token,
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    // The head is read and the token checked while the body has not come yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let target = RevocationTarget::Peer {
        project: "main".into(),
        group: "room".into(),
        peer: "bob".into(),
    };
    h.server
        .revoke(Revocation::new(target, T0 + 3600, T0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    socket.write_all(&body).await.unwrap();
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"code\":\"unauthenticated\""), "{answer}");
    assert!(answer.contains("revoked"), "{answer}");
}

/// A protobuf `Send` with a valid header and payload bytes `ff ff`, then a valid message: the
/// first is refused as malformed (no receiver could read it), and a JSON receiver gets the
/// second: one bad message costs no other.
#[tokio::test]
async fn an_unreadable_payload_is_refused_and_costs_a_json_receiver_nothing() {
    let h = Harness::start().await;
    let alice = h.peer("room", "alice", 100);
    let bob = h.peer("room", "bob", 200);
    let header = MessageHeader {
        src: Some(alice.info.clone()),
        dst: Some(bob.info.clone()),
        seqnum: 1,
        reliable: true,
    };
    let mut message = Vec::new();
    prost::encoding::message::encode(1, &header, &mut message);
    prost::encoding::bytes::encode(2, &vec![0xff_u8, 0xff], &mut message);
    let mut body = Vec::new();
    prost::encoding::bytes::encode(1, &message, &mut body);
    let reply = call(h.addr, "Send", Some(&alice.token), body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "malformed");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("a receiver could not read it"),
        "{reply:?}"
    );

    alice.send_ok(&bob.info, 2, true, offer("v=0")).await;
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
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let msgs = json["msgs"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{json}");
    assert_eq!(msgs[0]["header"]["seqnum"], 2);
}

/// The admin listener gets the signaling listener's hardening: a request head must arrive
/// within `header_timeout_secs` and stay within `max_header_bytes`.
#[tokio::test]
async fn the_admin_listener_bounds_request_heads_in_time_and_size() {
    let pair = KeyPair::generate().unwrap();
    let mut config = Config::default()
        .with_project(ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()));
    config.limits.header_timeout_secs = 1;
    config.admin = Some(pulsebeam_server::AdminConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "0".repeat(64),
    ));
    let server = Server::new(config).unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = admin.local_addr().unwrap();
    tokio::spawn(pulsebeam_server::serve_admin(
        admin,
        server,
        std::future::pending(),
    ));

    // A head that never completes: the connection is answered 408 or closed within the timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /admin/v1/projects HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_answer(&mut slow).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A head beyond the bound is refused with 431.
    let big = format!(
        "GET /admin/v1/projects HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw_exchange(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
