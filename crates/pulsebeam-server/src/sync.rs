//! Keeping a node in step with its stores (and so with the nodes it shares them with):
//! revocations read again when they change, and this node's usage counts added to the totals.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// How often a node looks for revocation changes in the revocation store: a revocation made
/// on one node holds on every node within a second.
const REVOCATION_SYNC: Duration = Duration::from_millis(500);

/// How often (in revocation checks) a node adds its usage counts to the usage store.
const USAGE_FLUSH_EVERY: u32 = 20;

/// Starts the task that keeps `state` in step with its stores, owned by the server's tasks: it
/// ends when the server shuts down or is dropped.
pub(crate) fn start(state: &Arc<State>) {
    let weak = Arc::downgrade(state);
    let mut shutdown = state.shutdown.subscribe();
    state.tasks.spawn(async move {
        let mut seen = None;
        let mut tick = tokio::time::interval(REVOCATION_SYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|down| *down) => break,
            }
            let Some(state) = weak.upgrade() else { return };
            seen = state.sync_revocations(seen).await;
            ticks = ticks.wrapping_add(1);
            if ticks % USAGE_FLUSH_EVERY == 0 {
                if let Err(err) = state.flush_usage().await {
                    tracing::debug!(error = %err, "usage totals not added to the usage store yet");
                }
            }
        }
        // A last flush, so that a node's final counts are not lost with it.
        if let Some(state) = weak.upgrade() {
            if let Err(err) = state.flush_usage().await {
                tracing::debug!(error = %err, "usage totals of this node not added to the usage store");
            }
        }
    });
}
