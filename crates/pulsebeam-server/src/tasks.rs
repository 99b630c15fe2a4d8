//! The server's background tasks, in one set the server owns: started on its runtime, ended
//! when it shuts down (each task watches the shutdown signal and gets the shutdown grace to
//! finish) or, at the latest, when the server is dropped.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinSet;

/// The background tasks of one server (or one store).
#[derive(Debug)]
pub(crate) struct Tasks {
    runtime: Handle,
    set: Mutex<JoinSet<()>>,
}

impl Tasks {
    /// An empty set whose tasks run on `runtime`.
    pub(crate) fn new(runtime: Handle) -> Self {
        Tasks {
            runtime,
            set: Mutex::new(JoinSet::new()),
        }
    }

    /// Starts `task`.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self
            .set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Reap the tasks that ended, so a long-lived server's set does not grow.
        while set.try_join_next().is_some() {}
        set.spawn_on(task, &self.runtime);
    }

    /// Aborts every task now (for an owner whose tasks hold a reference back to it, so that
    /// dropping the set alone would never happen).
    pub(crate) fn abort_all(&self) {
        if let Ok(mut set) = self.set.lock() {
            set.abort_all();
        }
    }

    /// Waits up to `grace` for every task to end, then aborts the rest.
    pub(crate) async fn end(&self, grace: Duration) {
        let mut set = std::mem::take(
            &mut *self
                .set
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

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
