//! The gRPC-web adapter: `pulsebeam.v1.Signaling` (`Prepare`, `Send` and `AnalyticsReport`
//! unary, `Recv` a server stream) for the `@pulsebeam/peer` 0.0.18 to 0.1.0-rc.2 clients, in
//! gRPC-web's binary format over HTTP/1.1 or HTTP/2. It decodes requests, hands them to the call
//! core ([`crate::call`]) and writes the answers; no rule lives here.
//!
//! Routes, under `/grpc` (the clients' hosted default base URL ended in `/grpc`) and at the root
//! (where the self-hosted FOSS server served them):
//!
//! - `POST {base}/pulsebeam.v1.Signaling/{method}`: the token in `Authorization: Bearer`, which
//!   the clients add to unary calls only; a `Recv` without one is admitted by the binding of
//!   [`crate::binding`].
//! - `POST {base}/t/{token}/pulsebeam.v1.Signaling/{method}`: the token in the path, for a
//!   client given `baseUrl = https://HOST/grpc/t/<token>`; it authenticates every call, `Recv`
//!   included.
//!
//! Every answer is HTTP 200 with `Content-Type: application/grpc-web+proto`; the status is in a
//! trailer frame, and for an error before any data also in the `grpc-status` and
//! `grpc-message` headers (exposed to cross-origin pages by the CORS layer).

mod frame;
mod recv;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use prost::Message as _;

use crate::binding;
use crate::call::{self, message, Caller};
use crate::code::{CallError, Code};
use crate::config::TokenlessRecv;
use crate::live::Live;
use crate::metrics::{Method, Protocol};
use crate::proto::{
    AnalyticsReportReq, AnalyticsReportResp, PeerInfo, PrepareReq, RecvReq, SendResp,
};
use crate::serve::AfterWrite;
use crate::state::{remote_of, State};
use crate::usage::Record;

/// The service's full name, as it appears in the paths.
pub const SIGNALING_SERVICE: &str = "pulsebeam.v1.Signaling";

/// The content type of every answer (the clients accept exactly this one).
const CONTENT_TYPE: &str = "application/grpc-web+proto";

/// The routes of `pulsebeam.v1.Signaling` under `/grpc` and at the root, with the token in
/// the `Authorization` header or in the path, and gRPC's `UNIMPLEMENTED` for any other method
/// or service under `/grpc/`.
pub(crate) fn routes() -> Router<Arc<State>> {
    let mut router = Router::new();
    for base in ["/grpc", ""] {
        router = router
            .route(
                &format!("{base}/{SIGNALING_SERVICE}/{{method}}"),
                any(
                    |s: AxumState<Arc<State>>, Path(method): Path<String>, r: Request| {
                        grpc(s, method, None, r)
                    },
                ),
            )
            .route(
                &format!("{base}/t/{{token}}/{SIGNALING_SERVICE}/{{method}}"),
                any(
                    |s: AxumState<Arc<State>>,
                     Path((token, method)): Path<(String, String)>,
                     r: Request| grpc(s, method, Some(token), r),
                ),
            );
    }
    router.route("/grpc/{*rest}", any(no_such_service))
}

/// Whether `headers` announce a gRPC-web request (`application/grpc-web`, with or without a
/// `+format` suffix and parameters).
pub(crate) fn is_grpc_web(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|essence| {
        essence.len() >= 20
            && essence
                .get(..20)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc-web"))
    })
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
}

/// An answer that ends the call with `err` before any data: the status in the headers
/// ("trailers-only") and, for clients that cannot read those headers, in a trailer frame too.
pub(crate) fn error_response(err: &CallError) -> Response {
    let message = frame::encode_message(&err.msg);
    let mut response = Response::new(Body::from(frame::trailer(err.code.grpc(), &err.msg)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert("grpc-status", HeaderValue::from(u16::from(err.code.grpc())));
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
    response
}

/// A unary answer: one data frame holding `message` (zero-length for an empty message) and
/// the OK trailer.
fn unary_response(message: &impl prost::Message) -> Response {
    let data = frame::data_with(message.encoded_len(), |out| {
        // `encoded_len` bytes always fit: the buffer was sized for them.
        let _ = message.encode(out);
    });
    let trailer = frame::trailer(0, "");
    let mut body = Vec::with_capacity(data.len() + trailer.len());
    body.extend_from_slice(&data);
    body.extend_from_slice(&trailer);
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

async fn no_such_service(request: Request) -> Response {
    unimplemented(request.uri().path())
}

/// gRPC's `UNIMPLEMENTED` for a method this server does not have.
pub(crate) fn unimplemented(path: &str) -> Response {
    error_response(&CallError::new(
        Code::BadRoute,
        format!(
            "no such gRPC-web method {path}; this server has {SIGNALING_SERVICE} with Prepare, Send, Recv and AnalyticsReport"
        ),
    ))
}

fn method_of(name: &str) -> Option<Method> {
    Some(match name {
        "Prepare" => Method::Prepare,
        "Send" => Method::Send,
        "Recv" => Method::Recv,
        "AnalyticsReport" => Method::AnalyticsReport,
        _ => return None,
    })
}

/// A call's answer: at once, or a `Recv` stream whose headers wait for its first frame.
enum Answer {
    Now(Response),
    Stream(Box<recv::Stream>),
}

/// Handles one call. A `Recv` stream then waits for its first frame in the second half of this
/// future. The first half (reading and admitting the request) has its own allocation, freed
/// once it is done, so what the router keeps for a waiting stream is the stream's own future
/// and no more.
fn grpc(
    state: AxumState<Arc<State>>,
    method: String,
    path_token: Option<String>,
    request: Request,
) -> impl std::future::Future<Output = Response> + Send {
    use futures_util::future::{ready, Either, FutureExt as _};
    Box::pin(answer(state, method, path_token, request)).then(|answer| match answer {
        Answer::Now(response) => Either::Left(ready(response)),
        Answer::Stream(stream) => Either::Right((*stream).respond()),
    })
}

async fn answer(
    AxumState(state): AxumState<Arc<State>>,
    method: String,
    path_token: Option<String>,
    request: Request,
) -> Answer {
    let Some(method) = method_of(&method) else {
        return Answer::Now(no_such_service(request).await);
    };
    match handle(&state, method, path_token, request).await {
        Ok(answer) => {
            state.metrics.call(Protocol::GrpcWeb, method, None);
            answer
        }
        Err(err) => {
            state
                .metrics
                .call(Protocol::GrpcWeb, method, Some(err.code));
            tracing::debug!(method = method.name(), code = err.code.as_str(), msg = %err.msg, "gRPC-web call refused");
            Answer::Now(error_response(&err))
        }
    }
}

/// The token a call presents: in the `Authorization` header, else in the path (as a bearer
/// header value, so that it is checked, cached, audited and checked again exactly as one).
fn presented_credential(headers: &HeaderMap, path_token: Option<&str>) -> Option<HeaderValue> {
    headers.get(header::AUTHORIZATION).cloned().or_else(|| {
        path_token.and_then(|token| HeaderValue::from_str(&format!("Bearer {token}")).ok())
    })
}

fn malformed(what: &'static str) -> CallError {
    CallError::new(
        Code::Malformed,
        format!("the request is not a valid protobuf {what}"),
    )
}

async fn handle(
    state: &Arc<State>,
    method: Method,
    path_token: Option<String>,
    request: Request,
) -> Result<Answer, CallError> {
    if request.method() != HttpMethod::POST {
        return Err(CallError::new(
            Code::BadRoute,
            format!(
                "{} is not allowed; gRPC-web methods take POST",
                request.method()
            ),
        ));
    }
    match content_type(request.headers()) {
        Some(ct)
            if ct.eq_ignore_ascii_case("application/grpc-web")
                || ct.eq_ignore_ascii_case("application/grpc-web+proto") => {}
        other => {
            return Err(CallError::new(
                Code::InvalidArgument,
                format!(
                    "unsupported Content-Type {:?}; send application/grpc-web+proto (the binary format)",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    let timeout = match request.headers().get("grpc-timeout") {
        None => None,
        Some(value) => Some(frame::parse_timeout(value.to_str().unwrap_or(""))?),
    };
    let remote = remote_of(request.extensions());
    let after = request.extensions().get::<Arc<AfterWrite>>().cloned();
    let live = state.live.load_full();
    let client =
        binding::client_address(request.headers(), remote, &live.config.grpc_web.proxies());
    let credential = presented_credential(request.headers(), path_token.as_deref());
    let tokenless = credential.is_none() && method == Method::Recv;
    let (caller, body) = if tokenless {
        // The body names the peer whose binding admits the call, so it comes first (bounded
        // like every body); the token it is bound to is then checked as any other.
        let limits = &live.config.limits;
        crate::body::refuse_declared_oversize(request.headers(), limits.max_body_bytes)?;
        let body = crate::body::read(request.into_body(), limits).await?;
        let request =
            RecvReq::decode(frame::request_message(&body)?).map_err(|_| malformed("RecvReq"))?;
        let credential = bound_credential(state, &live, request.src.as_ref(), client).await?;
        (state.admit(Some(credential), remote)?, body)
    } else {
        let caller = state.admit(credential, remote)?;
        let limits = &caller.live.config.limits;
        crate::body::refuse_declared_oversize(request.headers(), limits.max_body_bytes)?;
        let body = crate::body::read(request.into_body(), limits).await?;
        if method != Method::Recv {
            if let Ok(client) = client {
                state
                    .bindings
                    .note(
                        &caller.identity,
                        caller.credential(),
                        client,
                        state.now_unix(),
                    )
                    .await;
            }
        }
        (caller, body)
    };
    let message = body.slice_ref(frame::request_message(&body)?);
    dispatch(state, method, caller, message, timeout, after).await
}

/// The token bound to the peer a tokenless `Recv` names, from the client address it comes from.
async fn bound_credential(
    state: &State,
    live: &Live,
    src: Option<&PeerInfo>,
    client: Result<Option<std::net::IpAddr>, binding::Unresolved>,
) -> Result<HeaderValue, CallError> {
    let refused = |why: String| CallError::new(Code::Unauthenticated, why);
    if live.config.grpc_web.tokenless_recv == TokenlessRecv::Refuse {
        return Err(refused(
            "this server refuses a Recv without a token (grpc_web.tokenless_recv = \"refuse\"); give the client baseUrl = https://HOST/grpc/t/<token>".into(),
        ));
    }
    let src = src.ok_or_else(|| {
        CallError::new(
            Code::InvalidArgument,
            "RecvReq.src is missing; set it to your own group, peer and conn id",
        )
    })?;
    let client = client.map_err(|why| refused(why.explain().into()))?;
    let bound = match client {
        Some(client) => state
            .bindings
            .lookup(&src.group_id, &src.peer_id, client, state.now_unix())
            .await
            .map_err(|err| CallError::new(Code::Unavailable, err.to_string()))?,
        None => None,
    };
    bound.ok_or_else(|| {
        // Retried by the client: its next unary call (0.1.0-rc.1 on reports analytics every
        // minute) binds it again, e.g. after a restart of a node that kept the binding.
        CallError::new(
            Code::Unavailable,
            "no token has authenticated this peer from this client address; call Prepare (or any unary method) with the token first, or give the client baseUrl = https://HOST/grpc/t/<token>",
        )
    })
}

async fn dispatch(
    state: &Arc<State>,
    method: Method,
    caller: Caller,
    message: Bytes,
    timeout: Option<Duration>,
    after: Option<Arc<AfterWrite>>,
) -> Result<Answer, CallError> {
    match method {
        Method::Prepare => {
            PrepareReq::decode(message).map_err(|_| malformed("PrepareReq"))?;
            Ok(Answer::Now(unary_response(&call::prepare(state, &caller))))
        }
        Method::Send => {
            let incoming = message::message_of_protobuf(message)?;
            call::send(state, &caller, incoming).await?;
            Ok(Answer::Now(unary_response(&SendResp {})))
        }
        Method::AnalyticsReport => {
            let report =
                AnalyticsReportReq::decode(message).map_err(|_| malformed("AnalyticsReportReq"))?;
            let project = &caller.identity.project_id;
            let events = state.analytics.record(project, &report);
            state
                .usage
                .record(project, Record::Analytics { events }, state.now_unix());
            Ok(Answer::Now(unary_response(&AnalyticsReportResp {})))
        }
        Method::Recv => {
            let request = RecvReq::decode(message).map_err(|_| malformed("RecvReq"))?;
            let conn_id = call::own_connection(&caller, request.src.as_ref())?.conn_id;
            let settings = caller.live.config.grpc_web.clone();
            let max = Duration::from_secs(settings.max_stream_secs);
            let lifetime = timeout.map_or(max, |t| t.min(max));
            Ok(Answer::Stream(Box::new(recv::Stream::open(
                state, caller, conn_id, lifetime, &settings, after,
            ))))
        }
    }
}
