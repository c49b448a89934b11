//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, the router
//! replica (broadcast to the other shards when this shard's set changes);
//! the retained messages for new subscriptions follow (`replay.rs`).

use crate::access::acl::SubClass;
use crate::conn_out::ConnOut;
use crate::connection::protocol_close;
use crate::mesh::MeshItem;
use crate::router::LocalSub;
use crate::session::{SessionId, SubEntry};
use crate::shard::Shard;
use crate::stats::{AclAction, CloseReason};
use ringmq_codec::{
    Packet, PacketId, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubAck, SubAckProperties,
    Subscribe, SubscriptionOptions, TopicFilter, UnsubAck, UnsubAckProperties, Unsubscribe,
};
use std::rc::Rc;

fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// Why one filter of a SUBSCRIBE is refused, if it is.
fn check_filter(
    shard: &Shard,
    n_subs: usize,
    f: &TopicFilter,
    existed: bool,
) -> Option<ReasonCode> {
    let cfg = &shard.cfg;
    if f.len() > cfg.max_topic_length
        || crate::topic::levels(f.as_str()).count() > cfg.max_topic_levels
    {
        return Some(ReasonCode::TopicFilterInvalid);
    }
    if f.shared().is_some() && !cfg.shared_subscriptions {
        // [MQTT-3.8.4-?] v5 0x9E Shared Subscriptions not supported.
        return Some(ReasonCode::SharedSubscriptionsNotSupported);
    }
    if f.has_wildcards() && !cfg.wildcard_subscriptions {
        return Some(ReasonCode::WildcardSubscriptionsNotSupported);
    }
    if !existed && n_subs >= cfg.max_subscriptions_per_client {
        return Some(ReasonCode::QuotaExceeded);
    }
    None
}

/// Handles SUBSCRIBE.
pub(crate) fn subscribe(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    sub: Subscribe,
) -> Result<(), CloseReason> {
    if sub
        .filters
        .iter()
        .any(|(f, o)| f.shared().is_some() && o.no_local)
    {
        // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
        protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
        return Err(CloseReason::ProtocolError);
    }
    // A large packet pauses its connection's packet handling (later packets
    // wait, in order) and is handled by the shard's bulk worker in steps.
    if sub.filters.len() <= crate::bulk::OPS_PER_TURN && !shard.bulk.busy() {
        let mut st = SubState::new(&sub, conn);
        for (filter, options) in &sub.filters {
            st.one(shard, sid, filter, *options);
        }
        if st.finish(shard, sid, conn, sub.packet_id) {
            conn.pause_reading();
        }
        return Ok(());
    }
    conn.pause_reading();
    let job = crate::bulk::Job::Subscribe {
        sid,
        conn: conn.clone(),
        sub,
        next: 0,
        st: None,
    };
    crate::bulk::push(shard, job);
    Ok(())
}

/// Whether `conn` is still the open connection of session `sid`.
pub(crate) fn serves(shard: &Shard, sid: SessionId, conn: &Rc<ConnOut>) -> bool {
    !conn.closing()
        && shard
            .sessions
            .borrow()
            .get(sid as usize)
            .and_then(|s| s.conn.as_ref())
            .is_some_and(|c| Rc::ptr_eq(c, conn))
}

/// One SUBSCRIBE being handled: the reasons so far and what follows SUBACK.
pub(crate) struct SubState {
    v5: bool,
    sub_id: Option<u32>,
    reasons: Vec<ReasonCode>,
    /// Filters to replay retained messages for, and whether each needs the ACL asked.
    replays: Vec<(TopicFilter, SubscriptionOptions, bool)>,
    broadcast: bool,
}

impl SubState {
    pub(crate) fn new(sub: &Subscribe, conn: &ConnOut) -> Self {
        SubState {
            v5: conn.version == ProtocolVersion::V5,
            sub_id: sub.properties.subscription_identifier,
            reasons: Vec::with_capacity(sub.filters.len()),
            replays: Vec::new(),
            broadcast: false,
        }
    }

    /// Subscribes one filter (or refuses it).
    pub(crate) fn one(
        &mut self,
        shard: &Shard,
        sid: SessionId,
        filter: &TopicFilter,
        options: SubscriptionOptions,
    ) {
        let (existed, n) = {
            let sessions = shard.sessions.borrow();
            let s = &sessions[sid as usize];
            (s.subs.contains_key(filter), s.subs.len())
        };
        let class = crate::authz::classify(shard, sid, filter);
        let refused = check_filter(shard, n, filter, existed).or_else(|| {
            // A filter no topic of which the client may read: v5 0x87,
            // 3.1.1 0x80 Failure [MQTT-3.9.3-1] (v5 3.9.3).
            (class == SubClass::Never).then(|| {
                shard.stats.acl_deny(AclAction::Subscribe);
                ReasonCode::NotAuthorized
            })
        });
        if let Some(code) = refused {
            shard.stats.refuse(code);
            self.reasons.push(if self.v5 {
                code
            } else {
                ReasonCode::UnspecifiedError
            });
            return;
        }
        let check = class != SubClass::Full;
        self.broadcast |= add(shard, sid, filter, options, self.sub_id, check);
        self.reasons.push(granted(options.qos));
        let send = filter.shared().is_none()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send {
            self.replays.push((filter.clone(), options, check));
        }
    }

    /// SUBACK, once durable and (when the router changed) once every shard
    /// applied it. Returns true when it waits for the other shards: the
    /// connection's next packets then wait too (`finish` resumes them), so
    /// they are answered after this SUBACK.
    pub(crate) fn finish(
        self,
        shard: &Rc<Shard>,
        sid: SessionId,
        conn: &Rc<ConnOut>,
        packet_id: PacketId,
    ) -> bool {
        gate_if_persisted(shard, sid, conn);
        // [MQTT-3.8.4-1] SUBACK with one reason per filter [MQTT-3.8.4-6].
        let ack = SubAck {
            packet_id,
            reasons: self.reasons,
            properties: SubAckProperties::default().into(),
        };
        let done = SubDone {
            sid,
            conn: conn.clone(),
            ack,
            replays: self.replays,
            sub_id: self.sub_id,
        };
        // A message published after SUBACK must reach the new subscription from
        // every shard: SUBACK waits until every shard has applied the change
        // and (cluster) every connected peer node acknowledged the route (shard 0
        // asks the peers itself and answers other shards' barriers once they did).
        let shards = self.broadcast && shard.shards > 1;
        let cluster = self.broadcast && crate::cluster::routes_pending(shard);
        if shards || cluster {
            let token = shard.next_token.get() + 1;
            shard.next_token.set(token);
            let waits = if shards { shard.shards - 1 } else { 0 } + usize::from(cluster);
            shard
                .pending_subacks
                .borrow_mut()
                .insert(token, (waits, done));
            if shards {
                shard.mesh.broadcast(|| MeshItem::Barrier(token));
            }
            if cluster {
                let s = shard.clone();
                let then = move || barrier_passed(&s, token);
                crate::cluster::after_routes(shard, Box::new(then));
            }
            true
        } else {
            finish(shard, done);
            false
        }
    }
}

/// A SUBACK waiting for the other shards, and what follows it.
pub(crate) struct SubDone {
    sid: SessionId,
    conn: Rc<ConnOut>,
    ack: SubAck,
    /// Filters to replay retained messages for, and whether each needs the ACL asked.
    replays: Vec<(TopicFilter, SubscriptionOptions, bool)>,
    sub_id: Option<u32>,
}

/// Every shard applied the subscription change behind `token`.
pub(crate) fn barrier_passed(shard: &Rc<Shard>, token: u64) {
    let done = {
        let mut pending = shard.pending_subacks.borrow_mut();
        let Some((left, _)) = pending.get_mut(&token) else {
            return;
        };
        *left -= 1;
        if *left > 0 {
            return;
        }
        pending.remove(&token).map(|(_, d)| d)
    };
    if let Some(d) = done {
        finish(shard, d);
    }
}

/// Sends the SUBACK, then replays retained messages.
fn finish(shard: &Rc<Shard>, d: SubDone) {
    let SubDone {
        sid,
        conn,
        ack,
        replays,
        sub_id,
    } = d;
    conn.send(&Packet::SubAck(ack));
    if conn.reading_paused() {
        // It waited for the other shards: the packets after it go on now.
        conn.resume_reading();
    }
    if !replays.is_empty() {
        crate::replay::start(shard, sid, conn, replays, sub_id);
    }
}

/// Adds (or replaces [MQTT-3.8.4-3]) one subscription of session `sid`.
/// Returns whether the other shards were told.
pub(crate) fn add(
    shard: &Shard,
    sid: SessionId,
    filter: &TopicFilter,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
    acl_check: bool,
) -> bool {
    let first = shard.router.borrow_mut().subscribe_local(
        filter,
        LocalSub {
            session: sid,
            options,
            subscription_id,
            acl_check,
        },
    );
    if first {
        shard.mesh.broadcast(|| MeshItem::SubAdd(filter.clone()));
        crate::cluster::filter_changed(shard, filter, true);
    }
    shard.sessions.borrow_mut()[sid as usize].subs.insert(
        filter.clone(),
        SubEntry {
            options,
            subscription_id,
        },
    );
    crate::persist::subscription_added(
        shard,
        sid,
        crate::store::SubscriptionRecord {
            filter: filter.clone(),
            options,
            subscription_id,
        },
    );
    let n = shard.router.borrow().local_subscription_count();
    shard.stats.subscriptions.set(n as u64);
    first
}

/// Removes one subscription of session `sid` from the router (and its row).
pub(crate) fn remove(shard: &Shard, sid: SessionId, filter: &TopicFilter) -> bool {
    if let Some(k) = shard
        .sessions
        .borrow()
        .get(sid as usize)
        .and_then(|s| s.key)
    {
        shard.store.delete_subscription(k, filter).detach();
    }
    let r = shard.router.borrow_mut().unsubscribe_local(filter, sid);
    if r == Some(true) {
        shard.mesh.broadcast(|| MeshItem::SubRemove(filter.clone()));
        crate::cluster::filter_changed(shard, filter, false);
    }
    let n = shard.router.borrow().local_subscription_count();
    shard.stats.subscriptions.set(n as u64);
    r.is_some()
}

/// Handles UNSUBSCRIBE (in steps when large, like SUBSCRIBE).
pub(crate) fn unsubscribe(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    u: Unsubscribe,
) -> Result<(), CloseReason> {
    if u.filters.len() <= crate::bulk::OPS_PER_TURN && !shard.bulk.busy() {
        let reasons = u.filters.iter().map(|f| unsubscribe_one(shard, sid, f));
        let reasons = reasons.collect();
        unsuback(shard, sid, conn, u.packet_id, reasons);
        return Ok(());
    }
    conn.pause_reading();
    let reasons = Vec::with_capacity(u.filters.len());
    let job = crate::bulk::Job::Unsubscribe {
        sid,
        conn: conn.clone(),
        u,
        reasons,
    };
    crate::bulk::push(shard, job);
    Ok(())
}

/// Removes one filter of an UNSUBSCRIBE; its reason code.
pub(crate) fn unsubscribe_one(shard: &Shard, sid: SessionId, f: &TopicFilter) -> ReasonCode {
    let had = shard.sessions.borrow_mut()[sid as usize]
        .subs
        .remove(f)
        .is_some();
    // [MQTT-3.11.3-1] one reason per filter (v5).
    if had && remove(shard, sid, f) {
        ReasonCode::Success
    } else {
        ReasonCode::NoSubscriptionExisted
    }
}

/// UNSUBACK, once the subscription rows are durable.
pub(crate) fn unsuback(
    shard: &Shard,
    sid: SessionId,
    conn: &ConnOut,
    packet_id: PacketId,
    mut reasons: Vec<ReasonCode>,
) {
    if conn.version != ProtocolVersion::V5 {
        reasons.clear();
    }
    gate_if_persisted(shard, sid, conn);
    // [MQTT-3.10.4-4] UNSUBACK even when nothing was removed.
    conn.send(&Packet::UnsubAck(UnsubAck {
        packet_id,
        reasons,
        properties: UnsubAckProperties::default().into(),
    }));
}

/// SUBACK and UNSUBACK of a persisted session leave once its subscription rows are durable.
fn gate_if_persisted(shard: &Shard, sid: SessionId, conn: &ConnOut) {
    if shard.sessions.borrow()[sid as usize].key.is_some() {
        crate::persist::gate(shard, conn);
    }
}
