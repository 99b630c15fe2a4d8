//! Usage per project: what each project costs to run.
//!
//! Counted per node: connections online (a `Recv` in flight), peer-seconds online, calls,
//! messages and bytes relayed, TURN credentials issued, and TURN relay bytes (from coturn's
//! statistics). Exposed as Prometheus metrics with a `project` label bounded to the configured
//! projects, and as hourly totals for the admin API: the node hands what it counted to a
//! [`UsageStore`](crate::store::UsageStore) from time to time (in memory for one node, in Redis
//! for a deployment, so the admin API answers for every node).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

/// Hours of totals a node holds back while its usage store cannot take them (a week).
const KEEP_HOURS: u64 = 24 * 7;

/// Minutes of per-minute totals a node keeps in memory (three hours), for the usage page.
pub(crate) const KEEP_MINUTES: u64 = 180;

/// One project's hourly totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageTotals {
    /// Signaling calls (Twirp and gRPC-web).
    pub calls: u64,
    /// Messages accepted by `Send`.
    pub messages: u64,
    /// Bytes of those messages.
    pub message_bytes: u64,
    /// Seconds connections spent online (a `Recv` in flight), summed.
    pub peer_seconds: u64,
    /// TURN credentials handed out by `Prepare`.
    pub turn_credentials: u64,
    /// Bytes relayed by TURN for the project's peers, both directions.
    pub turn_relay_bytes: u64,
    /// Events the project's gRPC-web clients reported with `AnalyticsReport` (by type in the
    /// `pulsebeam_analytics_events_total` metric).
    #[serde(default)]
    pub analytics_events: u64,
}

impl UsageTotals {
    /// Adds `other` field by field.
    pub fn add(&mut self, other: &UsageTotals) {
        self.calls += other.calls;
        self.messages += other.messages;
        self.message_bytes += other.message_bytes;
        self.peer_seconds += other.peer_seconds;
        self.turn_credentials += other.turn_credentials;
        self.turn_relay_bytes += other.turn_relay_bytes;
        self.analytics_events += other.analytics_events;
    }

    /// The fields as `(name, value)`, in a fixed order.
    pub fn fields(&self) -> [(&'static str, u64); 7] {
        [
            ("calls", self.calls),
            ("messages", self.messages),
            ("message_bytes", self.message_bytes),
            ("peer_seconds", self.peer_seconds),
            ("turn_credentials", self.turn_credentials),
            ("turn_relay_bytes", self.turn_relay_bytes),
            ("analytics_events", self.analytics_events),
        ]
    }

    /// Sets the field named `name`; `false` for an unknown name.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let field = match name {
            "calls" => &mut self.calls,
            "messages" => &mut self.messages,
            "message_bytes" => &mut self.message_bytes,
            "peer_seconds" => &mut self.peer_seconds,
            "turn_credentials" => &mut self.turn_credentials,
            "turn_relay_bytes" => &mut self.turn_relay_bytes,
            "analytics_events" => &mut self.analytics_events,
            _ => return false,
        };
        *field = value;
        true
    }
}

/// Live counters of one project on this node.
#[derive(Debug, Default)]
struct Counters {
    online: AtomicI64,
    calls: AtomicU64,
    messages: AtomicU64,
    message_bytes: AtomicU64,
    peer_millis: AtomicU64,
    turn_credentials: AtomicU64,
    turn_relay_bytes: AtomicU64,
    analytics_events: AtomicU64,
    minutes: Mutex<MinuteRing>,
}

/// Usage of every configured project on this node.
#[derive(Default)]
pub(crate) struct Usage {
    projects: RwLock<HashMap<Arc<str>, Arc<Counters>>>,
    /// (hour, project) -> totals not handed to the usage store yet.
    unflushed: Mutex<BTreeMap<(u64, Arc<str>), UsageTotals>>,
    /// The batch being handed to the usage store, kept unchanged under its id until the store
    /// took it, so that a retry cannot count it twice.
    pending: Mutex<Option<Arc<Batch>>>,
    /// The sequence number of the latest batch.
    batches: AtomicU64,
    /// This node's id in batch ids (random per process).
    node: std::sync::OnceLock<String>,
}

/// Counts handed to the usage store under one id.
#[derive(Debug, PartialEq)]
pub(crate) struct Batch {
    /// `<node id>:<sequence number>`, unique in the deployment.
    pub(crate) id: String,
    /// The counts.
    pub(crate) totals: BTreeMap<(u64, Arc<str>), UsageTotals>,
}

/// What is recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Record {
    Call,
    Message { bytes: u64 },
    Online { millis: u64 },
    TurnCredential,
    TurnRelay { bytes: u64 },
    Analytics { events: u64 },
}

impl Usage {
    /// Tracks exactly `ids` from now on: counters of projects no longer configured are
    /// dropped, so the `project` label stays bounded.
    pub(crate) fn set_projects(&self, ids: &[Arc<str>]) {
        let Ok(mut projects) = self.projects.write() else {
            return;
        };
        projects.retain(|id, _| ids.contains(id));
        for id in ids {
            projects.entry(Arc::clone(id)).or_default();
        }
    }

    fn counters(&self, project: &str) -> Option<Arc<Counters>> {
        self.projects.read().ok()?.get(project).cloned()
    }

    /// Records `what` for `project` at `now_unix`; unknown projects are ignored.
    pub(crate) fn record(&self, project: &str, what: Record, now_unix: u64) {
        let Some(c) = self.counters(project) else {
            return;
        };
        let mut delta = UsageTotals::default();
        match what {
            Record::Call => {
                c.calls.fetch_add(1, Ordering::Relaxed);
                delta.calls = 1;
            }
            Record::Message { bytes } => {
                c.messages.fetch_add(1, Ordering::Relaxed);
                c.message_bytes.fetch_add(bytes, Ordering::Relaxed);
                delta.messages = 1;
                delta.message_bytes = bytes;
            }
            Record::Online { millis } => {
                // Whole seconds go to the hourly totals; the remainder carries over in the
                // counter, whose seconds are what the hour gets.
                let before = c.peer_millis.fetch_add(millis, Ordering::Relaxed);
                delta.peer_seconds = (before + millis) / 1000 - before / 1000;
            }
            Record::TurnCredential => {
                c.turn_credentials.fetch_add(1, Ordering::Relaxed);
                delta.turn_credentials = 1;
            }
            Record::TurnRelay { bytes } => {
                c.turn_relay_bytes.fetch_add(bytes, Ordering::Relaxed);
                delta.turn_relay_bytes = bytes;
            }
            Record::Analytics { events } => {
                c.analytics_events.fetch_add(events, Ordering::Relaxed);
                delta.analytics_events = events;
            }
        }
        c.record_minute(&delta, now_unix);
        if delta == UsageTotals::default() {
            return;
        }
        let hour = now_unix / 3600 * 3600;
        let key = (hour, Arc::<str>::from(project));
        if let Ok(mut map) = self.unflushed.lock() {
            map.entry(key).or_default().add(&delta);
            if map.len() > 4096 {
                let oldest = hour.saturating_sub(KEEP_HOURS * 3600);
                map.retain(|(h, _), _| *h >= oldest);
            }
        }
    }

    /// A `Recv` of `project` began (`+1`) or ended (`-1`).
    pub(crate) fn online(&self, project: &str, delta: i64) {
        if let Some(c) = self.counters(project) {
            let before = c.online.fetch_add(delta, Ordering::Relaxed);
            c.note_online(before.saturating_add(delta), delta > 0);
        }
    }

    /// The batch to hand to the usage store: the one not taken yet, unchanged, or else a new one
    /// of what was counted since; `None` when there is nothing to hand.
    pub(crate) fn next_batch(&self) -> Option<Arc<Batch>> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(batch) = pending.as_ref() {
            return Some(Arc::clone(batch));
        }
        let totals = self
            .unflushed
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default();
        if totals.is_empty() {
            return None;
        }
        let node = self.node.get_or_init(crate::random_id::random_id);
        let seq = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let batch = Arc::new(Batch {
            id: format!("{node}:{seq}"),
            totals,
        });
        *pending = Some(Arc::clone(&batch));
        Some(batch)
    }

    /// The usage store took the batch `id`: the next batch is a new one.
    pub(crate) fn batch_taken(&self, id: &str) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.as_ref().is_some_and(|batch| batch.id == id) {
            *pending = None;
        }
    }

    /// The Prometheus text of the per-project metrics.
    pub(crate) fn render(&self, out: &mut String) {
        let Ok(projects) = self.projects.read() else {
            return;
        };
        let mut ids: Vec<&Arc<str>> = projects.keys().collect();
        ids.sort();
        type Get = fn(&Counters) -> String;
        let families: [(&str, &str, &str, Get); 8] = [
            (
                "pulsebeam_project_connections_online",
                "gauge",
                "Connections of the project with a Recv in flight on this node.",
                |c| c.online.load(Ordering::Relaxed).max(0).to_string(),
            ),
            (
                "pulsebeam_project_peer_seconds_total",
                "counter",
                "Seconds the project's connections spent online (a Recv in flight), summed.",
                |c| {
                    format!(
                        "{:.3}",
                        c.peer_millis.load(Ordering::Relaxed) as f64 / 1000.0
                    )
                },
            ),
            (
                "pulsebeam_project_calls_total",
                "counter",
                "Signaling calls (Twirp and gRPC-web) authenticated for the project.",
                |c| c.calls.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pulsebeam_project_messages_total",
                "counter",
                "Messages the project's peers sent (accepted by Send).",
                |c| c.messages.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pulsebeam_project_message_bytes_total",
                "counter",
                "Bytes of the messages the project's peers sent.",
                |c| c.message_bytes.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pulsebeam_project_turn_credentials_total",
                "counter",
                "TURN credentials issued to the project's peers.",
                |c| c.turn_credentials.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pulsebeam_project_turn_relay_bytes_total",
                "counter",
                "Bytes coturn relayed for the project's peers, both directions.",
                |c| c.turn_relay_bytes.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pulsebeam_project_analytics_events_total",
                "counter",
                "Events the project's gRPC-web clients reported with AnalyticsReport.",
                |c| c.analytics_events.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for id in &ids {
                if let Some(c) = projects.get(*id) {
                    let _ = writeln!(out, "{name}{{project=\"{}\"}} {}", label(id), get(c));
                }
            }
        }
    }
}

/// One minute of a project's usage on the node asked, as the admin API reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteUsage {
    /// The minute's first second (Unix seconds).
    pub minute: u64,
    /// The most connections online at once during the minute.
    pub online: u64,
    /// What happened during the minute.
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// A minute of the ring: its totals, and the connections online after its last event (what
/// the following minutes without events carry).
#[derive(Debug, Clone, Copy, Default)]
struct MinuteSlot {
    used: bool,
    totals: MinuteUsage,
    online_end: u64,
}

/// The last [`KEEP_MINUTES`] minutes of one project, by minute number (Unix seconds / 60).
///
/// Connections online are sampled at every timed event: a `Recv` starts right after its call
/// is recorded, so a rise lands in the newest minute; a `Recv` that ends is recorded at once
/// with its time, so a fall is applied to the minute it happened in, and the minutes it was
/// waiting through keep the count from before.
#[derive(Debug, Default)]
struct MinuteRing {
    slots: Vec<MinuteSlot>,
    /// The newest minute number with a slot.
    latest: u64,
    /// `online_end` of the newest minute.
    latest_end: u64,
    /// Connections online now.
    online_now: u64,
}

impl MinuteRing {
    fn index(minute: u64) -> usize {
        usize::try_from(minute % KEEP_MINUTES).unwrap_or(0)
    }

    fn used(&self, minute: u64) -> Option<&MinuteSlot> {
        self.slots
            .get(Self::index(minute))
            .filter(|s| s.used && s.totals.minute == minute * 60)
    }

    /// Connections online at the end of the newest minute with a slot before `minute`.
    fn carry_before(&self, minute: u64) -> u64 {
        (1..KEEP_MINUTES)
            .filter_map(|back| minute.checked_sub(back))
            .find_map(|m| self.used(m))
            .map_or(0, |s| s.online_end)
    }

    /// The slot of `minute`, started when it has none; `None` when it is too old to keep.
    fn touch(&mut self, minute: u64) -> Option<&mut MinuteSlot> {
        if self.slots.is_empty() {
            self.slots = vec![MinuteSlot::default(); usize::try_from(KEEP_MINUTES).unwrap_or(1)];
        }
        if minute.saturating_add(KEEP_MINUTES) <= self.latest {
            return None;
        }
        if self.used(minute).is_none() {
            let carry = if minute > self.latest {
                self.latest_end
            } else {
                self.carry_before(minute)
            };
            let slot = self.slots.get_mut(Self::index(minute))?;
            *slot = MinuteSlot {
                used: true,
                totals: MinuteUsage {
                    minute: minute * 60,
                    online: carry,
                    totals: UsageTotals::default(),
                },
                online_end: carry,
            };
        }
        if minute > self.latest {
            self.latest = minute;
            self.latest_end = self.used(minute).map_or(0, |s| s.online_end);
        }
        self.slots.get_mut(Self::index(minute))
    }

    /// Adds `delta` to `minute` and samples the connections online.
    fn record(&mut self, minute: u64, delta: &UsageTotals) {
        let online = self.online_now;
        let Some(slot) = self.touch(minute) else {
            return;
        };
        slot.totals.totals.add(delta);
        slot.totals.online = slot.totals.online.max(online);
        slot.online_end = online;
        if minute == self.latest {
            self.latest_end = online;
        }
    }

    /// The connections online changed to `online`; a rise counts in the newest minute.
    fn online(&mut self, online: u64, rose: bool) {
        self.online_now = online;
        if !rose {
            return;
        }
        let latest = self.latest;
        if let Some(slot) = self.slots.get_mut(Self::index(latest)) {
            if slot.used && slot.totals.minute == latest * 60 {
                slot.totals.online = slot.totals.online.max(online);
                slot.online_end = online;
                self.latest_end = online;
            }
        }
    }

    /// The `count` minutes up to and including `minute`, oldest first, minutes without events
    /// included (with the connections online they carried).
    fn read(&mut self, minute: u64, count: u64) -> Vec<MinuteUsage> {
        self.record(minute, &UsageTotals::default());
        let count = count.clamp(1, KEEP_MINUTES);
        let first = minute.saturating_sub(count - 1);
        let mut carry = self.carry_before(first);
        (first..=minute)
            .map(|m| match self.used(m) {
                Some(slot) => {
                    carry = slot.online_end;
                    slot.totals
                }
                None => MinuteUsage {
                    minute: m * 60,
                    online: carry,
                    totals: UsageTotals::default(),
                },
            })
            .collect()
    }
}

impl Counters {
    /// Adds `delta` to the minute of `now_unix`.
    fn record_minute(&self, delta: &UsageTotals, now_unix: u64) {
        if let Ok(mut ring) = self.minutes.lock() {
            ring.record(now_unix / 60, delta);
        }
    }

    /// The connections online changed to `online` (never below zero).
    fn note_online(&self, online: i64, rose: bool) {
        if let Ok(mut ring) = self.minutes.lock() {
            ring.online(u64::try_from(online).unwrap_or(0), rose);
        }
    }
}

impl Usage {
    /// The last `count` minutes (at most [`KEEP_MINUTES`]) of `project` on this node up to
    /// `now_unix`, oldest first, and the connections online now; `None` for a project that is
    /// not configured.
    pub(crate) fn minutes(
        &self,
        project: &str,
        now_unix: u64,
        count: u64,
    ) -> Option<(u64, Vec<MinuteUsage>)> {
        let c = self.counters(project)?;
        let online_now = u64::try_from(c.online.load(Ordering::Relaxed)).unwrap_or(0);
        let minutes = c.minutes.lock().ok()?.read(now_unix / 60, count);
        Some((online_now, minutes))
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub(crate) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_counted_per_project_and_hour_and_bounded_to_configured_projects() {
        let usage = Usage::default();
        usage.set_projects(&[Arc::from("a"), Arc::from("b\"q")]);
        let t0 = 1_750_000_000 / 3600 * 3600;
        usage.record("a", Record::Message { bytes: 100 }, t0 + 5);
        usage.record("a", Record::Message { bytes: 50 }, t0 + 3600);
        usage.record("a", Record::Online { millis: 1_500 }, t0 + 10);
        usage.record("a", Record::Online { millis: 700 }, t0 + 11);
        usage.record("nope", Record::Call, t0);
        usage.online("a", 1);
        let pending = usage.next_batch().unwrap().totals.clone();
        let hour = |h: u64| pending[&(h, Arc::<str>::from("a"))];
        assert_eq!(pending.len(), 2);
        assert_eq!(hour(t0).messages, 1);
        assert_eq!(hour(t0).message_bytes, 100);
        assert_eq!(hour(t0).peer_seconds, 2);
        assert_eq!(hour(t0 + 3600).message_bytes, 50);
        let mut text = String::new();
        usage.render(&mut text);
        assert!(
            text.contains("pulsebeam_project_messages_total{project=\"a\"} 2"),
            "{text}"
        );
        assert!(text.contains("pulsebeam_project_connections_online{project=\"a\"} 1"));
        assert!(text.contains("pulsebeam_project_peer_seconds_total{project=\"a\"} 2.200"));
        assert!(text.contains("project=\"b\\\"q\""), "{text}");
        assert!(!text.contains("nope"));
        // A project removed by a reload disappears from the metrics.
        usage.set_projects(&[Arc::from("a")]);
        let mut text = String::new();
        usage.render(&mut text);
        assert!(!text.contains("b\\\"q"));
    }

    #[test]
    fn a_batch_not_taken_is_handed_again_unchanged_under_its_id() {
        let usage = Usage::default();
        usage.set_projects(&[Arc::from("a")]);
        let t0 = 1_750_000_000 / 3600 * 3600;
        assert!(usage.next_batch().is_none());
        usage.record("a", Record::Message { bytes: 100 }, t0 + 5);
        let first = usage.next_batch().unwrap();
        // The store failed (or timed out, having applied it or not): what came since waits.
        usage.record("a", Record::Message { bytes: 1 }, t0 + 6);
        let again = usage.next_batch().unwrap();
        assert_eq!(again, first);
        assert_eq!(
            again.totals[&(t0, Arc::<str>::from("a"))].message_bytes,
            100
        );
        usage.batch_taken(&again.id);
        let next = usage.next_batch().unwrap();
        assert_ne!(next.id, first.id);
        assert_eq!(next.totals[&(t0, Arc::<str>::from("a"))].message_bytes, 1);
        usage.batch_taken(&next.id);
        assert!(usage.next_batch().is_none());
    }
    #[test]
    fn minutes_count_per_minute_and_carry_the_connections_online() {
        let usage = Usage::default();
        usage.set_projects(&[Arc::from("a")]);
        let t0 = 1_750_000_000 / 60 * 60;
        // Minute 0: a Recv starts (its call first), a message; minute 1: TURN relay bytes.
        usage.record("a", Record::Call, t0);
        usage.online("a", 1);
        usage.record("a", Record::Message { bytes: 40 }, t0 + 10);
        usage.record("a", Record::TurnRelay { bytes: 9_000 }, t0 + 70);
        usage.record("a", Record::TurnCredential, t0 + 71);
        let (online, minutes) = usage.minutes("a", t0 + 300, 6).unwrap();
        assert_eq!(online, 1);
        assert_eq!(minutes.len(), 6);
        assert_eq!(minutes[0].minute, t0);
        assert_eq!(minutes[5].minute, t0 + 300);
        assert_eq!(minutes[0].totals.messages, 1);
        assert_eq!(minutes[0].totals.message_bytes, 40);
        assert_eq!(minutes[1].totals.turn_relay_bytes, 9_000);
        assert_eq!(minutes[1].totals.turn_credentials, 1);
        // The Recv is still open: every minute since counts it, with or without events.
        assert!(minutes.iter().all(|m| m.online == 1), "{minutes:?}");
        assert!(minutes[2..].iter().all(|m| m.totals.messages == 0));

        // It ends in minute 6 (recorded at once, with its time): minute 6 still had it online,
        // the minutes after do not.
        usage.online("a", -1);
        usage.record("a", Record::Online { millis: 400_000 }, t0 + 400);
        let (online, minutes) = usage.minutes("a", t0 + 500, 4).unwrap();
        assert_eq!(online, 0);
        let seen: Vec<u64> = minutes.iter().map(|m| m.online).collect();
        assert_eq!(seen, [1, 1, 0, 0], "{minutes:?}");
        assert_eq!(minutes[1].totals.peer_seconds, 400);

        // Two Recvs at once within one minute: the minute shows the peak.
        usage.record("a", Record::Call, t0 + 600);
        usage.online("a", 1);
        usage.record("a", Record::Call, t0 + 601);
        usage.online("a", 1);
        usage.online("a", -1);
        usage.record("a", Record::Online { millis: 1_000 }, t0 + 602);
        let (online, minutes) = usage.minutes("a", t0 + 610, 1).unwrap();
        assert_eq!((online, minutes[0].online), (1, 2));

        // Minutes older than the ring are zeros; unknown projects have no minutes.
        let later = t0 + 60 * (KEEP_MINUTES + 10);
        let (_, minutes) = usage.minutes("a", later, KEEP_MINUTES).unwrap();
        assert_eq!(minutes.len(), usize::try_from(KEEP_MINUTES).unwrap());
        assert!(minutes.iter().all(|m| m.totals == UsageTotals::default()));
        assert!(usage.minutes("nope", t0, 5).is_none());
    }
}
