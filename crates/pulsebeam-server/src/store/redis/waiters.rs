//! The polls waiting on this node, by connection key, and waking them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::store::StoreError;

/// How often a node publishes a heartbeat on the wake-up channels it listens to.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a wake-up channel may carry no heartbeat before the subscriber counts as deaf.
pub(crate) const HEARTBEAT_LOST: Duration = Duration::from_secs(3);

/// Messages handed over to a connection's polls that a slot keeps unclaimed at most (a poll
/// gone before its wake-up came leaves its message reserved in Redis, where the connection's
/// next poll finds it).
const HANDED_MAX: usize = 256;

/// A connection key, one copy shared by the map and every poll waiting on it.
type Key = Arc<str>;

/// Local waiters by connection key (`P:{project:group:peer}:conn`), with how many polls share
/// each.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<Key, (Arc<Slot>, usize)>>,
}

/// What the wake-ups of one connection key brought its polls on this node.
#[derive(Default)]
pub(crate) struct Slot {
    /// Notified on every wake-up of the key.
    pub(crate) notify: Notify,
    heard: Mutex<Heard>,
}

#[derive(Default)]
struct Heard {
    /// Messages delivers handed over, with the generation of the poll each is for.
    handed: Vec<(i64, Bytes)>,
    /// A wake-up without a message came (mail in the mailbox, a newer poll, a reconnect).
    plain: bool,
}

impl Slot {
    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake(&self) {
        self.heard().plain = true;
        self.notify.notify_waiters();
    }

    fn hand(&self, generation: i64, member: Bytes) {
        {
            let mut heard = self.heard();
            if heard.handed.len() < HANDED_MAX {
                heard.handed.push((generation, member));
            }
        }
        self.notify.notify_waiters();
    }

    /// The messages handed over to the poll `generation` (stored members, in the order they
    /// came), and whether a wake-up without a message came since this was last asked: then
    /// what the poll gets must come from Redis.
    pub(crate) fn take_handed(&self, generation: i64) -> (Vec<Bytes>, bool) {
        let mut heard = self.heard();
        let plain = std::mem::take(&mut heard.plain);
        let mut mine = Vec::new();
        heard.handed.retain(|(g, member)| {
            if *g == generation {
                mine.push(member.clone());
            }
            *g != generation
        });
        (mine, plain)
    }
}

impl Waiters {
    /// Registers a poll waiting for wake-ups of `key`; dropping the waiter unregisters it.
    pub(crate) fn register(&self, key: String) -> Result<Waiter<'_>, StoreError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| StoreError::Unavailable("the waiter map lock was poisoned".into()))?;
        // One copy of the key per connection, shared by its waiters and the map.
        let key: Key = match map.get_key_value(key.as_str()) {
            Some((shared, _)) => Arc::clone(shared),
            None => Arc::from(key),
        };
        let entry = map.entry(Arc::clone(&key)).or_default();
        entry.1 += 1;
        let slot = Arc::clone(&entry.0);
        Ok(Waiter {
            waiters: self,
            key,
            slot,
        })
    }

    /// Routes what a wake-up channel carried: nothing (a heartbeat), a connection key (its
    /// polls wake), or `\x01<generation>:<key length>:<key><member>`, a message a deliver
    /// handed over to that poll of the key (deliver.lua).
    pub(crate) fn hear(&self, payload: &[u8]) {
        match payload.split_first() {
            None => {}
            Some((1, handed)) => match parse_handed(handed) {
                Some((generation, key, member)) => {
                    if let Some(slot) = self.slot(key) {
                        slot.hand(generation, Bytes::copy_from_slice(member));
                    }
                }
                None => tracing::warn!(
                    bytes = payload.len(),
                    "a wake-up carried a message this node cannot read; is every node running the same version?"
                ),
            },
            Some(_) => {
                if let Ok(key) = std::str::from_utf8(payload) {
                    self.wake(key);
                }
            }
        }
    }

    fn slot(&self, key: &str) -> Option<Arc<Slot>> {
        let map = self.map.lock().ok()?;
        map.get(key).map(|(slot, _)| Arc::clone(slot))
    }

    /// Wakes the polls waiting on `key`.
    pub(crate) fn wake(&self, key: &str) {
        if let Some(slot) = self.slot(key) {
            slot.wake();
        }
    }

    /// Wakes every poll waiting on this node.
    pub(crate) fn wake_all(&self) {
        self.wake_where(|_| true);
    }

    /// Wakes the polls whose key `chosen` accepts.
    pub(crate) fn wake_where(&self, chosen: impl Fn(&str) -> bool) {
        if let Ok(map) = self.map.lock() {
            for (key, (slot, _)) in map.iter() {
                if chosen(key) {
                    slot.wake();
                }
            }
        }
    }
}

/// A poll's registration among the local waiters.
pub(crate) struct Waiter<'a> {
    waiters: &'a Waiters,
    /// The connection's key.
    pub(crate) key: Key,
    /// What the key's wake-ups bring.
    pub(crate) slot: Arc<Slot>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiters.map.lock() {
            if let Some(entry) = map.get_mut(&*self.key) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    map.remove(&*self.key);
                }
            }
        }
    }
}

/// `<generation>:<key length>:<key><member>`.
fn parse_handed(bytes: &[u8]) -> Option<(i64, &str, &[u8])> {
    fn number<T: std::str::FromStr>(bytes: &[u8]) -> Option<(T, &[u8])> {
        let colon = bytes.iter().position(|b| *b == b':')?;
        let (digits, rest) = bytes.split_at(colon);
        let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some((n, rest.get(1..)?))
    }
    let (generation, rest) = number::<i64>(bytes)?;
    let (len, rest) = number::<usize>(rest)?;
    let (key, member) = rest.split_at_checked(len)?;
    Some((generation, std::str::from_utf8(key).ok()?, member))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_woken_by_key_and_forgotten_when_dropped() {
        use futures_util::FutureExt as _;
        let waiters = Waiters::default();
        let a = waiters.register("k:{a}:1".into()).unwrap();
        let b = waiters.register("k:{b}:1".into()).unwrap();
        {
            let a_woken = a.slot.notify.notified();
            let b_woken = b.slot.notify.notified();
            tokio::pin!(a_woken, b_woken);
            a_woken.as_mut().enable();
            b_woken.as_mut().enable();
            waiters.wake_where(|key| key.contains("{a}"));
            assert!(a_woken.now_or_never().is_some());
            assert!(b_woken.as_mut().now_or_never().is_none());
            waiters.wake("k:{b}:1");
            assert!(b_woken.now_or_never().is_some());
        }
        drop((a, b));
        assert!(waiters.map.lock().unwrap().is_empty());
    }

    /// Polls of one connection share one copy of its key with the map (a waiting poll keeps no
    /// string of its own), and the key stays until the last of them is dropped.
    #[test]
    fn polls_of_a_connection_share_its_key() {
        let waiters = Waiters::default();
        let first = waiters.register("k:{a}:1".into()).unwrap();
        let second = waiters.register("k:{a}:1".into()).unwrap();
        assert!(Arc::ptr_eq(&first.key, &second.key));
        assert!(Arc::ptr_eq(&first.slot, &second.slot));
        {
            let map = waiters.map.lock().unwrap();
            let (shared, (_, polls)) = map.get_key_value("k:{a}:1").unwrap();
            assert!(Arc::ptr_eq(shared, &first.key));
            assert_eq!(*polls, 2);
        }
        drop(first);
        assert_eq!(waiters.map.lock().unwrap().get("k:{a}:1").unwrap().1, 1);
        drop(second);
        assert!(waiters.map.lock().unwrap().is_empty());
    }

    /// A wake-up carrying a message goes to the poll of its generation, with the message as
    /// stored; a plain one says the poll must ask Redis; heartbeats and garbage do neither.
    #[test]
    fn wake_ups_carry_messages_to_the_poll_they_name() {
        let waiters = Waiters::default();
        let key = "pb:{p:g:a}:100";
        let waiter = waiters.register(key.into()).unwrap();
        let handed = |generation: i64, member: &str| {
            let mut payload = format!("\x01{generation}:{}:{key}", key.len()).into_bytes();
            payload.extend_from_slice(member.as_bytes());
            payload
        };
        waiters.hear(b"");
        waiters.hear(&handed(7, "12|1700000000000|x"));
        waiters.hear(&handed(6, "11|1700000000000|old"));
        waiters.hear(&handed(7, "13|1700000000000|y:z"));
        waiters.hear(b"\x01garbage");
        waiters.hear(b"\x017:99:pb:{p:g:a}:100short");
        let (mine, plain) = waiter.slot.take_handed(7);
        assert_eq!(mine, ["12|1700000000000|x", "13|1700000000000|y:z"]);
        assert!(!plain);
        assert!(waiter.slot.take_handed(7).0.is_empty());
        waiters.hear(key.as_bytes());
        let (mine, plain) = waiter.slot.take_handed(6);
        assert_eq!(mine, ["11|1700000000000|old"]);
        assert!(plain);
        assert!(!waiter.slot.take_handed(6).1);
        // A key nobody waits on keeps nothing.
        waiters.hear(
            &handed(1, "1|1|x")
                .iter()
                .map(|b| if *b == b'a' { b'b' } else { *b })
                .collect::<Vec<_>>(),
        );
        assert!(waiters.slot("pb:{p:g:b}:100").is_none());
    }
}
