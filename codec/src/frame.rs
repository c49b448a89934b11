//! `PublishFrame`: a PUBLISH encoded once per (version, QoS) and written to each subscriber with
//! patches (first byte, packet id) instead of a re-encode. Topic Alias and Subscription
//! Identifiers belong to the receiving connection: the frame never carries the publisher's, and
//! `Delivery` adds the subscriber's own (then the frame is rebuilt around the cached parts).

use bytes::{BufMut, Bytes, BytesMut};

use crate::properties::PublishProperties;
use crate::property::id;
use crate::props::Props;
use crate::publish::Publish;
use crate::topic::TopicName;
use crate::types::{PacketId, ProtocolVersion, QoS};
use crate::wire::{
    frame_len, parse_var_int, put_binary, put_fixed_header, put_var_int, var_int_len, Reader,
    VarInt, MAX_VAR_INT,
};

/// An encoded PUBLISH shared by every subscriber of one (version, QoS). Clone is a refcount.
#[derive(Clone, Debug)]
pub struct PublishFrame {
    /// The whole frame, DUP/RETAIN clear and packet id 0.
    buf: Bytes,
    version: ProtocolVersion,
    qos: QoS,
    /// Offset of the topic's 2-byte length (= fixed header size).
    topic_at: u32,
    /// Offset of the packet id (QoS > 0) or of what follows the topic.
    pid_at: u32,
    /// Offset of the Property Length (v5) or of the payload.
    props_at: u32,
    payload_at: u32,
    /// Message Expiry Interval in the frame (v5 only).
    expiry: Option<u32>,
}

/// What differs per subscriber.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delivery<'a> {
    /// `Some` when the frame's QoS > 0 (ignored at QoS 0).
    pub packet_id: Option<PacketId>,
    /// Redelivery [MQTT-3.3.1-1]; ignored at QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    /// RETAIN as this subscriber sees it (retain-as-published, retained replay).
    pub retain: bool,
    /// v5: (alias, send_topic_name). `false` sends an empty topic name (alias already known).
    pub topic_alias: Option<(u16, bool)>,
    /// v5: identifiers of this subscriber's matching subscriptions [MQTT-3.3.4-3].
    pub subscription_ids: &'a [u32],
}

impl PublishFrame {
    /// Encodes `publish` for `version` at `qos` (the delivery QoS), leaving out its Topic Alias
    /// and Subscription Identifiers. `publish.topic` must be the real topic (resolve an inbound
    /// alias first); DUP, RETAIN and the packet id come from each `Delivery`.
    pub fn new(publish: &Publish, version: ProtocolVersion, qos: QoS) -> PublishFrame {
        debug_assert!(
            !publish.topic.is_empty(),
            "resolve the topic alias before fan-out"
        );
        let stripped;
        let props: &PublishProperties = if publish.properties.topic_alias.is_some()
            || !publish.properties.subscription_identifiers.is_empty()
        {
            stripped = PublishProperties {
                topic_alias: None,
                subscription_identifiers: Default::default(),
                ..(*publish.properties).clone()
            };
            &stripped
        } else {
            &publish.properties
        };
        let topic = publish.topic.as_str().as_bytes();
        let pid_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
        let props_len = if version.is_v5() {
            props.encoded_len()
        } else {
            0
        };
        let remaining = 2 + topic.len() + pid_len + props_len + publish.payload.len();
        let mut out = BytesMut::with_capacity(frame_len(remaining));
        put_fixed_header(&mut out, 0x30 | (qos as u8) << 1, remaining);
        let topic_at = out.len();
        put_binary(&mut out, topic);
        let pid_at = out.len();
        if pid_len > 0 {
            out.put_u16(0);
        }
        let props_at = out.len();
        if version.is_v5() {
            props.put(&mut out);
        }
        let payload_at = out.len();
        out.put_slice(&publish.payload);
        PublishFrame {
            buf: out.freeze(),
            version,
            qos,
            topic_at: topic_at as u32,
            pid_at: pid_at as u32,
            props_at: props_at as u32,
            payload_at: payload_at as u32,
            expiry: if version.is_v5() {
                props.message_expiry_interval
            } else {
                None
            },
        }
    }

    #[inline]
    pub fn qos(&self) -> QoS {
        self.qos
    }

    #[inline]
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        let t = &self.buf[self.topic_at as usize + 2..self.pid_at as usize];
        // SAFETY: these bytes were copied from a `TopicName`, which is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(t) }
    }

    /// The application message (a slice of the frame).
    pub fn payload(&self) -> Bytes {
        self.buf.slice(self.payload_at as usize..)
    }

    /// Length of the application message, bytes.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - self.payload_at as usize
    }

    /// The encoded frame as cached (DUP/RETAIN clear, packet id 0).
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The PUBLISH this frame carries (zero-copy: topic, payload and properties slice the frame;
    /// `dup`/`retain` false, no packet id). Below v5 the properties are empty.
    pub fn to_publish(&self) -> Publish {
        let body = self.buf.slice(self.topic_at as usize..);
        let mut r = Reader::new(&body);
        // The frame was encoded from a valid Publish: these reads cannot fail.
        let topic = r
            .topic_name_or_empty()
            .unwrap_or_else(|_| TopicName::empty_for_alias());
        if self.qos != QoS::AtMostOnce {
            let _ = r.u16();
        }
        let properties = if self.version.is_v5() {
            PublishProperties::read_props(&mut r).unwrap_or_default()
        } else {
            Props::none()
        };
        Publish {
            dup: false,
            qos: self.qos,
            retain: false,
            topic,
            packet_id: None,
            properties,
            payload: r.rest(),
        }
    }

    /// The Message Expiry Interval in the frame, if any (always `None` below v5).
    #[inline]
    pub fn message_expiry_interval(&self) -> Option<u32> {
        self.expiry
    }

    /// A new frame with the Message Expiry Interval replaced (the broker forwards the remaining
    /// lifetime, [MQTT-3.3.2-6]); `None` removes it. Re-encodes once.
    pub fn with_message_expiry(&self, secs: Option<u32>) -> PublishFrame {
        let mut p = self.to_publish();
        p.properties.message_expiry_interval = secs;
        PublishFrame::new(&p, self.version, self.qos)
    }

    #[inline]
    fn first_byte(&self, d: &Delivery<'_>) -> u8 {
        let dup = d.dup && self.qos != QoS::AtMostOnce;
        0x30 | (dup as u8) << 3 | (self.qos as u8) << 1 | d.retain as u8
    }

    #[inline]
    fn needs_rebuild(&self, d: &Delivery<'_>) -> bool {
        self.version.is_v5() && (d.topic_alias.is_some() || !d.subscription_ids.is_empty())
    }

    /// Sizes of the per-subscriber parts of a rebuilt frame: (topic field, property body).
    fn rebuilt_parts(&self, d: &Delivery<'_>) -> (usize, usize) {
        let topic_field = match d.topic_alias {
            Some((_, false)) => 2,
            _ => (self.pid_at - self.topic_at) as usize,
        };
        let (old_props, _) = self.old_props();
        let mut props = old_props.len();
        if d.topic_alias.is_some() {
            props += 3;
        }
        props += d
            .subscription_ids
            .iter()
            .map(|&s| 1 + var_int_len(s as usize))
            .sum::<usize>();
        (topic_field, props)
    }

    /// The cached property body (without its length prefix).
    fn old_props(&self) -> (&[u8], usize) {
        let at = self.props_at as usize;
        let n = match parse_var_int(&self.buf[at..]) {
            VarInt::Value(_, n) => n,
            _ => 0,
        };
        (&self.buf[at + n..self.payload_at as usize], n)
    }

    fn rebuilt_remaining(&self, d: &Delivery<'_>) -> usize {
        let (topic_field, props) = self.rebuilt_parts(d);
        let pid = (self.props_at - self.pid_at) as usize;
        let payload = self.buf.len() - self.payload_at as usize;
        topic_field + pid + var_int_len(props) + props + payload
    }

    /// Bytes `write` appends for this delivery.
    #[inline]
    pub fn len(&self, d: &Delivery<'_>) -> usize {
        if self.needs_rebuild(d) {
            frame_len(self.rebuilt_remaining(d))
        } else {
            self.buf.len()
        }
    }

    /// Appends the frame for one subscriber. Fast path (no alias, no subscription ids, or below
    /// v5): one copy, then the first byte and the packet id are patched.
    #[inline]
    pub fn write(&self, out: &mut BytesMut, d: &Delivery<'_>) {
        if self.needs_rebuild(d) {
            return self.write_rebuilt(out, d);
        }
        let start = out.len();
        out.extend_from_slice(&self.buf);
        out[start] = self.first_byte(d);
        if self.qos != QoS::AtMostOnce {
            debug_assert!(
                d.packet_id.is_some(),
                "QoS > 0 delivery without a packet id"
            );
            let id = d.packet_id.map_or(0, |p| p.get()).to_be_bytes();
            let at = start + self.pid_at as usize;
            out[at..at + 2].copy_from_slice(&id);
        }
    }

    fn write_rebuilt(&self, out: &mut BytesMut, d: &Delivery<'_>) {
        let (_, props) = self.rebuilt_parts(d);
        let remaining = self.rebuilt_remaining(d);
        out.reserve(frame_len(remaining));
        put_fixed_header(out, self.first_byte(d), remaining);
        match d.topic_alias {
            Some((_, false)) => out.put_u16(0),
            _ => out.put_slice(&self.buf[self.topic_at as usize..self.pid_at as usize]),
        }
        if self.qos != QoS::AtMostOnce {
            out.put_u16(d.packet_id.map_or(0, |p| p.get()));
        }
        put_var_int(out, props);
        if let Some((alias, _)) = d.topic_alias {
            out.put_u8(id::TOPIC_ALIAS);
            out.put_u16(alias);
        }
        for &s in d.subscription_ids {
            out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            put_var_int(out, s.min(MAX_VAR_INT) as usize);
        }
        out.put_slice(self.old_props().0);
        out.put_slice(&self.buf[self.payload_at as usize..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::dec;
    use crate::{MqttString, Packet};

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn source() -> Publish {
        let mut p = Publish::new(TopicName::from_static("a/b"), Bytes::from_static(b"hello"));
        p.qos = QoS::ExactlyOnce;
        p.packet_id = PacketId::new(99);
        p.retain = true;
        p.properties.topic_alias = Some(4);
        p.properties.subscription_identifiers.push(77);
        p.properties.message_expiry_interval = Some(30);
        p.properties
            .user_properties
            .push((MqttString::from_static("k"), MqttString::from_static("v")));
        p
    }

    fn write(f: &PublishFrame, d: &Delivery<'_>) -> Publish {
        let mut out = BytesMut::from(&b"xy"[..]);
        f.write(&mut out, d);
        assert_eq!(out.len() - 2, f.len(d), "len() matches bytes written");
        match dec(f.version(), &out[2..]).unwrap() {
            Packet::Publish(p) => p,
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn strips_publisher_alias_and_subscription_ids() {
        let f = PublishFrame::new(&source(), V5, QoS::AtLeastOnce);
        let p = f.to_publish();
        assert_eq!(p.properties.topic_alias, None);
        assert!(p.properties.subscription_identifiers.is_empty());
        assert_eq!(p.properties.message_expiry_interval, Some(30));
        assert_eq!(p.properties.user_properties.len(), 1);
        assert_eq!(f.topic(), "a/b");
        assert_eq!(&f.payload()[..], b"hello");
    }

    #[test]
    fn fast_path_patches_first_byte_and_packet_id() {
        let f = PublishFrame::new(&source(), V5, QoS::AtLeastOnce);
        let d = Delivery {
            packet_id: PacketId::new(0x1234),
            dup: true,
            retain: false,
            ..Default::default()
        };
        let p = write(&f, &d);
        assert_eq!((p.qos, p.dup, p.retain), (QoS::AtLeastOnce, true, false));
        assert_eq!(p.packet_id, PacketId::new(0x1234));
        assert_eq!(p.topic.as_str(), "a/b");
        assert_eq!(p.properties.topic_alias, None);
        // Another subscriber, same frame.
        let d = Delivery {
            packet_id: PacketId::new(1),
            retain: true,
            ..Default::default()
        };
        let p = write(&f, &d);
        assert_eq!(
            (p.dup, p.retain, p.packet_id),
            (false, true, PacketId::new(1))
        );
    }

    #[test]
    fn qos0_frame_has_no_packet_id_and_no_dup() {
        let f = PublishFrame::new(&source(), V4, QoS::AtMostOnce);
        let d = Delivery {
            packet_id: PacketId::new(5),
            dup: true,
            ..Default::default()
        };
        let p = write(&f, &d);
        assert_eq!((p.qos, p.dup, p.packet_id), (QoS::AtMostOnce, false, None));
        assert!(p.properties.is_empty());
        assert_eq!(&p.payload[..], b"hello");
        assert_eq!(f.as_bytes().len(), 2 + 5 + 5);
    }

    #[test]
    fn subscriber_alias_and_subscription_ids() {
        let f = PublishFrame::new(&source(), V5, QoS::ExactlyOnce);
        let ids = [1, 300, 268_435_455];
        let d = Delivery {
            packet_id: PacketId::new(7),
            topic_alias: Some((9, true)),
            subscription_ids: &ids,
            ..Default::default()
        };
        let p = write(&f, &d);
        assert_eq!(p.topic.as_str(), "a/b");
        assert_eq!(p.properties.topic_alias, Some(9));
        assert_eq!(&p.properties.subscription_identifiers[..], &ids);
        assert_eq!(p.properties.message_expiry_interval, Some(30));
        assert_eq!(p.packet_id, PacketId::new(7));
        // Alias already known by the subscriber: empty topic name.
        let d = Delivery {
            packet_id: PacketId::new(7),
            topic_alias: Some((9, false)),
            ..Default::default()
        };
        let p = write(&f, &d);
        assert!(p.topic.is_empty());
        assert_eq!(p.properties.topic_alias, Some(9));
    }

    #[test]
    fn alias_and_ids_ignored_below_v5() {
        let f = PublishFrame::new(&source(), V4, QoS::AtLeastOnce);
        let d = Delivery {
            packet_id: PacketId::new(7),
            topic_alias: Some((9, false)),
            subscription_ids: &[3],
            ..Default::default()
        };
        let p = write(&f, &d);
        assert_eq!(p.topic.as_str(), "a/b");
        assert!(p.properties.is_empty());
    }

    #[test]
    fn frame_is_send_and_cheap_to_clone() {
        fn send<T: Send + Sync>() {}
        send::<PublishFrame>();
        let f = PublishFrame::new(&source(), V5, QoS::AtLeastOnce);
        let g = f.clone();
        assert_eq!(f.as_bytes().as_ptr(), g.as_bytes().as_ptr());
    }

    #[test]
    fn rewritten_message_expiry() {
        let f = PublishFrame::new(&source(), V5, QoS::AtLeastOnce);
        assert_eq!(f.message_expiry_interval(), Some(30));
        let g = f.with_message_expiry(Some(12));
        assert_eq!(g.message_expiry_interval(), Some(12));
        let p = write(
            &g,
            &Delivery {
                packet_id: PacketId::new(1),
                ..Default::default()
            },
        );
        assert_eq!(p.properties.message_expiry_interval, Some(12));
        assert_eq!(p.properties.user_properties.len(), 1);
        assert_eq!(f.with_message_expiry(None).message_expiry_interval(), None);
    }
}
