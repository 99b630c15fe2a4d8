//! The contract of [`UsageStore`] as tests that every implementation runs.
//!
//! The factory gives a store for a namespace; called twice with one namespace it must give two
//! nodes on the same data.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::store::{BoxFuture, HourlyUsage, UsageStore};
use crate::usage::UsageTotals;

/// Builds a store (a node) for a namespace.
pub type Factory = Arc<dyn Fn(&str) -> Arc<dyn UsageStore> + Send + Sync>;

/// A test of the suite.
pub type Test = fn(Factory) -> BoxFuture<'static, ()>;

/// A whole hour (Unix seconds).
const H0: u64 = 1_750_000_000 / 3600 * 3600;
const H1: u64 = H0 + 3600;
const H2: u64 = H0 + 7200;

fn totals(calls: u64, messages: u64, message_bytes: u64) -> UsageTotals {
    UsageTotals {
        calls,
        messages,
        message_bytes,
        ..UsageTotals::default()
    }
}

fn batch(entries: &[(u64, &str, UsageTotals)]) -> HourlyUsage {
    entries
        .iter()
        .map(|(hour, project, t)| ((*hour, Arc::<str>::from(*project)), *t))
        .collect()
}

/// Totals add up per hour and project; hours asked for without counts are absent.
pub async fn totals_add_up_per_hour_and_project(f: Factory) {
    let s = f("sums");
    s.add(
        "batch-1",
        &batch(&[
            (H0, "p", totals(1, 2, 30)),
            (H1, "p", totals(0, 0, 5)),
            (H0, "q", totals(7, 0, 0)),
        ]),
    )
    .await
    .unwrap();
    s.add("batch-2", &batch(&[(H0, "p", totals(2, 1, 10))]))
        .await
        .unwrap();
    let p = s.hours("p", &[H0, H1, H2]).await.unwrap();
    assert_eq!(
        p,
        BTreeMap::from([(H0, totals(3, 3, 40)), (H1, totals(0, 0, 5))])
    );
    let q = s.hours("q", &[H0, H1]).await.unwrap();
    assert_eq!(q, BTreeMap::from([(H0, totals(7, 0, 0))]));
    assert_eq!(
        s.hours("p", &[H1]).await.unwrap(),
        BTreeMap::from([(H1, totals(0, 0, 5))]),
        "only the hours asked for"
    );
}

/// Nothing counted is nothing stored; no hours asked is an empty answer.
pub async fn empty_totals_leave_no_hour(f: Factory) {
    let s = f("empty");
    s.add("batch-3", &batch(&[(H0, "p", UsageTotals::default())]))
        .await
        .unwrap();
    s.add("batch-4", &HourlyUsage::new()).await.unwrap();
    assert!(s.hours("p", &[H0, H1]).await.unwrap().is_empty());
    assert!(s.hours("p", &[]).await.unwrap().is_empty());
    assert!(s.hours("never", &[H0]).await.unwrap().is_empty());
}

/// Every field is kept apart and read back as added.
pub async fn every_field_round_trips(f: Factory) {
    let s = f("fields");
    let all = UsageTotals {
        calls: 1,
        messages: 2,
        message_bytes: 3,
        peer_seconds: 4,
        turn_credentials: 5,
        turn_relay_bytes: 6_000_000_000_000,
        analytics_events: 7,
    };
    s.add("batch-5", &batch(&[(H0, "p", all)])).await.unwrap();
    assert_eq!(
        s.hours("p", &[H0]).await.unwrap(),
        BTreeMap::from([(H0, all)])
    );
}

/// Projects whose ids hold separators or braces do not share totals.
pub async fn projects_with_separators_stay_apart(f: Factory) {
    let s = f("apart");
    let ids = ["a:b", "a", "{a}", "a%3Ab", "é"];
    for (i, id) in (1u64..).zip(ids) {
        s.add(
            &format!("batch-6-{i}"),
            &batch(&[(H0, id, totals(i, 0, 0))]),
        )
        .await
        .unwrap();
    }
    for (i, id) in (1u64..).zip(ids) {
        assert_eq!(
            s.hours(id, &[H0]).await.unwrap(),
            BTreeMap::from([(H0, totals(i, 0, 0))]),
            "{id}"
        );
    }
}

/// What every node adds, every node reads, summed.
pub async fn every_node_adds_to_the_same_totals(f: Factory) {
    let a = f("nodes");
    let b = f("nodes");
    a.add("batch-7", &batch(&[(H0, "p", totals(1, 1, 100))]))
        .await
        .unwrap();
    b.add(
        "batch-8",
        &batch(&[(H0, "p", totals(2, 1, 50)), (H1, "p", totals(1, 0, 0))]),
    )
    .await
    .unwrap();
    let want = BTreeMap::from([(H0, totals(3, 2, 150)), (H1, totals(1, 0, 0))]);
    assert_eq!(a.hours("p", &[H0, H1]).await.unwrap(), want);
    assert_eq!(b.hours("p", &[H0, H1]).await.unwrap(), want);
}

/// A batch added again (a retry: the first add timed out or failed part way) adds only what
/// was not applied yet: each entry once.
pub async fn a_batch_added_again_counts_once(f: Factory) {
    let a = f("retry");
    let b = f("retry");
    let first = batch(&[(H0, "p", totals(1, 1, 100))]);
    a.add("node-a:1", &first).await.unwrap();
    a.add("node-a:1", &first).await.unwrap();
    // Applied in part (the entry of H0), then retried whole.
    let whole = batch(&[(H0, "p", totals(1, 1, 100)), (H1, "p", totals(2, 0, 0))]);
    a.add("node-a:1", &whole).await.unwrap();
    // The same sequence number on another node is another batch.
    b.add("node-b:1", &first).await.unwrap();
    let want = BTreeMap::from([(H0, totals(2, 2, 200)), (H1, totals(2, 0, 0))]);
    assert_eq!(a.hours("p", &[H0, H1]).await.unwrap(), want);
}

/// Every test of the suite, by name.
pub fn all() -> Vec<(&'static str, Test)> {
    macro_rules! tests {
        ($($name:ident),* $(,)?) => {
            vec![$((stringify!($name), (|f| Box::pin($name(f))) as Test)),*]
        };
    }
    tests![
        totals_add_up_per_hour_and_project,
        empty_totals_leave_no_hour,
        every_field_round_trips,
        projects_with_separators_stay_apart,
        every_node_adds_to_the_same_totals,
        a_batch_added_again_counts_once,
    ]
}

/// Runs every test at once (each in its own task and namespace) and returns the names of the
/// failed ones with their panic messages.
pub async fn run_all(factory: Factory) -> Vec<String> {
    super::run_each(all(), factory).await
}
