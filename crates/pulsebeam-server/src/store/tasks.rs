//! The background work of a store: started on the runtime the store was built in, ended when
//! the store is dropped.

use std::future::Future;
use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::StartError;

/// Tasks one store owns: its long-lived ones (a purge, a subscriber) and the short ones its
/// calls hand off (finishing a poll whose caller left). Dropping the set aborts every task.
#[derive(Debug)]
pub(crate) struct Tasks {
    runtime: Handle,
    set: Mutex<JoinSet<()>>,
}

impl Tasks {
    /// A set on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime.
    pub(crate) fn new() -> Result<Self, StartError> {
        let runtime = Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        Ok(Tasks {
            runtime,
            set: Mutex::new(JoinSet::new()),
        })
    }

    /// Runs `task` until it ends or the set is dropped.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self
            .set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Finished tasks stay in the set until joined: reap them so it holds only live ones.
        while set.try_join_next().is_some() {}
        set.spawn_on(task, &self.runtime);
    }

    /// Aborts every task now (for owners whose tasks hold a reference back to them).
    pub(crate) fn abort_all(&self) {
        if let Ok(mut set) = self.set.lock() {
            set.abort_all();
        }
    }

    /// How many tasks are running.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let mut set = self
            .set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while set.try_join_next().is_some() {}
        set.len()
    }
}

/// A runtime for the stores of a server built outside tokio (to check a configuration, or in
/// a test): one worker thread, shut down without waiting when dropped.
pub(crate) struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    /// A new runtime.
    ///
    /// # Errors
    ///
    /// The I/O error of starting its thread.
    pub(crate) fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pulsebeam-store")
            .enable_all()
            .build()?;
        Ok(OwnRuntime(Some(runtime)))
    }

    /// Makes it the current runtime until the guard is dropped.
    pub(crate) fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.0.as_ref().map(tokio::runtime::Runtime::enter)
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Not waiting for its tasks, so it may go from inside another runtime too.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn outside_a_runtime_there_is_no_set() {
        assert!(matches!(Tasks::new(), Err(StartError::NoRuntime)));
    }

    #[tokio::test(start_paused = true)]
    async fn finished_tasks_are_reaped_and_dropping_the_set_ends_the_rest() {
        let tasks = Tasks::new().unwrap();
        tasks.spawn(async {});
        tokio::task::yield_now().await;
        let ended = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(Arc::clone(&ended));
        tasks.spawn(async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert_eq!(tasks.len(), 1, "the finished task is reaped");
        drop(tasks);
        tokio::task::yield_now().await;
        assert!(ended.load(Ordering::SeqCst), "the running task is aborted");
    }
}
