//! The state every call shares: the configuration in force, the store, metrics, revocations,
//! audit and usage, the server's background tasks, and the checks that need several of them
//! (authentication with revocation, revoking, usage totals). The call core (`call/`) and the
//! admin API run on it; the server (`server.rs`) builds it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pulsebeam_token::Clock;
use tokio::sync::watch;

use crate::audit::{Audit, Event};
use crate::auth::{claimed_kid, failure_kind, AuthError, Identity};
use crate::code::CallError;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::revoke::{Revocation, RevocationError, Revocations};
use crate::store::{MailboxStore, RevocationStore, RevocationsVersion, UsageStore};
use crate::tasks::Tasks;
use crate::turnstats::{TurnStatsCounters, TurnTraffic};
use crate::usage::{Record, Usage};

pub(crate) struct State {
    /// The configuration in force, swapped whole by a reload.
    pub(crate) live: ArcSwap<Live>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Arc<dyn MailboxStore>,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Bumped when keys or revocations change (open long-polls check their caller again) and
    /// when the server begins to shut down (they answer at once).
    pub(crate) epoch: watch::Sender<u64>,
    /// The revocations in force, as this node checks them on every call: a copy of
    /// `revocation_store`'s, kept in step by `sync_revocations`.
    pub(crate) revocations: Revocations,
    /// Where revocations are kept (this node's memory or state file, or Redis).
    pub(crate) revocation_store: Arc<dyn RevocationStore>,
    pub(crate) audit: Audit,
    pub(crate) usage: Usage,
    /// Where hourly usage totals are summed (this node's memory, or Redis).
    pub(crate) usage_store: Arc<dyn UsageStore>,
    /// What became of coturn's traffic reports (`[usage] turn_stats_url`).
    pub(crate) turn_stats: TurnStatsCounters,
    /// The file the configuration came from, for reloads.
    pub(crate) config_file: Option<PathBuf>,
    /// Serialises reloads.
    pub(crate) reloading: std::sync::Mutex<()>,
    /// `[tls]`: the certificate in use; `None` serves plain HTTP.
    pub(crate) tls: Option<crate::tls::Tls>,
    /// Every background task of the server.
    pub(crate) tasks: Tasks,
    /// Which token admits a gRPC-web `Recv` that carries none.
    pub(crate) bindings: crate::binding::Bindings,
    /// What the gRPC-web clients report about their sessions.
    pub(crate) analytics: crate::call::analytics::Analytics,
    /// Acknowledgements under way, which a new `Recv` of the same connection waits for.
    pub(crate) acks_in_flight: Arc<crate::call::in_flight::AcksInFlight>,
}

/// The address of the client of a connection, set on every request by the serving loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteAddr(pub(crate) SocketAddr);

/// The client address of a request, when served by the serving loop.
pub(crate) fn remote_of(headers_owner: &axum::http::Extensions) -> Option<SocketAddr> {
    headers_owner.get::<RemoteAddr>().map(|r| r.0)
}

impl State {
    pub(crate) fn now_unix(&self) -> u64 {
        self.clock.now_unix()
    }

    /// Authenticates an `Authorization` header value: the token verified (or cached), then
    /// checked against the revocations. Failures are counted and audited.
    pub(crate) fn authenticate(
        &self,
        live: &Live,
        header: Option<&[u8]>,
        remote: Option<SocketAddr>,
    ) -> Result<Arc<Identity>, CallError> {
        let result = live.auth.authenticate(header).and_then(|identity| {
            match self.revocations.check(
                &identity.project_id,
                &identity.group,
                &identity.peer,
                identity.token_id.as_deref(),
                self.now_unix(),
            ) {
                None => Ok(identity),
                Some(revocation) => Err(AuthError::Revoked(format!(
                    "the token is revoked ({}) until {}; mint a new token{}",
                    revocation.target,
                    revocation.until,
                    if matches!(
                        revocation.target,
                        crate::revoke::RevocationTarget::Peer { .. }
                    ) {
                        " after that time"
                    } else {
                        ""
                    }
                ))),
            }
        });
        result.map_err(|err| {
            let kind = failure_kind(&err);
            self.metrics.auth_failure(kind);
            if !matches!(err, AuthError::MissingToken) || header.is_some() {
                self.audit.record(
                    Event::new("auth_failure")
                        .with("kid", claimed_kid(header))
                        .with("reason", kind)
                        .remote(remote),
                );
            }
            err.into()
        })
    }

    /// `project`'s hourly usage totals from `since` (Unix seconds) on, summed over every node
    /// sharing the usage store.
    pub(crate) async fn usage_totals(
        &self,
        project: &str,
        since: u64,
    ) -> Result<std::collections::BTreeMap<u64, crate::UsageTotals>, String> {
        // This node's latest counts first, then the sums.
        self.flush_usage().await.map_err(|e| e.to_string())?;
        let now = self.now_unix() / 3600 * 3600;
        let hours: Vec<u64> = (since / 3600 * 3600..=now).step_by(3600).collect();
        self.usage_store
            .hours(project, &hours)
            .await
            .map_err(|e| e.to_string())
    }

    /// Hands this node's usage counts to the usage store, as one batch; on failure the batch
    /// is kept unchanged and handed again, under the same id, by the next flush, so that a
    /// batch the store applied (wholly or in part) before failing is not counted twice.
    pub(crate) async fn flush_usage(&self) -> Result<(), crate::store::StoreError> {
        let Some(batch) = self.usage.next_batch() else {
            return Ok(());
        };
        self.usage_store.add(&batch.id, &batch.totals).await?;
        self.usage.batch_taken(&batch.id);
        Ok(())
    }

    /// Reads the stored revocations again when their version is not `seen`; a change ends the
    /// open long-polls of the tokens it covers. Returns the version now seen.
    pub(crate) async fn sync_revocations(
        &self,
        seen: Option<RevocationsVersion>,
    ) -> Option<RevocationsVersion> {
        let version = match self.revocation_store.version().await {
            Ok(version) => version,
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the revocations' version");
                return seen;
            }
        };
        if seen.as_ref() == Some(&version) {
            return seen;
        }
        match self.revocation_store.list(self.now_unix()).await {
            Ok(all) => {
                if self.revocations.replace(all, self.now_unix()) {
                    self.epoch.send_modify(|e| *e += 1);
                }
                Some(version)
            }
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the revocations");
                seen
            }
        }
    }

    /// Puts `revocation` in force in the revocation store (every node sharing it follows
    /// within a second) and here at once, and makes open long-polls of the tokens it covers end.
    pub(crate) async fn revoke(
        &self,
        revocation: Revocation,
        remote: Option<SocketAddr>,
    ) -> Result<Revocation, RevocationError> {
        let kept = self
            .revocation_store
            .put(&revocation, self.now_unix())
            .await?;
        self.revocations.insert(kept.clone(), self.now_unix());
        self.epoch.send_modify(|e| *e += 1);
        self.audit.record(
            Event::new("revocation")
                .with(
                    "target",
                    serde_json::to_value(&kept.target).unwrap_or_default(),
                )
                .with("until", kept.until)
                .remote(remote),
        );
        Ok(kept)
    }
}

impl TurnTraffic for State {
    fn turn_stats(&self) -> &TurnStatsCounters {
        &self.turn_stats
    }

    fn turn_relayed(&self, project: &str, bytes: u64) -> bool {
        let known = self
            .live
            .load()
            .config
            .projects
            .iter()
            .any(|p| p.id == project);
        if known {
            self.usage
                .record(project, Record::TurnRelay { bytes }, self.now_unix());
        }
        known
    }
}
