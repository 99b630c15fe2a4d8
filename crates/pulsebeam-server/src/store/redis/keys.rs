//! Key and channel names, and reading back the peer names kept in budget members.
//!
//! Ids are percent-escaped (every byte outside `A-Z a-z 0-9 _ . -`), so `:`, `{` and `}` in
//! ids cannot make two peers share a key or break a hash tag.

use std::fmt::Write as _;
use std::sync::LazyLock;

use crate::store::PeerAddr;

/// The names of every key and channel of one deployment (one key prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// The names under `prefix` (`store.key_prefix`).
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// `P:{project:group:peer}:`, the start of every key of a peer (one hash tag per peer, so
    /// all of its keys share a Cluster slot).
    pub(crate) fn peer(&self, addr: PeerAddr<'_>) -> String {
        let mut out =
            String::with_capacity(self.prefix.len() + 8 + addr.group.len() + addr.peer.len());
        out.push_str(&self.prefix);
        out.push_str(":{");
        escape_into(&mut out, addr.project);
        out.push(':');
        escape_into(&mut out, addr.group);
        out.push(':');
        escape_into(&mut out, addr.peer);
        out.push_str("}:");
        out
    }

    /// The keys a mailbox script of the peer whose keys start with `base` declares: its hash,
    /// its connection set, its discovery queue and the mailbox, reservations and receipts of
    /// each of `conns`.
    pub(crate) fn mailbox_keys(base: &str, conns: &[u32]) -> MailboxKeys {
        MailboxKeys {
            h: format!("{base}h"),
            conns: format!("{base}conns"),
            d: format!("{base}d"),
            boxes: conns
                .iter()
                .flat_map(|c| {
                    [
                        format!("{base}m:{c}"),
                        format!("{base}r:{c}"),
                        format!("{base}rv:{c}"),
                    ]
                })
                .collect(),
        }
    }

    /// A project's two budgets: (connections that polled, mailboxes opened by senders).
    pub(crate) fn budgets(&self, project: &str) -> (String, String) {
        let tag = self.tag("b", project);
        (
            format!("{}:{tag}:polled", self.prefix),
            format!("{}:{tag}:mail", self.prefix),
        )
    }

    /// The revocations (hash: target -> `until|json`) and their change counter.
    pub(crate) fn revocations(&self) -> (String, String) {
        (
            format!("{}:{{rev}}:all", self.prefix),
            format!("{}:{{rev}}:version", self.prefix),
        )
    }

    /// A project's usage totals of one hour (hash of fields).
    pub(crate) fn usage(&self, project: &str, hour: u64) -> String {
        format!("{}:{}:{hour}", self.prefix, self.tag("u", project))
    }

    /// The start of every node's wake-up channel; the node id follows.
    pub(crate) fn node_channel_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    /// The start of a node's wake-up channel for the peers of one Cluster slot (sharded pub/sub),
    /// `P:w:{tag}:`, where `tag` hashes to that slot; the node id follows.
    pub(crate) fn shard_channel_prefix(&self, tag: u32) -> String {
        format!("{}:w:{{{tag}}}:", self.prefix)
    }

    /// `{kind:project}`: one hash tag per project and kind.
    fn tag(&self, kind: &str, project: &str) -> String {
        let mut tag = format!("{{{kind}:");
        escape_into(&mut tag, project);
        tag.push('}');
        tag
    }

    /// `(peer key start, group, peer, conn id)` of a polled-budget member
    /// `P:{project:group:peer}:conn`; `None` for anything [`Keys::peer`] cannot have written.
    pub(crate) fn parse_member<'m>(
        &self,
        member: &'m str,
    ) -> Option<(&'m str, String, String, u32)> {
        let rest = member.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (tag, conn) = rest.split_once("}:")?;
        let mut parts = tag.split(':');
        let (_project, group, peer) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let base_len = member.len() - conn.len();
        Some((
            member.get(..base_len)?,
            unescape(group)?,
            unescape(peer)?,
            conn.parse().ok()?,
        ))
    }
}

/// How many hash slots a Redis Cluster has.
pub(crate) const SLOTS: u16 = 16_384;

/// The Cluster hash slot of `key` (CRC16 of its hash tag, or of the whole key without one).
pub(crate) fn slot_of(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

/// A short tag whose hash slot is `slot`: the smallest decimal number that hashes there. The
/// table of all of them is computed once per process (about 10 ms).
pub(crate) fn slot_tag(slot: u16) -> u32 {
    static TAGS: LazyLock<Vec<u32>> = LazyLock::new(|| {
        let mut tags = vec![None; usize::from(SLOTS)];
        let mut missing = tags.len();
        // Every slot is reached well before this bound (the test below checks it).
        for n in 0..10_000_000u32 {
            if missing == 0 {
                break;
            }
            if let Some(tag @ None) = tags.get_mut(usize::from(slot_of(&n.to_string()))) {
                *tag = Some(n);
                missing -= 1;
            }
        }
        tags.into_iter().map(Option::unwrap_or_default).collect()
    });
    TAGS.get(usize::from(slot % SLOTS))
        .copied()
        .unwrap_or_default()
}

/// The keys a mailbox script declares (see [`Keys::mailbox_keys`]).
#[derive(Debug, Clone)]
pub(crate) struct MailboxKeys {
    /// The peer's hash.
    pub(crate) h: String,
    /// Its connections by last activity.
    pub(crate) conns: String,
    /// Its discovery queue.
    pub(crate) d: String,
    /// Per connection named: mailbox, reservations, receipts.
    pub(crate) boxes: Vec<String>,
}

/// Percent-escapes every byte outside `A-Z a-z 0-9 _ . -` onto `out`.
pub(super) fn escape_into(out: &mut String, id: &str) {
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Reverses [`escape_into`]; `None` for text it cannot have written.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_separators_and_braces() {
        let keys = Keys::new("pb");
        let a = keys.peer(PeerAddr {
            project: "p",
            group: "a:b",
            peer: "c",
        });
        let b = keys.peer(PeerAddr {
            project: "p",
            group: "a",
            peer: "b:c",
        });
        assert_ne!(a, b);
        assert_eq!(a, "pb:{p:a%3Ab:c}:");
        let braces = keys.peer(PeerAddr {
            project: "{x}",
            group: "%",
            peer: "é",
        });
        assert_eq!(braces, "pb:{%7Bx%7D:%25:%C3%A9}:");
        assert_eq!(keys.usage("a:{b}", 3600), "pb:{u:a%3A%7Bb%7D}:3600");
        assert_eq!(
            keys.budgets("p:1"),
            ("pb:{b:p%3A1}:polled".into(), "pb:{b:p%3A1}:mail".into())
        );
        assert_eq!(
            keys.revocations(),
            ("pb:{rev}:all".into(), "pb:{rev}:version".into())
        );
        assert_eq!(keys.node_channel_prefix(), "pb:node:");
        assert_eq!(keys.shard_channel_prefix(12), "pb:w:{12}:");
    }

    #[test]
    fn budget_members_name_their_peer_and_connection() {
        let keys = Keys::new("pb:x");
        let addr = PeerAddr {
            project: "p:1",
            group: "a:{b}",
            peer: "é%",
        };
        let member = format!("{}{}", keys.peer(addr), 4242);
        let (base, group, peer, conn) = keys.parse_member(&member).unwrap();
        assert_eq!(base, keys.peer(addr));
        assert_eq!((group.as_str(), peer.as_str(), conn), ("a:{b}", "é%", 4242));
        for bad in [
            "pb:x:{p:g}:1",
            "pb:x:{p:g:%Z1}:1",
            "pb:x:{p:g:a:b}:1",
            "pb:x:{p:g:a}:d",
            "other:{p:g:a}:1",
        ] {
            assert!(keys.parse_member(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn every_slot_has_a_short_tag_hashing_to_it() {
        let mut longest = 0;
        for slot in 0..SLOTS {
            let tag = slot_tag(slot).to_string();
            assert_eq!(slot_of(&format!("pb:w:{{{tag}}}:node")), slot, "tag {tag}");
            longest = longest.max(tag.len());
        }
        assert!(longest <= 6, "a tag of {longest} digits");
        assert_eq!(slot_of("pb:{p:g:a}:h"), slot_of("{p:g:a}"));
    }

    proptest::proptest! {
        #[test]
        fn any_id_escapes_into_key_characters_and_back(id in ".{0,40}") {
            let mut escaped = String::new();
            escape_into(&mut escaped, &id);
            proptest::prop_assert!(escaped.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-%".contains(&b)));
            proptest::prop_assert_eq!(unescape(&escaped), Some(id));
        }
    }
}
