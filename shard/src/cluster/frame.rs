//! Node-link frames: versioned, length-delimited, sans I/O.
//!
//! Every frame is `len: u32 BE | kind: u8 | body`, `len` counting `kind` and
//! `body`. The first frame each side sends is [`Frame::Hello`]; a side that
//! does not like the other's hello answers [`Frame::Refuse`] with one line and
//! closes. A publish crosses as the MQTT 5 encoding of its PUBLISH (encoded
//! once per publish, whatever the number of target nodes), so every property
//! survives and the codec's checks apply again on arrival.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ringmq_codec::{Packet, ProtocolVersion, Publish, TopicFilter};

/// First four bytes of a hello: not a ringmq node link otherwise.
pub const MAGIC: &[u8; 4] = b"RMQL";
/// The link protocol this build speaks.
pub const VERSION: u16 = 1;
/// Largest frame accepted (a PUBLISH up to 256 MiB plus framing).
pub const MAX_FRAME: usize = 268_435_455 + 64;

const HELLO: u8 = 1;
const REFUSE: u8 = 2;
const ROUTE_SYNC: u8 = 3;
const ROUTE_ADD: u8 = 4;
const ROUTE_DEL: u8 = 5;
const ROUTE_ACK: u8 = 6;
const PUBLISH: u8 = 7;
const DIGEST: u8 = 8;
const RESYNC: u8 = 9;
const PING: u8 = 10;
const PONG: u8 = 11;
const SHARED_PUBLISH: u8 = 12;
// 0x50-0x5F: operator questions between nodes (`ops.rs`).
const CLIENTS_ASK: u8 = 0x50;
const CLIENTS_ANSWER: u8 = 0x51;
// Durable delivery (0x40-0x4F): `cluster/acks.rs`.
const ACKED_PUBLISH: u8 = 0x40;
const ACKED_SHARED: u8 = 0x41;
const DURABLE: u8 = 0x42;
const NOT_STORED: u8 = 0x43;
/// Retained messages sent when a link comes up (`cluster/retained.rs`).
const RETAINED: u8 = 0x44;
// 0x3A-0x3F: exactly once across nodes and their crashes (`origin.rs`).
const ACKED_ORIGIN: u8 = 0x3A;
const ORIGINS_DONE: u8 = 0x3B;
const ORIGIN_FLOOR: u8 = 0x3C;
// 0x20-0x2F: session handover (`handover.rs`).
const SESSION_FETCH: u8 = 0x20;
const SESSION_SHIP: u8 = 0x21;
// 0x30-0x39: publishes stamped with their origin, and moving a session's
// traffic to its new node (`frame_move.rs`, `stub.rs`, `merge.rs`).
pub(super) const PUBLISH_FROM: u8 = 0x30;
pub(super) const ACKED_FROM: u8 = 0x31;

/// One frame of a node link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Who is speaking: link version, cluster and node.
    Hello(Hello),
    /// The hello was refused; the line says why. The link closes.
    Refuse(String),
    /// Every filter the sender's node has subscribers on, replacing what the
    /// receiver knew of it; `seq` is acknowledged like a change.
    RouteSync {
        seq: u64,
        filters: Vec<TopicFilter>,
    },
    /// The sender's node gained its first subscriber on a filter.
    RouteAdd {
        seq: u64,
        filter: TopicFilter,
    },
    /// The sender's node lost its last subscriber on a filter.
    RouteDel {
        seq: u64,
        filter: TopicFilter,
    },
    /// Every route frame up to `seq` is applied on every shard of the sender.
    RouteAck(u64),
    /// A publish for the receiver's subscribers (MQTT 5 PUBLISH bytes).
    Publish(Bytes),
    /// A publish for one member of share group `group` on the receiver only.
    SharedPublish {
        group: TopicFilter,
        publish: Bytes,
    },
    /// Anti-entropy: the sender's route set has `count` filters hashing to `hash`.
    Digest {
        count: u32,
        hash: u64,
    },
    /// The digest did not match: send a `RouteSync`.
    Resync,
    /// Round-trip probe, answered with `Pong` carrying the same value.
    Ping(u64),
    Pong(u64),
    /// `ringmq ctl clients` asked on the sender's node: the receiver's connected
    /// clients (of shard `shard` only, `u32::MAX`: all) matching `pattern`
    /// (empty: all), at most `limit` rows, answered with `ClientsAnswer{req}`.
    ClientsAsk {
        req: u64,
        shard: u32,
        limit: u32,
        pattern: String,
    },
    /// The answer to `ClientsAsk{req}`: `total` clients matched, `rows` as `ops::encode_rows`.
    ClientsAnswer {
        req: u64,
        total: u32,
        rows: Bytes,
    },
    /// A QoS 1/2 publish (durability `sync`) the sender waits for: answered
    /// by `Durable` once every copy on the receiver is durable. `stamp`
    /// orders the sender's copies (a resent one is known by it).
    AckedPublish {
        stamp: Stamp,
        publish: Bytes,
    },
    /// The same, for one member of share group `group` on the receiver.
    AckedShared {
        stamp: Stamp,
        group: TopicFilter,
        publish: Bytes,
    },
    /// Every acked publish up to this id (of the sender's current stream) is
    /// durable on the sender of this frame (or was answered `NotStored`).
    Durable(u64),
    /// The receiver could not store its copy of acked publish `id`
    /// (an MQTT reason code: 0x97 quota, 0x80 otherwise).
    NotStored {
        id: u64,
        code: u8,
    },
    /// A retained message of the sender, set at `at_ms` (unix ms), sent when
    /// the link comes up: the receiver keeps it unless it has a newer one.
    Retained {
        at_ms: u64,
        publish: Bytes,
    },
    /// An acked publish of a prepared QoS 2 message (`origin.rs`): as
    /// `AckedPublish` (or `AckedShared` with `group`), plus the message's
    /// key on the sender's node, which survives the sender's restart: the
    /// receiver delivers it once per `(sender, origin)` whatever the stream.
    AckedOrigin {
        stamp: Stamp,
        origin: super::origin::Origin,
        group: Option<TopicFilter>,
        /// Where the publish entered the cluster on the sender, as `AckedFrom`
        /// carries it (a moving session merges by it: `merge.rs`).
        at: Option<OriginAt>,
        publish: Bytes,
    },
    /// The sender marked these messages of its shard `shard` done: the
    /// receiver may forget their origin keys.
    OriginsDone {
        shard: u16,
        nonces: Vec<u64>,
    },
    /// Sent when a link comes up: per shard of the sender, no origin key
    /// below this nonce is needed any more (what a lost `OriginsDone` left).
    OriginFloor(Vec<(u16, u64)>),
    /// The sender's node won session `client`'s ownership at `epoch` from the
    /// receiver: close it there and ship it (answered by `SessionShip{req}`).
    SessionFetch {
        req: u64,
        epoch: u64,
        client: String,
    },
    /// The answer to `SessionFetch{req}`: the session's snapshot
    /// (`store::SnapshotWriter`), or `None` when the receiver has none.
    SessionShip {
        req: u64,
        snapshot: Option<Bytes>,
    },
    /// A `Publish` stamped with where it entered the cluster on the sender
    /// (its shard and that shard's count): copies of one message that reach
    /// a moving session by two paths are known as one (`merge.rs`).
    PublishFrom {
        origin: OriginAt,
        publish: Bytes,
    },
    /// An `AckedPublish` with its origin.
    AckedFrom {
        stamp: Stamp,
        origin: OriginAt,
        publish: Bytes,
    },
    /// A copy for session `client`, which the sender held until it moved to
    /// the receiver: the sender's stub forwards what its routes still bring
    /// (`stub.rs`), with the origin of each.
    SessionCopy {
        client: String,
        origin: Origin,
        publish: Bytes,
    },
    /// A `SessionCopy` of a QoS 1/2 publish under durability `sync`, as an
    /// acked copy: the receiver answers `Durable` (cumulative with the
    /// link's other acked copies) once the session's row for it is durable,
    /// and the sender's acknowledgement of the publish waits for that
    /// (`stub.rs`, `merge.rs`).
    AckedCopy {
        stamp: Stamp,
        client: String,
        origin: Origin,
        /// A prepared QoS 2 message's key on the sender (`origin.rs`):
        /// kind 0x3D instead of 0x39, the key after the stamp.
        key: Option<super::origin::Origin>,
        publish: Bytes,
    },
    /// The receiver's session `client` is installed here and every peer
    /// applied its routes: the sender's stub may end once nothing routed the
    /// old way can still arrive.
    MoveDone(String),
    /// Answer `Flushed` with the same token behind everything sent before.
    Flush(u64),
    Flushed(u64),
    /// The stub of `client` ended: no copy will be forwarded after this
    /// frame. `marks`: per origin, the last count the old node handled
    /// (copies up to it reached the session there or were forwarded).
    StubEnd {
        client: String,
        marks: Vec<Origin>,
    },
    /// Old node to new: copies from the nodes `peers` (whose flush did not
    /// answer during the move) may still come, forwarded late as
    /// `SessionCopy`; no peers: no more will (`ghost.rs`).
    Ghost {
        client: String,
        peers: Vec<u64>,
    },
    /// A ghost's flush: answer `Flushed(token)` behind everything sent
    /// before, once this node holds node `owner`'s routes (`ghost.rs`).
    GhostFlush {
        token: u64,
        owner: u64,
    },
}

/// Where a publish entered the cluster, on the node that sent the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OriginAt {
    pub shard: u16,
    pub seq: u64,
}

/// Where a publish entered the cluster: node, shard, and that shard's count
/// (which grows by one per publish and starts above any earlier run's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub node: u64,
    pub shard: u16,
    pub seq: u64,
}

impl OriginAt {
    /// The stamp as node `node` (the link's peer) gave it.
    pub fn on(self, node: u64) -> Origin {
        Origin {
            node,
            shard: self.shard,
            seq: self.seq,
        }
    }
}

impl Origin {
    /// The stamp as this node writes it on a link (the node is the link's sender).
    pub fn at(self) -> OriginAt {
        OriginAt {
            shard: self.shard,
            seq: self.seq,
        }
    }
}

impl Frame {
    /// A retained message the sender holds, set at `at_ms` (unix ms), sent when the link
    /// comes up: `mqtt` is the PUBLISH bytes of a `Publish` frame (after its 5-byte header).
    pub fn encode_retained(at_ms: u64, mqtt: &[u8], out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        out.put_u8(RETAINED);
        out.put_u64(at_ms);
        out.put_slice(mqtt);
        finish(out, start);
    }
}

/// Where an acked publish stands in its sender's stream: `stream` is
/// fixed for one run of the sending node (a fresh value per start), `id`
/// grows by one per acked publish on each link, in the order written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub stream: u64,
    pub id: u64,
}

/// The first frame on a link, each way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub cluster: String,
    pub node: u64,
}

/// What is wrong with the bytes on a link (the link is closed).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes over the limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    #[error("not a ringmq node link (bad magic)")]
    BadMagic,
    #[error("bad topic filter in a route frame")]
    BadFilter,
    #[error("malformed publish: {0}")]
    BadPublish(String),
}

/// Appends a PUBLISH frame for `p` (packet id 1 at QoS 1/2: the link is not an MQTT session).
pub fn encode_publish(p: &Publish, out: &mut BytesMut) {
    encode_publish_from(p, None, out);
}

/// Length of a publish frame's header before the MQTT bytes (with an origin or not).
pub fn publish_header(origin: Option<OriginAt>) -> usize {
    if origin.is_some() {
        15
    } else {
        5
    }
}

/// [`encode_publish`], stamped with the publish's origin on this node (`PUBLISH_FROM`).
pub fn encode_publish_from(p: &Publish, origin: Option<OriginAt>, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    match origin {
        None => out.put_u8(PUBLISH),
        Some(o) => {
            out.put_u8(PUBLISH_FROM);
            out.put_u16(o.shard);
            out.put_u64(o.seq);
        }
    }
    let mut p = p.clone();
    p.dup = false;
    p.packet_id = (p.qos != ringmq_codec::QoS::AtMostOnce)
        .then(|| ringmq_codec::PacketId::new(1).expect("1 is non-zero"));
    // A publish the codec decoded re-encodes; a failure would be a codec bug.
    if let Err(e) = Packet::Publish(p).encode(ProtocolVersion::V5, out) {
        tracing::error!("cannot encode a publish for a node link: {e}");
        out.truncate(start);
        return;
    }
    finish(out, start);
}

/// Appends a SHARED_PUBLISH frame: `p` for one member of `group` on the receiver.
pub fn encode_shared_publish(group: &TopicFilter, p: &Publish, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(SHARED_PUBLISH);
    put_str(out, group.as_str());
    let mut inner = BytesMut::new();
    encode_publish(p, &mut inner);
    if inner.len() <= 5 {
        out.truncate(start);
        return;
    }
    // The PUBLISH bytes without their own frame header.
    out.put_slice(&inner[5..]);
    finish(out, start);
}

/// Appends an acked publish frame: `mqtt` is the PUBLISH bytes of a
/// `Publish` frame (after its 5-byte frame header), `group` for a share group.
pub fn encode_acked(stamp: Stamp, group: Option<&TopicFilter>, mqtt: &[u8], out: &mut BytesMut) {
    encode_acked_from(stamp, group, None, mqtt, out);
}

/// [`encode_acked`], stamped with the publish's origin (`ACKED_FROM`; never for a group).
pub fn encode_acked_from(
    stamp: Stamp,
    group: Option<&TopicFilter>,
    origin: Option<OriginAt>,
    mqtt: &[u8],
    out: &mut BytesMut,
) {
    let start = out.len();
    out.put_u32(0);
    let origin = origin.filter(|_| group.is_none());
    out.put_u8(match (group, origin) {
        (Some(_), _) => ACKED_SHARED,
        (None, Some(_)) => ACKED_FROM,
        (None, None) => ACKED_PUBLISH,
    });
    out.put_u64(stamp.stream);
    out.put_u64(stamp.id);
    if let Some(o) = origin {
        out.put_u16(o.shard);
        out.put_u64(o.seq);
    }
    if let Some(g) = group {
        put_str(out, g.as_str());
    }
    out.put_slice(mqtt);
    finish(out, start);
}

/// Appends an acked publish frame of a prepared QoS 2 message: as
/// [`encode_acked`], with its origin key.
pub fn encode_acked_origin(
    stamp: Stamp,
    origin: super::origin::Origin,
    (group, at): (Option<&TopicFilter>, Option<OriginAt>),
    mqtt: &[u8],
    out: &mut BytesMut,
) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(ACKED_ORIGIN);
    out.put_u64(stamp.stream);
    out.put_u64(stamp.id);
    out.put_u16(origin.shard);
    out.put_u64(origin.nonce);
    // Flags: 1 a share group follows, 2 the publish's origin stamp (before the group).
    out.put_u8(u8::from(group.is_some()) | u8::from(at.is_some()) << 1);
    if let Some(o) = at {
        out.put_u16(o.shard);
        out.put_u64(o.seq);
    }
    if let Some(g) = group {
        put_str(out, g.as_str());
    }
    out.put_slice(mqtt);
    finish(out, start);
}

/// Decodes the PUBLISH carried by a `Publish` frame.
/// Zero-copy: topic and payload are slices of the frame's bytes (the link's
/// read buffer), as the codec does for a client's PUBLISH.
pub fn decode_publish(bytes: Bytes) -> Result<Publish, FrameError> {
    match ringmq_codec::decode_publish_frame(bytes, ProtocolVersion::V5) {
        Ok(Some(p)) if !p.topic.as_str().is_empty() => Ok(p),
        Ok(_) => Err(FrameError::BadPublish("not one whole PUBLISH".into())),
        Err(e) => Err(FrameError::BadPublish(e.to_string())),
    }
}

impl Frame {
    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        match self {
            Frame::Hello(h) => {
                out.put_u8(HELLO);
                out.put_slice(MAGIC);
                out.put_u16(h.version);
                put_str(out, &h.cluster);
                out.put_u64(h.node);
            }
            Frame::Refuse(why) => {
                out.put_u8(REFUSE);
                put_str(out, why);
            }
            Frame::RouteSync { seq, filters } => {
                out.put_u8(ROUTE_SYNC);
                out.put_u64(*seq);
                out.put_u32(filters.len() as u32);
                for f in filters {
                    put_str(out, f.as_str());
                }
            }
            Frame::RouteAdd { seq, filter } | Frame::RouteDel { seq, filter } => {
                let add = matches!(self, Frame::RouteAdd { .. });
                out.put_u8(if add { ROUTE_ADD } else { ROUTE_DEL });
                out.put_u64(*seq);
                put_str(out, filter.as_str());
            }
            Frame::RouteAck(seq) => {
                out.put_u8(ROUTE_ACK);
                out.put_u64(*seq);
            }
            Frame::Publish(b) => {
                out.put_u8(PUBLISH);
                out.put_slice(b);
            }
            Frame::SharedPublish { group, publish } => {
                out.put_u8(SHARED_PUBLISH);
                put_str(out, group.as_str());
                out.put_slice(publish);
            }
            Frame::Digest { count, hash } => {
                out.put_u8(DIGEST);
                out.put_u32(*count);
                out.put_u64(*hash);
            }
            Frame::AckedPublish { stamp, publish } => {
                out.truncate(start);
                encode_acked(*stamp, None, publish, out);
                return;
            }
            Frame::AckedShared {
                stamp,
                group,
                publish,
            } => {
                out.truncate(start);
                encode_acked(*stamp, Some(group), publish, out);
                return;
            }
            Frame::AckedOrigin {
                stamp,
                origin,
                group,
                at,
                publish,
            } => {
                out.truncate(start);
                encode_acked_origin(*stamp, *origin, (group.as_ref(), *at), publish, out);
                return;
            }
            Frame::OriginsDone { shard, nonces } => {
                out.put_u8(ORIGINS_DONE);
                out.put_u16(*shard);
                out.put_u32(nonces.len() as u32);
                for n in nonces {
                    out.put_u64(*n);
                }
            }
            Frame::OriginFloor(floors) => {
                out.put_u8(ORIGIN_FLOOR);
                out.put_u16(floors.len() as u16);
                for (shard, floor) in floors {
                    out.put_u16(*shard);
                    out.put_u64(*floor);
                }
            }
            Frame::Durable(upto) => {
                out.put_u8(DURABLE);
                out.put_u64(*upto);
            }
            Frame::NotStored { id, code } => {
                out.put_u8(NOT_STORED);
                out.put_u64(*id);
                out.put_u8(*code);
            }
            Frame::Retained { at_ms, publish } => {
                out.truncate(start);
                Frame::encode_retained(*at_ms, publish, out);
                return;
            }
            Frame::Resync => out.put_u8(RESYNC),
            Frame::Ping(n) | Frame::Pong(n) => {
                out.put_u8(if matches!(self, Frame::Ping(_)) {
                    PING
                } else {
                    PONG
                });
                out.put_u64(*n);
            }
            Frame::ClientsAsk {
                req,
                shard,
                limit,
                pattern,
            } => {
                out.put_u8(CLIENTS_ASK);
                out.put_u64(*req);
                out.put_u32(*shard);
                out.put_u32(*limit);
                put_str(out, pattern);
            }
            Frame::ClientsAnswer { req, total, rows } => {
                out.put_u8(CLIENTS_ANSWER);
                out.put_u64(*req);
                out.put_u32(*total);
                out.put_slice(rows);
            }
            Frame::SessionFetch { req, epoch, client } => {
                out.put_u8(SESSION_FETCH);
                out.put_u64(*req);
                out.put_u64(*epoch);
                put_str(out, client);
            }
            Frame::PublishFrom { .. }
            | Frame::AckedFrom { .. }
            | Frame::SessionCopy { .. }
            | Frame::AckedCopy { .. }
            | Frame::MoveDone(_)
            | Frame::Flush(_)
            | Frame::Flushed(_)
            | Frame::StubEnd { .. }
            | Frame::Ghost { .. }
            | Frame::GhostFlush { .. } => {
                out.truncate(start);
                super::frame_move::encode(self, out);
                return;
            }
            Frame::SessionShip { req, snapshot } => {
                out.put_u8(SESSION_SHIP);
                out.put_u64(*req);
                match snapshot {
                    None => out.put_u8(0),
                    Some(b) => {
                        out.put_u8(1);
                        out.put_slice(b);
                    }
                }
            }
        }
        finish(out, start);
    }

    /// Splits one whole frame off the front of `buf`: `Ok(None)` until it is all there.
    /// The length is checked before the body is buffered.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if len == 0 {
            return Err(FrameError::Truncated("empty"));
        }
        if buf.len() < 4 + len {
            // Grow with what arrives, never by the announced length alone.
            buf.reserve((4 + len - buf.len()).min(64 * 1024));
            return Ok(None);
        }
        buf.advance(4);
        let mut body = buf.split_to(len).freeze();
        let kind = body.get_u8();
        let f = match kind {
            HELLO => {
                need(&body, 4, "hello")?;
                if &body[..4] != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                body.advance(4);
                need(&body, 2, "hello")?;
                let version = body.get_u16();
                let cluster = get_str(&mut body, "hello")?;
                need(&body, 8, "hello")?;
                Frame::Hello(Hello {
                    version,
                    cluster,
                    node: body.get_u64(),
                })
            }
            REFUSE => Frame::Refuse(get_str(&mut body, "refuse")?),
            ROUTE_SYNC => {
                need(&body, 12, "route sync")?;
                let seq = body.get_u64();
                let n = body.get_u32() as usize;
                // Each filter takes at least 3 bytes: a count past that is a lie.
                if n > body.len() / 3 {
                    return Err(FrameError::Truncated("route sync"));
                }
                let mut filters = Vec::with_capacity(n);
                for _ in 0..n {
                    filters.push(get_filter(&mut body)?);
                }
                Frame::RouteSync { seq, filters }
            }
            ROUTE_ADD | ROUTE_DEL => {
                need(&body, 8, "route")?;
                let seq = body.get_u64();
                let filter = get_filter(&mut body)?;
                if kind == ROUTE_ADD {
                    Frame::RouteAdd { seq, filter }
                } else {
                    Frame::RouteDel { seq, filter }
                }
            }
            ROUTE_ACK => {
                need(&body, 8, "route ack")?;
                Frame::RouteAck(body.get_u64())
            }
            PUBLISH => Frame::Publish(std::mem::take(&mut body)),
            SHARED_PUBLISH => {
                let group = get_filter(&mut body)?;
                if group.shared().is_none() {
                    return Err(FrameError::BadFilter);
                }
                Frame::SharedPublish {
                    group,
                    publish: std::mem::take(&mut body),
                }
            }
            DIGEST => {
                need(&body, 12, "digest")?;
                Frame::Digest {
                    count: body.get_u32(),
                    hash: body.get_u64(),
                }
            }
            ACKED_PUBLISH | ACKED_SHARED => {
                need(&body, 16, "acked publish")?;
                let stamp = Stamp {
                    stream: body.get_u64(),
                    id: body.get_u64(),
                };
                if kind == ACKED_PUBLISH {
                    Frame::AckedPublish {
                        stamp,
                        publish: std::mem::take(&mut body),
                    }
                } else {
                    let group = get_filter(&mut body)?;
                    if group.shared().is_none() {
                        return Err(FrameError::BadFilter);
                    }
                    Frame::AckedShared {
                        stamp,
                        group,
                        publish: std::mem::take(&mut body),
                    }
                }
            }
            ACKED_ORIGIN => {
                need(&body, 27, "acked origin")?;
                let stamp = Stamp {
                    stream: body.get_u64(),
                    id: body.get_u64(),
                };
                let origin = super::origin::Origin {
                    shard: body.get_u16(),
                    nonce: body.get_u64(),
                };
                let flags = body.get_u8();
                if flags & !3 != 0 {
                    return Err(FrameError::Truncated("acked origin"));
                }
                let at = if flags & 2 != 0 {
                    need(&body, 10, "acked origin")?;
                    Some(OriginAt {
                        shard: body.get_u16(),
                        seq: body.get_u64(),
                    })
                } else {
                    None
                };
                let group = if flags & 1 != 0 {
                    let g = get_filter(&mut body)?;
                    if g.shared().is_none() {
                        return Err(FrameError::BadFilter);
                    }
                    Some(g)
                } else {
                    None
                };
                Frame::AckedOrigin {
                    stamp,
                    origin,
                    group,
                    at,
                    publish: std::mem::take(&mut body),
                }
            }
            ORIGINS_DONE => {
                need(&body, 6, "origins done")?;
                let shard = body.get_u16();
                let n = body.get_u32() as usize;
                if n > body.len() / 8 {
                    return Err(FrameError::Truncated("origins done"));
                }
                let nonces = (0..n).map(|_| body.get_u64()).collect();
                Frame::OriginsDone { shard, nonces }
            }
            ORIGIN_FLOOR => {
                need(&body, 2, "origin floor")?;
                let n = body.get_u16() as usize;
                if n > body.len() / 10 {
                    return Err(FrameError::Truncated("origin floor"));
                }
                Frame::OriginFloor((0..n).map(|_| (body.get_u16(), body.get_u64())).collect())
            }
            DURABLE => {
                need(&body, 8, "durable")?;
                Frame::Durable(body.get_u64())
            }
            NOT_STORED => {
                need(&body, 9, "not stored")?;
                Frame::NotStored {
                    id: body.get_u64(),
                    code: body.get_u8(),
                }
            }
            RETAINED => {
                need(&body, 8, "retained")?;
                Frame::Retained {
                    at_ms: body.get_u64(),
                    publish: std::mem::take(&mut body),
                }
            }
            RESYNC => Frame::Resync,
            PING | PONG => {
                need(&body, 8, "ping")?;
                let n = body.get_u64();
                if kind == PING {
                    Frame::Ping(n)
                } else {
                    Frame::Pong(n)
                }
            }
            CLIENTS_ASK => {
                need(&body, 16, "clients ask")?;
                Frame::ClientsAsk {
                    req: body.get_u64(),
                    shard: body.get_u32(),
                    limit: body.get_u32(),
                    pattern: get_str(&mut body, "clients ask")?,
                }
            }
            CLIENTS_ANSWER => {
                need(&body, 12, "clients answer")?;
                Frame::ClientsAnswer {
                    req: body.get_u64(),
                    total: body.get_u32(),
                    rows: std::mem::take(&mut body),
                }
            }
            SESSION_FETCH => {
                need(&body, 16, "session fetch")?;
                let req = body.get_u64();
                let epoch = body.get_u64();
                Frame::SessionFetch {
                    req,
                    epoch,
                    client: get_str(&mut body, "session fetch")?,
                }
            }
            SESSION_SHIP => {
                need(&body, 9, "session ship")?;
                let req = body.get_u64();
                let snapshot = match body.get_u8() {
                    0 => None,
                    1 => Some(std::mem::take(&mut body)),
                    _ => return Err(FrameError::Truncated("session ship")),
                };
                Frame::SessionShip { req, snapshot }
            }
            k @ (0x30..=0x39 | super::frame_move::ACKED_COPY_KEYED) => {
                super::frame_move::decode(k, &mut body)?
            }
            k => return Err(FrameError::UnknownKind(k)),
        };
        if !body.is_empty() {
            return Err(FrameError::Truncated("over-long"));
        }
        Ok(Some(f))
    }
}

pub(super) fn finish(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

pub(super) fn put_str(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

pub(super) fn need(body: &Bytes, n: usize, what: &'static str) -> Result<(), FrameError> {
    if body.len() < n {
        return Err(FrameError::Truncated(what));
    }
    Ok(())
}

pub(super) fn get_str(body: &mut Bytes, what: &'static str) -> Result<String, FrameError> {
    need(body, 2, what)?;
    let n = body.get_u16() as usize;
    need(body, n, what)?;
    let s = body.split_to(n);
    String::from_utf8(s.to_vec()).map_err(|_| FrameError::Truncated(what))
}

fn get_filter(body: &mut Bytes) -> Result<TopicFilter, FrameError> {
    let s = get_str(body, "route")?;
    TopicFilter::try_from(s).map_err(|_| FrameError::BadFilter)
}

/// Order-independent digest of a route set: (count, xor of FNV-1a hashes).
pub fn digest<'a>(filters: impl Iterator<Item = &'a TopicFilter>) -> (u32, u64) {
    let mut count = 0u32;
    let mut hash = 0u64;
    for f in filters {
        count += 1;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in f.as_str().as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        hash ^= h;
    }
    (count, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_codec::{QoS, TopicName};

    fn round_trip(f: Frame) {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        // Split anywhere: nothing until the whole frame is there.
        for cut in 0..b.len() {
            let mut part = BytesMut::from(&b[..cut]);
            assert_eq!(Frame::decode(&mut part), Ok(None), "cut at {cut}");
        }
        assert_eq!(Frame::decode(&mut b), Ok(Some(f)));
        assert!(b.is_empty());
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::try_from(s).unwrap()
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Frame::Hello(Hello {
            version: VERSION,
            cluster: "c1".into(),
            node: 3,
        }));
        round_trip(Frame::Refuse("foreign cluster".into()));
        round_trip(Frame::RouteSync {
            seq: 9,
            filters: vec![filter("a/+"), filter("#")],
        });
        round_trip(Frame::RouteAdd {
            seq: 1,
            filter: filter("x/y"),
        });
        round_trip(Frame::RouteDel {
            seq: 2,
            filter: filter("x/#"),
        });
        round_trip(Frame::RouteAck(7));
        round_trip(Frame::Digest { count: 2, hash: 5 });
        round_trip(Frame::Resync);
        round_trip(Frame::Ping(11));
        round_trip(Frame::SharedPublish {
            group: filter("$share/g/a/#"),
            publish: Bytes::from_static(b"\x30\x03\x00\x01a"),
        });
        round_trip(Frame::Pong(12));
        round_trip(Frame::ClientsAsk {
            req: 4,
            shard: u32::MAX,
            limit: 10,
            pattern: "s-*".into(),
        });
        round_trip(Frame::ClientsAnswer {
            req: 4,
            total: 1,
            rows: Bytes::from_static(b"\0\0\0\0"),
        });
        let stamp = Stamp { stream: 77, id: 5 };
        round_trip(Frame::AckedPublish {
            stamp,
            publish: Bytes::from_static(b"\x32\x05\x00\x01a\x00\x01"),
        });
        round_trip(Frame::AckedShared {
            stamp,
            group: filter("$share/g/a/#"),
            publish: Bytes::from_static(b"\x32\x05\x00\x01a\x00\x01"),
        });
        let ats = [None, Some(OriginAt { shard: 3, seq: 9 })];
        for (group, at) in [None, Some(filter("$share/g/a/#"))]
            .into_iter()
            .flat_map(|g| ats.map(|a| (g.clone(), a)))
        {
            round_trip(Frame::AckedOrigin {
                stamp,
                origin: crate::cluster::origin::Origin {
                    shard: 1,
                    nonce: 1 << 60 | 7,
                },
                group,
                at,
                publish: Bytes::from_static(b"\x34\x05\x00\x01a\x00\x01"),
            });
        }
        round_trip(Frame::OriginsDone {
            shard: 1,
            nonces: vec![3, 1 << 62],
        });
        round_trip(Frame::OriginsDone {
            shard: 0,
            nonces: vec![],
        });
        round_trip(Frame::OriginFloor(vec![(0, 9), (1, u64::MAX)]));
        round_trip(Frame::Durable(41));
        round_trip(Frame::NotStored { id: 9, code: 0x97 });
        round_trip(Frame::Retained {
            at_ms: 1_700_000_000_000,
            publish: Bytes::from_static(b"\x31\x03\x00\x01a"),
        });
        round_trip(Frame::SessionFetch {
            req: 1 << 48 | 3,
            epoch: 77,
            client: "c-1".into(),
        });
        round_trip(Frame::SessionShip {
            req: 4,
            snapshot: Some(Bytes::from_static(b"\x01snapshot")),
        });
        round_trip(Frame::SessionShip {
            req: 5,
            snapshot: None,
        });
    }

    #[test]
    fn publish_survives_the_link() {
        let mut p = Publish::new(
            TopicName::try_from("s/1").unwrap(),
            Bytes::from_static(b"hi"),
        );
        p.qos = QoS::ExactlyOnce;
        p.retain = true;
        let mut b = BytesMut::new();
        encode_publish(&p, &mut b);
        let Some(Frame::Publish(bytes)) = Frame::decode(&mut b).unwrap() else {
            panic!("not a publish frame");
        };
        let q = decode_publish(bytes).unwrap();
        assert_eq!(
            (q.topic, q.qos, q.retain, q.payload),
            (p.topic, p.qos, p.retain, p.payload)
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        assert!(matches!(
            Frame::decode(&mut b),
            Err(FrameError::TooLarge(_))
        ));
        let mut b = BytesMut::from(&[0, 0, 0, 1, 99][..]);
        assert_eq!(Frame::decode(&mut b), Err(FrameError::UnknownKind(99)));
        let mut b = BytesMut::from(&b"\0\0\0\x0bGET / HTTP/"[..]);
        assert!(Frame::decode(&mut b).is_err());
        let mut b = BytesMut::from(&[0, 0, 0, 9, HELLO, b'X', b'X', b'X', b'X', 0, 1, 0, 0][..]);
        assert_eq!(Frame::decode(&mut b), Err(FrameError::BadMagic));
        // A route sync announcing more filters than its bytes can hold.
        let mut b = BytesMut::new();
        b.put_u32(13);
        b.put_u8(ROUTE_SYNC);
        b.put_u64(1);
        b.put_u32(1_000_000);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("route sync"))
        );
        assert!(decode_publish(Bytes::from_static(b"\x30\x05garbage")).is_err());
        // Acked frames: a stamp cut short, a share group that is not one, a short answer.
        let mut b = BytesMut::from(&[0, 0, 0, 9, ACKED_PUBLISH, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("acked publish"))
        );
        let mut b = BytesMut::new();
        encode_acked(
            Stamp { stream: 1, id: 1 },
            Some(&filter("plain/filter")),
            b"\x30\x03\x00\x01a",
            &mut b,
        );
        assert_eq!(Frame::decode(&mut b), Err(FrameError::BadFilter));
        let mut b = BytesMut::from(&[0, 0, 0, 5, NOT_STORED, 0, 0, 0, 1][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("not stored"))
        );
        let mut b = BytesMut::from(&[0, 0, 0, 3, RETAINED, 0, 1][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("retained"))
        );
        // Origin frames: an origin cut short, a bad group flag, a plain filter as
        // group, counts past the bytes.
        let mut b = BytesMut::from(&[0, 0, 0, 5, ACKED_ORIGIN, 0, 0, 0, 1][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("acked origin"))
        );
        let o = crate::cluster::origin::Origin { shard: 0, nonce: 1 };
        let mut b = BytesMut::new();
        encode_acked_origin(
            Stamp { stream: 1, id: 1 },
            o,
            (None, None),
            b"\x34\x03\x00\x01a",
            &mut b,
        );
        b[4 + 1 + 26] = 7;
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("acked origin"))
        );
        let mut b = BytesMut::new();
        let plain = filter("plain/filter");
        encode_acked_origin(
            Stamp { stream: 1, id: 1 },
            o,
            (Some(&plain), None),
            b"\x34\x03\x00\x01a",
            &mut b,
        );
        assert_eq!(Frame::decode(&mut b), Err(FrameError::BadFilter));
        let mut b = BytesMut::new();
        b.put_u32(15);
        b.put_u8(ORIGINS_DONE);
        b.put_u16(0);
        b.put_u32(1_000_000);
        b.put_u64(1);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("origins done"))
        );
        let mut b = BytesMut::from(&[0, 0, 0, 3, ORIGIN_FLOOR, 0, 9][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("origin floor"))
        );
    }

    #[test]
    fn digest_ignores_order() {
        let a = [filter("a"), filter("b/#")];
        let b = [filter("b/#"), filter("a")];
        assert_eq!(digest(a.iter()), digest(b.iter()));
        assert_ne!(digest(a.iter()), digest(a[..1].iter()));
    }
}
