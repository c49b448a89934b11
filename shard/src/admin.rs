//! Answers to operator queries about what this shard owns.

use crate::control::{ClientInfo, Query, Reply, RetainedInfo, SubscriptionInfo};
use crate::session::Session;
use crate::shard::Shard;
use crate::stats::{CloseReason, DropReason};
use std::rc::Rc;

fn info(shard: &Shard, s: &Session) -> ClientInfo {
    ClientInfo {
        client_id: s.client_id.as_str().to_string(),
        shard: shard.id,
        connected: s.conn.is_some(),
        protocol: s.version as u8,
        peer: s
            .conn
            .as_ref()
            .and_then(|c| c.peer())
            .map(|p| p.to_string()),
        keep_alive: s.conn.as_ref().map_or(0, |c| c.keep_alive),
        clean_start: s.conn.as_ref().is_some_and(|c| c.clean_start),
        session_expiry: s.expiry,
        subscriptions: s.subs.len(),
        inflight: s.inflight.len(),
        queued: s.queue.len(),
        held_bytes: s.held_bytes as u64,
        dropped: s.drops().map_or_else(Vec::new, |d| {
            DropReason::ALL
                .iter()
                .map(|&r| (r.as_str().to_string(), d.by_reason[r as usize]))
                .filter(|(_, n)| *n > 0)
                .collect()
        }),
    }
}

/// Answers one query.
pub(crate) fn answer(shard: &Rc<Shard>, q: Query) -> Reply {
    let id = shard.id;
    match q {
        Query::Clients { pattern } => {
            let sessions = shard.sessions.borrow();
            let list = sessions
                .iter()
                .filter(|(_, s)| s.conn.is_some())
                .filter(|(_, s)| {
                    pattern
                        .as_deref()
                        .is_none_or(|p| s.client_id.as_str().contains(p))
                })
                .map(|(_, s)| info(shard, s))
                .collect();
            Reply::Clients(id, list)
        }
        Query::ClientShow { client_id } => {
            let sessions = shard.sessions.borrow();
            let list = sessions
                .iter()
                .filter(|(_, s)| s.client_id.as_str() == client_id && !s.is_gone())
                .map(|(_, s)| info(shard, s))
                .collect();
            Reply::Clients(id, list)
        }
        Query::Sessions => {
            let sessions = shard.sessions.borrow();
            let live = sessions.iter().filter(|(_, s)| !s.is_gone());
            Reply::Clients(id, live.map(|(_, s)| info(shard, s)).collect())
        }
        Query::Kick { client_id } => {
            let sessions = shard.sessions.borrow();
            let conn = sessions
                .iter()
                .find(|(_, s)| s.client_id.as_str() == client_id)
                .and_then(|(_, s)| s.conn.clone());
            let found = conn.is_some();
            if let Some(c) = conn {
                crate::connection::disconnect_client(&c, CloseReason::AdministrativeAction);
            }
            Reply::Done(id, found)
        }
        Query::Subscriptions { topic } => {
            let sessions = shard.sessions.borrow();
            let mut out = Vec::new();
            for (_, s) in sessions.iter() {
                for (f, e) in &s.subs {
                    let inner = f.shared().map_or(f.as_str(), |(_, inner)| inner);
                    if topic
                        .as_deref()
                        .is_some_and(|t| !crate::topic::matches(inner, t))
                    {
                        continue;
                    }
                    out.push(SubscriptionInfo {
                        client_id: s.client_id.as_str().to_string(),
                        filter: f.as_str().to_string(),
                        qos: e.options.qos as u8,
                        no_local: e.options.no_local,
                        retain_as_published: e.options.retain_as_published,
                        retain_handling: e.options.retain_handling as u8,
                        subscription_id: e.subscription_id,
                    });
                }
            }
            Reply::Subscriptions(id, out)
        }
        Query::RetainedList { filter, limit } => {
            let mut out = Vec::new();
            if let Ok(f) = ringmq_codec::TopicFilter::try_from(filter.as_str()) {
                let store = shard.retained.borrow();
                let mut cursor = store.replay(&f);
                let mut batch = Vec::new();
                cursor.next_batch(&store, limit, &mut batch);
                out = batch
                    .iter()
                    .map(|m| RetainedInfo {
                        topic: m.topic.as_str().to_string(),
                        qos: m.publish.qos as u8,
                        payload_len: m.publish.payload.len(),
                    })
                    .collect();
            }
            Reply::Retained(id, out)
        }
        Query::RetainedDelete { topic } => {
            let found = shard.retained.borrow_mut().remove(&topic).is_some();
            shard
                .stats
                .retained
                .set(shard.retained.borrow().len() as u64);
            Reply::Done(id, found)
        }
    }
}
