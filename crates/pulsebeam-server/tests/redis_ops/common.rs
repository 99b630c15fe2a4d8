//! Redis servers of a test's own, and nodes on them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pulsebeam_server::store::{Envelope, MailboxStore, PollOptions};
use pulsebeam_server::{Config, ProjectConfig, RedisStore, Server, StoreBackend, StoreConfig};
use pulsebeam_token::KeyPair;

/// Whether Redis tests run here: `false` after a loud SKIP line (a failure with
/// `PULSEBEAM_REQUIRE_REDIS=1`).
pub fn redis_available(test: &str) -> bool {
    let var = "PULSEBEAM_TEST_REDIS_URL";
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => true,
        _ => {
            assert!(
                std::env::var("PULSEBEAM_REQUIRE_REDIS").as_deref() != Ok("1"),
                "{var} is not set but PULSEBEAM_REQUIRE_REDIS=1; run `eval \"$(scripts/redis.sh start)\"` first"
            );
            eprintln!(
                "SKIP {test}: {var} is not set; run `eval \"$(scripts/redis.sh start)\"` to test the Redis store"
            );
            false
        }
    }
}

/// A key prefix no other test or run uses.
pub fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{}-{nanos}-{}:{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A redis-server of the test's own, killed when dropped.
pub struct OwnRedis {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl OwnRedis {
    /// A server on a free port with `extra` arguments. The port was free when chosen; another
    /// process may take it before the server binds it, and then another port is tried.
    pub fn start(extra: &[&str]) -> OwnRedis {
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/redis.sh installs it)");
            let mut redis = OwnRedis { port, child, dir };
            if redis.wait_ready() {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Whether this server answers; false when it exited (its port was taken).
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            // A Redis of someone else's on the port is not ours: its process id tells.
            if self.cli(&["ping"]).contains("PONG") {
                let ours = format!("process_id:{}", self.pid());
                return self
                    .cli(&["info", "server"])
                    .lines()
                    .any(|l| l.trim() == ours);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `redis-cli` on this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        // A stopped server must go on to die.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli -p port args…`; its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `[store]` on `urls` under `prefix`.
pub fn store_config(urls: &[String], prefix: &str) -> StoreConfig {
    let mut config = StoreConfig::default();
    config.backend = StoreBackend::Redis;
    config.urls = urls.to_vec();
    config.key_prefix = prefix.to_owned();
    config.pool_size = 2;
    config
}

/// A server configuration with the project `main` and `store`; the key pair signs its tokens.
pub fn node_config(store: StoreConfig, state_file: Option<PathBuf>) -> (Config, KeyPair) {
    let pair = KeyPair::generate().unwrap();
    let mut config = Config::default()
        .with_project(ProjectConfig::new("main").with_key(pair.api_key(), &pair.public_key()));
    config.store = store;
    if let Some(path) = state_file {
        let mut admin =
            pulsebeam_server::AdminConfig::new("127.0.0.1:0".parse().unwrap(), "0".repeat(64));
        admin.state_file = Some(path);
        config.admin = Some(admin);
    }
    (config, pair)
}

/// A node of a deployment on `store`.
pub fn node(store: StoreConfig, state_file: Option<PathBuf>) -> Server {
    Server::new(node_config(store, state_file).0).unwrap()
}

/// Waits until `check` holds, at most `limit`; panics with `what` otherwise.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `redis-server` on `port` answers `PING`.
pub fn wait_pong(port: u16) {
    let start = Instant::now();
    while !cli(port, &["ping"]).contains("PONG") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` free loopback ports whose Cluster bus ports (port + 10000) are free too.
pub fn cluster_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// Starts a Cluster-enabled `redis-server` on `port` (no persistence, its files under `dir`),
/// with `extra` arguments, and waits until it answers.
pub fn spawn_cluster_node(dir: &Path, port: u16, extra: &[&str]) -> Child {
    let sub = dir.join(port.to_string());
    std::fs::create_dir_all(&sub).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(extra)
        .arg("--dir")
        .arg(&sub)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/redis.sh installs it)");
    wait_pong(port);
    child
}

/// Joins the servers on `ports` into one Cluster, `replicas` replicas per master.
pub fn create_cluster(ports: &[u16], replicas: u32) {
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A poll that takes what waits and returns at once.
pub const NOW: PollOptions = PollOptions {
    wait: Duration::ZERO,
    batch_window: Duration::ZERO,
    max_messages: 64,
    takeover: true,
    ack: None,
};

/// A message from `g/alice` saying `text`.
pub fn envelope(text: &'static str) -> Envelope {
    Envelope {
        src_group: Arc::from("g"),
        src_peer: Arc::from("alice"),
        message: Bytes::from_static(text.as_bytes()),
    }
}

/// Waits until `store` is healthy, at most `limit`.
pub async fn wait_healthy(store: &RedisStore, limit: Duration) {
    let start = Instant::now();
    while let Err(err) = store.health().await {
        assert!(
            start.elapsed() < limit,
            "not healthy within {limit:?}: {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
