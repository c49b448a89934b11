//! Persistence wiring between the broker core and `store/`: sessions
//! restored at start, session rows kept in step, and acknowledgements that
//! wait for every shard holding a copy (durability `sync`).
//!
//! Local durability is the writer's job: in `sync` mode a connection's
//! writer awaits the store's flush ticket before writing, so nothing it
//! sends (PUBACK, PUBREC, a PUBLISH under a packet id) leaves before the
//! rows behind it are durable. Copies routed to other shards are confirmed
//! over the mesh (`MeshItem::Confirm`) once their commit is durable.

use crate::config::Durability;
use crate::conn_out::ConnOut;
use crate::mesh::MeshItem;
use crate::retained::RetainedMessage;
use crate::router::LocalSub;
use crate::session::{Message, OutState, Outflight, Queued, Session, SessionId};
use crate::shard::Shard;
use crate::store::{
    self, OutboundState, RecoveredSession, RetainedRecord, SessionKey, SubscriptionRecord,
};
use ringmq_codec::PacketId;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// Acknowledgements waiting for other shards, and confirmations this shard owes.
#[derive(Default)]
pub struct Confirms {
    next: u64,
    /// token -> (shards still to confirm, the publisher's connection).
    waiting: HashMap<u64, (usize, Weak<ConnOut>)>,
    /// token -> inbound QoS 2 id to store once every copy is confirmed.
    id_rows: HashMap<u64, (SessionKey, PacketId)>,
    /// (shard, token) to confirm once this shard's next commit is durable.
    owed: Vec<(usize, u64)>,
    flushing: bool,
}

/// Whether acknowledgements wait for durability.
pub(crate) fn sync(shard: &Shard) -> bool {
    shard.store.durability() == Durability::Sync
}

/// A token for a publish whose copies on other shards must be confirmed.
pub(crate) fn new_token(shard: &Shard) -> u64 {
    let mut c = shard.confirms.borrow_mut();
    c.next += 1;
    c.next
}

/// The publish behind `token` went to `remote` shards; `conn` holds its ack.
pub(crate) fn await_confirms(shard: &Shard, token: u64, remote: usize, conn: &Rc<ConnOut>) {
    shard
        .confirms
        .borrow_mut()
        .waiting
        .insert(token, (remote, Rc::downgrade(conn)));
}

/// Another shard's copy of the publish behind `token` is durable.
pub(crate) fn confirmed(shard: &Shard, token: u64) {
    let conn = {
        let mut c = shard.confirms.borrow_mut();
        let Some((left, _)) = c.waiting.get_mut(&token) else {
            return;
        };
        *left -= 1;
        if *left > 0 {
            return;
        }
        c.waiting.remove(&token).and_then(|(_, w)| w.upgrade())
    };
    let row = shard.confirms.borrow_mut().id_rows.remove(&token);
    if let Some((k, id)) = row {
        // Before the PUBREC: the writer waits for the commit holding this row.
        shard.store.put_inbound_qos2(k, id, None).detach();
    }
    if let Some(conn) = conn {
        conn.release_ack(token);
    }
}

/// Stores the inbound QoS 2 packet id once the publish behind `token` is
/// durable on every shard that holds a copy.
pub(crate) fn store_id_when_confirmed(shard: &Shard, token: u64, row: (SessionKey, PacketId)) {
    shard.confirms.borrow_mut().id_rows.insert(token, row);
}

/// This shard holds a copy of a publish from shard `from`; confirm it once durable.
pub(crate) fn owe(shard: &Rc<Shard>, from: usize, token: u64) {
    let start = {
        let mut c = shard.confirms.borrow_mut();
        c.owed.push((from, token));
        !std::mem::replace(&mut c.flushing, true)
    };
    if start {
        glommio::spawn_local(pay(shard.clone())).detach();
    }
}

/// Sends the owed confirmations after the commit covering them is durable.
async fn pay(shard: Rc<Shard>) {
    loop {
        // Let the rest of this tick's mesh batch add its rows first.
        futures_lite::future::yield_now().await;
        let owed = std::mem::take(&mut shard.confirms.borrow_mut().owed);
        if owed.is_empty() {
            shard.confirms.borrow_mut().flushing = false;
            return;
        }
        let ok = shard.store.flush().await.is_ok();
        for (to, token) in owed {
            if ok {
                shard.mesh.push(to, MeshItem::Confirm(token));
            }
        }
    }
}

/// Keeps the session's row in step after CONNECT (`clean`: its old state was discarded).
pub(crate) fn session_connected(shard: &Shard, s: &mut Session, clean: bool) {
    if !shard.store.is_persistent() {
        return;
    }
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
        if let (Some(c), true) = (&s.conn, sync(shard)) {
            c.gate_on_durability();
        }
    } else if let Some(k) = s.key.take() {
        shard.store.delete_session(k).detach();
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
    for rs in sessions {
        restore_session(shard, rs);
    }
}

fn restore_session(shard: &Rc<Shard>, rs: RecoveredSession) {
    let rec = rs.record;
    let mut s = Session::new(rec.client_id.clone(), rec.protocol);
    s.key = Some(rs.key);
    s.expiry = rec.expiry_interval;
    s.disconnected_at = Some(
        rec.disconnected_at_ms
            .map_or_else(std::time::Instant::now, store::unix_ms_to_instant),
    );
    s.next_seq = rs.next_seq.max(1);
    for o in rs.outbound {
        let msg = o.message.map(|m| {
            (
                Rc::new(Message {
                    publish: m.publish.clone(),
                    received_at: store::unix_ms_to_instant(m.received_at_ms),
                }),
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
    s.inbound_qos2 = rs.inbound_qos2.iter().map(|i| i.packet_id.get()).collect();
    let subs = rs.subscriptions;
    let sid = shard.sessions.borrow_mut().insert(s) as SessionId;
    shard.by_client.borrow_mut().insert(rec.client_id, sid);
    shard.stats.sessions.inc();
    for sub in subs {
        let first = shard.router.borrow_mut().subscribe_local(
            &sub.filter,
            LocalSub {
                session: sid,
                options: sub.options,
                subscription_id: sub.subscription_id,
            },
        );
        if first {
            let f = sub.filter.clone();
            shard.mesh.broadcast(|| MeshItem::SubAdd(f.clone()));
        }
        shard.sessions.borrow_mut()[sid as usize].subs.insert(
            sub.filter,
            crate::session::SubEntry {
                options: sub.options,
                subscription_id: sub.subscription_id,
            },
        );
    }
    let n = shard.router.borrow().local_subscription_count();
    shard.stats.subscriptions.set(n as u64);
}

/// At shutdown: everything written is committed before the shard stops.
pub(crate) async fn close(shard: &Shard) {
    if let Err(e) = shard.store.flush().await {
        tracing::error!(shard = shard.id, "final commit failed: {e}");
    }
}
