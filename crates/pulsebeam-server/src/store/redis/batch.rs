//! Script calls that a node makes at the same moment on one connection, sent to Redis as one
//! `FCALL`: one system call of the node, one command for Redis to parse and one reply to
//! write, where each call used to cost its own.
//!
//! fred flushes its socket after every `FCALL`, even when more commands are queued behind it
//! (and in a pipeline): at full rate a node made a `writev` per call, two per relayed message,
//! as many as to all of its clients. So concurrent calls are gathered here instead: the first
//! call on a connection opens a batch and spawns the task that sends it; that task first lets
//! the runtime run the tasks it has ready, whose calls on the connection join the batch. Then it
//! sends the batch's calls as one call of the library's `batch` function (`lua/batch.lua`),
//! which runs them in order and answers each one's reply or error; a batch of one goes as the
//! plain call. On a Redis Cluster one `FCALL` may only touch one slot, so a batch goes as one
//! `FCALL` per slot among its calls.
//!
//! A connection's calls reach Redis in the order they were made, which the store relies on
//! (the acknowledgement of an answer before the client's next poll): a batch keeps its calls'
//! order, and a lane is held while its batch is handed to fred, so the next batch cannot
//! overtake it. At low load a batch holds one call and costs a spawned task more than a direct
//! call; a call waits no longer than the tasks the runtime had ready when it was made.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use fred::clients::Client;
use fred::error::ErrorKind;
use fred::interfaces::{ClientLike, FunctionInterface};
use fred::prelude::Error as FredError;
use fred::types::{Key, MultipleKeys, Value};
use tokio::sync::oneshot;

/// Calls one `FCALL` of the batch function carries at most: Redis runs them without a break,
/// so a long batch would hold every other client back.
const MAX_CALLS_PER_FCALL: usize = 32;

/// A call handed to fred, its reply still to come.
type Reply = Pin<Box<dyn Future<Output = Result<Value, FredError>> + Send>>;

/// What a caller gets back from the task that sent its batch.
enum Sent {
    /// Its reply.
    Answered(Result<Value, FredError>),
    /// Its call went alone; the reply comes through this.
    Queued(Reply),
}

/// A call waiting in an open batch.
struct Call {
    /// The script's function, for a call that goes alone.
    function: &'static str,
    /// The script's name, for the batch function.
    script: &'static str,
    keys: Vec<Key>,
    args: Vec<Value>,
    sent: oneshot::Sender<Sent>,
}

/// One connection's open batch, if any.
#[derive(Default)]
struct Lane {
    open: Mutex<Option<Vec<Call>>>,
}

/// The batches of a pool's connections, one lane per client, and figures of what they sent.
pub(super) struct Batches {
    lanes: Box<[Arc<Lane>]>,
    /// The library's batch function.
    batch_function: &'static str,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    fcalls: AtomicU64,
}

/// Script calls sent through [`Batches`], and the `FCALL`s that carried them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchFigures {
    /// Script calls made.
    pub calls: u64,
    /// `FCALL`s sent for them (a batched `FCALL` carries several).
    pub fcalls: u64,
}

impl Batches {
    /// Batches for a pool of `clients` connections, sent through `batch_function`.
    pub(super) fn new(clients: usize, batch_function: &'static str) -> Self {
        Batches {
            lanes: (0..clients).map(|_| Arc::new(Lane::default())).collect(),
            batch_function,
            counters: Arc::default(),
        }
    }

    /// `FCALL function` (script `script`) on `client`, the pool's client number `lane`, in the
    /// batch open on it; without a lane, on its own.
    ///
    /// # Errors
    ///
    /// fred's error for the call or for its batch, the error a call raised in Redis, or a
    /// cancelled call when the runtime ended before the batch was sent.
    pub(super) async fn fcall(
        &self,
        lane: Option<usize>,
        client: &Client,
        function: &'static str,
        script: &'static str,
        keys: MultipleKeys,
        args: Value,
    ) -> Result<Value, FredError> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let Some(lane) = lane.and_then(|lane| self.lanes.get(lane)) else {
            self.counters.fcalls.fetch_add(1, Ordering::Relaxed);
            // Boxed: inline, fred's state for a call would size every caller's future.
            return Box::pin(client.fcall(function, keys, args)).await;
        };
        let (sent, reply) = oneshot::channel();
        let call = Call {
            function,
            script,
            keys: keys.inner(),
            args: match args {
                Value::Array(args) => args,
                arg => vec![arg],
            },
            sent,
        };
        let opened = {
            let mut open = lane.open.lock().unwrap_or_else(PoisonError::into_inner);
            match open.as_mut() {
                Some(batch) => {
                    batch.push(call);
                    false
                }
                None => {
                    *open = Some(vec![call]);
                    true
                }
            }
        };
        if opened {
            let lane = Arc::clone(lane);
            let client = client.clone();
            let batch_function = self.batch_function;
            let counters = Arc::clone(&self.counters);
            tokio::spawn(async move {
                // Behind the tasks the runtime has ready: their calls join the batch.
                tokio::task::yield_now().await;
                let batched = lane.send(&client, batch_function, &counters);
                // Each as it comes: on a Cluster they go to several masters, and one slower
                // than the others holds back no one else's answers.
                let answered = batched
                    .into_iter()
                    .map(|(reply, senders)| async move { answer(senders, reply.await) });
                futures_util::future::join_all(answered).await;
            });
        }
        match reply.await {
            Ok(Sent::Answered(answer)) => answer,
            Ok(Sent::Queued(reply)) => reply.await,
            Err(_) => Err(FredError::new(
                ErrorKind::Canceled,
                "the node stopped before this call was sent to redis",
            )),
        }
    }

    /// Calls and `FCALL`s so far.
    pub(crate) fn figures(&self) -> BatchFigures {
        BatchFigures {
            calls: self.counters.calls.load(Ordering::Relaxed),
            fcalls: self.counters.fcalls.load(Ordering::Relaxed),
        }
    }
}

impl Lane {
    /// Hands the open batch to fred, an `FCALL` per slot among its calls (one for a Redis that
    /// is not a Cluster); a call alone gets its own reply to wait for, and the batched `FCALL`s
    /// come back with their callers, for this task to answer.
    fn send(
        &self,
        client: &Client,
        batch_function: &'static str,
        counters: &Counters,
    ) -> Vec<(Reply, Vec<oneshot::Sender<Sent>>)> {
        // Held until every call is queued on the connection: the next batch waits for it.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(batch) = open.take() else {
            return Vec::new();
        };
        // A first poll queues the command and registers no one; whoever awaits it next polls
        // it with its own waker.
        let mut context = Context::from_waker(Waker::noop());
        let mut batched = Vec::new();
        for group in groups(batch, client.is_clustered()) {
            counters.fcalls.fetch_add(1, Ordering::Relaxed);
            if group.len() == 1 {
                if let Some(call) = group.into_iter().next() {
                    let sent = start(client, call.function, call.keys, call.args, &mut context);
                    // A caller that gave up drops the reply; Redis runs the call all the same.
                    let _ = call.sent.send(sent);
                }
                continue;
            }
            // Sized once: growing them call by call would leave the allocator blocks of every
            // size on the way, pages a burst of calls (polls arriving at once) keeps.
            let mut keys = Vec::with_capacity(group.iter().map(|call| call.keys.len()).sum());
            let mut args = Vec::with_capacity(group.iter().map(|call| 3 + call.args.len()).sum());
            let mut senders = Vec::with_capacity(group.len());
            for call in group {
                args.push(Value::from(call.script));
                args.push(Value::Integer(i64::try_from(call.keys.len()).unwrap_or(0)));
                args.push(Value::Integer(i64::try_from(call.args.len()).unwrap_or(0)));
                keys.extend(call.keys);
                args.extend(call.args);
                senders.push(call.sent);
            }
            match start(client, batch_function, keys, args, &mut context) {
                Sent::Answered(done) => answer(senders, done),
                Sent::Queued(reply) => batched.push((reply, senders)),
            }
        }
        batched
    }
}

/// Queues `FCALL function` on `client` by polling it once (with `context`, which registers no
/// one): its answer if fred gave it at once, else the reply to await.
fn start(
    client: &Client,
    function: &'static str,
    keys: Vec<Key>,
    args: Vec<Value>,
    context: &mut Context<'_>,
) -> Sent {
    let client = client.clone();
    let mut reply: Reply = Box::pin(async move { client.fcall(function, keys, args).await });
    match reply.as_mut().poll(context) {
        Poll::Ready(answer) => Sent::Answered(answer),
        Poll::Pending => Sent::Queued(reply),
    }
}

/// The batch's calls grouped for `FCALL`s in the order they were made: on a Cluster one group
/// per slot (a peer's keys share one), and at most [`MAX_CALLS_PER_FCALL`] a group.
fn groups(batch: Vec<Call>, clustered: bool) -> Vec<Vec<Call>> {
    let mut groups: Vec<(u16, Vec<Call>)> = Vec::new();
    for call in batch {
        let slot = if clustered {
            call.keys.first().map_or(0, Key::cluster_hash)
        } else {
            0
        };
        match groups
            .iter_mut()
            .rev()
            .find(|(of, _)| *of == slot)
            .filter(|(_, calls)| calls.len() < MAX_CALLS_PER_FCALL)
        {
            Some((_, calls)) => calls.push(call),
            None => groups.push((slot, vec![call])),
        }
    }
    groups.into_iter().map(|(_, calls)| calls).collect()
}

/// Answers each caller of a batched `FCALL` from its reply: two entries per call, 1 and its
/// reply or 0 and its error.
fn answer(senders: Vec<oneshot::Sender<Sent>>, reply: Result<Value, FredError>) {
    let values = match reply {
        Ok(values) => values.into_array(),
        Err(err) => {
            for sent in senders {
                let _ = sent.send(Sent::Answered(Err(err.clone())));
            }
            return;
        }
    };
    let mut values = values.into_iter();
    for sent in senders {
        let answer = match (values.next(), values.next()) {
            (Some(Value::Integer(1)), Some(reply)) => Ok(reply),
            (Some(Value::Integer(0)), Some(err)) => Err(FredError::new(
                ErrorKind::Unknown,
                err.into_string().unwrap_or_default(),
            )),
            _ => Err(FredError::new(
                ErrorKind::Protocol,
                "redis answered a batch of calls with something else than a reply per call; is every node running the same version?",
            )),
        };
        let _ = sent.send(Sent::Answered(answer));
    }
}

/// Against the test Redis of `scripts/redis.sh` (and its Cluster), when their URLs are set. On
/// one thread, so that what a test makes in one go all joins one batch (on several, the task
/// sending a batch may run on another thread while calls are still being made).
#[cfg(test)]
mod tests {
    use fred::interfaces::LuaInterface;
    use futures_util::future::join_all;

    use super::super::connection::RedisConnection;
    use super::super::scripts::{GetBinding, PutBinding};
    use crate::config::StoreConfig;
    use crate::store::StoreError;

    fn unique(what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("pbtest-batch-{what}-{}-{nanos}", std::process::id())
    }

    fn put(binding: &str, credential: &str) -> PutBinding {
        PutBinding {
            binding: binding.to_owned(),
            credential: credential.to_owned(),
            keep_ms: 60_000,
        }
    }

    async fn get(connection: &RedisConnection, binding: String) -> Result<String, StoreError> {
        let got = connection.run(GetBinding { binding }).await?;
        Ok(got.credential)
    }

    /// Calls made in one go on one connection: one `FCALL`, and each its own reply, in order.
    #[tokio::test]
    async fn calls_made_together_go_as_one_fcall_each_with_its_reply() {
        let Ok(url) = std::env::var("PULSEBEAM_TEST_REDIS_URL") else {
            eprintln!("SKIP calls_made_together_go_as_one_fcall_each_with_its_reply: PULSEBEAM_TEST_REDIS_URL is not set");
            return;
        };
        let connection = RedisConnection::from_url(&url).unwrap();
        let base = unique("together");
        // Connected, and the library loaded: every call below finds it.
        get(&connection, base.clone()).await.unwrap();
        let before = connection.batch_figures();

        let puts = (0..20).map(|i| connection.run(put(&format!("{base}:{i}"), &format!("c{i}"))));
        for put in join_all(puts).await {
            put.unwrap();
        }
        let gets = (0..20).map(|i| get(&connection, format!("{base}:{i}")));
        let got: Vec<String> = join_all(gets)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..20).map(|i| format!("c{i}")).collect::<Vec<_>>());
        let after = connection.batch_figures();
        assert_eq!(after.calls - before.calls, 40);
        assert_eq!(after.fcalls - before.fcalls, 2, "{before:?} {after:?}");

        // In one batch, one key written three times and read: the calls run in order.
        let key = format!("{base}:order");
        let (first, second, third, read) = tokio::join!(
            connection.run(put(&key, "one")),
            connection.run(put(&key, "two")),
            connection.run(put(&key, "three")),
            get(&connection, key.clone())
        );
        first.unwrap();
        second.unwrap();
        third.unwrap();
        assert_eq!(read.unwrap(), "three");
        assert_eq!(connection.batch_figures().fcalls - after.fcalls, 1);
    }

    /// A call that fails in Redis fails alone: the calls before and after it in its batch
    /// answer and keep what they wrote.
    #[tokio::test]
    async fn a_call_that_fails_in_a_batch_fails_alone() {
        let Ok(url) = std::env::var("PULSEBEAM_TEST_REDIS_URL") else {
            eprintln!("SKIP a_call_that_fails_in_a_batch_fails_alone: PULSEBEAM_TEST_REDIS_URL is not set");
            return;
        };
        let connection = RedisConnection::from_url(&url).unwrap();
        let base = unique("fails");
        let wrong = format!("{base}:hash");
        connection
            .bounded("test setup", |client| async move {
                let script =
                    "redis.call('HSET', KEYS[1], 'f', 'v') redis.call('EXPIRE', KEYS[1], 60)";
                client.eval::<(), _, _, _>(script, vec![wrong], ()).await
            })
            .await
            .unwrap();
        // The library loaded, so that the batch below runs as one (a batch that finds no
        // library has each call retried on its own once it is loaded).
        get(&connection, format!("{base}:a")).await.unwrap();
        let before = connection.batch_figures();
        let (a, failed, c) = tokio::join!(
            connection.run(put(&format!("{base}:a"), "a")),
            get(&connection, format!("{base}:hash")),
            connection.run(put(&format!("{base}:c"), "c")),
        );
        assert_eq!(connection.batch_figures().fcalls - before.fcalls, 1);
        a.unwrap();
        c.unwrap();
        let err = failed.unwrap_err().to_string();
        assert!(err.contains("WRONGTYPE"), "{err}");
        assert_eq!(get(&connection, format!("{base}:a")).await.unwrap(), "a");
        assert_eq!(get(&connection, format!("{base}:c")).await.unwrap(), "c");
    }

    /// On a Cluster a batch goes as one `FCALL` per slot: calls on two slots, two `FCALL`s,
    /// every call answered (none refused for touching another slot's keys).
    #[tokio::test]
    async fn on_a_cluster_a_batch_goes_as_one_fcall_per_slot() {
        let Ok(urls) = std::env::var("PULSEBEAM_TEST_REDIS_CLUSTER_URLS") else {
            eprintln!("SKIP on_a_cluster_a_batch_goes_as_one_fcall_per_slot: PULSEBEAM_TEST_REDIS_CLUSTER_URLS is not set");
            return;
        };
        let config = StoreConfig {
            urls: urls.split(',').map(str::to_owned).collect(),
            cluster: true,
            pool_size: 1,
            ..StoreConfig::default()
        };
        let connection = RedisConnection::new(&config).unwrap();
        let base = unique("cluster");
        let (one, two) = (format!("{{{base}-one}}"), format!("{{{base}-two}}"));
        assert_ne!(
            fred::util::redis_keyslot(one.as_bytes()),
            fred::util::redis_keyslot(two.as_bytes())
        );
        get(&connection, one.clone()).await.unwrap();
        let before = connection.batch_figures();
        let puts = (0..12).map(|i| {
            let tag = if i % 2 == 0 { &one } else { &two };
            connection.run(put(&format!("{tag}:{i}"), &format!("c{i}")))
        });
        for put in join_all(puts).await {
            put.unwrap();
        }
        let after = connection.batch_figures();
        assert_eq!(after.calls - before.calls, 12);
        assert_eq!(after.fcalls - before.fcalls, 2, "{before:?} {after:?}");
        for i in 0..12 {
            let tag = if i % 2 == 0 { &one } else { &two };
            assert_eq!(
                get(&connection, format!("{tag}:{i}")).await.unwrap(),
                format!("c{i}")
            );
        }
    }
}
