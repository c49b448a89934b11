//! Ownership races: three nodes claim the same client ids concurrently,
//! thousands of times, with random delays and node stops; every outcome is
//! recorded and checked:
//! - no epoch is ever seen with two owners (from wins and from conflicts);
//! - wins of one client form a chain: a claim based on an epoch older than
//!   an earlier win never wins (that would be two owners at once);
//! - every won epoch survives stopping and restarting every node.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ringmq_raft::{ClaimError, Consistency, Error, NodeId, Owner, Ownership};

use crate::common::{block_on, poll, Cluster};

const CLIENTS: usize = 12;
const WORKERS_PER_NODE: usize = 3;
const CLAIMS_PER_WORKER: usize = 300;

#[derive(Debug, Clone)]
enum Outcome {
    Won(u64),
    Lost { owner: Option<NodeId>, epoch: u64 },
    Unknown,
}

#[derive(Debug, Clone)]
struct Record {
    client: usize,
    node: NodeId,
    expected: u64,
    outcome: Outcome,
}

type Slots = Arc<RwLock<BTreeMap<NodeId, Option<Ownership>>>>;

fn client_id(i: usize) -> Vec<u8> {
    format!("client-{i}").into_bytes()
}

fn worker(node: NodeId, slots: Slots, log: Arc<Mutex<Vec<Record>>>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut done = 0;
    while done < CLAIMS_PER_WORKER {
        let Some(own) = slots.read().unwrap().get(&node).cloned().flatten() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let client = rng.usize(..CLIENTS);
        let cid = client_id(client);
        // Base the claim on what this node has applied (often stale: races).
        let expected = match own.owner_local(&cid) {
            Ok(o) => o.map_or(0, |o| o.epoch),
            Err(_) => continue,
        };
        if rng.u8(..4) == 0 {
            std::thread::sleep(Duration::from_micros(rng.u64(..2000)));
        }
        let outcome = match block_on(own.claim(&cid, node, expected)) {
            Ok(epoch) => Outcome::Won(epoch),
            Err(ClaimError::Conflict { owner, epoch }) => Outcome::Lost { owner, epoch },
            Err(ClaimError::Unavailable(Error::Stopped)) => {
                std::thread::sleep(Duration::from_millis(5));
                Outcome::Unknown
            }
            Err(ClaimError::Unavailable(_)) => Outcome::Unknown,
        };
        log.lock().unwrap().push(Record {
            client,
            node,
            expected,
            outcome,
        });
        done += 1;
    }
}

fn publish(c: &Cluster, slots: &Slots) {
    let mut s = slots.write().unwrap();
    for (id, n) in &c.nodes {
        s.insert(*id, n.as_ref().map(|n| n.handle().ownership()));
    }
}

#[test]
fn concurrent_claims_never_give_an_epoch_two_owners() {
    let mut c = Cluster::new(3);
    c.leader();
    let slots: Slots = Arc::new(RwLock::new(BTreeMap::new()));
    publish(&c, &slots);
    let log = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for node in 1..=3u64 {
        for w in 0..WORKERS_PER_NODE {
            let (slots, log) = (slots.clone(), log.clone());
            threads.push(std::thread::spawn(move || {
                worker(node, slots, log, node * 100 + w as u64)
            }));
        }
    }
    // Chaos: stop and restart a follower, then the leader, while claims run.
    let total = 3 * WORKERS_PER_NODE * CLAIMS_PER_WORKER;
    let progress = |frac: usize| {
        let log = log.clone();
        poll("claims to progress", Duration::from_secs(120), move || {
            (log.lock().unwrap().len() * 4 >= total * frac).then_some(())
        })
    };
    progress(1);
    let leader = c.leader();
    let follower = c.running().into_iter().find(|id| *id != leader).unwrap();
    for victim in [follower, leader] {
        slots.write().unwrap().insert(victim, None);
        c.stop(victim);
        let before = log.lock().unwrap().len();
        poll(
            "claims while a node is down",
            Duration::from_secs(60),
            || (log.lock().unwrap().len() > before + 50).then_some(()),
        );
        c.restart(victim);
        publish(&c, &slots);
        c.leader();
    }
    for t in threads {
        t.join().expect("worker");
    }
    finished.store(true, Ordering::Relaxed);
    let records = log.lock().unwrap().clone();
    let won = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Won(_)))
        .count();
    let lost = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Lost { .. }))
        .count();
    eprintln!(
        "claims: {} recorded, {won} won, {lost} lost, {} unknown",
        records.len(),
        records.len() - won - lost
    );
    assert!(
        won > 100 && lost > 100,
        "both wins and conflicts must happen: {won} won, {lost} lost"
    );

    // 1. No epoch with two owners.
    let mut seen: HashMap<(usize, u64), NodeId> = HashMap::new();
    for r in &records {
        let (epoch, owner) = match r.outcome {
            Outcome::Won(e) => (e, Some(r.node)),
            Outcome::Lost { owner, epoch } => (epoch, owner),
            Outcome::Unknown => continue,
        };
        let Some(owner) = owner else { continue };
        if let Some(prev) = seen.insert((r.client, epoch), owner) {
            assert_eq!(
                prev, owner,
                "client {} epoch {epoch} seen with owners {prev} and {owner}",
                r.client
            );
        }
    }
    // 2. Wins of one client form a chain.
    let mut wins: BTreeMap<usize, Vec<(u64, u64, NodeId)>> = BTreeMap::new();
    for r in &records {
        if let Outcome::Won(e) = r.outcome {
            assert!(e > r.expected, "a win moves the epoch forward");
            wins.entry(r.client)
                .or_default()
                .push((e, r.expected, r.node));
        }
    }
    for (client, ws) in wins.iter_mut() {
        ws.sort();
        for pair in ws.windows(2) {
            let ((e0, _, _), (e1, x1, _)) = (pair[0], pair[1]);
            assert!(x1 >= e0, "client {client}: the win at epoch {e1} was based on epoch {x1}, older than the win at {e0}");
        }
    }
    // 3. Every won epoch is durable across a restart of every node.
    for id in c.running() {
        c.stop(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    let leader = c.leader();
    let h = c.handle(leader);
    for (client, ws) in &wins {
        let &(last_epoch, _, last_node) = ws.last().unwrap();
        let key = [b"own/".as_slice(), &client_id(*client)].concat();
        let v = block_on(h.read(&key, Consistency::Linearizable))
            .unwrap()
            .expect("owned");
        assert!(
            v.version >= last_epoch,
            "client {client}: epoch {last_epoch} won, {} stored",
            v.version
        );
        let owner = block_on(async { h.ownership().owner_local(&client_id(*client)) }).unwrap();
        if v.version == last_epoch {
            assert_eq!(
                owner,
                Some(Owner {
                    node: last_node,
                    epoch: last_epoch
                })
            );
        }
    }
}
