//! A whole session as one byte string, to ship it to another node
//! (`cluster/handover.rs`): the same record encodings as the rows on disk,
//! so what crosses a node link is exactly what a restart would read back.
//!
//! ```text
//! snapshot = V1 next_seq:var session:bytes
//!            count:var (filter:bytes subscription:bytes)*
//!            count:var (seq:var outbound:bytes)*
//!            count:var (packet_id:u16)*
//! ```
//! Inbound QoS 2 ids travel without their message: the old node routed the
//! message already; the new one only answers PUBREL and refuses a resent
//! PUBLISH with that id as a new message [MQTT-4.3.3-9].

use bytes::Bytes;
use ringmq_codec::PacketId;

use super::enc::{BadRecord, Reader, Writer};
use super::records::{
    put_outbound, put_session, put_subscription, read_outbound, read_session, read_subscription,
};
use super::{
    InboundQos2, MessageRef, OutboundState, RecoveredSession, SessionRecord, SubscriptionRecord,
};

const V1: u8 = 1;

/// Builds a snapshot; the parts are added in this order: subscriptions,
/// outbound messages (in `seq` order), inbound QoS 2 ids.
pub struct SnapshotWriter {
    subs: Vec<u8>,
    n_subs: u64,
    out: Vec<u8>,
    n_out: u64,
    head: Vec<u8>,
}

impl SnapshotWriter {
    pub fn new(session: &SessionRecord, next_seq: u64) -> Self {
        let mut head = Vec::new();
        let mut w = Writer(&mut head);
        w.u8(V1);
        w.var(next_seq);
        let mut row = Vec::new();
        put_session(&mut row, session);
        w.bytes(&row);
        SnapshotWriter {
            subs: Vec::new(),
            n_subs: 0,
            out: Vec::new(),
            n_out: 0,
            head,
        }
    }

    pub fn subscription(&mut self, s: &SubscriptionRecord) {
        let mut row = Vec::new();
        put_subscription(&mut row, s);
        let mut w = Writer(&mut self.subs);
        w.bytes(s.filter.as_str().as_bytes());
        w.bytes(&row);
        self.n_subs += 1;
    }

    pub fn outbound(&mut self, seq: u64, state: OutboundState, msg: Option<MessageRef<'_>>) {
        let mut row = Vec::new();
        put_outbound(&mut row, state, msg);
        let mut w = Writer(&mut self.out);
        w.var(seq);
        w.bytes(&row);
        self.n_out += 1;
    }

    /// The whole snapshot, with the inbound QoS 2 ids awaiting PUBREL.
    pub fn finish(self, inbound_qos2: &[u16]) -> Vec<u8> {
        let mut b = self.head;
        let mut w = Writer(&mut b);
        w.var(self.n_subs);
        w.raw(&self.subs);
        w.var(self.n_out);
        w.raw(&self.out);
        w.var(inbound_qos2.len() as u64);
        for id in inbound_qos2 {
            w.u16(*id);
        }
        b
    }
}

/// Reads a snapshot back (`key` 0: the receiver allocates its own).
pub fn read_snapshot(buf: Bytes) -> Result<RecoveredSession, BadRecord> {
    let mut r = Reader::new(buf);
    if r.u8("snapshot version")? != V1 {
        return Err(BadRecord("unknown snapshot version"));
    }
    let next_seq = r.var("next seq")?;
    let record = read_session(r.bytes("session")?)?;
    let mut s = RecoveredSession::new(0, record);
    s.next_seq = next_seq;
    let n = r.var("subscription count")?;
    for _ in 0..n {
        let filter = r.bytes("filter")?;
        s.subscriptions
            .push(read_subscription(&filter, r.bytes("subscription")?)?);
    }
    let n = r.var("outbound count")?;
    for _ in 0..n {
        let seq = r.var("seq")?;
        s.outbound.push(read_outbound(seq, r.bytes("outbound")?)?);
    }
    let n = r.var("inbound count")?;
    for _ in 0..n {
        let id = PacketId::new(r.u16("inbound id")?).ok_or(BadRecord("packet id 0"))?;
        s.inbound_qos2.push(InboundQos2 {
            packet_id: id,
            message: None,
            prepared: None,
        });
    }
    r.finish("snapshot trailing bytes")?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Owner;
    use ringmq_codec::{
        LastWill, MqttString, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
        TopicFilter, TopicName,
    };

    #[test]
    fn a_session_survives_the_trip() {
        let will = LastWill {
            topic: TopicName::try_from("w/1").unwrap(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        };
        let rec = SessionRecord {
            client_id: MqttString::try_from("c1").unwrap(),
            protocol: ProtocolVersion::V5,
            expiry_interval: 600,
            disconnected_at_ms: Some(42),
            will: Some(will),
            owner: Owner::User("alice".into()),
        };
        let mut w = SnapshotWriter::new(&rec, 17);
        let sub = SubscriptionRecord {
            filter: TopicFilter::try_from("a/+/c").unwrap(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
            subscription_id: Some(9),
        };
        w.subscription(&sub);
        let mut p = Publish::new(
            TopicName::try_from("a/b/c").unwrap(),
            Bytes::from_static(b"x"),
        );
        p.qos = QoS::ExactlyOnce;
        let m = MessageRef {
            publish: &p,
            qos: QoS::ExactlyOnce,
            retain: false,
            subscription_ids: &[9],
            received_at_ms: 1000,
        };
        let id = PacketId::new(5).unwrap();
        w.outbound(3, OutboundState::AwaitingAck(id), Some(m));
        w.outbound(
            4,
            OutboundState::AwaitingPubComp(PacketId::new(6).unwrap()),
            None,
        );
        w.outbound(5, OutboundState::Queued, Some(m));
        let bytes = Bytes::from(w.finish(&[7, 8]));
        let s = read_snapshot(bytes.clone()).unwrap();
        assert_eq!(s.record, rec);
        assert_eq!(s.next_seq, 17);
        assert_eq!(s.subscriptions, vec![sub]);
        let states: Vec<_> = s.outbound.iter().map(|o| (o.seq, o.state)).collect();
        assert_eq!(
            states,
            vec![
                (3, OutboundState::AwaitingAck(id)),
                (4, OutboundState::AwaitingPubComp(PacketId::new(6).unwrap())),
                (5, OutboundState::Queued)
            ]
        );
        let m3 = s.outbound[0].message.as_ref().unwrap();
        assert_eq!(
            m3.publish.properties.subscription_identifiers.as_slice(),
            &[9]
        );
        let ids: Vec<u16> = s.inbound_qos2.iter().map(|i| i.packet_id.get()).collect();
        assert_eq!(ids, vec![7, 8]);
        // Any cut or flipped byte is an error or another session, never a panic.
        for cut in 0..bytes.len() {
            assert!(read_snapshot(bytes.slice(..cut)).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0xff;
            let _ = read_snapshot(Bytes::from(b));
        }
    }
}
