//! The cost of the signaling handlers, driven in-process through the router (no sockets), next
//! to an empty axum handler on the same stack; report the ratios, not the absolute times.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use axum::body::Body;
use axum::http::Request;
use axum::routing::post;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use prost::Message as _;
use pulsebeam_server::proto::{
    Join, Message, MessageHeader, MessagePayload, PayloadType, PeerInfo, RecvReq, SendReq,
};
use pulsebeam_server::{Config, ProjectConfig, Server};
use pulsebeam_token::{AccessToken, KeyPair, PeerClaims, PeerPolicy};
use tower::ServiceExt as _;

fn server(pair: &KeyPair, cache: usize) -> Router {
    let mut config = Config::default()
        .with_project(ProjectConfig::new("bench").with_key(pair.api_key(), &pair.public_key()));
    config.limits.rate_per_sec = u32::MAX;
    config.limits.rate_burst = u32::MAX;
    config.limits.token_cache_capacity = cache;
    config.ice.stun_urls = vec!["stun:stun.example:3478".into()];
    Server::new(config).unwrap().router()
}

fn request(path: &str, token: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/protobuf")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body))
        .unwrap()
}

async fn call(router: &Router, path: &str, token: &str, body: Vec<u8>) -> usize {
    let response = router
        .clone()
        .oneshot(request(path, token, body))
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

fn info(peer: &str, conn: u32) -> PeerInfo {
    PeerInfo {
        group_id: "room".into(),
        peer_id: peer.into(),
        conn_id: conn,
    }
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pair = KeyPair::generate().unwrap();
    let app = AccessToken::new(pair.api_key(), &pair.api_secret()).unwrap();
    let token = |peer: &str| {
        let claims = PeerClaims::new("room", peer)
            .unwrap()
            .with_allow_policy(PeerPolicy::new("room", "*").unwrap());
        app.create_token(&claims, 3600).unwrap()
    };
    let (alice, bob) = (token("alice"), token("bob"));
    // A server starts its tasks on the runtime it is built in.
    let _runtime = rt.enter();
    let cached = server(&pair, 1024);
    let uncached = server(&pair, 0);
    let empty = Router::new().route("/twirp/empty", post(|| async { "" }));

    let send = SendReq {
        msg: Some(Message {
            header: Some(MessageHeader {
                src: Some(info("alice", 100)),
                dst: Some(info("bob", 200)),
                seqnum: 0,
                reliable: false,
            }),
            payload: Some(MessagePayload {
                payload_type: Some(PayloadType::Join(Join {})),
            }),
        }),
    }
    .encode_to_vec();
    let recv = RecvReq {
        src: Some(info("bob", 200)),
    }
    .encode_to_vec();

    let mut group = c.benchmark_group("router");
    group.bench_function("empty_axum_handler", |b| {
        b.to_async(&rt)
            .iter(|| call(&empty, "/twirp/empty", &alice, Vec::new()));
    });
    group.bench_function("prepare_cached_token", |b| {
        b.to_async(&rt).iter(|| {
            call(
                &cached,
                "/twirp/pulsebeam.v1.Tunnel/Prepare",
                &alice,
                Vec::new(),
            )
        });
    });
    group.bench_function("prepare_verify_every_call", |b| {
        b.to_async(&rt).iter(|| {
            call(
                &uncached,
                "/twirp/pulsebeam.v1.Tunnel/Prepare",
                &alice,
                Vec::new(),
            )
        });
    });
    group.bench_function("send_then_recv", |b| {
        b.to_async(&rt).iter(|| async {
            call(
                &cached,
                "/twirp/pulsebeam.v1.Tunnel/Send",
                &alice,
                send.clone(),
            )
            .await;
            let n = call(
                &cached,
                "/twirp/pulsebeam.v1.Tunnel/Recv",
                &bob,
                recv.clone(),
            )
            .await;
            assert!(n > 0);
        });
    });
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
