//! Whole gRPC-web requests through the server's router, in process, on a paused clock (a `Recv`
//! stream lives its whole life, keep-alives and deadline included, in no real time). Whatever
//! the method, base path, credential, `Content-Type`, `grpc-timeout` and body, the answer is HTTP
//! 200 with `application/grpc-web+proto`, and its body is data frames followed by exactly one
//! well-formed trailer frame (`grpc-status` in 0..=16, a printable `grpc-message`); a status in
//! the headers (trailers only) agrees with the trailer and comes without data. No answer is
//! INTERNAL or UNKNOWN. A success is only possible for a well-formed call with a valid token, and
//! carries what the method answers: one decodable message for a unary call, one `RecvResp` of
//! one message per frame for `Recv`. A bad token is UNAUTHENTICATED, an unknown method
//! UNIMPLEMENTED, and a message that does not decode as the method's request INVALID_ARGUMENT.
//!
//! Without a token, a `Recv` can only be refused here: the binding that admits it needs the
//! client's address, which an in-process request does not have.
//!
//! Input: a selector byte (bits 0-1 method, 2-3 credential, 4 base path, 5 content type, 6 body
//! framed by the target or sent raw, 7 unknown method), a `grpc-timeout` byte (0: none, 255:
//! malformed, else 1 to 63 of ms, s, us or min), then the body.
#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use pulsebeam_server::proto::{
    AnalyticsReportReq, AnalyticsReportResp, Message, PrepareReq, PrepareResp, RecvReq, SendResp,
    StreamRecvResp,
};
use pulsebeam_server::{Config, ProjectConfig, Server};
use pulsebeam_token::{AccessToken, KeyPair, PeerClaims, PeerPolicy, MAX_TTL_SECS};

const CONTENT_TYPE: &str = "application/grpc-web+proto";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    token: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let pair = KeyPair::generate().expect("key pair");
    let mut config = Config::default()
        .with_project(ProjectConfig::new("fuzz").with_key(pair.api_key(), &pair.public_key()));
    // Every call should reach the decoder, not the rate limiter.
    config.limits.rate_per_sec = 1_000_000;
    config.limits.rate_burst = 1_000_000;
    // Short streams with frequent keep-alives: each costs little, and pings are exercised.
    config.grpc_web.keepalive_secs = 1;
    config.grpc_web.max_stream_secs = 10;
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
        token,
    }
});

#[derive(Clone, Copy, PartialEq, Debug)]
enum Credential {
    Header,
    Path,
    None,
    Bad,
}

/// `SendReq` as the relay reads it: every occurrence of the message, as bytes; the message
/// must then decode as `pulsebeam.v1.Message` (a receiver could not read one that does not).
#[derive(Clone, PartialEq, prost::Message)]
struct OpaqueSendReq {
    #[prost(bytes = "vec", repeated, tag = "1")]
    msg: Vec<Vec<u8>>,
}

/// Whether a `Send` message is malformed for the relay.
fn send_malformed(message: &[u8]) -> bool {
    match OpaqueSendReq::decode(message) {
        Err(_) => true,
        Ok(request) if request.msg.is_empty() => false,
        Ok(request) => Message::decode(request.msg.concat().as_slice()).is_err(),
    }
}

/// Whether the request's one message does not decode as the method's request.
fn malformed(method: &str, message: &[u8]) -> bool {
    match method {
        "Prepare" => PrepareReq::decode(message).is_err(),
        "Send" => send_malformed(message),
        "Recv" => RecvReq::decode(message).is_err(),
        _ => AnalyticsReportReq::decode(message).is_err(),
    }
}

fn framed(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("inputs are small");
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The message of a body that is exactly one uncompressed data frame, the only request body the
/// protocol allows.
fn one_frame(body: &[u8]) -> Option<&[u8]> {
    let (header, rest) = body.split_first_chunk::<5>()?;
    let [flag, len @ ..] = *header;
    let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
    (flag == 0 && rest.len() == len).then_some(rest)
}

fn timeout(byte: u8) -> Option<String> {
    match byte {
        0 => None,
        255 => Some("1x".to_owned()),
        _ => Some(format!(
            "{}{}",
            byte & 0x3f,
            ["m", "S", "u", "M"][usize::from(byte >> 6)]
        )),
    }
}

/// The deadline a well-formed `grpc-timeout` byte asks for, in milliseconds (`None`: none).
fn timeout_ms(byte: u8) -> Option<u64> {
    if byte == 0 || byte == 255 {
        return None;
    }
    let n = u64::from(byte & 0x3f);
    Some(match byte >> 6 {
        0 => n,
        1 => n * 1_000,
        2 => n / 1_000,
        _ => n * 60_000,
    })
}

/// Splits a response body into `(data frames, trailer payload)`, asserting the framing.
fn frames(body: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut data = Vec::new();
    let mut rest = body;
    loop {
        let (header, after) = rest
            .split_first_chunk::<5>()
            .unwrap_or_else(|| panic!("the body ends inside a frame header: {body:?}"));
        let [flag, len @ ..] = *header;
        let len = usize::try_from(u32::from_be_bytes(len)).expect("u32 fits usize");
        let (payload, after) = after
            .split_at_checked(len)
            .unwrap_or_else(|| panic!("the body ends inside a frame: {body:?}"));
        match flag {
            0x00 => data.push(payload),
            0x80 => {
                assert!(after.is_empty(), "bytes after the trailer frame: {body:?}");
                return (data, payload);
            }
            other => panic!("a frame with flag {other:#x}: {body:?}"),
        }
        rest = after;
    }
}

/// Reads a trailer frame: `grpc-status:N\r\n` and an optional printable `grpc-message:...\r\n`.
fn trailer_status(payload: &[u8]) -> u8 {
    let text = std::str::from_utf8(payload).expect("the trailer is ASCII");
    let mut status = None;
    for line in text.split_terminator("\r\n") {
        let (name, value) = line.split_once(':').expect("a trailer line is name:value");
        match name {
            "grpc-status" => {
                assert!(status.is_none(), "two grpc-status lines: {text:?}");
                let code: u8 = value.parse().expect("grpc-status is a number");
                assert!(code <= 16, "grpc-status {code} is not a gRPC status");
                status = Some(code);
            }
            "grpc-message" => assert!(
                value.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "grpc-message is not printable ASCII: {value:?}"
            ),
            other => panic!("an unexpected trailer {other:?}: {text:?}"),
        }
    }
    assert!(
        text.ends_with("\r\n"),
        "the trailer's last line is unterminated: {text:?}"
    );
    status.expect("the trailer has a grpc-status")
}

fuzz_target!(|data: &[u8]| {
    let [selector, timeout_byte, body @ ..] = data else {
        return;
    };
    let (selector, timeout_byte) = (*selector, *timeout_byte);
    let fixture = &*FIXTURE;
    let known = selector & 0x80 == 0;
    let method = if known {
        ["Prepare", "Send", "Recv", "AnalyticsReport"][usize::from(selector & 3)]
    } else {
        "Subscribe"
    };
    let credential = [
        Credential::Header,
        Credential::Path,
        Credential::None,
        Credential::Bad,
    ][usize::from((selector >> 2) & 3)];
    let base = if selector & 0x10 == 0 { "/grpc" } else { "" };
    let binary = selector & 0x20 == 0;
    let frame_it = selector & 0x40 == 0;
    let timeout = timeout(timeout_byte);

    let path = match credential {
        Credential::Path => format!("{base}/t/{}/pulsebeam.v1.Signaling/{method}", fixture.token),
        _ => format!("{base}/pulsebeam.v1.Signaling/{method}"),
    };
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header(
            "content-type",
            if binary {
                CONTENT_TYPE
            } else {
                "application/grpc-web-text"
            },
        )
        .header("x-grpc-web", "1");
    match credential {
        Credential::Header => {
            request = request.header("authorization", format!("Bearer {}", fixture.token));
        }
        Credential::Bad => {
            // The real token with its signature changed: parses, fails to verify.
            let mut bad = fixture.token.clone();
            bad.truncate(bad.len() - 4);
            bad.push_str("AAAA");
            request = request.header("authorization", format!("Bearer {bad}"));
        }
        Credential::Path | Credential::None => {}
    }
    if let Some(timeout) = &timeout {
        request = request.header("grpc-timeout", timeout.as_str());
    }
    let sent = if frame_it {
        framed(body)
    } else {
        body.to_vec()
    };
    let request = request.body(Body::from(sent.clone())).expect("request");

    let (status, head_type, head_grpc_status, bytes) = fixture.runtime.block_on(async {
        let response = tower::ServiceExt::oneshot(fixture.router.clone(), request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let head_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().expect("ASCII content type").to_owned());
        let head_grpc_status = response.headers().get("grpc-status").map(|v| {
            v.to_str()
                .expect("ASCII status")
                .parse::<u8>()
                .expect("a numeric grpc-status header")
        });
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, head_type, head_grpc_status, bytes)
    });

    assert_eq!(status, StatusCode::OK, "{method}: HTTP {status}");
    assert_eq!(head_type.as_deref(), Some(CONTENT_TYPE), "{method}");
    let (data, trailer) = frames(&bytes);
    let code = trailer_status(trailer);
    if let Some(head) = head_grpc_status {
        assert_eq!(head, code, "header and trailer status differ");
        assert_ne!(head, 0, "a trailers-only answer is an error");
        assert!(data.is_empty(), "a trailers-only answer has no data");
    }
    assert!(
        code != 2 && code != 13,
        "{method} {credential:?}: status {code} (UNKNOWN/INTERNAL) for a client's request"
    );

    // What the request itself decides, in the order the server checks it.
    let message = one_frame(&sent);
    if !known {
        assert_eq!(code, 12, "an unknown method is UNIMPLEMENTED");
        return;
    }
    if !binary || timeout_byte == 255 {
        assert_eq!(code, 3, "{method}: a bad content type or grpc-timeout");
        return;
    }
    let tokenless_recv = credential == Credential::None && method == "Recv";
    match credential {
        Credential::Bad => assert_eq!(code, 16, "{method}: a bad token is UNAUTHENTICATED"),
        Credential::None if !tokenless_recv => {
            assert_eq!(code, 16, "{method} without a token is UNAUTHENTICATED")
        }
        _ => match message {
            None => assert_eq!(code, 3, "{method}: a body that is not one data frame"),
            Some(message) if tokenless_recv => {
                if RecvReq::decode(message).is_err() {
                    assert_eq!(code, 3, "a tokenless Recv whose request does not decode");
                } else {
                    // No binding in process: refused, retryably or for a missing src.
                    assert!(matches!(code, 3 | 14), "a tokenless Recv: status {code}");
                }
            }
            Some(message) if malformed(method, message) => {
                assert_eq!(
                    code, 3,
                    "{method}: an undecodable message is INVALID_ARGUMENT"
                );
            }
            Some(_) if method == "Prepare" || method == "AnalyticsReport" => {
                assert_eq!(
                    code, 0,
                    "a well-formed {method} with a valid token succeeds"
                );
            }
            Some(_) => {}
        },
    }
    if code != 0 {
        return;
    }
    assert!(
        message.is_some() && matches!(credential, Credential::Header | Credential::Path),
        "{method} {credential:?} succeeded: only one data frame with a valid token can"
    );
    match method {
        "Recv" => {
            for frame in &data {
                let resp = StreamRecvResp::decode(*frame).expect("a stream frame is a RecvResp");
                assert!(resp.msg.is_some(), "one message per stream frame");
            }
            // Its headers and first frame wait for a message or the first keep-alive, due
            // after `keepalive_secs` (1 s); a stream ended sooner by its deadline may have none.
            let outlives_keepalive = timeout_ms(timeout_byte).is_none_or(|ms| ms > 1_000);
            assert!(
                !data.is_empty() || !outlives_keepalive,
                "a stream open longer than the keep-alive interval got no frame"
            );
        }
        _ => {
            assert_eq!(data.len(), 1, "{method}: a unary answer is one message");
            let ok = match method {
                "Prepare" => PrepareResp::decode(data[0]).is_ok(),
                "Send" => SendResp::decode(data[0]).is_ok(),
                _ => AnalyticsReportResp::decode(data[0]).is_ok(),
            };
            assert!(ok, "{method}: the answer does not decode: {:?}", data[0]);
        }
    }
});
