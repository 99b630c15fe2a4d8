//! The messages of `pulsebeam.v1.Tunnel`, transcribed by hand from `proto/tunnel.proto`.
//!
//! Every type encodes as proto3 binary (prost) and as proto3 JSON (serde): lowerCamelCase names
//! on output, both lowerCamelCase and the proto field names accepted on input, default values
//! omitted, `uint32` accepted as a number or a decimal string, enums written by name and read by
//! name or number, unknown fields ignored.

use serde::{Deserialize, Serialize};

/// `PrepareReq`: empty.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct PrepareReq {}

/// `PrepareResp`: the ICE servers the peer should use.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareResp {
    /// STUN and TURN servers.
    #[prost(message, repeated, tag = "1")]
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "ice_servers")]
    pub ice_servers: Vec<IceServer>,
}

/// `IceServer`, as `RTCIceServer` takes it.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    #[prost(string, repeated, tag = "1")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// TURN username.
    #[prost(string, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[prost(string, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `SendReq`: one message to relay.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SendReq {
    /// The message.
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<Message>,
}

/// `SendResp`: empty.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct SendResp {}

/// `RecvReq`: a long-poll for the caller's own mailbox.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct RecvReq {
    /// The caller's own identity and connection id.
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<PeerInfo>,
}

/// `RecvResp`: the messages that arrived, possibly none.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct RecvResp {
    /// The messages, oldest first.
    #[prost(message, repeated, tag = "1")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msgs: Vec<Message>,
}

/// `PeerInfo`: one connection of one peer (`conn_id` 0 is the peer's discovery address).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// Group id.
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty", alias = "group_id")]
    pub group_id: String,
    /// Peer id.
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty", alias = "peer_id")]
    pub peer_id: String,
    /// Connection id; 0..15 reserved, 0 is discovery.
    #[prost(uint32, tag = "3")]
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        alias = "conn_id",
        deserialize_with = "json::u32_or_string"
    )]
    pub conn_id: u32,
}

/// `Message`: a routed header and an opaque payload.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Message {
    /// Source, destination and sequencing.
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<MessageHeader>,
    /// The payload, opaque to the server.
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<MessagePayload>,
}

/// `MessageHeader`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct MessageHeader {
    /// The sender's connection.
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<PeerInfo>,
    /// The destination connection (conn 0: discovery).
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<PeerInfo>,
    /// Per-stream sequence number of reliable messages.
    #[prost(uint32, tag = "7")]
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "json::u32_or_string"
    )]
    pub seqnum: u32,
    /// Whether the sender resends until acknowledged.
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub reliable: bool,
}

/// `MessagePayload`: one of Signal, Join, Bye, Ack.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct MessagePayload {
    /// The payload kind.
    #[prost(oneof = "PayloadType", tags = "1, 2, 3, 4")]
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub payload_type: Option<PayloadType>,
}

/// The `payload_type` oneof of [`MessagePayload`].
#[derive(Clone, PartialEq, prost::Oneof, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PayloadType {
    /// SDP or ICE candidate.
    #[prost(message, tag = "1")]
    Signal(Signal),
    /// Ask the destination to open a session.
    #[prost(message, tag = "2")]
    Join(Join),
    /// The sender closed the stream.
    #[prost(message, tag = "3")]
    Bye(Bye),
    /// Acknowledges reliable messages.
    #[prost(message, tag = "4")]
    Ack(Ack),
}

/// `Signal`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    /// Negotiation generation.
    #[prost(uint32, tag = "1")]
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        alias = "generation_counter",
        deserialize_with = "json::u32_or_string"
    )]
    pub generation_counter: u32,
    /// SDP or ICE candidate.
    #[prost(oneof = "SignalData", tags = "9, 10")]
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub data: Option<SignalData>,
}

/// The `data` oneof of [`Signal`].
#[derive(Clone, PartialEq, prost::Oneof, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignalData {
    /// A session description.
    #[prost(message, tag = "9")]
    Sdp(Sdp),
    /// An ICE candidate.
    #[prost(message, tag = "10")]
    #[serde(alias = "ice_candidate")]
    IceCandidate(IceCandidate),
}

/// `SdpKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SdpKind {
    /// Not set.
    Unspecified = 0,
    /// An offer.
    Offer = 1,
    /// An answer.
    Answer = 2,
    /// A provisional answer.
    Pranswer = 3,
    /// A rollback.
    Rollback = 4,
}

impl SdpKind {
    /// The proto enum value name, e.g. `SDP_KIND_OFFER`.
    pub const fn as_str_name(self) -> &'static str {
        match self {
            SdpKind::Unspecified => "SDP_KIND_UNSPECIFIED",
            SdpKind::Offer => "SDP_KIND_OFFER",
            SdpKind::Answer => "SDP_KIND_ANSWER",
            SdpKind::Pranswer => "SDP_KIND_PRANSWER",
            SdpKind::Rollback => "SDP_KIND_ROLLBACK",
        }
    }

    /// The kind named `name` (the proto enum value name).
    pub fn from_str_name(name: &str) -> Option<Self> {
        Some(match name {
            "SDP_KIND_UNSPECIFIED" => SdpKind::Unspecified,
            "SDP_KIND_OFFER" => SdpKind::Offer,
            "SDP_KIND_ANSWER" => SdpKind::Answer,
            "SDP_KIND_PRANSWER" => SdpKind::Pranswer,
            "SDP_KIND_ROLLBACK" => SdpKind::Rollback,
            _ => return None,
        })
    }
}

/// `Sdp`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Sdp {
    /// The [`SdpKind`] as its wire number.
    #[prost(enumeration = "SdpKind", tag = "1")]
    #[serde(default, skip_serializing_if = "is_zero_i32", with = "json::sdp_kind")]
    pub kind: i32,
    /// The SDP text.
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sdp: String,
}

/// `ICECandidate`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The candidate line.
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub candidate: String,
    /// `sdpMLineIndex`.
    #[prost(uint32, optional, tag = "2")]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "sdp_m_line_index",
        deserialize_with = "json::opt_u32_or_string"
    )]
    pub sdp_m_line_index: Option<u32>,
    /// `sdpMid`.
    #[prost(string, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "sdp_mid")]
    pub sdp_mid: Option<String>,
    /// ICE username fragment.
    #[prost(string, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// ICE password.
    #[prost(string, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `Join`: empty.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Join {}

/// `Bye`: empty.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Bye {}

/// `Ack`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// Acknowledged ranges.
    #[prost(message, repeated, tag = "1")]
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "ack_ranges")]
    pub ack_ranges: Vec<AckRange>,
}

/// `AckRange`: the half-open range `[seqnum_start, seqnum_end)`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckRange {
    /// First acknowledged seqnum.
    #[prost(uint32, tag = "1")]
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        alias = "seqnum_start",
        deserialize_with = "json::u32_or_string"
    )]
    pub seqnum_start: u32,
    /// One past the last acknowledged seqnum.
    #[prost(uint32, tag = "2")]
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        alias = "seqnum_end",
        deserialize_with = "json::u32_or_string"
    )]
    pub seqnum_end: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(v: &bool) -> bool {
    !*v
}

/// proto3 JSON details that serde's derive does not cover.
mod json {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;
    use std::fmt;

    struct U32Visitor;

    impl Visitor<'_> for U32Visitor {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a uint32 as a number or a decimal string")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom("number does not fit in uint32"))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom("number does not fit in uint32"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
            if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u32)
            } else {
                Err(E::custom("number is not a uint32"))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            v.parse()
                .map_err(|_| E::custom("string is not a decimal uint32"))
        }
    }

    pub(super) fn u32_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        d.deserialize_any(U32Visitor)
    }

    pub(super) fn opt_u32_or_string<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u32>, D::Error> {
        struct OptVisitor;
        impl<'de> Visitor<'de> for OptVisitor {
            type Value = Option<u32>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("null or a uint32")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(U32Visitor).map(Some)
            }
        }
        d.deserialize_option(OptVisitor)
    }

    pub(super) mod sdp_kind {
        use super::*;
        use crate::proto::SdpKind;

        #[allow(clippy::trivially_copy_pass_by_ref)]
        pub(crate) fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
            match SdpKind::try_from(*v) {
                Ok(kind) => s.serialize_str(kind.as_str_name()),
                Err(_) => s.serialize_i32(*v),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
            struct KindVisitor;
            impl Visitor<'_> for KindVisitor {
                type Value = i32;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an SdpKind name or number")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
                    i32::try_from(v).map_err(|_| E::custom("SdpKind number out of range"))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
                    i32::try_from(v).map_err(|_| E::custom("SdpKind number out of range"))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
                    SdpKind::from_str_name(v)
                        .map(|k| k as i32)
                        .ok_or_else(|| E::custom("unknown SdpKind name"))
                }
            }
            d.deserialize_any(KindVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn json_uses_camel_case_and_omits_defaults() {
        let msg = Message {
            header: Some(MessageHeader {
                src: Some(PeerInfo {
                    group_id: "g".into(),
                    peer_id: "a".into(),
                    conn_id: 17,
                }),
                dst: Some(PeerInfo {
                    group_id: "g".into(),
                    peer_id: "b".into(),
                    conn_id: 0,
                }),
                seqnum: 1,
                reliable: true,
            }),
            payload: Some(MessagePayload {
                payload_type: Some(PayloadType::Signal(Signal {
                    generation_counter: 0,
                    data: Some(SignalData::Sdp(Sdp {
                        kind: SdpKind::Offer as i32,
                        sdp: "v=0".into(),
                    })),
                })),
            }),
        };
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            text,
            r#"{"header":{"src":{"groupId":"g","peerId":"a","connId":17},"dst":{"groupId":"g","peerId":"b"},"seqnum":1,"reliable":true},"payload":{"signal":{"sdp":{"kind":"SDP_KIND_OFFER","sdp":"v=0"}}}}"#
        );
        let back: Message = serde_json::from_str(&text).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn json_accepts_proto_names_strings_and_enum_numbers() {
        let text = r#"{"header":{"src":{"group_id":"g","peer_id":"a","conn_id":"17"}},
            "payload":{"signal":{"generation_counter":"2","ice_candidate":{"candidate":"c","sdp_m_line_index":0,"unknown":1}}}}"#;
        let msg: Message = serde_json::from_str(text).unwrap();
        let header = msg.header.unwrap();
        assert_eq!(header.src.unwrap().conn_id, 17);
        let Some(PayloadType::Signal(signal)) = msg.payload.unwrap().payload_type else {
            panic!("expected a signal");
        };
        assert_eq!(signal.generation_counter, 2);
        let Some(SignalData::IceCandidate(c)) = signal.data else {
            panic!("expected a candidate");
        };
        assert_eq!(c.sdp_m_line_index, Some(0));

        let sdp: Sdp = serde_json::from_str(r#"{"kind":2,"sdp":"x"}"#).unwrap();
        assert_eq!(sdp.kind, SdpKind::Answer as i32);
        assert!(serde_json::from_str::<Sdp>(r#"{"kind":"SDP_KIND_NOPE"}"#).is_err());
        assert!(serde_json::from_str::<PeerInfo>(r#"{"connId":4294967296}"#).is_err());
    }

    #[test]
    fn binary_round_trips_an_ack() {
        let payload = MessagePayload {
            payload_type: Some(PayloadType::Ack(Ack {
                ack_ranges: vec![AckRange {
                    seqnum_start: 1,
                    seqnum_end: 2,
                }],
            })),
        };
        let bytes = payload.encode_to_vec();
        assert_eq!(bytes, [0x22, 0x06, 0x0a, 0x04, 0x08, 0x01, 0x10, 0x02]);
        assert_eq!(MessagePayload::decode(bytes.as_slice()).unwrap(), payload);
    }

    mod round_trips {
        use super::*;
        use proptest::prelude::*;

        fn peer_info() -> impl Strategy<Value = PeerInfo> {
            ("\\PC{0,16}", "\\PC{0,16}", any::<u32>()).prop_map(|(g, p, c)| PeerInfo {
                group_id: g,
                peer_id: p,
                conn_id: c,
            })
        }

        fn payload() -> impl Strategy<Value = Option<PayloadType>> {
            let sdp =
                (0i32..5, "\\PC{0,64}").prop_map(|(kind, sdp)| SignalData::Sdp(Sdp { kind, sdp }));
            let candidate = (
                "\\PC{0,64}",
                proptest::option::of(any::<u32>()),
                proptest::option::of("\\PC{0,4}"),
                proptest::option::of("\\PC{0,8}"),
            )
                .prop_map(|(candidate, index, mid, username)| {
                    SignalData::IceCandidate(IceCandidate {
                        candidate,
                        sdp_m_line_index: index,
                        sdp_mid: mid,
                        username,
                        password: None,
                    })
                });
            let signal = (
                any::<u32>(),
                proptest::option::of(prop_oneof![sdp, candidate]),
            )
                .prop_map(|(generation_counter, data)| {
                    PayloadType::Signal(Signal {
                        generation_counter,
                        data,
                    })
                });
            let ack =
                proptest::collection::vec((any::<u32>(), any::<u32>()), 0..4).prop_map(|ranges| {
                    PayloadType::Ack(Ack {
                        ack_ranges: ranges
                            .into_iter()
                            .map(|(seqnum_start, seqnum_end)| AckRange {
                                seqnum_start,
                                seqnum_end,
                            })
                            .collect(),
                    })
                });
            proptest::option::of(prop_oneof![
                signal,
                ack,
                Just(PayloadType::Join(Join {})),
                Just(PayloadType::Bye(Bye {})),
            ])
        }

        fn message() -> impl Strategy<Value = Message> {
            (
                proptest::option::of(peer_info()),
                proptest::option::of(peer_info()),
                any::<u32>(),
                any::<bool>(),
                payload(),
            )
                .prop_map(|(src, dst, seqnum, reliable, payload_type)| Message {
                    header: Some(MessageHeader {
                        src,
                        dst,
                        seqnum,
                        reliable,
                    }),
                    payload: Some(MessagePayload { payload_type }),
                })
        }

        proptest! {
            #[test]
            fn json_and_binary_round_trip(msg in message()) {
                let json = serde_json::to_string(&msg).unwrap();
                prop_assert_eq!(&serde_json::from_str::<Message>(&json).unwrap(), &msg);
                let bytes = msg.encode_to_vec();
                prop_assert_eq!(&Message::decode(bytes.as_slice()).unwrap(), &msg);
            }

            #[test]
            fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = SendReq::decode(bytes.as_slice());
                let _ = serde_json::from_slice::<SendReq>(&bytes);
            }
        }
    }
}
