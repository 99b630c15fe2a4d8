//! The admin API's JSON, as types: the server writes them and `pulsebeam admin` reads them, so
//! the two cannot drift apart. Every answer is one of the `*Answer` types, and every refusal an
//! [`ErrorAnswer`] with a non-2xx status.

use serde::{Deserialize, Serialize};

use crate::reload::ReloadOutcome;
use crate::revoke::Revocation;
use crate::store::OnlineConnection;
pub use crate::usage::{MinuteUsage, UsageTotals};

/// The body of `POST /admin/v1/revocations`: a token (`jti`) or a peer (`group` and `peer`) of
/// a project, until a time (`until`, Unix seconds) or for a while (`for_secs`); with neither,
/// `limits.max_token_lifetime_secs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The project's configured id.
    pub project: String,
    /// The token's `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The peer's group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The peer's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Until when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Or for how long, in seconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_secs: Option<u64>,
}

/// A refusal: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// The reason.
    pub error: String,
}

/// `POST /admin/v1/revocations`: the revocation in force for the target afterwards (a longer
/// one already in force wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationAnswer {
    /// The revocation.
    pub revocation: Revocation,
}

/// `GET /admin/v1/revocations`: the revocations in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationsAnswer {
    /// The revocations, sorted.
    pub revocations: Vec<Revocation>,
}

/// `POST /admin/v1/reload`: what the reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadAnswer {
    /// The outcome.
    pub reloaded: ReloadOutcome,
}

/// `GET /admin/v1/online?project=ID`: the project's connections with a `Recv` in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineAnswer {
    /// The project.
    pub project: String,
    /// The connections, sorted.
    pub connections: Vec<OnlineConnection>,
}

/// One hour of a project's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourUsage {
    /// The hour's first second (Unix seconds).
    pub hour: u64,
    /// The totals.
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// `GET /admin/v1/usage?project=ID&hours=N`: the project's hourly totals, of every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAnswer {
    /// The project.
    pub project: String,
    /// The hours with anything counted, oldest first.
    pub hours: Vec<HourUsage>,
}

/// `GET /admin/v1/projects`: the configured project ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectsAnswer {
    /// The ids, in configuration order.
    pub projects: Vec<String>,
}

/// `GET /admin/v1/usage/minutes?project=ID&minutes=N`: a project's last minutes on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinutesAnswer {
    /// The project.
    pub project: String,
    /// The node's time (Unix seconds).
    pub now: u64,
    /// Connections online now.
    pub online_now: u64,
    /// The minutes, oldest first.
    pub minutes: Vec<MinuteUsage>,
}

/// `GET /admin/v1/usage/minutes` without a project: every configured project's last minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllMinutesAnswer {
    /// The node's time (Unix seconds).
    pub now: u64,
    /// One answer per project.
    pub projects: Vec<MinutesAnswer>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revoke::RevocationTarget;

    #[test]
    fn answers_have_the_documented_shape_and_read_back() {
        let usage = UsageAnswer {
            project: "p".into(),
            hours: vec![HourUsage {
                hour: 3600,
                totals: UsageTotals {
                    calls: 2,
                    analytics_events: 5,
                    ..UsageTotals::default()
                },
            }],
        };
        let json = serde_json::to_value(&usage).unwrap();
        // The usage page reads `hour` and the totals' fields side by side.
        assert_eq!(json["hours"][0]["hour"], 3600);
        assert_eq!(json["hours"][0]["calls"], 2);
        assert_eq!(json["hours"][0]["analytics_events"], 5);
        assert_eq!(serde_json::from_value::<UsageAnswer>(json).unwrap(), usage);

        let revocation = RevocationAnswer {
            revocation: Revocation::new(
                RevocationTarget::Peer {
                    project: "p".into(),
                    group: "g".into(),
                    peer: "alice".into(),
                },
                2_000,
                1_000,
            ),
        };
        let json = serde_json::to_value(&revocation).unwrap();
        assert_eq!(json["revocation"]["kind"], "peer");
        assert_eq!(json["revocation"]["until"], 2_000);
        assert_eq!(
            serde_json::from_value::<RevocationAnswer>(json).unwrap(),
            revocation
        );

        // A request names only what it sets, and refuses what the API does not know.
        let request = RevokeRequest {
            project: "p".into(),
            jti: Some("t1".into()),
            for_secs: Some(60),
            ..RevokeRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"project":"p","jti":"t1","for_secs":60}"#
        );
        assert!(serde_json::from_str::<RevokeRequest>(r#"{"project":"p","jtl":"x"}"#).is_err());
    }
}
