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
//! [`RENEW_EVERY`] and taken over by another node when it lapses. A node counts a report only
//! while its lease is certainly still its own (the last renewal it saw succeed plus the lease
//! time, minus a margin), so two nodes never count the same report; reports published while no
//! node holds the lease (up to [`LEASE`] after a holder dies without releasing it) are lost.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, LuaInterface, PubsubInterface};
use fred::prelude::{Builder, Config as FredConfig, ReconnectPolicy};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{redact_url, UsageConfig};
use crate::state::State;
use crate::turn::project_of_turn_username;
use crate::usage::Record;

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

/// Takes the lease or renews it if this node holds it: 1 when held, 0 when another node does.
const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives the lease up if this node holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// One traffic report, as read from its channel and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrafficReport<'a> {
    /// The TURN username of the allocation.
    pub(crate) username: &'a str,
    /// `rcvb + sentb`.
    pub(crate) bytes: u64,
}

/// The username of a `…/allocation/<id>/traffic` channel; `None` for any other channel.
pub(crate) fn traffic_channel_user(channel: &str) -> Option<&str> {
    if channel.len() > MAX_CHANNEL_BYTES {
        return None;
    }
    let rest = channel.strip_prefix("turn/realm/")?;
    let (_realm, rest) = rest.split_once("/user/")?;
    let rest = rest.strip_suffix("/traffic")?;
    // The username may contain `/` (ours does), the allocation id never does.
    let (username, id) = rest.rsplit_once("/allocation/")?;
    if username.is_empty() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(username)
}

/// `rcvb + sentb` of a `rcvp=…, rcvb=…, sentp=…, sentb=…` message; both must be present.
pub(crate) fn traffic_bytes(message: &str) -> Option<u64> {
    if message.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let (mut received, mut sent) = (None, None);
    for field in message.split(',') {
        let (name, value) = field.trim().split_once('=')?;
        let value: u64 = value.trim().parse().ok()?;
        match name.trim() {
            "rcvb" => received = Some(value),
            "sentb" => sent = Some(value),
            _ => {}
        }
    }
    received?.checked_add(sent?)
}

/// A whole report: its channel and message.
pub(crate) fn parse_report<'a>(channel: &'a str, message: &str) -> Option<TrafficReport<'a>> {
    Some(TrafficReport {
        username: traffic_channel_user(channel)?,
        bytes: traffic_bytes(message)?,
    })
}

/// What became of the reports, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct TurnStatsCounters {
    counted: AtomicU64,
    unknown_project: AtomicU64,
    malformed: AtomicU64,
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

/// The running reader; [`TurnStats::stop`] gives the lease up.
pub(crate) struct TurnStats {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TurnStats {
    /// Starts reading coturn's reports when `[usage] turn_stats_url` is set.
    pub(crate) fn start(state: &Arc<State>, config: &UsageConfig) -> Option<TurnStats> {
        let url = config.turn_stats_url.as_deref()?;
        let clients = match connect(url) {
            Ok(clients) => clients,
            Err(problem) => {
                tracing::error!(url = %redact_url(url), %problem, "cannot read coturn's statistics; check usage.turn_stats_url");
                return None;
            }
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(state),
            clients,
            config.turn_stats_lease_key.clone(),
            stopped,
        ));
        Some(TurnStats { stop, task })
    }

    /// Stops reading and releases the lease, so another node takes over at its next renewal.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

struct Clients {
    commands: Client,
    subscriber: SubscriberClient,
}

fn connect(url: &str) -> Result<Clients, String> {
    let mut config = if let Some(path) = url
        .strip_prefix("unix://")
        .or_else(|| url.strip_prefix("redis+unix://"))
    {
        FredConfig::from_url_unix(&format!("redis+unix://{path}"))
    } else {
        FredConfig::from_url_centralized(url)
    }
    .map_err(|e| e.details().to_string())?;
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(2);
            p.broadcast_channel_capacity = 4096;
        });
    let commands = builder.build().map_err(|e| e.details().to_string())?;
    let subscriber = builder
        .build_subscriber_client()
        .map_err(|e| e.details().to_string())?;
    Ok(Clients {
        commands,
        subscriber,
    })
}

fn node_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Unique enough among a deployment's nodes: the process id and the start time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{}-{nanos}", std::process::id());
    }
    hex::encode(bytes)
}

async fn run(
    state: Arc<State>,
    clients: Clients,
    lease_key: String,
    mut stopped: watch::Receiver<bool>,
) {
    let Clients {
        commands,
        subscriber,
    } = clients;
    let node = node_id();
    let mut messages = subscriber.message_rx();
    drop(commands.connect());
    drop(subscriber.connect());
    let lease_ms = u64::try_from(LEASE.as_millis()).unwrap_or(10_000);
    // Until when this node may count reports: never before the first renewal.
    let mut held_until: Option<Instant> = None;
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let counters = &state.turn_stats;
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = renew.tick() => {
                let asked = Instant::now();
                let held = commands
                    .eval::<i64, _, _, _>(ACQUIRE, lease_key.as_str(), vec![node.clone(), lease_ms.to_string()])
                    .await;
                match held {
                    Ok(1) => {
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
                    Ok(_) => {
                        if held_until.take().is_some() {
                            tracing::info!("another node counts coturn's TURN traffic reports now");
                            let _ = subscriber.punsubscribe(PATTERN).await;
                        }
                    }
                    Err(err) => {
                        // Keep what was held: it lapses by itself at `held_until`.
                        tracing::warn!(error = %err.details(), "cannot renew the TURN statistics lease; is the Redis of usage.turn_stats_url up?");
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
                let body = message.value.as_str();
                let Some(report) = body.as_deref().and_then(|body| parse_report(&message.channel, body)) else {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let known = project_of_turn_username(report.username).filter(|project| {
                    state.live.load().config.projects.iter().any(|p| p.id == *project)
                });
                match known {
                    Some(project) => {
                        state.usage.record(&project, Record::TurnRelay { bytes: report.bytes }, state.now_unix());
                        counters.counted.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        counters.unknown_project.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    counters.leading.store(false, Ordering::Relaxed);
    if held_until.is_some() {
        let _ = commands
            .eval::<i64, _, _, _>(RELEASE, lease_key.as_str(), vec![node])
            .await;
    }
    let _ = subscriber.quit().await;
    let _ = commands.quit().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::turn_user;

    // Observed from Debian's coturn 4.6 with `redis-statsdb` (`redis-cli psubscribe 'turn/*'`).
    const TRAFFIC: &str =
        "turn/realm/pulsebeam.test/user/1796310368:projb/g/bob/allocation/001000000000000004/traffic";

    #[test]
    fn traffic_reports_name_the_user_and_the_bytes_both_ways() {
        let report = parse_report(TRAFFIC, "rcvp=1029, rcvb=311076, sentp=1029, sentb=310620");
        assert_eq!(
            report,
            Some(TrafficReport {
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
            assert_eq!(traffic_channel_user(channel), None, "{channel}");
        }
        let long = format!(
            "turn/realm/r/user/1:{}/g/a/allocation/1/traffic",
            "p".repeat(MAX_CHANNEL_BYTES)
        );
        assert_eq!(traffic_channel_user(&long), None);
    }

    #[test]
    fn usernames_with_allocation_in_them_keep_it() {
        let channel = "turn/realm/r/user/9:p/allocation/allocation/7/traffic";
        assert_eq!(traffic_channel_user(channel), Some("9:p/allocation"));
    }

    #[test]
    fn messages_need_both_byte_counts() {
        assert_eq!(
            traffic_bytes("rcvp=1, rcvb=10, sentp=1, sentb=20"),
            Some(30)
        );
        assert_eq!(traffic_bytes("rcvb=0,sentb=0"), Some(0));
        for bad in [
            "",
            "rcvp=1, rcvb=10",
            "rcvb=10, sentp=1",
            "rcvb=x, sentb=1",
            "rcvb=-1, sentb=1",
            "rcvb=10 sentb=20",
            "deleted",
            "new lifetime=600, type=UDP",
            "rcvb=18446744073709551615, sentb=1",
        ] {
            assert_eq!(traffic_bytes(bad), None, "{bad}");
        }
        let long = format!("rcvb=1, sentb=1, {}", "x=1, ".repeat(100));
        assert_eq!(traffic_bytes(&long), None);
    }

    #[test]
    fn usernames_the_server_hands_out_map_back_to_their_project() {
        for project in ["dev", "acme-prod", "a.b_c~d"] {
            let username = format!("1796310368:{}", turn_user(project, "g", "alice"));
            let channel = format!("turn/realm/r/user/{username}/allocation/1/traffic");
            let user = traffic_channel_user(&channel);
            assert_eq!(user, Some(username.as_str()));
            assert_eq!(
                project_of_turn_username(&username).as_deref(),
                Some(project)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_reports_are_read_or_refused(channel in ".{0,300}", message in ".{0,300}") {
            let _ = parse_report(&channel, &message);
        }
    }
}
