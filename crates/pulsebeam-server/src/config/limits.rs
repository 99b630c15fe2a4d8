//! The `[limits]` section: every bound the server enforces.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// The default payload limit: Chromium's offers measure 4.2 kB (video) to 13.8 kB (audio, three
/// video tracks and a data channel), and grow with simulcast and more tracks; the protocol's
/// documented 10 kB would refuse real calls, which the 0.0.17 client answers by closing the peer.
const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The HTTP stack reads request heads into a buffer of at least this size.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Every bound the server enforces. Defaults suit the 0.0.17 browser client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request body in bytes; larger bodies get `invalid_argument`, a larger declared
    /// `Content-Length` at once.
    pub max_body_bytes: usize,
    /// Largest encoded message payload in bytes; larger get `invalid_argument`.
    pub max_payload_bytes: usize,
    /// Largest request head (request line and headers) in bytes; larger get `431`. At least
    /// 8192 (the HTTP stack's smallest read buffer).
    pub max_header_bytes: usize,
    /// Messages waiting per connection (and per peer for discovery); more get `resource_exhausted`.
    pub mailbox_capacity: usize,
    /// How long an undelivered message waits before it is dropped, in seconds.
    pub message_ttl_secs: u64,
    /// Longest `Recv` long-poll in milliseconds; then it answers empty.
    pub poll_timeout_ms: u64,
    /// Once a message is there, how long `Recv` waits for more to batch, in milliseconds.
    pub batch_window_ms: u64,
    /// Most messages in one `Recv` answer.
    pub max_batch_messages: usize,
    /// A connection that has not polled for this long is no longer live, in seconds.
    pub connection_idle_secs: u64,
    /// Connections (conn ids) per peer; a new one beyond this gets `resource_exhausted`.
    pub max_connections_per_peer: usize,
    /// Connections per project that have polled, and separately mailboxes that senders opened
    /// for peers or connections that have not polled yet; beyond either, `resource_exhausted`.
    pub max_connections_per_project: usize,
    /// Sustained calls per second allowed per peer (project, group, peer), whatever its token.
    pub rate_per_sec: u32,
    /// Calls a peer may make in a burst above the sustained rate.
    pub rate_burst: u32,
    /// Verified tokens remembered so repeated calls skip signature checks; 0 disables.
    pub token_cache_capacity: usize,
    /// Clock skew tolerated on token `exp`/`nbf`, in seconds.
    pub token_leeway_secs: u64,
    /// On shutdown, how long in-flight calls may take to finish, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send a request's headers, in seconds; also how long a
    /// kept-alive connection may sit idle between requests. Then the connection is closed.
    pub header_timeout_secs: u64,
    /// How long a client may take to send a request's body once its headers arrived, in
    /// seconds; then the call gets `deadline_exceeded`.
    pub body_timeout_secs: u64,
    /// TCP connections served at once; further clients wait in the listen backlog.
    pub max_open_connections: usize,
    /// Longest token lifetime accepted, in seconds: a token whose `exp` lies further ahead is
    /// refused. Absent: no cap (tokens are refused only once expired).
    pub max_token_lifetime_secs: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_PAYLOAD_BYTES + 8 * 1024,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_header_bytes: 16 * 1024,
            mailbox_capacity: 128,
            message_ttl_secs: 30,
            poll_timeout_ms: 20_000,
            batch_window_ms: 5,
            max_batch_messages: 64,
            connection_idle_secs: 15,
            max_connections_per_peer: 8,
            max_connections_per_project: 10_000,
            rate_per_sec: 50,
            rate_burst: 200,
            token_cache_capacity: 65_536,
            token_leeway_secs: pulsebeam_token::DEFAULT_LEEWAY_SECS,
            shutdown_grace_secs: 10,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            max_open_connections: 20_000,
            max_token_lifetime_secs: None,
        }
    }
}

/// Longest `Recv` wait allowed: beyond it, proxies' idle timeouts (often 60 to 120 s) cut polls.
const MAX_POLL_TIMEOUT_MS: u64 = 120_000;

impl Limits {
    /// Checks that every limit is usable.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the `limits.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_payload_bytes", self.max_payload_bytes as u64),
            ("mailbox_capacity", self.mailbox_capacity as u64),
            ("message_ttl_secs", self.message_ttl_secs),
            ("poll_timeout_ms", self.poll_timeout_ms),
            ("max_batch_messages", self.max_batch_messages as u64),
            ("connection_idle_secs", self.connection_idle_secs),
            (
                "max_connections_per_peer",
                self.max_connections_per_peer as u64,
            ),
            (
                "max_connections_per_project",
                self.max_connections_per_project as u64,
            ),
            ("rate_per_sec", u64::from(self.rate_per_sec)),
            ("rate_burst", u64::from(self.rate_burst)),
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("max_open_connections", self.max_open_connections as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("limits.{name}"),
                    "must be greater than 0",
                    "remove the key to use the default, or give a positive number",
                ));
            }
        }
        if self.max_payload_bytes > self.max_body_bytes {
            return Err(ConfigError::invalid(
                "limits.max_payload_bytes",
                format!(
                    "{} is larger than limits.max_body_bytes ({}), so such payloads could never arrive",
                    self.max_payload_bytes, self.max_body_bytes
                ),
                "raise limits.max_body_bytes above it (leave about 1 KiB for the header)",
            ));
        }
        if self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_body_bytes",
                "more than 16 MiB",
                "signaling messages are small; use at most a few tens of KiB",
            ));
        }
        if self.poll_timeout_ms > MAX_POLL_TIMEOUT_MS {
            return Err(ConfigError::invalid(
                "limits.poll_timeout_ms",
                format!("{} ms is longer than the {MAX_POLL_TIMEOUT_MS} ms allowed", self.poll_timeout_ms),
                format!("use at most {MAX_POLL_TIMEOUT_MS}, and less than your proxies' idle timeout (the default is 20000)"),
            ));
        }
        if self.max_token_lifetime_secs == Some(0) {
            return Err(ConfigError::invalid(
                "limits.max_token_lifetime_secs",
                "0 would refuse every token",
                "remove the key for no cap, or give the longest lifetime you mint, e.g. 86400",
            ));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES || self.max_header_bytes > 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_header_bytes",
                format!(
                    "{} is outside {MIN_HEADER_BYTES}..=1048576",
                    self.max_header_bytes
                ),
                "use a few tens of KiB at most (the default is 16384); a token needs under 1 KiB",
            ));
        }
        if self.batch_window_ms >= self.poll_timeout_ms {
            return Err(ConfigError::invalid(
                "limits.batch_window_ms",
                "not shorter than limits.poll_timeout_ms",
                "keep the batching window to a few milliseconds (the default is 5)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{base, key_of};
    use crate::config::Config;

    #[test]
    fn limit_errors_state_one_bound() {
        let long = format!("{}[limits]\npoll_timeout_ms = 120001\n", base());
        let err = Config::from_toml_str(&long).unwrap_err().to_string();
        assert!(err.contains("120000"), "{err}");
        assert!(!err.contains("60000"), "{err}");
        Config::from_toml_str(&format!("{}[limits]\npoll_timeout_ms = 120000\n", base())).unwrap();
        let small = format!("{}[limits]\nmax_header_bytes = 4096\n", base());
        assert_eq!(key_of(&small).as_deref(), Some("limits.max_header_bytes"));
    }

    #[test]
    fn default_limits_fit_real_offers() {
        // Chromium's audio + 3 video + data channel offer measures 13.8 kB.
        let limits = Limits::default();
        assert!(limits.max_payload_bytes >= 4 * 13_800, "{limits:?}");
        assert!(limits.max_body_bytes > limits.max_payload_bytes + 1024);
        limits.validate().unwrap();
    }
}
