//! Work that waits until a connection has written what it was given: the acknowledgement of a
//! long-poll's answer is stored once the whole answer is in the kernel's send buffer, not when
//! hyper takes it for writing, so a server killed in between hands the batch out again instead
//! of losing it.
//!
//! Every connection's I/O is wrapped in [`WrittenIo`]; its requests carry the connection's
//! [`AfterWrite`]. A response body registers its work there when hyper takes its last frame.
//! hyper flushes the connection only once everything it buffered is written, so the next
//! successful flush runs the work. A connection that breaks before that never runs it.
//!
//! HTTP/1.1 gives this exactly: hyper takes the frame and flushes in one task. Over HTTP/2 a
//! response's frames go out from the connection's task, and a flush that completes just as
//! another stream registers its work may run it before that stream's last frame is written: the
//! window is that of one flush.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Work = Box<dyn FnOnce() + Send>;

/// One connection's work waiting for its writes, run on its next successful flush.
#[derive(Default)]
pub(crate) struct AfterWrite {
    waiting: AtomicBool,
    work: Mutex<Vec<Work>>,
}

impl AfterWrite {
    /// Runs `work` once what the connection has been given so far is written.
    pub(crate) fn push(&self, work: impl FnOnce() + Send + 'static) {
        self.work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(work));
        self.waiting.store(true, Ordering::Release);
    }

    /// Runs what is waiting: everything given to the connection before this flush is written.
    fn written(&self) {
        if !self.waiting.swap(false, Ordering::AcqRel) {
            return;
        }
        let work = std::mem::take(
            &mut *self
                .work
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for work in work {
            work();
        }
    }
}

/// Starts `future` now, on this thread, as far as it goes without waiting, then runs the rest
/// as a task: a store call it makes is issued before anything that comes after this call (a
/// client's next request among them) can issue its own.
pub(crate) fn start_now(future: impl Future<Output = ()> + Send + 'static) {
    let mut future = Box::pin(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if future.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(future);
    }
}

/// A connection's I/O that runs its [`AfterWrite`] work on each successful flush.
pub(crate) struct WrittenIo<T> {
    io: T,
    after: Arc<AfterWrite>,
}

impl<T> WrittenIo<T> {
    pub(crate) fn new(io: T, after: Arc<AfterWrite>) -> Self {
        WrittenIo { io, after }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WrittenIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WrittenIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.after.written();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn work_runs_on_the_flush_after_the_write_and_only_once() {
        let after = Arc::new(AfterWrite::default());
        let (client, mut server) = tokio::io::duplex(64);
        let mut io = WrittenIo::new(client, Arc::clone(&after));
        let ran = Arc::new(AtomicUsize::new(0));
        io.write_all(b"answer").await.unwrap();
        let counter = Arc::clone(&ran);
        after.push(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 0, "not before the flush");
        io.flush().await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        io.flush().await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "work runs once");
        let mut got = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"answer");
    }

    /// A connection whose flush fails (the client went away) never runs its work.
    struct Broken;

    impl AsyncWrite for Broken {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn work_of_a_connection_whose_flush_fails_never_runs() {
        let after = Arc::new(AfterWrite::default());
        let mut io = WrittenIo::new(Broken, Arc::clone(&after));
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        after.push(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        io.write_all(b"answer").await.unwrap();
        assert!(io.flush().await.is_err());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_future_that_needs_no_wait_completes_before_start_now_returns() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        start_now(async move { flag.store(true, Ordering::SeqCst) });
        assert!(done.load(Ordering::SeqCst));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let later = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&later);
        start_now(async move {
            let _ = rx.await;
            flag.store(true, Ordering::SeqCst);
        });
        assert!(!later.load(Ordering::SeqCst));
        tx.send(()).unwrap();
        for _ in 0..100 {
            if later.load(Ordering::SeqCst) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(later.load(Ordering::SeqCst), "the rest runs as a task");
    }
}
