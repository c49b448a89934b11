//! Model-based properties: random subscribe/unsubscribe sequences against a naive model, and
//! shared-subscription fairness for random member layouts.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ringmq_codec::{QoS, RetainHandling, SubscriptionOptions, TopicFilter};

use super::tests::naive_match;
use super::*;

const FILTERS: &[&str] = &[
    "a/b", "a/+", "a/#", "#", "+/b", "+/+", "$s/#", "a//b", "+", "a/b/#",
];
const TOPICS: &[&str] = &[
    "a/b", "a", "a/c", "x/b", "$s/b", "$s", "a//b", "a/b/c", "/b",
];

#[derive(Clone, Debug)]
enum Op {
    Sub {
        filter: usize,
        session: u32,
        qos: u8,
        id: Option<u32>,
        rap: bool,
    },
    Unsub {
        filter: usize,
        session: u32,
    },
    Remote {
        filter: usize,
        shard: u16,
        add: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..FILTERS.len();
    prop_oneof![
        3 => (f.clone(), 0..4u32, 0..3u8, prop::option::of(1..5u32), any::<bool>())
            .prop_map(|(filter, session, qos, id, rap)| Op::Sub { filter, session, qos, id, rap }),
        2 => (f.clone(), 0..4u32).prop_map(|(filter, session)| Op::Unsub { filter, session }),
        1 => (f, 1..3u16, any::<bool>()).prop_map(|(filter, shard, add)| Op::Remote { filter, shard, add }),
    ]
}

fn qos(n: u8) -> QoS {
    QoS::try_from(n).expect("0..=2")
}

fn tf(i: usize) -> TopicFilter {
    TopicFilter::try_from(FILTERS[i]).expect("valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn router_agrees_with_a_naive_model(ops in prop::collection::vec(op(), 1..60), retain in any::<bool>()) {
        let mut r = Router::new(0, 3);
        // (filter, session) -> sub; (filter, shard) -> count
        let mut subs: BTreeMap<(usize, u32), LocalSub> = BTreeMap::new();
        let mut remote: BTreeMap<(usize, u16), u32> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Sub { filter, session, qos: q, id, rap } => {
                    let options = SubscriptionOptions {
                        qos: qos(q), no_local: false, retain_as_published: rap,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    };
                    let sub = LocalSub { session, options, subscription_id: id, acl_check: false };
                    let first = !subs.keys().any(|&(f, _)| f == filter);
                    let fresh = subs.insert((filter, session), sub).is_none();
                    prop_assert_eq!(r.subscribe_local(&tf(filter), sub), fresh && first);
                }
                Op::Unsub { filter, session } => {
                    let had = subs.remove(&(filter, session)).is_some();
                    let last = had && !subs.keys().any(|&(f, _)| f == filter);
                    let got = r.unsubscribe_local(&tf(filter), session);
                    prop_assert_eq!(got, had.then_some(last));
                }
                Op::Remote { filter, shard, add } => {
                    let n = remote.entry((filter, shard)).or_default();
                    if add {
                        *n += 1;
                        r.add_remote(&tf(filter), shard);
                    } else if *n > 0 {
                        *n -= 1;
                        r.remove_remote(&tf(filter), shard);
                    }
                }
            }
        }
        let mut scratch = MatchScratch::new();
        for t in TOPICS {
            // Model: per (session, rap key) max QoS and sorted ids.
            let mut want: BTreeMap<(u32, bool), (QoS, Vec<u32>)> = BTreeMap::new();
            for (&(f, s), sub) in &subs {
                if naive_match(FILTERS[f], t) {
                    let k = (s, retain && sub.options.retain_as_published);
                    let e = want.entry(k).or_insert((QoS::AtMostOnce, Vec::new()));
                    e.0 = e.0.max(sub.options.qos);
                    e.1.extend(sub.subscription_id);
                }
            }
            let info = PublishInfo { publisher: None, retain };
            let mut got: BTreeMap<(u32, bool), (QoS, Vec<u32>)> = BTreeMap::new();
            for m in r.match_local_with(t, info, &mut scratch) {
                let mut ids = m.subscription_ids.to_vec();
                ids.sort();
                let k = (m.session, retain && m.retain_as_published);
                prop_assert!(got.insert(k, (m.qos, ids)).is_none(), "duplicate entry");
            }
            for v in want.values_mut() {
                v.1.sort();
            }
            prop_assert_eq!(&got, &want, "topic {}", t);
            let mut want_shards: Vec<ShardId> = remote.iter()
                .filter(|(&(f, _), &n)| n > 0 && naive_match(FILTERS[f], t)).map(|(&(_, s), _)| s).collect();
            if subs.keys().any(|&(f, _)| naive_match(FILTERS[f], t)) {
                want_shards.push(0);
            }
            want_shards.sort();
            want_shards.dedup();
            let mut set = ShardSet::new();
            r.match_shards(t, &mut set);
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), want_shards, "topic {}", t);
        }
        for (f, s) in subs.keys() {
            prop_assert!(r.unsubscribe_local(&tf(*f), *s).is_some());
        }
        for (&(f, shard), &n) in &remote {
            for _ in 0..n {
                r.remove_remote(&tf(f), shard);
            }
        }
        prop_assert_eq!(r.node_counts(), (1, 1, 1), "every node freed");
    }

    #[test]
    fn shared_round_robin_is_fair_for_any_layout(members in prop::collection::vec(0..4u32, 1..5)) {
        prop_assume!(members.iter().sum::<u32>() > 0);
        let n = members.len() as u16;
        let total: u32 = members.iter().sum();
        let mut routers: Vec<Router> = (0..n).map(|s| Router::new(s, n)).collect();
        let filter = TopicFilter::from_static("$share/g/t/#");
        let mut session = 0;
        for (shard, &m) in members.iter().enumerate() {
            for _ in 0..m {
                let options = SubscriptionOptions::default();
                let sub = LocalSub { session, options, subscription_id: None, acl_check: false };
                prop_assert!(routers[shard].subscribe_local(&filter, sub));
                for (i, r) in routers.iter_mut().enumerate() {
                    if i != shard {
                        r.add_remote(&filter, shard as u16);
                    }
                }
                session += 1;
            }
        }
        let rounds = 3;
        let mut count: BTreeMap<u32, u32> = BTreeMap::new();
        let mut out = Vec::new();
        for from in 0..n as usize {
            for _ in 0..total * rounds {
                out.clear();
                routers[from].match_shared("t/x", &mut out);
                prop_assert_eq!(out.len(), 1);
                let t = &out[0];
                let m = routers[t.shard as usize].pick_shared_local(&t.filter).expect("member");
                *count.entry(m.session).or_default() += 1;
            }
        }
        prop_assert_eq!(count.len() as u32, total);
        prop_assert!(count.values().all(|&c| c == rounds * u32::from(n)), "{:?}", count);
    }
}
