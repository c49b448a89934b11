//! Acknowledgements that wait for other shards (durability `sync`), and
//! exactly once across shards for inbound QoS 2 (`docs/storage.md`,
//! "Exactly once across shards").
//!
//! Two LMDB environments cannot commit atomically, so an inbound QoS 2
//! message routed to other shards goes through a prepare step:
//!
//! 1. the publisher's shard commits a *prepared* inbound row (packet id,
//!    nonce, targets, message) in the same transaction as its local copies;
//! 2. only then are the remote copies sent, each asking for an *origin row*
//!    `(this shard, nonce)` stored in the same transaction as the copy;
//! 3. once every target confirmed, PUBREC is released and the row marked
//!    done (message dropped); after that commit the targets forget their
//!    origin rows.
//!
//! Recovery (before any client is served) delivers each prepared message
//! to the targets without an origin row, then does step 3. So a crash at
//! any point neither loses a message PUBREC'd nor delivers one twice when
//! the publisher resends it [MQTT-4.3.3-8] [MQTT-4.3.3-10] (v5) /
//! [MQTT-4.3.3-2] (3.1.1).

use crate::conn_out::ConnOut;
use crate::connection::protocol_close;
use crate::mesh::{ConfirmReq, Fate, MeshItem, Routed};
use crate::session::SessionId;
use crate::shard::Shard;
use crate::stats::CloseReason;
use crate::store::{self, MessageRef, Prepared, SessionKey, StoreError, Target, Ticket};
use ringmq_codec::{PacketId, ProtocolVersion, Publish, ReasonCode};
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

/// Acknowledgements waiting for other shards, remote copies held behind a
/// prepare commit, and answers this shard owes.
#[derive(Default)]
pub struct Confirms {
    /// token -> what waits on other shards' answers.
    waiting: crate::IntMap<u64, Waiting>,
    /// (shard, token, what this shard's sessions did with the copy) to
    /// answer once this shard's next commit is durable.
    owed: Vec<(usize, u64, Fate)>,
    paying: bool,
    /// Remote copies waiting for the commit of the prepared rows before them, in order.
    deferred: VecDeque<Deferred>,
    /// Sessions with copies in `deferred`: their later copies queue behind,
    /// so each publisher's messages reach every shard in order [MQTT-4.6.0-6].
    deferring: HashMap<SessionId, usize>,
    sending: bool,
    /// (shard, nonce) origin rows to forget once the done marks before them are durable.
    forget: Vec<(usize, u64)>,
    /// (node, nonce): the same for other nodes' origin keys (`cluster/origin.rs`).
    forget_nodes: Vec<(u64, u64)>,
    forgetting: bool,
}

/// A publish whose copies on other shards are not all confirmed.
struct Waiting {
    left: usize,
    /// The publisher's connection holding the acknowledgement (none at recovery).
    conn: Weak<ConnOut>,
    /// The prepared inbound QoS 2 row behind it.
    row: Option<Row>,
    refused: Option<ReasonCode>,
    /// The prepare commit itself failed: no copy left this shard.
    unprepared: bool,
    /// What the sessions did with the copies, on this shard and on every
    /// shard answered so far.
    fate: Fate,
    /// A QoS 2 publish without a prepared row: the session and packet id
    /// to forget if it is refused (v5 [MQTT-4.3.3-9]).
    qos2: Option<(SessionId, PacketId)>,
    /// Not a publish of this shard: another shard's copy that a stub here
    /// forwarded as acked copies (`cluster/copy_acks.rs`); the outcome goes
    /// to that shard's token.
    relay: Option<(usize, u64)>,
}

struct Row {
    sid: SessionId,
    key: SessionKey,
    id: PacketId,
    /// Every target shard (they all may hold an origin row).
    shards: SmallVec<[u16; 4]>,
    /// Every target node (they all may hold the origin key).
    nodes: SmallVec<[u64; 2]>,
}

/// Remote copies to send once `ticket` (the prepare commit) is durable.
struct Deferred {
    ticket: Ticket,
    sid: SessionId,
    token: Option<u64>,
    items: Vec<(usize, MeshItem)>,
}

/// A token for a publish whose copies on other shards must be confirmed
/// (unique across restarts: it doubles as the nonce of prepared rows).
pub(crate) fn new_token(shard: &Shard) -> u64 {
    shard.store.allocate_nonce()
}

/// The publish behind `token` went to `remote` shards; `conn` holds its
/// ack; `fate`: what this shard's sessions did with their copies. `qos2`:
/// the packet id of a QoS 2 publish (forgotten if it ends refused).
pub(crate) fn await_confirms(
    shard: &Shard,
    token: u64,
    remote: usize,
    conn: &Rc<ConnOut>,
    fate: Fate,
    qos2: Option<(SessionId, PacketId)>,
) {
    shard.confirms.borrow_mut().waiting.insert(
        token,
        Waiting {
            left: remote,
            conn: Rc::downgrade(conn),
            row: None,
            refused: None,
            unprepared: false,
            fate,
            qos2,
            relay: None,
        },
    );
}

/// Shard `from`'s copy under `req` was delivered here to a stub that
/// forwarded it as `sent` acked copies under the local token `local`
/// (`cluster/copy_acks.rs`): `from` is answered once this shard's commit and
/// every node's answer came (the first refusal wins, as for a publish).
pub(crate) fn relay(
    shard: &Rc<Shard>,
    local: u64,
    sent: usize,
    (from, req): (usize, ConfirmReq),
    fate: Fate,
) {
    if req.origin_row {
        // Same batch as the copies just delivered: one transaction.
        shard.store.put_origin(from as u16, req.token).detach();
    }
    shard.confirms.borrow_mut().waiting.insert(
        local,
        Waiting {
            left: sent + 1,
            conn: Weak::new(),
            row: None,
            refused: None,
            unprepared: false,
            fate,
            qos2: None,
            relay: Some((from, req.token)),
        },
    );
    let own = ConfirmReq {
        token: local,
        origin_row: false,
    };
    owe(shard, shard.id, own, Fate::default());
}

/// True when session `sid` has remote copies waiting for a prepare commit:
/// its next copies must queue behind them.
pub(crate) fn deferring(shard: &Shard, sid: SessionId) -> bool {
    let c = shard.confirms.borrow();
    !c.deferring.is_empty() && c.deferring.contains_key(&sid)
}

/// An inbound QoS 2 message with copies for other shards or nodes (`items`,
/// not yet sent): stores the prepared row, holds the PUBREC on `conn` until
/// every copy is confirmed (`left` answers: one per shard item, one per
/// node given an acked copy), and sends the copies once the row is durable.
/// `fate`: what this shard's sessions did with their copies.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    (key, id): (SessionKey, PacketId),
    (token, left): (u64, usize),
    p: &Publish,
    mut items: Vec<(usize, MeshItem)>,
    pubrec: ringmq_codec::Packet,
    fate: Fate,
) {
    let targets: Vec<Target> = items
        .iter()
        .filter_map(|(to, item)| {
            match item {
                MeshItem::SharedPublish(_, g) => Some(Some(g.clone())),
                MeshItem::Cluster(_) => None,
                _ => Some(None),
            }
            .map(|group| Target {
                shard: *to as u16,
                group,
            })
        })
        .collect();
    // Other nodes are targets too: their copies carry (this shard, token).
    let node_targets = crate::cluster::origin::hold(shard, &mut items, token);
    let no_ids: [u32; 0] = [];
    let m = MessageRef {
        publish: p,
        qos: p.qos,
        retain: p.retain,
        subscription_ids: &no_ids,
        received_at_ms: store::unix_ms(),
    };
    // [MQTT-4.3.3-8] ([MQTT-4.3.3-2] (3.1.1)) PUBREC only once ownership is
    // taken: the packet id (with the message) is durable before any copy
    // leaves this shard, and so before PUBREC.
    let ticket =
        shard
            .store
            .prepare_inbound_qos2_nodes(key, id, token, (&targets, &node_targets), m);
    let mut shards: SmallVec<[u16; 4]> = targets.iter().map(|t| t.shard).collect();
    shards.sort_unstable();
    shards.dedup();
    let row = Row {
        sid,
        key,
        id,
        shards,
        nodes: node_ids(&node_targets),
    };
    shard.confirms.borrow_mut().waiting.insert(
        token,
        Waiting {
            left,
            conn: Rc::downgrade(conn),
            row: Some(row),
            refused: None,
            unprepared: false,
            fate,
            qos2: None,
            relay: None,
        },
    );
    conn.ack(pubrec, Some(token));
    defer(shard, ticket, sid, Some(token), items);
}

fn node_ids(targets: &[store::NodeTarget]) -> SmallVec<[u64; 2]> {
    let mut n: SmallVec<[u64; 2]> = targets.iter().map(|t| t.node).collect();
    n.sort_unstable();
    n.dedup();
    n
}

/// Queues remote copies of session `sid` to leave once `ticket` is durable
/// (a ready ticket: behind the session's earlier deferred copies only).
pub(crate) fn defer(
    shard: &Rc<Shard>,
    ticket: Ticket,
    sid: SessionId,
    token: Option<u64>,
    items: Vec<(usize, MeshItem)>,
) {
    let start = {
        let mut c = shard.confirms.borrow_mut();
        *c.deferring.entry(sid).or_default() += 1;
        c.deferred.push_back(Deferred {
            ticket,
            sid,
            token,
            items,
        });
        !std::mem::replace(&mut c.sending, true)
    };
    if start {
        glommio::spawn_local(send_deferred(shard.clone())).detach();
    }
}

/// Sends `item` to shard `to` behind every copy this shard still holds for
/// a prepare commit (at once when it holds none): a session move's cut
/// token must not pass them (`cluster/stub.rs`).
pub(crate) fn behind_held(shard: &Rc<Shard>, to: usize, item: MeshItem) {
    let holding = shard.confirms.borrow().sending;
    if holding {
        // Not a session's: no publish queues behind it.
        defer(
            shard,
            Ticket::ready(),
            SessionId::MAX,
            None,
            vec![(to, item)],
        );
    } else {
        send_item(shard, to, item);
    }
}

/// A test fault (`RINGMQ_TEST_HOLD_MS`): held copies leave that much later
/// after their prepare commit, as if it were slow. Never set in production.
fn test_hold() -> Option<std::time::Duration> {
    static HOLD: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *HOLD.get_or_init(|| {
        let ms: u64 = std::env::var("RINGMQ_TEST_HOLD_MS").ok()?.parse().ok()?;
        Some(std::time::Duration::from_millis(ms))
    })
}

/// Sends deferred copies in order, each batch once its prepare commit is durable.
async fn send_deferred(shard: Rc<Shard>) {
    loop {
        let next = shard.confirms.borrow_mut().deferred.pop_front();
        let Some(d) = next else {
            shard.confirms.borrow_mut().sending = false;
            return;
        };
        let result = d.ticket.await;
        if let Some(hold) = test_hold() {
            // Test fault: a slow prepare commit (the held copies wait longer).
            glommio::timer::sleep(hold).await;
        }
        {
            let mut c = shard.confirms.borrow_mut();
            if let Some(n) = c.deferring.get_mut(&d.sid) {
                *n -= 1;
                if *n == 0 {
                    c.deferring.remove(&d.sid);
                }
            }
        }
        match result {
            Ok(()) => {
                if crate::cluster::origin::has_node_copies(&d.items) {
                    crate::cluster::origin::crash_point("node-copy-prepared");
                }
                if crate::cluster::origin::stub_copies_only(&d.items) {
                    crate::cluster::origin::crash_point("stub-copy-prepared");
                }
                for (to, item) in d.items {
                    send_item(&shard, to, item);
                }
            }
            // The prepare failed: nothing left this shard; the publisher is refused.
            Err(e) => {
                if let Some(t) = d.token {
                    let code = refusal(&e);
                    if let Some(w) = shard.confirms.borrow_mut().waiting.get_mut(&t) {
                        w.left = 1;
                        w.unprepared = true;
                    }
                    answer(&shard, t, Some(code), Fate::default());
                }
            }
        }
    }
}

/// A held copy leaves: over the mesh, or (a node copy held on shard 0,
/// which runs the links) to the cluster wing here.
fn send_item(shard: &Rc<Shard>, to: usize, item: MeshItem) {
    match item {
        MeshItem::Cluster(c) if to == shard.id => crate::cluster::on_item(shard, to, *c),
        item => shard.mesh.push(to, item),
    }
}

pub(crate) fn refusal(e: &StoreError) -> ReasonCode {
    if e.is_no_space() {
        ReasonCode::QuotaExceeded
    } else {
        ReasonCode::UnspecifiedError
    }
}

/// A copy of the publish behind `token` is durable (a local deferred one:
/// its fate was counted when it was routed).
pub(crate) fn confirmed(shard: &Rc<Shard>, token: u64) {
    answer(shard, token, None, Fate::default());
}

/// Another shard's copy of the publish behind `token` is durable, and
/// `fate` says what that shard's sessions did with it.
pub(crate) fn confirmed_with(shard: &Rc<Shard>, token: u64, fate: Fate) {
    answer(shard, token, None, fate);
}

/// Another shard's commit of the copy behind `token` failed.
pub(crate) fn refused(shard: &Rc<Shard>, token: u64, code: ReasonCode) {
    answer(shard, token, Some(code), Fate::default());
}

/// One answer for `token`; the last one settles the publish.
fn answer(shard: &Rc<Shard>, token: u64, refused: Option<ReasonCode>, fate: Fate) {
    let w = {
        let mut c = shard.confirms.borrow_mut();
        let Some(w) = c.waiting.get_mut(&token) else {
            drop(c);
            // Not a publish of this shard's clients: a copy from another node.
            crate::cluster::copy_answered(shard, token, refused);
            return;
        };
        w.left = w.left.saturating_sub(1);
        w.fate = w.fate.merge(fate);
        if refused.is_some() && w.refused != Some(ReasonCode::QuotaExceeded) {
            w.refused = refused;
        }
        if w.left > 0 {
            return;
        }
        c.waiting.remove(&token)
    };
    let Some(w) = w else { return };
    if let Some((to, t)) = w.relay {
        let item = match w.refused {
            None => MeshItem::Confirm(t, w.fate),
            Some(code) => MeshItem::Refused(t, code),
        };
        return shard.mesh.push(to, item);
    }
    match w.refused {
        // Every copy on every shard was dropped (queues or byte budgets
        // full): v5 says so, 0x97 Quota exceeded (v5 3.4.2.1, 3.5.2.1).
        // 3.1.1 has no such answer: acknowledged as usual (the drops are
        // counted and warned per session).
        None if w.fate.all_dropped() && v5_publisher(&w) => {
            shard.stats.refuse(ReasonCode::QuotaExceeded);
            settle_refused(shard, token, w, ReasonCode::QuotaExceeded, false);
        }
        None => settle(shard, token, w),
        Some(code) => settle_refused(shard, token, w, code, true),
    }
}

/// The publisher is still connected, over MQTT 5.
fn v5_publisher(w: &Waiting) -> bool {
    w.conn
        .upgrade()
        .is_some_and(|c| !c.closing() && c.version == ProtocolVersion::V5)
}

/// Every copy is durable: the prepared row becomes done, PUBREC leaves.
fn settle(shard: &Rc<Shard>, token: u64, w: Waiting) {
    if let Some(r) = &w.row {
        if holds_id(shard, r) {
            // Done: the message is dropped from the row, the id stays until PUBREL.
            shard.store.put_inbound_qos2(r.key, r.id, None).detach();
        }
        forget_after_commit(shard, token, r);
    }
    if let Some(conn) = w.conn.upgrade() {
        // The ack follows the done mark's commit (and everything before it).
        crate::persist::gate(shard, &conn);
        conn.release_ack(token);
    }
}

/// A copy could not be stored. v5: PUBACK/PUBREC carries `code` and, for
/// QoS 2, the flow ends there, so the id is forgotten ([MQTT-4.3.3-9]: after
/// a PUBREC of 0x80 or more, that id on a PUBLISH is a new message). 3.1.1 has no negative
/// acknowledgement: the connection closes; a QoS 2 id is kept, so the resend
/// is answered from it and never routed twice (the prepared row stays for
/// recovery to complete after a restart).
/// When the prepare commit itself failed, nothing left this shard: the id is
/// forgotten in every case (a resend is routed as new). `warn`: a store
/// failed (drops by full queues are warned per session where they happen).
fn settle_refused(shard: &Rc<Shard>, token: u64, w: Waiting, code: ReasonCode, warn: bool) {
    if warn {
        tracing::warn!(
            shard = shard.id,
            ?code,
            "a copy was not stored: publish refused"
        );
    }
    let conn = w.conn.upgrade().filter(|c| !c.closing());
    let v5 = conn
        .as_ref()
        .is_some_and(|c| c.version == ProtocolVersion::V5);
    if let (Some((sid, id)), true) = (w.qos2, v5) {
        // [MQTT-4.3.3-9] after a PUBREC of 0x80 or more, the id is free
        // again (the connection is alive: the session is the same one).
        if let Some(s) = shard.sessions.borrow_mut().get_mut(sid as usize) {
            s.inbound_qos2.retain(|i| *i != id.get());
            if let Some(k) = s.key {
                // Stored with the local copies when only other nodes were waited for.
                shard.store.delete_inbound_qos2(k, id).detach();
            }
        }
    }
    if let Some(r) = w.row.as_ref().filter(|_| v5 || w.unprepared) {
        if holds_id(shard, r) {
            if let Some(s) = shard.sessions.borrow_mut().get_mut(r.sid as usize) {
                s.inbound_qos2.retain(|i| *i != r.id.get());
            }
            shard.store.delete_inbound_qos2(r.key, r.id).detach();
        }
        forget_after_commit(shard, token, r);
    }
    match conn {
        Some(conn) if v5 => conn.refuse_ack(token, code),
        // Another node did not answer for its copy (`cluster/acks.rs`).
        Some(conn) if code == ReasonCode::ImplementationSpecificError => {
            protocol_close(&conn, code, CloseReason::ClusterUnavailable)
        }
        Some(conn) => protocol_close(&conn, code, CloseReason::StorageError),
        None => {}
    }
}

/// The publisher's session still waits for PUBREL on this id (not cleared since).
fn holds_id(shard: &Shard, r: &Row) -> bool {
    shard
        .sessions
        .borrow()
        .get(r.sid as usize)
        .is_some_and(|s| s.key == Some(r.key) && s.inbound_qos2.contains(&r.id.get()))
}

/// Tells the target shards and nodes of `r` to forget their origin rows
/// for `nonce` once everything written so far (the done mark) is durable.
fn forget_after_commit(shard: &Rc<Shard>, nonce: u64, r: &Row) {
    let mut c = shard.confirms.borrow_mut();
    c.forget
        .extend(r.shards.iter().map(|&s| (s as usize, nonce)));
    c.forget_nodes.extend(r.nodes.iter().map(|&n| (n, nonce)));
    if !std::mem::replace(&mut c.forgetting, true) {
        drop(c);
        glommio::spawn_local(send_forgets(shard.clone())).detach();
    }
}

async fn send_forgets(shard: Rc<Shard>) {
    loop {
        futures_lite::future::yield_now().await;
        let (list, nodes) = {
            let mut c = shard.confirms.borrow_mut();
            (
                std::mem::take(&mut c.forget),
                std::mem::take(&mut c.forget_nodes),
            )
        };
        if list.is_empty() && nodes.is_empty() {
            shard.confirms.borrow_mut().forgetting = false;
            return;
        }
        // A failed done mark keeps the row prepared: its origin rows must stay.
        if shard.store.flush().await.is_ok() {
            for (to, nonce) in list {
                shard.mesh.push(to, MeshItem::Forget(nonce));
            }
            crate::cluster::origin::forget(&shard, nodes);
        }
    }
}

/// This shard holds a copy of a publish from shard `from`; answer once
/// durable, saying what its sessions did with it (`fate`).
pub(crate) fn owe(shard: &Rc<Shard>, from: usize, req: ConfirmReq, fate: Fate) {
    if req.origin_row {
        // Same batch as the copies just delivered: one transaction.
        shard.store.put_origin(from as u16, req.token).detach();
    }
    let start = {
        let mut c = shard.confirms.borrow_mut();
        c.owed.push((from, req.token, fate));
        !std::mem::replace(&mut c.paying, true)
    };
    if start {
        glommio::spawn_local(pay(shard.clone())).detach();
    }
}

/// Sends the owed answers after the commit covering them: `Confirm`, or
/// `Refused` when it failed, so no publisher waits for ever.
async fn pay(shard: Rc<Shard>) {
    loop {
        // Let the rest of this tick's mesh batch add its rows first.
        futures_lite::future::yield_now().await;
        let owed = std::mem::take(&mut shard.confirms.borrow_mut().owed);
        if owed.is_empty() {
            shard.confirms.borrow_mut().paying = false;
            return;
        }
        let result = shard.store.flush().await;
        for (to, token, fate) in owed {
            let refused = result.as_ref().err().map(refusal);
            if to == shard.id {
                // Owed here (`relay`, a node's copy on shard 0: `cluster/copy_acks.rs`).
                answer(&shard, token, refused, fate);
                continue;
            }
            let item = match refused {
                None => MeshItem::Confirm(token, fate),
                Some(code) => MeshItem::Refused(token, code),
            };
            shard.mesh.push(to, item);
        }
    }
}

/// Shard `from` marked its message `nonce` done.
pub(crate) fn forget(shard: &Shard, from: usize, nonce: u64) {
    shard.store.forget_origin(from as u16, nonce).detach();
}

/// A prepared row found at startup, with its session.
pub(crate) struct Resume {
    pub sid: SessionId,
    pub key: SessionKey,
    pub id: PacketId,
    pub prepared: Prepared,
    pub message: store::StoredMessage,
}

/// Startup, after every session is restored and before any client is
/// served: delivers each prepared message to the targets without an origin
/// row (in nonce order, i.e. as first routed), then settles it as above.
pub(crate) fn resume(shard: &Rc<Shard>, mut list: Vec<Resume>) {
    if list.is_empty() {
        return;
    }
    let undelivered: usize = list
        .iter()
        .map(|r| {
            let p = &r.prepared;
            p.targets
                .iter()
                .filter(|t| !p.delivered.contains(&t.shard))
                .count()
                + p.nodes.len()
        })
        .sum();
    tracing::info!(
        shard = shard.id,
        prepared = list.len(),
        undelivered,
        "store: completing inbound QoS 2 messages prepared before the restart"
    );
    list.sort_by_key(|r| r.prepared.nonce);
    for r in list {
        let nonce = r.prepared.nonce;
        let mut shards: SmallVec<[u16; 4]> = r.prepared.targets.iter().map(|t| t.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        let row = Row {
            sid: r.sid,
            key: r.key,
            id: r.id,
            shards,
            nodes: node_ids(&r.prepared.nodes),
        };
        let publish = recovered_publish(r.message);
        let missing: Vec<&Target> = r
            .prepared
            .targets
            .iter()
            .filter(|t| !r.prepared.delivered.contains(&t.shard))
            .collect();
        let mut w = Waiting {
            left: 0,
            conn: Weak::new(),
            row: Some(row),
            refused: None,
            unprepared: false,
            fate: Fate::default(),
            qos2: None,
            relay: None,
        };
        // Other nodes: each is sent it again (it skips a copy it holds: `cluster/origin.rs`).
        let nodes = &r.prepared.nodes;
        let Some(publish) = publish.filter(|_| !missing.is_empty() || !nodes.is_empty()) else {
            // Every copy is durable (or the message expired [MQTT-3.3.2-5]).
            settle(shard, nonce, w);
            continue;
        };
        w.left = missing.len() + nodes.len();
        shard.confirms.borrow_mut().waiting.insert(nonce, w);
        let origin = crate::cluster::origin::Origin {
            shard: shard.id as u16,
            nonce,
        };
        for t in nodes {
            crate::cluster::origin::resend(shard, t, publish.clone(), nonce, origin);
        }
        let confirm = Some(ConfirmReq {
            token: nonce,
            origin_row: true,
        });
        for t in missing {
            let routed = Box::new(Routed {
                publish: publish.clone(),
                origin: None,
                confirm,
                peer: None,
                source: None,
            });
            let item = match &t.group {
                Some(g) => MeshItem::SharedPublish(routed, g.clone()),
                None => MeshItem::Publish(routed),
            };
            shard.mesh.push(t.shard as usize, item);
        }
    }
}

/// The stored message with its expiry reduced by the time already spent
/// [MQTT-3.3.2-6]; `None` once expired.
fn recovered_publish(m: store::StoredMessage) -> Option<Publish> {
    let mut p = m.publish;
    if let Some(total) = p.properties.message_expiry_interval {
        let gone = store::unix_ms().saturating_sub(m.received_at_ms) / 1000;
        let left = u64::from(total).checked_sub(gone).filter(|l| *l > 0)?;
        p.properties.message_expiry_interval = Some(left as u32);
    }
    Some(p)
}
