//! Whole Twirp requests through the server's router, in process, on a paused clock (a long-poll
//! costs no real time). Whatever the method, `Content-Type`, token and body, the server answers
//! with a Twirp status (never a 500, never a panic), an error is a well-formed Twirp error whose
//! code matches its status, a success decodes as the method's response, and a body is called
//! `malformed` exactly when it does not decode as the request message. A protobuf `Send` is
//! relayed as the bytes sent: its envelope is read with the message as bytes (every occurrence,
//! as protobuf merges them), and that message must decode as `pulsebeam.v1.Message` (unknown
//! fields skipped), since a receiver could not read one that does not.
//!
//! Input: one selector byte (bits 0-1 method, 2-3 content type, 4 token, 5 HTTP method), then
//! the body.
#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use pulsebeam_server::proto::{
    Message, PrepareReq, PrepareResp, RecvReq, RecvResp, SendReq, SendResp,
};
use pulsebeam_server::{Config, ProjectConfig, Server};
use pulsebeam_token::{AccessToken, KeyPair, PeerClaims, PeerPolicy, MAX_TTL_SECS};
use serde::de::DeserializeOwned;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    bearer: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let pair = KeyPair::generate().expect("key pair");
    let mut config = Config::default()
        .with_project(ProjectConfig::new("fuzz").with_key(pair.api_key(), &pair.public_key()));
    // Every call should reach the decoder, not the rate limiter.
    config.limits.rate_per_sec = 1_000_000;
    config.limits.rate_burst = 1_000_000;
    let app = AccessToken::new(pair.api_key(), &pair.api_secret()).expect("app");
    let claims = PeerClaims::new("default", "alice")
        .expect("ids")
        .with_allow_policy(PeerPolicy::allow_all());
    let token = app.create_token(&claims, MAX_TTL_SECS).expect("token");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    // A server starts its tasks on the runtime it is built in.
    let server = {
        let _runtime = runtime.enter();
        Server::new(config).expect("valid config")
    };
    Fixture {
        runtime,
        router: server.router(),
        bearer: format!("Bearer {token}"),
    }
});

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
    Other,
}

fn malformed<T: prost::Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> bool {
    match encoding {
        Encoding::Protobuf => T::decode(body).is_err(),
        Encoding::Json => {
            !body.iter().all(u8::is_ascii_whitespace) && serde_json::from_slice::<T>(body).is_err()
        }
        Encoding::Other => false,
    }
}

/// `SendReq` as the relay reads it: every occurrence of the message, as bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct OpaqueSendReq {
    #[prost(bytes = "vec", repeated, tag = "1")]
    msg: Vec<Vec<u8>>,
}

/// Whether a protobuf `Send` body is malformed for the relay.
fn send_envelope_malformed(body: &[u8]) -> bool {
    use prost::Message as _;
    match OpaqueSendReq::decode(body) {
        Err(_) => true,
        Ok(request) if request.msg.is_empty() => false,
        Ok(request) => Message::decode(request.msg.concat().as_slice()).is_err(),
    }
}

fn response_decodes<T: prost::Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> bool {
    match encoding {
        Encoding::Protobuf => T::decode(body).is_ok(),
        Encoding::Json => serde_json::from_slice::<T>(body).is_ok(),
        Encoding::Other => false,
    }
}

fn status_of(code: &str) -> Option<StatusCode> {
    Some(match code {
        "invalid_argument" | "malformed" => StatusCode::BAD_REQUEST,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "permission_denied" => StatusCode::FORBIDDEN,
        "bad_route" => StatusCode::NOT_FOUND,
        "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let fixture = &*FIXTURE;
    let method = ["Prepare", "Send", "Recv", "Nope"][usize::from(selector & 3)];
    let (content_type, encoding) = [
        ("application/protobuf", Encoding::Protobuf),
        ("application/json; charset=utf-8", Encoding::Json),
        ("application/x-protobuf", Encoding::Protobuf),
        ("text/plain", Encoding::Other),
    ][usize::from((selector >> 2) & 3)];
    let authorized = selector & 0x10 == 0;
    let post = selector & 0x20 == 0;

    let mut request = Request::builder()
        .method(if post { "POST" } else { "GET" })
        .uri(format!("/twirp/pulsebeam.v1.Tunnel/{method}"))
        .header("content-type", content_type);
    if authorized {
        request = request.header("authorization", fixture.bearer.as_str());
    }
    let request = request.body(Body::from(body.to_vec())).expect("request");

    let (status, bytes) = fixture.runtime.block_on(async {
        let response = tower::ServiceExt::oneshot(fixture.router.clone(), request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, bytes)
    });

    if status == StatusCode::OK {
        assert!(post && authorized && method != "Nope" && encoding != Encoding::Other);
        let ok = match method {
            "Prepare" => response_decodes::<PrepareResp>(encoding, &bytes),
            "Send" => response_decodes::<SendResp>(encoding, &bytes),
            _ => response_decodes::<RecvResp>(encoding, &bytes),
        };
        assert!(
            ok,
            "{method} answered 200 with a body that does not decode: {bytes:?}"
        );
        return;
    }
    let error: serde_json::Value =
        serde_json::from_slice(&bytes).expect("a Twirp error body is JSON");
    let code = error["code"].as_str().expect("a Twirp error has a code");
    assert!(error["msg"].is_string(), "a Twirp error has a msg: {error}");
    assert_eq!(
        status_of(code),
        Some(status),
        "code {code} with status {status}"
    );

    if post && authorized && method != "Nope" && encoding != Encoding::Other {
        let expected = match method {
            "Prepare" => malformed::<PrepareReq>(encoding, body),
            "Send" if encoding == Encoding::Protobuf => send_envelope_malformed(body),
            "Send" => malformed::<SendReq>(encoding, body),
            _ => malformed::<RecvReq>(encoding, body),
        };
        assert_eq!(
            code == "malformed",
            expected,
            "{method} {content_type}: code {code}, body {body:?}"
        );
    }
});
