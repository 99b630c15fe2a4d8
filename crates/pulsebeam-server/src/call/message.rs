//! The protobuf of `pulsebeam.v1` as the relay reads it: a `Message` is taken from a `SendReq`
//! byte for byte, only its routing header and payload size are looked at, and it is handed to the
//! receiver exactly as it came. Twirp's `Tunnel` and gRPC-web's `Signaling` share these types.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::error::Refusal;
use crate::proto::{self, MessageHeader, RecvResp, SendReq};
use crate::store::Envelope;

/// `SendReq` as the server reads it: the message's bytes exactly as sent. Every occurrence of
/// field 1 is kept; protobuf merges repeated occurrences of a message field, which is the same
/// as reading their concatenation, so relaying the concatenation changes nothing.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSendReq {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    msg: Vec<Bytes>,
}

/// What the server checks of a `Message`: the routing header, and the payload's size. Every
/// other field, known or not, is skipped here and relayed untouched.
#[derive(Clone, PartialEq, prost::Message)]
struct MessageHead {
    #[prost(message, optional, tag = "1")]
    header: Option<MessageHeader>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    payload: Vec<Bytes>,
}

/// A `Message` read for relaying: its bytes as sent, its header, its payload's size.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The protobuf bytes, relayed untouched.
    pub(crate) bytes: Bytes,
    /// The routing header, when the message has one.
    pub(crate) header: Option<MessageHeader>,
    /// The payload's length in bytes.
    pub(crate) payload_len: usize,
}

fn missing_msg() -> Refusal {
    Refusal::Missing {
        field: "SendReq.msg",
        fix: "send a Message",
    }
}

/// The `Message` of a protobuf `SendReq` body, as the bytes the client sent.
///
/// # Errors
///
/// [`Refusal::Malformed`] for a body that is not a `SendReq`, [`Refusal::Missing`] without a
/// message, and as [`read_message`].
pub(crate) fn message_of_protobuf(body: Bytes) -> Result<Incoming, Refusal> {
    let request = RawSendReq::decode(body)
        .map_err(|_| Refusal::Malformed("the body is not a valid protobuf SendReq"))?;
    let bytes = match request.msg.len() {
        0 => return Err(missing_msg()),
        1 => request.msg.into_iter().next().unwrap_or_default(),
        _ => Bytes::from(request.msg.concat()),
    };
    read_message(bytes)
}

/// The `Message` of a JSON `SendReq`, encoded as protobuf for storage. JSON carries only the
/// fields the server knows, so this is the one place a message is re-encoded.
///
/// # Errors
///
/// [`Refusal::Missing`] without a message.
pub(crate) fn message_of_json(request: SendReq) -> Result<Incoming, Refusal> {
    let msg = request.msg.ok_or_else(missing_msg)?;
    let payload_len = msg.payload.as_ref().map_or(0, |p| p.encoded_len());
    Ok(Incoming {
        header: msg.header.clone(),
        bytes: Bytes::from(msg.encode_to_vec()),
        payload_len,
    })
}

/// Reads a protobuf `Message` for relaying.
///
/// The whole message must decode as `pulsebeam.v1.Message` (fields this server does not know are
/// skipped, and relayed): a receiver could not read one that does not, and a client that
/// cannot read a message of a batch loses the whole batch, so such a message is refused here,
/// where the sender can be told.
///
/// # Errors
///
/// [`Refusal::Malformed`] when the bytes are not a valid `Message`.
pub(crate) fn read_message(bytes: Bytes) -> Result<Incoming, Refusal> {
    let head = MessageHead::decode(bytes.clone())
        .map_err(|_| Refusal::Malformed("msg is not a valid protobuf Message"))?;
    if proto::Message::decode(bytes.clone()).is_err() {
        return Err(Refusal::Malformed(
            "msg does not decode as a pulsebeam.v1.Message (its payload is not a valid MessagePayload); a receiver could not read it",
        ));
    }
    Ok(Incoming {
        header: head.header,
        payload_len: head.payload.iter().map(Bytes::len).sum(),
        bytes,
    })
}

/// A protobuf length-delimited field `tag` holding `bytes`, written without re-encoding them.
pub(crate) fn put_bytes_field(out: &mut BytesMut, tag: u32, bytes: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.put_slice(bytes);
}

/// The encoded length of [`put_bytes_field`] for a tag below 16.
pub(crate) fn bytes_field_len(bytes: &[u8]) -> usize {
    1 + prost::encoding::encoded_len_varint(bytes.len() as u64) + bytes.len()
}

/// Twirp's `RecvResp` (`repeated Message msgs = 1`) in protobuf, built from the stored message
/// bytes without re-encoding them.
pub(crate) fn recv_resp_protobuf(envelopes: &[Envelope]) -> Bytes {
    let len: usize = envelopes.iter().map(|e| bytes_field_len(&e.message)).sum();
    let mut out = BytesMut::with_capacity(len);
    for e in envelopes {
        put_bytes_field(&mut out, 1, &e.message);
    }
    out.freeze()
}

/// Twirp's `RecvResp` as a message, for the JSON encoding, and how many stored messages could
/// not be read (skipped, so one bad message never costs the others; counted by the caller).
pub(crate) fn recv_resp_message(envelopes: &[Envelope]) -> (RecvResp, usize) {
    let mut skipped = 0;
    let msgs = envelopes
        .iter()
        .filter_map(|e| {
            let decoded = proto::Message::decode(e.message.as_ref()).ok();
            skipped += usize::from(decoded.is_none());
            decoded
        })
        .collect();
    (RecvResp { msgs }, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn field(number: u32, value: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_bytes_field(&mut out, number, value);
        out.to_vec()
    }

    fn header(src_conn: u32) -> Vec<u8> {
        let header = MessageHeader {
            src: Some(proto::PeerInfo {
                group_id: "g".into(),
                peer_id: "alice".into(),
                conn_id: src_conn,
            }),
            dst: Some(proto::PeerInfo {
                group_id: "g".into(),
                peer_id: "bob".into(),
                conn_id: 0,
            }),
            seqnum: 1,
            reliable: true,
        };
        header.encode_to_vec()
    }

    proptest! {
        /// Whatever the body, reading a `SendReq` gives a message or a refusal with the code
        /// the client is owed; a message read decodes as a `Message`, and its header and
        /// payload size are those of the bytes it will be relayed as.
        #[test]
        fn arbitrary_send_bodies_are_read_or_refused(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let wrapped = RawSendReq::decode(body.as_slice());
            match message_of_protobuf(Bytes::from(body)) {
                Ok(message) => {
                    let decoded = proto::Message::decode(message.bytes.clone());
                    prop_assert!(decoded.is_ok());
                    let decoded = decoded.unwrap_or_default();
                    prop_assert_eq!(&message.header, &decoded.header);
                    prop_assert_eq!(message.payload_len, decoded.payload.map_or(0, |p| p.encoded_len()));
                }
                Err(Refusal::Missing { field, .. }) => {
                    prop_assert_eq!(field, "SendReq.msg");
                    prop_assert!(wrapped.is_ok_and(|r| r.msg.is_empty()));
                }
                Err(Refusal::Malformed(why)) => {
                    // Either the envelope or the message in it does not decode.
                    let envelope_ok = wrapped.is_ok();
                    prop_assert_eq!(why.starts_with("msg "), envelope_ok, "{}", why);
                }
                Err(other) => prop_assert!(false, "unexpected refusal {other}"),
            }
        }

        /// A message's bytes, unknown fields and all, come out of the request exactly as they
        /// went in, also when split over several occurrences of the field, and the payload
        /// size read is the payload's.
        #[test]
        fn the_message_is_taken_byte_for_byte(
            src_conn in 16u32..,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            unknown_number in 3u32..1000,
            unknown in proptest::collection::vec(any::<u8>(), 0..32),
            split in any::<bool>(),
        ) {
            // An opaque payload: the bytes of an unknown field 100 of MessagePayload.
            let payload = field(100, &payload);
            let message: Vec<u8> = [field(1, &header(src_conn)), field(2, &payload), field(unknown_number, &unknown)].concat();
            let body = if split {
                let (a, b) = message.split_at(message.len() / 2);
                // Arbitrary halves are not whole fields, but their concatenation is the message.
                [field(1, a), field(1, b)].concat()
            } else {
                field(1, &message)
            };
            let taken = message_of_protobuf(Bytes::from(body));
            prop_assert!(taken.is_ok(), "{:?}", taken);
            let taken = taken.unwrap_or_else(|_| unreachable!());
            prop_assert_eq!(taken.bytes.as_ref(), message.as_slice());
            prop_assert_eq!(taken.payload_len, payload.len());
            prop_assert_eq!(taken.header.map(|h| h.src.map(|s| s.conn_id)), Some(Some(src_conn)));
        }
    }

    #[test]
    fn a_send_request_without_a_message_says_so() {
        let err = message_of_protobuf(Bytes::new()).unwrap_err();
        assert_eq!(err.code(), crate::code::Code::InvalidArgument);
        assert!(err.to_string().contains("msg is missing"));
    }

    #[test]
    fn a_message_whose_payload_cannot_be_read_is_refused_before_it_is_stored() {
        // A valid header, then payload bytes `ff ff` (a truncated field key).
        let message = [field(1, &header(20)), field(2, &[0xff, 0xff])].concat();
        let err = message_of_protobuf(Bytes::from(field(1, &message))).unwrap_err();
        assert_eq!(err.code(), crate::code::Code::Malformed);
        assert!(
            err.to_string().contains("a receiver could not read it"),
            "{err}"
        );
    }

    #[test]
    fn a_stored_message_that_cannot_be_read_costs_no_other_message_in_json() {
        let envelope = |message: Vec<u8>| Envelope {
            src_group: Arc::from("g"),
            src_peer: Arc::from("alice"),
            message: Bytes::from(message),
        };
        let good = [field(1, &header(20))].concat();
        let bad = [field(1, &header(20)), field(2, &[0xff, 0xff])].concat();
        let (resp, skipped) =
            recv_resp_message(&[envelope(bad), envelope(good.clone()), envelope(good)]);
        assert_eq!((resp.msgs.len(), skipped), (2, 1));
    }
}
