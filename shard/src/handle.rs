//! Dispatch of every packet a connected client sends.
//!
//! Returning `Err(reason)` closes the connection; the DISCONNECT (v5) that
//! explains it is queued before returning.

use crate::conn_out::{resp, ConnOut};
use crate::connection::protocol_close;
use crate::session::SessionId;
use crate::shard::Shard;
use crate::stats::CloseReason;
use ringmq_codec::{Disconnect, Packet, PubResp, QoS, ReasonCode};
use std::rc::Rc;
use std::time::Instant;

/// Handles one packet from the client of session `sid`.
pub(crate) fn packet(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    p: Packet,
) -> Result<(), CloseReason> {
    let r = dispatch(shard, sid, conn, p);
    // Deferred copies resolved by this packet (acknowledged, dropped): their
    // publishers' PUBACKs may go.
    crate::defer::Defer::drain(shard);
    r
}

fn dispatch(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    p: Packet,
) -> Result<(), CloseReason> {
    match p {
        Packet::Publish(p) => crate::publish::inbound(shard, sid, conn, p),
        Packet::PubAck(r) => {
            acked(shard, sid, &r, QoS::AtLeastOnce);
            Ok(())
        }
        Packet::PubRec(r) => {
            pubrec(shard, sid, conn, &r);
            Ok(())
        }
        Packet::PubRel(r) => {
            // [MQTT-4.3.3-11] forget the packet id, then PUBCOMP.
            let mut sessions = shard.sessions.borrow_mut();
            let s = &mut sessions[sid as usize];
            let found = match s
                .inbound_qos2
                .iter()
                .position(|&id| id == r.packet_id.get())
            {
                Some(i) => {
                    s.inbound_qos2.swap_remove(i);
                    if let Some(k) = s.key {
                        shard.store.delete_inbound_qos2(k, r.packet_id).detach();
                        // PUBCOMP once the id is forgotten on disk too: the
                        // client may reuse it for a new message at once.
                        crate::persist::gate(shard, conn);
                    }
                    true
                }
                None => false,
            };
            let code = if found {
                ReasonCode::Success
            } else {
                ReasonCode::PacketIdentifierNotFound
            };
            conn.send(&Packet::PubComp(resp(r.packet_id, code)));
            Ok(())
        }
        Packet::PubComp(r) => {
            acked(shard, sid, &r, QoS::ExactlyOnce);
            Ok(())
        }
        Packet::Subscribe(s) => crate::subscribe::subscribe(shard, sid, conn, s),
        Packet::Unsubscribe(u) => crate::subscribe::unsubscribe(shard, sid, conn, u),
        Packet::PingReq => {
            conn.send(&Packet::PingResp);
            Ok(())
        }
        Packet::Disconnect(d) => disconnect(shard, sid, conn, d),
        Packet::Connect(_) => {
            // [MQTT-3.1.0-2] a second CONNECT is a protocol error.
            protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
            Err(CloseReason::ProtocolError)
        }
        Packet::Auth(a) => crate::auth_phase::reauth(shard, sid, conn, a),
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            // Server-to-client packets from a client.
            protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
            Err(CloseReason::ProtocolError)
        }
    }
}

/// PUBACK or PUBCOMP: frees the packet id and refills the window.
fn acked(shard: &Rc<Shard>, sid: SessionId, r: &PubResp, qos: QoS) {
    {
        let mut sessions = shard.sessions.borrow_mut();
        let s = &mut sessions[sid as usize];
        if s.complete(shard, r.packet_id, qos) && !s.queue.is_empty() {
            s.pump(shard, shard.clock.now());
        }
    }
}

/// PUBREC: PUBREL follows [MQTT-4.3.3-4]; an error code ends the flow (v5 4.3.3).
fn pubrec(shard: &Shard, sid: SessionId, conn: &ConnOut, r: &PubResp) {
    let mut sessions = shard.sessions.borrow_mut();
    let s = &mut sessions[sid as usize];
    if (r.reason as u8) >= 0x80 {
        if s.complete_rejected(shard, r.packet_id) {
            s.pump(shard, Instant::now());
        }
        return;
    }
    let code = if s.released(shard, r.packet_id) {
        ReasonCode::Success
    } else {
        ReasonCode::PacketIdentifierNotFound
    };
    conn.send(&Packet::PubRel(resp(r.packet_id, code)));
}

/// DISCONNECT from the client.
fn disconnect(
    shard: &Shard,
    sid: SessionId,
    conn: &ConnOut,
    d: Disconnect,
) -> Result<(), CloseReason> {
    if let Some(new) = d.properties.session_expiry_interval {
        let mut sessions = shard.sessions.borrow_mut();
        let s = &mut sessions[sid as usize];
        if s.expiry == 0 && new != 0 {
            // [MQTT-3.14.2-2] cannot set a non-zero expiry when CONNECT had zero.
            drop(sessions);
            protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
            return Err(CloseReason::ProtocolError);
        }
        s.expiry = new.min(shard.cfg.max_session_expiry);
    }
    let reason = match d.reason {
        ReasonCode::Success => CloseReason::ClientDisconnect,
        ReasonCode::DisconnectWithWillMessage => CloseReason::ClientDisconnectWithWill,
        _ => CloseReason::ClientDisconnectError,
    };
    conn.request_close(reason);
    Err(reason)
}
