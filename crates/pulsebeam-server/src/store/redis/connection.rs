//! One link to a Redis server or Redis Cluster, shared by everything a node keeps there
//! (mailboxes, revocations, usage) or reads from it (coturn's statistics): the clients, whether
//! they have connected, and the one way every script is called.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::{Client, Pool, SubscriberClient};
use fred::interfaces::{ClientLike, FunctionInterface, ServerInterface};
use fred::prelude::{Builder, Config as FredConfig, Error as FredError, ReconnectPolicy};
use fred::types::{ConnectHandle, MultipleKeys, Value};

use super::batch::{BatchFigures, Batches};
use super::scripts::{Library, ScriptCall};
use crate::config::{redact_url, StoreConfig};
use crate::store::{StartError, StoreError};

/// The longest any call waits for Redis, including for the first connection; then it answers
/// [`StoreError::Unavailable`].
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP keepalive on every connection: probes after this much silence, then every
/// [`KEEPALIVE_INTERVAL`], so that the kernel notices a peer that vanished without a word
/// (a NAT or firewall forgetting the connection) within about a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Calls to Redis a node has in flight at most; more wait for a turn (within their
/// [`COMMAND_TIMEOUT`]). A call in flight holds a few KiB (fred's command state, about 7 KiB
/// in a release build) that the allocator keeps once freed, so a burst of polls (clients
/// reconnecting after a restart) would otherwise leave the node that much larger per poll
/// that arrived at once. Redis answers a call in well under a millisecond, so this many in
/// flight is far more than one node's share of its throughput.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// Events a command client queues for its listeners (connection errors, reconnections): few,
/// and each of its eight event channels allocates this many slots when the client is made.
const EVENTS_CAPACITY: usize = 32;

/// Wake-ups the subscriber queues for the node's listener before the oldest are dropped (then
/// every local waiter checks its mailbox): bursts of mail to many polls of the node.
const MESSAGES_CAPACITY: usize = 4096;

/// A connection with a command unanswered this long is closed and reconnected (the command is
/// retried on the new one, within its caller's [`COMMAND_TIMEOUT`]).
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(3);
const UNRESPONSIVE_CHECK: Duration = Duration::from_millis(500);

/// A connection to Redis: a pool of clients for commands and one subscriber, connecting in the
/// background and reconnecting with backoff. Cheap to clone; every clone shares the clients, which
/// disconnect when the last clone is dropped.
///
/// Every script runs through one call helper, under one policy: wait for the first
/// connection, pick a client, `FCALL` its function in the scripts' library (loading the
/// library when Redis does not have it), all within two seconds, and any failure is
/// [`StoreError::Unavailable`]. A Redis that cannot load the library (before 7.0, or a user
/// without `FUNCTION`) runs each script by `EVALSHA` instead (loading it on `NOSCRIPT`).
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    subscriber: SubscriberClient,
    /// Whether the pool has connected once; until then calls wait for it (within their
    /// timeout), since a Cluster client cannot route a command before it has read the slot map.
    connected_once: AtomicBool,
    /// The tasks keeping the clients' connection tasks running, and those recording their
    /// connection errors.
    drivers: Vec<tokio::task::JoinHandle<()>>,
    /// The last connection error of any client, and when it came, for the message of a call
    /// that timed out (a wrong password, a refused certificate: the cause, not only "no
    /// answer").
    last_error: Arc<std::sync::Mutex<Option<(Instant, String)>>>,
    /// Where it connects, without a password.
    target: String,
    /// Whether a connection is being replaced (`replace_connection`).
    replacing: AtomicBool,
    /// `store.wait_replicas`: how many replicas must have a delivery before it is accepted.
    replication: Option<Replication>,
    /// Set once Redis showed it cannot run the scripts' library: every call is an `EVALSHA`.
    eval_only: AtomicBool,
    /// A permit per call to Redis in flight ([`MAX_IN_FLIGHT`]).
    in_flight: tokio::sync::Semaphore,
    /// Script calls made at the same moment on one client, written together.
    batches: Batches,
}

/// `WAIT replicas timeout_ms` after each delivery.
#[derive(Debug, Clone, Copy)]
struct Replication {
    replicas: i64,
    timeout_ms: i64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ending the drivers closes the sockets; no task is left behind.
        for driver in &self.drivers {
            driver.abort();
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// Connects to the Redis that `[store]` names: a standalone server, a unix socket, or the
    /// seeds of a Redis Cluster, with `store.pool_size` clients for commands.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime, [`StartError::NoUrl`] or
    /// [`StartError::BadUrl`] when the URLs cannot be used.
    pub fn new(config: &StoreConfig) -> Result<Self, StartError> {
        let fred = store_fred_config(config)?;
        let target = match &config.sentinel {
            Some(sentinel) => format!(
                "sentinel {} at {}",
                sentinel.master,
                sentinel.addresses.join(",")
            ),
            None => config
                .urls
                .iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(","),
        };
        let replication = (config.wait_replicas > 0).then(|| Replication {
            replicas: i64::from(config.wait_replicas),
            timeout_ms: i64::try_from(config.wait_timeout_ms).unwrap_or(i64::MAX),
        });
        Self::connect(fred, config.pool_size, target, replication)
    }

    /// Connects to the one Redis at `url` (`redis://…`, `unix://…`) with one client for commands.
    ///
    /// # Errors
    ///
    /// As [`RedisConnection::new`].
    pub fn from_url(url: &str) -> Result<Self, StartError> {
        Self::connect(url_fred_config(url)?, 1, redact_url(url), None)
    }

    fn connect(
        mut fred: FredConfig,
        pool_size: usize,
        target: String,
        replication: Option<Replication>,
    ) -> Result<Self, StartError> {
        // fred spawns its drivers on the current runtime.
        tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        fred.fail_fast = false;
        let mut builder = Builder::from_config(fred);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 2;
                c.tcp.nodelay = Some(true);
                c.tcp.keepalive = Some(
                    socket2::TcpKeepalive::new()
                        .with_time(KEEPALIVE_IDLE)
                        .with_interval(KEEPALIVE_INTERVAL),
                );
                c.unresponsive = fred::types::config::UnresponsiveConfig {
                    max_timeout: Some(UNRESPONSIVE_AFTER),
                    interval: UNRESPONSIVE_CHECK,
                };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = EVENTS_CAPACITY;
            });
        let failed = |e: FredError| StartError::Client(e.details().to_string());
        let pool = builder.build_pool(pool_size.max(1)).map_err(failed)?;
        // Only the subscriber's messages (wake-ups) come in bursts worth a deep buffer; each of
        // a client's eight event channels allocates its whole capacity up front.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = MESSAGES_CAPACITY);
        let subscriber = builder.build_subscriber_client().map_err(failed)?;
        let mut drivers: Vec<_> = pool
            .clients()
            .iter()
            .map(|client| keep_running(client.clone(), target.clone()))
            .collect();
        drivers.push(keep_running(subscriber.clone(), target.clone()));
        let last_error = Arc::new(std::sync::Mutex::new(None));
        for client in pool.clients() {
            drivers.push(record_errors(client, &last_error));
        }
        drivers.push(record_errors(&subscriber, &last_error));
        Ok(RedisConnection {
            inner: Arc::new(Inner {
                pool,
                subscriber,
                connected_once: AtomicBool::new(false),
                drivers,
                last_error,
                target,
                replacing: AtomicBool::new(false),
                replication,
                eval_only: AtomicBool::new(false),
                in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
                batches: Batches::new(pool_size.max(1), super::scripts::batch_function()),
            }),
        })
    }

    /// The subscriber client, for pub/sub.
    pub(crate) fn subscriber(&self) -> &SubscriberClient {
        &self.inner.subscriber
    }

    /// Runs a script call and reads its reply.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis does not answer within [`COMMAND_TIMEOUT`],
    /// fails, or answers what the script's declaration does not say.
    pub(crate) async fn run<C: ScriptCall>(&self, call: C) -> Result<C::Reply, StoreError> {
        let name = C::SPEC.name;
        let (keys, args) = call.into_parts();
        // One peer's scripts take one connection, so Redis runs them in the order this node
        // issued them: the acknowledgement of an answer, issued as it is written, comes before
        // the client's next poll, which only the answer can have prompted.
        let lane = keys.first().map(|key| self.lane_of(key));
        // In a box of its own, made once the call has its turn and freed when Redis answers:
        // inline, the call's future would size every caller's, such as a poll's registration,
        // kept while it runs.
        let _turn = self.turn(name).await?;
        let reply: Value = Box::pin(self.in_turn::<C>(lane, keys, args)).await?;
        C::read(reply).map_err(|err| {
            StoreError::Unavailable(format!(
                "redis answered {name} {err}; is every node running the same version?"
            ))
        })
    }

    /// The call of script `C` once it has its turn: on the pool's client number `lane`, within
    /// [`COMMAND_TIMEOUT`], and followed by `WAIT` where `store.wait_replicas` asks for it.
    fn in_turn<C: ScriptCall>(
        &self,
        lane: Option<usize>,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> impl Future<Output = Result<Value, StoreError>> + '_ {
        let name = C::SPEC.name;
        // Accepting mail waits for replicas when `store.wait_replicas` asks for it: `WAIT` on
        // the connection that ran the script covers its writes.
        let replicate = self
            .inner
            .replication
            .filter(|_| name == super::scripts::Deliver::SPEC.name);
        self.bounded_on(lane, name, move |client| async move {
            let reply = self.call::<C>(lane, client, keys, args).await?;
            if let Some(Replication { replicas, timeout_ms }) = replicate {
                let acknowledged: i64 = Box::pin(client.wait(replicas, timeout_ms)).await?;
                if acknowledged < replicas {
                    return Err(FredError::new(
                        fred::error::ErrorKind::Unknown,
                        format!(
                            "{acknowledged} of {replicas} replicas acknowledged the write within {timeout_ms} ms (store.wait_replicas)"
                        ),
                    ));
                }
            }
            Ok(reply)
        })
    }

    /// Runs script `C` on `client` (the pool's client number `lane`, in the batch open on
    /// it): its function, loading the library when Redis does not have it (a new Redis, one
    /// restarted without persistence, a new Cluster master, a `FUNCTION FLUSH`), or `EVALSHA`
    /// where Redis cannot run the library.
    async fn call<C: ScriptCall>(
        &self,
        lane: Option<usize>,
        client: &Client,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, FredError> {
        // Keys and values share their bytes: keeping them for a second try costs no copy.
        let keys = MultipleKeys::from(keys);
        let args = Value::Array(args);
        if !self.inner.eval_only.load(Ordering::Acquire) {
            let batches = &self.inner.batches;
            let script = C::SPEC.stem();
            let first = batches
                .fcall(
                    lane,
                    client,
                    C::function(),
                    script,
                    keys.clone(),
                    args.clone(),
                )
                .await;
            // The paths taken seldom are boxed where they are taken: inline, fred's state
            // for a call (some KiB) would size this future, which every call allocates and
            // moves into its box.
            match first {
                Err(err) if Library::missing(&err) => match Box::pin(self.load_library(client))
                    .await?
                {
                    Loaded::Yes => return Box::pin(client.fcall(C::function(), keys, args)).await,
                    Loaded::Cannot => {}
                },
                Err(err) if Library::refused(&err) => self.eval_only(&err),
                done => return done,
            }
        }
        Box::pin(C::script().evalsha_with_reload(client, keys, args)).await
    }

    /// Loads the scripts' library (on every master of a Cluster); a library already there
    /// (another node loaded it first) is loaded too.
    async fn load_library(&self, client: &Client) -> Result<Loaded, FredError> {
        let library = super::scripts::library();
        match client
            .function_load_cluster::<Value, _>(false, library.code.as_str())
            .await
        {
            Ok(_) => {
                tracing::info!(target = %self.inner.target, library = %library.name, "loaded the redis store's function library");
                Ok(Loaded::Yes)
            }
            Err(err) if err.details().contains("already exists") => Ok(Loaded::Yes),
            Err(err) if Library::refused(&err) => {
                self.eval_only(&err);
                Ok(Loaded::Cannot)
            }
            Err(err) => Err(err),
        }
    }

    /// Runs every script by `EVALSHA` from now on, saying why once.
    fn eval_only(&self, err: &FredError) {
        if !self.inner.eval_only.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                target = %self.inner.target,
                error = %err.details(),
                "redis cannot run the store's function library (it needs Redis 7.0 or newer and a user allowed FUNCTION LOAD and FCALL); running each script by EVALSHA instead, which costs Redis a few microseconds more per call"
            );
        }
    }

    /// Whether Redis answers `PING`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] saying why not.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("PING", |client| client.ping::<String>(None))
            .await
            .map(|_| ())
    }

    /// A setting of the Redis server (`CONFIG GET`; on a Cluster, of one of its nodes), or
    /// `None` when the server has no such setting.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis cannot be reached or refuses `CONFIG` (managed
    /// services often do).
    pub(crate) async fn config_get(&self, name: &str) -> Result<Option<String>, StoreError> {
        let command = fred::types::CustomCommand::new_static(
            "CONFIG",
            fred::types::ClusterHash::Random,
            false,
        );
        let value: Value = self
            .bounded("CONFIG GET", |client| {
                client.custom(command, vec!["GET".to_owned(), name.to_owned()])
            })
            .await?;
        Ok(value
            .into_array()
            .into_iter()
            .nth(1)
            .and_then(Value::into_string))
    }

    /// Which master serves each hash slot of the Cluster (`CLUSTER SLOTS`, asked of any one
    /// master): `(first slot, last slot, master)` ranges, the master named by its node id (or
    /// `host:port` where Redis gives no id).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis cannot be reached or answers something else.
    pub(crate) async fn cluster_slots(&self) -> Result<Vec<(u16, u16, String)>, StoreError> {
        let command = fred::types::CustomCommand::new_static(
            "CLUSTER",
            fred::types::ClusterHash::Random,
            false,
        );
        let value: Value = self
            .bounded("CLUSTER SLOTS", |client| {
                client.custom(command, vec!["SLOTS".to_owned()])
            })
            .await?;
        parse_cluster_slots(value).ok_or_else(|| {
            StoreError::Unavailable("redis answered CLUSTER SLOTS with something else".into())
        })
    }

    /// Waits for the first connection; after it, returns at once.
    async fn ready(&self) {
        if self.inner.connected_once.load(Ordering::Acquire) {
            return;
        }
        if self.inner.pool.wait_for_connect().await.is_ok() {
            self.inner.connected_once.store(true, Ordering::Release);
        }
    }

    /// The call policy: ready, pick a client, run `op`, all within [`COMMAND_TIMEOUT`]; for
    /// the few plain commands (not scripts) the stores send.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when Redis fails or does not answer in time.
    pub(crate) async fn bounded<'a, T, F, Fut>(&'a self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&'a Client) -> Fut,
        Fut: Future<Output = Result<T, FredError>> + 'a,
    {
        let _turn = self.turn(what).await?;
        self.bounded_on(None, what, op).await
    }

    /// Waits for a turn among the calls in flight ([`MAX_IN_FLIGHT`]), at most
    /// [`COMMAND_TIMEOUT`].
    async fn turn(&self, what: &str) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.inner.in_flight.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(StoreError::Unavailable(
                "the redis connection is closing".into(),
            )),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what} waited {} s for one of the {MAX_IN_FLIGHT} calls to redis in flight to end; redis answers too slowly for this load",
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }

    /// How many calls to Redis are in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        MAX_IN_FLIGHT - self.inner.in_flight.available_permits()
    }

    /// The pool's client that carries the calls on `key`.
    fn lane_of(&self, key: &str) -> usize {
        let clients = u64::try_from(self.inner.pool.clients().len().max(1)).unwrap_or(1);
        usize::try_from(affinity_of(key) % clients).unwrap_or(0)
    }

    /// Script calls sent so far and the `FCALL`s that carried them.
    pub(crate) fn batch_figures(&self) -> BatchFigures {
        self.inner.batches.figures()
    }

    /// [`Self::bounded`] on the pool's client number `lane` (any one for `None`).
    async fn bounded_on<'a, T, F, Fut>(
        &'a self,
        lane: Option<usize>,
        what: &str,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(&'a Client) -> Fut,
        Fut: Future<Output = Result<T, FredError>> + 'a,
    {
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        let timed_out = || {
            StoreError::Unavailable(format!(
                "redis did not answer {what} within {} s{}",
                COMMAND_TIMEOUT.as_secs(),
                self.recent_error()
                    .map(|err| format!(" (connecting failed: {err})"))
                    .unwrap_or_default()
            ))
        };
        if tokio::time::timeout_at(deadline, self.ready())
            .await
            .is_err()
        {
            return Err(timed_out());
        }
        let clients = self.inner.pool.clients();
        let client = lane
            .and_then(|lane| clients.get(lane))
            .unwrap_or_else(|| self.inner.pool.next());
        match tokio::time::timeout_at(deadline, op(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if *err.kind() == fred::error::ErrorKind::Timeout {
                    self.replace_connection(client);
                }
                Err(StoreError::Unavailable(format!("redis: {}", err.details())))
            }
            Err(_) => {
                self.replace_connection(client);
                Err(timed_out())
            }
        }
    }

    /// The last connection error, if it came within the last [`RECENT_ERROR`].
    fn recent_error(&self) -> Option<String> {
        let last = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < RECENT_ERROR)
            .map(|(_, err)| err.clone())
    }

    /// Reconnects `client`, whose command went unanswered: its connection may be dead
    /// without the kernel knowing (fred's own unresponsive check only fires when nothing has
    /// been written for a while, which never happens under steady traffic). One at a time; the
    /// reconnection is bounded by [`COMMAND_TIMEOUT`] and owns nothing once done.
    fn replace_connection(&self, client: &Client) {
        if self.inner.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(target = %self.inner.target, "a redis connection left a command unanswered; reconnecting it");
        let client = client.clone();
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.force_reconnection()).await;
            if let Some(inner) = inner.upgrade() {
                inner.replacing.store(false, Ordering::Release);
            }
        });
    }
}

/// Whether the scripts' library could be loaded.
enum Loaded {
    /// It is there now.
    Yes,
    /// Redis cannot run it: scripts run by `EVALSHA`.
    Cannot,
}

/// Runs `client`'s connection task, and starts it again whenever it ends with an error: fred
/// ends it for good on some routing failures (an `ASKING` that cannot be sent during a Cluster
/// slot migration: "Max attempts reached"), after which every command on that client would
/// time out. Aborting the returned task ends the connection task too.
fn keep_running<C: ClientLike + Send + 'static>(
    client: C,
    target: String,
) -> tokio::task::JoinHandle<()> {
    /// Aborts the connection task when the keeper is aborted or dropped.
    struct Driver(ConnectHandle);
    impl Drop for Driver {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    tokio::spawn(async move {
        loop {
            let mut driver = Driver(client.connect());
            let ended = (&mut driver.0).await;
            match ended {
                // Ended on purpose (quit) or cancelled.
                Ok(Ok(())) => return,
                Ok(Err(err)) => {
                    tracing::warn!(target = %target, error = %err.details(), "a redis client's connection task stopped; starting it again");
                }
                Err(err) if err.is_cancelled() => return,
                Err(err) => {
                    tracing::warn!(target = %target, error = %err, "a redis client's connection task failed; starting it again");
                }
            }
            tokio::time::sleep(RESTART_DELAY).await;
        }
    })
}

/// Records `client`'s connection errors into `last`, until the client is gone.
fn record_errors<C: fred::interfaces::EventInterface>(
    client: &C,
    last: &Arc<std::sync::Mutex<Option<(Instant, String)>>>,
) -> tokio::task::JoinHandle<()> {
    let mut errors = client.error_rx();
    let last = Arc::downgrade(last);
    tokio::spawn(async move {
        loop {
            match errors.recv().await {
                Ok((err, server)) => {
                    let Some(last) = last.upgrade() else { return };
                    let text = match server {
                        Some(server) => format!("{server}: {}", err.details()),
                        None => err.details().to_owned(),
                    };
                    *last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((Instant::now(), text));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

/// How long a connection error explains a call that timed out.
const RECENT_ERROR: Duration = Duration::from_secs(30);

/// How long a client whose connection task stopped waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_millis(100);

/// Which of the pool's connections carries the calls on `key` (FNV-1a: stable, spread evenly).
fn affinity_of(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads a `CLUSTER SLOTS` reply: `[[first, last, [host, port, id, …], replicas…], …]`.
fn parse_cluster_slots(value: Value) -> Option<Vec<(u16, u16, String)>> {
    value
        .into_array()
        .into_iter()
        .map(|range| {
            let mut fields = range.into_array().into_iter();
            let first = u16::try_from(fields.next()?.as_i64()?).ok()?;
            let last = u16::try_from(fields.next()?.as_i64()?).ok()?;
            let mut master = fields.next()?.into_array().into_iter();
            let host = master.next()?.into_string()?;
            let port = master.next()?.as_i64()?;
            let id = master
                .next()
                .and_then(Value::into_string)
                .unwrap_or_else(|| format!("{host}:{port}"));
            Some((first, last, id))
        })
        .collect()
}

/// A random id for this node (its wake-up channel, its lease), unique among a deployment's nodes.
pub(crate) fn node_id() -> String {
    crate::random_id::random_id()
}

fn bad_url(url: &str, err: &FredError) -> StartError {
    StartError::BadUrl {
        url: redact_url(url),
        problem: err.details().to_string(),
    }
}

/// A standalone or unix-socket URL as fred reads it.
fn url_fred_config(url: &str) -> Result<FredConfig, StartError> {
    match url
        .strip_prefix("unix://")
        .or_else(|| url.strip_prefix("redis+unix://"))
    {
        Some(path) => FredConfig::from_url_unix(&format!("redis+unix://{path}")),
        None => FredConfig::from_url_centralized(url),
    }
    .map_err(|e| bad_url(url, &e))
}

/// `[store]` as fred reads it: the URLs (the first, or every seed of a Cluster) or the
/// sentinels, and TLS.
fn store_fred_config(config: &StoreConfig) -> Result<FredConfig, StartError> {
    let mut fred = store_servers(config)?;
    if let Some(files) = &config.tls {
        fred.tls = Some(super::tls::connector(files)?.into());
    }
    Ok(fred)
}

fn store_servers(config: &StoreConfig) -> Result<FredConfig, StartError> {
    if let Some(sentinel) = &config.sentinel {
        // The URL, if any, gives the password, database and TLS; the sentinels the servers.
        let mut fred = match config.urls.first() {
            Some(url) => FredConfig::from_url_centralized(url).map_err(|e| bad_url(url, &e))?,
            None => FredConfig::default(),
        };
        fred.server = fred::types::config::ServerConfig::Sentinel {
            hosts: sentinel
                .hosts()
                .into_iter()
                .map(|(host, port)| fred::types::config::Server::new(host, port))
                .collect(),
            service_name: sentinel.master.clone(),
            // The sentinels' own credentials; the URL's are the data servers'.
            username: sentinel.username.clone(),
            password: sentinel.password.clone(),
        };
        return Ok(fred);
    }
    let first = config.urls.first().ok_or(StartError::NoUrl)?;
    if !config.cluster {
        return url_fred_config(first);
    }
    let mut seeds = Vec::with_capacity(config.urls.len());
    let mut base = None;
    for url in &config.urls {
        let parsed = FredConfig::from_url_centralized(url).map_err(|e| bad_url(url, &e))?;
        seeds.extend(parsed.server.hosts());
        base.get_or_insert(parsed);
    }
    let mut fred = base.ok_or(StartError::NoUrl)?;
    fred.server = fred::types::config::ServerConfig::Clustered {
        hosts: seeds,
        policy: Default::default(),
    };
    Ok(fred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_there_is_no_connection() {
        let err = RedisConnection::from_url("redis://127.0.0.1:1").unwrap_err();
        assert_eq!(err, StartError::NoRuntime);
    }

    /// What every script call allocates and moves into its box while it runs: fred's state
    /// for a command (some KiB) is in boxes of its own, on the paths that use it.
    #[tokio::test]
    async fn a_script_calls_box_is_small() {
        let connection = RedisConnection::from_url("redis://127.0.0.1:1").unwrap();
        let call = super::super::scripts::GetBinding {
            binding: "b".into(),
        };
        let (keys, args) = call.into_parts();
        let size = std::mem::size_of_val(&connection.in_turn::<super::super::scripts::GetBinding>(
            Some(0),
            keys,
            args,
        ));
        println!("a script call's boxed future: {size} bytes");
        // 7,880 bytes in a release build with fred's state inline; 936 without.
        assert!(
            size <= 2_048,
            "a script call's boxed future is {size} bytes"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_beyond_the_bound_wait_for_a_turn() {
        // Nothing listens on port 1: every call holds its turn until its timeout.
        let connection = RedisConnection::from_url("redis://127.0.0.1:1").unwrap();
        let calls: Vec<_> = (0..MAX_IN_FLIGHT + 20)
            .map(|_| {
                let connection = connection.clone();
                tokio::spawn(async move { connection.ping().await })
            })
            .collect();
        let start = Instant::now();
        while connection.in_flight() < MAX_IN_FLIGHT {
            assert!(
                start.elapsed() < COMMAND_TIMEOUT,
                "{}",
                connection.in_flight()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(connection.in_flight(), MAX_IN_FLIGHT);
        for call in calls {
            let err = call.await.unwrap().unwrap_err();
            assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        }
        assert_eq!(connection.in_flight(), 0);
    }

    #[tokio::test]
    async fn only_the_subscriber_keeps_a_deep_event_buffer() {
        let config = StoreConfig {
            urls: vec!["redis://127.0.0.1:1".into()],
            pool_size: 3,
            ..StoreConfig::default()
        };
        let connection = RedisConnection::new(&config).unwrap();
        let pool = connection.inner.pool.clients();
        assert_eq!(pool.len(), 3);
        for client in pool {
            assert_eq!(
                client.perf_config().broadcast_channel_capacity,
                EVENTS_CAPACITY
            );
        }
        assert_eq!(
            connection
                .subscriber()
                .perf_config()
                .broadcast_channel_capacity,
            MESSAGES_CAPACITY
        );
    }

    #[tokio::test]
    async fn unusable_urls_are_refused_without_their_password() {
        let err = RedisConnection::from_url("redis://user:hunter2@example:port").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StartError::BadUrl { .. }), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let mut config = StoreConfig::default();
        assert_eq!(
            RedisConnection::new(&config).unwrap_err(),
            StartError::NoUrl
        );
        config.cluster = true;
        config.urls = vec!["redis://127.0.0.1:1".into(), "nonsense".into()];
        assert!(matches!(
            RedisConnection::new(&config).unwrap_err(),
            StartError::BadUrl { .. }
        ));
    }

    #[tokio::test]
    async fn an_unreachable_redis_answers_unavailable_within_the_timeout() {
        // Port 1 on loopback: nothing listens there.
        let connection = RedisConnection::from_url("redis://127.0.0.1:1").unwrap();
        let start = tokio::time::Instant::now();
        let err = connection.ping().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(start.elapsed() < COMMAND_TIMEOUT + Duration::from_secs(1));
    }

    #[test]
    fn cluster_slots_replies_name_each_ranges_master() {
        let master = |host: &str, port: i64, id: Option<&str>| {
            let mut fields = vec![Value::from(host), Value::Integer(port)];
            fields.extend(id.map(Value::from));
            Value::Array(fields)
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Integer(0),
                Value::Integer(5460),
                master("127.0.0.1", 7000, Some("a1")),
                master("127.0.0.1", 7003, Some("r1")),
            ]),
            Value::Array(vec![
                Value::Integer(5461),
                Value::Integer(16383),
                master("10.0.0.2", 7001, None),
            ]),
        ]);
        assert_eq!(
            parse_cluster_slots(reply).unwrap(),
            [
                (0, 5460, "a1".to_owned()),
                (5461, 16383, "10.0.0.2:7001".to_owned())
            ]
        );
        assert!(parse_cluster_slots(Value::Array(vec![Value::Integer(1)])).is_none());
        assert_eq!(
            parse_cluster_slots(Value::Array(Vec::new())),
            Some(Vec::new())
        );
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
