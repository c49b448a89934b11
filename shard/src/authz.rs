//! The ACL applied where MQTT needs it: identity at CONNECT, the will,
//! SUBSCRIBE (a class per subscription), PUBLISH, each delivery on a
//! subscription that needs a check, retained replay, and reloads.
//!
//! Without an ACL file every function here returns at its first branch.
//! With one, a subscription whose filter the client may wholly read costs
//! nothing per message (`LocalSub::acl_check` false); others ask the
//! session's rules per delivered topic, behind a one-topic cache.
//! Mosquitto 2.x decides reads at delivery too (`subs.c` checks
//! `MOSQ_ACL_READ` per message); it grants every SUBSCRIBE, where ringmq
//! refuses a filter no topic of which is readable.

use crate::access::acl::{Acl, SubClass};
use crate::access::session::SessionAcl;
use crate::router::LocalSub;
use crate::session::{Session, SessionId};
use crate::shard::Shard;
use crate::stats::AclAction;
use ringmq_codec::TopicFilter;
use std::rc::Rc;
use std::sync::Arc;

/// The filter the rules see: a shared subscription's inner filter.
fn plain(filter: &TopicFilter) -> &str {
    filter.shared().map_or(filter.as_str(), |(_, f)| f)
}

/// Sets the session's rules at CONNECT, for the user it authenticated as
/// (`Session::owner`), and classifies again the subscriptions it already
/// has (resumed session, perhaps another username than before). Drops a
/// will the client may not publish (Mosquitto 2.x: `will__read` refuses
/// it; here it is not stored).
pub(crate) fn connected(shard: &Shard, sid: SessionId) {
    let Some(acl) = shard.acl.borrow().clone() else {
        return;
    };
    let mut sessions = shard.sessions.borrow_mut();
    let s = &mut sessions[sid as usize];
    let username = s.owner.username().flatten();
    let mut sa = SessionAcl::new(&acl, shard.acl_gen.get(), username, s.client_id.as_str());
    if let Some(w) = &s.will {
        if !may_publish_topic(&acl, &mut sa, w.topic.as_str()) {
            shard.stats.acl_deny(AclAction::Will);
            tracing::debug!(client_id = %s.client_id.as_str(), topic = %w.topic.as_str(), "will refused by the ACL");
            s.will = None;
        }
    }
    s.acl = Some(Box::new(sa));
    reclassify(shard, s);
}

/// A session restored from the store, before its client reconnects: its
/// rules are built for the owner stored with it, so deliveries to it obey
/// the ACL as they did before the restart (neither refused wholesale nor
/// let through). A row without an owner (stored by an older version)
/// keeps every subscription checked and refused until the client is back:
/// returns false for such a session (the caller logs how many).
pub(crate) fn restored(shard: &Shard, sid: SessionId) -> bool {
    let Some(acl) = shard.acl.borrow().clone() else {
        return true;
    };
    let mut sessions = shard.sessions.borrow_mut();
    let s = &mut sessions[sid as usize];
    let Some(username) = s.owner.username() else {
        return false;
    };
    let sa = SessionAcl::new(&acl, shard.acl_gen.get(), username, s.client_id.as_str());
    s.acl = Some(Box::new(sa));
    reclassify(shard, s);
    true
}

/// May session `s` still publish its will on `topic` (rules reloaded since
/// its CONNECT)? A refused will is dropped and counted.
pub(crate) fn will_allowed(shard: &Shard, s: &mut Session, topic: &str) -> bool {
    let Some(acl) = shard.acl.borrow().clone() else {
        return true;
    };
    refresh(shard, s);
    let ok = s
        .acl
        .as_deref_mut()
        .is_some_and(|sa| may_publish_topic(&acl, sa, topic));
    if !ok {
        shard.stats.acl_deny(AclAction::Will);
    }
    ok
}

/// Write access with Mosquitto 2.x's `$SYS` rule: no client publishes
/// under `$SYS` (`acl__check_dollar`, security.c), whatever the file says.
fn may_publish_topic(_acl: &Acl, sa: &mut SessionAcl, topic: &str) -> bool {
    !topic.starts_with("$SYS") && sa.may_write(topic)
}

/// The read class of a new subscription (`Full` without an ACL).
pub(crate) fn classify(shard: &Shard, sid: SessionId, filter: &TopicFilter) -> SubClass {
    if shard.acl.borrow().is_none() {
        return SubClass::Full;
    }
    let mut sessions = shard.sessions.borrow_mut();
    let s = &mut sessions[sid as usize];
    refresh(shard, s);
    match &s.acl {
        Some(sa) => sa.classify(plain(filter)),
        None => SubClass::Never,
    }
}

/// May the client of session `sid` publish to `topic`?
#[inline]
pub(crate) fn may_publish(shard: &Shard, sid: SessionId, topic: &str) -> bool {
    let Some(acl) = &*shard.acl.borrow() else {
        return true;
    };
    let mut sessions = shard.sessions.borrow_mut();
    let s = &mut sessions[sid as usize];
    refresh(shard, s);
    let ok = match s.acl.as_deref_mut() {
        Some(sa) => may_publish_topic(acl, sa, topic),
        None => false,
    };
    if !ok {
        shard.stats.acl_deny(AclAction::Publish);
    }
    ok
}

/// May session `s` receive a message on `topic`? Called only for
/// subscriptions that need the check; counts a refusal under `action`.
#[inline]
pub(crate) fn may_receive(shard: &Shard, s: &mut Session, topic: &str, action: AclAction) -> bool {
    refresh(shard, s);
    let ok = s.acl.as_deref_mut().is_some_and(|sa| sa.may_read(topic));
    if !ok {
        shard.stats.acl_deny(action);
    }
    ok
}

/// Rebuilds a session's rules after a reload (lazily, at its next check).
#[inline]
fn refresh(shard: &Shard, s: &mut Session) {
    if let (Some(sa), Some(acl)) = (s.acl.as_deref_mut(), &*shard.acl.borrow()) {
        sa.refresh(acl, shard.acl_gen.get(), s.client_id.as_str());
    }
}

/// Does a delivery on a subscription with this `acl_check` ask the rules?
/// Always while a reload's classification is under way.
#[inline]
pub(crate) fn must_check(shard: &Shard, acl_check: bool) -> bool {
    acl_check || shard.acl_recheck.get()
}

/// Puts new rules in force on this shard, from the next delivery on: until
/// every subscription is classified again (in bounded steps, so a million
/// subscriptions never stall the shard), every delivery asks the rules.
pub(crate) fn set_acl(shard: &Rc<Shard>, acl: Arc<Acl>) {
    *shard.acl.borrow_mut() = Some(acl);
    let generation = shard.acl_gen.get().wrapping_add(1);
    shard.acl_gen.set(generation);
    shard.acl_recheck.set(true);
    let sids: Vec<SessionId> = shard
        .sessions
        .borrow()
        .iter()
        .map(|(i, _)| i as SessionId)
        .collect();
    glommio::spawn_local(reclassify_all(shard.clone(), sids, generation)).detach();
}

/// Classifies every listed session's subscriptions again, a batch of
/// sessions per scheduler turn; a newer reload takes over.
async fn reclassify_all(shard: Rc<Shard>, sids: Vec<SessionId>, generation: u32) {
    for chunk in sids.chunks(256) {
        if shard.acl_gen.get() != generation {
            return; // a newer reload runs its own pass
        }
        {
            let mut sessions = shard.sessions.borrow_mut();
            for &sid in chunk {
                if let Some(s) = sessions.get_mut(sid as usize) {
                    refresh(&shard, s);
                    reclassify(&shard, s);
                }
            }
        }
        glommio::yield_if_needed().await;
    }
    if shard.acl_gen.get() == generation {
        shard.acl_recheck.set(false);
    }
}

/// Sets `acl_check` on each subscription of `s` from its current rules. A
/// subscription that became unreadable stays (the client holds it) and is
/// checked, so nothing reaches it.
fn reclassify(shard: &Shard, s: &Session) {
    let mut router = shard.router.borrow_mut();
    for (filter, e) in &s.subs {
        let check = match &s.acl {
            Some(sa) => sa.classify(plain(filter)) != SubClass::Full,
            None => true,
        };
        router.subscribe_local(
            filter,
            LocalSub {
                session: s.sid,
                options: e.options,
                subscription_id: e.subscription_id,
                acl_check: check,
            },
        );
    }
}
