//! The Redis figures of a relay run: what Redis did from the first `Send` to the last delivery,
//! in all and, on a Redis Cluster, per master (shard).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::redis_stats::{CommandCounts, Shard, Snapshot};

/// Redis commands of a relay run, from `INFO commandstats` (its own `INFO` calls left out);
/// on a Cluster, summed over the masters.
#[derive(Debug, Clone, Serialize)]
pub struct RelayRedis {
    /// Commands run while the messages were sent and delivered.
    pub commands: u64,
    /// Script calls among them (`FCALL`, or `EVALSHA` where Redis cannot run the library): one
    /// per round trip. A node sends the store operations it makes at the same moment on one
    /// connection as one `FCALL`, so under load there are fewer than operations.
    pub script_calls: u64,
    /// Commands per delivered message.
    pub commands_per_message: f64,
    /// Script calls (round trips) per delivered message.
    pub script_calls_per_message: f64,
    /// Calls per command name.
    pub by_command: BTreeMap<String, u64>,
    /// CPU seconds Redis used over the same span, per second of it: how much of a core Redis
    /// took (each server runs commands on one thread, so 1.0 per server is its ceiling).
    pub cpu_cores: f64,
    /// CPU time Redis used over the same span (`used_cpu_sys` + `used_cpu_user` of
    /// `INFO cpu`), µs per delivered message.
    pub cpu_us_per_message: f64,
    /// On a Redis Cluster, the same figures per master (absent for a standalone Redis).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<RelayShard>,
}

/// What one master of a Redis Cluster did in a relay run. Per-message figures are divided by
/// every message delivered, so the shards' figures add up to the totals.
#[derive(Debug, Clone, Serialize)]
pub struct RelayShard {
    /// The master, `host:port`.
    pub addr: String,
    /// Hash slots it serves.
    pub slots: u32,
    /// Receivers of the run whose keys (one hash tag per peer) live on it.
    pub receivers: usize,
    /// Messages delivered to those receivers: the ones whose mailbox is on this shard.
    pub messages: u64,
    /// Commands it ran.
    pub commands: u64,
    /// Commands per delivered message.
    pub commands_per_message: f64,
    /// Script calls (`FCALL` + `EVALSHA`).
    pub script_calls: u64,
    /// Script calls per delivered message.
    pub script_calls_per_message: f64,
    /// `PUBLISH` calls (inside scripts too): wake-ups between nodes, which a Cluster carries
    /// to every shard.
    pub publish: u64,
    /// `PUBLISH` calls per delivered message.
    pub publish_per_message: f64,
    /// Share of one core it used over the span.
    pub cpu_cores: f64,
    /// Its CPU time, µs per delivered message.
    pub cpu_us_per_message: f64,
    /// Calls per command name.
    pub by_command: BTreeMap<String, u64>,
}

/// The run's receivers whose keys live on one shard, and the messages delivered to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardPeers {
    /// Receivers.
    pub receivers: usize,
    /// Messages delivered to them.
    pub messages: u64,
}

impl RelayRedis {
    /// The figures between two snapshots of every server, taken `seconds` apart, for
    /// `delivered` messages; `peers` is each server's share of the run's receivers, and
    /// `cluster` whether to report per shard.
    pub fn between(
        shards: &[Shard],
        (before, after): (&[Snapshot], &[Snapshot]),
        peers: &[ShardPeers],
        delivered: u64,
        seconds: f64,
        cluster: bool,
    ) -> Self {
        let per = |n: f64| n / delivered.max(1) as f64;
        let seconds = seconds.max(f64::MIN_POSITIVE);
        let figures: Vec<RelayShard> = shards
            .iter()
            .zip(before.iter().zip(after))
            .enumerate()
            .map(|(n, (shard, (before, after)))| {
                let delta = after.commands.since(&before.commands);
                let scripts = script_calls(&delta);
                let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
                let own = peers.get(n).copied().unwrap_or_default();
                RelayShard {
                    addr: shard.addr.clone(),
                    slots: shard.slots,
                    receivers: own.receivers,
                    messages: own.messages,
                    commands: delta.total(),
                    commands_per_message: per(delta.total() as f64),
                    script_calls: scripts,
                    script_calls_per_message: per(scripts as f64),
                    publish: delta.calls("publish"),
                    publish_per_message: per(delta.calls("publish") as f64),
                    cpu_cores: cpu / seconds,
                    cpu_us_per_message: per(cpu * 1e6),
                    by_command: delta.by_command(),
                }
            })
            .collect();
        let mut by_command = BTreeMap::new();
        for shard in &figures {
            for (name, calls) in &shard.by_command {
                *by_command.entry(name.clone()).or_insert(0) += calls;
            }
        }
        let commands: u64 = figures.iter().map(|s| s.commands).sum();
        let scripts: u64 = figures.iter().map(|s| s.script_calls).sum();
        let cpu_cores: f64 = figures.iter().map(|s| s.cpu_cores).sum();
        let cpu_us: f64 = figures.iter().map(|s| s.cpu_us_per_message).sum();
        RelayRedis {
            commands,
            script_calls: scripts,
            commands_per_message: per(commands as f64),
            script_calls_per_message: per(scripts as f64),
            by_command,
            cpu_cores,
            cpu_us_per_message: cpu_us,
            shards: if cluster { figures } else { Vec::new() },
        }
    }

    /// The lines of the relay table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "  redis commands    {:>10.2} per message ({} in all; FCALLs {:.2} per message)\n\
             \x20 redis CPU         {:>10.2} cores ({:.1} µs per message)\n",
            self.commands_per_message,
            self.commands,
            self.script_calls_per_message,
            self.cpu_cores,
            self.cpu_us_per_message
        );
        if !self.shards.is_empty() {
            let all: u64 = self.shards.iter().map(|s| s.messages).sum();
            out += "  per shard (per message)   slots receivers  mail % commands  scripts  publish  CPU cores  CPU µs\n";
            for s in &self.shards {
                out += &format!(
                    "  {:<22} {:>8} {:>9} {:>7.1} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>7.1}\n",
                    s.addr,
                    s.slots,
                    s.receivers,
                    100.0 * s.messages as f64 / all.max(1) as f64,
                    s.commands_per_message,
                    s.script_calls_per_message,
                    s.publish_per_message,
                    s.cpu_cores,
                    s.cpu_us_per_message
                );
            }
        }
        out
    }
}

fn script_calls(counts: &CommandCounts) -> u64 {
    counts.calls("fcall") + counts.calls("evalsha")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(info: &str, cpu_seconds: f64) -> Snapshot {
        Snapshot {
            commands: CommandCounts::parse(info),
            cpu_seconds,
        }
    }

    #[test]
    fn shards_add_up_to_the_totals() {
        let shards = [
            Shard {
                addr: "a:1".into(),
                slots: 8192,
            },
            Shard {
                addr: "b:2".into(),
                slots: 8192,
            },
        ];
        let before = [
            snapshot("cmdstat_fcall:calls=10\r\ncmdstat_publish:calls=1\r\n", 1.0),
            snapshot("cmdstat_evalsha:calls=5\r\n", 2.0),
        ];
        let after = [
            snapshot(
                "cmdstat_fcall:calls=30\r\ncmdstat_publish:calls=11\r\ncmdstat_hget:calls=40\r\n",
                1.5,
            ),
            snapshot(
                "cmdstat_evalsha:calls=25\r\ncmdstat_publish:calls=10\r\n",
                2.25,
            ),
        ];
        let peers = [
            ShardPeers {
                receivers: 3,
                messages: 15,
            },
            ShardPeers {
                receivers: 1,
                messages: 5,
            },
        ];
        let figures = RelayRedis::between(&shards, (&before, &after), &peers, 20, 2.0, true);
        assert_eq!(figures.commands, 20 + 10 + 40 + 20 + 10);
        assert_eq!(figures.script_calls, 40);
        assert_eq!(figures.by_command.get("publish"), Some(&20));
        assert!((figures.script_calls_per_message - 2.0).abs() < 1e-9);
        assert!((figures.cpu_cores - 0.375).abs() < 1e-9);
        assert!((figures.cpu_us_per_message - 37_500.0).abs() < 1e-6);
        let [a, b] = [&figures.shards[0], &figures.shards[1]];
        assert_eq!((a.receivers, b.receivers), (3, 1));
        assert_eq!((a.messages, b.messages), (15, 5));
        assert_eq!((a.commands, b.commands), (70, 30));
        assert_eq!((a.publish, b.publish), (10, 10));
        assert!((a.cpu_us_per_message - 25_000.0).abs() < 1e-6);
        let table = figures.table();
        assert!(
            table.contains("per shard") && table.contains("b:2"),
            "{table}"
        );
        // A standalone Redis has no per-shard figures.
        let one = RelayRedis::between(
            &shards[..1],
            (&before[..1], &after[..1]),
            &[],
            20,
            2.0,
            false,
        );
        assert!(one.shards.is_empty() && !one.table().contains("per shard"));
    }
}
