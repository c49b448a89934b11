//! The replay of retained messages to new subscriptions, paced by the
//! subscriber, and resumed when a persistent session's client comes back.
//!
//! A cursor walks the retained store a batch per scheduler turn (so a `#`
//! over millions of retained messages never stalls the shard), and each
//! message waits until the connection has room — buffer space for QoS 0, and
//! for QoS 1/2 also an open window with nothing queued — so none is dropped
//! or put through the session queue's limits. Retained messages go out with
//! RETAIN=1 [MQTT-3.3.1-8] (v5) / [MQTT-3.3.1-6] (3.1.1: every matching
//! retained message is sent when the subscription is made).
//!
//! When the connection goes away mid-replay, what is left (filters, cursor,
//! the batch in hand) stays with the session if it outlives the connection,
//! and the replay goes on with the next connection of that session (a
//! takeover's at once; a reconnect's from `connect.rs`, [`resume`]). So every
//! retained message matching a persistent session's subscription reaches
//! it, QoS 0 included; QoS 1/2 ones sent but not acknowledged are resent
//! from the session's in-flight state as usual. A clean start or the end of
//! the session drops it. The replay state lives in memory: a broker restart
//! mid-replay does not resume it (the retained store itself is durable).

use crate::conn_out::ConnOut;
use crate::retained::{ReplayCursor, RetainedMessage};
use crate::session::SessionId;
use crate::shard::Shard;
use crate::stats::AclAction;
use ringmq_codec::{MqttString, QoS, SubscriptionOptions, TopicFilter};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

/// A replay under way: the filters still to replay (the first one current,
/// with whether its deliveries ask the ACL), its cursor, and the messages
/// taken from the store but not sent yet.
pub struct Replay {
    client_id: MqttString,
    filters: VecDeque<(TopicFilter, SubscriptionOptions, bool)>,
    cursor: Option<ReplayCursor>,
    batch: VecDeque<Rc<RetainedMessage>>,
    sub_id: Option<u32>,
}

/// Starts replaying for `filters`, just subscribed by session `sid` on `conn`.
pub(crate) fn start(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: Rc<ConnOut>,
    filters: Vec<(TopicFilter, SubscriptionOptions, bool)>,
    sub_id: Option<u32>,
) {
    let Some(client_id) = shard
        .sessions
        .borrow()
        .get(sid as usize)
        .map(|s| s.client_id.clone())
    else {
        return;
    };
    let r = Replay {
        client_id,
        filters: filters.into(),
        cursor: None,
        batch: VecDeque::new(),
        sub_id,
    };
    glommio::spawn_local(run(shard.clone(), sid, conn, r)).detach();
}

/// The client of session `sid` is back on `conn` (session present): the
/// replays its last connection left unfinished go on.
pub(crate) fn resume(shard: &Rc<Shard>, sid: SessionId, conn: &Rc<ConnOut>) {
    let left = shard
        .sessions
        .borrow_mut()
        .get_mut(sid as usize)
        .map(|s| s.take_replays());
    for r in left.into_iter().flatten() {
        glommio::spawn_local(run(shard.clone(), sid, conn.clone(), r)).detach();
    }
}

/// Where the replay's session stands.
enum Seat {
    /// `conn` can take one more message now.
    Room,
    /// Served by another connection now (a takeover): go on there.
    Moved(Rc<ConnOut>),
    /// No connection (persistent session): keep the replay with it.
    Offline,
    /// The session is gone (removed, cleaned, its slot reused).
    Gone,
}

async fn run(shard: Rc<Shard>, sid: SessionId, mut conn: Rc<ConnOut>, mut r: Replay) {
    let batch = shard.cfg.retained_replay_batch.max(1);
    let ids: Vec<u32> = r.sub_id.into_iter().collect();
    let mut out = Vec::with_capacity(batch);
    while let Some((filter, options, check)) = r.filters.front().cloned() {
        if !subscribed(&shard, sid, &r.client_id, &filter) {
            // Unsubscribed (or replaced by a clean start) meanwhile.
            r.filters.pop_front();
            r.cursor = None;
            r.batch.clear();
            continue;
        }
        if r.batch.is_empty() {
            let done = {
                let store = shard.retained.borrow();
                let cursor = r.cursor.get_or_insert_with(|| store.replay(&filter));
                out.clear();
                cursor.next_batch(&store, batch, &mut out)
            };
            r.batch.extend(out.drain(..));
            if done {
                r.cursor = None;
                // The filter is finished once this last batch is sent.
                if r.batch.is_empty() {
                    r.filters.pop_front();
                    continue;
                }
            }
        }
        while let Some(m) = r.batch.front().cloned() {
            let qos = m.publish.qos.min(options.qos);
            match seat(&shard, sid, &r.client_id, &conn, qos).await {
                Seat::Room => {}
                Seat::Moved(c) => {
                    conn = c;
                    continue;
                }
                Seat::Offline => return keep(&shard, sid, r),
                Seat::Gone => return,
            }
            r.batch.pop_front();
            send(&shard, sid, &conn, &m, qos, check, &ids);
        }
        if r.cursor.is_none() {
            r.filters.pop_front();
        }
        glommio::yield_if_needed().await;
    }
}

/// Sends one retained message to session `sid` (unless expired or refused
/// by the ACL).
fn send(
    shard: &Shard,
    sid: SessionId,
    conn: &ConnOut,
    m: &RetainedMessage,
    qos: QoS,
    check: bool,
    ids: &[u32],
) {
    let mut sessions = shard.sessions.borrow_mut();
    let Some(s) = sessions.get_mut(sid as usize) else {
        return;
    };
    let now = Instant::now();
    let msg = crate::session::Message::received_at(m.publish.clone(), m.stored_at);
    if msg.expiry_left(now) == Some(0) {
        return;
    }
    if crate::authz::must_check(shard, check)
        && !crate::authz::may_receive(shard, s, m.publish.topic.as_str(), AclAction::Retained)
    {
        return;
    }
    let frame = msg.frame(conn.version, qos, now);
    let mut shared = Some(Rc::new(msg));
    s.deliver(shard, &m.publish, &mut shared, &frame, true, ids, now);
}

/// Session `sid` is still `client_id`'s and holds `filter`.
fn subscribed(shard: &Shard, sid: SessionId, client_id: &MqttString, filter: &TopicFilter) -> bool {
    shard
        .sessions
        .borrow()
        .get(sid as usize)
        .is_some_and(|s| !s.is_gone() && s.client_id == *client_id && s.subs.contains_key(filter))
}

/// Leaves the replay with the session until its client is back.
fn keep(shard: &Shard, sid: SessionId, r: Replay) {
    let mut sessions = shard.sessions.borrow_mut();
    if let Some(s) = sessions.get_mut(sid as usize) {
        if !s.is_gone() && s.client_id == r.client_id {
            s.keep_replay(r);
        }
    }
}

/// Waits until session `sid` (still `client_id`'s), served by `conn`, can
/// take one more message of `qos` without dropping or queueing it, or
/// until its connection changed.
async fn seat(
    shard: &Shard,
    sid: SessionId,
    client_id: &MqttString,
    conn: &Rc<ConnOut>,
    qos: QoS,
) -> Seat {
    std::future::poll_fn(|cx| {
        let sessions = shard.sessions.borrow();
        let Some(s) = sessions
            .get(sid as usize)
            .filter(|s| !s.is_gone() && s.client_id == *client_id)
        else {
            return Poll::Ready(Seat::Gone);
        };
        match &s.conn {
            Some(c) if !Rc::ptr_eq(c, conn) => return Poll::Ready(Seat::Moved(c.clone())),
            None => return Poll::Ready(Seat::Offline),
            Some(_) if conn.closing() => {
                // Closing, not yet detached from the session: woken again
                // when it is (or as `room_freed` wakes on close).
                conn.wait_room(cx.waker());
                return Poll::Pending;
            }
            Some(_) => {}
        }
        let window = qos == QoS::AtMostOnce || (s.queue.is_empty() && s.window_open());
        if window && conn.has_room(&shard.cfg) {
            return Poll::Ready(Seat::Room);
        }
        conn.wait_room(cx.waker());
        Poll::Pending
    })
    .await
}
