//! Persistence wiring between the broker core and `store/`: sessions
//! restored at start, session rows kept in step, and acknowledgements that
//! wait for every shard holding a copy (durability `sync`).
//!
//! Local durability is the connection's job: in `sync` mode a connection's
//! task awaits the store's flush ticket before writing, so nothing it
//! sends (PUBACK, PUBREC, a PUBLISH under a packet id) leaves before the
//! rows behind it are durable. Copies routed to other shards are confirmed
//! over the mesh (`MeshItem::Confirm`) once their commit is durable
//! (`confirm.rs`, which also completes prepared QoS 2 messages at startup).

use crate::config::Durability;
use crate::confirm::Resume;
use crate::mesh::MeshItem;
use crate::retained::RetainedMessage;
use crate::router::LocalSub;
use crate::session::{Message, OutState, Outflight, Queued, Session, SessionId};
use crate::shard::Shard;
use crate::store::{self, OutboundState, RecoveredSession, RetainedRecord, SubscriptionRecord};
use smallvec::SmallVec;
use std::rc::Rc;

pub(crate) use crate::confirm::{owe, Confirms};

/// Whether acknowledgements wait for durability.
pub(crate) fn sync(shard: &Shard) -> bool {
    shard.store.durability() == Durability::Sync
}

/// Sync durability: what `conn` has buffered, and buffers before its task
/// next writes, leaves only once the store ops pushed so far are durable.
/// Called after the ops an answer depends on: CONNACK (session row), PUBACK
/// and PUBREC (the message's rows), PUBCOMP (inbound id deleted), SUBACK and
/// UNSUBACK (subscription rows), an outbound QoS 2 PUBLISH (its id) and PUBREL.
pub(crate) fn gate(shard: &Shard, conn: &crate::conn_out::ConnOut) {
    if sync(shard) {
        conn.gate_on_durability();
    }
}

/// Keeps the session's row in step after CONNECT (`clean`: its old state was discarded).
pub(crate) fn session_connected(shard: &Shard, s: &mut Session, clean: bool) {
    if !shard.store.is_persistent() {
        return;
    }
    let had_row = s.key.is_some();
    if clean {
        if let Some(k) = s.key {
            shard.store.delete_session(k).detach();
        }
    }
    if s.expiry > 0 {
        let k = *s
            .key
            .get_or_insert_with(|| shard.store.allocate_session_key());
        shard.store.put_session(k, &s.record()).detach();
    } else if let Some(k) = s.key.take() {
        shard.store.delete_session(k).detach();
    }
    // CONNACK leaves once the session row is written or gone: what it says
    // of the session (present or not) holds after a restart. `clean`: an
    // old session was discarded (its rows deleted by `remove_session`).
    if let (Some(c), true) = (&s.conn, had_row || s.expiry > 0 || clean) {
        gate(shard, c);
    }
}

/// The session's connection closed: its row records when.
pub(crate) fn session_closed(shard: &Shard, s: &Session) {
    if let Some(k) = s.key {
        shard.store.put_session(k, &s.record()).detach();
    }
}

/// The session is gone (expired, or expiry 0 at close).
pub(crate) fn session_removed(shard: &Shard, s: &Session) {
    if let Some(k) = s.key {
        shard.store.delete_session(k).detach();
    }
}

/// Stores a subscription of a persisted session.
pub(crate) fn subscription_added(shard: &Shard, sid: SessionId, r: SubscriptionRecord) {
    if let Some(k) = shard
        .sessions
        .borrow()
        .get(sid as usize)
        .and_then(|s| s.key)
    {
        shard.store.put_subscription(k, &r).detach();
    }
}

/// Rebuilds this shard's sessions and retained replica from the store.
pub(crate) fn restore(
    shard: &Rc<Shard>,
    sessions: Vec<RecoveredSession>,
    retained: &[RetainedRecord],
) {
    for r in retained {
        let mut p = r.message.publish.clone();
        p.retain = true;
        shard.retained.borrow_mut().set(
            r.topic.clone(),
            RetainedMessage {
                topic: r.topic.clone(),
                publish: p,
                stored_at: store::unix_ms_to_instant(r.message.received_at_ms),
            },
        );
    }
    shard
        .stats
        .retained
        .set(shard.retained.borrow().len() as u64);
    let mut prepared = Vec::new();
    let mut ownerless = 0usize;
    for rs in sessions {
        ownerless += usize::from(!restore_session(shard, rs, &mut prepared));
    }
    if ownerless > 0 {
        tracing::warn!(
            shard = shard.id,
            sessions = ownerless,
            "restored sessions stored without their owner: the ACL refuses deliveries to them until their clients reconnect"
        );
    }
    // Inbound QoS 2 messages prepared before the crash reach the shards
    // that lack their copy; clients are served only after this returns.
    crate::confirm::resume(shard, prepared);
}

/// Installs a session shipped by another node (`cluster/handover.rs`): its
/// rows are written under a new key (when persistent here) before anything
/// else of it happens, then it is rebuilt exactly as after a restart. The
/// CONNACK that follows waits for those rows in sync durability
/// ([`session_connected`] gates it).
pub(crate) fn install(shard: &Rc<Shard>, mut rs: RecoveredSession) {
    let persistent = shard.store.is_persistent() && rs.record.expiry_interval > 0;
    let key = persistent.then(|| shard.store.allocate_session_key());
    if let Some(k) = key {
        let st = &shard.store;
        st.put_session(k, &rs.record).detach();
        for sub in &rs.subscriptions {
            st.put_subscription(k, sub).detach();
        }
        for o in &rs.outbound {
            st.put_outbound(k, o.seq, o.state, o.message.as_ref().map(|m| m.view()))
                .detach();
        }
        for i in &rs.inbound_qos2 {
            st.put_inbound_qos2(k, i.packet_id, None).detach();
        }
    }
    rs.key = key.unwrap_or(0);
    let id = rs.record.client_id.clone();
    let mut prepared = Vec::new();
    restore_session(shard, rs, &mut prepared);
    if key.is_none() {
        let sid = shard.by_client.borrow().get(&id, &shard.sessions.borrow());
        if let Some(sid) = sid {
            shard.sessions.borrow_mut()[sid as usize].key = None;
        }
    }
}

/// Restores one session; false when the ACL cannot decide for it before its
/// client reconnects (no owner stored).
fn restore_session(shard: &Rc<Shard>, rs: RecoveredSession, prepared: &mut Vec<Resume>) -> bool {
    let rec = rs.record;
    let mut s = Session::new(rec.client_id.clone(), rec.protocol);
    s.key = Some(rs.key);
    // A cap lowered since the session was stored applies to it too.
    s.expiry = rec.expiry_interval.min(shard.cfg.max_session_expiry);
    s.disconnected_at = crate::session::MaybeInstant::some(
        rec.disconnected_at_ms
            .map_or_else(std::time::Instant::now, store::unix_ms_to_instant),
    );
    s.next_seq = rs.next_seq.max(1);
    s.owner = rec.owner.clone();
    for o in rs.outbound {
        let msg = o.message.map(|m| {
            (
                Rc::new(Message::restored(m.publish.clone(), m.received_at_ms)),
                m,
            )
        });
        let (qos, retain, ids) = msg.as_ref().map_or(
            (ringmq_codec::QoS::ExactlyOnce, false, SmallVec::new()),
            |(_, m)| {
                (
                    m.publish.qos,
                    m.publish.retain,
                    SmallVec::from_slice(&m.publish.properties.subscription_identifiers),
                )
            },
        );
        let msg = msg.map(|(rc, _)| rc);
        match (o.state, msg) {
            (OutboundState::Queued, Some(msg)) => {
                s.queue.push_back(Queued {
                    seq: o.seq,
                    msg,
                    qos,
                    retain,
                    sub_ids: ids,
                });
                shard.stats.queued.inc();
            }
            (OutboundState::AwaitingAck(id), Some(msg)) => {
                s.inflight.push_back(Outflight {
                    packet_id: id,
                    seq: o.seq,
                    msg: Some(msg),
                    qos,
                    retain,
                    sub_ids: ids,
                    state: OutState::Published,
                });
                shard.stats.inflight.inc();
            }
            (OutboundState::AwaitingPubComp(id), msg) => {
                s.inflight.push_back(Outflight {
                    packet_id: id,
                    seq: o.seq,
                    msg,
                    qos: ringmq_codec::QoS::ExactlyOnce,
                    retain,
                    sub_ids: ids,
                    state: OutState::Released,
                });
                shard.stats.inflight.inc();
            }
            _ => {}
        }
    }
    s.recount_held();
    s.inbound_qos2 = rs.inbound_qos2.iter().map(|i| i.packet_id.get()).collect();
    let subs = rs.subscriptions;
    let sid = {
        let mut sessions = shard.sessions.borrow_mut();
        let sid = sessions.insert(s);
        sessions[sid].sid = sid as SessionId;
        sid as SessionId
    };
    for i in rs.inbound_qos2 {
        if let (Some(p), Some(message)) = (i.prepared, i.message) {
            prepared.push(Resume {
                sid,
                key: rs.key,
                id: i.packet_id,
                prepared: p,
                message,
            });
        }
    }
    shard.by_client.borrow_mut().insert(&rec.client_id, sid);
    shard.stats.sessions.inc();
    for sub in subs {
        let first = shard.router.borrow_mut().subscribe_local(
            &sub.filter,
            LocalSub {
                session: sid,
                options: sub.options,
                subscription_id: sub.subscription_id,
                // With an ACL: checked until `authz::restored` below
                // classifies it for the stored owner.
                acl_check: shard.acl.borrow().is_some(),
            },
        );
        if first {
            let f = sub.filter.clone();
            shard.mesh.broadcast(|| MeshItem::SubAdd(f.clone()));
            crate::cluster::filter_changed(shard, &f, true);
        }
        shard.sessions.borrow_mut()[sid as usize].subs.insert(
            sub.filter,
            crate::session::SubEntry {
                options: sub.options,
                subscription_id: sub.subscription_id,
            },
        );
    }
    let decided = crate::authz::restored(shard, sid);
    let n = shard.router.borrow().local_subscription_count();
    shard.stats.subscriptions.set(n as u64);
    decided
}

/// At shutdown: everything written is committed before the shard stops.
pub(crate) async fn close(shard: &Rc<Shard>) {
    // Deferred copies still unacknowledged are stored now.
    crate::defer::store_due(shard, true);
    if let Err(e) = shard.store.flush().await {
        tracing::error!(shard = shard.id, "final commit failed: {e}");
    }
}
