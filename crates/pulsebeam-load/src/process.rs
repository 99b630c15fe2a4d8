//! The server under test runs in a child process (this binary's hidden `server` command), so
//! its resident memory is its own and not the load generator's.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use pulsebeam_token::PublicKey;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::keys::{server_config, ProjectKey};
use crate::LoadError;

/// What the child process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    /// The PulseBeam signaling server.
    Pulsebeam,
    /// The signaling server plus `POST /empty`, an empty handler behind the same stack
    /// (listener, hyper, axum, CORS layer): the baseline for the relay rate.
    Empty,
    /// Bare axum + hyper whose `Recv` route never answers: what an idle long-poll costs the
    /// HTTP stack alone, without the server's own state.
    Pending,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Pulsebeam => "pulsebeam",
            ServerKind::Empty => "empty",
            ServerKind::Pending => "pending",
        }
    }
}

/// Where the server child keeps its mailboxes (`[store]` of its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Store {
    /// In the process (`backend = "memory"`): one node.
    #[default]
    Memory,
    /// In Redis (`backend = "redis"`), shared by every node started with the same URL and prefix.
    Redis {
        /// `redis://host:port[/db]`.
        url: String,
        /// The key prefix the nodes of one run share (unique per run, so runs never mix).
        key_prefix: String,
    },
    /// In a Redis Cluster (`backend = "redis"`, `cluster = true`), shared likewise.
    RedisCluster {
        /// Seed nodes, `redis://host:port` each.
        seeds: Vec<String>,
        /// The key prefix the nodes of one run share.
        key_prefix: String,
    },
}

impl Store {
    /// `memory`, `redis` or `redis-cluster`.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Redis { .. } => "redis",
            Store::RedisCluster { .. } => "redis-cluster",
        }
    }

    /// The arguments that give the server child this store.
    fn child_args(&self) -> Vec<String> {
        match self {
            Store::Memory => vec![],
            Store::Redis { url, key_prefix } => vec![
                "--redis-url".to_owned(),
                url.clone(),
                "--key-prefix".to_owned(),
                key_prefix.clone(),
            ],
            Store::RedisCluster { seeds, key_prefix } => vec![
                "--redis-cluster-urls".to_owned(),
                seeds.join(","),
                "--key-prefix".to_owned(),
                key_prefix.clone(),
            ],
        }
    }
}

/// The `--store` argument: which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoreKind {
    /// Mailboxes in the server process (one node only).
    #[default]
    Memory,
    /// Mailboxes in Redis (`--redis-url`), shared by the nodes.
    Redis,
    /// Mailboxes in a Redis Cluster (`--redis-cluster-urls`), shared by the nodes.
    RedisCluster,
}

impl StoreKind {
    /// The store of a run: for Redis, `url` (for a Cluster, the seeds `cluster_urls`) with a
    /// key prefix of its own (`load-<random>`).
    ///
    /// # Errors
    ///
    /// [`LoadError::ServerProcess`] for Redis without a URL, or a Cluster without seeds.
    pub fn store(self, url: Option<&str>, cluster_urls: &[String]) -> Result<Store, LoadError> {
        let key_prefix = || {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                ^ u128::from(std::process::id());
            format!("load-{:x}", nonce & 0xffff_ffff_ffff)
        };
        match self {
            StoreKind::Memory => Ok(Store::Memory),
            StoreKind::Redis => {
                let url = url.ok_or_else(|| {
                    LoadError::ServerProcess(
                        "--store redis needs --redis-url redis://127.0.0.1:PORT (scripts/redis.sh start gives one)".into(),
                    )
                })?;
                Ok(Store::Redis {
                    url: url.to_owned(),
                    key_prefix: key_prefix(),
                })
            }
            StoreKind::RedisCluster => {
                let seeds: Vec<String> = cluster_urls
                    .iter()
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect();
                if seeds.is_empty() {
                    return Err(LoadError::ServerProcess(
                        "--store redis-cluster needs --redis-cluster-urls redis://127.0.0.1:P1,redis://127.0.0.1:P2,... (scripts/redis.sh start gives them)".into(),
                    ));
                }
                Ok(Store::RedisCluster {
                    seeds,
                    key_prefix: key_prefix(),
                })
            }
        }
    }
}

/// Starts `nodes` server children sharing `key` and `store`, each on its own port.
///
/// # Errors
///
/// [`LoadError::ServerProcess`] when one cannot start (those already started are stopped).
pub async fn spawn_nodes(
    nodes: usize,
    kind: ServerKind,
    key: &ProjectKey,
    poll_timeout_ms: u64,
    peers: usize,
    store: &Store,
) -> Result<Vec<ServerProcess>, LoadError> {
    let mut started = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        match ServerProcess::spawn(kind, key, poll_timeout_ms, peers, store).await {
            Ok(server) => started.push(server),
            Err(e) => {
                for server in started {
                    server.stop().await;
                }
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// A running server child process. It stops when this is dropped (its stdin closes; it is
/// killed if it has not gone).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    pid: u32,
}

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` in a child process of this binary and waits until it
    /// listens.
    ///
    /// # Errors
    ///
    /// [`LoadError::ServerProcess`] when the child cannot start or does not report its address
    /// within 30 seconds.
    pub async fn spawn(
        kind: ServerKind,
        key: &ProjectKey,
        poll_timeout_ms: u64,
        peers: usize,
        store: &Store,
    ) -> Result<Self, LoadError> {
        let exe = std::env::current_exe()
            .map_err(|e| LoadError::ServerProcess(format!("cannot find this program: {e}")))?;
        let mut command = match wrapper()? {
            Some(mut words) => {
                let program = words.remove(0);
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(["server", "--kind", kind.name(), "--kid", key.kid()])
            .args(["--public-key", &key.public_key().to_hex()])
            .args(["--poll-timeout-ms", &poll_timeout_ms.to_string()])
            .args(["--peers", &peers.to_string()])
            .args(store.child_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LoadError::ServerProcess(format!("cannot start the server: {e}")))?;
        let pid = child
            .id()
            .ok_or_else(|| LoadError::ServerProcess("the server exited at once".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadError::ServerProcess("no stdout pipe".into()))?;
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        let read = stdout.read_line(&mut line);
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => {
                return Err(LoadError::ServerProcess(
                    "the server exited before listening (its error is above)".into(),
                ))
            }
            Err(_) => {
                return Err(LoadError::ServerProcess(
                    "the server did not start listening within 30 s".into(),
                ))
            }
        }
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                LoadError::ServerProcess(format!("unexpected first line from the server: {line:?}"))
            })?;
        let stdin = child.stdin.take();
        Ok(ServerProcess {
            child,
            stdin,
            addr,
            pid,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's resident set size now, in KiB (`VmRSS` of `/proc/PID/status`).
    ///
    /// # Errors
    ///
    /// [`LoadError::Proc`] when the file cannot be read or has no `VmRSS`.
    pub fn rss_kib(&self) -> Result<u64, LoadError> {
        rss_kib(&format!("/proc/{}/status", self.pid))
    }

    /// CPU time the server has used so far (user + system, all threads), in seconds.
    ///
    /// # Errors
    ///
    /// [`LoadError::Proc`] when `/proc/PID/stat` cannot be read or parsed.
    pub fn cpu_seconds(&self) -> Result<f64, LoadError> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// Asks the server to stop (closes its stdin) and waits up to 5 s before killing it.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The environment variable naming a program (and its arguments, split at spaces) that runs the
/// server child, e.g. `valgrind --tool=massif`: the child is then `PROGRAM ARGS... THIS_EXE server
/// ...`, and the memory read is that program's process (valgrind runs the server in it).
pub const SERVER_WRAPPER_ENV: &str = "PULSEBEAM_LOAD_SERVER_WRAPPER";

fn wrapper() -> Result<Option<Vec<String>>, LoadError> {
    match std::env::var(SERVER_WRAPPER_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(LoadError::ServerProcess(format!(
            "{SERVER_WRAPPER_ENV} is not valid UTF-8; give a program and its arguments separated by spaces"
        ))),
        Ok(value) => {
            let words: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
            Ok((!words.is_empty()).then_some(words))
        }
    }
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`USER_HZ`, 100 on Linux whatever the
/// kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// `utime + stime` of a `/proc/.../stat` file, in seconds.
///
/// # Errors
///
/// [`LoadError::Proc`] when the file cannot be read or its fields are not as expected.
pub fn cpu_seconds(stat_path: &str) -> Result<f64, LoadError> {
    let text = std::fs::read_to_string(stat_path).map_err(|source| LoadError::Proc {
        what: "the server's /proc/PID/stat",
        source,
    })?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    let mut fields = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace())
        .into_iter()
        .flatten()
        .skip(11);
    let mut tick = || fields.next().and_then(|v| v.parse::<u64>().ok());
    match (tick(), tick()) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / USER_HZ),
        _ => Err(LoadError::Proc {
            what: "utime and stime",
            source: std::io::Error::other("unexpected /proc/PID/stat format"),
        }),
    }
}

/// `VmRSS` of a `/proc/.../status` file, in KiB.
///
/// # Errors
///
/// [`LoadError::Proc`] when the file cannot be read or has no `VmRSS` line.
pub fn rss_kib(status_path: &str) -> Result<u64, LoadError> {
    let text = std::fs::read_to_string(status_path).map_err(|source| LoadError::Proc {
        what: "the server's /proc/PID/status",
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| LoadError::Proc {
            what: "VmRSS",
            source: std::io::Error::other("no VmRSS line"),
        })
}

/// The soft limit on open files of this process (children inherit it).
///
/// # Errors
///
/// [`LoadError::Proc`] when `/proc/self/limits` cannot be read.
pub fn open_files_limit() -> Result<u64, LoadError> {
    let text = std::fs::read_to_string("/proc/self/limits").map_err(|source| LoadError::Proc {
        what: "/proc/self/limits",
        source,
    })?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        // "unlimited"
        .unwrap_or(u64::MAX))
}

/// Fails with a clear message unless `needed` descriptors can be open at once.
///
/// # Errors
///
/// [`LoadError::FileLimit`] when the soft limit is lower.
pub fn ensure_open_files(needed: u64) -> Result<(), LoadError> {
    let limit = open_files_limit()?;
    if limit < needed {
        return Err(LoadError::FileLimit { needed, limit });
    }
    Ok(())
}

/// The hidden `server` command: serves `kind` on `127.0.0.1:0`, prints `listening ADDR` on
/// stdout, and stops when stdin closes (so it never outlives the load tool).
///
/// # Errors
///
/// A [`LoadError`] when the configuration is refused or the socket cannot be bound.
pub async fn serve_child(
    kind: ServerKind,
    kid: &str,
    public_key: &PublicKey,
    poll_timeout_ms: u64,
    peers: usize,
    store: &Store,
) -> Result<(), LoadError> {
    let mut config = server_config(kid, public_key, poll_timeout_ms, peers);
    match store {
        Store::Memory => {}
        Store::Redis { url, key_prefix } => {
            config.store.backend = pulsebeam_server::StoreBackend::Redis;
            config.store.urls = vec![url.clone()];
            config.store.key_prefix = key_prefix.clone();
        }
        Store::RedisCluster { seeds, key_prefix } => {
            config.store.backend = pulsebeam_server::StoreBackend::Redis;
            config.store.urls = seeds.clone();
            config.store.cluster = true;
            config.store.key_prefix = key_prefix.clone();
        }
    }
    let server = pulsebeam_server::Server::new(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let stdin_closed = async move {
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    match kind {
        ServerKind::Pulsebeam => pulsebeam_server::serve(listener, server, stdin_closed).await?,
        ServerKind::Empty => {
            let empty = Router::new().route("/empty", post(|| async {}));
            pulsebeam_server::serve(listener, server.with_routes(empty), stdin_closed).await?;
        }
        ServerKind::Pending => {
            let waiting = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&waiting);
            let router = Router::new()
                .route(
                    "/twirp/pulsebeam.v1.Tunnel/Recv",
                    post(move || {
                        let guard = Waiting::enter(Arc::clone(&counter));
                        async move {
                            let _guard = guard;
                            std::future::pending::<()>().await
                        }
                    }),
                )
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let n = waiting.load(Ordering::SeqCst);
                        async move { format!("pulsebeam_polling_connections {n}\n") }
                    }),
                );
            // Its requests never finish, so a graceful shutdown would never end: just stop.
            tokio::select! {
                served = axum::serve(listener, router).into_future() => served?,
                () = stdin_closed => {}
            }
        }
    }
    Ok(())
}

/// Counts a waiting request while it exists.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn enter(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Waiting(counter)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
