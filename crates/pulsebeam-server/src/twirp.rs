//! The Twirp adapter: `pulsebeam.v1.Tunnel` (`Prepare`, `Send`, `Recv` as a long-poll) over
//! HTTP/1.1 or HTTP/2, in protobuf or JSON, for the `@pulsebeam/peer` 0.0.17 client. It decodes
//! requests, hands them to the call core ([`crate::call`]) and writes the answers; no rule
//! lives here.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::{self, message, Online};
use crate::code::{CallError, Code};
use crate::metrics::{Method, Protocol};
use crate::proto::{PrepareReq, RecvReq, SendResp};
use crate::serve::{start_now, AfterWrite};
use crate::state::{remote_of, State};

/// The Twirp path prefix of the service; the client's `baseUrl` is the origin plus `/twirp`.
pub const TWIRP_PREFIX: &str = "/twirp/pulsebeam.v1.Tunnel/";

/// The routes of `pulsebeam.v1.Tunnel`, and a Twirp `bad_route` for anything else under
/// `/twirp/`.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route(
            &format!("{TWIRP_PREFIX}Prepare"),
            any(|s: AxumState<Arc<State>>, r: Request| twirp(s, Method::Prepare, r)),
        )
        .route(
            &format!("{TWIRP_PREFIX}Send"),
            any(|s: AxumState<Arc<State>>, r: Request| twirp(s, Method::Send, r)),
        )
        .route(
            &format!("{TWIRP_PREFIX}Recv"),
            any(|s: AxumState<Arc<State>>, r: Request| twirp(s, Method::Recv, r)),
        )
        .route("/twirp/{*rest}", any(bad_route))
}

/// A [`CallError`] as Twirp writes it: the code's HTTP status and a JSON body
/// `{"code": …, "msg": …}`.
impl IntoResponse for CallError {
    fn into_response(self) -> Response {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            code: &'a str,
            msg: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            code: self.code.as_str(),
            msg: &self.msg,
        })
        .unwrap_or_default();
        let mut response = (self.code.status(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Self, CallError> {
        let value = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/protobuf")
            || essence.eq_ignore_ascii_case("application/x-protobuf")
        {
            Ok(Encoding::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Ok(Encoding::Json)
        } else {
            Err(CallError::new(
                Code::BadRoute,
                "unsupported Content-Type; send application/protobuf or application/json",
            ))
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Protobuf => "application/protobuf",
            Encoding::Json => "application/json",
        })
    }

    fn decode<T: prost::Message + Default + DeserializeOwned>(
        self,
        body: &[u8],
    ) -> Result<T, CallError> {
        match self {
            Encoding::Protobuf => T::decode(body).map_err(|_| {
                CallError::new(
                    Code::Malformed,
                    "the body is not a valid protobuf message of the request type",
                )
            }),
            Encoding::Json => {
                // proto3 JSON: an empty body is not JSON, but treat it as an empty message.
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(T::default());
                }
                serde_json::from_slice(body).map_err(|e| {
                    // A field pulsebeam.v1 does not define is refused in JSON, not dropped.
                    let hint = if e.to_string().starts_with("unknown field") {
                        "; fix the field's name, or send application/protobuf: a JSON body may use only the fields of pulsebeam.v1"
                    } else {
                        ""
                    };
                    CallError::new(
                        Code::Malformed,
                        format!("the body is not valid JSON for the request type: {e}{hint}"),
                    )
                })
            }
        }
    }

    fn respond(self, body: Bytes) -> Response {
        let mut response = Response::new(Body::from(body));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, self.content_type());
        response
    }

    fn encode<T: prost::Message + Serialize>(self, message: &T) -> Result<Response, CallError> {
        let body = match self {
            Encoding::Protobuf => Bytes::from(message.encode_to_vec()),
            // Never an empty 200: a receiver would take it for "no messages" and lose a batch.
            Encoding::Json => Bytes::from(serde_json::to_vec(message).map_err(|e| {
                CallError::new(
                    Code::Internal,
                    format!(
                        "the answer could not be written as JSON ({e}); use application/protobuf"
                    ),
                )
            })?),
        };
        Ok(self.respond(body))
    }
}

/// A Twirp call: its request's head is read (method, encoding, credential) before the call's
/// future is made, so that a `Recv` keeps only what it needs while it waits, not the request.
fn twirp(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    request: Request,
) -> impl std::future::Future<Output = Response> + Send {
    let mut admitted = admit(&state, method, request);
    async move {
        // `run` borrows what was admitted: the call keeps one copy of it.
        let result = match admitted {
            Err(err) => Err(err),
            Ok(ref mut admitted) => run(&state, method, admitted).await,
        };
        match result {
            Ok(response) => {
                state.metrics.call(Protocol::Twirp, method, None);
                response
            }
            Err(err) => {
                state.metrics.call(Protocol::Twirp, method, Some(err.code));
                tracing::debug!(method = method.name(), code = err.code.as_str(), msg = %err.msg, "call refused");
                err.into_response()
            }
        }
    }
}

/// What a Twirp call keeps of its request once its head is checked: the caller, how to read and
/// answer its body, and the body still to read.
struct Admitted {
    caller: call::Caller,
    encoding: Encoding,
    /// Where a `Recv`'s acknowledgement waits for its answer to be written.
    after: Option<Arc<AfterWrite>>,
    body: Body,
}

/// Checks the request's head and admits its caller; the head is dropped here.
fn admit(state: &State, method: Method, request: Request) -> Result<Admitted, CallError> {
    if request.method() != HttpMethod::POST {
        return Err(CallError::new(
            Code::BadRoute,
            format!(
                "{} is not allowed; Twirp methods take POST",
                request.method()
            ),
        ));
    }
    let encoding = Encoding::of(request.headers())?;
    let remote = remote_of(request.extensions());
    // Only a Recv has an answer to acknowledge once written.
    let after = matches!(method, Method::Recv)
        .then(|| request.extensions().get::<Arc<AfterWrite>>().cloned())
        .flatten();
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let caller = state.admit(authorization, remote)?;
    crate::body::refuse_declared_oversize(
        request.headers(),
        caller.live.config.limits.max_body_bytes,
    )?;
    Ok(Admitted {
        caller,
        encoding,
        after,
        body: request.into_body(),
    })
}

/// Reads the call's body and runs it.
async fn run(
    state: &Arc<State>,
    method: Method,
    admitted: &mut Admitted,
) -> Result<Response, CallError> {
    let encoding = admitted.encoding;
    let caller = &mut admitted.caller;
    let body = crate::body::read(
        std::mem::take(&mut admitted.body),
        &caller.live.config.limits,
    )
    .await?;
    match method {
        Method::Prepare => {
            let _: PrepareReq = encoding.decode(&body)?;
            encoding.encode(&call::prepare(state, caller))
        }
        Method::Send => {
            let message = match encoding {
                Encoding::Protobuf => message::message_of_protobuf(body)?,
                Encoding::Json => message::message_of_json(encoding.decode(&body)?)?,
            };
            call::send(state, caller, message).await?;
            encoding.encode(&SendResp {})
        }
        Method::Recv => {
            // The request and its body (a slice of hyper's read buffer) are not kept while
            // the poll waits.
            let conn_id = {
                let request: RecvReq = encoding.decode(&body)?;
                drop(body);
                call::own_connection(caller, request.src.as_ref())?.conn_id
            };
            let _online = Online::begin(state, caller);
            let wait = Duration::from_millis(caller.live.config.limits.poll_timeout_ms);
            let handout =
                call::poll(state, caller, conn_id, wait, call::Batching::Window).await?;
            let response = match encoding {
                Encoding::Protobuf => {
                    encoding.respond(message::recv_resp_protobuf(&handout.envelopes))
                }
                Encoding::Json => {
                    let (resp, skipped) = message::recv_resp_message(&handout.envelopes);
                    if skipped > 0 {
                        state
                            .metrics
                            .dropped(crate::metrics::Drop::Unreadable, skipped as u64);
                    }
                    encoding.encode(&resp)?
                }
            };
            Ok(match handout.ack {
                Some(ack) => ack_when_written(response, Arc::clone(state), ack, admitted.after.take()),
                None => response,
            })
        }
        // Not routed: the Tunnel has no such method.
        Method::AnalyticsReport => Err(CallError::new(
            Code::BadRoute,
            "pulsebeam.v1.Tunnel has no AnalyticsReport; it is a method of the gRPC-web pulsebeam.v1.Signaling",
        )),
    }
}

async fn bad_route(request: Request) -> Response {
    CallError::new(
        Code::BadRoute,
        format!(
            "no such method {}; the service pulsebeam.v1.Tunnel has Prepare, Send and Recv",
            request.uri().path()
        ),
    )
    .into_response()
}

/// Acknowledges the messages of a `Recv` response to the store once the whole answer is
/// written to the connection (in the kernel's send buffer; see [`AfterWrite`]), not earlier: a
/// server killed before that hands the batch out again, first, to the connection's next `Recv`
/// instead of losing it. The acknowledgement is issued on the spot, before the client can have
/// the answer and poll again, so a new `Recv` on this node finds the batch acknowledged and does
/// not take it over. A response dropped before its last frame is written is not acknowledged.
fn ack_when_written(
    response: Response,
    state: Arc<State>,
    ack: call::PendingAck,
    after: Option<Arc<AfterWrite>>,
) -> Response {
    let (parts, body) = response.into_parts();
    let body = AckOnWritten {
        body,
        ack: Some((state, ack, after)),
    };
    Response::from_parts(parts, Body::new(body))
}

struct AckOnWritten {
    body: Body,
    ack: Option<(Arc<State>, call::PendingAck, Option<Arc<AfterWrite>>)>,
}

impl AckOnWritten {
    /// hyper took the last frame: the acknowledgement waits for it to be written.
    fn taken(&mut self) {
        let Some((state, ack, after)) = self.ack.take() else {
            return;
        };
        let work = move || start_now(async move { ack.send(&state).await });
        match after {
            Some(after) => after.push(work),
            // Served without the serving loop (a test's router): nothing tells when it is
            // written.
            None => work(),
        }
    }
}

impl http_body::Body for AckOnWritten {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let frame = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        // hyper takes the last frame for writing (and may not poll again once the content
        // length is reached).
        let last = match &frame {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            _ => false,
        };
        if last {
            self.taken();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A server with one project, and a bearer header value for a peer `g`/`p` of it.
    pub(crate) fn state_and_bearer() -> (Arc<State>, HeaderValue) {
        let pair = pulsebeam_token::KeyPair::generate().unwrap();
        let project = crate::ProjectConfig::new("p").with_key(pair.api_key(), &pair.public_key());
        let server = crate::Server::new(crate::Config::default().with_project(project)).unwrap();
        let claims = pulsebeam_token::PeerClaims::new("g", "p")
            .unwrap()
            .with_allow_policy(pulsebeam_token::PeerPolicy::allow_all());
        let token = pulsebeam_token::AccessToken::new(pair.api_key(), &pair.api_secret())
            .unwrap()
            .create_token(&claims, 600)
            .unwrap();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        (Arc::clone(server.state()), bearer)
    }

    /// A waiting call keeps its own copy of the credential, not the request's slice of hyper's
    /// read buffer (which would keep the whole buffer, 8 KiB, alive while it waits).
    #[tokio::test]
    async fn a_caller_keeps_its_own_copy_of_the_credential() {
        let (state, bearer) = state_and_bearer();
        let mut read_buffer = bearer.as_bytes().to_vec();
        read_buffer.resize(8192, b' ');
        let read_buffer = bytes::Bytes::from(read_buffer);
        let header = HeaderValue::from_maybe_shared(read_buffer.slice(..bearer.len())).unwrap();
        let mut caller = state.admit(Some(header), None).unwrap();
        // Once it polls (here without waiting, as a wait would go on past the check).
        let handout = call::poll(
            &state,
            &mut caller,
            16,
            Duration::ZERO,
            call::Batching::Window,
        )
        .await
        .unwrap();
        assert!(handout.envelopes.is_empty());
        assert_eq!(caller.credential(), Some(&bearer));
        assert!(
            read_buffer.is_unique(),
            "the caller holds a slice of the request's buffer"
        );
    }

    /// A waiting long-poll keeps its handler's future (boxed by the router) for as long as it
    /// waits; with the connection it is what an idle poll costs (BENCHMARKS.md), so it must not
    /// grow unnoticed.
    #[tokio::test]
    async fn a_waiting_long_poll_keeps_a_small_future() {
        let (state, bearer) = state_and_bearer();
        let mut caller = state.admit(Some(bearer), None).unwrap();
        let wait = Duration::from_secs(1);
        let poll = call::poll(&state, &mut caller, 20, wait, call::Batching::Window);
        println!("call::poll future: {} bytes", std::mem::size_of_val(&poll));
        drop(poll);
        let recv = twirp(AxumState(state), Method::Recv, Request::new(Body::empty()));
        let size = std::mem::size_of_val(&recv);
        println!("Twirp Recv handler future: {size} bytes");
        // The router boxes it with its own 256 bytes: 896 bytes is one of jemalloc's size
        // classes, and a byte more takes the next one, 1,024.
        assert!(size <= 640, "the Twirp handler's future takes {size} bytes");
    }
}
