//! One link to a Redis server or Redis Cluster, shared by everything a node keeps there
//! (mailboxes, revocations, usage) or reads from it (coturn's statistics): the clients, whether
//! they have connected, and the one way every script is called.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, Pool, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::prelude::{Builder, Config as FredConfig, Error as FredError, ReconnectPolicy};
use fred::types::{ConnectHandle, Value};

use super::scripts::ScriptCall;
use crate::config::{redact_url, StoreConfig};
use crate::store::{StartError, StoreError};

/// The longest any call waits for Redis, including for the first connection; then it answers
/// [`StoreError::Unavailable`].
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to Redis: a pool of clients for commands and one subscriber, connecting in the
/// background and reconnecting with backoff. Cheap to clone; every clone shares the clients, which
/// disconnect when the last clone is dropped.
///
/// Every script runs through one call helper, under one policy: wait for the first
/// connection, pick a client, `EVALSHA` (loading the script on `NOSCRIPT`), all within two
/// seconds, and any failure is [`StoreError::Unavailable`].
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
    /// The tasks driving the clients' connections.
    drivers: Vec<ConnectHandle>,
    /// Where it connects, without a password.
    target: String,
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
        let target = config
            .urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",");
        Self::connect(fred, config.pool_size, target)
    }

    /// Connects to the one Redis at `url` (`redis://…`, `unix://…`) with one client for commands.
    ///
    /// # Errors
    ///
    /// As [`RedisConnection::new`].
    pub fn from_url(url: &str) -> Result<Self, StartError> {
        Self::connect(url_fred_config(url)?, 1, redact_url(url))
    }

    fn connect(mut fred: FredConfig, pool_size: usize, target: String) -> Result<Self, StartError> {
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
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = 4096;
            });
        let failed = |e: FredError| StartError::Client(e.details().to_string());
        let pool = builder.build_pool(pool_size.max(1)).map_err(failed)?;
        let subscriber = builder.build_subscriber_client().map_err(failed)?;
        let mut drivers = pool.connect_pool();
        drivers.push(subscriber.connect());
        Ok(RedisConnection {
            inner: Arc::new(Inner {
                pool,
                subscriber,
                connected_once: AtomicBool::new(false),
                drivers,
                target,
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
        let reply: Value = self
            .bounded(name, |client| {
                C::script().evalsha_with_reload(client, keys, args)
            })
            .await?;
        C::parse(reply.into_array()).map_err(|err| {
            StoreError::Unavailable(format!(
                "redis answered {name} {err}; is every node running the same version?"
            ))
        })
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

    /// Waits for the first connection; after it, returns at once.
    async fn ready(&self) {
        if self.inner.connected_once.load(Ordering::Acquire) {
            return;
        }
        if self.inner.pool.wait_for_connect().await.is_ok() {
            self.inner.connected_once.store(true, Ordering::Release);
        }
    }

    /// The call policy: ready, pick a client, run `op`, all within [`COMMAND_TIMEOUT`].
    async fn bounded<'a, T, F, Fut>(&'a self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&'a Client) -> Fut,
        Fut: Future<Output = Result<T, FredError>> + 'a,
    {
        let call = async {
            self.ready().await;
            op(self.inner.pool.next()).await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError::Unavailable(format!("redis: {}", err.details()))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis did not answer {what} within {} s",
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// A random id for this node (its wake-up channel, its lease), unique among a deployment's nodes.
pub(crate) fn node_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return hex::encode(bytes);
    }
    // Unique enough without randomness: the process id and the start time.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
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

/// `[store]`'s URLs as fred reads them: the first, or every seed of a Cluster.
fn store_fred_config(config: &StoreConfig) -> Result<FredConfig, StartError> {
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
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
