//! TURN relay bytes per project, from coturn's statistics in Redis (`[usage] turn_stats_url`).
//!
//! coturn with `redis-statsdb` publishes, for every allocation, on
//! `turn/realm/<realm>/user/<username>/allocation/<id>/<event>`:
//!
//! - `status`: `new lifetime=…`, `refreshed lifetime=…`, `deleted`;
//! - `traffic`: `rcvp=…, rcvb=…, sentp=…, sentb=…`, the packets and bytes between client and
//!   coturn *since the previous report* (coturn 4.6 reports after about every 1024 packets
//!   received, and once more with the remainder when the allocation ends);
//! - `total_traffic`: the same fields summed over the whole allocation, when it is deleted;
//! - `traffic/peer`, `total_traffic/peer`: the relayed side (coturn to the remote peer).
//!
//! Only `traffic` is counted (`rcvb + sentb`, the client side of the relay, which is what
//! crosses the TURN server's public address): the reports are deltas, so each byte is counted
//! once, and `total_traffic` (their sum) is ignored. The username is `<expiry>:<project>/…`
//! (see [`crate::turn::turn_user`]), which names the project.
//!
//! Redis pub/sub reaches every subscriber, so with several nodes only one counts: the holder of
//! a lease in that Redis (`usage.turn_stats_lease_key`, `SET NX PX`), renewed every
//! [`RENEW_EVERY`] and taken over by another node when it lapses.
//!
//! The lease key can vanish before its time (Redis restarted or flushed, a failover to a
//! replica that had not got it, eviction): another node then takes it at once while the old
//! holder still believes it holds it. So the holder *fences* its counting: reports it reads
//! are held back and counted only when the next renewal proves that it held the lease without
//! a break since the previous one (the script says whether it renewed the holder's own key or
//! took a free one). A renewal that finds another holder, or a free key, drops what was held
//! back (counted as `fenced`): two nodes never count the same report. Reports published while
//! no node holds the lease (up to [`LEASE`] after a holder dies without releasing it), and
//! those of a period whose lease was broken, are lost.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{EventInterface, PubsubInterface};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{redact_url, UsageConfig};
use crate::store::{Acquired, Lease, RedisConnection};
use crate::turn::project_of_turn_username;

/// How long a lease lasts in Redis.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
/// How often the holder renews it (and others try to take it).
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How much earlier than Redis a holder considers its lease gone.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// The channels of coturn's traffic reports (`*` matches `/` too; `…/traffic/peer` does not end
/// in `/traffic`).
const PATTERN: &str = "turn/realm/*/allocation/*/traffic";
/// Longest channel and message read; coturn's are far shorter.
const MAX_CHANNEL_BYTES: usize = 1024;
const MAX_MESSAGE_BYTES: usize = 256;
/// Most reports held back between two renewals; more are dropped (as `fenced`).
const MAX_HELD_BACK: usize = 100_000;

/// One traffic report, as read from its channel and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrafficReport<'a> {
    /// The TURN username of the allocation.
    pub(crate) username: &'a str,
    /// `rcvb + sentb`.
    pub(crate) bytes: u64,
}

/// Why a report is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The channel is longer than [`MAX_CHANNEL_BYTES`].
    #[error("the channel is longer than {MAX_CHANNEL_BYTES} bytes")]
    ChannelTooLong,
    /// The channel is not `turn/realm/<realm>/user/<username>/allocation/<digits>/traffic`.
    #[error("the channel is not an allocation's traffic channel")]
    NotTraffic,
    /// The message is longer than [`MAX_MESSAGE_BYTES`].
    #[error("the message is longer than {MAX_MESSAGE_BYTES} bytes")]
    MessageTooLong,
    /// A field of the message is not `name=<unsigned number>`.
    #[error("a field of the message is not name=number")]
    BadField,
    /// `rcvb` or `sentb` is missing.
    #[error("the message lacks rcvb or sentb")]
    NoByteCounts,
    /// `rcvb + sentb` does not fit 64 bits.
    #[error("rcvb + sentb overflows")]
    TooManyBytes,
}

/// The username of a `…/allocation/<id>/traffic` channel.
pub(crate) fn traffic_channel_user(channel: &str) -> Result<&str, Refused> {
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(Refused::ChannelTooLong);
    }
    let user = || {
        let rest = channel.strip_prefix("turn/realm/")?;
        let (_realm, rest) = rest.split_once("/user/")?;
        let rest = rest.strip_suffix("/traffic")?;
        // The username may contain `/` (ours does), the allocation id never does.
        let (username, id) = rest.rsplit_once("/allocation/")?;
        if username.is_empty() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(username)
    };
    user().ok_or(Refused::NotTraffic)
}

/// `rcvb + sentb` of a `rcvp=…, rcvb=…, sentp=…, sentb=…` message; both must be present.
pub(crate) fn traffic_bytes(message: &str) -> Result<u64, Refused> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(Refused::MessageTooLong);
    }
    let (mut received, mut sent) = (None, None);
    for field in message.split(',') {
        let (name, value) = field.trim().split_once('=').ok_or(Refused::BadField)?;
        let value: u64 = value.trim().parse().map_err(|_| Refused::BadField)?;
        match name.trim() {
            "rcvb" => received = Some(value),
            "sentb" => sent = Some(value),
            _ => {}
        }
    }
    let (Some(received), Some(sent)) = (received, sent) else {
        return Err(Refused::NoByteCounts);
    };
    received.checked_add(sent).ok_or(Refused::TooManyBytes)
}

/// A whole report: its channel and message.
pub(crate) fn parse_report<'a>(
    channel: &'a str,
    message: &str,
) -> Result<TrafficReport<'a>, Refused> {
    Ok(TrafficReport {
        username: traffic_channel_user(channel)?,
        bytes: traffic_bytes(message)?,
    })
}

/// Where counted reports go: the node's usage of the projects it serves.
pub(crate) trait TurnTraffic: Send + Sync + 'static {
    /// What became of the reports, for `/metrics`.
    fn turn_stats(&self) -> &TurnStatsCounters;

    /// Counts `bytes` relayed by TURN for `project`; `false` when no such project is
    /// configured.
    fn turn_relayed(&self, project: &str, bytes: u64) -> bool;
}

/// What became of the reports, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct TurnStatsCounters {
    counted: AtomicU64,
    unknown_project: AtomicU64,
    malformed: AtomicU64,
    /// Read while the lease turned out broken (or beyond [`MAX_HELD_BACK`]): not counted.
    fenced: AtomicU64,
    leading: AtomicBool,
}

impl TurnStatsCounters {
    /// The Prometheus text of these counters.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP pulsebeam_turn_stats_reports_total coturn traffic reports read by this node, by outcome.\n\
             # TYPE pulsebeam_turn_stats_reports_total counter"
        );
        for (outcome, value) in [
            ("counted", &self.counted),
            ("unknown_project", &self.unknown_project),
            ("malformed", &self.malformed),
            ("fenced", &self.fenced),
        ] {
            let _ = writeln!(
                out,
                "pulsebeam_turn_stats_reports_total{{outcome=\"{outcome}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pulsebeam_turn_stats_leader 1 while this node holds the lease and counts coturn's reports.\n\
             # TYPE pulsebeam_turn_stats_leader gauge\n\
             pulsebeam_turn_stats_leader {}",
            u8::from(self.leading.load(Ordering::Relaxed))
        );
    }
}

/// The running reader; [`TurnStats::stop`] gives the lease up, dropping it ends the reader
/// at once.
pub(crate) struct TurnStats {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TurnStats {
    /// Starts reading coturn's reports into `sink` when `[usage] turn_stats_url` is set, on a
    /// connection of its own (coturn's Redis need not be the store's).
    pub(crate) fn start(sink: Arc<dyn TurnTraffic>, config: &UsageConfig) -> Option<TurnStats> {
        let url = config.turn_stats_url.as_deref()?;
        let connection = match RedisConnection::from_url(url) {
            Ok(connection) => connection,
            Err(problem) => {
                tracing::error!(url = %redact_url(url), %problem, "cannot read coturn's statistics; check usage.turn_stats_url");
                return None;
            }
        };
        let lease = Lease::new(connection.clone(), &config.turn_stats_lease_key, LEASE);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(sink, connection, lease, stopped));
        Some(TurnStats {
            stop,
            task: Some(task),
        })
    }

    /// Stops reading and releases the lease, so another node takes over at its next renewal.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        let Some(mut task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for TurnStats {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A report read and held back until the lease is proven unbroken.
enum HeldBack {
    /// Bytes for the project its username names (`None`: it names none).
    Relayed { project: Option<String>, bytes: u64 },
    /// Not a traffic report this node can read.
    Malformed,
}

/// Counts what was held back: the lease held without a break while it was read.
fn count(sink: &dyn TurnTraffic, held_back: &mut Vec<HeldBack>) {
    let counters = sink.turn_stats();
    for report in held_back.drain(..) {
        let outcome = match report {
            HeldBack::Malformed => &counters.malformed,
            HeldBack::Relayed { project, bytes } => {
                let counted = project.is_some_and(|project| sink.turn_relayed(&project, bytes));
                if counted {
                    &counters.counted
                } else {
                    &counters.unknown_project
                }
            }
        };
        outcome.fetch_add(1, Ordering::Relaxed);
    }
}

/// Drops what was held back: the lease was broken while it was read, so another node may
/// have counted it.
fn fence(counters: &TurnStatsCounters, held_back: &mut Vec<HeldBack>) {
    if !held_back.is_empty() {
        tracing::warn!(
            reports = held_back.len(),
            "the TURN statistics lease was broken since its last renewal; not counting the reports read meanwhile"
        );
    }
    let dropped = u64::try_from(held_back.len()).unwrap_or(u64::MAX);
    counters.fenced.fetch_add(dropped, Ordering::Relaxed);
    held_back.clear();
}

async fn run(
    sink: Arc<dyn TurnTraffic>,
    connection: RedisConnection,
    lease: Lease,
    mut stopped: watch::Receiver<bool>,
) {
    let subscriber = connection.subscriber();
    let mut messages = subscriber.message_rx();
    // Until when this node may read reports: never before the first renewal.
    let mut held_until: Option<Instant> = None;
    // Read since the last renewal, counted once the next one proves the lease unbroken.
    let mut held_back: Vec<HeldBack> = Vec::new();
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let counters = sink.turn_stats();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = renew.tick() => {
                let asked = Instant::now();
                match lease.acquire().await {
                    Ok(acquired @ (Acquired::Renewed | Acquired::Taken)) => {
                        if acquired == Acquired::Renewed {
                            count(&*sink, &mut held_back);
                        } else {
                            // Free when this node thought it held it: broken meanwhile.
                            fence(counters, &mut held_back);
                        }
                        if held_until.is_none() {
                            tracing::info!("counting coturn's TURN traffic reports on this node");
                        }
                        held_until = Some(asked + LEASE - LEASE_MARGIN);
                        // Subscribing again is harmless and restores the subscription after a
                        // reconnection.
                        if let Err(err) = subscriber.psubscribe(PATTERN).await {
                            tracing::warn!(error = %err.details(), "cannot subscribe to coturn's traffic reports; retrying");
                        }
                    }
                    Ok(Acquired::HeldByOther) => {
                        fence(counters, &mut held_back);
                        if held_until.take().is_some() {
                            tracing::info!("another node counts coturn's TURN traffic reports now");
                            let _ = subscriber.punsubscribe(PATTERN).await;
                        }
                    }
                    Err(err) => {
                        // Keep what was held and held back: the next renewal that works says
                        // whether the lease held meanwhile.
                        tracing::warn!(error = %err, "cannot renew the TURN statistics lease; is the Redis of usage.turn_stats_url up?");
                    }
                }
                let leading = held_until.is_some_and(|until| Instant::now() < until);
                counters.leading.store(leading, Ordering::Relaxed);
            }
            message = messages.recv() => {
                let message = match message {
                    Ok(message) => message,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "coturn's traffic reports came faster than they were counted; some were lost");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if held_until.is_none_or(|until| Instant::now() >= until) {
                    continue;
                }
                if held_back.len() >= MAX_HELD_BACK {
                    counters.fenced.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let body = message.value.as_str();
                held_back.push(
                    match body.as_deref().and_then(|body| parse_report(&message.channel, body).ok()) {
                        Some(report) => HeldBack::Relayed {
                            project: project_of_turn_username(report.username),
                            bytes: report.bytes,
                        },
                        None => HeldBack::Malformed,
                    },
                );
            }
        }
    }
    counters.leading.store(false, Ordering::Relaxed);
    if held_until.is_some() {
        // Released while still this node's: held without a break since the last renewal.
        if matches!(lease.release().await, Ok(true)) {
            count(&*sink, &mut held_back);
        } else {
            fence(counters, &mut held_back);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::turn_user;
    use proptest::prelude::*;

    // Observed from Debian's coturn 4.6 with `redis-statsdb` (`redis-cli psubscribe 'turn/*'`).
    const TRAFFIC: &str =
        "turn/realm/pulsebeam.test/user/1796310368:projb/g/bob/allocation/001000000000000004/traffic";

    #[test]
    fn traffic_reports_name_the_user_and_the_bytes_both_ways() {
        let report = parse_report(TRAFFIC, "rcvp=1029, rcvb=311076, sentp=1029, sentb=310620");
        assert_eq!(
            report,
            Ok(TrafficReport {
                username: "1796310368:projb/g/bob",
                bytes: 311_076 + 310_620
            })
        );
        assert_eq!(
            project_of_turn_username(report.map(|r| r.username).unwrap_or_default()).as_deref(),
            Some("projb")
        );
    }

    #[test]
    fn other_channels_are_not_traffic() {
        for channel in [
            "turn/realm/r/user/1:p/g/a/allocation/001/traffic/peer",
            "turn/realm/r/user/1:p/g/a/allocation/001/total_traffic",
            "turn/realm/r/user/1:p/g/a/allocation/001/total_traffic/peer",
            "turn/realm/r/user/1:p/g/a/allocation/001/status",
            "turn/realm/r/user//allocation/001/traffic",
            "turn/realm/r/user/1:p/g/a/allocation//traffic",
            "turn/realm/r/user/1:p/g/a/allocation/12x/traffic",
            "turn/realm/r/1:p/g/a/allocation/001/traffic",
            "other/realm/r/user/1:p/g/a/allocation/001/traffic",
            "",
        ] {
            assert_eq!(
                traffic_channel_user(channel),
                Err(Refused::NotTraffic),
                "{channel}"
            );
        }
        let long = format!(
            "turn/realm/r/user/1:{}/g/a/allocation/1/traffic",
            "p".repeat(MAX_CHANNEL_BYTES)
        );
        assert_eq!(traffic_channel_user(&long), Err(Refused::ChannelTooLong));
    }

    #[test]
    fn usernames_with_allocation_in_them_keep_it() {
        let channel = "turn/realm/r/user/9:p/allocation/allocation/7/traffic";
        assert_eq!(traffic_channel_user(channel), Ok("9:p/allocation"));
    }

    #[test]
    fn messages_need_both_byte_counts() {
        assert_eq!(traffic_bytes("rcvp=1, rcvb=10, sentp=1, sentb=20"), Ok(30));
        assert_eq!(traffic_bytes("rcvb=0,sentb=0"), Ok(0));
        for (bad, why) in [
            ("", Refused::BadField),
            ("rcvp=1, rcvb=10", Refused::NoByteCounts),
            ("rcvb=10, sentp=1", Refused::NoByteCounts),
            ("rcvb=x, sentb=1", Refused::BadField),
            ("rcvb=-1, sentb=1", Refused::BadField),
            ("rcvb=10 sentb=20", Refused::BadField),
            ("deleted", Refused::BadField),
            ("new lifetime=600, type=UDP", Refused::BadField),
            ("rcvb=18446744073709551615, sentb=1", Refused::TooManyBytes),
        ] {
            assert_eq!(traffic_bytes(bad), Err(why), "{bad}");
        }
        let long = format!("rcvb=1, sentb=1, {}", "x=1, ".repeat(100));
        assert_eq!(traffic_bytes(&long), Err(Refused::MessageTooLong));
    }

    #[test]
    fn usernames_the_server_hands_out_map_back_to_their_project() {
        for project in ["dev", "acme-prod", "a.b_c~d"] {
            let username = format!("1796310368:{}", turn_user(project, "g", "alice"));
            let channel = format!("turn/realm/r/user/{username}/allocation/1/traffic");
            let user = traffic_channel_user(&channel);
            assert_eq!(user, Ok(username.as_str()));
            assert_eq!(
                project_of_turn_username(&username).as_deref(),
                Some(project)
            );
        }
    }

    /// What a report should read as, worked out another way: by `/`-separated segments and by
    /// field, in the order the parser checks.
    fn oracle(channel: &str, message: &str) -> Result<(String, u64), Refused> {
        if channel.len() > MAX_CHANNEL_BYTES {
            return Err(Refused::ChannelTooLong);
        }
        let segments: Vec<&str> = channel.split('/').collect();
        let n = segments.len();
        let shaped = n >= 7
            && segments[0] == "turn"
            && segments[1] == "realm"
            && segments[n - 1] == "traffic"
            && segments[n - 3] == "allocation"
            && !segments[n - 2].is_empty()
            && segments[n - 2].bytes().all(|b| b.is_ascii_digit());
        // The realm ends at the first `user` segment after it; the username runs to the last
        // `allocation` segment.
        let user = (3..n.saturating_sub(3))
            .find(|&j| segments[j] == "user")
            .map(|j| segments[j + 1..n - 3].join("/"))
            .filter(|user| shaped && !user.is_empty())
            .ok_or(Refused::NotTraffic)?;
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(Refused::MessageTooLong);
        }
        let mut fields = Vec::new();
        for field in message.split(',') {
            let Some((name, value)) = field.trim().split_once('=') else {
                return Err(Refused::BadField);
            };
            match value.trim().parse::<u64>() {
                Ok(value) => fields.push((name.trim(), value)),
                Err(_) => return Err(Refused::BadField),
            }
        }
        let last = |wanted: &str| {
            fields
                .iter()
                .rev()
                .find(|(name, _)| *name == wanted)
                .map(|f| f.1)
        };
        match (last("rcvb"), last("sentb")) {
            (Some(r), Some(s)) => r
                .checked_add(s)
                .map(|b| (user, b))
                .ok_or(Refused::TooManyBytes),
            _ => Err(Refused::NoByteCounts),
        }
    }

    fn channels() -> impl Strategy<Value = String> {
        let part = "[a-z0-9:~./]{0,12}";
        prop_oneof![
            ".{0,300}",
            (part, part, "[0-9x]{0,4}", "traffic|traffic/peer|status").prop_map(
                |(realm, user, id, event)| format!(
                    "turn/realm/{realm}/user/{user}/allocation/{id}/{event}"
                )
            ),
            "[a-z]{1,8}".prop_map(|user| format!(
                "turn/realm/r/user/{}/allocation/1/traffic",
                user.repeat(200)
            )),
        ]
    }

    fn messages() -> impl Strategy<Value = String> {
        let count = prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[0-9 x-]{0,3}"];
        prop_oneof![
            ".{0,300}",
            (count.clone(), count.clone(), count.clone(), count)
                .prop_map(|(a, b, c, d)| format!("rcvp={a}, rcvb={b}, sentp={c}, sentb={d}")),
            "(rcvb|sentb|rcvp)=[0-9]{1,3}(, ?(rcvb|sentb|rcvp|x)=[0-9]{1,3}){0,4}",
        ]
    }

    proptest! {
        /// Any channel and message is counted as the oracle reads it, or refused for the reason
        /// the oracle gives.
        #[test]
        fn arbitrary_reports_are_read_or_refused_for_their_reason(channel in channels(), message in messages()) {
            let parsed = parse_report(&channel, &message).map(|r| (r.username.to_owned(), r.bytes));
            prop_assert_eq!(parsed, oracle(&channel, &message));
        }
    }
}
