//! Where hourly usage totals are summed: [`UsageStore`], and its in-memory implementation.
//!
//! # The contract
//!
//! Totals are kept per whole hour (Unix seconds) and project. [`UsageStore::add`] adds each
//! field of each entry to what is kept; [`UsageStore::hours`] returns, for the hours asked, the
//! sums of every add of every node sharing the store. An hour with nothing counted (every field
//! zero) is absent from the answer. A store keeps at least a week of hours.
//!
//! Every add names its batch with an id unique in the deployment (a node id and a sequence
//! number). Each entry of a batch is applied at most once: adding a batch again (a retry after
//! a timeout or an error, when the store may have applied all or part of it) adds only the
//! entries not applied yet, for at least [`BATCH_IDS_KEPT_SECS`] after the first try. A node
//! retries a batch unchanged, under its id, until an add of it succeeds.
//!
//! [`MemoryUsage`] serves one node; [`RedisUsage`](super::RedisUsage) every node of a
//! deployment. The conformance suite (`conformance::usage`) proves the contract on each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{BoxFuture, StoreError};
use crate::usage::UsageTotals;

/// Totals by (hour in Unix seconds, project id).
pub type HourlyUsage = BTreeMap<(u64, Arc<str>), UsageTotals>;

/// Hours a store keeps: a week, and a day to spare.
pub(crate) const KEEP_HOURS: u64 = 8 * 24;

/// How long a store remembers which entries of a batch it applied: a day.
pub const BATCH_IDS_KEPT_SECS: u64 = 24 * 3600;

/// How many applied entries [`MemoryUsage`] remembers (a node flushes every 10 s: a day of
/// flushes of several projects).
const MEMORY_APPLIED_ENTRIES: usize = 65_536;

/// Storage of hourly usage totals; the module docs state the contract.
pub trait UsageStore: Send + Sync + 'static {
    /// Adds `totals`, the batch `batch` (see the module docs: each entry at most once per
    /// batch id), to what is kept.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend cannot be reached; then a part may have
    /// been added, and adding the same batch again adds the rest.
    fn add<'a>(
        &'a self,
        batch: &'a str,
        totals: &'a HourlyUsage,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// `project`'s totals for `hours` (Unix seconds of whole hours), by hour.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the backend cannot be reached.
    fn hours<'a>(
        &'a self,
        project: &'a str,
        hours: &'a [u64],
    ) -> BoxFuture<'a, Result<BTreeMap<u64, UsageTotals>, StoreError>>;
}

/// Usage totals of one node, in memory, for eight days back from the newest hour added.
#[derive(Debug, Default)]
pub struct MemoryUsage {
    totals: Mutex<HourlyUsage>,
    /// The entries of the latest batches applied, as (batch id, hour, project), oldest first.
    applied: Mutex<std::collections::VecDeque<(String, u64, Arc<str>)>>,
}

impl MemoryUsage {
    /// An empty store.
    pub fn new() -> Self {
        MemoryUsage::default()
    }
}

impl UsageStore for MemoryUsage {
    fn add<'a>(
        &'a self,
        batch: &'a str,
        totals: &'a HourlyUsage,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut kept = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((hour, project), t) in totals {
            if *t == UsageTotals::default() {
                continue;
            }
            let entry = (batch.to_owned(), *hour, Arc::clone(project));
            if applied.contains(&entry) {
                continue;
            }
            if applied.len() >= MEMORY_APPLIED_ENTRIES {
                applied.pop_front();
            }
            applied.push_back(entry);
            kept.entry((*hour, Arc::clone(project))).or_default().add(t);
        }
        let newest = kept.keys().map(|(hour, _)| *hour).max().unwrap_or(0);
        let oldest = newest.saturating_sub(KEEP_HOURS * 3600);
        kept.retain(|(hour, _), _| *hour >= oldest);
        Box::pin(std::future::ready(Ok(())))
    }

    fn hours<'a>(
        &'a self,
        project: &'a str,
        hours: &'a [u64],
    ) -> BoxFuture<'a, Result<BTreeMap<u64, UsageTotals>, StoreError>> {
        let kept = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = hours
            .iter()
            .filter_map(|hour| {
                kept.get(&(*hour, Arc::<str>::from(project)))
                    .map(|t| (*hour, *t))
            })
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::usage as suite;
    use std::collections::HashMap;

    #[tokio::test]
    async fn conformance() {
        let stores: Mutex<HashMap<String, Arc<MemoryUsage>>> = Mutex::default();
        let factory: suite::Factory = Arc::new(move |namespace: &str| {
            let mut stores = stores.lock().unwrap();
            let store = stores.entry(namespace.to_owned()).or_default();
            Arc::clone(store) as Arc<dyn UsageStore>
        });
        let failed = suite::run_all(factory).await;
        assert!(failed.is_empty(), "failed: {failed:#?}");
    }

    #[tokio::test]
    async fn hours_older_than_a_week_and_a_day_are_dropped() {
        let store = MemoryUsage::new();
        let h0 = 1_750_000_000 / 3600 * 3600;
        let one = UsageTotals {
            calls: 1,
            ..UsageTotals::default()
        };
        let at = |hour: u64| HourlyUsage::from([((hour, Arc::<str>::from("p")), one)]);
        store.add("b0", &at(h0)).await.unwrap();
        store.add("b1", &at(h0 + KEEP_HOURS * 3600)).await.unwrap();
        assert_eq!(store.hours("p", &[h0]).await.unwrap().len(), 1);
        store
            .add("b2", &at(h0 + (KEEP_HOURS + 1) * 3600))
            .await
            .unwrap();
        assert!(store.hours("p", &[h0]).await.unwrap().is_empty());
    }
}
