//! A session move's stub as a store row (`keys::STUB`): written by the old
//! node with the take, in the batch deleting the session's rows, restored at
//! start for the rest of its window, deleted when the stub ends. Without it a
//! crash of the old node during the stub window lost the copies a third node
//! had routed only here (they reach the restarted node from that node's
//! outbox and found no stub).
//!
//! Value: new node id u64, end unix ms u64, then per subscription the filter
//! length u16, the filter bytes, the record length u16 and the subscription
//! record (`records::put_subscription`: options and identifier). `$share/`
//! filters are stored too: the groups the stub covers (`share_move.rs`).

use crate::store::records;
use crate::store::SubscriptionRecord;
use bytes::Bytes;

/// A stub as stored.
#[derive(Debug, PartialEq)]
pub(crate) struct StubRow {
    pub node: u64,
    pub end_ms: u64,
    pub subs: Vec<SubscriptionRecord>,
}

pub(crate) fn encode(r: &StubRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + r.subs.len() * 32);
    out.extend_from_slice(&r.node.to_be_bytes());
    out.extend_from_slice(&r.end_ms.to_be_bytes());
    let mut rec = Vec::new();
    for s in &r.subs {
        let f = s.filter.as_str().as_bytes();
        rec.clear();
        records::put_subscription(&mut rec, s);
        // Filters are at most 65,535 bytes ([MQTT-1.5.4-1] string length).
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
        out.extend_from_slice(&(rec.len() as u16).to_be_bytes());
        out.extend_from_slice(&rec);
    }
    out
}

/// `None` for a row that does not parse (logged and dropped by the caller).
pub(crate) fn decode(v: &[u8]) -> Option<StubRow> {
    let u64_at = |i: usize| Some(u64::from_be_bytes(v.get(i..i + 8)?.try_into().ok()?));
    let (node, end_ms) = (u64_at(0)?, u64_at(8)?);
    let mut subs = Vec::new();
    let mut rest = &v[16..];
    let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let n = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let b = rest.get(2..2 + n)?.to_vec();
        *rest = &rest[2 + n..];
        Some(b)
    };
    while !rest.is_empty() {
        let f = take(&mut rest)?;
        let rec = take(&mut rest)?;
        subs.push(records::read_subscription(&f, Bytes::from(rec)).ok()?);
    }
    Some(StubRow { node, end_ms, subs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_codec::{QoS, RetainHandling, SubscriptionOptions, TopicFilter};

    fn sub(f: &'static str, qos: QoS, no_local: bool, id: Option<u32>) -> SubscriptionRecord {
        SubscriptionRecord {
            filter: TopicFilter::try_from(Bytes::from_static(f.as_bytes())).unwrap(),
            options: SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
            subscription_id: id,
        }
    }

    #[test]
    fn a_stub_row_round_trips_with_every_option() {
        let r = StubRow {
            node: 3,
            end_ms: 1_765_000_000_123,
            subs: vec![
                sub("a/+/c", QoS::AtLeastOnce, true, Some(7)),
                sub("#", QoS::ExactlyOnce, false, None),
                // A share group's filter (restored as a group to cover, not a route).
                sub("$share/g/a/#", QoS::AtLeastOnce, false, Some(3)),
            ],
        };
        assert_eq!(decode(&encode(&r)), Some(r));
        let empty = StubRow {
            node: 1,
            end_ms: 5,
            subs: vec![],
        };
        assert_eq!(decode(&encode(&empty)), Some(empty));
    }

    #[test]
    fn a_cut_stub_row_is_refused() {
        let r = StubRow {
            node: 3,
            end_ms: 9,
            subs: vec![sub("t", QoS::AtMostOnce, false, None)],
        };
        let v = encode(&r);
        // 16 bytes are a whole row without subscriptions; every other cut is refused.
        for n in (0..v.len()).filter(|&n| n != 16) {
            assert_eq!(decode(&v[..n]), None, "cut at {n}");
        }
    }
}
