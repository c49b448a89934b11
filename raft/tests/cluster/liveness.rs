//! Liveness keys: a stopped member is marked down by the leader after
//! `node_down_after`, and up again when it returns; counters move.

use std::time::Duration;

use ringmq_raft::{Liveness, RaftHandle};

use crate::common::{block_on, poll, Cluster};

fn live(h: &RaftHandle, id: u64) -> Option<Liveness> {
    let key = [b"live/".as_slice(), &id.to_be_bytes()].concat();
    let v = h.read_local(&key).ok()??;
    postcard::from_bytes(&v.value).ok()
}

#[test]
fn a_stopped_member_is_marked_down_then_up() {
    let mut c = Cluster::new(3);
    let leader = c.leader();
    let victim = c.running().into_iter().find(|id| *id != leader).unwrap();
    let other = c
        .running()
        .into_iter()
        .find(|id| *id != leader && *id != victim)
        .unwrap();
    poll("every member recorded up", Duration::from_secs(10), || {
        (1..=3)
            .all(|id| live(&c.handle(other), id).is_some_and(|l| l.up))
            .then_some(())
    });
    c.stop(victim);
    // Read on the third node: the keys are replicated, not just the leader's view.
    poll(
        "the stopped member marked down",
        Duration::from_secs(10),
        || live(&c.handle(other), victim).filter(|l| !l.up),
    );
    c.restart(victim);
    poll(
        "the member marked up again",
        Duration::from_secs(10),
        || live(&c.handle(other), victim).filter(|l| l.up),
    );
    let s = block_on(c.handle(leader).status()).unwrap();
    assert!(
        s.counters.commits >= 2,
        "liveness writes counted: {:?}",
        s.counters
    );
    assert!(
        s.counters.appends > 0 && s.counters.terms_seen >= 1,
        "{:?}",
        s.counters
    );
}
