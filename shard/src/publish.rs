//! An inbound PUBLISH: topic alias resolution, limits, QoS 1/2 handshakes,
//! then routing.

use crate::conn_out::{resp, ConnOut};
use crate::connection::protocol_close;
use crate::mesh::{ConfirmReq, Fate};
use crate::session::SessionId;
use crate::shard::Shard;
use crate::stats::CloseReason;
use crate::store::{SessionKey, Ticket};
use ringmq_codec::{Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode};
use std::rc::Rc;

/// Refuses a publish: v5 QoS 1/2 get the reason in PUBACK/PUBREC; otherwise
/// the connection closes (v5 with DISCONNECT carrying the reason).
fn refuse(shard: &Shard, conn: &ConnOut, p: &Publish, code: ReasonCode) -> Result<(), CloseReason> {
    if conn.version == ProtocolVersion::V5 {
        if let Some(id) = p.packet_id {
            shard.stats.refuse(code);
            let r = resp(id, code);
            conn.send(&match p.qos {
                QoS::AtLeastOnce => Packet::PubAck(r),
                _ => Packet::PubRec(r),
            });
            return Ok(());
        }
    }
    protocol_close(conn, code, CloseReason::ProtocolError);
    Err(CloseReason::ProtocolError)
}

/// A PUBLISH the ACL refuses. v5 QoS 1/2: PUBACK/PUBREC 0x87 Not authorized
/// (v5 3.4.2.1, 3.5.2.1). QoS 0, and 3.1.1 which has no error code in
/// PUBACK: acknowledged as usual and dropped ("a positive acknowledgement,
/// according to the normal QoS rules, or close the Network Connection"
/// [MQTT-3.3.5-2] (3.1.1)), as Mosquitto 2.x does; the connection stays.
/// Counted (`acl_denied_total{action="publish"}`).
fn not_authorized(shard: &Shard, conn: &ConnOut, p: Publish) -> Result<(), CloseReason> {
    let Some(id) = p.packet_id else {
        return Ok(());
    };
    let code = if conn.version == ProtocolVersion::V5 {
        shard.stats.refuse(ReasonCode::NotAuthorized);
        ReasonCode::NotAuthorized
    } else {
        ReasonCode::Success
    };
    let r = resp(id, code);
    // Behind acknowledgements still held for earlier publishes [MQTT-4.6.0-2].
    match p.qos {
        QoS::AtLeastOnce => conn.ack(Packet::PubAck(r), None),
        // 3.1.1 QoS 2: PUBREC now; the PUBREL that follows finds no stored
        // id and still gets its PUBCOMP (handle.rs).
        _ => conn.ack(Packet::PubRec(r), None),
    }
    Ok(())
}

/// Sends PUBACK/PUBREC, after the other shards' confirmations when the
/// publish was routed to them under `token` (`fate`: what this shard's
/// sessions did with their copies; `qos2`: a QoS 2 publish's id).
fn ack(
    shard: &Shard,
    conn: &Rc<ConnOut>,
    p: Packet,
    (token, remote): (Option<u64>, usize),
    fate: Fate,
    qos2: Option<(SessionId, PacketId)>,
) {
    match token {
        Some(t) if remote > 0 => {
            crate::confirm::await_confirms(shard, t, remote, conn, fate, qos2);
            conn.ack(p, Some(t));
        }
        _ => conn.ack(p, None),
    }
}

/// Every copy this shard routed was dropped and none went elsewhere: the
/// message could be queued for no subscriber at all. v5 gets 0x97 Quota
/// exceeded (v5 3.4.2.1, 3.5.2.1; [MQTT-3.4.2-1] a reason code from that
/// table), counted. Copies sent to other shards are judged there: their
/// fate comes back with the confirmation durability `sync` waits for
/// anyway (`confirm.rs`); without it (`batch`, `none`) no answer comes
/// back, and waiting for one would put a cross-shard round trip on every
/// QoS 1/2 publish, so the publisher gets Success.
fn quota_exceeded(shard: &Shard, conn: &ConnOut, remote: usize) -> bool {
    if remote == 0 && shard.tally.fate().all_dropped() && conn.version == ProtocolVersion::V5 {
        shard.stats.refuse(ReasonCode::QuotaExceeded);
        return true;
    }
    false
}

/// A v5 QoS 2 publish no session could take: PUBREC 0x97 ends the flow, so
/// its id is forgotten ([MQTT-4.3.3-9]: the same id on a PUBLISH after a
/// PUBREC of 0x80 or more is a new message) and never stored.
fn qos2_refused(shard: &Shard, sid: SessionId, conn: &ConnOut, id: PacketId) {
    if let Some(s) = shard.sessions.borrow_mut().get_mut(sid as usize) {
        s.inbound_qos2.retain(|i| *i != id.get());
    }
    // Behind acknowledgements still held for earlier publishes [MQTT-4.6.0-2].
    conn.ack(Packet::PubRec(resp(id, ReasonCode::QuotaExceeded)), None);
}

/// Routes a publish of session `sid`; its copies for other shards queue
/// behind the session's copies still waiting for a prepare commit, so they
/// reach every shard in the order received [MQTT-4.6.0-6].
fn route_in_order(shard: &Rc<Shard>, sid: SessionId, p: Publish, req: Option<ConfirmReq>) -> usize {
    if !crate::confirm::deferring(shard, sid) {
        return crate::route::route(shard, p, Some(sid), req);
    }
    let mut held = Vec::new();
    let n = crate::route::route_to(shard, p, Some(sid), req, Some(&mut held));
    if !held.is_empty() {
        crate::confirm::defer(shard, Ticket::ready(), sid, None, held);
    }
    n
}

/// A new inbound QoS 2 message: routed once [MQTT-4.3.3-10], its packet id
/// stored before PUBREC [MQTT-4.3.3-8] ([MQTT-4.3.3-2] (3.1.1)). Sync mode, persistent publisher:
/// all copies local, the id row joins their commit; copies for other
/// shards go through a prepared row first (`confirm.rs`), because two
/// shards' commits are not atomic. Batch mode acknowledges at once (its
/// documented loss window also covers a duplicate of an unacknowledged resend).
#[allow(clippy::too_many_arguments)]
fn exactly_once(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    p: Publish,
    id: PacketId,
    key: Option<SessionKey>,
    sync: bool,
    pubrec: Packet,
) {
    match (sync, key) {
        (true, Some(k)) => {
            let token = crate::confirm::new_token(shard);
            let req = ConfirmReq {
                token,
                origin_row: true,
            };
            let kept = p.clone();
            let mut held = Vec::new();
            // Copies for other shards and nodes are held (`n` answers in all).
            let n = crate::route::route_to(shard, p, Some(sid), Some(req), Some(&mut held));
            if n == 0 {
                if quota_exceeded(shard, conn, 0) {
                    return qos2_refused(shard, sid, conn, id);
                }
                // Same batch as the local copies: one transaction.
                shard.store.put_inbound_qos2(k, id, None).detach();
                if !held.is_empty() {
                    // Plain copies (retained, for nodes without subscribers), in order.
                    crate::confirm::defer(shard, Ticket::ready(), sid, None, held);
                }
                let fate = shard.tally.fate();
                ack(shard, conn, pubrec, (Some(token), 0), fate, Some((sid, id)));
            } else {
                // Other shards and other nodes: the prepared row first (`confirm.rs`,
                // `cluster/origin.rs`), so a crash of this node neither loses nor
                // duplicates a copy.
                let fate = shard.tally.fate();
                crate::confirm::prepare(
                    shard,
                    sid,
                    conn,
                    (k, id),
                    (token, n),
                    &kept,
                    held,
                    pubrec,
                    fate,
                );
            }
        }
        (true, None) => {
            // Not persisted: nothing to recover, the ack still waits for every copy.
            let token = crate::confirm::new_token(shard);
            let req = ConfirmReq {
                token,
                origin_row: false,
            };
            let remote = route_in_order(shard, sid, p, Some(req));
            if quota_exceeded(shard, conn, remote) {
                return qos2_refused(shard, sid, conn, id);
            }
            let fate = shard.tally.fate();
            ack(
                shard,
                conn,
                pubrec,
                (Some(token), remote),
                fate,
                Some((sid, id)),
            );
        }
        (false, key) => {
            let remote = route_in_order(shard, sid, p, None);
            if quota_exceeded(shard, conn, remote) {
                return qos2_refused(shard, sid, conn, id);
            }
            if let Some(k) = key {
                shard.store.put_inbound_qos2(k, id, None).detach();
            }
            conn.ack(pubrec, None);
        }
    }
}

/// Handles a PUBLISH from the client of session `sid`.
pub(crate) fn inbound(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    mut p: Publish,
) -> Result<(), CloseReason> {
    let cfg = &shard.cfg;
    shard.stats.msgs_in[p.qos as usize].inc();
    shard.stats.publish_bytes_in[p.qos as usize].add(p.payload.len() as u64);
    if let Some(alias) = p.properties.get_mut().and_then(|pp| pp.topic_alias.take()) {
        if alias == 0 || alias > cfg.topic_alias_maximum {
            // [MQTT-3.3.2-9] [MQTT-3.3.2-10]
            protocol_close(
                conn,
                ReasonCode::TopicAliasInvalid,
                CloseReason::TopicAliasInvalid,
            );
            return Err(CloseReason::TopicAliasInvalid);
        }
        if p.topic.is_empty() {
            match conn.alias_in(alias) {
                Some(t) => p.topic = t,
                None => {
                    // An alias never set is a protocol error (v5 3.3.2.3.4).
                    protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
                    return Err(CloseReason::ProtocolError);
                }
            }
        } else {
            conn.set_alias_in(alias, p.topic.clone());
        }
    } else if p.topic.is_empty() {
        // [MQTT-4.7.3-1] a topic name is at least one character long.
        protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
        return Err(CloseReason::ProtocolError);
    }
    if !p.properties.subscription_identifiers.is_empty() {
        // [MQTT-3.3.4-6] a client's PUBLISH carries no Subscription Identifier.
        protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
        return Err(CloseReason::ProtocolError);
    }
    if p.topic.len() > cfg.max_topic_length
        || crate::topic::levels(p.topic.as_str()).count() > cfg.max_topic_levels
    {
        return refuse(shard, conn, &p, ReasonCode::TopicNameInvalid);
    }
    if p.retain && !cfg.retain_available {
        // [MQTT-3.3.1-14] (v5) RETAIN=1 when Retain Available is 0.
        protocol_close(
            conn,
            ReasonCode::RetainNotSupported,
            CloseReason::ProtocolError,
        );
        return Err(CloseReason::ProtocolError);
    }
    if !crate::authz::may_publish(shard, sid, p.topic.as_str()) {
        return not_authorized(shard, conn, p);
    }
    if p.properties.payload_format_indicator == Some(1) && std::str::from_utf8(&p.payload).is_err()
    {
        // [MQTT-3.3.2-4] payload declared UTF-8 must be UTF-8 (v5 reason 0x99).
        return refuse(shard, conn, &p, ReasonCode::PayloadFormatInvalid);
    }
    let packet_id = p.packet_id.take();
    p.dup = false;
    let sync = crate::persist::sync(shard);
    if p.qos != QoS::AtMostOnce {
        if shard.store.no_space() {
            // The store is full: nothing more can be promised (v5 0x97; 3.1.1 closes).
            return refuse(
                shard,
                conn,
                &Publish { packet_id, ..p },
                ReasonCode::QuotaExceeded,
            );
        }
        if p.qos == QoS::ExactlyOnce {
            // Sync: PUBREC leaves after the rows routing writes now.
            crate::persist::gate(shard, conn);
        }
    }
    match (p.qos, packet_id) {
        (QoS::AtMostOnce, _) => {
            route_in_order(shard, sid, p, None);
        }
        (QoS::AtLeastOnce, Some(id)) => {
            let token = sync.then(|| crate::confirm::new_token(shard));
            let req = token.map(|token| ConfirmReq {
                token,
                origin_row: false,
            });
            if let Some(t) = token {
                shard.defer.begin(t);
            }
            let ops = shard.store.pending_ops();
            shard.tally.reset();
            let mut remote = route_in_order(shard, sid, p, req);
            let fate = shard.tally.fate();
            let code = if quota_exceeded(shard, conn, remote) {
                ReasonCode::QuotaExceeded
            } else {
                ReasonCode::Success
            };
            if shard.store.pending_ops() != ops {
                // Sync: PUBACK leaves after the rows routing wrote (none when
                // every copy was deferred: then only the token holds it).
                crate::persist::gate(shard, conn);
            }
            if token.is_some() {
                // Local copies deferred under the token count like remote ones.
                let deferred = shard.defer.end();
                shard.stats.deferred_rows.add(deferred as u64);
                remote += deferred;
                crate::defer::Defer::watch(shard);
            }
            // [MQTT-4.3.2-2] PUBACK after taking ownership (in sync mode: once durable).
            let pa = Packet::PubAck(resp(id, code));
            ack(shard, conn, pa, (token, remote), fate, None);
        }
        (QoS::ExactlyOnce, Some(id)) => {
            let fresh = {
                let mut sessions = shard.sessions.borrow_mut();
                let s = &mut sessions[sid as usize];
                if s.inbound_qos2.contains(&id.get()) {
                    false
                } else {
                    // 3.1.1 has no Receive Maximum: its window is the packet id space.
                    if conn.version == ProtocolVersion::V5
                        && s.inbound_qos2.len() >= cfg.receive_maximum as usize
                    {
                        // [MQTT-3.3.4-9] more unacknowledged QoS 2 than Receive Maximum.
                        drop(sessions);
                        protocol_close(
                            conn,
                            ReasonCode::ReceiveMaximumExceeded,
                            CloseReason::ReceiveMaximumExceeded,
                        );
                        return Err(CloseReason::ReceiveMaximumExceeded);
                    }
                    s.inbound_qos2.push(id.get());
                    true
                }
            };
            let pubrec = Packet::PubRec(resp(id, ReasonCode::Success));
            if !fresh {
                // [MQTT-4.3.3-10] a resent PUBLISH (same id before PUBREL) is
                // not routed again; its PUBREC follows those held before it.
                conn.ack(pubrec, None);
                return Ok(());
            }
            let key = shard.sessions.borrow()[sid as usize].key;
            shard.tally.reset();
            exactly_once(shard, sid, conn, p, id, key, sync, pubrec);
        }
        _ => {
            // The codec refuses QoS>0 without packet id; unreachable in practice.
            protocol_close(
                conn,
                ReasonCode::MalformedPacket,
                CloseReason::MalformedPacket,
            );
            return Err(CloseReason::MalformedPacket);
        }
    }
    Ok(())
}
