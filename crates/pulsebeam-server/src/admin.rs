//! The admin API: a separate listener (loopback by default) for operators, JSON in and out.
//!
//! Every call needs `Authorization: Bearer <admin token>`; the configuration holds only the
//! token's SHA-256 (`admin.token_sha256`), compared in constant time. Every call, allowed or
//! not, is audited.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/v1/revocations` | the revocations in force |
//! | `POST /admin/v1/revocations` | revoke a token by `jti`, or every token of a peer, until a time |
//! | `POST /admin/v1/reload` | read the configuration file again (as SIGHUP does) |
//! | `GET /admin/v1/online?project=ID` | connections of a project with a `Recv` in flight |
//! | `GET /admin/v1/usage?project=ID&hours=N` | a project's hourly usage totals |
//! | `GET /admin/v1/projects` | the configured project ids |
//! | `GET /admin/v1/usage/minutes?project=ID&minutes=N` | this node's last minutes of a project (of every project without `project`) |
//!
//! `GET /admin/usage` serves the usage page (see [`crate::admin_page`]); the page itself needs
//! no token, the data it shows comes from the routes above.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query, Request, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::admin_api::{
    AllMinutesAnswer, ErrorAnswer, HourUsage, MinutesAnswer, OnlineAnswer, ProjectsAnswer,
    ReloadAnswer, RevocationAnswer, RevocationsAnswer, RevokeRequest, UsageAnswer,
};
use crate::audit::Event;
use crate::revoke::{Revocation, RevocationError, RevocationTarget};
use crate::state::{remote_of, State};
use crate::{ReloadError, Server};

/// Longest revocation accepted: beyond a year, mint-side lifetimes are the problem to fix.
const MAX_REVOCATION_SECS: u64 = 366 * 24 * 3600;

/// An admin API error: a status and a message that names the fix.
struct AdminError {
    status: StatusCode,
    error: String,
}

impl AdminError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        AdminError {
            status,
            error: error.into(),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorAnswer { error: self.error })).into_response()
    }
}

impl From<RevocationError> for AdminError {
    fn from(err: RevocationError) -> Self {
        let status = match err {
            RevocationError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError::new(status, err.to_string())
    }
}

impl Server {
    /// The admin API's routes (see the module docs), to serve on a listener of their own.
    pub fn admin_router(&self) -> Router {
        let state = Arc::clone(self.state());
        Router::new()
            .route(
                "/admin/v1/revocations",
                get(list_revocations).post(add_revocation),
            )
            .route("/admin/v1/reload", post(reload))
            .route("/admin/v1/online", get(online))
            .route("/admin/v1/usage", get(usage))
            .route("/admin/v1/projects", get(projects))
            .route("/admin/v1/usage/minutes", get(usage_minutes))
            .fallback(|| async {
                AdminError::new(
                    StatusCode::NOT_FOUND,
                    "no such admin route; see the server README for /admin/v1/revocations, /admin/v1/reload, /admin/v1/online and /admin/v1/usage",
                )
            })
            .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
            .with_state(state)
            .merge(crate::admin_page::router())
    }
}

/// Most connections the admin API serves at once: it has a handful of operators and scripts.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Serves the admin API of `server` on `listener` until `shutdown` completes, with the
/// signaling listener's hardening (head timeout and size bound, a connection cap, a graceful
/// drain), over plain HTTP: keep it on loopback or a private network.
///
/// # Errors
///
/// An I/O error from the listener.
pub async fn serve_admin(
    listener: TcpListener,
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut limits = server.config().limits.clone();
    limits.max_open_connections = limits.max_open_connections.min(MAX_ADMIN_CONNECTIONS);
    let router = server.admin_router();
    crate::serve::serve_router(listener, router, &limits, None, shutdown, || {}).await
}

/// Checks the admin token and audits the call, whatever its outcome.
async fn guard(AxumState(state): AxumState<Arc<State>>, request: Request, next: Next) -> Response {
    let remote = remote_of(request.extensions());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = if token_ok(&state, request.headers()) {
        next.run(request).await
    } else {
        AdminError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token; send `Authorization: Bearer <admin token>` (its SHA-256 is admin.token_sha256)",
        )
        .into_response()
    };
    state.audit.record(
        Event::new("admin_call")
            .with("method", method)
            .with("path", path)
            .with("status", response.status().as_u16())
            .remote(remote),
    );
    response
}

fn token_ok(state: &State, headers: &HeaderMap) -> bool {
    let live = state.live.load();
    let Some(admin) = &live.config.admin else {
        return false;
    };
    let Ok(expected) = hex_32(admin.token_sha256.trim()) else {
        return false;
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    let actual: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    bool::from(actual.ct_eq(&expected))
}

fn hex_32(text: &str) -> Result<[u8; 32], ()> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return Err(());
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| ())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| ())?;
    }
    Ok(out)
}

async fn list_revocations(AxumState(state): AxumState<Arc<State>>) -> Response {
    Json(RevocationsAnswer {
        revocations: state.revocations.list(state.now_unix()),
    })
    .into_response()
}

async fn add_revocation(
    AxumState(state): AxumState<Arc<State>>,
    request: Request,
) -> Result<Response, AdminError> {
    let remote = remote_of(request.extensions());
    let bytes = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|_| AdminError::new(StatusCode::BAD_REQUEST, "the body is larger than 64 KiB"))?;
    let body: RevokeRequest = serde_json::from_slice(&bytes).map_err(|e| {
        AdminError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not a revocation: {e}; send {{\"project\": ID, \"jti\": JTI}} or {{\"project\": ID, \"group\": G, \"peer\": P}}, with \"until\" (Unix seconds) or \"for_secs\""),
        )
    })?;
    let live = state.live.load();
    if !live.config.projects.iter().any(|p| p.id == body.project) {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no project {:?} is configured; use a project id from the configuration",
                body.project
            ),
        ));
    }
    let target = match (body.jti, body.group, body.peer) {
        (Some(jti), None, None) if !jti.is_empty() && jti.len() <= 256 => RevocationTarget::Token {
            project: body.project,
            jti,
        },
        (None, Some(group), Some(peer))
            if pulsebeam_token::PeerClaims::new(&group, &peer).is_ok() =>
        {
            RevocationTarget::Peer {
                project: body.project,
                group,
                peer,
            }
        }
        _ => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "name either a token (\"jti\", 1 to 256 characters) or a peer (\"group\" and \"peer\", valid ids), not both",
            ))
        }
    };
    let now = state.now_unix();
    let until = match (body.until, body.for_secs) {
        (Some(until), None) => until,
        (None, Some(secs)) => now.saturating_add(secs),
        (None, None) => match live.config.limits.max_token_lifetime_secs {
            // Every token it can cover is expired by then.
            Some(max) => now
                .saturating_add(max)
                .saturating_add(live.config.limits.token_leeway_secs),
            None => {
                return Err(AdminError::new(
                    StatusCode::BAD_REQUEST,
                    "say how long it must hold: \"until\" (Unix seconds, e.g. the token's exp) or \"for_secs\"; with limits.max_token_lifetime_secs set, that lifetime is the default",
                ))
            }
        },
        (Some(_), Some(_)) => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "give \"until\" or \"for_secs\", not both",
            ))
        }
    };
    if until <= now || until - now > MAX_REVOCATION_SECS {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the revocation must end in the future and within {MAX_REVOCATION_SECS} s (a year)"
            ),
        ));
    }
    let kept = state
        .revoke(Revocation::new(target, until, now), remote)
        .await?;
    Ok((StatusCode::OK, Json(RevocationAnswer { revocation: kept })).into_response())
}

async fn reload(AxumState(state): AxumState<Arc<State>>) -> Response {
    let server = Server::from_state(Arc::clone(&state));
    match server.reload_from_file() {
        Ok(outcome) => Json(ReloadAnswer { reloaded: outcome }).into_response(),
        Err(ReloadError::NoFile) => {
            AdminError::new(StatusCode::CONFLICT, ReloadError::NoFile.to_string()).into_response()
        }
        Err(err) => {
            AdminError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string()).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ProjectQuery {
    project: String,
    #[serde(default)]
    hours: Option<u64>,
}

/// Checks that `project` is a configured project id (stores key projects by it).
fn known_project(state: &State, project: &str) -> Result<(), AdminError> {
    state
        .live
        .load()
        .config
        .projects
        .iter()
        .any(|p| p.id == project)
        .then_some(())
        .ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no project {project:?} is configured; use a project id from the configuration"
                ),
            )
        })
}

async fn online(
    AxumState(state): AxumState<Arc<State>>,
    Query(query): Query<ProjectQuery>,
) -> Result<Response, AdminError> {
    known_project(&state, &query.project)?;
    let connections = state
        .store
        .online(&query.project)
        .await
        .map_err(|e| AdminError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(OnlineAnswer {
        project: query.project,
        connections,
    })
    .into_response())
}

async fn usage(
    AxumState(state): AxumState<Arc<State>>,
    Query(query): Query<ProjectQuery>,
) -> Result<Response, AdminError> {
    known_project(&state, &query.project)?;
    let hours = query.hours.unwrap_or(24).clamp(1, 24 * 7);
    let now = state.now_unix();
    let since = (now / 3600).saturating_sub(hours - 1) * 3600;
    let totals = state
        .usage_totals(&query.project, since)
        .await
        .map_err(|e| AdminError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let hours = totals
        .into_iter()
        .map(|(hour, totals)| HourUsage { hour, totals })
        .collect();
    Ok(Json(UsageAnswer {
        project: query.project,
        hours,
    })
    .into_response())
}

async fn projects(AxumState(state): AxumState<Arc<State>>) -> Response {
    let live = state.live.load();
    let projects = live.config.projects.iter().map(|p| p.id.clone()).collect();
    Json(ProjectsAnswer { projects }).into_response()
}

#[derive(Debug, Deserialize)]
struct MinutesQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    minutes: Option<u64>,
}

/// This node's last minutes of one project (`project=ID`), or of every configured project in
/// one answer (what the usage page asks for: one audited call per refresh).
async fn usage_minutes(
    AxumState(state): AxumState<Arc<State>>,
    Query(query): Query<MinutesQuery>,
) -> Result<Response, AdminError> {
    let count = query
        .minutes
        .unwrap_or(60)
        .clamp(1, crate::usage::KEEP_MINUTES);
    let now = state.now_unix();
    let one = |project: &str| {
        let (online_now, minutes) = state.usage.minutes(project, now, count)?;
        Some(MinutesAnswer {
            project: project.to_owned(),
            now,
            online_now,
            minutes,
        })
    };
    if let Some(project) = &query.project {
        known_project(&state, project)?;
        let answer = one(project).ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no usage is kept for project {project:?}; use a project id from the configuration"
                ),
            )
        })?;
        return Ok(Json(answer).into_response());
    }
    let live = state.live.load();
    let projects = live
        .config
        .projects
        .iter()
        .filter_map(|p| one(&p.id))
        .collect();
    Ok(Json(AllMinutesAnswer { now, projects }).into_response())
}
