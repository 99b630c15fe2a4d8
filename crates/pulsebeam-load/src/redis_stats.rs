//! What Redis did during a run, from `INFO commandstats`: commands per relayed message, and
//! commands per second while peers wait.
//!
//! One plain TCP connection speaking just enough RESP for `INFO`; the tool needs nothing else
//! from Redis, and reading the counters must not add commands of its own beyond the `INFO`
//! calls, which are left out of every count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

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
        let request = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
        let io = |e: std::io::Error| LoadError::Redis(format!("INFO {section} failed: {e}"));
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(io)?;
        let mut header = String::new();
        self.stream.read_line(&mut header).await.map_err(io)?;
        let length: usize = header
            .strip_prefix('$')
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| {
                LoadError::Redis(format!("INFO {section} answered {:?}", header.trim()))
            })?;
        // INFO answers are a few KiB; refuse anything absurd rather than allocate it.
        if length > 1 << 20 {
            return Err(LoadError::Redis(format!(
                "INFO {section} answered {length} bytes"
            )));
        }
        let mut body = vec![0u8; length + 2];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        body.truncate(length);
        String::from_utf8(body)
            .map_err(|_| LoadError::Redis(format!("INFO {section} is not UTF-8")))
    }
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
}
