//! Payload layout and the once-encoded publish template.
//!
//! Every payload starts with a 20-byte header, little endian:
//! `[0..8]` sequence number per publisher, `[8..16]` send time in nanoseconds on the
//! process-wide monotonic clock ([`now_ns`]), `[16..20]` global publisher index. The rest
//! is filler. A publish is encoded once through the codec; each message is a memcpy of
//! that template plus patches of the packet id and the header: no allocation per message.

use bytes::{Bytes, BytesMut};
use ringmq_codec::{Packet, PacketId, ProtocolVersion, Publish, PublishProperties, QoS, TopicName};
use std::sync::OnceLock;
use std::time::Instant;

/// Bytes of the payload header (sequence, timestamp, publisher index).
pub const HEADER_LEN: usize = 20;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide clock origin; call once before starting cores.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`], the timestamp carried in payloads.
#[inline]
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// `CLOCK_REALTIME` minus [`now_ns`]'s clock, ns, sampled once (the kernel's software
/// receive timestamps are real time).
static REAL_OFFSET: OnceLock<i128> = OnceLock::new();

fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// A kernel receive timestamp (`SO_TIMESTAMPNS`, real time) on [`now_ns`]'s clock. The
/// offset between the clocks is sampled once, between two readings of the monotonic
/// clock (error well under a microsecond; a step of the wall clock during a run would
/// shift it, slewing by NTP is parts per million).
pub fn from_realtime(sec: i64, nsec: i64) -> u64 {
    let off = *REAL_OFFSET.get_or_init(|| {
        let a = now_ns();
        let r = realtime_ns();
        let b = now_ns();
        r - i128::from(a / 2 + b / 2)
    });
    let real = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    u64::try_from(real - off).unwrap_or(0)
}

/// Fields decoded from a payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub sent_ns: u64,
    pub publisher: u32,
}

/// Reads the header; `None` when the payload is too short (not ours).
#[inline]
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < HEADER_LEN {
        return None;
    }
    let seq = u64::from_le_bytes(payload[0..8].try_into().ok()?);
    let sent_ns = u64::from_le_bytes(payload[8..16].try_into().ok()?);
    let publisher = u32::from_le_bytes(payload[16..20].try_into().ok()?);
    Some(Stamp {
        seq,
        sent_ns,
        publisher,
    })
}

/// A PUBLISH frame encoded once, appended per message with patches.
#[derive(Debug, Clone)]
pub struct Template {
    frame: Bytes,
    /// Offset of the packet identifier (QoS > 0 only).
    packet_id_at: Option<usize>,
    /// Offset of the payload header.
    payload_at: usize,
}

impl Template {
    /// Encodes `topic` with a `payload_len`-byte payload for `publisher`.
    pub fn new(
        version: ProtocolVersion,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload_len: usize,
        publisher: u32,
    ) -> Result<Template, String> {
        if payload_len < HEADER_LEN {
            return Err(format!("payload must be at least {HEADER_LEN} bytes"));
        }
        let topic_name =
            TopicName::try_from(topic).map_err(|e| format!("bad topic `{topic}`: {e:?}"))?;
        let mut payload = vec![b'x'; payload_len];
        payload[16..20].copy_from_slice(&publisher.to_le_bytes());
        let packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(1).expect("non-zero"));
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: topic_name,
            packet_id,
            properties: PublishProperties::default().into(),
            payload: Bytes::from(payload),
        };
        let mut out = BytesMut::new();
        Packet::Publish(publish)
            .encode(version, &mut out)
            .map_err(|e| format!("encode: {e:?}"))?;
        let payload_at = out.len() - payload_len;
        // Variable header: topic length (2) + topic, then the packet id.
        let packet_id_at = packet_id.map(|_| {
            let remaining_len_bytes = varint_len(&out[1..]);
            1 + remaining_len_bytes + 2 + topic.len()
        });
        Ok(Template {
            frame: out.freeze(),
            packet_id_at,
            payload_at,
        })
    }

    /// Whole frame length in bytes.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Appends one message: `packet_id` is ignored for QoS 0.
    #[inline]
    pub fn append(&self, out: &mut BytesMut, packet_id: u16, seq: u64, sent_ns: u64) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        let frame = &mut out[start..];
        if let Some(at) = self.packet_id_at {
            frame[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        let p = self.payload_at;
        frame[p..p + 8].copy_from_slice(&seq.to_le_bytes());
        frame[p + 8..p + 16].copy_from_slice(&sent_ns.to_le_bytes());
    }
}

/// Bytes used by the variable byte integer at the start of `buf`.
fn varint_len(buf: &[u8]) -> usize {
    buf.iter()
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

/// Topic with `%i` replaced by `index` (after `modulo`, if any).
pub fn expand(pattern: &str, index: usize, modulo: Option<usize>) -> String {
    let i = match modulo {
        Some(m) if m > 0 => index % m,
        _ => index,
    };
    pattern.replace("%i", &i.to_string())
}

/// MQTT filter matching ([MQTT-4.7.1-2], [MQTT-4.7.1-3]; `$` topics not matched by a
/// leading wildcard, [MQTT-4.7.2-1]). Used to plan expected deliveries.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching_follows_the_wildcard_rules() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("#", "a/b"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("a/b", "a/c"));
    }

    #[test]
    fn expand_substitutes_index_with_modulo() {
        assert_eq!(expand("t/%i/x", 7, None), "t/7/x");
        assert_eq!(expand("t/%i", 7, Some(3)), "t/1");
    }

    #[test]
    fn varint_length() {
        assert_eq!(varint_len(&[0x7f]), 1);
        assert_eq!(varint_len(&[0x80, 0x01]), 2);
    }
}
