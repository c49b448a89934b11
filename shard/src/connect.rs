//! CONNECT to CONNACK, session takeover and resume, and what happens to a
//! session when its connection closes (will, expiry).

use crate::conn_out::ConnOut;
use crate::connection::{disconnect_client, home_shard};
use crate::session::{MaybeInstant, Session, SessionId};
use crate::shard::Shard;
use crate::stats::CloseReason;
use ringmq_codec::{
    ConnAck, ConnAckProperties, Connect, MqttString, ProtocolVersion, Publish, PublishProperties,
    ReasonCode, TopicFilter,
};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Whether an empty client id may be given one by the server:
/// v5 always [MQTT-3.1.3-6]; 3.1.1 only with CleanSession=1 [MQTT-3.1.3-7];
/// 3.1 never (ids are 1-23 characters).
pub(crate) fn may_assign_id(c: &Connect) -> bool {
    match c.protocol {
        ProtocolVersion::V5 => true,
        ProtocolVersion::V3_1_1 => c.clean_start,
        ProtocolVersion::V3_1 => false,
    }
}

/// Assigns a unique client id that hashes to this shard.
pub(crate) fn assign_id(shard: &Shard, c: &mut Connect) {
    loop {
        let n = shard.next_assigned.get() + 1;
        shard.next_assigned.set(n);
        let id = format!(
            "ringmq-{:x}-{}-{n}",
            shard.started.elapsed().as_nanos() as u64,
            shard.id
        );
        if home_shard(id.as_bytes(), shard.shards) == shard.id {
            if let Ok(id) = MqttString::try_from(id) {
                c.client_id = id;
                return;
            }
        }
    }
}

/// The client id in its own exact-size allocation: a slice of the CONNECT
/// would keep the whole read buffer (and the will payload) alive.
fn own_copy(id: &MqttString) -> MqttString {
    MqttString::try_from(id.as_str()).unwrap_or_else(|_| id.clone())
}

/// A CONNACK refusing the connection.
pub(crate) fn refusal(reason: ReasonCode) -> ConnAck {
    ConnAck {
        session_present: false,
        reason,
        properties: ConnAckProperties::default().into(),
    }
}

/// Checks a CONNECT against configuration and limits.
fn check(shard: &Shard, c: &Connect) -> Result<(), ReasonCode> {
    if shard.stopping.get() || !shard.accepting.get() {
        return Err(ReasonCode::ServerUnavailable);
    }
    if shard.conns.get() >= shard.conn_limit() {
        return Err(ReasonCode::ServerBusy);
    }
    if let Some(w) = &c.will {
        if w.retain && !shard.cfg.retain_available {
            // [MQTT-3.2.2-13]
            return Err(ReasonCode::RetainNotSupported);
        }
        if w.topic.len() > shard.cfg.max_topic_length {
            return Err(ReasonCode::TopicNameInvalid);
        }
    }
    Ok(())
}

/// Is this CONNECT banned (client id, username or source address)? The
/// address is the one a PROXY header carried (`peer`), else the socket's,
/// looked up only when some ban is in force.
fn banned(shard: &Shard, c: &Connect, fd: RawFd, peer: Option<std::net::SocketAddr>) -> bool {
    let bans = &shard.access.bans;
    if bans.active() == 0 {
        return false;
    }
    let username = c.username.as_ref().map(|u| u.as_str());
    let addr = peer.map(|p| p.ip()).or_else(|| peer_ip(fd));
    let hit = bans.check(c.client_id.as_str(), username, addr);
    if let Some(b) = &hit {
        tracing::debug!(client_id = %c.client_id.as_str(), kind = b.target.kind(), value = %b.target.value(), "CONNECT refused: banned");
    }
    hit.is_some()
}

/// The peer address of a connected socket.
pub(crate) fn peer_ip(fd: RawFd) -> Option<std::net::IpAddr> {
    // SAFETY: `fd` is the connection's open socket for the whole call; the
    // borrow does not outlive it and nothing closes it meanwhile.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let addr = socket2::SockRef::from(&bfd).peer_addr().ok()?;
    addr.as_socket().map(|a| a.ip())
}

/// A refused CONNECT: the CONNACK to answer with and the close reason.
pub(crate) type Refused = (Box<ConnAck>, CloseReason);

/// The CONNACK for a refused CONNECT, or the accepted session.
pub(crate) fn accept(
    shard: &Rc<Shard>,
    c: &Connect,
    fd: RawFd,
    peer: Option<std::net::SocketAddr>,
    assigned: bool,
    auth: crate::auth_phase::Authenticated,
    epoch: u64,
) -> Result<(SessionId, Rc<ConnOut>, u16), Refused> {
    let refused = |r| (Box::new(refusal(r)), CloseReason::ConnectRefused);
    check(shard, c).map_err(refused)?;
    if banned(shard, c, fd, peer) {
        // v5 CONNACK 0x8A Banned; 3.1.1 0x05 Not authorized (codec maps it).
        return Err(refused(ReasonCode::Banned));
    }
    if crate::ownership::superseded(shard, c.client_id.as_bytes(), epoch) {
        // Another node's CONNECT for this client id won a later epoch while
        // this one was on its way: this one lost the takeover race.
        let ack = Box::new(refusal(ReasonCode::ServerUnavailable));
        return Err((ack, CloseReason::SessionTakenOver));
    }
    let cfg = &shard.cfg;
    let v5 = c.protocol == ProtocolVersion::V5;
    // Keep alive: v5 may be overridden by Server Keep Alive [MQTT-3.2.2-21].
    let mut keep_alive = c.keep_alive;
    let mut server_keep_alive = None;
    if cfg.max_keep_alive > 0 && (keep_alive == 0 || keep_alive > cfg.max_keep_alive) && v5 {
        keep_alive = cfg.max_keep_alive;
        server_keep_alive = Some(keep_alive);
    }
    let expiry = if v5 {
        c.properties.session_expiry_interval.unwrap_or(0)
    } else if c.clean_start {
        0
    } else {
        u32::MAX
    }
    .min(cfg.max_session_expiry);
    let conn = Rc::new(ConnOut::new(
        c.protocol,
        c.properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(cfg.receive_maximum.max(1)),
        c.properties.maximum_packet_size.unwrap_or(u32::MAX),
        c.properties.topic_alias_maximum.unwrap_or(0),
        fd,
        keep_alive,
        c.clean_start,
    ));
    let now = Instant::now();
    let existing = shard
        .by_client
        .borrow()
        .get(&c.client_id, &shard.sessions.borrow());
    let mut session_present = false;
    let mut discarded = false;
    let sid = match existing {
        Some(sid) => {
            let old_conn = shard.sessions.borrow_mut()[sid as usize].conn.take();
            if let Some(old) = old_conn {
                // [MQTT-3.1.4-3] the existing connection is closed (v5: 0x8E).
                disconnect_client(&old, CloseReason::SessionTakenOver);
                let (will, had_will, old_epoch) = {
                    let mut sessions = shard.sessions.borrow_mut();
                    let s = &mut sessions[sid as usize];
                    let will = s.will.take();
                    let had_will = will.is_some();
                    let will =
                        will.filter(|w| crate::authz::will_allowed(shard, s, w.topic.as_str()));
                    (will, had_will, s.epoch)
                };
                let id = c.client_id.as_bytes();
                match will {
                    Some(w)
                        if w.properties.will_delay_interval.unwrap_or(0) == 0 || c.clean_start =>
                    {
                        crate::wills::publish(shard, id, old_epoch, *w);
                    }
                    // [MQTT-3.1.3-9] reconnected within the will delay.
                    _ if had_will => crate::wills::discarded(shard, id, old_epoch),
                    _ => {}
                }
            }
            if c.clean_start {
                // [MQTT-3.1.2-4] discard the old session: it becomes a
                // tombstone whose subscriptions leave the router in bounded
                // steps (`reap.rs`), however many it had; the client gets a
                // fresh session. The client id stays owned here (cluster):
                // the old session gives no ownership back.
                shard.sessions.borrow_mut()[sid as usize].epoch = 0;
                remove_session(shard, sid);
                discarded = true;
                None
            } else {
                // [MQTT-3.2.2-2] session present.
                session_present = true;
                Some(sid)
            }
        }
        None => None,
    };
    let sid = match sid {
        Some(sid) => sid,
        None => {
            let sid = {
                let mut sessions = shard.sessions.borrow_mut();
                let sid = sessions.insert(Session::new(own_copy(&c.client_id), c.protocol));
                sessions[sid].sid = sid as SessionId;
                sid as SessionId
            };
            shard.by_client.borrow_mut().insert(&c.client_id, sid);
            shard.stats.sessions.inc();
            sid
        }
    };
    {
        let mut sessions = shard.sessions.borrow_mut();
        let s = &mut sessions[sid as usize];
        s.version = c.protocol;
        s.conn = Some(conn.clone());
        s.generation += 1;
        s.epoch = epoch;
        s.expiry = expiry;
        s.will = c.will.clone().map(Box::new);
        s.disconnected_at = MaybeInstant::NONE;
        s.identity = auth.identity;
        // The ACL's user: the authenticated one (password, SCRAM, the
        // certificate's CN), not whatever the CONNECT's user name field says.
        s.owner = match s.identity.as_ref().and_then(|i| i.username.as_deref()) {
            Some(u) => crate::store::Owner::User(u.into()),
            None => crate::store::Owner::Anonymous,
        };
        crate::persist::session_connected(shard, s, discarded);
    }
    crate::authz::connected(shard, sid);
    // After the ACL had its say about the will.
    crate::wills::connected(shard, sid);
    let mut props = ConnAckProperties::default();
    if v5 {
        // [MQTT-4.12.0-5] a successful CONNACK after enhanced authentication
        // names the method; SCRAM's server-final is its data.
        props.authentication_method = c.properties.authentication_method.clone();
        props.authentication_data = auth.connack_data;
        if assigned {
            // [MQTT-3.2.2-16]
            props.assigned_client_identifier = Some(c.client_id.clone());
        }
        props.server_keep_alive = server_keep_alive;
        if cfg.receive_maximum != u16::MAX {
            props.receive_maximum = Some(cfg.receive_maximum);
        }
        props.maximum_packet_size = Some(cfg.max_packet_size);
        if cfg.topic_alias_maximum > 0 {
            props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
        }
        if !cfg.retain_available {
            props.retain_available = Some(false);
        }
        if !cfg.wildcard_subscriptions {
            props.wildcard_subscription_available = Some(false);
        }
        if !cfg.shared_subscriptions {
            props.shared_subscription_available = Some(false);
        }
        if let Some(req) = c.properties.session_expiry_interval {
            if req > expiry {
                props.session_expiry_interval = Some(expiry);
            }
        }
    }
    conn.send(&ringmq_codec::Packet::ConnAck(ConnAck {
        session_present,
        reason: ReasonCode::Success,
        properties: props.into(),
    }));
    {
        let mut sessions = shard.sessions.borrow_mut();
        let s = &mut sessions[sid as usize];
        s.resend_inflight(&shard.stats, now, shard.poller.now_ms());
        s.pump(shard, now);
    }
    if session_present {
        // Retained replays the last connection left unfinished go on here.
        crate::replay::resume(shard, sid, &conn);
    }
    Ok((sid, conn, keep_alive))
}

/// The connection of session `sid` closed with `reason`.
pub(crate) fn closed(shard: &Rc<Shard>, sid: SessionId, conn: &Rc<ConnOut>, reason: CloseReason) {
    let (will, expiry, generation, epoch, id) = {
        let mut sessions = shard.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(sid as usize) else {
            return;
        };
        if !s.conn.as_ref().is_some_and(|c| Rc::ptr_eq(c, conn)) {
            return; // taken over: the new connection owns the session now
        }
        s.conn = None;
        s.identity = None;
        s.disconnected_at = MaybeInstant::some(Instant::now());
        // A retained replay waiting for room on it keeps its place with the
        // session now (`replay.rs`).
        conn.room_freed();
        if s.expiry > 0 {
            crate::persist::session_closed(shard, s);
        }
        // [MQTT-3.1.2-8] the will is published unless DISCONNECT 0x00 removed it.
        let had_will = s.will.is_some();
        let will = if reason == CloseReason::ClientDisconnect {
            s.will = None;
            None
        } else {
            // Rules reloaded since CONNECT apply to the will too.
            let will = s.will.take();
            will.filter(|w| crate::authz::will_allowed(shard, s, w.topic.as_str()))
        };
        if had_will && will.is_none() {
            // [MQTT-3.1.2-10] discarded: no other node may publish it either.
            crate::wills::discarded(shard, s.client_id.as_bytes(), s.epoch);
        }
        let id = will.as_ref().map(|_| s.client_id.clone());
        (will, s.expiry, s.generation, s.epoch, id)
    };
    if let (Some(w), Some(id)) = (will, id) {
        let delay = w.properties.will_delay_interval.unwrap_or(0).min(expiry);
        if delay == 0 {
            crate::wills::publish(shard, id.as_bytes(), epoch, *w);
        } else {
            // [MQTT-3.1.3-9] not sent if the session reconnects first.
            crate::cluster::handover::will_pending(shard, sid, generation);
            let shard = shard.clone();
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_secs(delay as u64)).await;
                let still = shard
                    .sessions
                    .borrow()
                    .get(sid as usize)
                    .is_some_and(|s| s.generation == generation && s.conn.is_none());
                let gone = shard.sessions.borrow().get(sid as usize).is_none();
                // A session shipped to another node meanwhile: its client
                // reconnected there, so the will is not sent [MQTT-3.1.3-9].
                let moved = !crate::cluster::handover::will_due(&shard, sid, generation);
                if (still || gone) && !moved {
                    crate::wills::publish(&shard, id.as_bytes(), epoch, *w);
                } else {
                    crate::wills::discarded(&shard, id.as_bytes(), epoch);
                }
            })
            .detach();
        }
    }
    if expiry == 0 {
        remove_session(shard, sid);
    }
}

/// Removes a session entirely (expiry reached, or expiry 0 at close). It
/// becomes a tombstone at once; its subscriptions leave the router in
/// bounded steps (`reap.rs`).
pub(crate) fn remove_session(shard: &Rc<Shard>, sid: SessionId) {
    if let Some(filters) = retire_session(shard, sid) {
        crate::reap::bury(shard, sid, filters);
    }
}

/// [`remove_session`] but for its plain subscriptions, returned: they stay
/// in the router (matching the tombstone) until the caller buries them
/// (`reap::bury`). A session that moved to another node keeps them while
/// its traffic is forwarded there (`cluster/stub.rs`).
pub(crate) fn retire_session(shard: &Rc<Shard>, sid: SessionId) -> Option<Vec<TopicFilter>> {
    let removed = {
        let mut sessions = shard.sessions.borrow_mut();
        match sessions.get_mut(sid as usize) {
            Some(s) if s.generation != crate::reap::GONE => {
                // The store drops the session's rows, subscriptions included.
                crate::persist::session_removed(shard, s);
                s.clear(shard);
                s.key = None;
                s.conn = None;
                s.disconnected_at = MaybeInstant::NONE;
                s.generation = crate::reap::GONE;
                let filters: Vec<TopicFilter> = s.subs.drain().map(|(f, _)| f).collect();
                crate::ownership::released(shard, s.client_id.as_bytes(), s.epoch);
                crate::cluster::copy_acks::session_removed(shard, s.client_id.as_str());
                s.epoch = 0;
                Some((s.client_id.clone(), filters))
            }
            _ => None,
        }
    };
    crate::defer::Defer::drain(shard);
    if let Some((id, mut filters)) = removed {
        shard.by_client.borrow_mut().remove(&id, sid);
        shard.stats.sessions.sub(1);
        // Shared groups must not pick a tombstone: those leave now.
        filters.retain(|f| {
            f.shared().is_none() || {
                crate::subscribe::remove(shard, sid, f);
                false
            }
        });
        return Some(filters);
    }
    None
}

/// A will as a PUBLISH.
pub(crate) fn will_publish(w: ringmq_codec::LastWill) -> Publish {
    let p = w.properties;
    Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic,
        packet_id: None,
        properties: PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..Default::default()
        }
        .into(),
        payload: w.payload,
    }
}
