//! Key schema of a shard's LMDB database (`docs/storage.md` keeps the table).
//!
//! One named database, `ringmq`; the first key byte is the table, so one
//! session's rows are contiguous per table and LMDB's byte order is the
//! order we need (integers big-endian).
//!
//! | table | key                                  | value                     |
//! |-------|--------------------------------------|---------------------------|
//! | `M`   | `M` + name                           | meta (`format`)           |
//! | `S`   | `S` + session key u64                | session record            |
//! | `B`   | `B` + session key + filter bytes     | subscription record       |
//! | `O`   | `O` + session key + seq u64          | outbound record           |
//! | `I`   | `I` + session key + packet id u16    | inbound QoS 2 record      |
//! | `R`   | `R` + topic bytes                    | retained record           |
//! | `G`   | `G` + origin shard u16 + nonce u64   | origin row (empty value)  |
//! | `N`   | `N` + node id u64                    | last acked copy of that node delivered here: stream u64 + id u64 |
//! | `H`   | `H` + peer node id u64 + copy id u64 | outbox: an acked copy for a node that was down (its link frame) |
//! | `P`   | `P` + peer node id u64 + filter bytes | a filter that node has subscribers on, as last told (empty value) |
//! | `K`   | `K` + node id u64 + shard u16 + nonce u64 | node origin row (empty): that node's prepared QoS 2 message is here |
//! | `U`   | `U` + client id bytes                | a session move's stub: new node u64, end unix ms u64, subscriptions (`cluster/stub_row.rs`) |
//! | `V`   | `V` + client id bytes                | a session kept for its move: new node u64, epoch u64, end unix ms u64, snapshot (`cluster/moving.rs`) |

/// Name of the one LMDB database inside each shard environment.
pub const DB_NAME: &str = "ringmq";

pub const SESSION: u8 = b'S';
pub const SUBSCRIPTION: u8 = b'B';
pub const OUTBOUND: u8 = b'O';
pub const INBOUND_QOS2: u8 = b'I';
pub const RETAINED: u8 = b'R';
/// A copy of another shard's prepared QoS 2 message is stored here (exactly-once across shards).
pub const ORIGIN: u8 = b'G';

/// The last acked copy of another node this shard delivered (cluster dedup).
pub const PEER_SEEN: u8 = b'N';

/// The outbox (hinted handoff): acked copies for a node that was down,
/// stored on shard 0 until that node answers (`cluster/outbox.rs`).
pub const OUTBOX: u8 = b'H';

/// The routes other nodes last told shard 0 (`cluster/outbox.rs`): a node
/// restarted while a peer is down still forwards to that peer's outbox.
pub const PEER_ROUTE: u8 = b'P';

/// Shard 0's acked-copy stream and run number (`cluster/outbox.rs`): the
/// stream stays, the run grows by one per start, so copy ids grow across restarts.
pub const META_LINK_RUN: &[u8] = b"Mlinkrun";

/// A copy of another *node's* prepared QoS 2 message is stored here
/// (exactly once across nodes and their crashes: `cluster/origin.rs`).
pub const NODE_ORIGIN: u8 = b'K';

/// A session move's stub on the old node, written with the take (the batch
/// deleting the session's rows) and deleted when the stub ends
/// (`cluster/stub_row.rs`): a crash during its window restores it.
pub const STUB: u8 = b'U';

pub fn push_stub(out: &mut Vec<u8>, client: &[u8]) {
    out.push(STUB);
    out.extend_from_slice(client);
}

/// A session taken for another node, kept (its snapshot) until that node's
/// `MoveDone` says it holds the session durably (`cluster/moving.rs`):
/// written in the take's batch, so a crash of the old node before the new
/// one installed the session loses nothing.
pub const MOVING: u8 = b'V';

pub fn push_moving(out: &mut Vec<u8>, client: &[u8]) {
    out.push(MOVING);
    out.extend_from_slice(client);
}

/// The tables holding one session's rows (deleted with it).
pub const SESSION_CHILDREN: [u8; 3] = [SUBSCRIPTION, OUTBOUND, INBOUND_QOS2];

pub const META_FORMAT: &[u8] = b"Mformat";

/// `table + session key`: the prefix of a session's rows in `table`.
pub fn session_prefix(table: u8, session: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = table;
    k[1..].copy_from_slice(&session.to_be_bytes());
    k
}

pub fn push_session(out: &mut Vec<u8>, session: u64) {
    out.extend_from_slice(&session_prefix(SESSION, session));
}

pub fn push_subscription(out: &mut Vec<u8>, session: u64, filter: &[u8]) {
    out.extend_from_slice(&session_prefix(SUBSCRIPTION, session));
    out.extend_from_slice(filter);
}

pub fn push_outbound(out: &mut Vec<u8>, session: u64, seq: u64) {
    out.extend_from_slice(&session_prefix(OUTBOUND, session));
    out.extend_from_slice(&seq.to_be_bytes());
}

pub fn push_inbound(out: &mut Vec<u8>, session: u64, packet_id: u16) {
    out.extend_from_slice(&session_prefix(INBOUND_QOS2, session));
    out.extend_from_slice(&packet_id.to_be_bytes());
}

pub fn push_retained(out: &mut Vec<u8>, topic: &[u8]) {
    out.push(RETAINED);
    out.extend_from_slice(topic);
}

pub fn push_origin(out: &mut Vec<u8>, from: u16, nonce: u64) {
    out.push(ORIGIN);
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
}

pub fn push_peer_seen(out: &mut Vec<u8>, node: u64) {
    out.push(PEER_SEEN);
    out.extend_from_slice(&node.to_be_bytes());
}

pub fn push_outbox(out: &mut Vec<u8>, peer: u64, id: u64) {
    out.push(OUTBOX);
    out.extend_from_slice(&peer.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
}

pub fn push_peer_route(out: &mut Vec<u8>, peer: u64, filter: &[u8]) {
    out.push(PEER_ROUTE);
    out.extend_from_slice(&peer.to_be_bytes());
    out.extend_from_slice(filter);
}

/// `(peer, id)` of an outbox key.
pub fn split_outbox(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 17 || key[0] != OUTBOX {
        return None;
    }
    Some((tail_u64(&key[1..9])?, tail_u64(&key[9..])?))
}

pub fn push_node_origin(out: &mut Vec<u8>, node: u64, shard: u16, nonce: u64) {
    out.push(NODE_ORIGIN);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&shard.to_be_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
}

/// `(node, origin shard, nonce)` of a node origin key.
pub fn split_node_origin(key: &[u8]) -> Option<(u64, u16, u64)> {
    if key.len() != 19 || key[0] != NODE_ORIGIN {
        return None;
    }
    let node = tail_u64(&key[1..9])?;
    let shard = u16::from_be_bytes([key[9], key[10]]);
    Some((node, shard, tail_u64(&key[11..])?))
}

/// `(origin shard, nonce)` of an origin key.
pub fn split_origin(key: &[u8]) -> Option<(u16, u64)> {
    if key.len() != 11 || key[0] != ORIGIN {
        return None;
    }
    let from = u16::from_be_bytes([key[1], key[2]]);
    Some((from, tail_u64(&key[3..])?))
}

/// Splits `table + session key + rest`.
pub fn split_session_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let sk = key.get(1..9)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(sk);
    Some((u64::from_be_bytes(a), &key[9..]))
}

/// The big-endian u64 / u16 tail of an outbound / inbound key.
pub fn tail_u64(rest: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

pub fn tail_u16(rest: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(rest.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_keys_sort_by_session_then_seq() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (s, q) in [(2u64, 1u64), (1, 300), (1, 2), (256, 0)] {
            let mut k = Vec::new();
            push_outbound(&mut k, s, q);
            keys.push(k);
        }
        keys.sort();
        let order: Vec<(u64, u64)> = keys
            .iter()
            .map(|k| {
                let (s, rest) = split_session_key(k).unwrap();
                (s, tail_u64(rest).unwrap())
            })
            .collect();
        assert_eq!(order, [(1, 2), (1, 300), (2, 1), (256, 0)]);
    }
}
