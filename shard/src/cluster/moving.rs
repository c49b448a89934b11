//! A session move that a crash of the old node must not lose.
//!
//! **Old node A (the keep).** The take deletes the session's rows (its
//! fence knows ownership moved: a restart never serves it as its own), and
//! in the same store batch writes the session's snapshot as one row
//! (`keys::MOVING`: new node, epoch, end, snapshot). The keep stays until
//! the new node's `MoveDone` (sent once B's install is durable,
//! `connection.rs`), or its time bound ([`keep_for`]: the new node has given
//! the session up by then). A fetch of that node at that epoch or later is
//! answered from the keep when the session is neither live nor parked here:
//! after a restart of A, or when B's first fetch timed out. A keep is a
//! snapshot, never a session: it cannot deliver, so nothing in it is
//! delivered twice by A.
//!
//! **New node B (the pending move).** A fetch that fails because A is
//! unreachable (link down, or no answer within the claim timeout) refuses
//! the CONNECT with v5 CONNACK 0x88 Server unavailable, 3.1.1 0x03
//! ([MQTT-3.2.2-6], `connection.rs`), rather than a fresh session. B keeps
//! the ownership it won and notes `client -> (A, since)`: the client's
//! retry claims again (previous owner: B itself) and fetches from A again.
//! Once A has been silent `--node-down-after` (or the first failure is
//! that old), the session is given up: the client gets a fresh session
//! (session present 0), as for any session on a dead node.

use super::Node;
use crate::shard::Shard;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long A keeps a session whose `MoveDone` did not come: twice the
/// time after which B gives it up, and at least a minute.
pub(crate) fn keep_for(node_down_after: Duration) -> Duration {
    (node_down_after * 2).max(Duration::from_secs(60))
}

/// A session taken for node `node` at `epoch`, kept until its `MoveDone`.
struct Kept {
    node: u64,
    epoch: u64,
    snapshot: Bytes,
    token: u64,
}

/// Per shard (the client's home shard on the old node).
#[derive(Default)]
pub(crate) struct Keeps {
    by_client: RefCell<HashMap<Box<str>, Kept>>,
    next: Cell<u64>,
}

/// Row value: new node u64, epoch u64, end unix ms u64, snapshot.
fn encode(node: u64, epoch: u64, end_ms: u64, snapshot: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + snapshot.len());
    v.extend_from_slice(&node.to_be_bytes());
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(&end_ms.to_be_bytes());
    v.extend_from_slice(snapshot);
    v
}

/// `(node, epoch, end ms, snapshot)`; `None` for a row too short.
fn decode(v: &[u8]) -> Option<(u64, u64, u64, Bytes)> {
    let u64_at = |i: usize| Some(u64::from_be_bytes(v.get(i..i + 8)?.try_into().ok()?));
    let (node, epoch, end) = (u64_at(0)?, u64_at(8)?, u64_at(16)?);
    Some((node, epoch, end, Bytes::copy_from_slice(&v[24..])))
}

/// At the take (home shard, right after the session's rows were deleted,
/// so in the same batch): keep `snapshot` for node `to` at `epoch`.
pub(crate) fn keep(shard: &Rc<Shard>, client: &str, to: u64, epoch: u64, snapshot: &Bytes) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    let for_ = keep_for(n.down_after);
    if shard.store.is_persistent() {
        let end_ms = crate::store::unix_ms() + for_.as_millis() as u64;
        let v = encode(to, epoch, end_ms, snapshot);
        shard.store.put_moving(client.as_bytes(), &v).detach();
    }
    insert(shard, n, client, to, epoch, snapshot.clone(), for_);
    n.stats.handover.kept.fetch_add(1, Relaxed);
}

fn insert(shard: &Rc<Shard>, n: &Node, client: &str, to: u64, epoch: u64, s: Bytes, d: Duration) {
    let token = n.keeps.next.get() + 1;
    n.keeps.next.set(token);
    let kept = Kept {
        node: to,
        epoch,
        snapshot: s,
        token,
    };
    n.keeps.by_client.borrow_mut().insert(client.into(), kept);
    let shard = shard.clone();
    let id: Box<str> = client.into();
    glommio::spawn_local(async move {
        glommio::timer::sleep(d).await;
        let Some(n) = shard.cluster.as_ref() else {
            return;
        };
        let ours = n
            .keeps
            .by_client
            .borrow()
            .get(&id)
            .is_some_and(|k| k.token == token);
        if ours {
            n.keeps.by_client.borrow_mut().remove(&id);
            shard.store.delete_moving(id.as_bytes()).detach();
            n.stats.handover.kept_expired.fetch_add(1, Relaxed);
            tracing::info!(
                client = &*id,
                "session move: no MoveDone within {d:?}: kept session dropped"
            );
        }
    })
    .detach();
}

/// A fetch of node `node` at `epoch` finding the session neither live nor
/// parked here: the kept snapshot of its move to that node (it stays kept).
pub(crate) fn serve(shard: &Shard, client: &str, node: u64, epoch: u64) -> Option<Bytes> {
    let n = shard.cluster.as_ref()?;
    let keeps = n.keeps.by_client.borrow();
    let k = keeps
        .get(client)
        .filter(|k| k.node == node && k.epoch <= epoch)?;
    n.stats.handover.kept_served.fetch_add(1, Relaxed);
    Some(k.snapshot.clone())
}

/// The session is held elsewhere durably (`MoveDone`, on its home shard)
/// or installed here again: its keep goes.
pub(crate) fn drop_keep(shard: &Shard, client: &str) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    if n.keeps.by_client.borrow_mut().remove(client).is_some() {
        shard.store.delete_moving(client.as_bytes()).detach();
        n.stats.handover.kept_done.fetch_add(1, Relaxed);
    }
}

/// Shard 0, a `MoveDone` for `client`: its home shard drops the keep.
pub(crate) fn move_done(shard: &Rc<Shard>, client: &str) {
    let home = crate::connection::home_shard(client.as_bytes(), shard.shards);
    if home == shard.id {
        drop_keep(shard, client);
    } else {
        let item = super::Item::KeepDone(client.into());
        shard
            .mesh
            .push(home, crate::mesh::MeshItem::Cluster(Box::new(item)));
    }
}

/// At start (each shard): keeps whose time had not ended are served again.
pub(crate) fn recover(shard: &Rc<Shard>) {
    let rows = shard.store.take_moving();
    let Some(n) = shard.cluster.as_ref() else {
        for (client, _) in rows {
            shard.store.delete_moving(&client).detach();
        }
        return;
    };
    let now = crate::store::unix_ms();
    for (client, v) in rows {
        let row = decode(&v);
        let id = std::str::from_utf8(&client).ok();
        let (Some((node, epoch, end, snapshot)), Some(id)) = (row, id) else {
            tracing::warn!(
                shard = shard.id,
                "session move: an unreadable kept session: dropped"
            );
            shard.store.delete_moving(&client).detach();
            continue;
        };
        if end <= now {
            shard.store.delete_moving(&client).detach();
            continue;
        }
        let left = Duration::from_millis(end - now);
        insert(shard, n, id, node, epoch, snapshot, left);
        n.stats.handover.kept_restored.fetch_add(1, Relaxed);
        tracing::info!(
            shard = shard.id,
            client = id,
            node,
            epoch,
            "session move: kept session restored for its new owner's fetch"
        );
    }
}

/// New node: moves whose fetch failed with the old node unreachable.
#[derive(Default)]
pub struct Pending {
    by_client: Mutex<HashMap<Box<str>, (u64, Instant)>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, (u64, Instant)>> {
        self.by_client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// At a CONNECT whose claim found this node the owner already: the node a
/// failed move of `client` still waits for, if any.
pub(crate) fn pending_from(n: &Node, client: &str) -> Option<u64> {
    n.pending.lock().get(client).map(|(node, _)| *node)
}

/// The move of `client` ended (installed, the old node had none, or a
/// clean start discards it): no retry fetches again.
pub(crate) fn settled(n: &Node, client: &str) {
    n.pending.lock().remove(client);
}

/// A claim of `client` refused here (its timeout, or the cluster could not
/// decide) while node `prev` owned it. The claim's entry may still commit
/// after the refusal: this node then owns the client at an epoch no session
/// here was installed under, while the session waits on `prev` (its fence
/// parked and kept it). Noted like a failed fetch, so the retry that finds
/// this node the owner fetches from `prev` instead of starting a fresh
/// session; the note goes as the fetch's do ([`settled`], or given up after
/// `--node-down-after`).
pub(crate) fn claim_refused(n: &Node, client: &str, prev: u64) {
    note(&mut n.pending.lock(), client, prev, Instant::now());
}

/// `client` waits for node `prev` (since `now`, or since its note of the
/// same node): its note.
fn note<'a>(
    p: &'a mut HashMap<Box<str>, (u64, Instant)>,
    client: &str,
    prev: u64,
    now: Instant,
) -> &'a mut (u64, Instant) {
    let e = p.entry(client.into()).or_insert((prev, now));
    if e.0 != prev {
        *e = (prev, now);
    }
    e
}

/// A fetch from `prev` failed unreachable (`silent`: how long its link has
/// been silent, when known). True: refuse the CONNECT (Server unavailable)
/// and fetch again at the retry; false: the session is given up (fresh).
pub(crate) fn failed(n: &Node, client: &str, prev: u64, silent: Option<Duration>) -> bool {
    let down_after = n.down_after;
    let now = Instant::now();
    let st = &n.stats.handover;
    let mut p = n.pending.lock();
    // Notes of clients that never came back are given up with their time
    // (their next CONNECT finds this node the owner: a fresh session).
    let before = p.len();
    p.retain(|c, (_, since)| &**c == client || now.duration_since(*since) < down_after);
    st.lost.fetch_add((before - p.len()) as u64, Relaxed);
    let age = now.duration_since(note(&mut p, client, prev, now).1);
    if silent.is_some_and(|s| s >= down_after) || age >= down_after {
        p.remove(client);
        st.lost.fetch_add(1, Relaxed);
        tracing::warn!(
            client,
            node = prev,
            "session handover: node down for {down_after:?}: the session is lost, fresh session"
        );
        false
    } else {
        st.unavailable.fetch_add(1, Relaxed);
        tracing::info!(
            client,
            node = prev,
            "session handover: old node unreachable mid-move: CONNECT refused (server unavailable)"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_row_round_trips_and_a_short_one_is_refused() {
        let v = encode(3, 9, 1_765_000_000_000, b"snap");
        let (n, e, end, s) = decode(&v).unwrap();
        assert_eq!((n, e, end, &s[..]), (3, 9, 1_765_000_000_000, &b"snap"[..]));
        for cut in 0..24 {
            assert!(decode(&v[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn a_keep_outlives_the_give_up_of_the_new_node() {
        assert_eq!(keep_for(Duration::from_secs(1)), Duration::from_secs(60));
        assert_eq!(keep_for(Duration::from_secs(90)), Duration::from_secs(180));
    }
}
