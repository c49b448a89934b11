use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ringmq_codec::{QoS, RetainHandling, SubscriptionOptions, TopicFilter};

use super::*;
use crate::topic;

fn f(s: &str) -> TopicFilter {
    TopicFilter::try_from(s).expect("valid filter")
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    }
}

fn sub(session: SessionId, qos: QoS, id: Option<u32>) -> LocalSub {
    LocalSub {
        session,
        options: opts(qos),
        subscription_id: id,
        acl_check: false,
    }
}

fn shards(r: &Router, topic: &str) -> Vec<ShardId> {
    let mut s = ShardSet::new();
    r.match_shards(topic, &mut s);
    s.iter().collect()
}

fn sessions(r: &Router, topic: &str) -> Vec<SessionId> {
    let mut scratch = MatchScratch::new();
    let mut v: Vec<_> = r
        .match_local(topic, &mut scratch)
        .iter()
        .map(|m| m.session)
        .collect();
    v.sort();
    v
}

#[test]
fn subscribe_reports_first_and_last_on_this_shard() {
    let mut r = Router::new(0, 2);
    assert!(r.subscribe_local(&f("a/+"), sub(1, QoS::AtMostOnce, None)));
    assert!(!r.subscribe_local(&f("a/+"), sub(2, QoS::AtMostOnce, None)));
    assert_eq!(r.unsubscribe_local(&f("a/+"), 1), Some(false));
    assert_eq!(r.unsubscribe_local(&f("a/+"), 1), None);
    assert_eq!(r.unsubscribe_local(&f("a/+"), 2), Some(true));
    assert_eq!(r.unsubscribe_local(&f("nope"), 2), None);
    assert_eq!(
        r.node_counts(),
        (1, 1, 1),
        "empty nodes removed on unsubscribe"
    );
    assert_eq!(r.local_subscription_count(), 0);
}

#[test]
fn resubscribe_replaces_options_mqtt_3_8_4_3() {
    let mut r = Router::new(0, 1);
    assert!(r.subscribe_local(&f("a/b"), sub(7, QoS::AtMostOnce, Some(1))));
    assert!(!r.subscribe_local(&f("a/b"), sub(7, QoS::ExactlyOnce, Some(2))));
    let mut scratch = MatchScratch::new();
    let m = r.match_local("a/b", &mut scratch);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].qos, QoS::ExactlyOnce);
    assert_eq!(&m[0].subscription_ids[..], [2]);
    assert_eq!(r.local_subscription_count(), 1);
}

#[test]
fn match_shards_includes_local_and_remote_shards() {
    let mut r = Router::new(1, 4);
    r.subscribe_local(&f("a/#"), sub(1, QoS::AtMostOnce, None));
    r.add_remote(&f("a/b"), 3);
    r.add_remote(&f("a/b"), 3);
    r.add_remote(&f("+/b"), 0);
    r.add_remote(&f("a/#"), 1); // this shard: ignored, subscribe_local keeps it
    assert_eq!(shards(&r, "a/b"), [0, 1, 3]);
    assert_eq!(shards(&r, "a"), [1]);
    assert_eq!(shards(&r, "x/b"), [0]);
    r.remove_remote(&f("a/b"), 3);
    assert_eq!(
        shards(&r, "a/b"),
        [0, 1, 3],
        "count-based: one subscriber left"
    );
    r.remove_remote(&f("a/b"), 3);
    r.remove_remote(&f("+/b"), 0);
    assert_eq!(shards(&r, "a/b"), [1]);
    r.unsubscribe_local(&f("a/#"), 1);
    assert!(shards(&r, "a/b").is_empty());
    assert_eq!(r.node_counts(), (1, 1, 1));
}

#[test]
fn dollar_topics_skip_first_level_wildcards_mqtt_4_7_2_1() {
    let mut r = Router::new(0, 1);
    r.subscribe_local(&f("#"), sub(1, QoS::AtMostOnce, None));
    r.subscribe_local(&f("+/broker/#"), sub(2, QoS::AtMostOnce, None));
    r.subscribe_local(&f("$SYS/#"), sub(3, QoS::AtMostOnce, None));
    r.subscribe_local(&f("$SYS/+/uptime"), sub(4, QoS::AtMostOnce, None));
    assert_eq!(sessions(&r, "$SYS/broker/uptime"), [3, 4]);
    assert_eq!(sessions(&r, "x/broker/uptime"), [1, 2]);
    assert_eq!(shards(&r, "$SYS/broker/uptime"), [0]);
}

#[test]
fn overlapping_subscriptions_merge_max_qos_and_all_ids_mqtt_3_3_4_2_and_3() {
    let mut r = Router::new(0, 1);
    r.subscribe_local(&f("a/+"), sub(1, QoS::AtMostOnce, Some(10)));
    r.subscribe_local(&f("a/#"), sub(1, QoS::ExactlyOnce, Some(11)));
    r.subscribe_local(&f("a/b"), sub(1, QoS::AtLeastOnce, None));
    r.subscribe_local(&f("a/b"), sub(2, QoS::AtLeastOnce, Some(5)));
    let mut scratch = MatchScratch::new();
    for _ in 0..3 {
        let mut m = r.match_local("a/b", &mut scratch).to_vec();
        m.sort_by_key(|m| m.session);
        assert_eq!(m.len(), 2, "one copy per session");
        assert_eq!(m[0].qos, QoS::ExactlyOnce);
        let mut ids = m[0].subscription_ids.to_vec();
        ids.sort();
        assert_eq!(ids, [10, 11]);
        assert_eq!(
            (m[1].qos, &m[1].subscription_ids[..]),
            (QoS::AtLeastOnce, &[5][..])
        );
    }
}

#[test]
fn no_local_applies_per_subscription_mqtt_3_8_3_3() {
    let mut r = Router::new(0, 1);
    let mut nl = sub(1, QoS::ExactlyOnce, Some(1));
    nl.options.no_local = true;
    r.subscribe_local(&f("a/b"), nl);
    r.subscribe_local(&f("a/b"), sub(2, QoS::AtMostOnce, None));
    let mut scratch = MatchScratch::new();
    let from_1 = PublishInfo {
        publisher: Some(1),
        retain: false,
    };
    let m = r.match_local_with("a/b", from_1, &mut scratch);
    assert_eq!(m.iter().map(|m| m.session).collect::<Vec<_>>(), [2]);
    // Overlap: the other subscription of session 1 still matches, at its own QoS and id.
    r.subscribe_local(&f("a/+"), sub(1, QoS::AtMostOnce, Some(2)));
    let mut m = r.match_local_with("a/b", from_1, &mut scratch).to_vec();
    m.sort_by_key(|m| m.session);
    assert_eq!(
        (m[0].session, m[0].qos, &m[0].subscription_ids[..]),
        (1, QoS::AtMostOnce, &[2][..])
    );
    // Published by someone else: both subscriptions merge.
    let m = r.match_local_with(
        "a/b",
        PublishInfo {
            publisher: Some(9),
            retain: false,
        },
        &mut scratch,
    );
    assert!(m
        .iter()
        .any(|m| m.session == 1 && m.qos == QoS::ExactlyOnce));
}

#[test]
fn retain_as_published_differing_gives_two_copies_mqtt_3_3_1_12_and_13() {
    let mut r = Router::new(0, 1);
    let mut rap = sub(1, QoS::AtLeastOnce, Some(1));
    rap.options.retain_as_published = true;
    r.subscribe_local(&f("a/#"), rap);
    r.subscribe_local(&f("a/b"), sub(1, QoS::AtMostOnce, Some(2)));
    let mut scratch = MatchScratch::new();
    let mut m = r
        .match_local_with(
            "a/b",
            PublishInfo {
                publisher: None,
                retain: true,
            },
            &mut scratch,
        )
        .to_vec();
    m.sort_by_key(|m| m.retain_as_published);
    assert_eq!(m.len(), 2);
    assert_eq!(
        (
            m[0].retain_as_published,
            m[0].qos,
            &m[0].subscription_ids[..]
        ),
        (false, QoS::AtMostOnce, &[2][..])
    );
    assert_eq!(
        (
            m[1].retain_as_published,
            m[1].qos,
            &m[1].subscription_ids[..]
        ),
        (true, QoS::AtLeastOnce, &[1][..])
    );
    // Not retained: RAP is irrelevant, one copy.
    assert_eq!(r.match_local("a/b", &mut scratch).len(), 1);
}

#[test]
fn large_fanout_subscribe_unsubscribe_keeps_index_consistent() {
    let mut r = Router::new(0, 1);
    for s in 0..1000 {
        r.subscribe_local(&f("fan/out"), sub(s, QoS::AtMostOnce, None));
    }
    assert_eq!(sessions(&r, "fan/out").len(), 1000);
    for s in (0..1000).step_by(2) {
        assert_eq!(r.unsubscribe_local(&f("fan/out"), s), Some(false));
    }
    assert_eq!(
        sessions(&r, "fan/out"),
        (1..1000).step_by(2).collect::<Vec<_>>()
    );
    for s in (1..1000).step_by(2) {
        assert!(r.unsubscribe_local(&f("fan/out"), s).is_some());
    }
    assert!(sessions(&r, "fan/out").is_empty());
}

#[test]
fn shared_subscription_distributes_round_robin_over_all_members_v5_4_8_2() {
    // 3 shards; members: shard 0 has 1, shard 1 has 2, shard 2 has 3 (6 in all).
    let n = 3u16;
    let mut routers: Vec<Router> = (0..n).map(|s| Router::new(s, n)).collect();
    let filter = f("$share/g/jobs/+");
    let mut session = 0;
    for (shard, members) in [(0u16, 1), (1, 2), (2, 3)] {
        for _ in 0..members {
            let broadcast = routers[shard as usize]
                .subscribe_local(&filter, sub(session, QoS::AtLeastOnce, None));
            assert!(broadcast, "every shared member is broadcast");
            for (i, r) in routers.iter_mut().enumerate() {
                if i != shard as usize {
                    r.add_remote(&filter, shard);
                }
            }
            session += 1;
        }
    }
    // 600 publishes from each shard (a multiple of the 6 members); deliveries per member.
    let mut count: BTreeMap<(ShardId, SessionId), u32> = BTreeMap::new();
    let mut out = Vec::new();
    for i in 0..1800 {
        let from = i % n as usize;
        out.clear();
        routers[from].match_shared("jobs/42", &mut out);
        assert_eq!(out.len(), 1, "one member per group");
        let t = out[0].clone();
        assert_eq!(t.filter.as_str(), "$share/g/jobs/+");
        let m = routers[t.shard as usize]
            .pick_shared_local(&t.filter)
            .expect("member");
        *count.entry((t.shard, m.session)).or_default() += 1;
    }
    assert_eq!(count.len(), 6);
    assert!(count.values().all(|&c| c == 300), "{count:?}");
    // Non-shared match views see nothing.
    assert!(shards(&routers[0], "jobs/42").is_empty());
    assert!(sessions(&routers[2], "jobs/42").is_empty());
    assert!(routers[0]
        .pick_shared_local(&f("$share/other/jobs/+"))
        .is_none());
}

#[test]
fn shared_groups_are_independent_and_cleaned_up() {
    let mut r = Router::new(0, 1);
    r.subscribe_local(&f("$share/a/t/#"), sub(1, QoS::AtMostOnce, None));
    r.subscribe_local(&f("$share/b/t/#"), sub(2, QoS::AtMostOnce, None));
    r.subscribe_local(&f("$share/a/t/x"), sub(3, QoS::AtMostOnce, None));
    r.subscribe_local(&f("t/x"), sub(4, QoS::AtMostOnce, None));
    let mut out = Vec::new();
    r.match_shared("t/x", &mut out);
    let mut names: Vec<_> = out.iter().map(|t| t.filter.as_str().to_string()).collect();
    names.sort();
    assert_eq!(names, ["$share/a/t/#", "$share/a/t/x", "$share/b/t/#"]);
    assert_eq!(sessions(&r, "t/x"), [4]);
    // Resubscribe replaces, not adds.
    assert!(!r.subscribe_local(&f("$share/a/t/#"), sub(1, QoS::ExactlyOnce, None)));
    assert_eq!(
        r.pick_shared_local(&f("$share/a/t/#"))
            .map(|s| s.options.qos),
        Some(QoS::ExactlyOnce)
    );
    for (flt, s) in [
        ("$share/a/t/#", 1),
        ("$share/b/t/#", 2),
        ("$share/a/t/x", 3),
        ("t/x", 4),
    ] {
        assert_eq!(r.unsubscribe_local(&f(flt), s), Some(true));
    }
    out.clear();
    r.match_shared("t/x", &mut out);
    assert!(out.is_empty());
    assert_eq!(r.node_counts(), (1, 1, 1));
    assert_eq!(r.local_subscription_count(), 0);
}

#[test]
fn shared_remote_members_only_route_to_their_shard() {
    let mut r = Router::new(0, 2);
    let g = f("$share/g/x");
    r.add_remote(&g, 1);
    let mut out = Vec::new();
    for _ in 0..3 {
        r.match_shared("x", &mut out);
    }
    assert!(out.iter().all(|t| t.shard == 1) && out.len() == 3);
    r.remove_remote(&g, 1);
    out.clear();
    r.match_shared("x", &mut out);
    assert!(out.is_empty());
    assert_eq!(r.node_counts(), (1, 1, 1));
}

// ---- property: the trie agrees with the direct matcher -------------------------------------

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("".to_string()),
        Just("$s".to_string())
    ]
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|v| v.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![3 => level(), 2 => Just("+".to_string())];
    (prop::collection::vec(lvl, 1..5), any::<bool>())
        .prop_map(|(mut v, hash)| {
            if hash {
                v.push("#".into());
            }
            v.join("/")
        })
        .prop_filter("non-empty", |f| !f.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn trie_agrees_with_direct_matcher(
        filters in prop::collection::vec(filter_strategy(), 1..20),
        topics in prop::collection::vec(topic_strategy(), 1..20),
    ) {
        let mut r = Router::new(0, 1);
        for (i, fl) in filters.iter().enumerate() {
            r.subscribe_local(&f(fl), sub(i as SessionId, QoS::AtMostOnce, None));
        }
        let mut scratch = MatchScratch::new();
        for t in &topics {
            let got: BTreeSet<SessionId> = r.match_local(t, &mut scratch).iter().map(|m| m.session).collect();
            let want: BTreeSet<SessionId> = filters.iter().enumerate()
                .filter(|(_, fl)| naive_match(fl, t)).map(|(i, _)| i as SessionId).collect();
            prop_assert_eq!(&got, &want, "topic {}", t);
            for fl in &filters {
                prop_assert_eq!(topic::matches(fl, t), naive_match(fl, t), "{} vs {}", fl, t);
            }
            prop_assert_eq!(shards(&r, t).is_empty(), want.is_empty());
        }
        for (i, fl) in filters.iter().enumerate() {
            prop_assert!(r.unsubscribe_local(&f(fl), i as SessionId).is_some());
        }
        prop_assert_eq!(r.node_counts(), (1, 1, 1));
    }
}

/// Independent oracle: split into vectors and compare, spec rules spelled out.
pub(super) fn naive_match(filter: &str, topic: &str) -> bool {
    let fl: Vec<&str> = filter.split('/').collect();
    let tl: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && (fl[0] == "+" || fl[0] == "#") {
        return false;
    }
    for (i, fv) in fl.iter().enumerate() {
        if *fv == "#" {
            return tl.len() >= i;
        }
        match tl.get(i) {
            None => return false,
            Some(tv) if *fv != "+" && fv != tv => return false,
            _ => {}
        }
    }
    fl.len() == tl.len()
}
