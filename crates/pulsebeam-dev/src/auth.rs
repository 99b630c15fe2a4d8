//! `/auth`, the token endpoint of the original README's example, and the project's JWKS.
//!
//! `GET /auth?groupId=<group>&peerId=<peer>` answers `{"groupId","peerId","token"}` with a token
//! allowed to reach everyone (`*:*`). Dev mode also takes `allow=<group pattern>:<peer pattern>`
//! to mint a token with a narrower policy, so restricted peers can be tried out and tested.
//! Cross-origin requests (a front end on another local port) get the signaling server's CORS
//! headers, like the Twirp routes.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pulsebeam_token::{AccessToken, PeerClaims, PeerPolicy};
use serde::Serialize;

/// Longest query string `/auth` looks at; real ones are under 100 bytes.
const MAX_QUERY_BYTES: usize = 1024;
const USAGE: &str = "call /auth?groupId=<group>&peerId=<peer> (optionally &allow=<group>:<peer>)";

/// What the token endpoints need.
pub(crate) struct TokenState {
    pub(crate) minter: AccessToken,
    pub(crate) ttl_secs: u64,
    pub(crate) jwks_json: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthResponse<'a> {
    group_id: &'a str,
    peer_id: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    error: &'a str,
}

/// The parsed request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AuthRequest {
    pub(crate) group_id: String,
    pub(crate) peer_id: String,
    pub(crate) allow: Option<String>,
}

/// Reads `groupId`, `peerId` and `allow` from a query string; every problem is named.
pub(crate) fn parse_query(query: Option<&str>) -> Result<AuthRequest, String> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "the query string is {} bytes, more than the {MAX_QUERY_BYTES} accepted; {USAGE}",
            query.len()
        ));
    }
    let mut group_id = None;
    let mut peer_id = None;
    let mut allow = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "groupId" => &mut group_id,
            "peerId" => &mut peer_id,
            "allow" => &mut allow,
            other => return Err(format!("unknown query parameter `{other}`; {USAGE}")),
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(format!(
                "query parameter `{name}` is given twice; give it once"
            ));
        }
    }
    let group_id = group_id.ok_or_else(|| format!("groupId is missing; {USAGE}"))?;
    let peer_id = peer_id.ok_or_else(|| format!("peerId is missing; {USAGE}"))?;
    Ok(AuthRequest {
        group_id,
        peer_id,
        allow,
    })
}

/// Mints the token for a request; errors are client errors, worded for the caller.
pub(crate) fn mint(state: &TokenState, request: &AuthRequest) -> Result<String, String> {
    let claims = PeerClaims::new(&request.group_id, &request.peer_id)
        .map_err(|err| format!("bad groupId or peerId: {err}"))?;
    let policy = match &request.allow {
        None => PeerPolicy::allow_all(),
        Some(text) => text
            .parse::<PeerPolicy>()
            .map_err(|err| format!("bad allow policy: {err}"))?,
    };
    state
        .minter
        .create_token(&claims.with_allow_policy(policy), state.ttl_secs)
        .map_err(|err| format!("cannot mint the token: {err}"))
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn error(message: &str) -> Response {
    let body = serde_json::to_string(&ErrorBody {
        code: "invalid_argument",
        error: message,
    })
    .unwrap_or_default();
    json(StatusCode::BAD_REQUEST, body)
}

/// `GET /auth`.
pub(crate) async fn auth(
    State(state): State<Arc<TokenState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let request = match parse_query(query.as_deref()) {
        Ok(request) => request,
        Err(message) => return error(&message),
    };
    let token = match mint(&state, &request) {
        Ok(token) => token,
        Err(message) => return error(&message),
    };
    match serde_json::to_string(&AuthResponse {
        group_id: &request.group_id,
        peer_id: &request.peer_id,
        token: &token,
    }) {
        Ok(body) => json(StatusCode::OK, body),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /.well-known/jwks.json`.
pub(crate) async fn jwks(State(state): State<Arc<TokenState>>) -> Response {
    json(StatusCode::OK, state.jwks_json.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_queries() {
        let req = parse_query(Some("groupId=room%201&peerId=al+ice&allow=room*:*")).unwrap();
        assert_eq!(
            req,
            AuthRequest {
                group_id: "room 1".into(),
                peer_id: "al ice".into(),
                allow: Some("room*:*".into()),
            }
        );
    }

    #[test]
    fn names_each_query_problem() {
        let long = "x".repeat(MAX_QUERY_BYTES + 1);
        let cases = [
            (None, "groupId is missing"),
            (Some(""), "groupId is missing"),
            (Some("groupId=g"), "peerId is missing"),
            (Some("peerId=p"), "groupId is missing"),
            (
                Some("groupId=g&peerId=p&x=1"),
                "unknown query parameter `x`",
            ),
            (
                Some("groupId=g&groupId=h&peerId=p"),
                "`groupId` is given twice",
            ),
            (Some(long.as_str()), "more than the 1024 accepted"),
        ];
        for (query, want) in cases {
            let err = parse_query(query).unwrap_err();
            assert!(err.contains(want), "{query:?}: {err}");
        }
    }
}
