//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, the router
//! replica (broadcast to the other shards when this shard's set changes),
//! and the replay of retained messages in bounded steps.

use crate::access::acl::SubClass;
use crate::conn_out::ConnOut;
use crate::connection::protocol_close;
use crate::mesh::MeshItem;
use crate::router::LocalSub;
use crate::session::{SessionId, SubEntry};
use crate::shard::Shard;
use crate::stats::{AclAction, CloseReason};
use ringmq_codec::{
    Packet, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubAck, SubAckProperties, Subscribe,
    SubscriptionOptions, TopicFilter, UnsubAck, UnsubAckProperties, Unsubscribe,
};
use std::rc::Rc;
use std::time::Instant;

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
    let v5 = conn.version == ProtocolVersion::V5;
    let sub_id = sub.properties.subscription_identifier;
    let mut reasons = Vec::with_capacity(sub.filters.len());
    let mut replays = Vec::new();
    let mut broadcast = false;
    for (filter, options) in &sub.filters {
        if filter.shared().is_some() && options.no_local {
            // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
            protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
            return Err(CloseReason::ProtocolError);
        }
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
            reasons.push(if v5 {
                code
            } else {
                ReasonCode::UnspecifiedError
            });
            continue;
        }
        let check = class != SubClass::Full;
        broadcast |= add(shard, sid, filter, *options, sub_id, check);
        reasons.push(granted(options.qos));
        let send = filter.shared().is_none()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send {
            replays.push((filter.clone(), *options, check));
        }
    }
    gate_if_persisted(shard, sid, conn);
    // [MQTT-3.8.4-1] SUBACK with one reason per filter [MQTT-3.8.4-6].
    let ack = SubAck {
        packet_id: sub.packet_id,
        reasons,
        properties: SubAckProperties::default().into(),
    };
    let generation = shard.sessions.borrow()[sid as usize].generation;
    let done = SubDone {
        sid,
        generation,
        conn: conn.clone(),
        ack,
        replays,
        sub_id,
    };
    if broadcast && shard.shards > 1 {
        // A message published after SUBACK must reach the new subscription from
        // every shard: SUBACK waits until every shard has applied the change.
        let token = shard.next_token.get() + 1;
        shard.next_token.set(token);
        shard
            .pending_subacks
            .borrow_mut()
            .insert(token, (shard.shards - 1, done));
        shard.mesh.broadcast(|| MeshItem::Barrier(token));
    } else {
        finish(shard, done);
    }
    Ok(())
}

/// A SUBACK waiting for the other shards, and what follows it.
pub(crate) struct SubDone {
    sid: SessionId,
    generation: u64,
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
    d.conn.send(&Packet::SubAck(d.ack));
    if !d.replays.is_empty() {
        glommio::spawn_local(replay(
            shard.clone(),
            d.sid,
            d.generation,
            d.replays,
            d.sub_id,
        ))
        .detach();
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

fn remove(shard: &Shard, sid: SessionId, filter: &TopicFilter) -> bool {
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
    }
    let n = shard.router.borrow().local_subscription_count();
    shard.stats.subscriptions.set(n as u64);
    r.is_some()
}

/// Handles UNSUBSCRIBE.
pub(crate) fn unsubscribe(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    u: Unsubscribe,
) -> Result<(), CloseReason> {
    let mut reasons = Vec::new();
    for f in &u.filters {
        let had = shard.sessions.borrow_mut()[sid as usize]
            .subs
            .remove(f)
            .is_some();
        let removed = had && remove(shard, sid, f);
        // [MQTT-3.11.3-1] one reason per filter (v5).
        reasons.push(if removed {
            ReasonCode::Success
        } else {
            ReasonCode::NoSubscriptionExisted
        });
    }
    if conn.version != ProtocolVersion::V5 {
        reasons.clear();
    }
    gate_if_persisted(shard, sid, conn);
    // [MQTT-3.10.4-4] UNSUBACK even when nothing was removed.
    conn.send(&Packet::UnsubAck(UnsubAck {
        packet_id: u.packet_id,
        reasons,
        properties: UnsubAckProperties::default().into(),
    }));
    Ok(())
}

/// Removes every subscription of a session (clean start, expiry).
pub(crate) fn drop_all_subscriptions(shard: &Shard, sid: SessionId) {
    let filters: Vec<TopicFilter> = match shard.sessions.borrow_mut().get_mut(sid as usize) {
        Some(s) => s.subs.drain().map(|(f, _)| f).collect(),
        None => return,
    };
    for f in filters {
        remove(shard, sid, &f);
    }
}

/// Sends the retained messages matching new subscriptions, a batch per
/// scheduler turn, so a `#` over millions of retained messages never stalls
/// the shard. Retained messages go out with RETAIN=1 [MQTT-3.3.1-8].
async fn replay(
    shard: Rc<Shard>,
    sid: SessionId,
    generation: u64,
    filters: Vec<(TopicFilter, SubscriptionOptions, bool)>,
    sub_id: Option<u32>,
) {
    let batch = shard.cfg.retained_replay_batch.max(1);
    let ids: Vec<u32> = sub_id.into_iter().collect();
    let mut out = Vec::with_capacity(batch);
    for (filter, options, check) in filters {
        let mut cursor = shard.retained.borrow().replay(&filter);
        loop {
            out.clear();
            let done = cursor.next_batch(&shard.retained.borrow(), batch, &mut out);
            {
                let mut sessions = shard.sessions.borrow_mut();
                let Some(s) = sessions.get_mut(sid as usize) else {
                    return;
                };
                if s.generation != generation {
                    return;
                }
                let now = Instant::now();
                for m in &out {
                    let msg = crate::session::Message::received_at(m.publish.clone(), m.stored_at);
                    if msg.expiry_left(now) == Some(0) {
                        continue;
                    }
                    if check
                        && !crate::authz::may_receive(
                            &shard,
                            s,
                            m.publish.topic.as_str(),
                            AclAction::Retained,
                        )
                    {
                        continue;
                    }
                    let qos = m.publish.qos.min(options.qos);
                    let version = s.conn.as_ref().map_or(s.version, |c| c.version);
                    let frame = msg.frame(version, qos, now);
                    let mut shared = Some(Rc::new(msg));
                    s.deliver(&shard, &m.publish, &mut shared, &frame, true, &ids, now);
                }
            }
            if done {
                break;
            }
            glommio::yield_if_needed().await;
        }
    }
}

/// SUBACK and UNSUBACK of a persisted session leave once its subscription rows are durable.
fn gate_if_persisted(shard: &Shard, sid: SessionId, conn: &ConnOut) {
    if shard.sessions.borrow()[sid as usize].key.is_some() {
        crate::persist::gate(shard, conn);
    }
}
