//! `AnalyticsReport` (gRPC-web, 0.1.0-rc.1 on): what the clients measure about their sessions,
//! counted per project and event type, nothing else kept.
//!
//! A report is accepted whatever its content: the clients send one a minute and only log a
//! failure, and nothing in a report is worth refusing a client over. Its size is bounded by
//! `limits.max_body_bytes`, its rate by the per-peer call limit, and what is counted by
//! [`MAX_EVENTS`] and [`MAX_METRICS`] (the rest is counted as dropped). Only ids are kept: the
//! project and the event type's number; peer ids, timestamps and measured values are not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::proto::{AnalyticsReportReq, EventType};

/// Events of one report that are counted.
pub(crate) const MAX_EVENTS: usize = 256;
/// Measurements of one event that are counted.
pub(crate) const MAX_METRICS: usize = 64;

/// A project and an event type (`None` for a type this server does not know).
type EventKey = (Arc<str>, Option<EventType>);

/// Counts of what the clients reported.
#[derive(Debug, Default)]
pub(crate) struct Analytics {
    /// Events counted by project and type.
    events: Mutex<BTreeMap<EventKey, u64>>,
    /// Reports accepted per project.
    reports: Mutex<BTreeMap<Arc<str>, u64>>,
    /// Events and measurements beyond the bounds, not counted.
    dropped: std::sync::atomic::AtomicU64,
}

impl Analytics {
    /// Counts `report` for `project`; returns how many events were counted.
    pub(crate) fn record(&self, project: &Arc<str>, report: &AnalyticsReportReq) -> u64 {
        let mut dropped = report.events.len().saturating_sub(MAX_EVENTS);
        let mut counted: BTreeMap<Option<EventType>, u64> = BTreeMap::new();
        for event in report.events.iter().take(MAX_EVENTS) {
            dropped += event.metrics.len().saturating_sub(MAX_METRICS);
            for metric in event.metrics.iter().take(MAX_METRICS) {
                if let Some(kind) = metric.event_type {
                    *counted.entry(EventType::try_from(kind).ok()).or_default() += 1;
                }
            }
        }
        if let Ok(mut reports) = self.reports.lock() {
            *reports.entry(Arc::clone(project)).or_default() += 1;
        }
        let total = counted.values().sum();
        if let Ok(mut events) = self.events.lock() {
            for (kind, n) in counted {
                *events.entry((Arc::clone(project), kind)).or_default() += n;
            }
        }
        self.dropped
            .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
        total
    }

    /// Appends the Prometheus text of the counts to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str("# HELP pulsebeam_analytics_reports_total AnalyticsReport calls accepted, by project.\n# TYPE pulsebeam_analytics_reports_total counter\n");
        if let Ok(reports) = self.reports.lock() {
            for (project, n) in reports.iter() {
                let _ = writeln!(
                    out,
                    "pulsebeam_analytics_reports_total{{project=\"{}\"}} {n}",
                    crate::usage::label(project)
                );
            }
        }
        out.push_str("# HELP pulsebeam_analytics_events_total Client analytics events by project and event type.\n# TYPE pulsebeam_analytics_events_total counter\n");
        if let Ok(events) = self.events.lock() {
            for ((project, kind), n) in events.iter() {
                let kind = kind.map_or("other", |k| k.as_str_name());
                let _ = writeln!(
                    out,
                    "pulsebeam_analytics_events_total{{project=\"{}\",type=\"{kind}\"}} {n}",
                    crate::usage::label(project)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP pulsebeam_analytics_dropped_total Analytics events and measurements beyond the per-report bounds, not counted.\n# TYPE pulsebeam_analytics_dropped_total counter\npulsebeam_analytics_dropped_total {}",
            self.dropped.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AnalyticsEvent, AnalyticsMetrics};

    fn event(kinds: &[i32]) -> AnalyticsEvent {
        AnalyticsEvent {
            tags: None,
            metrics: kinds
                .iter()
                .map(|k| AnalyticsMetrics {
                    timestamp_us: 1,
                    event_type: Some(*k),
                    quality_score: None,
                    rtt_us: Some(20_000),
                })
                .collect(),
        }
    }

    #[test]
    fn events_are_counted_by_project_and_type_within_bounds() {
        let analytics = Analytics::default();
        let p: Arc<str> = Arc::from("prod");
        let report = AnalyticsReportReq {
            events: vec![event(&[2011, 2011, 3009, 77_777]), event(&[1001])],
        };
        analytics.record(&p, &report);
        analytics.record(
            &Arc::from("other\"q"),
            &AnalyticsReportReq { events: vec![] },
        );
        let big = AnalyticsReportReq {
            events: vec![event(&vec![4001; MAX_METRICS + 3]); MAX_EVENTS + 2],
        };
        analytics.record(&p, &big);
        let mut text = String::new();
        analytics.render(&mut text);
        for line in [
            "pulsebeam_analytics_reports_total{project=\"prod\"} 2",
            "pulsebeam_analytics_reports_total{project=\"other\\\"q\"} 1",
            "pulsebeam_analytics_events_total{project=\"prod\",type=\"EVENT_ICE_CANDIDATE_PAIRING_SUCCESS\"} 2",
            "pulsebeam_analytics_events_total{project=\"prod\",type=\"EVENT_SIGNALING_CONNECTED\"} 1",
            "pulsebeam_analytics_events_total{project=\"prod\",type=\"EVENT_ERROR_SIGNALING_CONNECTION_FAILED\"} 1",
            "pulsebeam_analytics_events_total{project=\"prod\",type=\"other\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        let counted = (MAX_EVENTS * MAX_METRICS) as u64;
        assert!(text.contains(&format!(
            "pulsebeam_analytics_events_total{{project=\"prod\",type=\"EVENT_USER_JOINED_SESSION\"}} {counted}"
        )));
        let dropped = 2 + MAX_EVENTS * 3;
        assert!(
            text.contains(&format!("pulsebeam_analytics_dropped_total {dropped}")),
            "{text}"
        );
    }
}
