//! The stored form of a message: the member `seq|ms|envelope` of a mailbox sorted set, where
//! the scripts write `seq` and `ms` and the envelope is the sender's ids, each after its length
//! (4 bytes, big-endian), then the message bytes.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use fred::types::Value;

use crate::store::{Envelope, StoreError};

/// The envelope as the scripts store it after `seq|ms|`.
pub(crate) fn encode(envelope: &Envelope) -> Bytes {
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

/// Reads a stored member `seq|ms|envelope`.
///
/// # Errors
///
/// [`StoreError::Unavailable`] for a member this node cannot have written.
pub(crate) fn decode(member: &Value) -> Result<Envelope, StoreError> {
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

/// The sequence number of a stored member `seq|ms|envelope`.
pub(crate) fn seq_of(member: &[u8]) -> Option<u64> {
    let digits = member.split(|b| *b == b'|').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_messages_round_trip_and_garbage_is_refused() {
        let envelope = Envelope {
            src_group: Arc::from("g|1"),
            src_peer: Arc::from("p"),
            message: Bytes::from_static(b"a|b\0c"),
        };
        let mut member = b"12|1700000000000|".to_vec();
        member.extend_from_slice(&encode(&envelope));
        assert_eq!(seq_of(&member), Some(12));
        assert_eq!(decode(&Value::Bytes(member.into())), Ok(envelope));
        assert_eq!(seq_of(b"x|1|"), None);
        for bad in [
            &b"12|3"[..],
            b"1|2|\0\0\0\x09ab",
            b"1|2|\0\0\0\x01\xff\0\0\0\0",
        ] {
            assert!(decode(&Value::Bytes(Bytes::copy_from_slice(bad))).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_envelope_round_trips(group in ".{0,20}", peer in ".{0,20}", message in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let envelope = Envelope {
                src_group: Arc::from(group.as_str()),
                src_peer: Arc::from(peer.as_str()),
                message: Bytes::from(message),
            };
            let mut member = b"1|2|".to_vec();
            member.extend_from_slice(&encode(&envelope));
            proptest::prop_assert_eq!(decode(&Value::Bytes(member.into())), Ok(envelope));
        }
    }
}
