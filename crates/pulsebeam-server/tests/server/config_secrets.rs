//! A reload refused because the file is broken where it holds a secret: the refusal is logged
//! and audited, and neither the log nor the audit trail says the secret.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulsebeam_server::{Config, Server};
use pulsebeam_token::KeyPair;

/// A secret split at a `/`, as a Redis password may be: neither half may be shown.
const HEAD: &str = "Sekr3tHead";
const TAIL: &str = "Passw0rdTail";
/// A secret written as a number (a TOML value without quotes).
const NUMBER: &str = "98765432123";

/// Every log event's fields, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, "{}={value} ", field.name());
    }
}

impl tracing::Subscriber for Log {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut text = self.0.lock().unwrap();
        span.record(&mut Fields(&mut text));
        text.push('\n');
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut text = self.0.lock().unwrap();
        values.record(&mut Fields(&mut text));
        text.push('\n');
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = self.0.lock().unwrap();
        let _ = write!(text, "{} ", event.metadata().target());
        event.record(&mut Fields(&mut text));
        text.push('\n');
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A valid file: one project, with `extra` (an `[audit]` table or nothing) at its end.
fn valid_file(pair: &KeyPair, extra: &str) -> String {
    format!(
        "[[projects]]\nid = \"main\"\n[[projects.keys]]\nkid = \"{}\"\npublic_key = \"{}\"\n{extra}",
        pair.api_key(),
        pair.public_key().to_hex()
    )
}

/// Broken tails, each at a line of a key that holds a secret.
fn broken_tails() -> Vec<String> {
    let s = format!("{HEAD}/{TAIL}");
    vec![
        format!("[[ice.turn]]\nurls = [\"turn:t:3478\"]\nsecret = \"{s}\n"),
        format!("[[ice.turn]]\nurls = [\"turn:t:3478\"]\nsecret = \"\"\"{s}\n"),
        format!("[[ice.turn]]\nurls = [\"turn:t:3478\"]\nsecret = {NUMBER}\n"),
        format!("[store]\nbackend = \"redis\"\nurls = [\"redis://app:{s}@10.0.0.5:6379\"\n"),
        format!("[store]\nbackend = \"redis\"\nurls = \"redis://app:{s}@10.0.0.5:6379\"\n"),
        format!("[store]\nbackend = \"redis\"\nurls = [\"foo://app:{s}@10.0.0.5:6379\"]\n"),
        format!("[usage]\nturn_stats_url = \"redis://:{s}@127.0.0.1:6379\n"),
        format!("[usage]\nturn_stats_url = \"http://:{s}@127.0.0.1:6379\"\n"),
        format!("[admin]\ntoken_sha256 = \"{s}\n"),
        format!("[admin]\ntoken_sha256 = {NUMBER}\n"),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for piece in [HEAD, TAIL, NUMBER] {
        assert!(
            !text.contains(piece),
            "{what} holds a secret ({piece}):\n{text}"
        );
    }
}

/// Starts a server from `file` and reloads every broken variant of it; the log as seen
/// meanwhile, and how many reloads were refused.
fn reload_broken_files(file: &Path, pair: &KeyPair, audit: &str) -> (String, usize) {
    std::fs::write(file, valid_file(pair, audit)).unwrap();
    let server = Server::builder(Config::from_file(file).unwrap())
        .config_file(file)
        .build()
        .unwrap();
    let log = Log::default();
    let _capture = tracing::subscriber::set_default(log.clone());
    let tails = broken_tails();
    for tail in &tails {
        // The broken table comes last, after `[audit]`, so the file's own settings still parse.
        std::fs::write(file, valid_file(pair, &format!("{audit}{tail}"))).unwrap();
        let err = server.reload_from_file().unwrap_err().to_string();
        assert_no_secret("the reload error", &err);
        assert!(err.contains("running configuration stays"), "{err}");
    }
    (log.text(), tails.len())
}

#[tokio::test]
async fn a_refused_reload_logs_and_audits_no_secret_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pulsebeam.toml");
    let trail = dir.path().join("audit.jsonl");
    let pair = KeyPair::generate().unwrap();
    let audit = format!("[audit]\nfile = \"{}\"\n", trail.display());
    let (log, refused) = reload_broken_files(&file, &pair, &audit);
    assert_eq!(
        log.matches("configuration reload refused").count(),
        refused,
        "{log}"
    );
    assert_no_secret("the log", &log);
    // The audit file is written by a thread of its own: wait (boundedly) for every refusal.
    let mut lines = String::new();
    for _ in 0..200 {
        lines = std::fs::read_to_string(&trail).unwrap_or_default();
        if lines.matches("\"event\":\"reload\"").count() == refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.matches("\"ok\":false").count(), refused, "{lines}");
    assert_no_secret("the audit trail", &lines);
}

#[tokio::test]
async fn a_refused_reload_audited_to_the_log_says_no_secret_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pulsebeam.toml");
    let pair = KeyPair::generate().unwrap();
    let (log, refused) = reload_broken_files(&file, &pair, "");
    let audited = log
        .lines()
        .filter(|line| line.starts_with("pulsebeam::audit ") && line.contains("reload"))
        .count();
    assert_eq!(audited, refused, "{log}");
    assert_no_secret("the log", &log);
}
