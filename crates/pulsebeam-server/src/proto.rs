//! The messages of `pulsebeam.v1.Tunnel`, generated from `proto/tunnel.proto`.
//!
//! The code in `src/proto/` is written by `cargo run -p pulsebeam-protogen` (protox compiles the
//! `.proto`, prost-build writes the types, pbjson-build their JSON impls) and checked in; a test
//! of that crate fails while it differs from what the `.proto` generates. Do not edit it by hand.
//!
//! Every type encodes as proto3 binary (prost) and as proto3 JSON (serde): lowerCamelCase names
//! on output, both lowerCamelCase and the proto field names accepted on input, default values
//! omitted, `uint32` accepted as a number or a decimal string, enums written by name and read by
//! name or number (a number the `.proto` does not name is written as that number). JSON input
//! with a field that `pulsebeam.v1` does not have is refused (its error names the field): JSON has
//! no way to carry fields it does not know, where protobuf does.
//!
//! One JSON impl is written here rather than generated: [`Sdp`]'s. pbjson cannot write an
//! `SdpKind` number the `.proto` does not name, and protobuf clients may send any number.
//!
//! The nested oneof enums have short aliases: [`PayloadType`] for
//! [`message_payload::PayloadType`], [`SignalData`] for [`signal::Data`].

/// The generated code, unchanged. It passes the workspace lints as it is, `missing_docs`
/// included: every message, field and enum value in the `.proto` has a comment.
mod generated {
    include!("proto/pulsebeam.v1.rs");
    include!("proto/pulsebeam.v1.serde.rs");
}

pub use generated::*;

/// The `payload_type` oneof of [`MessagePayload`].
pub use generated::message_payload::PayloadType;
/// The `data` oneof of [`Signal`].
pub use generated::signal::Data as SignalData;

/// proto3 JSON for [`Sdp`], as pbjson would write it except that a `kind` number the `.proto`
/// does not name is written, and read, as a number. A field added to `Sdp` in the `.proto` stops
/// this from compiling (the struct literals below name every field), so it cannot fall behind.
mod sdp_json {
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::{SerializeStruct, Serializer};
    use serde::{Deserialize, Serialize};

    use super::{Sdp, SdpKind};

    impl Serialize for Sdp {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let Sdp { kind, sdp } = self;
            let len = usize::from(*kind != 0) + usize::from(!sdp.is_empty());
            let mut out = serializer.serialize_struct("pulsebeam.v1.Sdp", len)?;
            if *kind != 0 {
                match SdpKind::try_from(*kind) {
                    Ok(kind) => out.serialize_field("kind", kind.as_str_name())?,
                    Err(_) => out.serialize_field("kind", kind)?,
                }
            }
            if !sdp.is_empty() {
                out.serialize_field("sdp", sdp)?;
            }
            out.end()
        }
    }

    /// The JSON object: `kind` and `sdp` read the same in lowerCamelCase and as proto names.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Object {
        #[serde(default, deserialize_with = "kind")]
        kind: i32,
        #[serde(default)]
        sdp: String,
    }

    impl<'de> Deserialize<'de> for Sdp {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let Object { kind, sdp } = Object::deserialize(deserializer)?;
            Ok(Sdp { kind, sdp })
        }
    }

    const KIND_NAMES: &[&str] = &[
        "SDP_KIND_UNSPECIFIED",
        "SDP_KIND_OFFER",
        "SDP_KIND_ANSWER",
        "SDP_KIND_PRANSWER",
        "SDP_KIND_ROLLBACK",
    ];

    fn kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
        struct Kind;
        impl Visitor<'_> for Kind {
            type Value = i32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an SdpKind name such as \"SDP_KIND_OFFER\", or an int32")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<i32, E> {
                SdpKind::from_str_name(name)
                    .map(|kind| kind as i32)
                    .ok_or_else(|| E::unknown_variant(name, KIND_NAMES))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<i32, E> {
                i32::try_from(n).map_err(|_| E::custom("SdpKind number out of int32 range"))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<i32, E> {
                i32::try_from(n).map_err(|_| E::custom("SdpKind number out of int32 range"))
            }
        }
        deserializer.deserialize_any(Kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

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
            "payload":{"signal":{"generation_counter":"2","ice_candidate":{"candidate":"c","sdp_m_line_index":0}}}}"#;
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
        assert!(serde_json::from_str::<PeerInfo>(r#"{"connId":"-1"}"#).is_err());
    }

    #[test]
    fn json_refuses_unknown_fields_and_names_them() {
        let err = serde_json::from_str::<SendReq>(
            r#"{"msg":{"header":{"src":{"groupId":"g","nickname":"x"}}}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("unknown field `nickname`"),
            "{err}"
        );
        // An unknown payload kind is an unknown field of the oneof's message.
        let err = serde_json::from_str::<MessagePayload>(r#"{"hangup":{}}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("unknown field `hangup`"),
            "{err}"
        );
        // Also in messages without fields.
        assert!(serde_json::from_str::<PrepareReq>(r#"{"x":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<PrepareReq>("{}").unwrap(),
            PrepareReq {}
        );
    }

    #[test]
    fn json_refuses_two_members_of_a_oneof() {
        assert!(serde_json::from_str::<MessagePayload>(r#"{"join":{},"bye":{}}"#).is_err());
    }

    #[test]
    fn json_writes_an_sdp_kind_the_proto_does_not_name_as_its_number() {
        // Protobuf carries any number, and a JSON receiver must get it too.
        let sdp = Sdp {
            kind: 7,
            sdp: "v=0".into(),
        };
        assert_eq!(Sdp::decode(sdp.encode_to_vec().as_slice()).unwrap(), sdp);
        let text = serde_json::to_string(&sdp).unwrap();
        assert_eq!(text, r#"{"kind":7,"sdp":"v=0"}"#);
        assert_eq!(serde_json::from_str::<Sdp>(&text).unwrap(), sdp);
        assert_eq!(
            serde_json::to_string(&Sdp::default()).unwrap(),
            "{}",
            "defaults left out"
        );
        for (text, kind) in [
            (r#"{"kind":"SDP_KIND_ROLLBACK"}"#, 4),
            (r#"{"kind":-1}"#, -1),
            (r#"{"kind":0}"#, 0),
            ("{}", 0),
        ] {
            assert_eq!(
                serde_json::from_str::<Sdp>(text).unwrap().kind,
                kind,
                "{text}"
            );
        }
        for text in [
            r#"{"kind":"SDP_KIND_NOPE"}"#,
            r#"{"kind":2147483648}"#,
            r#"{"kind":1.5}"#,
            r#"{"kind":1,"kind":2}"#,
            r#"{"type":"offer"}"#,
        ] {
            assert!(serde_json::from_str::<Sdp>(text).is_err(), "{text}");
        }
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

    /// Decodes `bytes` as `T`, and checks that protobuf and a trip through JSON give back the
    /// same bytes; returns the JSON text.
    fn round_trip<T>(name: &str, bytes: &[u8]) -> String
    where
        T: prost::Message + Default + PartialEq + Serialize + DeserializeOwned,
    {
        let msg = T::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.encode_to_vec(), bytes, "{name}: protobuf");
        let json = serde_json::to_string(&msg).unwrap();
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(back.encode_to_vec(), bytes, "{name}: via JSON {json}");
        json
    }

    #[test]
    fn wire_examples_round_trip_byte_for_byte() {
        let text = include_str!("../../../testdata/wire-examples.json");
        let vectors: serde_json::Value = serde_json::from_str(text).unwrap();
        let examples = vectors["examples"].as_array().unwrap();
        assert!(examples.len() >= 10);
        let mut ice_json = None;
        for example in examples {
            let name = example["name"].as_str().unwrap();
            let bytes = hex::decode(example["hex"].as_str().unwrap()).unwrap();
            let json = match name.split('.').next().unwrap() {
                "PrepareReq" => round_trip::<PrepareReq>(name, &bytes),
                "PrepareResp" => round_trip::<PrepareResp>(name, &bytes),
                "SendReq" => round_trip::<SendReq>(name, &bytes),
                "RecvReq" => round_trip::<RecvReq>(name, &bytes),
                "RecvResp" => round_trip::<RecvResp>(name, &bytes),
                other => panic!("wire example {name}: no type {other} to check it against"),
            };
            if name == "SendReq.signal_ice" {
                ice_json = Some(json);
            }
        }
        // The proto3 JSON of one example, in full: camelCase, a set optional field written
        // even when zero (`sdpMLineIndex`), uint32 above 2^31 as a number.
        assert_eq!(
            ice_json.unwrap(),
            concat!(
                r#"{"msg":{"header":{"src":{"groupId":"default","peerId":"bob","connId":2913253855},"#,
                r#""dst":{"groupId":"default","peerId":"alice","connId":2818993334},"seqnum":2,"reliable":true},"#,
                r#""payload":{"signal":{"iceCandidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host","#,
                r#""sdpMLineIndex":0,"sdpMid":"0","username":"abcd"}}}}}"#
            )
        );
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
            let sdp = (any::<i32>(), "\\PC{0,64}")
                .prop_map(|(kind, sdp)| SignalData::Sdp(Sdp { kind, sdp }));
            let candidate = (
                "\\PC{0,64}",
                proptest::option::of(any::<u32>()),
                proptest::option::of("\\PC{0,4}"),
                proptest::option::of("\\PC{0,8}"),
                proptest::option::of("\\PC{0,8}"),
            )
                .prop_map(|(candidate, index, mid, username, password)| {
                    SignalData::IceCandidate(IceCandidate {
                        candidate,
                        sdp_m_line_index: index,
                        sdp_mid: mid,
                        username,
                        password,
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
        }
    }
}
