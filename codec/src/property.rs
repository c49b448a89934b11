//! v5 property machinery (v5 2.2.2): identifiers, value kinds, the property-block reader with
//! duplicate detection, and the `properties!` macro that generates each packet's struct.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::string::MqttString;
use crate::topic::TopicName;
use crate::types::QoS;
use crate::wire::{binary_len, put_binary, put_var_int, var_int_len, Reader, MAX_VAR_INT};

/// Property identifiers (v5 table 2-4).
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

    /// Bit i set: identifier i exists in table 2-4.
    pub(crate) const KNOWN: u64 = {
        let ids = [
            0x01u8, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19,
            0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
        ];
        let mut m = 0u64;
        let mut i = 0;
        while i < ids.len() {
            m |= 1 << ids[i];
            i += 1;
        }
        m
    };
}

/// The error for an identifier the packet's match did not take.
#[inline]
pub(crate) fn not_allowed(pid: u8) -> DecodeError {
    if pid < 64 && id::KNOWN & (1 << pid) != 0 {
        // v5 2.2.2.2: a property used in a packet it is not defined for.
        DecodeError::PropertyNotAllowed
    } else {
        // v5 2.2.2.2: identifier not in table 2-4.
        DecodeError::UnknownProperty
    }
}

/// Reads a property block (length, then identifier/value pairs) and calls `f` with each
/// identifier, the reader positioned at its value. Rejects a second occurrence of any property
/// but User Property and Subscription Identifier (those the packet checks itself).
#[inline]
pub(crate) fn read_properties<'a>(
    r: &mut Reader<'a>,
    mut f: impl FnMut(u8, &mut Reader<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.var_int()? as usize;
    if len == 0 {
        return Ok(());
    }
    let mut p = r.sub(len)?;
    let mut seen: u64 = 0;
    while !p.is_empty() {
        // v5 2.2.2.2: the identifier is a Variable Byte Integer; all defined ones are < 64.
        let pid = p.var_int()?;
        if pid >= 64 {
            return Err(DecodeError::UnknownProperty);
        }
        let bit = 1u64 << pid;
        let pid = pid as u8;
        // v5 3.x.2.2: "It is a Protocol Error to include <property> more than once".
        if seen & bit != 0 && pid != id::USER_PROPERTY && pid != id::SUBSCRIPTION_IDENTIFIER {
            return Err(DecodeError::DuplicateProperty);
        }
        seen |= bit;
        f(pid, &mut p)?;
    }
    Ok(())
}

/// A property value type: how it is read (with its range check), sized and written.
pub(crate) trait Kind {
    type T;
    fn read(p: &mut Reader<'_>) -> Result<Self::T, DecodeError>;
    fn len(v: &Self::T) -> usize;
    fn put(v: &Self::T, out: &mut BytesMut);
}

/// Byte that must be 0 or 1 (Payload Format Indicator, v5 3.3.2.3.2), kept as u8.
pub(crate) struct Format;
/// Byte that must be 0 or 1, as bool (Request Problem Information, Retain Available, ...).
pub(crate) struct Flag;
/// Maximum QoS (v5 3.2.2.3.4): 0 or 1.
pub(crate) struct MaxQoS;
/// Two Byte Integer.
pub(crate) struct U16;
/// Two Byte Integer that must not be 0 (Receive Maximum, v5 3.1.2.11.3).
pub(crate) struct U16NonZero;
/// Topic Alias: 0 is not allowed [MQTT-3.3.2-8].
pub(crate) struct Alias;
/// Four Byte Integer.
pub(crate) struct U32;
/// Four Byte Integer that must not be 0 (Maximum Packet Size, v5 3.1.2.11.5).
pub(crate) struct U32NonZero;
/// Subscription Identifier: Variable Byte Integer 1..268,435,455 (v5 3.3.2.3.8).
pub(crate) struct SubId;
/// UTF-8 Encoded String.
pub(crate) struct Str;
/// Response Topic: a topic name, no wildcards [MQTT-3.3.2-14].
pub(crate) struct Topic;
/// Binary Data.
pub(crate) struct Bin;

fn zero_one(b: u8) -> Result<u8, DecodeError> {
    if b > 1 {
        // v5 3.1.2.11.6/7, 3.2.2.3.5/11/12/13, 3.3.2.3.2: values other than 0 and 1.
        Err(DecodeError::InvalidPropertyValue)
    } else {
        Ok(b)
    }
}

impl Kind for Format {
    type T = u8;
    fn read(p: &mut Reader<'_>) -> Result<u8, DecodeError> {
        zero_one(p.u8()?)
    }
    fn len(_: &u8) -> usize {
        1
    }
    fn put(v: &u8, out: &mut BytesMut) {
        out.put_u8(*v)
    }
}

impl Kind for Flag {
    type T = bool;
    fn read(p: &mut Reader<'_>) -> Result<bool, DecodeError> {
        Ok(zero_one(p.u8()?)? == 1)
    }
    fn len(_: &bool) -> usize {
        1
    }
    fn put(v: &bool, out: &mut BytesMut) {
        out.put_u8(*v as u8)
    }
}

impl Kind for MaxQoS {
    type T = QoS;
    fn read(p: &mut Reader<'_>) -> Result<QoS, DecodeError> {
        Ok(if zero_one(p.u8()?)? == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        })
    }
    fn len(_: &QoS) -> usize {
        1
    }
    fn put(v: &QoS, out: &mut BytesMut) {
        out.put_u8(*v as u8)
    }
}

impl Kind for U16 {
    type T = u16;
    fn read(p: &mut Reader<'_>) -> Result<u16, DecodeError> {
        p.u16()
    }
    fn len(_: &u16) -> usize {
        2
    }
    fn put(v: &u16, out: &mut BytesMut) {
        out.put_u16(*v)
    }
}

impl Kind for U16NonZero {
    type T = u16;
    fn read(p: &mut Reader<'_>) -> Result<u16, DecodeError> {
        match p.u16()? {
            // v5 3.1.2.11.3 / 3.2.2.3.3: Receive Maximum 0 is a Protocol Error.
            0 => Err(DecodeError::InvalidPropertyValue),
            v => Ok(v),
        }
    }
    fn len(_: &u16) -> usize {
        2
    }
    fn put(v: &u16, out: &mut BytesMut) {
        out.put_u16(*v)
    }
}

impl Kind for Alias {
    type T = u16;
    fn read(p: &mut Reader<'_>) -> Result<u16, DecodeError> {
        match p.u16()? {
            // [MQTT-3.3.2-8] A sender MUST NOT send a Topic Alias with the value 0.
            0 => Err(DecodeError::TopicAliasZero),
            v => Ok(v),
        }
    }
    fn len(_: &u16) -> usize {
        2
    }
    fn put(v: &u16, out: &mut BytesMut) {
        out.put_u16(*v)
    }
}

impl Kind for U32 {
    type T = u32;
    fn read(p: &mut Reader<'_>) -> Result<u32, DecodeError> {
        p.u32()
    }
    fn len(_: &u32) -> usize {
        4
    }
    fn put(v: &u32, out: &mut BytesMut) {
        out.put_u32(*v)
    }
}

impl Kind for U32NonZero {
    type T = u32;
    fn read(p: &mut Reader<'_>) -> Result<u32, DecodeError> {
        match p.u32()? {
            // v5 3.1.2.11.5 / 3.2.2.3.6: Maximum Packet Size 0 is a Protocol Error.
            0 => Err(DecodeError::InvalidPropertyValue),
            v => Ok(v),
        }
    }
    fn len(_: &u32) -> usize {
        4
    }
    fn put(v: &u32, out: &mut BytesMut) {
        out.put_u32(*v)
    }
}

impl Kind for SubId {
    type T = u32;
    fn read(p: &mut Reader<'_>) -> Result<u32, DecodeError> {
        match p.var_int()? {
            // v5 3.3.2.3.8 / 3.8.2.1.2: Subscription Identifier 0 is a Protocol Error.
            0 => Err(DecodeError::SubscriptionIdZero),
            v => Ok(v),
        }
    }
    fn len(v: &u32) -> usize {
        var_int_len(*v as usize)
    }
    fn put(v: &u32, out: &mut BytesMut) {
        put_var_int(out, (*v).min(MAX_VAR_INT) as usize)
    }
}

impl Kind for Str {
    type T = MqttString;
    fn read(p: &mut Reader<'_>) -> Result<MqttString, DecodeError> {
        p.string()
    }
    fn len(v: &MqttString) -> usize {
        binary_len(v.as_bytes())
    }
    fn put(v: &MqttString, out: &mut BytesMut) {
        put_binary(out, v.as_bytes())
    }
}

impl Kind for Topic {
    type T = TopicName;
    fn read(p: &mut Reader<'_>) -> Result<TopicName, DecodeError> {
        // [MQTT-3.3.2-13] UTF-8 string; [MQTT-3.3.2-14] MUST NOT contain wildcards.
        p.topic_name()
    }
    fn len(v: &TopicName) -> usize {
        binary_len(v.as_str().as_bytes())
    }
    fn put(v: &TopicName, out: &mut BytesMut) {
        put_binary(out, v.as_str().as_bytes())
    }
}

impl Kind for Bin {
    type T = Bytes;
    fn read(p: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
        p.binary()
    }
    fn len(v: &Bytes) -> usize {
        binary_len(v)
    }
    fn put(v: &Bytes, out: &mut BytesMut) {
        put_binary(out, v)
    }
}

/// Size of the User Property entries (v5 3.1.2.11.8): identifier, key, value each.
pub(crate) fn user_properties_len(up: &[(MqttString, MqttString)]) -> usize {
    up.iter()
        .map(|(k, v)| 1 + binary_len(k.as_bytes()) + binary_len(v.as_bytes()))
        .sum()
}

pub(crate) fn put_user_properties(out: &mut BytesMut, up: &[(MqttString, MqttString)]) {
    for (k, v) in up {
        out.put_u8(id::USER_PROPERTY);
        put_binary(out, k.as_bytes());
        put_binary(out, v.as_bytes());
    }
}

pub(crate) fn read_user_property(
    p: &mut Reader<'_>,
) -> Result<(MqttString, MqttString), DecodeError> {
    Ok((p.string()?, p.string()?))
}

/// Defines a property struct: `Option` fields (each with its kind and identifier), optional
/// repeatable fields, and `user_properties`; generates `body_len`, `put` and `read`.
macro_rules! properties {
    (
        $(#[$doc:meta])*
        $name:ident {
            $($(#[$fdoc:meta])* $field:ident: $ty:ty as $kind:ident = $pid:ident,)*
        }
        $(repeated { $($(#[$mdoc:meta])* $mfield:ident: $mty:ty as $mkind:ident = $mpid:ident,)* })?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: Option<$ty>,)*
            $($($(#[$mdoc])* pub $mfield: smallvec::SmallVec<[$mty; 1]>,)*)?
            pub user_properties: Vec<($crate::MqttString, $crate::MqttString)>,
        }

        // A struct with no Option field (UNSUBSCRIBE) leaves the helpers unused.
        #[allow(unused_imports, unused_mut)]
        impl $name {
            /// Size of the property entries, without the Property Length prefix.
            pub(crate) fn body_len(&self) -> usize {
                use $crate::property::Kind;
                let mut n = $crate::property::user_properties_len(&self.user_properties);
                $(if let Some(v) = &self.$field {
                    n += 1 + $crate::property::$kind::len(v);
                })*
                $($(for v in &self.$mfield {
                    n += 1 + $crate::property::$mkind::len(v);
                })*)?
                n
            }

            /// Size with the Property Length prefix.
            pub(crate) fn encoded_len(&self) -> usize {
                let n = self.body_len();
                $crate::wire::var_int_len(n) + n
            }

            /// Writes Property Length and the entries.
            pub(crate) fn put(&self, out: &mut bytes::BytesMut) {
                use bytes::BufMut;
                use $crate::property::Kind;
                $crate::wire::put_var_int(out, self.body_len());
                $(if let Some(v) = &self.$field {
                    out.put_u8($crate::property::id::$pid);
                    $crate::property::$kind::put(v, out);
                })*
                $($(for v in &self.$mfield {
                    out.put_u8($crate::property::id::$mpid);
                    $crate::property::$mkind::put(v, out);
                })*)?
                $crate::property::put_user_properties(out, &self.user_properties);
            }

            /// Reads Property Length and the entries.
            #[inline]
            #[allow(dead_code)]
            pub(crate) fn read(r: &mut $crate::wire::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                // The common case, no property at all, without moving a filled-in struct.
                if r.peek() == Some(0) {
                    r.skip(1);
                    return Ok(Self::default());
                }
                Self::read_full(r)
            }

            #[inline(never)]
            fn read_full(r: &mut $crate::wire::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                use $crate::property::Kind;
                let mut s = Self::default();
                $crate::property::read_properties(r, |pid, p| {
                    match pid {
                        $($crate::property::id::$pid => {
                            // v5 3.x.2.2: included more than once (Subscription Identifier
                            // in SUBSCRIBE, v5 3.8.2.1.2, reaches here).
                            if s.$field.is_some() {
                                return Err($crate::DecodeError::DuplicateProperty);
                            }
                            s.$field = Some($crate::property::$kind::read(p)?);
                        })*
                        $($($crate::property::id::$mpid => {
                            s.$mfield.push($crate::property::$mkind::read(p)?);
                        })*)?
                        $crate::property::id::USER_PROPERTY => {
                            s.user_properties.push($crate::property::read_user_property(p)?);
                        }
                        other => return Err($crate::property::not_allowed(other)),
                    }
                    Ok(())
                })?;
                Ok(s)
            }

            /// True when no property is set.
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())* $($(&& self.$mfield.is_empty())*)?
                    && self.user_properties.is_empty()
            }

            /// Reads Property Length and the entries into a `Props` (no allocation when the
            /// block is empty).
            #[inline]
            #[allow(dead_code)]
            pub(crate) fn read_props(
                r: &mut $crate::wire::Reader<'_>,
            ) -> Result<$crate::Props<Self>, $crate::DecodeError> {
                if r.peek() == Some(0) {
                    r.skip(1);
                    return Ok($crate::Props::none());
                }
                Self::read_full(r).map($crate::Props::from)
            }
        }

        impl $crate::props::EmptyProps for $name {
            #[inline]
            fn empty() -> &'static Self {
                static EMPTY: $name = $name {
                    $($field: None,)*
                    $($($mfield: smallvec::SmallVec::new_const(),)*)?
                    user_properties: Vec::new(),
                };
                &EMPTY
            }
            #[inline]
            fn is_empty(&self) -> bool {
                $name::is_empty(self)
            }
        }
    };
}

pub(crate) use properties;
