//! Prometheus metrics, kept in fixed arrays of atomics: recording is a relaxed add, with no
//! lock and no allocation on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::code::Code;
use crate::store::StoreStats;

/// The signaling methods: the three of Twirp's `Tunnel`, and gRPC-web's `Signaling` has
/// `AnalyticsReport` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Prepare,
    Send,
    Recv,
    AnalyticsReport,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Prepare,
        Method::Send,
        Method::Recv,
        Method::AnalyticsReport,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Method::Prepare => "Prepare",
            Method::Send => "Send",
            Method::Recv => "Recv",
            Method::AnalyticsReport => "AnalyticsReport",
        }
    }

    const fn index(self) -> usize {
        match self {
            Method::Prepare => 0,
            Method::Send => 1,
            Method::Recv => 2,
            Method::AnalyticsReport => 3,
        }
    }
}

/// The wire protocols a call can come in, the `protocol` label of `pulsebeam_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Twirp `pulsebeam.v1.Tunnel` (0.0.17).
    Twirp,
    /// gRPC-web `pulsebeam.v1.Signaling` (0.0.18 on).
    GrpcWeb,
}

impl Protocol {
    const ALL: [Protocol; 2] = [Protocol::Twirp, Protocol::GrpcWeb];

    const fn name(self) -> &'static str {
        match self {
            Protocol::Twirp => "twirp",
            Protocol::GrpcWeb => "grpc-web",
        }
    }

    const fn index(self) -> usize {
        match self {
            Protocol::Twirp => 0,
            Protocol::GrpcWeb => 1,
        }
    }

    /// Whether the protocol has `method`.
    const fn has(self, method: Method) -> bool {
        !matches!((self, method), (Protocol::Twirp, Method::AnalyticsReport))
    }
}

/// Labels of `pulsebeam_auth_failures_total{kind}`: the token crate's error codes plus ours.
const AUTH_KINDS: [&str; 14] = [
    "missing_token",
    "token_too_large",
    "malformed_token",
    "unsupported_algorithm",
    "missing_key_id",
    "unknown_key_id",
    "invalid_signature",
    "token_expired",
    "token_not_yet_valid",
    "token_lifetime_too_long",
    "revoked",
    "missing_claim",
    "invalid_claim",
    "other",
];

/// Why a message was dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Drop {
    /// The receiver's mailbox was full; the sender got `resource_exhausted`.
    MailboxFull,
    /// The receiver's own policy does not admit the sender (mutual policy).
    ReceiverPolicy,
    /// A stored message that could not be shown to a JSON receiver (skipped, so it costs no
    /// other message).
    Unreadable,
}

/// Store operations, the labels of `pulsebeam_store_errors_total{op}`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreOp {
    Deliver,
    Poll,
    Ack,
    Stats,
    Health,
}

impl StoreOp {
    const NAMES: [&'static str; 5] = ["deliver", "poll", "ack", "stats", "health"];

    const fn index(self) -> usize {
        match self {
            StoreOp::Deliver => 0,
            StoreOp::Poll => 1,
            StoreOp::Ack => 2,
            StoreOp::Stats => 3,
            StoreOp::Health => 4,
        }
    }
}

const CODES: usize = Code::ALL.len() + 1;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// `[protocol][method][0 = ok, 1.. = Code::index + 1]`.
    calls: [[[AtomicU64; CODES]; Method::ALL.len()]; Protocol::ALL.len()],
    auth_failures: [AtomicU64; AUTH_KINDS.len()],
    relayed: AtomicU64,
    dropped_full: AtomicU64,
    dropped_policy: AtomicU64,
    dropped_unreadable: AtomicU64,
    store_errors: [AtomicU64; StoreOp::NAMES.len()],
    /// `[0]` refused, `[1]` applied.
    reloads: [AtomicU64; 2],
}

/// Gauges and counters kept outside [`Metrics`], read when rendering.
pub(crate) struct Extras {
    pub(crate) cached_tokens: usize,
    pub(crate) generation: u64,
    pub(crate) revocations: usize,
    pub(crate) audit_written: u64,
    pub(crate) audit_dropped: u64,
}

impl Metrics {
    pub(crate) fn call(&self, protocol: Protocol, method: Method, code: Option<Code>) {
        let column = code.map_or(0, |c| c.index() + 1);
        if let Some(counter) = self
            .calls
            .get(protocol.index())
            .and_then(|table| table.get(method.index()))
            .and_then(|row| row.get(column))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn auth_failure(&self, kind: &str) {
        let index = AUTH_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(AUTH_KINDS.len() - 1);
        if let Some(counter) = self.auth_failures.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reload(&self, applied: bool) {
        if let Some(counter) = self.reloads.get(usize::from(applied)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn relayed(&self) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, why: Drop, n: u64) {
        match why {
            Drop::MailboxFull => &self.dropped_full,
            Drop::ReceiverPolicy => &self.dropped_policy,
            Drop::Unreadable => &self.dropped_unreadable,
        }
        .fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a store operation that failed because the backend could not be reached.
    pub(crate) fn store_error(&self, op: StoreOp) {
        if let Some(counter) = self.store_errors.get(op.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self, store: &StoreStats, extras: &Extras) -> String {
        let cached_tokens = extras.cached_tokens;
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP pulsebeam_calls_total Signaling calls by protocol, method and result code.\n",
        );
        out.push_str("# TYPE pulsebeam_calls_total counter\n");
        for (protocol, table) in Protocol::ALL.iter().zip(&self.calls) {
            for (method, row) in Method::ALL.iter().zip(table) {
                if !protocol.has(*method) {
                    continue;
                }
                for (column, counter) in row.iter().enumerate() {
                    let code = match column.checked_sub(1).and_then(|i| Code::ALL.get(i)) {
                        Some(code) => code.as_str(),
                        None => "ok",
                    };
                    let _ = writeln!(
                        out,
                        "pulsebeam_calls_total{{protocol=\"{}\",method=\"{}\",code=\"{code}\"}} {}",
                        protocol.name(),
                        method.name(),
                        counter.load(Ordering::Relaxed)
                    );
                }
            }
        }
        out.push_str(
            "# HELP pulsebeam_auth_failures_total Calls refused as unauthenticated, by kind.\n",
        );
        out.push_str("# TYPE pulsebeam_auth_failures_total counter\n");
        for (kind, counter) in AUTH_KINDS.iter().zip(&self.auth_failures) {
            let _ = writeln!(
                out,
                "pulsebeam_auth_failures_total{{kind=\"{kind}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "pulsebeam_connections",
                "Connections with a mailbox.",
                store.connections,
            ),
            (
                "pulsebeam_polling_connections",
                "Recv long-polls waiting right now.",
                store.polling,
            ),
            (
                "pulsebeam_mailbox_messages",
                "Messages waiting in mailboxes (total mailbox depth).",
                store.queued_messages,
            ),
            (
                "pulsebeam_token_cache_entries",
                "Verified tokens in the cache.",
                cached_tokens as u64,
            ),
            (
                "pulsebeam_config_generation",
                "Configurations loaded: 1 at start, one more per applied reload.",
                extras.generation,
            ),
            (
                "pulsebeam_revocations",
                "Revocations in force.",
                extras.revocations as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP pulsebeam_messages_relayed_total Messages accepted by Send.\n# TYPE pulsebeam_messages_relayed_total counter\npulsebeam_messages_relayed_total {}",
            self.relayed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP pulsebeam_messages_delivered_total Messages handed to a receiver by Recv.\n# TYPE pulsebeam_messages_delivered_total counter\npulsebeam_messages_delivered_total {}",
            store.delivered_messages
        );
        out.push_str(
            "# HELP pulsebeam_messages_dropped_total Messages not delivered, by reason.\n",
        );
        out.push_str("# TYPE pulsebeam_messages_dropped_total counter\n");
        let dropped = [
            ("mailbox_full", self.dropped_full.load(Ordering::Relaxed)),
            (
                "receiver_policy",
                self.dropped_policy.load(Ordering::Relaxed),
            ),
            (
                "unreadable",
                self.dropped_unreadable.load(Ordering::Relaxed),
            ),
            ("expired", store.expired_messages),
            ("connection_replaced", store.evicted_messages),
        ];
        for (reason, value) in dropped {
            let _ = writeln!(
                out,
                "pulsebeam_messages_dropped_total{{reason=\"{reason}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP pulsebeam_redis_subscriber_restarts_total Times the Redis wake-up subscriber heard nothing and was reconnected.\n# TYPE pulsebeam_redis_subscriber_restarts_total counter\npulsebeam_redis_subscriber_restarts_total {}",
            store.subscriber_restarts
        );
        let _ = writeln!(
            out,
            "# HELP pulsebeam_redis_script_calls_total Script calls this node made to Redis.\n# TYPE pulsebeam_redis_script_calls_total counter\npulsebeam_redis_script_calls_total {}",
            store.redis_script_calls
        );
        let _ = writeln!(
            out,
            "# HELP pulsebeam_redis_fcalls_total FCALLs that carried them: calls made at the same moment on one connection go as one.\n# TYPE pulsebeam_redis_fcalls_total counter\npulsebeam_redis_fcalls_total {}",
            store.redis_fcalls
        );
        out.push_str(
            "# HELP pulsebeam_store_errors_total Mailbox store operations that failed because the backend could not be reached.\n",
        );
        out.push_str("# TYPE pulsebeam_store_errors_total counter\n");
        for (op, counter) in StoreOp::NAMES.iter().zip(&self.store_errors) {
            let _ = writeln!(
                out,
                "pulsebeam_store_errors_total{{op=\"{op}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP pulsebeam_config_reloads_total Configuration reloads, by result.\n");
        out.push_str("# TYPE pulsebeam_config_reloads_total counter\n");
        for (result, counter) in ["refused", "applied"].iter().zip(&self.reloads) {
            let _ = writeln!(
                out,
                "pulsebeam_config_reloads_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pulsebeam_audit_events_total Audit events written, or dropped when the writer fell behind.\n# TYPE pulsebeam_audit_events_total counter\npulsebeam_audit_events_total{{result=\"written\"}} {}\npulsebeam_audit_events_total{{result=\"dropped\"}} {}",
            extras.audit_written, extras.audit_dropped
        );
        out
    }
}
