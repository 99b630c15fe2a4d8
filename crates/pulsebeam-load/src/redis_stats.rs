//! What Redis did during a run, from `INFO commandstats` and `INFO cpu`: commands per relayed
//! message, and commands per second while peers wait; on a Redis Cluster, per master (shard).
//!
//! One plain TCP connection per Redis server speaking just enough RESP for `INFO`,
//! `CLUSTER NODES` and `SCAN`; the tool needs nothing else from Redis, and reading the counters
//! must not add commands of its own beyond those reads, which are left out of every count
//! (`SCAN` runs before the counted span).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::process::Store;
use crate::LoadError;

/// Calls per command name (`cmdstat_evalsha:calls=12,...` gives `evalsha` -> 12).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandCounts(BTreeMap<String, u64>);

impl CommandCounts {
    /// Parses the text of `INFO commandstats`.
    pub fn parse(info: &str) -> Self {
        let counts = info
            .lines()
            .filter_map(|line| {
                let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_ascii_lowercase(), calls))
            })
            .collect();
        CommandCounts(counts)
    }

    /// Calls of `name` (lowercase, `evalsha`), 0 if never called.
    pub fn calls(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Every call except `INFO` (the counters' own reads).
    pub fn total(&self) -> u64 {
        self.0
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(_, calls)| calls)
            .sum()
    }

    /// The calls made since `before`, per command.
    pub fn since(&self, before: &CommandCounts) -> CommandCounts {
        CommandCounts(
            self.0
                .iter()
                .map(|(name, calls)| (name.clone(), calls.saturating_sub(before.calls(name))))
                .filter(|(_, calls)| *calls > 0)
                .collect(),
        )
    }

    /// The command names and calls, for reports.
    pub fn by_command(&self) -> BTreeMap<String, u64> {
        self.0.clone()
    }
}

/// A connection to the Redis the nodes use, for its counters.
#[derive(Debug)]
pub struct RedisCounters {
    stream: BufReader<TcpStream>,
}

impl RedisCounters {
    /// Connects to `url` (`redis://host:port[/db]`, no password: the tool only runs against a
    /// throwaway loopback Redis).
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when the URL is not of that form or the connection fails.
    pub async fn connect(url: &str) -> Result<Self, LoadError> {
        let rest = url.strip_prefix("redis://").ok_or_else(|| {
            LoadError::Redis(format!(
                "`{url}` is not a redis://host:port URL; the load tool reads counters over plain TCP"
            ))
        })?;
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.contains('@') {
            return Err(LoadError::Redis(
                "the load tool does not log in to Redis; use a throwaway Redis without a password (scripts/redis.sh start)".into(),
            ));
        }
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| LoadError::Redis(format!("cannot connect to {authority}: {e}")))?;
        Ok(RedisCounters {
            stream: BufReader::new(stream),
        })
    }

    /// `INFO commandstats`, parsed.
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when the answer is not a bulk string.
    pub async fn commands(&mut self) -> Result<CommandCounts, LoadError> {
        Ok(CommandCounts::parse(&self.info("commandstats").await?))
    }

    /// `used_memory` of `INFO memory`, bytes.
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when the answer has no `used_memory`.
    pub async fn used_memory(&mut self) -> Result<u64, LoadError> {
        let text = self.info("memory").await?;
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| LoadError::Redis("INFO memory has no used_memory".into()))
    }

    /// CPU seconds Redis has used (`used_cpu_sys` + `used_cpu_user` of `INFO cpu`).
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when the answer has neither figure.
    pub async fn cpu_seconds(&mut self) -> Result<f64, LoadError> {
        let text = self.info("cpu").await?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        match (field("used_cpu_sys:"), field("used_cpu_user:")) {
            (Some(sys), Some(user)) => Ok(sys + user),
            _ => Err(LoadError::Redis("INFO cpu has no used_cpu_sys/user".into())),
        }
    }

    /// Commands Redis ran per second over `interval` (the `INFO` calls left out), and what
    /// they were.
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when a read fails.
    pub async fn rate_over(&mut self, interval: Duration) -> Result<QuietRate, LoadError> {
        let before = self.commands().await?;
        let start = Instant::now();
        tokio::time::sleep(interval).await;
        let after = self.commands().await?;
        let seconds = start.elapsed().as_secs_f64();
        let delta = after.since(&before);
        Ok(QuietRate {
            seconds,
            commands: delta.total(),
            commands_per_s: delta.total() as f64 / seconds,
            by_command: delta.by_command(),
        })
    }

    async fn info(&mut self, section: &str) -> Result<String, LoadError> {
        match self.command(&["INFO", section]).await? {
            Reply::Bulk(body) => String::from_utf8(body)
                .map_err(|_| LoadError::Redis(format!("INFO {section} is not UTF-8"))),
            other => Err(LoadError::Redis(format!(
                "INFO {section} answered {}",
                other.describe()
            ))),
        }
    }

    /// Sends one command and reads its answer.
    async fn command(&mut self, words: &[&str]) -> Result<Reply, LoadError> {
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request += &format!("${}\r\n{word}\r\n", word.len());
        }
        let name = words.first().copied().unwrap_or_default();
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| LoadError::Redis(format!("{name} failed: {e}")))?;
        read_reply(&mut self.stream, 0)
            .await
            .map_err(|e| LoadError::Redis(format!("{name} failed: {e}")))
    }

    /// `CLUSTER NODES`: the masters that serve slots.
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when this server is not a Cluster node.
    async fn cluster_masters(&mut self, seed: &str) -> Result<Vec<Shard>, LoadError> {
        match self.command(&["CLUSTER", "NODES"]).await? {
            Reply::Bulk(body) => Ok(parse_cluster_nodes(&String::from_utf8_lossy(&body))),
            other => Err(LoadError::Redis(format!(
                "`{seed}` is not a Redis Cluster node (CLUSTER NODES answered {}); give the Cluster's \
                 nodes with --redis-cluster-urls, or use --store redis for a standalone Redis",
                other.describe()
            ))),
        }
    }

    /// The peers (last part of the hash tag) with keys under `prefix:` on this server, by
    /// `SCAN` (bounded to 10,000 rounds).
    async fn peers_with_keys(&mut self, prefix: &str) -> Result<BTreeSet<String>, LoadError> {
        let pattern = format!("{prefix}:{{*");
        let mut peers = BTreeSet::new();
        let mut cursor = "0".to_owned();
        for _ in 0..10_000 {
            let reply = self
                .command(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"])
                .await?;
            let Reply::Array(mut parts) = reply else {
                return Err(LoadError::Redis(format!(
                    "SCAN answered {}",
                    reply.describe()
                )));
            };
            let (Some(Reply::Array(keys)), Some(Reply::Bulk(next))) = (parts.pop(), parts.pop())
            else {
                return Err(LoadError::Redis("SCAN answered an unexpected array".into()));
            };
            for key in keys {
                if let Reply::Bulk(key) = key {
                    if let Some(peer) = tagged_peer(&String::from_utf8_lossy(&key), prefix) {
                        peers.insert(peer.to_owned());
                    }
                }
            }
            cursor = String::from_utf8_lossy(&next).into_owned();
            if cursor == "0" {
                return Ok(peers);
            }
        }
        Err(LoadError::Redis(format!(
            "SCAN of {pattern} did not finish within 10000 rounds"
        )))
    }
}

/// The peer of a key `prefix:{project:group:peer}:...`, `None` for other keys.
fn tagged_peer<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    let tag = key
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .split('}')
        .next()?;
    let mut parts = tag.split(':');
    let (_project, _group, peer) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(peer)
}

/// One RESP answer.
#[derive(Debug)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    /// The answer in an error message.
    fn describe(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(e) => format!("\"{e}\""),
            Reply::Integer(n) => format!(":{n}"),
            Reply::Bulk(b) => format!("{} bytes", b.len()),
            Reply::Nil => "nil".into(),
            Reply::Array(a) => format!("an array of {}", a.len()),
        }
    }
}

type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, String>> + Send + 'a>>;

/// Reads one answer; bulk strings above 1 MiB, arrays above 100,000 items and nesting deeper
/// than 4 are refused rather than allocated.
fn read_reply(stream: &mut BufReader<TcpStream>, depth: u8) -> ReplyFuture<'_> {
    Box::pin(async move {
        let mut line = String::new();
        if stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("the connection closed".into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at_checked(1).ok_or("an empty answer")?;
        let number = || -> Result<i64, String> {
            rest.parse().map_err(|_| format!("a bad answer {line:?}"))
        };
        match kind {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Ok(Reply::Error(rest.to_owned())),
            ":" => Ok(Reply::Integer(number()?)),
            "$" => {
                let length = number()?;
                if length < 0 {
                    return Ok(Reply::Nil);
                }
                if length > 1 << 20 {
                    return Err(format!("an answer of {length} bytes"));
                }
                let mut body = vec![0u8; length as usize + 2];
                stream
                    .read_exact(&mut body)
                    .await
                    .map_err(|e| e.to_string())?;
                body.truncate(length as usize);
                Ok(Reply::Bulk(body))
            }
            "*" => {
                let count = number()?;
                if count < 0 {
                    return Ok(Reply::Nil);
                }
                if count > 100_000 || depth >= 4 {
                    return Err(format!("an array of {count} at depth {depth}"));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(read_reply(stream, depth + 1).await?);
                }
                Ok(Reply::Array(items))
            }
            _ => Err(format!("a bad answer {line:?}")),
        }
    })
}

/// One Redis server whose counters a run reads: the standalone Redis, or a Cluster master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// `host:port`.
    pub addr: String,
    /// Hash slots it serves (16384 for a standalone Redis).
    pub slots: u32,
}

/// The masters of `CLUSTER NODES`, by address, that serve at least one slot and are not
/// failing.
fn parse_cluster_nodes(text: &str) -> Vec<Shard> {
    let mut shards: Vec<Shard> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            let flags = fields.get(2)?;
            let usable = flags.split(',').any(|f| f == "master")
                && !flags
                    .split(',')
                    .any(|f| matches!(f, "fail" | "fail?" | "noaddr" | "handshake"));
            let slots = fields
                .get(8..)?
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some(b.parse::<u32>().ok()? + 1 - a.parse::<u32>().ok()?),
                    None => range.parse::<u32>().ok().map(|_| 1),
                })
                .sum();
            (usable && slots > 0 && !addr.starts_with(':')).then(|| Shard {
                addr: addr.to_owned(),
                slots,
            })
        })
        .collect();
    shards.sort_by(|a, b| a.addr.cmp(&b.addr));
    shards
}

/// What one Redis server had counted at a moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `INFO commandstats`.
    pub commands: CommandCounts,
    /// `used_cpu_sys + used_cpu_user`, seconds.
    pub cpu_seconds: f64,
}

/// The counters of the Redis a run's nodes share: one standalone server, or every master of a
/// Redis Cluster.
#[derive(Debug)]
pub struct RedisShards {
    shards: Vec<(Shard, RedisCounters)>,
    cluster: bool,
    key_prefix: String,
}

impl RedisShards {
    /// Connects to the Redis of `store`: `None` for the memory store; for a Cluster, asks the
    /// first seed that answers for its masters and connects to each.
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when a server cannot be reached, a seed is not a Cluster node, or
    /// the Cluster has no master serving slots.
    pub async fn connect(store: &Store) -> Result<Option<Self>, LoadError> {
        match store {
            Store::Memory => Ok(None),
            Store::Redis { url, key_prefix } => {
                let counters = RedisCounters::connect(url).await?;
                let addr = authority(url).unwrap_or(url).to_owned();
                Ok(Some(RedisShards {
                    shards: vec![(Shard { addr, slots: 16384 }, counters)],
                    cluster: false,
                    key_prefix: key_prefix.clone(),
                }))
            }
            Store::RedisCluster { seeds, key_prefix } => {
                let mut last_error = None;
                for seed in seeds {
                    // An unreachable seed is skipped; one that is not a Cluster node is a mistake.
                    let mut counters = match RedisCounters::connect(seed).await {
                        Ok(counters) => counters,
                        Err(e) => {
                            last_error = Some(e);
                            continue;
                        }
                    };
                    let masters = counters.cluster_masters(seed).await?;
                    if masters.is_empty() {
                        last_error = Some(LoadError::Redis(format!(
                            "the Redis Cluster of `{seed}` has no master serving slots; \
                             is it set up (redis-cli --cluster create)?"
                        )));
                        continue;
                    }
                    let mut shards = Vec::with_capacity(masters.len());
                    for shard in masters {
                        let url = format!("redis://{}", shard.addr);
                        shards.push((shard, RedisCounters::connect(&url).await?));
                    }
                    return Ok(Some(RedisShards {
                        shards,
                        cluster: true,
                        key_prefix: key_prefix.clone(),
                    }));
                }
                Err(last_error.unwrap_or_else(|| {
                    LoadError::Redis(
                        "no Redis Cluster seed given; pass --redis-cluster-urls".into(),
                    )
                }))
            }
        }
    }

    /// Whether these are the masters of a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The servers, in the order of [`RedisShards::snapshot`].
    pub fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.shards.iter().map(|(shard, _)| shard)
    }

    /// Every server's counters now, in the order of [`RedisShards::shards`].
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when a read fails.
    pub async fn snapshot(&mut self) -> Result<Vec<Snapshot>, LoadError> {
        let mut out = Vec::with_capacity(self.shards.len());
        for (_, counters) in &mut self.shards {
            out.push(Snapshot {
                commands: counters.commands().await?,
                cpu_seconds: counters.cpu_seconds().await?,
            });
        }
        Ok(out)
    }

    /// Per server, the peers with keys under the run's prefix (`SCAN`, so call it outside
    /// the counted span).
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when a read fails.
    pub async fn peers_with_keys(&mut self) -> Result<Vec<BTreeSet<String>>, LoadError> {
        let mut out = Vec::with_capacity(self.shards.len());
        for (_, counters) in &mut self.shards {
            out.push(counters.peers_with_keys(&self.key_prefix).await?);
        }
        Ok(out)
    }

    /// Commands all the servers together ran per second over `interval` (`INFO` left out).
    ///
    /// # Errors
    ///
    /// [`LoadError::Redis`] when a read fails.
    pub async fn rate_over(&mut self, interval: Duration) -> Result<QuietRate, LoadError> {
        let before = self.snapshot().await?;
        let start = Instant::now();
        tokio::time::sleep(interval).await;
        let after = self.snapshot().await?;
        let seconds = start.elapsed().as_secs_f64();
        let mut by_command = BTreeMap::new();
        for (a, b) in after.iter().zip(&before) {
            for (name, calls) in a.commands.since(&b.commands).by_command() {
                *by_command.entry(name).or_insert(0) += calls;
            }
        }
        let commands = CommandCounts(by_command.clone()).total();
        Ok(QuietRate {
            seconds,
            commands,
            commands_per_s: commands as f64 / seconds,
            by_command,
        })
    }
}

/// `host:port` of a `redis://host:port[/db]` URL.
fn authority(url: &str) -> Option<&str> {
    url.strip_prefix("redis://")?.split('/').next()
}

/// Redis commands over a quiet interval.
#[derive(Debug, Clone, Serialize)]
pub struct QuietRate {
    /// Seconds measured.
    pub seconds: f64,
    /// Commands run (`INFO` left out).
    pub commands: u64,
    /// Commands per second.
    pub commands_per_s: f64,
    /// Calls per command name.
    pub by_command: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_parse_and_subtract() {
        let before = CommandCounts::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00\r\ncmdstat_info:calls=3,usec=1\r\n",
        );
        let after = CommandCounts::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=25,usec=90\r\ncmdstat_publish:calls=4,usec=2\r\ncmdstat_info:calls=5,usec=1\r\n",
        );
        let delta = after.since(&before);
        assert_eq!(delta.calls("evalsha"), 15);
        assert_eq!(delta.calls("publish"), 4);
        assert_eq!(delta.calls("info"), 2);
        assert_eq!(delta.total(), 19);
        assert_eq!(CommandCounts::parse("garbage\r\ncmdstat_x:nope").total(), 0);
    }

    #[test]
    fn cluster_nodes_give_the_masters_serving_slots() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host-b master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383 [93->-e7d1]
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238315000 5 disconnected 0-10
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5459 5460
aaaa :0@0 master,noaddr - 0 0 0 disconnected 3
bbbb 127.0.0.1:30006@40006 master - 0 0 0 connected
";
        assert_eq!(
            parse_cluster_nodes(text),
            vec![
                Shard {
                    addr: "127.0.0.1:30001".into(),
                    slots: 5461
                },
                Shard {
                    addr: "127.0.0.1:30002".into(),
                    slots: 5462
                },
                Shard {
                    addr: "127.0.0.1:30003".into(),
                    slots: 5461
                },
            ]
        );
        assert!(parse_cluster_nodes("garbage\n\n").is_empty());
    }

    #[test]
    fn keys_name_their_peer_by_hash_tag() {
        let p = "load-1";
        assert_eq!(tagged_peer("load-1:{proj:g:r12}:h", p), Some("r12"));
        assert_eq!(tagged_peer("load-1:{proj:g:s3}:m:7", p), Some("s3"));
        assert_eq!(tagged_peer("load-1:{b:proj}:polled", p), None);
        assert_eq!(tagged_peer("load-10:{proj:g:r1}:h", p), None);
        assert_eq!(tagged_peer("other:{proj:g:r1}:h", p), None);
    }
}
