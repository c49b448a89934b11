//! The channel mesh: the only door between shards.
//!
//! One bounded SPSC channel (glommio `shared_channel`) per ordered pair of
//! shards. Items produced during one scheduler tick are batched per target
//! shard and cross as one message: a publish crosses to each target shard
//! once, as shared `Bytes`, never once per subscriber.

use crate::notify::Notify;
use crate::router::ShardId;
use bytes::BytesMut;
use glommio::channels::shared_channel::ConnectedSender;
use ringmq_codec::{Connect, Publish, ReasonCode, TopicFilter};
use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::rc::Rc;

/// What crosses between shards: a batch of items from one tick.
pub enum ShardMsg {
    /// Items in the order they were produced.
    Batch(Vec<MeshItem>),
}

/// One item of a batch. The receiving shard knows the sender from the channel.
pub enum MeshItem {
    /// A publish to match against the receiver's own sessions.
    Publish(Box<Routed>),
    /// A publish for one shared-subscription group; the receiver picks the member.
    SharedPublish(Box<Routed>, TopicFilter),
    /// The sender has a first subscriber on this filter (for `$share/..`: one more member).
    SubAdd(TopicFilter),
    /// The sender lost its last subscriber on this filter (for `$share/..`: one member).
    SubRemove(TopicFilter),
    /// A retained message set or (empty payload) deleted; every shard keeps a replica.
    Retain(Box<Publish>),
    /// The copy of the publish behind this token is durable on the sender;
    /// with what the sender's sessions did with it (taken, all dropped, or
    /// no subscriber there), for the publisher's v5 0x97.
    Confirm(u64, Fate),
    /// The sender's commit of the copy behind this token failed (0x97 for a
    /// full store, 0x80 otherwise): the publisher gets a definite answer.
    Refused(u64, ReasonCode),
    /// The sender marked its prepared message with this nonce done: the
    /// receiver's origin row for it may go.
    Forget(u64),
    /// Reply with `BarrierAck` once every item before this one is applied.
    Barrier(u64),
    /// The sender applied everything up to the `Barrier` with this token.
    BarrierAck(u64),
    /// A connection whose CONNECT named a session this receiver owns.
    Handoff(Box<Handoff>),
    /// The cluster wing's traffic (node routes, publishes for the links, its barriers).
    Cluster(Box<crate::cluster::Item>),
}

/// A publish on its way to subscribers.
pub struct Routed {
    /// The message as received (topic resolved from any alias; no alias, no subscription ids).
    pub publish: Publish,
    /// The publisher's shard and session, for No Local [MQTT-3.8.3-3].
    pub origin: Option<(ShardId, u32)>,
    /// Durability `sync`: reply `Confirm(token)` once this copy is durable.
    pub confirm: Option<ConfirmReq>,
    /// An acked copy from another node: delivered only if this shard has
    /// not had it yet (a copy resent after a link break).
    pub peer: Option<crate::cluster::PeerStamp>,
    /// Where it entered the cluster (routed first on this node or another).
    pub source: Option<crate::cluster::Origin>,
}

/// What the receiver of a routed copy owes its sender (durability `sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmReq {
    /// Answered with `Confirm(token)` or `Refused(token, ..)`.
    pub token: u64,
    /// The sender holds a prepared row under nonce `token`: store the origin
    /// row `(sender, token)` in the same commit as the copies.
    pub origin_row: bool,
}

/// A connection moving to its home shard after CONNECT.
pub struct Handoff {
    /// The socket itself (the accepting shard no longer holds it).
    pub fd: OwnedFd,
    /// Its transport layers (TLS, WebSocket) state and all, its listener,
    /// the client address of a PROXY header.
    pub(crate) via: crate::net::connection::Via,
    /// The CONNECT already read.
    pub connect: Box<Connect>,
    /// Bytes read after the CONNECT.
    pub rest: BytesMut,
    /// The client id was assigned by the server (v5 CONNACK tells it).
    pub assigned: bool,
    /// Who the accepting shard authenticated the client as.
    pub(crate) auth: crate::auth_phase::Authenticated,
    /// The cluster ownership epoch its CONNECT won (0 without a cluster).
    pub epoch: u64,
    /// The session another node shipped for it (`cluster/handover.rs`).
    pub shipped: Option<crate::cluster::handover::Shipped>,
}

/// This shard's side of the mesh: per-peer outboxes flushed once per tick.
pub struct Mesh {
    this: usize,
    senders: Vec<Option<ConnectedSender<ShardMsg>>>,
    outbox: RefCell<Vec<Vec<MeshItem>>>,
    pending: Cell<bool>,
    wake: Notify,
}

impl Mesh {
    pub(crate) fn new(this: usize, senders: Vec<Option<ConnectedSender<ShardMsg>>>) -> Self {
        let n = senders.len();
        Mesh {
            this,
            senders,
            outbox: RefCell::new((0..n).map(|_| Vec::new()).collect()),
            pending: Cell::new(false),
            wake: Notify::default(),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Queues an item for shard `to`; it leaves at the end of this tick.
    pub fn push(&self, to: usize, item: MeshItem) {
        debug_assert_ne!(to, self.this);
        self.outbox.borrow_mut()[to].push(item);
        if !self.pending.replace(true) {
            self.wake.notify();
        }
    }

    /// Queues an item for every other shard, built per target.
    pub fn broadcast(&self, mut item: impl FnMut() -> MeshItem) {
        for to in (0..self.senders.len()).filter(|&t| t != self.this) {
            self.push(to, item());
        }
    }

    /// Closes every sender (at shutdown).
    pub(crate) fn close(&self) {
        for tx in self.senders.iter().flatten() {
            tx.close();
        }
    }

    /// The flusher: runs for the shard's life, sending each tick's batches.
    /// Returns how many items it sent (for stats) through `on_batch`.
    pub(crate) async fn run_flusher(self: Rc<Self>, on_batch: impl Fn(usize)) {
        loop {
            self.wake.wait().await;
            // Let the rest of this tick add to the batch.
            futures_lite::future::yield_now().await;
            self.pending.set(false);
            let batches: Vec<(usize, Vec<MeshItem>)> = {
                let mut ob = self.outbox.borrow_mut();
                ob.iter_mut()
                    .enumerate()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(i, v)| (i, std::mem::take(v)))
                    .collect()
            };
            for (to, items) in batches {
                let n = items.len();
                if let Some(tx) = &self.senders[to] {
                    if tx.send(ShardMsg::Batch(items)).await.is_ok() {
                        on_batch(n);
                    }
                }
            }
        }
    }
}

/// What the sessions of one or more shards did with one publish's QoS 1/2
/// copies; a shard's fate travels back with its confirmation (`Confirm`)
/// under durability `sync`, so the publisher's shard knows it for the
/// whole broker without a round trip of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fate(pub(crate) u8);

impl Fate {
    pub(crate) const HELD: u8 = 1;
    pub(crate) const DROPPED: u8 = 2;

    /// Both shards' copies together.
    #[must_use]
    pub fn merge(self, other: Fate) -> Fate {
        Fate(self.0 | other.0)
    }

    /// Copies were dropped and none was taken: the message could be queued
    /// for no subscriber at all (v5 0x97 Quota exceeded).
    pub fn all_dropped(self) -> bool {
        self.0 == Self::DROPPED
    }
}
