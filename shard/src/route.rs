//! Routing a publish: retained store, the shards with subscribers (one mesh
//! item each), shared-subscription groups, and delivery to this shard's own
//! sessions with each (version, QoS) frame encoded at most once.

use crate::connect::will_publish;
use crate::mesh::{ConfirmReq, MeshItem, Routed};
use crate::retained::RetainedMessage;
use crate::router::{PublishInfo, ShardSet, SharedTarget};
use crate::session::{FrameCache, SessionId};
use crate::shard::Shard;
use crate::stats::AclAction;
use ringmq_codec::{LastWill, Publish, QoS, TopicFilter};
use std::rc::Rc;
use std::time::Instant;

/// Routes a publish received on this shard (from a client, a will, `$SYS`).
/// `publisher` is the local session that sent it, for No Local. With
/// `confirm`, every shard given a copy confirms it once durable; returns how
/// many shards were given one.
pub(crate) fn route(
    shard: &Rc<Shard>,
    p: Publish,
    publisher: Option<SessionId>,
    confirm: Option<ConfirmReq>,
) -> usize {
    route_to(shard, p, publisher, confirm, None)
}

/// [`route`], with the copies for other shards appended to `held` (to send
/// later, in order) instead of the mesh outbox when it is given. Local
/// deliveries happen now either way. With `confirm`, the count includes the
/// other nodes given a copy (each answers once its copy is durable there).
pub(crate) fn route_to(
    shard: &Rc<Shard>,
    p: Publish,
    publisher: Option<SessionId>,
    confirm: Option<ConfirmReq>,
    mut held: Option<&mut Vec<(usize, MeshItem)>>,
) -> usize {
    // Where it entered the cluster: every copy of it, on any node, says so.
    let origin = crate::cluster::next_origin(shard);
    // Other nodes first: their copy leaves with this tick's link batch (or,
    // with `held`, joins the held copies: after the prepare commit, in order).
    let (elsewhere, nodes) = crate::cluster::forward(
        shard,
        &p,
        confirm.map(|c| c.token),
        held.as_deref_mut(),
        origin,
    );
    nodes
        + route_here(
            shard,
            p,
            publisher,
            (confirm, None, origin),
            held,
            Groups::Except(&elsewhere),
        )
}

/// A publish another node forwarded (its publisher's node matched it against
/// this node's routes): routed on this node only, never onward; share groups
/// are served by the node the publisher's node picked for each. An acked copy
/// (`peer`) asks every shard given a copy to confirm under `confirm`, and is
/// delivered only where it was not before; returns how many other shards got it.
pub(crate) fn route_from_peer(
    shard: &Rc<Shard>,
    p: Publish,
    confirm: Option<ConfirmReq>,
    peer: Option<crate::cluster::PeerStamp>,
    origin: Option<crate::cluster::Origin>,
) -> usize {
    route_here(shard, p, None, (confirm, peer, origin), None, Groups::None)
}

/// A publish another node picked this node for, for one share group only.
pub(crate) fn route_shared_from_peer(
    shard: &Rc<Shard>,
    p: Publish,
    group: &TopicFilter,
    confirm: Option<ConfirmReq>,
    peer: Option<crate::cluster::PeerStamp>,
) -> usize {
    route_here(
        shard,
        p,
        None,
        (confirm, peer, None),
        None,
        Groups::Only(group),
    )
}

/// Which share groups a routing on this node serves.
#[derive(Clone, Copy)]
enum Groups<'a> {
    /// Every matching group but those the cluster picked another node for.
    Except(&'a [TopicFilter]),
    /// None (a plain copy from another node).
    None,
    /// This one only, and no plain subscriber (a group copy from another node).
    Only(&'a TopicFilter),
}

/// Routing on this node: retained replicas, the shards with subscribers, share groups.
fn route_here(
    shard: &Rc<Shard>,
    p: Publish,
    publisher: Option<SessionId>,
    (confirm, peer, source): (
        Option<ConfirmReq>,
        Option<crate::cluster::PeerStamp>,
        Option<crate::cluster::Origin>,
    ),
    mut held: Option<&mut Vec<(usize, MeshItem)>>,
    groups: Groups<'_>,
) -> usize {
    let plain = !matches!(groups, Groups::Only(_));
    // A resent copy this shard delivered before goes to the other shards
    // (each judges its own) but not to this shard's sessions again.
    let here = peer.is_none_or(|s| crate::cluster::fresh(shard, s));
    let ops = shard.store.pending_ops();
    // A prepared QoS 2 message (`confirm::prepare`): a stub's acked copies
    // of it are held with the other copies, as targets of the prepared row.
    let keyed = held.is_some() && confirm.is_some_and(|c| c.origin_row);
    let mut send = |to: usize, item: MeshItem| match held.as_deref_mut() {
        Some(h) => h.push((to, item)),
        None => shard.mesh.push(to, item),
    };
    if p.retain && plain {
        // Own copy: a slice of the read buffer would pin all of it while retained.
        let kept = crate::retained::detach(&p);
        persist_retained(shard, &kept);
        // [MQTT-3.3.1-5] store (or, empty, delete [MQTT-3.3.1-10/11]) on every shard.
        shard
            .mesh
            .broadcast(|| MeshItem::Retain(Box::new(kept.clone())));
        store_retained(shard, kept);
    }
    let me = shard.id as u16;
    let mut shards = ShardSet::new();
    let mut shared: Vec<SharedTarget> = Vec::new();
    {
        let mut router = shard.router.borrow_mut();
        if plain && shard.shards == 1 {
            // One shard: the only question is asked by `deliver_local` itself.
            shards.insert(me);
        } else if plain {
            router.match_shards(p.topic.as_str(), &mut shards);
        }
        if !matches!(groups, Groups::None) {
            router.match_shared(p.topic.as_str(), &mut shared);
        }
    }
    if plain && shards.is_empty() && here && matches!(groups, Groups::None) {
        // A copy from another node routed here with nothing to match it.
        crate::cluster::unrouted::copy(shard, &p, peer, source);
    }
    let mut remote = 0;
    match groups {
        Groups::Except(elsewhere) if !elsewhere.is_empty() => {
            shared.retain(|t| !elsewhere.contains(&t.filter));
        }
        Groups::Only(g) => {
            shared.retain(|t| &t.filter == g);
            // No member here: the one that left mid-move takes it (`cluster/share_move.rs`).
            if shared.is_empty() && here {
                // Under a confirm token, an acked copy: its answer is one more to wait for.
                if let Some(c) = confirm {
                    crate::cluster::copy_acks::begin_shared(shard, c.token);
                }
                if !crate::cluster::share_move::offer(shard, g, &p)
                    && !crate::cluster::share_move::covers(shard, g)
                {
                    // No member and no moving one (its stub's window over): counted like
                    // a plain copy that matches nothing.
                    crate::cluster::unrouted::copy(shard, &p, peer, source);
                }
                remote += crate::cluster::copy_acks::end(shard);
            }
        }
        _ => {}
    }
    for s in shards.iter().filter(|&s| s != me) {
        remote += 1;
        send(
            s as usize,
            MeshItem::Publish(Box::new(Routed {
                publish: p.clone(),
                origin: publisher.map(|sid| (me, sid)),
                confirm,
                peer,
                source,
            })),
        );
    }
    for t in shared {
        if t.shard == me {
            if here {
                deliver_shared_local(shard, &t.filter, &p);
            }
        } else {
            remote += 1;
            send(
                t.shard as usize,
                MeshItem::SharedPublish(
                    Box::new(Routed {
                        publish: p.clone(),
                        origin: None,
                        confirm,
                        peer,
                        source: None,
                    }),
                    t.filter,
                ),
            );
        }
    }
    if here && shards.contains(me) {
        // A stub's acked copies (`cluster/copy_acks.rs`) are answers to wait for too.
        if let Some(c) = confirm {
            crate::cluster::copy_acks::begin(shard, c.token);
        }
        let hit = deliver_local(shard, &p, publisher, source);
        if !hit && shard.shards == 1 && matches!(groups, Groups::None) {
            crate::cluster::unrouted::copy(shard, &p, peer, source);
        }
        remote += if keyed {
            crate::cluster::copy_acks::end_keyed(shard, &mut send)
        } else {
            crate::cluster::copy_acks::end(shard)
        };
    }
    if let (true, Some(s)) = (here, peer) {
        crate::cluster::delivered(shard, s, ops);
    }
    remote
}

/// A retained message another node holds (sent when their link came up):
/// stored durably here and replicated on every shard, delivered to nobody.
pub(crate) fn retain_only(shard: &Rc<Shard>, p: Publish) {
    let kept = crate::retained::detach(&p);
    persist_retained(shard, &kept);
    shard
        .mesh
        .broadcast(|| MeshItem::Retain(Box::new(kept.clone())));
    store_retained(shard, kept);
}

/// The publisher's shard stores the retained message durably (other shards
/// only keep their replica in memory).
fn persist_retained(shard: &Shard, p: &Publish) {
    if !shard.store.is_persistent() || p.topic.as_str().starts_with('$') {
        return;
    }
    let ids: [u32; 0] = [];
    let m = (!p.payload.is_empty()).then(|| crate::store::MessageRef {
        publish: p,
        qos: p.qos,
        retain: true,
        subscription_ids: &ids,
        received_at_ms: crate::store::unix_ms(),
    });
    shard.store.set_retained(&p.topic, m).detach();
}

/// Delivers to this shard's sessions with non-shared subscriptions matching the topic.
/// `origin`: where it entered the cluster (a session moving between nodes
/// knows a copy that reaches it by two paths by it: `cluster/merge.rs`).
/// False when nothing here matched.
pub(crate) fn deliver_local(
    shard: &Shard,
    p: &Publish,
    publisher: Option<SessionId>,
    origin: Option<crate::cluster::Origin>,
) -> bool {
    let mut scratch = shard.scratch.borrow_mut();
    let router = shard.router.borrow();
    let info = PublishInfo {
        publisher,
        retain: p.retain,
    };
    let matches = router.match_local_with(p.topic.as_str(), info, &mut scratch);
    if matches.is_empty() {
        return false;
    }
    crate::cluster::handled(shard, origin);
    let moving = crate::cluster::moving(shard);
    let mut sessions = shard.sessions.borrow_mut();
    let mut frames = FrameCache::default();
    let mut shared_msg = None;
    // Only QoS 1/2 deliveries keep the arrival time (message expiry); a QoS 0
    // publish is delivered at QoS 0 to everyone and never reads the clock.
    let now = if p.qos == QoS::AtMostOnce {
        shard.started
    } else {
        shard.clock.now()
    };
    for m in matches {
        let Some(s) = sessions.get_mut(m.session as usize) else {
            continue;
        };
        if moving && s.is_gone() {
            // Moved to another node, still forwarded there until its routes settle.
            crate::cluster::stub::offer(shard, m.session, p, origin);
            continue;
        }
        if crate::authz::must_check(shard, m.acl_check)
            && !crate::authz::may_receive(shard, s, p.topic.as_str(), AclAction::Deliver)
        {
            continue;
        }
        // [MQTT-3.8.4-8] the lower of the granted and the published QoS.
        let qos = p.qos.min(m.qos);
        let retain = m.retain_as_published && p.retain;
        if moving
            && crate::cluster::merge::hold(
                shard,
                s,
                m.session,
                p,
                qos,
                retain,
                &m.subscription_ids,
                origin,
            )
        {
            continue; // moved here: after the old node's copies (`merge.rs`)
        }
        let version = s.conn.as_ref().map_or(s.version, |c| c.version);
        let frame = frames.get(p, version, qos);
        // [MQTT-3.3.1-12/13] Retain As Published; 3.1.1 clears it on live delivery [MQTT-3.3.1-9].
        s.deliver(
            shard,
            p,
            &mut shared_msg,
            frame,
            retain,
            &m.subscription_ids,
            now,
        );
    }
    true
}

/// Delivers to the next local member of a shared subscription group.
pub(crate) fn deliver_shared_local(shard: &Shard, filter: &TopicFilter, p: &Publish) {
    let Some(sub) = shard.router.borrow_mut().pick_shared_local(filter) else {
        return;
    };
    let mut sessions = shard.sessions.borrow_mut();
    let Some(s) = sessions.get_mut(sub.session as usize) else {
        return;
    };
    if crate::authz::must_check(shard, sub.acl_check)
        && !crate::authz::may_receive(shard, s, p.topic.as_str(), AclAction::Deliver)
    {
        return;
    }
    let qos = p.qos.min(sub.options.qos);
    let version = s.conn.as_ref().map_or(s.version, |c| c.version);
    let frame = ringmq_codec::PublishFrame::new(p, version, qos);
    let ids: &[u32] = match &sub.subscription_id {
        Some(id) => std::slice::from_ref(id),
        None => &[],
    };
    let retain = sub.options.retain_as_published && p.retain;
    let mut shared_msg = None;
    s.deliver(
        shard,
        p,
        &mut shared_msg,
        &frame,
        retain,
        ids,
        Instant::now(),
    );
}

/// Sets or (empty payload) deletes this shard's replica of a retained message.
pub(crate) fn store_retained(shard: &Shard, mut p: Publish) {
    crate::cluster::retained_changed(shard, &p.topic, p.payload.is_empty());
    let mut store = shard.retained.borrow_mut();
    if p.payload.is_empty() {
        // [MQTT-3.3.1-10] [MQTT-3.3.1-11]
        store.remove(p.topic.as_str());
    } else {
        p.packet_id = None;
        p.dup = false;
        store.set(
            p.topic.clone(),
            RetainedMessage {
                topic: p.topic.clone(),
                publish: p,
                stored_at: Instant::now(),
            },
        );
    }
    shard.stats.retained.set(store.len() as u64);
}

/// Publishes a will [MQTT-3.1.2-8].
pub(crate) fn publish_will(shard: &Rc<Shard>, w: LastWill) {
    let p = will_publish(w);
    debug_assert!(p.qos <= QoS::ExactlyOnce);
    route(shard, p, None, None);
}
