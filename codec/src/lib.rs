//! ringmq-codec: MQTT 3.1 (`MQIsdp`/3), 3.1.1 (`MQTT`/4) and 5.0 (`MQTT`/5) packets over `bytes`.
//!
//! What it is for: turning bytes into typed packets and back, for the broker and for the test
//! and bench clients (every packet decodes and encodes, both directions). No I/O here.
//!
//! - Decode is zero-copy: a [`Decoder`] splits one whole frame off a `BytesMut` once its fixed
//!   header says it is complete (`Ok(None)` until then, size limit checked from the header),
//!   and topic, payload, strings and binary properties are slices of that frame.
//! - Types rule out invalid packets where they can: [`PacketId`] is non-zero, topics and filters
//!   are validated newtypes, properties live in per-packet structs.
//! - Packets are small to move: a decoded PUBLISH is 80 bytes (properties behind [`Props`],
//!   which allocates only when a property is set; CONNECT is boxed).
//! - Every spec rule enforced is cited beside its check (`// [MQTT-x.y.z-n]`, v5 numbering, with
//!   3.1.1 numbering where it differs). Errors ([`DecodeError`]) are `Copy`, one variant per rule,
//!   and know their v5 reason code, 3.1.1 CONNACK return code and spec reference.
//! - Fan-out: [`PublishFrame`] encodes a PUBLISH once per (version, QoS) and writes it per
//!   subscriber by patching the first byte and the packet id.
//!
//! Layout (one file per packet: decode, encode and length side by side, tests at the bottom):
//!
//! | file | what |
//! |---|---|
//! | `types.rs` | `ProtocolVersion`, `QoS`, `PacketId`, `SubscriptionOptions`, `RetainHandling` |
//! | `string.rs` | `MqttString`: UTF-8 string rules (v5 1.5.4) |
//! | `topic.rs` | `TopicName`, `TopicFilter`: wildcard and shared-subscription rules (v5 4.7, 4.8.2) |
//! | `reason.rs` | `ReasonCode` (v5 2.4 table), `ConnectReturnCode` (3.1.1) |
//! | `error.rs` | `DecodeError`, `EncodeError` |
//! | `wire.rs` | integers, variable byte integers, strings, binary; the frame `Reader` |
//! | `property.rs` | property identifiers, value kinds, the property-block reader, `properties!` |
//! | `properties.rs` | one property struct per packet kind |
//! | `props.rs` | `Props<T>`: the property struct behind a pointer, unallocated when empty (PUBLISH, CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH) |
//! | `packet.rs` | `Packet`, fixed-header checks, dispatch, PINGREQ/PINGRESP |
//! | `connect.rs` `connack.rs` `publish.rs` `pubresp.rs` `subscribe.rs` `suback.rs` `unsubscribe.rs` `unsuback.rs` `disconnect.rs` `auth.rs` | one packet each |
//! | `decoder.rs` | `Decoder`: incremental framing, direction checks |
//! | `frame.rs` | `PublishFrame`, `Delivery`: encode once, patch per subscriber |
//!
//! Elsewhere in the crate: `tests/` (proptests: round trips of every packet in every version,
//! split input, `PublishFrame`; the named byte vectors are the unit tests at the bottom of each
//! packet file), `benches/` (criterion), `examples/decode_batches.rs` (decode timed per batch:
//! best and median batch), `fuzz/` (cargo-fuzz target, not a workspace member).

mod auth;
mod connack;
mod connect;
mod decoder;
mod disconnect;
mod error;
mod frame;
mod packet;
mod properties;
pub(crate) mod property;
mod props;
mod publish;
mod pubresp;
mod reason;
mod string;
mod suback;
mod subscribe;
mod topic;
mod types;
mod unsuback;
mod unsubscribe;
mod wire;

#[cfg(test)]
mod testutil;

pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use decoder::{decode_publish_frame, Decoder};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError};
pub use frame::{Delivery, PublishFrame};
pub use packet::{packet_type, Packet};
pub use properties::{
    AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties, PubRespProperties,
    PublishProperties, SubAckProperties, SubscribeProperties, UnsubAckProperties,
    UnsubscribeProperties, WillProperties,
};
pub use property::id as property_id;
pub use props::{EmptyProps, Props};
pub use publish::Publish;
pub use pubresp::PubResp;
pub use reason::{ConnectReturnCode, ReasonCode};
pub use string::{MqttString, MAX_STRING_LEN};
pub use suback::SubAck;
pub use subscribe::Subscribe;
pub use topic::{TopicFilter, TopicName};
pub use types::{PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;
pub use wire::MAX_VAR_INT;

/// Re-exported so users name the same `Bytes` types as the codec.
pub use bytes;
