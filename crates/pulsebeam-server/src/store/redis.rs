//! The Redis [`MailboxStore`]: every node of a deployment keeps its mail in one Redis server or
//! Redis Cluster, so any node serves any call.
//!
//! # Keys
//!
//! Ids are percent-escaped (every byte outside `A-Z a-z 0-9 _ . -`), so `:`, `{` and `}` in
//! ids cannot make two peers share a key or break a hash tag. With `P` the key prefix and
//! `T = {project:group:peer}` one hash tag per peer (so all of a peer's keys share one slot,
//! as Redis Cluster needs for a script to touch them):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:T:h` | hash | `seq` (the peer's sequence number) and per connection `c`: `g:c` poll generation, `n:c` node of the poll in flight, `l:c` its lease expiry (ms; 0 = no poll in flight), `s:c` when it began, `o:c` opened by a poll (`p`) or a sender (`m`), `b:c` budget refresh deadline |
//! | `P:T:conns` | sorted set | connection ids by last activity (ms) |
//! | `P:T:d` | sorted set | the discovery queue, by sequence number |
//! | `P:T:m:c` | sorted set | connection `c`'s mailbox, by sequence number |
//! | `P:T:r:c` | sorted set | its messages handed out and not yet acknowledged |
//! | `P:T:rv:c` | hash | receipt -> `lease-expiry seq seq …` |
//! | `P:{b:project}:polled`, `P:{b:project}:mail` | sorted set | the project's two budgets: members `T:c` (and `T:d` for a discovery queue), scored by expiry |
//!
//! A message is stored as the member `seq|ms|envelope`. Every key of a peer gets a TTL on each
//! write, long enough for its longest-lived content (message TTL or idle time, plus the longest
//! poll), so a peer nobody talks to any more vanishes by itself.
//!
//! # Round trips
//!
//! Each operation on a peer is one Lua script (`EVALSHA`, reloaded on `NOSCRIPT`) using Redis
//! server time (`TIME`) for leases and TTLs: `deliver` (capacity, discovery routing by poll
//! lease, sequence number, TTLs and the wake-up `PUBLISH`), `begin` (acknowledges what the
//! connection's previous poll handed out, registers the poll with node id, generation and lease,
//! ends an older poll, takes the discovery queue, hands out what is waiting), `take` (on wake-up
//! or at the deadline) and `ack`.
//!
//! An acknowledgement waits on the node for the connection's next poll there, which carries it;
//! only when none comes within 250 ms (the client polls elsewhere, or has gone) does `ack` go
//! out alone. So a relayed message costs three round trips: the sender's `deliver`, the
//! receiver's `take` (or `begin`, when the message was waiting) and the next `begin`, which
//! acknowledges it. An idle poll costs `begin` and `take` at its deadline, nothing while it
//! waits. Opening a connection or a discovery queue costs one more round trip, to the project's
//! budget; a budget entry is refreshed in the background about once per twice its span.
//!
//! # Wake-ups
//!
//! Each node has one subscriber connection on its own channel `P:node:<node id>` (a random id
//! per process). `deliver` publishes to the channel of the node whose poll is in flight for the
//! target connection, and `begin` to the node of a poll it replaces; the node wakes its local
//! waiter, which runs `take`. After the subscriber reconnects every local waiter is woken to
//! check again, so a wake-up lost while Redis was away costs at most that check.
//!
//! # Budgets on Redis Cluster
//!
//! A project's budgets live in their own slot, apart from the peers', so a script cannot count
//! them atomically with the peer's state. The node asks for a budget unit before a script may
//! open a connection or a discovery queue (the script answers "needs budget" and changes
//! nothing), then runs the script again. Entries expire by score instead of being removed when
//! a connection is forgotten, so a forgotten connection is counted up to about twice its idle
//! span (or TTL) longer: the count is approximate, erring on the side of refusing.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Builder, Config as FredConfig, Error as FredError, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    BoxFuture, Envelope, MailboxStore, OnlineConnection, PeerAddr, PollOptions, Polled, Receipt,
    StoreError, StoreStats,
};
use crate::config::{redact_url, Limits, StoreConfig};

/// Longest wait for Redis on any command; then the call answers `unavailable`.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest an acknowledgement waits for the connection's next poll on this node to carry it.
const ACK_FOLD_DELAY: Duration = Duration::from_millis(250);
/// A poll's lease outlives its wait by this much, so a slow node's live poll keeps counting.
const POLL_GRACE_MS: u64 = 2_000;

// Script answers.
const OK: i64 = 0;
const SUPERSEDED: i64 = 1;
const FULL: i64 = 2;
const TOO_MANY_PEER: i64 = 3;
const NEED_BUDGET: i64 = 4;

/// Shared by every peer script: keys, time, expiry, reservations, connections, budgets.
const PRELUDE: &str = r"
local base = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local H = base .. 'h'
local CONNS = base .. 'conns'
local D = base .. 'd'
local function M(c) return base .. 'm:' .. c end
local function R(c) return base .. 'r:' .. c end
local function RV(c) return base .. 'rv:' .. c end
local function num(v) return tonumber(v or '0') or 0 end
local function item_ms(m)
  local a = string.find(m, '|', 1, true)
  local b = string.find(m, '|', a + 1, true)
  return tonumber(string.sub(m, a + 1, b - 1))
end
local function expire(key, ttl)
  local n = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if now - item_ms(m) < ttl then break end
    redis.call('ZREM', key, m)
    n = n + 1
  end
  return n
end
local function words(s)
  local out = {}
  for w in string.gmatch(s, '%S+') do out[#out + 1] = w end
  return out
end
local function reclaim(c)
  local rv = redis.call('HGETALL', RV(c))
  for i = 1, #rv, 2 do
    local parts = words(rv[i + 1])
    if num(parts[1]) <= now then
      for j = 2, #parts do
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', R(c), parts[j], parts[j])) do
          redis.call('ZADD', M(c), parts[j], m)
        end
        redis.call('ZREMRANGEBYSCORE', R(c), parts[j], parts[j])
      end
      redis.call('HDEL', RV(c), rv[i])
    end
  end
end
local function ack(c, receipt)
  local v = redis.call('HGET', RV(c), receipt)
  if not v then return 0 end
  local parts = words(v)
  local n = 0
  for j = 2, #parts do
    n = n + redis.call('ZREMRANGEBYSCORE', R(c), parts[j], parts[j])
  end
  redis.call('HDEL', RV(c), receipt)
  return n
end
local function take(c, receipt, max, lease)
  local ms = redis.call('ZRANGE', M(c), 0, max - 1, 'WITHSCORES')
  local out, seqs = {}, {}
  for i = 1, #ms, 2 do
    out[#out + 1] = ms[i]
    seqs[#seqs + 1] = ms[i + 1]
    redis.call('ZADD', R(c), ms[i + 1], ms[i])
  end
  if #out > 0 then
    redis.call('ZREMRANGEBYRANK', M(c), 0, #out - 1)
    redis.call('HSET', RV(c), receipt, (now + lease) .. ' ' .. table.concat(seqs, ' '))
  end
  return out
end
local function held(c)
  return redis.call('ZCARD', M(c)) + redis.call('ZCARD', R(c))
end
local function drop_conn(c)
  redis.call('DEL', M(c), R(c), RV(c))
  redis.call('HDEL', H, 'g:' .. c, 'n:' .. c, 'l:' .. c, 's:' .. c, 'o:' .. c, 'b:' .. c)
  redis.call('ZREM', CONNS, c)
end
local function forget_idle(idle, ttl)
  local n = 0
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', CONNS, '-inf', now - idle)) do
    if num(redis.call('HGET', H, 'l:' .. c)) <= now then
      n = n + expire(M(c), ttl) + expire(R(c), ttl)
      if held(c) == 0 then drop_conn(c) end
    end
  end
  return n
end
local function open_conn(c, max_per_peer, opener)
  local evicted = 0
  if redis.call('ZCARD', CONNS) >= max_per_peer then
    local victim = nil
    for _, v in ipairs(redis.call('ZRANGE', CONNS, 0, -1)) do
      if num(redis.call('HGET', H, 'l:' .. v)) <= now then victim = v break end
    end
    if not victim then return -1 end
    evicted = held(victim)
    drop_conn(victim)
  end
  redis.call('ZADD', CONNS, now, c)
  redis.call('HSET', H, 'o:' .. c, opener)
  return evicted
end
local function budget_due(field, span)
  if num(redis.call('HGET', H, field)) < now + span then
    redis.call('HSET', H, field, now + 2 * span + 1000)
    return 1
  end
  return 0
end
local function keep(keep_ms, c)
  redis.call('PEXPIRE', H, keep_ms)
  redis.call('PEXPIRE', CONNS, keep_ms)
  redis.call('PEXPIRE', D, keep_ms)
  if c then
    redis.call('PEXPIRE', M(c), keep_ms)
    redis.call('PEXPIRE', R(c), keep_ms)
    redis.call('PEXPIRE', RV(c), keep_ms)
  end
end
";

/// ARGV: conn ('0' = discovery), envelope, capacity, ttl, idle, max per peer, keep, granted,
/// channel prefix.
/// Returns {status, budget refresh due (0/1), budget member suffix, evicted, expired}.
const DELIVER: &str = r"
local c, blob, cap, ttl, idle = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local max_per_peer, keep_ms, granted, chan = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]
local expired = forget_idle(idle, ttl)
local target = nil
local evicted = 0
if c == '0' then
  local best = -1
  for _, v in ipairs(redis.call('ZRANGE', CONNS, 0, -1)) do
    if num(redis.call('HGET', H, 'l:' .. v)) > now then
      local s = num(redis.call('HGET', H, 's:' .. v))
      if s > best then target, best = v, s end
    end
  end
else
  if not redis.call('ZSCORE', CONNS, c) then
    if granted ~= '1' then return {4, 0, c, 0, expired} end
    evicted = open_conn(c, max_per_peer, 'm')
    if evicted < 0 then return {3, 0, c, 0, expired} end
    redis.call('HSET', H, 'b:' .. c, now + 2 * ttl + 1000)
  end
  target = c
end
local due, member = 0, ''
if target then
  expired = expired + expire(M(target), ttl) + expire(R(target), ttl)
  if redis.call('ZCARD', M(target)) >= cap or held(target) >= 2 * cap then return {2, 0, '', evicted, expired} end
  local seq = redis.call('HINCRBY', H, 'seq', 1)
  redis.call('ZADD', M(target), seq, seq .. '|' .. now .. '|' .. blob)
  if num(redis.call('HGET', H, 'l:' .. target)) > now then
    redis.call('PUBLISH', chan .. (redis.call('HGET', H, 'n:' .. target) or ''), base .. target)
  end
  if redis.call('HGET', H, 'o:' .. target) == 'm' then
    due, member = budget_due('b:' .. target, ttl), target
  end
else
  expired = expired + expire(D, ttl)
  local n = redis.call('ZCARD', D)
  if n >= cap then return {2, 0, '', evicted, expired} end
  if n == 0 and granted ~= '1' then return {4, 0, 'd', 0, expired} end
  if n == 0 then redis.call('HSET', H, 'b:d', now + 2 * ttl + 1000) end
  local seq = redis.call('HINCRBY', H, 'seq', 1)
  redis.call('ZADD', D, seq, seq .. '|' .. now .. '|' .. blob)
  due, member = budget_due('b:d', ttl), 'd'
end
keep(keep_ms, target)
return {0, due, member, evicted, expired}
";

/// ARGV: conn, node, wait, max, ack lease, ttl, idle, max per peer, keep, granted, channel
/// prefix, budget span, poll lease grace, receipts to acknowledge first...
/// Returns {status, generation, budget refresh due, evicted, expired, acknowledged, messages...}.
const BEGIN: &str = r"
local c, node, wait, max, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, idle, max_per_peer, keep_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local granted, chan, span, grace = ARGV[10], ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13])
local acked = 0
for i = 14, #ARGV do acked = acked + ack(c, ARGV[i]) end
local expired = forget_idle(idle, ttl)
local opener = redis.call('HGET', H, 'o:' .. c)
local evicted = 0
if opener ~= 'p' then
  if granted ~= '1' then return {4, 0, 0, 0, expired} end
  if not opener then
    evicted = open_conn(c, max_per_peer, 'p')
    if evicted < 0 then return {3, 0, 0, 0, expired} end
  else
    redis.call('HSET', H, 'o:' .. c, 'p')
  end
  redis.call('HSET', H, 'b:' .. c, now + 2 * span + 1000)
end
if num(redis.call('HGET', H, 'l:' .. c)) > now then
  redis.call('PUBLISH', chan .. (redis.call('HGET', H, 'n:' .. c) or ''), base .. c)
end
local gen = redis.call('HINCRBY', H, 'g:' .. c, 1)
redis.call('HSET', H, 'n:' .. c, node, 'l:' .. c, now + wait + grace, 's:' .. c, now)
redis.call('ZADD', CONNS, now, c)
expired = expired + expire(D, ttl)
local queued = redis.call('ZRANGE', D, 0, -1, 'WITHSCORES')
for i = 1, #queued, 2 do
  redis.call('ZADD', M(c), queued[i + 1], queued[i])
end
redis.call('DEL', D)
expired = expired + expire(M(c), ttl) + expire(R(c), ttl)
reclaim(c)
local out = take(c, gen, max, lease)
if #out > 0 or wait == 0 then
  redis.call('HSET', H, 'l:' .. c, 0)
end
local due = budget_due('b:' .. c, span)
keep(keep_ms, c)
local reply = {0, gen, due, evicted, expired, acked}
for _, m in ipairs(out) do reply[#reply + 1] = m end
return reply
";

/// ARGV: conn, generation, max (0: take nothing), ack lease, ttl, final, keep.
/// Returns {status, expired, messages...}.
const TAKE: &str = r"
local c, gen, max, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, final, keep_ms = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
if num(redis.call('HGET', H, 'g:' .. c)) ~= gen then return {1, 0} end
local expired = expire(M(c), ttl) + expire(R(c), ttl)
reclaim(c)
local out = {}
if max > 0 then out = take(c, gen, max, lease) end
if #out > 0 or final == '1' then
  redis.call('HSET', H, 'l:' .. c, 0)
  redis.call('ZADD', CONNS, now, c)
end
keep(keep_ms, c)
local reply = {0, expired}
for _, m in ipairs(out) do reply[#reply + 1] = m end
return reply
";

/// ARGV: conn, receipts... Returns the number of messages acknowledged.
const ACK: &str = r"
local n = 0
for i = 2, #ARGV do n = n + ack(ARGV[1], ARGV[i]) end
return n
";

/// KEYS: the budget to take from, the other budget of the project. ARGV: op (`add` or
/// `refresh`), member, span, max. Returns 1 when the member holds a unit, 0 when refused.
const BUDGET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, member, span, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if op == 'add' and not redis.call('ZSCORE', KEYS[1], member) and redis.call('ZCARD', KEYS[1]) >= max then
  return 0
end
redis.call('ZADD', KEYS[1], now + 2 * span + 1000, member)
if op == 'add' then redis.call('ZREM', KEYS[2], member) end
redis.call('PEXPIRE', KEYS[1], 2 * span + 1000)
return 1
";

/// ARGV: conn ids. Returns those with a poll in flight.
const POLLING: &str = r"
local out = {}
for _, c in ipairs(ARGV) do
  if num(redis.call('HGET', H, 'l:' .. c)) > now then out[#out + 1] = c end
end
return out
";

/// KEYS: a project's polled budget. Returns its live members.
const POLLED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
";

/// KEYS: the project's budgets. Returns their sizes without expired entries.
const COUNT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for _, k in ipairs(KEYS) do n = n + redis.call('ZCOUNT', k, now, '+inf') end
return n
";

struct Scripts {
    deliver: Script,
    begin: Script,
    take: Script,
    ack: Script,
    budget: Script,
    count: Script,
    polling: Script,
    polled: Script,
}

impl Scripts {
    fn new() -> Self {
        let peer = |body: &str| Script::from_lua(format!("{PRELUDE}{body}"));
        Scripts {
            deliver: peer(DELIVER),
            begin: peer(BEGIN),
            take: peer(TAKE),
            ack: peer(ACK),
            budget: Script::from_lua(BUDGET),
            count: Script::from_lua(COUNT),
            polling: peer(POLLING),
            polled: Script::from_lua(POLLED),
        }
    }
}

/// Bounds in the units the scripts use.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    capacity: usize,
    ttl_ms: u64,
    idle_ms: u64,
    max_per_peer: usize,
    max_per_project: usize,
    ack_lease_ms: u64,
    /// TTL of a peer's keys: its longest-lived content plus the longest poll.
    keep_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    polling: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
}

/// Acknowledgements not yet sent for one connection.
struct PendingAcks {
    base: String,
    conn: u32,
    receipts: Vec<u64>,
}

/// Local waiters by connection key, woken by messages on this node's channel.
type Waiters = Mutex<HashMap<String, (Arc<Notify>, usize)>>;

struct Shared {
    pool: Pool,
    subscriber: SubscriberClient,
    scripts: Scripts,
    shared_scripts: super::shared::SharedScripts,
    prefix: String,
    node: String,
    channel_prefix: String,
    bounds: Bounds,
    waiters: Waiters,
    counters: Counters,
    projects_seen: Mutex<HashSet<String>>,
    pending_acks: Mutex<HashMap<String, PendingAcks>>,
    /// Whether the pool has connected once; until then calls wait for it (bounded), since a
    /// cluster client cannot route a command before it has read the slot map.
    connected_once: AtomicBool,
    /// Whether the subscriber has subscribed to this node's channel once.
    subscribed: AtomicBool,
    subscribed_changed: Notify,
}

/// The Redis (or Redis Cluster) [`MailboxStore`]; the module docs describe keys, scripts and
/// wake-ups.
///
/// It connects in the background and reconnects with backoff: while Redis cannot be reached,
/// operations answer [`StoreError::Unavailable`] within about two seconds and
/// [`MailboxStore::health`] fails.
pub struct RedisStore {
    shared: Arc<Shared>,
    started: AtomicBool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.shared.prefix)
            .field("node", &self.shared.node)
            .finish_non_exhaustive()
    }
}

pub(super) fn unavailable(err: &FredError) -> StoreError {
    StoreError::Unavailable(format!("redis: {}", err.details()))
}

/// Percent-escapes every byte outside `A-Z a-z 0-9 _ . -`, so ids never contain the key
/// separator `:` or a hash tag brace.
pub(super) fn escape_into(out: &mut String, id: &str) {
    escape(out, id);
}

fn escape(out: &mut String, id: &str) {
    use std::fmt::Write as _;
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// `P:{project:group:peer}:`, the start of every key of a peer.
fn peer_base(prefix: &str, addr: PeerAddr<'_>) -> String {
    let mut out = String::with_capacity(prefix.len() + 8 + addr.group.len() + addr.peer.len());
    out.push_str(prefix);
    out.push_str(":{");
    escape(&mut out, addr.project);
    out.push(':');
    escape(&mut out, addr.group);
    out.push(':');
    escape(&mut out, addr.peer);
    out.push_str("}:");
    out
}

/// Reverses [`escape`]; `None` for text that [`escape`] cannot have written.
fn unescape(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// `(group, peer, conn id)` of a polled-budget member `P:{project:group:peer}:conn`.
fn parse_member<'m>(prefix: &str, member: &'m str) -> Option<(&'m str, String, String, u32)> {
    let rest = member.strip_prefix(prefix)?.strip_prefix(":{")?;
    let (tag, conn) = rest.split_once("}:")?;
    let mut parts = tag.split(':');
    let (_project, group, peer) = (parts.next()?, parts.next()?, parts.next()?);
    let base_len = member.len() - conn.len();
    Some((
        member.get(..base_len)?,
        unescape(group)?,
        unescape(peer)?,
        conn.parse().ok()?,
    ))
}

/// The project's budget keys: (polled, mail).
fn budget_keys(prefix: &str, project: &str) -> (String, String) {
    let mut tag = String::from("{b:");
    escape(&mut tag, project);
    tag.push('}');
    (
        format!("{prefix}:{tag}:polled"),
        format!("{prefix}:{tag}:mail"),
    )
}

fn encode(envelope: &Envelope) -> Bytes {
    let group = envelope.src_group.as_bytes();
    let peer = envelope.src_peer.as_bytes();
    let mut out = BytesMut::with_capacity(8 + group.len() + peer.len() + envelope.message.len());
    out.put_u32(u32::try_from(group.len()).unwrap_or(u32::MAX));
    out.put_slice(group);
    out.put_u32(u32::try_from(peer.len()).unwrap_or(u32::MAX));
    out.put_slice(peer);
    out.put_slice(&envelope.message);
    out.freeze()
}

fn corrupt() -> StoreError {
    StoreError::Unavailable("redis returned a stored message this node cannot read".into())
}

fn split_str(bytes: &[u8]) -> Result<(&str, &[u8]), StoreError> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
    let (text, rest) = rest.split_at_checked(len).ok_or_else(corrupt)?;
    Ok((std::str::from_utf8(text).map_err(|_| corrupt())?, rest))
}

/// Reads a stored member `seq|ms|envelope`.
fn decode(member: &Value) -> Result<Envelope, StoreError> {
    let bytes = member.as_bytes().ok_or_else(corrupt)?;
    let mut fields = bytes.splitn(3, |b| *b == b'|');
    let blob = fields.nth(2).ok_or_else(corrupt)?;
    let (group, rest) = split_str(blob)?;
    let (peer, message) = split_str(rest)?;
    Ok(Envelope {
        src_group: Arc::from(group),
        src_peer: Arc::from(peer),
        message: Bytes::copy_from_slice(message),
    })
}

fn int(reply: &[Value], i: usize) -> i64 {
    reply.get(i).and_then(Value::as_i64).unwrap_or(-1)
}

/// A redis URL as fred reads it.
fn fred_config(config: &StoreConfig) -> Result<FredConfig, StoreError> {
    let bad = |url: &str, err: &FredError| {
        StoreError::Unavailable(format!("cannot use {}: {}", redact_url(url), err.details()))
    };
    let first = config
        .urls
        .first()
        .ok_or_else(|| StoreError::Unavailable("no Redis URL configured".into()))?;
    if config.cluster {
        let mut seeds = Vec::with_capacity(config.urls.len());
        let mut base = None;
        for url in &config.urls {
            let parsed = FredConfig::from_url_centralized(url).map_err(|e| bad(url, &e))?;
            seeds.extend(parsed.server.hosts());
            base.get_or_insert(parsed);
        }
        let mut fred = base.ok_or_else(|| StoreError::Unavailable("no seed URL".into()))?;
        fred.server = fred::types::config::ServerConfig::Clustered {
            hosts: seeds,
            policy: Default::default(),
        };
        Ok(fred)
    } else if let Some(path) = first
        .strip_prefix("unix://")
        .or_else(|| first.strip_prefix("redis+unix://"))
    {
        let url = format!("redis+unix://{path}");
        FredConfig::from_url_unix(&url).map_err(|e| bad(first, &e))
    } else {
        FredConfig::from_url_centralized(first).map_err(|e| bad(first, &e))
    }
}

impl RedisStore {
    /// A store on the Redis that `config` names, enforcing `limits`. Connecting happens in the
    /// background (at once inside a tokio runtime, else at first use).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when a URL cannot be read as a Redis address.
    pub fn new(config: &StoreConfig, limits: &Limits) -> Result<Self, StoreError> {
        let mut fred = fred_config(config)?;
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
        let failed = |e: FredError| StoreError::Unavailable(format!("redis: {}", e.details()));
        let pool = builder.build_pool(config.pool_size).map_err(failed)?;
        let subscriber = builder.build_subscriber_client().map_err(failed)?;
        let ttl_ms = limits.message_ttl_secs.saturating_mul(1000);
        let idle_ms = limits.connection_idle_secs.saturating_mul(1000);
        let node = {
            let mut bytes = [0u8; 8];
            getrandom::getrandom(&mut bytes).map_err(|e| {
                StoreError::Unavailable(format!("no randomness for a node id: {e}"))
            })?;
            hex::encode(bytes)
        };
        let prefix = config.key_prefix.clone();
        let store = RedisStore {
            shared: Arc::new(Shared {
                pool,
                subscriber,
                scripts: Scripts::new(),
                shared_scripts: super::shared::SharedScripts::new(),
                channel_prefix: format!("{prefix}:node:"),
                prefix,
                node,
                bounds: Bounds {
                    capacity: limits.mailbox_capacity,
                    ttl_ms,
                    idle_ms,
                    max_per_peer: limits.max_connections_per_peer,
                    max_per_project: limits.max_connections_per_project,
                    ack_lease_ms: config.ack_lease_ms,
                    keep_ms: ttl_ms
                        .max(idle_ms)
                        .saturating_add(limits.poll_timeout_ms)
                        .saturating_add(config.ack_lease_ms)
                        .saturating_add(10_000),
                },
                waiters: Mutex::default(),
                counters: Counters::default(),
                projects_seen: Mutex::default(),
                pending_acks: Mutex::default(),
                connected_once: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                subscribed_changed: Notify::new(),
            }),
            started: AtomicBool::new(false),
            tasks: Mutex::default(),
        };
        store.start();
        Ok(store)
    }

    /// Connects the pool and the subscriber, once, if a tokio runtime is there.
    pub(super) fn key_prefix(&self) -> &str {
        &self.shared.prefix
    }

    pub(super) fn shared_scripts(&self) -> &super::shared::SharedScripts {
        &self.shared.shared_scripts
    }

    /// A pooled client, once the store has connected (bounded wait).
    pub(super) async fn client(&self) -> &fred::clients::Client {
        self.start();
        self.shared.ready().await;
        self.shared.pool.next()
    }

    /// Runs `script` on `keys` (one hash slot) with `args`, bounded in time.
    pub(super) async fn eval_keys(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, StoreError> {
        let client = self.client().await;
        tokio::time::timeout(
            COMMAND_TIMEOUT,
            script.evalsha_with_reload(client, keys, args),
        )
        .await
        .map_err(|_| StoreError::Unavailable("redis did not answer in time".into()))?
        .map_err(|e| unavailable(&e))
    }

    fn start(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let _enter = runtime.enter();
        for client in shared.pool.clients() {
            drop(client.connect());
        }
        // Listen before connecting: the first connection is announced as a reconnection.
        let reconnects = shared.subscriber.reconnect_rx();
        let messages = shared.subscriber.message_rx();
        drop(shared.subscriber.connect());
        let weak = Arc::downgrade(&self.shared);
        let listener = runtime.spawn(listen(
            weak,
            shared.subscriber.clone(),
            reconnects,
            messages,
        ));
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(listener);
        }
    }
}

/// The subscriber's life: subscribe after every (re)connection and wake every local waiter,
/// then route each message on this node's channel to its waiter.
async fn listen(
    shared: Weak<Shared>,
    subscriber: SubscriberClient,
    mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
) {
    let channel = match shared.upgrade() {
        Some(s) => format!("{}{}", s.channel_prefix, s.node),
        None => return,
    };
    loop {
        tokio::select! {
            event = reconnects.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
                    return;
                }
                let mut attempt = 0u32;
                while let Err(err) = subscriber.subscribe(channel.as_str()).await {
                    tracing::warn!(error = %err.details(), "cannot subscribe to this node's wake-up channel; retrying");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(20)))).await;
                }
                let Some(shared) = shared.upgrade() else { return };
                shared.subscribed.store(true, Ordering::Release);
                shared.subscribed_changed.notify_waiters();
                shared.wake_all();
            }
            message = messages.recv() => {
                let Some(shared) = shared.upgrade() else { return };
                match message {
                    Ok(message) => {
                        if let Some(key) = message.value.as_str() {
                            shared.wake(&key);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => shared.wake_all(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.shared.pool.clone();
            let subscriber = self.shared.subscriber.clone();
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = pool.quit().await;
            });
        }
    }
}

/// A poll's registration in the local waiter map; leaving removes it.
struct Waiter<'a> {
    shared: &'a Shared,
    key: String,
    notify: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.shared.waiters.lock() {
            if let Some(entry) = map.get_mut(&self.key) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// Ends a poll in Redis if its future is dropped while the poll is still in flight there.
struct PollGuard<'a> {
    shared: &'a Arc<Shared>,
    base: String,
    conn: u32,
    generation: Option<i64>,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let polling = &self.shared.counters.polling;
        let (Some(generation), Ok(runtime)) =
            (self.generation, tokio::runtime::Handle::try_current())
        else {
            polling.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let shared = Arc::clone(self.shared);
        let base = std::mem::take(&mut self.base);
        let conn = self.conn;
        // The poll counts as in flight until Redis knows it ended: until then discovery
        // messages still go to it.
        runtime.spawn(async move {
            let _ = shared.take(&base, conn, generation, 0, true).await;
            shared.counters.polling.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl Shared {
    fn wake(&self, key: &str) {
        if let Ok(map) = self.waiters.lock() {
            if let Some((notify, _)) = map.get(key) {
                notify.notify_waiters();
            }
        }
    }

    fn wake_all(&self) {
        if let Ok(map) = self.waiters.lock() {
            for (notify, _) in map.values() {
                notify.notify_waiters();
            }
        }
    }

    fn waiter(&self, key: String) -> Result<Waiter<'_>, StoreError> {
        let mut map = self
            .waiters
            .lock()
            .map_err(|_| StoreError::Unavailable("the waiter map lock was poisoned".into()))?;
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let notify = Arc::clone(&entry.0);
        Ok(Waiter {
            shared: self,
            key,
            notify,
        })
    }

    /// Waits (at most the command timeout) for the first connection of a new store and for its
    /// wake-up channel, so that its first polls hear their wake-ups.
    async fn ready(&self) {
        if self.connected_once.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, async {
            if self.pool.wait_for_connect().await.is_err() {
                return;
            }
            loop {
                let changed = self.subscribed_changed.notified();
                if self.subscribed.load(Ordering::Acquire) {
                    self.connected_once.store(true, Ordering::Release);
                    return;
                }
                changed.await;
            }
        })
        .await;
    }

    async fn eval(
        &self,
        script: &Script,
        key: &str,
        args: Vec<Value>,
    ) -> Result<Vec<Value>, StoreError> {
        self.ready().await;
        let client = self.pool.next();
        let reply: Value = script
            .evalsha_with_reload(client, key, args)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(reply.into_array())
    }

    fn note_expired(&self, reply: &[Value], at: usize) {
        let n = u64::try_from(int(reply, at)).unwrap_or(0);
        if n > 0 {
            self.counters.expired.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn note_evicted(&self, reply: &[Value], at: usize) {
        let n = u64::try_from(int(reply, at)).unwrap_or(0);
        if n > 0 {
            self.counters.evicted.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn remember_project(&self, project: &str) {
        if let Ok(mut seen) = self.projects_seen.lock() {
            if !seen.contains(project) {
                seen.insert(project.to_owned());
            }
        }
    }

    /// Takes (or refreshes) a unit of a project budget for `member`.
    async fn budget(
        &self,
        project: &str,
        polled: bool,
        refresh: bool,
        member: &str,
        span_ms: u64,
    ) -> Result<bool, StoreError> {
        let (polled_key, mail_key) = budget_keys(&self.prefix, project);
        let (key, other) = if polled {
            (polled_key, mail_key)
        } else {
            (mail_key, polled_key)
        };
        let args: Vec<Value> = vec![
            (if refresh { "refresh" } else { "add" }).into(),
            member.into(),
            Value::from(i64::try_from(span_ms).unwrap_or(i64::MAX)),
            Value::from(i64::try_from(self.bounds.max_per_project).unwrap_or(i64::MAX)),
        ];
        self.ready().await;
        let client = self.pool.next();
        let granted: i64 = self
            .scripts
            .budget
            .evalsha_with_reload(client, vec![key, other], args)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(granted == 1)
    }

    /// Refreshes a budget entry without making the caller wait.
    fn refresh_budget(self: &Arc<Self>, project: &str, polled: bool, member: String, span_ms: u64) {
        let shared = Arc::clone(self);
        let project = project.to_owned();
        tokio::spawn(async move {
            let _ = shared
                .budget(&project, polled, true, &member, span_ms)
                .await;
        });
    }

    async fn deliver(
        self: &Arc<Self>,
        dst: PeerAddr<'_>,
        conn_id: u32,
        envelope: Envelope,
    ) -> Result<(), StoreError> {
        self.remember_project(dst.project);
        let b = self.bounds;
        let base = peer_base(&self.prefix, dst);
        let blob = encode(&envelope);
        let mut granted = false;
        loop {
            let args: Vec<Value> = vec![
                conn_id.to_string().into(),
                Value::Bytes(blob.clone()),
                Value::from(b.capacity as i64),
                Value::from(b.ttl_ms as i64),
                Value::from(b.idle_ms as i64),
                Value::from(b.max_per_peer as i64),
                Value::from(b.keep_ms as i64),
                (if granted { "1" } else { "0" }).into(),
                self.channel_prefix.as_str().into(),
            ];
            let reply = self.eval(&self.scripts.deliver, &base, args).await?;
            self.note_expired(&reply, 4);
            self.note_evicted(&reply, 3);
            let member = || {
                let suffix = reply
                    .get(2)
                    .and_then(Value::as_str)
                    .map(|s| s.into_owned())
                    .unwrap_or_default();
                format!("{base}{suffix}")
            };
            match int(&reply, 0) {
                OK => {
                    if int(&reply, 1) == 1 {
                        self.refresh_budget(dst.project, false, member(), b.ttl_ms);
                    }
                    return Ok(());
                }
                FULL => {
                    return Err(StoreError::MailboxFull {
                        capacity: b.capacity,
                    })
                }
                TOO_MANY_PEER => {
                    return Err(StoreError::TooManyPeerConnections {
                        max: b.max_per_peer,
                    })
                }
                NEED_BUDGET if !granted => {
                    if !self
                        .budget(dst.project, false, false, &member(), b.ttl_ms)
                        .await?
                    {
                        return Err(StoreError::TooManyProjectConnections {
                            max: b.max_per_project,
                        });
                    }
                    granted = true;
                }
                other => {
                    return Err(StoreError::Unavailable(format!(
                        "the deliver script answered {other}"
                    )))
                }
            }
        }
    }

    async fn take(
        &self,
        base: &str,
        conn: u32,
        generation: i64,
        max: usize,
        last: bool,
    ) -> Result<Option<Vec<Value>>, StoreError> {
        let b = self.bounds;
        let args: Vec<Value> = vec![
            conn.to_string().into(),
            Value::from(generation),
            Value::from(max as i64),
            Value::from(b.ack_lease_ms as i64),
            Value::from(b.ttl_ms as i64),
            (if last { "1" } else { "0" }).into(),
            Value::from(b.keep_ms as i64),
        ];
        let mut reply = self.eval(&self.scripts.take, base, args).await?;
        self.note_expired(&reply, 1);
        match int(&reply, 0) {
            OK => {}
            SUPERSEDED => return Ok(None),
            other => {
                return Err(StoreError::Unavailable(format!(
                    "the take script answered {other}"
                )))
            }
        }
        Ok(Some(reply.split_off(2.min(reply.len()))))
    }

    /// Registers a poll (taking a polled budget unit first if the connection is new to the
    /// budget); returns its generation and the messages it took at once.
    async fn begin(
        self: &Arc<Self>,
        base: &str,
        project: &str,
        conn_id: u32,
        wait_ms: u64,
        max: usize,
        folded: Vec<u64>,
    ) -> Result<(i64, Vec<Value>), StoreError> {
        let b = self.bounds;
        let span = b.idle_ms.max(b.ttl_ms).saturating_add(wait_ms);
        let mut granted = false;
        loop {
            let mut args: Vec<Value> = vec![
                conn_id.to_string().into(),
                self.node.as_str().into(),
                Value::from(i64::try_from(wait_ms).unwrap_or(i64::MAX)),
                Value::from(max as i64),
                Value::from(b.ack_lease_ms as i64),
                Value::from(b.ttl_ms as i64),
                Value::from(b.idle_ms as i64),
                Value::from(b.max_per_peer as i64),
                Value::from(b.keep_ms.saturating_add(wait_ms) as i64),
                (if granted { "1" } else { "0" }).into(),
                self.channel_prefix.as_str().into(),
                Value::from(i64::try_from(span).unwrap_or(i64::MAX)),
                Value::from(POLL_GRACE_MS as i64),
            ];
            args.extend(folded.iter().map(|r| Value::from(r.to_string())));
            let mut reply = self.eval(&self.scripts.begin, base, args).await?;
            self.note_expired(&reply, 4);
            self.note_evicted(&reply, 3);
            match int(&reply, 0) {
                OK => {
                    if int(&reply, 2) == 1 {
                        self.refresh_budget(project, true, format!("{base}{conn_id}"), span);
                    }
                    self.counters.delivered.fetch_add(
                        u64::try_from(int(&reply, 5)).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    let generation = int(&reply, 1);
                    return Ok((generation, reply.split_off(6.min(reply.len()))));
                }
                TOO_MANY_PEER => {
                    return Err(StoreError::TooManyPeerConnections {
                        max: b.max_per_peer,
                    })
                }
                NEED_BUDGET if !granted => {
                    let member = format!("{base}{conn_id}");
                    if !self.budget(project, true, false, &member, span).await? {
                        return Err(StoreError::TooManyProjectConnections {
                            max: b.max_per_project,
                        });
                    }
                    granted = true;
                }
                other => {
                    return Err(StoreError::Unavailable(format!(
                        "the begin script answered {other}"
                    )))
                }
            }
        }
    }

    async fn poll(
        self: &Arc<Self>,
        me: PeerAddr<'_>,
        conn_id: u32,
        options: PollOptions,
    ) -> Result<Polled, StoreError> {
        self.remember_project(me.project);
        let base = peer_base(&self.prefix, me);
        // Connected and subscribed before registering, so that the wake-up of every local waiter
        // after subscribing does not reach this poll.
        self.ready().await;
        let waiter = self.waiter(format!("{base}{conn_id}"))?;
        // Acknowledgements this node holds for the connection ride along with the poll.
        let folded = self.pending_receipts(&waiter.key);
        let mut notified = pin!(waiter.notify.notified());
        notified.as_mut().enable();
        let wait_ms = u64::try_from(options.wait.as_millis()).unwrap_or(u64::MAX);
        let deadline = Instant::now() + options.wait;
        let max = options.max_messages.max(1);
        // `begin` runs in a task of its own: if this poll is dropped while Redis registers it,
        // the task still sees the answer and ends the poll there, so a poll abandoned mid-way
        // never keeps counting as in flight (and never draws discovery messages) until its
        // lease runs out.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn({
            let shared = Arc::clone(self);
            let base = base.clone();
            let project = me.project.to_owned();
            async move {
                let begun = shared
                    .begin(&base, &project, conn_id, wait_ms, max, folded)
                    .await;
                if let Err(Ok((generation, _))) = tx.send(begun) {
                    if wait_ms > 0 {
                        let _ = shared.take(&base, conn_id, generation, 0, true).await;
                    }
                }
            }
        });
        let (generation, first) = rx
            .await
            .map_err(|_| StoreError::Unavailable("the poll's registration task ended".into()))??;
        self.counters.polling.fetch_add(1, Ordering::Relaxed);
        let mut guard = PollGuard {
            shared: self,
            base: base.clone(),
            conn: conn_id,
            generation: None,
        };
        let receipt = u64::try_from(generation).map_err(|_| corrupt())?;
        let done = |members: Vec<Value>| -> Result<Polled, StoreError> {
            let messages = members.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
            Ok(Polled {
                receipt: (!messages.is_empty()).then_some(Receipt(receipt)),
                messages,
                superseded: false,
            })
        };
        if !first.is_empty() || options.wait.is_zero() {
            return done(first);
        }
        guard.generation = Some(generation);
        loop {
            let woken = tokio::time::timeout_at(deadline, notified.as_mut())
                .await
                .is_ok();
            notified.set(waiter.notify.notified());
            notified.as_mut().enable();
            if woken {
                // Every wake-up waits the batch window before taking: a wake-up without mail (a
                // reconnect, a newer poll) must not use up the batching of the real one.
                let until = (Instant::now() + options.batch_window).min(deadline);
                tokio::time::sleep_until(until).await;
            }
            let last = !woken || Instant::now() >= deadline;
            let taken = self.take(&base, conn_id, generation, max, last).await?;
            let Some(members) = taken else {
                // A newer poll of this connection took over (its script ended this one).
                guard.generation = None;
                return Ok(Polled::superseded());
            };
            if !members.is_empty() || last {
                guard.generation = None;
                return done(members);
            }
        }
    }

    /// Removes and returns the receipts waiting to be acknowledged for a connection key.
    fn pending_receipts(&self, key: &str) -> Vec<u64> {
        self.pending_acks
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(key))
            .map(|p| p.receipts)
            .unwrap_or_default()
    }

    /// Records an acknowledgement. The connection's next poll on this node usually follows at
    /// once and carries it (no round trip of its own); if none does within [`ACK_FOLD_DELAY`]
    /// (or a quarter of the lease), it is sent alone.
    fn ack(self: &Arc<Self>, me: PeerAddr<'_>, conn_id: u32, receipt: Receipt) {
        let base = peer_base(&self.prefix, me);
        let key = format!("{base}{conn_id}");
        if let Ok(mut pending) = self.pending_acks.lock() {
            pending
                .entry(key.clone())
                .or_insert_with(|| PendingAcks {
                    base,
                    conn: conn_id,
                    receipts: Vec::new(),
                })
                .receipts
                .push(receipt.0);
        }
        let delay = ACK_FOLD_DELAY.min(Duration::from_millis(self.bounds.ack_lease_ms / 4));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(shared) = weak.upgrade() else { return };
            let Some(pending) = shared
                .pending_acks
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&key))
            else {
                return;
            };
            if let Err(err) = shared.send_acks(&pending).await {
                tracing::debug!(error = %err, "acknowledging delivered messages failed; they will be handed out again");
            }
        });
    }

    async fn send_acks(&self, pending: &PendingAcks) -> Result<(), StoreError> {
        let mut args: Vec<Value> = vec![pending.conn.to_string().into()];
        args.extend(pending.receipts.iter().map(|r| Value::from(r.to_string())));
        let base = pending.base.as_str();
        self.ready().await;
        let client = self.pool.next();
        let n: i64 = self
            .scripts
            .ack
            .evalsha_with_reload(client, base, args)
            .await
            .map_err(|e| unavailable(&e))?;
        self.counters
            .delivered
            .fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let projects: Vec<String> = self
            .projects_seen
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default();
        let mut connections = 0u64;
        for project in projects {
            let (polled, mail) = budget_keys(&self.prefix, &project);
            self.ready().await;
            let client = self.pool.next();
            let n: i64 = self
                .scripts
                .count
                .evalsha_with_reload(client, vec![polled, mail], Vec::<Value>::new())
                .await
                .map_err(|e| unavailable(&e))?;
            connections += u64::try_from(n).unwrap_or(0);
        }
        let c = &self.counters;
        Ok(StoreStats {
            connections,
            polling: c.polling.load(Ordering::Relaxed),
            queued_messages: 0,
            delivered_messages: c.delivered.load(Ordering::Relaxed),
            expired_messages: c.expired.load(Ordering::Relaxed),
            evicted_messages: c.evicted.load(Ordering::Relaxed),
        })
    }

    /// Connections of the project's polled budget whose poll is in flight: one round trip for
    /// the budget, then one per peer in it.
    async fn online(&self, project: &str) -> Result<Vec<OnlineConnection>, StoreError> {
        let (polled, _) = budget_keys(&self.prefix, project);
        self.ready().await;
        let client = self.pool.next();
        let members: Vec<String> = self
            .scripts
            .polled
            .evalsha_with_reload(client, polled, Vec::<Value>::new())
            .await
            .map_err(|e| unavailable(&e))?;
        let mut peers: HashMap<&str, (String, String, Vec<u32>)> = HashMap::new();
        for member in &members {
            if let Some((base, group, peer, conn)) = parse_member(&self.prefix, member) {
                peers
                    .entry(base)
                    .or_insert_with(|| (group, peer, Vec::new()))
                    .2
                    .push(conn);
            }
        }
        let mut out = Vec::new();
        for (base, (group, peer, conns)) in peers {
            let args: Vec<Value> = conns.iter().map(|c| Value::from(c.to_string())).collect();
            for conn in self.eval(&self.scripts.polling, base, args).await? {
                if let Some(conn_id) = conn.as_str().and_then(|c| c.parse().ok()) {
                    out.push(OnlineConnection {
                        group: group.clone(),
                        peer: peer.clone(),
                        conn_id,
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.ready().await;
        let client = self.pool.next();
        let pong: Result<String, _> = tokio::time::timeout(COMMAND_TIMEOUT, client.ping(None))
            .await
            .map_err(|_| StoreError::Unavailable("redis did not answer PING in time".into()))?;
        pong.map(|_| ()).map_err(|e| unavailable(&e))
    }
}

impl MailboxStore for RedisStore {
    fn deliver<'a>(
        &'a self,
        dst: PeerAddr<'a>,
        conn_id: u32,
        envelope: Envelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.start();
        Box::pin(self.shared.deliver(dst, conn_id, envelope))
    }

    fn poll<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        options: PollOptions,
    ) -> BoxFuture<'a, Result<Polled, StoreError>> {
        self.start();
        Box::pin(self.shared.poll(me, conn_id, options))
    }

    fn ack<'a>(
        &'a self,
        me: PeerAddr<'a>,
        conn_id: u32,
        receipt: Receipt,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.start();
        self.shared.ack(me, conn_id, receipt);
        Box::pin(std::future::ready(Ok(())))
    }

    fn online<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OnlineConnection>, StoreError>> {
        self.start();
        Box::pin(self.shared.online(project))
    }

    fn stats(&self) -> BoxFuture<'_, Result<StoreStats, StoreError>> {
        self.start();
        Box::pin(self.shared.stats())
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.start();
        Box::pin(self.shared.health())
    }

    fn shared(&self) -> Option<&dyn super::SharedState> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_separators_and_braces() {
        let a = peer_base(
            "pb",
            PeerAddr {
                project: "p",
                group: "a:b",
                peer: "c",
            },
        );
        let b = peer_base(
            "pb",
            PeerAddr {
                project: "p",
                group: "a",
                peer: "b:c",
            },
        );
        assert_ne!(a, b);
        assert_eq!(a, "pb:{p:a%3Ab:c}:");
        let braces = peer_base(
            "pb",
            PeerAddr {
                project: "{x}",
                group: "%",
                peer: "é",
            },
        );
        assert_eq!(braces, "pb:{%7Bx%7D:%25:%C3%A9}:");
    }

    #[test]
    fn budget_members_name_their_peer_and_connection() {
        let addr = PeerAddr {
            project: "p:1",
            group: "a:{b}",
            peer: "é%",
        };
        let member = format!("{}{}", peer_base("pb:x", addr), 4242);
        let (base, group, peer, conn) = parse_member("pb:x", &member).unwrap();
        assert_eq!(base, peer_base("pb:x", addr));
        assert_eq!((group.as_str(), peer.as_str(), conn), ("a:{b}", "é%", 4242));
        assert!(parse_member("pb:x", "pb:x:{p:g}:1").is_none());
        assert!(parse_member("pb:x", "pb:x:{p:g:%Z1}:1").is_none());
    }

    #[test]
    fn stored_messages_round_trip_and_garbage_is_refused() {
        let envelope = Envelope {
            src_group: Arc::from("g|1"),
            src_peer: Arc::from("p"),
            message: Bytes::from_static(b"a|b\0c"),
        };
        let mut member = b"12|1700000000000|".to_vec();
        member.extend_from_slice(&encode(&envelope));
        assert_eq!(decode(&Value::Bytes(member.into())), Ok(envelope));
        for bad in [
            &b"12|3"[..],
            b"1|2|\0\0\0\x09ab",
            b"1|2|\0\0\0\x01\xff\0\0\0\0",
        ] {
            assert!(decode(&Value::Bytes(Bytes::copy_from_slice(bad))).is_err());
        }
    }
}
