//! Everything a node keeps in Redis or Redis Cluster, so that any node of a deployment serves
//! any call: mailboxes ([`RedisStore`]), revocations ([`RedisRevocations`]) and usage totals
//! ([`RedisUsage`]), all over one [`RedisConnection`]; coturn's statistics are read through a
//! connection of their own (`turnstats.rs`).
//!
//! | module | what |
//! |---|---|
//! | `connection` | URL to clients, the first connection, the one call helper and its timeout |
//! | `batch` + `lua/batch.lua` | the script calls of one moment on one connection, sent as one `FCALL` |
//! | `keys` | key and channel names, ids escaped |
//! | `scripts` + `lua/` | every Lua script, declared with its keys, arguments and reply |
//! | `wakeups`, `shard_channels`, `waiters` | this node's wake-up channels (one, or one per Cluster slot) and the polls waiting on them |
//! | `mailbox`, `message`, `budgets` | the mailbox store, the stored message, project budgets |
//! | `policy` | the warning at start when Redis may evict keys (`maxmemory-policy`) |
//! | `revocations`, `usage`, `lease`, `bindings` | the other things nodes share |
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
//! | `P:T:h` | hash | `seq` (the peer's sequence number), `k` when the TTLs of `h`, `conns` and `d` run low, `f` when idle connections are next looked for, `la` the connection last recorded active, `b:d` the discovery queue's budget refresh deadline (0 once a poll took the queue, so the next poll needs not count it), and per connection `c`: `g:c` poll generation, `n:c` node of the poll in flight, `l:c` its lease expiry (ms; 0 = no poll in flight), `s:c` when it began, `o:c` opened by a poll (`p`) or a sender (`m`), `b:c` budget refresh deadline, `a:c` its activity as last written to `conns`, `k:c` when the TTLs of its keys run low, `v:c` its reservations (`receipt lease-expiry seq seq …` each, `;`-separated; empty or absent when none), `w:c` the batch window of its poll (ms), `x:c` the generation of its poll if that poll takes a message handed over in its wake-up (a node of an older version does not write it), `h:c` until when a poll a deliver handed a message to collects more (ms), `e:c` the generation of its poll if that poll left its mailbox empty and no mail went to it since (a deliver then needs not count the mailbox, and hands mail over to the poll if it waits) |
//! | `P:T:conns` | sorted set | connection ids by last activity (ms) |
//! | `P:T:d` | sorted set | the discovery queue, by sequence number |
//! | `P:T:m:c` | sorted set | connection `c`'s mailbox, by sequence number |
//! | `P:T:r:c` | sorted set | its messages handed out and not yet acknowledged |
//! | `P:T:rv:c` | hash | written only by older nodes (receipt -> `lease-expiry seq seq …`); their reservations come back with the connection's next takeover poll (every new `Recv`), which takes back all of `r:c` |
//! | `P:{b:project}:polled`, `P:{b:project}:mail` | sorted set | the project's two budgets: members `T:c` (and `T:d` for a discovery queue), scored by expiry |
//! | `P:{rev}:all`, `P:{rev}:version` | hash, counter | revocation target -> `until|json`; bumped on every change |
//! | `P:{u:project}:hour` | hash | the project's usage totals of one hour, expiring after eight days |
//! | `P:{u:project}:hour:a:batch` | string | that the usage batch `batch` (node id and sequence number) was added to that hour, expiring after a day |
//! | `P:bind:group:peer:client` | string | the credential a tokenless gRPC-web `Recv` of that peer from that client is admitted with, expiring an hour after the token |
//!
//! A message is stored as the member `seq|ms|envelope`. Every key of a peer has a TTL of at
//! least its keep span (the longest-lived content, message TTL or idle time, plus the longest
//! poll) after every call that touched it, so a peer nobody talks to any more vanishes by
//! itself: a key gets twice the span when a write makes it, and again when a call finds less
//! than the span left (the deadlines are kept in the hash, `k` and `k:c`), so a busy peer's
//! keys are not given their TTL again on every call. When `seq` starts afresh (a new peer, or
//! its hash evicted or expired before its mailboxes) it starts above the highest sequence
//! number still stored, so new mail never sorts before old.
//!
//! Each script reads the peer's hash once (`HMGET` of the fields it needs) and writes it once
//! (one `HSET`, and an `HDEL` when fields go), whatever it changed; a batch moves between
//! mailbox and reservations with one command per key (`ZPOPMIN`, a variadic `ZADD`, one
//! `ZREMRANGEBYSCORE` per run of consecutive sequence numbers), and a poll with nothing
//! reserved that takes its whole mailbox renames it to the reservations' key (`ZRANGE`, then
//! `RENAMENX`, which moves its TTL too). Activity (the score in `conns`) is written unless the
//! connection is already the most recently active one and was written less than a second ago;
//! idle connections are looked for when a connection opens and otherwise at most every quarter
//! of the idle time, and forgotten only once idle for the idle time plus that second.
//!
//! The calls every relayed message makes, `deliver`, `begin` and (for a long-poll) `ack`, first
//! try a fast path: in straight-line Lua, without the general path's tables, for the common
//! case (an open connection, nothing reserved but what the poll acknowledges, no upkeep due:
//! TTLs, idle connections, budgets, activity; for `ack`, one receipt and at most one
//! reservation stored). It does what the general path does in that case, which a test checks
//! call by call on random sequences (`fast_path_tests`); anything else goes on to the general
//! path with what was already read.
//!
//! Commands a relayed message need not send are spared where the hash already knows the answer:
//! a deliver to a mailbox its poll left empty (`e:c`, unset by the deliver that stores into it)
//! does not count the mailbox, and hands the mail over when the poll waits, a poll counts the
//! discovery queue only when `b:d` says mail went to it, a takeover poll with nothing listed in
//! `v:c` counts no reservations (what the key holds is listed there), and a stream's poll
//! reserves what it takes before deleting what it acknowledges, so the reservations' key lives
//! on with its TTL rather than being made anew. A command spared is about a thousand Redis
//! instructions; a field of the hash read or written is one or two (BENCHMARKS.md, "Commands
//! the peer's hash spares").
//!
//! No script reads a whole mailbox: "full" is counted (`ZCARD`); expired messages are dropped
//! from the head of a full mailbox one member at a time (a few per call), and a hand-out drops
//! the expired ones among those it reads; an idle connection whose mail expired is forgotten
//! once its mailbox key's TTL has emptied it. BENCHMARKS.md has the cost per call with full
//! mailboxes.
//!
//! # Round trips
//!
//! Each operation on a peer is one Lua script (`FCALL` of a function of the scripts' library,
//! loaded when missing; `EVALSHA` where Redis cannot run the library) using Redis
//! server time (`TIME`, not needed by `ack`) for leases and TTLs: `deliver` (capacity, discovery routing by poll
//! lease, sequence number, TTLs and the wake-up `PUBLISH`, `SPUBLISH` on a Cluster), `begin` (registers the poll with
//! node id, generation and lease, ends an older poll, takes over what older polls handed out
//! unacknowledged, takes the discovery queue, hands out what is waiting), `take` (on wake-up,
//! when a reservation's lease runs out, or at the deadline) and `ack`.
//!
//! A relayed message costs two round trips when its receiver's poll is waiting: the sender's
//! `deliver`, which hands the message over in the wake-up (below), and the `ack`; three when
//! more mail joins the batch (a `take` at the end of the batch window) or when the message
//! was waiting (the receiver's `begin` hands it out). A long-poll's acknowledgement
//! goes out at once rather than riding on the connection's next `Recv`: that call may reach
//! another node, and it takes over whatever is still reserved, so a late acknowledgement would
//! mean a duplicate. A stream's next poll is on the same node and begins once the batch is
//! written, so `begin` carries the acknowledgement (`ack_receipt`) and a message relayed to a
//! waiting stream costs one round trip besides that poll's `begin`. An idle poll costs `begin` and `take` at its deadline, nothing while it waits.
//! Opening a connection or a discovery queue costs one more round trip, to the project's
//! budget (and an eviction one more, to give the evicted connection's unit back); a budget
//! entry is refreshed in the background about once per twice its span.
//!
//! Those are calls; round trips are fewer under load. The calls a node makes at the same moment
//! on one connection (those of every task the runtime had ready) go to Redis as one `FCALL` of
//! the library's `batch` function, which runs them in order, each as its own `FCALL` would, and
//! answers each one's reply or error (`batch`, `lua/batch.lua`; one `FCALL` per slot on a
//! Cluster). A peer's calls take one connection, and a connection's batches are handed over in
//! order, so Redis runs a peer's calls in the order the node made them.

//! # Wake-ups
//!
//! `deliver` publishes the connection's key to the wake-up channel of the node whose poll is
//! in flight for the target connection, and `begin` to that of the node of a poll it replaces;
//! the node wakes its local waiter, which runs `take`. The script reads the node id from the
//! peer's hash; the calling node tells it the rest of the channel's name and how to publish:
//!
//! - standalone Redis and Sentinel: `PUBLISH` to `P:node:<node id>`, the node's one channel
//!   (a random id per process), subscribed to at start;
//! - Redis Cluster: `SPUBLISH` to `P:w:{tag}:<node id>`, the node's channel of the peer's slot
//!   (`tag` hashes to that slot, so the channel lives on the peer's shard: a script may only
//!   publish there, and no other shard carries the message), subscribed to with `SSUBSCRIBE`
//!   when the first poll on a peer of that slot begins on the node, and again at the slot's
//!   new master when the slot moves.
//!
//! A poll waiting on an empty mailbox (of a node that says it takes it, `x:c`) gets its first
//! message in the wake-up itself: `deliver` reserves the message for the poll (its generation
//! is the receipt), ends the poll, and publishes `\x01<generation>:<key length>:<key><member>` instead of the key; the node
//! answers with what came so after the batch window, with no `take`. Mail arriving within the
//! window (`h:c`) goes to the mailbox and publishes the key, and the poll then runs `take`,
//! which hands out again what was handed over (the node counts it once): `take` always starts
//! with the messages reserved under the poll's own generation, so a poll whose node missed the
//! wake-up gets them from Redis at its next check.
//!
//! After the subscriber reconnects every local waiter is woken to check again, so a wake-up
//! lost while Redis was away costs at most that check. Heartbeats on the channels (per shard
//! on a Cluster) tell a deaf subscriber from a quiet one (`wakeups`, `shard_channels`).
//!
//! # Budgets on Redis Cluster
//!
//! A project's budgets live in their own slot, apart from the peers', so a script cannot count
//! them atomically with the peer's state. The node asks for a budget unit before a script may
//! open a connection or a discovery queue (the script answers `NEED_BUDGET` and changes
//! nothing), then runs the script again. A script that evicts a connection names it, and the
//! node gives its unit back; a connection refused after its unit was taken gives it back too.
//! Entries of connections forgotten for being idle expire by score instead, so such a
//! connection is counted up to about twice its idle span (or TTL) longer: the count is
//! approximate, erring on the side of refusing.

mod batch;
mod bindings;
mod budgets;
mod connection;
#[cfg(test)]
mod fast_path_tests;
mod keys;
mod lease;
mod mailbox;
mod message;
mod policy;
mod revocations;
mod scripts;
mod shard_channels;
mod tls;
mod usage;
mod waiters;
mod wakeups;

pub use bindings::RedisBindings;
pub use connection::RedisConnection;
pub(crate) use lease::{Acquired, Lease};
pub use mailbox::RedisStore;
pub use revocations::RedisRevocations;
pub(crate) use tls::connector as tls_connector;
pub use usage::RedisUsage;
