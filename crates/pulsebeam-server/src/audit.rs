//! The audit trail: one JSON object per line for every authentication failure, policy refusal,
//! revocation, admin call and configuration reload.
//!
//! Events name who and what (kid, project, group, peer, remote address, reason), never a token,
//! a secret or a credential. They go to a file rotated by size, written by a thread of its own
//! so no call waits on the disk (when the disk cannot keep up, events are dropped and counted),
//! or, without a file, to the log under the target `pulsebeam::audit`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::AuditConfig;

/// Events waiting for the writer thread; beyond this they are dropped and counted.
const QUEUE: usize = 8192;

/// Where events go.
pub(crate) struct Audit {
    file: Option<SyncSender<String>>,
    written: AtomicU64,
    dropped: AtomicU64,
}

/// One audit event: its kind and fields.
pub(crate) struct Event {
    kind: &'static str,
    fields: Map<String, Value>,
}

impl Event {
    pub(crate) fn new(kind: &'static str) -> Self {
        Event {
            kind,
            fields: Map::new(),
        }
    }

    /// Adds a field; `None` values are left out.
    #[must_use]
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        if !value.is_null() {
            self.fields.insert(key.to_owned(), value);
        }
        self
    }

    /// Adds the caller's address, when known.
    #[must_use]
    pub(crate) fn remote(self, remote: Option<SocketAddr>) -> Self {
        self.with("remote", remote.map(|r| r.to_string()))
    }

    fn line(self) -> String {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
        let mut object = Map::new();
        object.insert("ts".into(), json!(ts));
        object.insert("event".into(), json!(self.kind));
        object.extend(self.fields);
        Value::Object(object).to_string()
    }
}

impl Audit {
    /// Audit events as `config` says: to a rotated file, or to the log.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending.
    pub(crate) fn new(config: &AuditConfig) -> std::io::Result<Self> {
        let file = match &config.file {
            None => None,
            Some(path) => {
                let writer = Writer::open(path, config.max_file_bytes, config.keep_files)?;
                let (tx, rx) = sync_channel(QUEUE);
                std::thread::Builder::new()
                    .name("pulsebeam-audit".into())
                    .spawn(move || writer.run(&rx))?;
                Some(tx)
            }
        };
        Ok(Audit {
            file,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Records `event`.
    pub(crate) fn record(&self, event: Event) {
        let line = event.line();
        match &self.file {
            None => {
                tracing::info!(target: "pulsebeam::audit", "{line}");
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Some(tx) => match tx.try_send(line) {
                Ok(()) => {
                    self.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    /// Events recorded and events dropped so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The file end: appends lines, rotates by size.
struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: u32,
}

impl Writer {
    fn open(path: &Path, max: u64, keep: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_owned(),
            file,
            size,
            max,
            keep,
        })
    }

    fn run(mut self, lines: &Receiver<String>) {
        while let Ok(line) = lines.recv() {
            if let Err(err) = self.write(&line) {
                tracing::error!(error = %err, path = %self.path.display(), "cannot write the audit trail");
            }
        }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.file.flush()?;
        self.size += line.len() as u64 + 1;
        Ok(())
    }

    /// FILE -> FILE.1 -> FILE.2 ... up to FILE.keep; the oldest falls off.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines_and_the_file_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let config = AuditConfig {
            file: Some(path.clone()),
            max_file_bytes: 4096,
            keep_files: 2,
        };
        let audit = Audit::new(&config).unwrap();
        for i in 0..200 {
            audit.record(
                Event::new("auth_failure")
                    .with("kid", format!("kid_{i:016}"))
                    .with("reason", "token_expired")
                    .with("missing", Value::Null),
            );
        }
        drop(audit);
        // The writer drains its queue once the sender is gone.
        let mut lines = Vec::new();
        for _ in 0..100 {
            lines = [path.clone(), dir.path().join("audit.jsonl.1")]
                .iter()
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
                .collect();
            if lines.iter().any(|l| l.contains("kid_0000000000000199")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(dir.path().join("audit.jsonl.2").exists(), "rotated twice");
        assert!(!dir.path().join("audit.jsonl.3").exists(), "keeps two");
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        for line in &lines {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["event"], "auth_failure");
            assert!(v["ts"].as_f64().unwrap() > 1.6e9);
            assert!(v.get("missing").is_none());
        }
        assert!(lines.iter().any(|l| l.contains("kid_0000000000000199")));
    }
}
