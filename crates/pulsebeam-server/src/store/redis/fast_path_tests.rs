//! The fast paths of `deliver.lua` and `begin.lua` against the general path they stand for.
//!
//! Two copies of one peer get the same random calls (delivers, polls with and without
//! takeover and acknowledgement, takes, acks, the clock moving by a millisecond to minutes):
//! one copy through the library as it is, one through the library with `FAST_PATH` off. After
//! every call both copies must hold the same keys with the same contents, TTL or not, every key
//! of the peer must have a TTL, a mailbox hinted empty (`e:c`) must be, and the replies must be
//! the same. Both libraries read a clock the test sets (where the library reads
//! `TIME`), and push their wake-ups onto a list under the peer's prefix (where the library
//! publishes them), so wake-ups are compared as state too.
//!
//! A last test follows the hint a fast path trusts (`e:c`) through a case the random calls
//! cannot show: a `take` that may fill the mailbox takes it back.
//!
//! Needs the test Redis of `scripts/redis.sh` (`PULSEBEAM_TEST_REDIS_URL`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fred::clients::Client;
use fred::interfaces::{ClientLike, FunctionInterface, LuaInterface};
use fred::prelude::{Builder, Config};
use fred::types::{ClusterHash, CustomCommand, Value};

use super::scripts::{
    library_code_named, Ack, Begin, ConnId, Deliver, ScriptCall, Setting, Status, Take,
};

/// The peer's connections the calls name (all declared on every call).
const CONNS: [u32; 3] = [1, 2, 3];

/// The keys given that exist, as `[key, type, has a TTL (1/0), contents]`, in one round trip.
const DUMP: &str = r"
local out = {}
for _, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k).ok
  local v
  if t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  else v = {} end
  if t ~= 'none' then out[#out + 1] = {k, t, redis.call('PTTL', k) > 0 and 1 or 0, v} end
end
return out
";

/// Every key a call may write for the copy at `base`: the peer's, its connections', and the
/// wake-up lists of the nodes the polls name.
fn keys_of(base: &str) -> Vec<String> {
    let mut keys: Vec<String> = ["h", "conns", "d", "w:n1", "w:n2"]
        .iter()
        .map(|k| format!("{base}{k}"))
        .collect();
    for c in CONNS {
        keys.extend(["m", "r", "rv"].iter().map(|k| format!("{base}{k}:{c}")));
    }
    keys
}

/// A deterministic generator (xorshift64*), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        let len = u64::try_from(from.len()).unwrap();
        from[usize::try_from(self.next() % len).unwrap()]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One call, as both copies make it (each with its own prefix).
#[derive(Debug, Clone)]
enum Op {
    Deliver {
        conn: u32,
        capacity: u64,
        max_per_peer: u64,
        granted: bool,
        envelope: String,
    },
    Begin {
        conn: u32,
        node: &'static str,
        wait_ms: u64,
        max: u64,
        max_per_peer: u64,
        granted: bool,
        takeover: bool,
        ack_receipt: u64,
        batch_ms: u64,
    },
    Take {
        conn: u32,
        generation: i64,
        max: u64,
        last: bool,
    },
    Ack {
        conn: u32,
        receipts: Vec<u64>,
    },
}

const TTL_MS: u64 = 30_000;
const IDLE_MS: u64 = 15_000;
const KEEP_MS: u64 = 85_000;
const LEASE_MS: u64 = 5_000;

impl Op {
    /// The function's name in a library and the call's keys and arguments for the copy at
    /// `base`.
    fn parts(&self, base: &str) -> (&'static str, Vec<String>, Vec<Value>) {
        let h = format!("{base}h");
        let conns = format!("{base}conns");
        let d = format!("{base}d");
        let boxes: Vec<String> = CONNS
            .iter()
            .flat_map(|c| {
                [
                    format!("{base}m:{c}"),
                    format!("{base}r:{c}"),
                    format!("{base}rv:{c}"),
                ]
            })
            .collect();
        let base = base.to_owned();
        let channel_prefix = format!("{base}w:");
        match self.clone() {
            Op::Deliver {
                conn,
                capacity,
                max_per_peer,
                granted,
                envelope,
            } => {
                let (keys, args) = Deliver {
                    h,
                    conns,
                    d,
                    boxes,
                    base,
                    conn: ConnId(conn),
                    envelope: envelope.into(),
                    capacity: Setting(capacity),
                    ttl_ms: Setting(TTL_MS),
                    idle_ms: Setting(IDLE_MS),
                    max_per_peer: Setting(max_per_peer),
                    keep_ms: Setting(KEEP_MS),
                    granted,
                    channel_prefix,
                    sharded: false,
                    ack_lease_ms: Setting(LEASE_MS),
                }
                .into_parts();
                ("deliver", keys, args)
            }
            Op::Begin {
                conn,
                node,
                wait_ms,
                max,
                max_per_peer,
                granted,
                takeover,
                ack_receipt,
                batch_ms,
            } => {
                let (keys, args) = Begin {
                    h,
                    conns,
                    d,
                    boxes,
                    base,
                    conn: ConnId(conn),
                    node: node.to_owned(),
                    wait_ms,
                    max,
                    ack_lease_ms: Setting(LEASE_MS),
                    ttl_ms: Setting(TTL_MS),
                    idle_ms: Setting(IDLE_MS),
                    max_per_peer: Setting(max_per_peer),
                    keep_ms: KEEP_MS + wait_ms,
                    granted,
                    channel_prefix,
                    sharded: false,
                    budget_span_ms: IDLE_MS.max(TTL_MS) + wait_ms,
                    grace_ms: Setting(2_000),
                    takeover,
                    ack_receipt,
                    batch_ms,
                }
                .into_parts();
                ("begin", keys, args)
            }
            Op::Take {
                conn,
                generation,
                max,
                last,
            } => {
                let (keys, args) = Take {
                    h,
                    conns,
                    d,
                    boxes,
                    base,
                    conn: ConnId(conn),
                    generation,
                    max,
                    ack_lease_ms: Setting(LEASE_MS),
                    ttl_ms: Setting(TTL_MS),
                    last,
                    keep_ms: Setting(KEEP_MS),
                }
                .into_parts();
                ("take", keys, args)
            }
            Op::Ack { conn, receipts } => {
                let (keys, args) = Ack {
                    h,
                    conns,
                    d,
                    boxes,
                    base,
                    conn: ConnId(conn),
                    receipts,
                }
                .into_parts();
                ("ack", keys, args)
            }
        }
    }
}

/// A copy of the library: the clock and the wake-ups redirected, the fast path on or off.
fn variant(name: &str, clock: &str, fast: bool) -> String {
    let replace = |code: String, from: &str, to: &str, at_least: usize| {
        let n = code.matches(from).count();
        assert!(n >= at_least, "{from:?} found {n} times in the library");
        code.replace(from, to)
    };
    let mut code = library_code_named(name);
    code = replace(
        code,
        "redis.call('TIME')",
        &format!("redis.call('HMGET', '{clock}', 's', 'us')"),
        1,
    );
    code = replace(code, "'SPUBLISH'", "'RPUSH'", 4);
    code = replace(code, "'PUBLISH'", "'RPUSH'", 4);
    if fast {
        // Counts the calls that took a fast path, and three of its shortcuts: a deliver to a
        // waiting poll that did not count the mailbox, a begin whose reservations' key lived
        // on, a mailbox taken whole as the reservations' key (by either path).
        for (marker, field, at_least) in [
            ("-- (the fast path)", "fast", 3),
            ("-- (not counted)", "uncounted", 1),
            ("-- (reservations kept)", "kept", 1),
            ("-- (taken whole)", "whole", 1),
        ] {
            code = replace(
                code,
                marker,
                &format!("redis.call('HINCRBY', '{clock}', '{field}', 1)"),
                at_least,
            );
        }
        code
    } else {
        replace(code, "local FAST_PATH = true", "local FAST_PATH = false", 1)
    }
}

async fn command(client: &Client, name: &'static str, args: Vec<Value>) -> Value {
    client
        .custom(
            CustomCommand::new_static(name, ClusterHash::FirstKey, false),
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A value as text, `base` written as `<base>`.
fn text(value: &Value, base: &str) -> String {
    let plain = match value {
        Value::Array(values) => {
            let parts: Vec<String> = values.iter().map(|v| text(v, base)).collect();
            return format!("[{}]", parts.join(", "));
        }
        Value::String(s) => s.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    plain.replace(base, "<base>")
}

/// Every key of the copy at `base`, by its name after `base`: type, TTL or not, contents
/// (a hash's fields sorted: the order they were written in does not matter).
async fn state(client: &Client, base: &str) -> BTreeMap<String, String> {
    let dump: Value = client
        .eval(DUMP, keys_of(base), Vec::<String>::new())
        .await
        .expect("dump");
    let Value::Array(keys) = dump else {
        panic!("dump: {dump:?}")
    };
    let mut out = BTreeMap::new();
    for key in keys {
        let Value::Array(parts) = key else {
            panic!("dump: {key:?}")
        };
        let name = text(&parts[0], base);
        let kind = text(&parts[1], base);
        let ttl = text(&parts[2], base);
        let Value::Array(contents) = &parts[3] else {
            panic!("dump: {parts:?}")
        };
        let mut contents: Vec<String> = contents.iter().map(|v| text(v, base)).collect();
        if kind == "hash" {
            let mut pairs: Vec<String> = contents
                .chunks(2)
                .map(|pair| format!("{}={}", pair[0], pair[1]))
                .collect();
            pairs.sort();
            contents = pairs;
        }
        out.insert(name, format!("{kind} ttl={ttl} {contents:?}"));
    }
    out
}

/// What a state's reservations must be: every message a connection's reservations' key holds
/// is listed in `v:c` (a lease that runs out, or a takeover, hands back only what is listed),
/// no message is both in the mailbox and reserved, and none has a sequence number above the
/// peer's `seq`.
fn reservations_are_listed(state: &BTreeMap<String, String>, context: &str) {
    let last: u64 = hash_field(state, "seq").map_or(0, |s| s.parse().unwrap());
    for c in CONNS {
        let listed: Vec<u64> = hash_field(state, &format!("v:{c}"))
            .unwrap_or("")
            .split(';')
            .flat_map(|entry| entry.split_whitespace().skip(2))
            .map(|s| s.parse().unwrap())
            .collect();
        let held = zset_scores(state, &format!("<base>r:{c}"));
        let waiting = zset_scores(state, &format!("<base>m:{c}"));
        for s in &held {
            assert!(
                listed.contains(s),
                "message {s} reserved for {c} is not listed in v:{c}: {context}\n{state:#?}"
            );
            assert!(
                !waiting.contains(s),
                "message {s} of {c} is both waiting and reserved: {context}\n{state:#?}"
            );
        }
        for s in held.iter().chain(&waiting) {
            assert!(
                *s <= last,
                "message {s} of {c} is past seq {last}: {context}"
            );
        }
    }
}

/// The members of a sorted set in a state, each with its score (empty when there is none).
fn zset<'s>(state: &'s BTreeMap<String, String>, key: &str) -> Vec<(&'s str, &'s str)> {
    let Some(value) = state.get(key) else {
        return Vec::new();
    };
    let list = &value[value.find('[').expect("a zset's contents") + 1..value.len() - 1];
    let items: Vec<&str> = list.split(", ").map(|s| s.trim_matches('"')).collect();
    items.chunks(2).map(|pair| (pair[0], pair[1])).collect()
}

/// The scores of a sorted set in a state (empty when there is none).
fn zset_scores(state: &BTreeMap<String, String>, key: &str) -> Vec<u64> {
    zset(state, key)
        .into_iter()
        .map(|(_, score)| score.parse().unwrap())
        .collect()
}

/// Field `name` of the peer's hash in a state (`state`), if it is there.
fn hash_field<'s>(state: &'s BTreeMap<String, String>, name: &str) -> Option<&'s str> {
    let hash = state.get("<base>h")?;
    let start = hash.find(&format!("\"{name}="))? + name.len() + 2;
    let len = hash[start..].find('"')?;
    Some(&hash[start..start + len])
}

/// The differences of two states, for a failure's message.
fn diff(fast: &BTreeMap<String, String>, general: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for key in fast.keys().chain(general.keys()) {
        let (a, b) = (fast.get(key), general.get(key));
        if a != b && !out.contains(&format!("{key}:")) {
            let _ = writeln!(out, "{key}:\n  fast    {a:?}\n  general {b:?}");
        }
    }
    out
}

/// What the runs exercised, to show that both paths and every branch of them were taken.
#[derive(Debug, Default)]
struct Seen {
    fast_handovers: u32,
    /// Fast delivers that knew the mailbox empty without counting it (handed over, or stored).
    fast_delivers_uncounted: u32,
    fast_into_mailbox: u32,
    general_delivers: u32,
    fast_begins_acknowledging: u32,
    fast_begins_taking: u32,
    fast_begins_with_takeover: u32,
    /// Fast begins that reserved into the key of the reservations they acknowledged.
    fast_begins_keeping_reservations: u32,
    /// Mailboxes taken whole as the reservations' key, by the fast library's paths.
    taken_whole: u32,
    general_begins: u32,
    fast_acks_acknowledging: u32,
    fast_acks_of_nothing: u32,
    general_acks: u32,
}

/// A random call; `busy`, one connection's stream: its polls acknowledge what the one before
/// took, and seldom take over.
fn random_op(rng: &mut Rng, generations: &BTreeMap<u32, i64>, busy: bool) -> Op {
    let conn = if busy { 1 } else { rng.pick(&[1, 1, 1, 2, 3]) };
    let generation = generations.get(&conn).copied().unwrap_or(0);
    let receipt = u64::try_from(generation.max(0)).unwrap();
    let max_per_peer = rng.pick(&[2, 8, 8, 8]);
    let granted = rng.chance(90);
    match rng.next() % 100 {
        0..=39 => Op::Deliver {
            conn: if rng.chance(10) { 0 } else { conn },
            capacity: rng.pick(&[2, 64, 64]),
            max_per_peer,
            granted,
            envelope: format!("m{}", rng.next() % 1000),
        },
        40..=74 => Op::Begin {
            conn,
            node: rng.pick(&["n1", "n1", "n2"]),
            wait_ms: rng.pick(&[20_000, 20_000, 0]),
            max: rng.pick(&[64, 64, 1, 0]),
            max_per_peer,
            granted,
            takeover: rng.chance(if busy { 5 } else { 40 }),
            ack_receipt: if busy && rng.chance(80) {
                receipt
            } else {
                rng.pick(&[0, receipt, receipt, receipt.saturating_sub(1), 77])
            },
            batch_ms: rng.pick(&[5, 5, 0]),
        },
        75..=87 => Op::Take {
            conn,
            generation: rng.pick(&[generation, generation, generation - 1]),
            max: rng.pick(&[64, 1, 0]),
            last: rng.chance(50),
        },
        _ => Op::Ack {
            conn,
            receipts: if rng.chance(70) {
                vec![receipt]
            } else {
                vec![receipt.saturating_sub(1), receipt]
            },
        },
    }
}

/// How many times the fast library passed the marker counted in `field` (`variant`).
async fn count(client: &Client, clock: &str, field: &str) -> i64 {
    let v = command(client, "HGET", vec![clock.into(), field.into()]).await;
    v.as_i64().unwrap_or(0)
}

/// Hand-overs in a copy's wake-up lists (a hand-over's wake-up starts with byte 1).
fn handovers(state: &BTreeMap<String, String>) -> usize {
    state
        .iter()
        .filter(|(key, _)| key.starts_with("<base>w:"))
        .map(|(_, v)| v.matches("\"\\u{1}").count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_paths_do_what_the_general_path_does() {
    let Ok(url) = std::env::var("PULSEBEAM_TEST_REDIS_URL") else {
        eprintln!("SKIP the_fast_paths_do_what_the_general_path_does: PULSEBEAM_TEST_REDIS_URL is not set");
        return;
    };
    let client = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let id = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let clock = format!("pbtest-clock-{id}");
    let (fast_lib, general_lib) = (format!("pbtest_fast_{id}"), format!("pbtest_general_{id}"));
    let _: Value = client
        .function_load(true, variant(&fast_lib, &clock, true))
        .await
        .unwrap();
    let _: Value = client
        .function_load(true, variant(&general_lib, &clock, false))
        .await
        .unwrap();

    let mut seen = Seen::default();
    // The later seeds run as a busy relay does: one connection's stream, the clock moving by
    // milliseconds, so that most calls take a fast path.
    for seed in 1..=18u64 {
        let busy = seed > 12;
        let steps: &[u64] = if !busy {
            &[
                0, 0, 1, 1, 2, 4, 7, 50, 400, 1_100, 3_000, 6_000, 16_000, 31_000, 90_000,
            ]
        } else {
            &[0, 0, 1, 1, 2, 4, 7, 50]
        };
        let fast_base = format!("pbtest-{id}-{seed}-f:{{p:g:a}}:");
        let general_base = format!("pbtest-{id}-{seed}-g:{{p:g:a}}:");
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut now_ms: u64 = 1_800_000_000_000;
        let mut generations = BTreeMap::new();
        let mut fast_state = BTreeMap::new();
        for step in 0..300 {
            now_ms += rng.pick(steps);
            let _ = command(
                &client,
                "HSET",
                vec![
                    clock.as_str().into(),
                    "s".into(),
                    (now_ms / 1000).to_string().into(),
                    "us".into(),
                    (now_ms % 1000 * 1000).to_string().into(),
                ],
            )
            .await;
            let op = random_op(&mut rng, &generations, busy);
            let before = count(&client, &clock, "fast").await;
            let mut replies = Vec::new();
            let mut fast_reply = None;
            for (lib, base) in [(&fast_lib, &fast_base), (&general_lib, &general_base)] {
                let (stem, keys, args) = op.parts(base);
                let reply: Result<Value, _> =
                    client.fcall(format!("{lib}_{stem}"), keys, args).await;
                replies.push(match &reply {
                    Ok(v) => text(v, base),
                    Err(e) => format!("error {}", e.details().replace(base.as_str(), "<base>")),
                });
                fast_reply.get_or_insert(reply);
            }
            let fast = count(&client, &clock, "fast").await > before;
            let handovers_before = handovers(&fast_state);
            let state_before = std::mem::replace(&mut fast_state, state(&client, &fast_base).await);
            let general_state = state(&client, &general_base).await;
            let context = format!(
                "seed {seed}, step {step}, clock {now_ms}, {op:?}, fast path {fast}, before it: {state_before:#?}"
            );
            assert_eq!(replies[0], replies[1], "replies differ: {context}");
            // Every key of the peer a call leaves expires on its own (the test's wake-up lists
            // stand for pub/sub and have none).
            for (key, value) in &fast_state {
                assert!(
                    key.starts_with("<base>w:") || value.contains(" ttl=Integer(1) "),
                    "{key} has no TTL: {context}\n{fast_state:#?}"
                );
            }
            reservations_are_listed(&fast_state, &context);
            let conns = zset(&fast_state, "<base>conns");
            for c in CONNS {
                // An open connection is in the connection set, which idle connections and
                // evictions are found by.
                if hash_field(&fast_state, &format!("o:{c}")).is_some() {
                    assert!(
                        conns.iter().any(|(member, _)| *member == c.to_string()),
                        "{c} is open but not in conns: {context}\n{fast_state:#?}"
                    );
                }
                // The hint both paths trust: a mailbox its poll emptied (`e:c` is the poll's
                // generation) is empty.
                let generation = hash_field(&fast_state, &format!("g:{c}"));
                if generation.is_some_and(|g| g != "0")
                    && hash_field(&fast_state, &format!("e:{c}")) == generation
                {
                    assert!(
                        !fast_state.contains_key(&format!("<base>m:{c}")),
                        "the mailbox of {c} is hinted empty: {context}\n{fast_state:#?}"
                    );
                }
            }
            assert!(
                fast_state == general_state,
                "states differ: {context}\n{}",
                diff(&fast_state, &general_state)
            );
            let Some(Ok(reply)) = fast_reply else {
                panic!("{context}: {}", replies[0]);
            };
            match &op {
                Op::Deliver { .. } if fast => {
                    if handovers(&fast_state) > handovers_before {
                        seen.fast_handovers += 1;
                    } else {
                        seen.fast_into_mailbox += 1;
                    }
                }
                Op::Deliver { .. } => seen.general_delivers += 1,
                Op::Begin { conn, takeover, .. } => {
                    let begun = Begin::read(reply).unwrap_or_else(|e| panic!("{context}: {e}"));
                    if begun.status == Status::Ok {
                        generations.insert(*conn, begun.generation);
                    }
                    if !fast {
                        seen.general_begins += 1;
                    } else {
                        seen.fast_begins_with_takeover += u32::from(*takeover);
                        seen.fast_begins_acknowledging += u32::from(begun.acknowledged > 0);
                        seen.fast_begins_taking += u32::from(!begun.messages.is_empty());
                    }
                }
                Op::Ack { .. } if fast => {
                    let acked = Ack::read(reply).unwrap_or_else(|e| panic!("{context}: {e}"));
                    if acked.acknowledged == 0 {
                        seen.fast_acks_of_nothing += 1;
                    } else {
                        seen.fast_acks_acknowledging += 1;
                    }
                }
                Op::Ack { .. } => seen.general_acks += 1,
                Op::Take { .. } => {}
            }
        }
        for base in [&fast_base, &general_base] {
            let keys: Vec<Value> = keys_of(base).into_iter().map(Value::from).collect();
            let _ = command(&client, "DEL", keys).await;
        }
    }
    seen.fast_delivers_uncounted =
        u32::try_from(count(&client, &clock, "uncounted").await).unwrap();
    seen.fast_begins_keeping_reservations =
        u32::try_from(count(&client, &clock, "kept").await).unwrap();
    seen.taken_whole = u32::try_from(count(&client, &clock, "whole").await).unwrap();
    let _: Result<Value, _> = client.function_delete(&fast_lib).await;
    let _: Result<Value, _> = client.function_delete(&general_lib).await;
    let _ = command(&client, "DEL", vec![clock.into()]).await;
    eprintln!("{seen:?}");
    // Both paths were taken, and each branch of the fast ones, many times.
    for (what, n) in [
        ("fast hand-overs", seen.fast_handovers),
        ("fast delivers into the mailbox", seen.fast_into_mailbox),
        ("general delivers", seen.general_delivers),
        ("fast begins acknowledging", seen.fast_begins_acknowledging),
        ("fast begins taking", seen.fast_begins_taking),
        ("fast begins with takeover", seen.fast_begins_with_takeover),
        ("general begins", seen.general_begins),
        ("fast acks acknowledging", seen.fast_acks_acknowledging),
        ("fast acks of nothing", seen.fast_acks_of_nothing),
        ("general acks", seen.general_acks),
        (
            "fast hand-overs without a count",
            seen.fast_delivers_uncounted,
        ),
        (
            "fast begins keeping their reservations' key",
            seen.fast_begins_keeping_reservations,
        ),
        ("mailboxes taken whole", seen.taken_whole),
    ] {
        assert!(n >= 20, "{what}: {n} ({seen:?})");
    }
}

/// One fast library of a test's own, with its clock and a peer's prefix (`tag` names them).
struct Fixture {
    client: Client,
    clock: String,
    lib: String,
    base: String,
}

impl Fixture {
    /// `None` (the test skips) without the test Redis.
    async fn new(test: &str, tag: &str) -> Option<Fixture> {
        let Ok(url) = std::env::var("PULSEBEAM_TEST_REDIS_URL") else {
            eprintln!("SKIP {test}: PULSEBEAM_TEST_REDIS_URL is not set");
            return None;
        };
        let client = Builder::from_config(Config::from_url(&url).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        let id = format!("{:x}", std::process::id());
        let clock = format!("pbtest-{tag}-clock-{id}");
        let lib = format!("pbtest_{tag}_{id}");
        let _: Value = client
            .function_load(true, variant(&lib, &clock, true))
            .await
            .unwrap();
        let base = format!("pbtest-{tag}-{id}:{{p:g:a}}:");
        let fixture = Fixture {
            client,
            clock,
            lib,
            base,
        };
        fixture.set_clock(1_800_000_000_000).await;
        Some(fixture)
    }

    async fn set_clock(&self, ms: u64) {
        let args = vec![
            Value::from(self.clock.as_str()),
            "s".into(),
            (ms / 1000).to_string().into(),
            "us".into(),
            (ms % 1000 * 1000).to_string().into(),
        ];
        let _ = command(&self.client, "HSET", args).await;
    }

    async fn call(&self, op: Op) -> Value {
        let (stem, keys, args) = op.parts(&self.base);
        self.client
            .fcall(format!("{}_{stem}", self.lib), keys, args)
            .await
            .unwrap()
    }

    async fn zcard(&self, key: &str) -> Option<i64> {
        let v = command(
            &self.client,
            "ZCARD",
            vec![format!("{}{key}", self.base).into()],
        )
        .await;
        v.as_i64()
    }

    async fn remove(self) {
        let mut keys: Vec<Value> = keys_of(&self.base).into_iter().map(Value::from).collect();
        keys.push(self.clock.as_str().into());
        let _ = command(&self.client, "DEL", keys).await;
        let _: Result<Value, _> = self.client.function_delete(&self.lib).await;
    }
}

/// The hint that a waiting poll's mailbox is empty (`e:c`) is written by its `begin` and taken
/// back by a `take` that may have filled the mailbox: one that put back a reservation whose
/// lease ran out and took nothing (asked for none). A deliver after it counts the mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_that_may_fill_the_mailbox_takes_back_the_empty_hint() {
    let Some(f) = Fixture::new(
        "a_take_that_may_fill_the_mailbox_takes_back_the_empty_hint",
        "hint",
    )
    .await
    else {
        return;
    };
    let hint = || async {
        let h = format!("{}h", f.base);
        text(
            &command(&f.client, "HGET", vec![h.into(), "e:1".into()]).await,
            &f.base,
        )
    };
    let deliver = |envelope: &str| Op::Deliver {
        conn: 1,
        capacity: 64,
        max_per_peer: 8,
        granted: true,
        envelope: envelope.to_owned(),
    };
    let begin = Op::Begin {
        conn: 1,
        node: "n1",
        wait_ms: 20_000,
        max: 64,
        max_per_peer: 8,
        granted: true,
        takeover: false,
        ack_receipt: 0,
        batch_ms: 5,
    };
    // A poll takes m1 and nobody acknowledges it; the next poll waits on an empty mailbox.
    f.call(deliver("m1")).await;
    f.call(begin.clone()).await;
    f.call(begin.clone()).await;
    assert_eq!(hint().await, "2", "the second poll found its mailbox empty");
    // m1's lease runs out; a take that asks for nothing puts it back in the mailbox.
    f.set_clock(1_800_000_000_000 + LEASE_MS + 1).await;
    f.call(Op::Take {
        conn: 1,
        generation: 2,
        max: 0,
        last: false,
    })
    .await;
    assert_eq!(f.zcard("m:1").await, Some(1), "m1 is back in the mailbox");
    assert_eq!(hint().await, "0", "the take took the hint back");
    // So mail for the poll goes behind m1, not handed over ahead of it.
    let uncounted = count(&f.client, &f.clock, "uncounted").await;
    f.call(deliver("m2")).await;
    assert_eq!(count(&f.client, &f.clock, "uncounted").await, uncounted);
    assert_eq!(f.zcard("m:1").await, Some(2), "m2 waits behind m1");
    f.remove().await;
}

/// A call's settings (`Kind::Setting`) go as one string the library reads once and keeps, at
/// most 64 of them: calls with more distinct settings than that each still get their own.
/// Here each deliver's capacity is one more than the messages already waiting, so each is
/// accepted, and a deliver at the capacity of an earlier call (a string read before the
/// library's store of them was emptied) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_with_many_distinct_settings_each_read_their_own() {
    let Some(f) = Fixture::new(
        "calls_with_many_distinct_settings_each_read_their_own",
        "settings",
    )
    .await
    else {
        return;
    };
    let deliver = |capacity: u64| {
        let f = &f;
        async move {
            let reply = f
                .call(Op::Deliver {
                    conn: 1,
                    capacity,
                    max_per_peer: 8,
                    granted: true,
                    envelope: format!("m{capacity}"),
                })
                .await;
            Deliver::read(reply).unwrap().status
        }
    };
    for capacity in 1..=100 {
        assert_eq!(deliver(capacity).await, Status::Ok, "capacity {capacity}");
    }
    assert_eq!(deliver(100).await, Status::Full);
    assert_eq!(deliver(3).await, Status::Full);
    assert_eq!(deliver(101).await, Status::Ok);
    f.remove().await;
}
