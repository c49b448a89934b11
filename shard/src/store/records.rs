//! The records (LMDB values) and their encoding. Each value starts with a
//! record version byte (`V1`); a reader meeting another version refuses the
//! data dir as corrupt rather than guess.
//!
//! ```text
//! session       = V1 expiry_s:var disconnected_at_ms:u64(0 = connected) protocol:u8
//!                 client_id:bytes will [owner: 0 anonymous | 1 user:bytes]
//!                 (no owner: a row written before owners were stored)
//! subscription  = V1 options:u8 (qos | no_local<<2 | rap<<3 | rh<<4) sub_id:var(0 = none)
//! outbound      = V1 state:u8 (0 queued | 1 awaiting PUBACK/PUBREC | 2 awaiting PUBCOMP)
//!                 [packet id u16 if state != 0] has_message:u8 [message]
//! inbound qos2  = V2 state:u8 (0 done | 1 prepared)
//!                 [prepared: nonce:u64 count:var (shard:u16 group:bytes(empty = none))*]
//!                 has_message:u8 [message]            (V1 = V1 has_message [message]: done)
//!                 V3 (format 3, a prepared row with node targets): after the shard targets,
//!                 node count:var (node:u64 group:bytes)*
//! retained      = V1 stored_at_ns:u64 kind:u8 (0 tombstone | 1 message) [message]
//! ```

use bytes::Bytes;
use ringmq_codec::{
    LastWill, MqttString, PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions,
    TopicFilter, TopicName,
};

use super::enc::{BadRecord, Reader, Writer};
use super::message::{put_message, put_will, read_message, read_will, MessageRef, StoredMessage};

const V1: u8 = 1;
/// Inbound QoS 2 records since storage format 2 (state and prepared fields).
const V2: u8 = 2;
/// Inbound QoS 2 record with node targets (format 3).
const V3: u8 = 3;

/// Shard-local key of a persistent session (allocated by
/// [`super::Store::allocate_session_key`], returned by recovery).
pub type SessionKey = u64;

/// A persistent session's own row.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub client_id: MqttString,
    pub protocol: ProtocolVersion,
    /// Session Expiry Interval, seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    /// When the client disconnected (unix ms); `None` while connected.
    /// Recovery turns `None` into the recovery time (the broker went away).
    pub disconnected_at_ms: Option<u64>,
    /// Will message, kept until sent or cleared (v5 Will Delay Interval).
    pub will: Option<LastWill>,
    /// Who its last connection authenticated as: the ACL decides for the
    /// session by it after a restart, before the client reconnects.
    pub owner: Owner,
}

/// The user a session belongs to, as the ACL sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Owner {
    /// Not known: a row stored before owners were (the ACL refuses every
    /// delivery to the session until its client reconnects).
    #[default]
    Unknown,
    /// Connected without a user name.
    Anonymous,
    /// The user name it authenticated as (password, SCRAM, certificate CN),
    /// or gave where anonymous clients are allowed.
    User(Box<str>),
}

impl Owner {
    /// `None` when unknown; `Some(None)` for anonymous.
    pub fn username(&self) -> Option<Option<&str>> {
        match self {
            Owner::Unknown => None,
            Owner::Anonymous => Some(None),
            Owner::User(u) => Some(Some(u)),
        }
    }
}

/// One subscription of a persistent session.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionRecord {
    pub filter: TopicFilter,
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundState {
    /// Not sent yet (offline queue or beyond the inflight window).
    Queued,
    /// PUBLISH sent with this id; awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    /// On resume: resent with DUP = 1 and the same id [MQTT-4.4.0-1].
    AwaitingAck(PacketId),
    /// PUBREC received, PUBREL sent; awaiting PUBCOMP. On resume: PUBREL resent.
    AwaitingPubComp(PacketId),
}

/// A session's outbound message, in order of `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundRecord {
    /// Per-session order, chosen by the caller, increasing.
    pub seq: u64,
    pub state: OutboundState,
    /// `None` once PUBREC arrived (only the packet id is needed then).
    pub message: Option<StoredMessage>,
}

/// An inbound QoS 2 packet id awaiting PUBREL [MQTT-4.3.3-9..11], with the
/// message when the caller chose to keep it until delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundQos2 {
    pub packet_id: PacketId,
    pub message: Option<StoredMessage>,
    /// Set while copies on other shards may not all be durable (the message is kept).
    pub prepared: Option<Prepared>,
}

/// One destination of a prepared message on another shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub shard: u16,
    /// `None`: the shard's non-shared subscribers; `Some`: one member of this
    /// `$share/..` group (the whole filter as subscribed).
    pub group: Option<TopicFilter>,
}

/// One destination of a prepared message on another *node* (format 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTarget {
    pub node: u64,
    /// As [`Target::group`], on that node.
    pub group: Option<TopicFilter>,
}

/// An inbound QoS 2 message stored before it was routed to other shards
/// (`docs/storage.md`, "Exactly once across shards").
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// Unique per origin shard, increasing; the key of the origin rows.
    pub nonce: u64,
    pub targets: Vec<Target>,
    /// Other nodes given an acked copy (`cluster/origin.rs`): each is sent
    /// the message again by recovery and skips it if it holds it already.
    pub nodes: Vec<NodeTarget>,
    /// Shards holding an origin row `(this shard, nonce)`, i.e. their copy
    /// is durable (filled in by recovery).
    pub delivered: Vec<u16>,
}

/// A retained message as recovered (the newest across shards).
#[derive(Clone, Debug, PartialEq)]
pub struct RetainedRecord {
    pub topic: TopicName,
    pub message: StoredMessage,
    /// Wall clock of the set, ns since the epoch (newest wins across shards).
    pub stored_at_ns: u64,
}

/// One persistent session as recovered: everything needed to resume it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredSession {
    pub key: SessionKey,
    pub record: SessionRecord,
    pub subscriptions: Vec<SubscriptionRecord>,
    /// In `seq` order: resend `AwaitingAck` (DUP = 1) and `AwaitingPubComp`
    /// (PUBREL) first, in this order, then send the `Queued` ones.
    pub outbound: Vec<OutboundRecord>,
    pub inbound_qos2: Vec<InboundQos2>,
    /// Next free outbound `seq` for this session.
    pub next_seq: u64,
}

impl RecoveredSession {
    pub(crate) fn new(key: SessionKey, record: SessionRecord) -> Self {
        RecoveredSession {
            key,
            record,
            subscriptions: Vec::new(),
            outbound: Vec::new(),
            inbound_qos2: Vec::new(),
            next_seq: 0,
        }
    }
}

fn version(r: &mut Reader) -> Result<(), BadRecord> {
    match r.u8("record version")? {
        V1 => Ok(()),
        _ => Err(BadRecord("unknown record version")),
    }
}

pub fn put_session(out: &mut Vec<u8>, s: &SessionRecord) {
    let mut w = Writer(out);
    w.u8(V1);
    w.var(s.expiry_interval.into());
    w.u64(s.disconnected_at_ms.unwrap_or(0));
    w.u8(s.protocol as u8);
    w.bytes(s.client_id.as_bytes());
    put_will(&mut w, s.will.as_ref());
    match &s.owner {
        Owner::Unknown => {}
        Owner::Anonymous => w.u8(0),
        Owner::User(u) => {
            w.u8(1);
            w.bytes(u.as_bytes());
        }
    }
}

pub fn read_session(buf: Bytes) -> Result<SessionRecord, BadRecord> {
    let mut r = Reader::new(buf);
    version(&mut r)?;
    let expiry_interval = r.var_u32("session expiry")?;
    let disconnected = r.u64("disconnected_at")?;
    let protocol =
        ProtocolVersion::try_from(r.u8("protocol")?).map_err(|_| BadRecord("protocol"))?;
    let client_id =
        MqttString::try_from(r.bytes("client id")?).map_err(|_| BadRecord("client id"))?;
    let will = read_will(&mut r)?;
    let owner = if r.is_empty() {
        Owner::Unknown
    } else {
        match r.u8("owner")? {
            0 => Owner::Anonymous,
            1 => {
                let u = r.bytes("owner user name")?;
                let u = std::str::from_utf8(&u).map_err(|_| BadRecord("owner user name"))?;
                Owner::User(u.into())
            }
            _ => return Err(BadRecord("owner")),
        }
    };
    r.finish("session trailing bytes")?;
    Ok(SessionRecord {
        client_id,
        protocol,
        expiry_interval,
        disconnected_at_ms: (disconnected != 0).then_some(disconnected),
        will,
        owner,
    })
}

/// Reads only the header of a session row: has it expired at `now_ms`?
/// Connected sessions (and unreadable rows) never expire here.
pub fn session_expired(val: &[u8], now_ms: u64) -> bool {
    let mut r = Reader::new(Bytes::copy_from_slice(&val[..val.len().min(32)]));
    let (Ok(V1), Ok(expiry), Ok(at)) = (r.u8(""), r.var_u32(""), r.u64("")) else {
        return false;
    };
    expires_by(expiry, (at != 0).then_some(at), now_ms)
}

/// The expiry rule: disconnected, not "never", and interval elapsed.
pub fn expires_by(expiry_s: u32, disconnected_at_ms: Option<u64>, now_ms: u64) -> bool {
    match disconnected_at_ms {
        Some(at) if expiry_s != u32::MAX => at.saturating_add(u64::from(expiry_s) * 1000) <= now_ms,
        _ => false,
    }
}

pub fn put_subscription(out: &mut Vec<u8>, s: &SubscriptionRecord) {
    let o = s.options;
    let mut w = Writer(out);
    w.u8(V1);
    w.u8(o.qos as u8
        | (o.no_local as u8) << 2
        | (o.retain_as_published as u8) << 3
        | (o.retain_handling as u8) << 4);
    w.var(s.subscription_id.unwrap_or(0).into());
}

pub fn read_subscription(filter: &[u8], buf: Bytes) -> Result<SubscriptionRecord, BadRecord> {
    let mut r = Reader::new(buf);
    version(&mut r)?;
    let b = r.u8("subscription options")?;
    let retain_handling = match (b >> 4) & 3 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(BadRecord("retain handling")),
    };
    let options = SubscriptionOptions {
        qos: QoS::try_from(b & 3).map_err(|_| BadRecord("subscription qos"))?,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling,
    };
    let id = r.var_u32("subscription id")?;
    r.finish("subscription trailing bytes")?;
    let filter = TopicFilter::try_from(Bytes::copy_from_slice(filter))
        .map_err(|_| BadRecord("topic filter"))?;
    Ok(SubscriptionRecord {
        filter,
        options,
        subscription_id: (id != 0).then_some(id),
    })
}

pub fn put_outbound(out: &mut Vec<u8>, state: OutboundState, msg: Option<MessageRef<'_>>) {
    let mut w = Writer(out);
    w.u8(V1);
    match state {
        OutboundState::Queued => w.u8(0),
        OutboundState::AwaitingAck(id) => {
            w.u8(1);
            w.u16(id.get());
        }
        OutboundState::AwaitingPubComp(id) => {
            w.u8(2);
            w.u16(id.get());
        }
    }
    put_opt_message(&mut w, msg);
}

pub fn read_outbound(seq: u64, buf: Bytes) -> Result<OutboundRecord, BadRecord> {
    let mut r = Reader::new(buf);
    version(&mut r)?;
    let tag = r.u8("outbound state")?;
    let state = match tag {
        0 => OutboundState::Queued,
        1 | 2 => {
            let id = PacketId::new(r.u16("packet id")?).ok_or(BadRecord("packet id 0"))?;
            if tag == 1 {
                OutboundState::AwaitingAck(id)
            } else {
                OutboundState::AwaitingPubComp(id)
            }
        }
        _ => return Err(BadRecord("outbound state")),
    };
    let message = read_opt_message(&mut r)?;
    Ok(OutboundRecord {
        seq,
        state,
        message,
    })
}

/// A done inbound row (`prepared` None) or a prepared one (nonce, targets;
/// the message is required then).
pub fn put_inbound(
    out: &mut Vec<u8>,
    prepared: Option<(u64, &[Target])>,
    msg: Option<MessageRef<'_>>,
) {
    put_inbound_nodes(out, prepared.map(|(n, t)| (n, t, &[][..])), msg)
}

/// [`put_inbound`] with node targets: record version 3 when there are any
/// (version 2 otherwise, as format 2 wrote it).
pub fn put_inbound_nodes(
    out: &mut Vec<u8>,
    prepared: Option<(u64, &[Target], &[NodeTarget])>,
    msg: Option<MessageRef<'_>>,
) {
    let mut w = Writer(out);
    let nodes = prepared.map_or(&[][..], |p| p.2);
    w.u8(if nodes.is_empty() { V2 } else { V3 });
    match prepared {
        None => w.u8(0),
        Some((nonce, targets, _)) => {
            w.u8(1);
            w.u64(nonce);
            w.var(targets.len() as u64);
            for t in targets {
                w.u16(t.shard);
                w.bytes(t.group.as_ref().map_or(&[][..], |g| g.as_str().as_bytes()));
            }
            if !nodes.is_empty() {
                w.var(nodes.len() as u64);
                for t in nodes {
                    w.u64(t.node);
                    w.bytes(t.group.as_ref().map_or(&[][..], |g| g.as_str().as_bytes()));
                }
            }
        }
    }
    put_opt_message(&mut w, msg);
}

pub fn read_inbound(packet_id: PacketId, buf: Bytes) -> Result<InboundQos2, BadRecord> {
    let mut r = Reader::new(buf);
    let prepared = match r.u8("record version")? {
        V1 => None,
        v @ (V2 | V3) => match r.u8("inbound state")? {
            0 => None,
            1 => Some(read_prepared(&mut r, v == V3)?),
            _ => return Err(BadRecord("inbound state")),
        },
        _ => return Err(BadRecord("unknown record version")),
    };
    let message = read_opt_message(&mut r)?;
    if prepared.is_some() && message.is_none() {
        return Err(BadRecord("prepared inbound row without its message"));
    }
    Ok(InboundQos2 {
        packet_id,
        message,
        prepared,
    })
}

fn read_prepared(r: &mut Reader, with_nodes: bool) -> Result<Prepared, BadRecord> {
    let nonce = r.u64("nonce")?;
    let n = r.var("target count")?;
    let mut targets = Vec::new();
    for _ in 0..n.min(u16::MAX as u64) {
        let shard = r.u16("target shard")?;
        let group = read_group(r)?;
        targets.push(Target { shard, group });
    }
    let mut nodes = Vec::new();
    if with_nodes {
        let n = r.var("node target count")?;
        for _ in 0..n.min(u16::MAX as u64) {
            let node = r.u64("target node")?;
            let group = read_group(r)?;
            nodes.push(NodeTarget { node, group });
        }
    }
    Ok(Prepared {
        nonce,
        targets,
        nodes,
        delivered: Vec::new(),
    })
}

fn read_group(r: &mut Reader) -> Result<Option<TopicFilter>, BadRecord> {
    let g = r.bytes("target group")?;
    if g.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        TopicFilter::try_from(g).map_err(|_| BadRecord("target group"))?,
    ))
}

pub fn put_retained(out: &mut Vec<u8>, stored_at_ns: u64, msg: Option<MessageRef<'_>>) {
    let mut w = Writer(out);
    w.u8(V1);
    w.u64(stored_at_ns);
    put_opt_message(&mut w, msg);
}

/// `(stored_at_ns, None for a tombstone)`.
pub fn read_retained(buf: Bytes) -> Result<(u64, Option<StoredMessage>), BadRecord> {
    let mut r = Reader::new(buf);
    version(&mut r)?;
    let at = r.u64("retained stored_at")?;
    Ok((at, read_opt_message(&mut r)?))
}

fn put_opt_message(w: &mut Writer<'_>, msg: Option<MessageRef<'_>>) {
    match msg {
        Some(m) => {
            w.u8(1);
            put_message(w, m);
        }
        None => w.u8(0),
    }
}

fn read_opt_message(r: &mut Reader) -> Result<Option<StoredMessage>, BadRecord> {
    match r.u8("message flag")? {
        0 => {
            r.finish("trailing bytes")?;
            Ok(None)
        }
        1 => Ok(Some(read_message(r)?)),
        _ => Err(BadRecord("message flag")),
    }
}
