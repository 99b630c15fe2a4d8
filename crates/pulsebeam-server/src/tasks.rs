//! The server's background tasks, in one set the server owns: started on its runtime, ended
//! when it shuts down (each task watches the shutdown signal and gets the shutdown grace to
//! finish) or, at the latest, when the server is dropped.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinSet;

/// The background tasks of one server (or one store).
#[derive(Debug)]
pub(crate) struct Tasks {
    runtime: Handle,
    set: Arc<Mutex<JoinSet<()>>>,
}

impl Tasks {
    /// An empty set whose tasks run on `runtime`.
    pub(crate) fn new(runtime: Handle) -> Self {
        Tasks {
            runtime,
            set: Arc::default(),
        }
    }

    /// Starts `task`.
    ///
    /// A task that ended keeps its memory (its future's state, a few KiB for a call to Redis)
    /// until the set takes it back, so each task, as it ends, takes back those that ended
    /// before it: a quiet server holds at most one ended task, not every one since its last
    /// spawn (a poll's registration each).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let set = Arc::downgrade(&self.set);
        let mut tasks = lock(&self.set);
        reap(&mut tasks);
        tasks.spawn_on(
            async move {
                task.await;
                if let Some(set) = set.upgrade() {
                    reap(&mut lock(&set));
                }
            },
            &self.runtime,
        );
    }

    /// How many tasks the set holds, running or ended and not yet taken back.
    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.set).len()
    }

    /// Aborts every task now (for an owner whose tasks hold a reference back to it, so that
    /// dropping the set alone would never happen).
    pub(crate) fn abort_all(&self) {
        lock(&self.set).abort_all();
    }

    /// Waits up to `grace` for every task to end, then aborts the rest.
    pub(crate) async fn end(&self, grace: Duration) {
        let mut set = std::mem::take(&mut *lock(&self.set));
        let all = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                remaining = set.len(),
                "background tasks still running after the shutdown grace; ending them"
            );
        }
        set.shutdown().await;
    }
}

fn lock(set: &Mutex<JoinSet<()>>) -> std::sync::MutexGuard<'_, JoinSet<()>> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes back the tasks of `set` that ended.
fn reap(set: &mut JoinSet<()>) {
    while set.try_join_next().is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_that_ended_are_taken_back_without_another_spawn() {
        let tasks = Tasks::new(Handle::current());
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..50 {
            let done = done_tx.clone();
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = done.send(());
            });
        }
        for _ in 0..50 {
            done_rx.recv().await.unwrap();
        }
        // Each task, as it ends, takes back those that ended before it: only the last ones, as
        // many as ended at once (one per worker thread), can remain.
        let start = std::time::Instant::now();
        while tasks.held() > 2 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{} ended tasks are still held",
                tasks.held()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_that_end_are_waited_for_and_the_rest_are_ended_after_the_grace() {
        let tasks = Tasks::new(Handle::current());
        let finished = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicBool::new(false));
        tasks.spawn({
            let finished = Arc::clone(&finished);
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                finished.store(true, Ordering::SeqCst);
            }
        });
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        tasks.spawn({
            let guard = SetOnDrop(Arc::clone(&dropped));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
        });
        let started = tokio::time::Instant::now();
        tasks.end(Duration::from_secs(5)).await;
        assert!(finished.load(Ordering::SeqCst));
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
