use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;
use ringmq_codec::{MqttString, Publish, PublishProperties, QoS, TopicFilter, TopicName};

use super::*;
use crate::topic;

fn msg(topic: &str, payload: &'static [u8]) -> (TopicName, RetainedMessage) {
    let t = TopicName::try_from(topic).expect("valid topic");
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: t.clone(),
        packet_id: None,
        properties: PublishProperties::default().into(),
        payload: Bytes::from_static(payload),
    };
    (
        t.clone(),
        RetainedMessage {
            topic: t,
            publish,
            stored_at: Instant::now(),
        },
    )
}

fn put(s: &mut RetainedStore, topic: &str, payload: &'static [u8]) {
    let (t, m) = msg(topic, payload);
    s.set(t, m);
}

fn replay_all(s: &RetainedStore, filter: &str, batch: usize) -> Vec<String> {
    let mut c = s.replay(&TopicFilter::try_from(filter).unwrap());
    drain(s, &mut c, batch)
}

fn drain(s: &RetainedStore, c: &mut ReplayCursor, batch: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut all = Vec::new();
    loop {
        out.clear();
        let done = c.next_batch(s, batch, &mut out);
        assert!(out.len() <= batch);
        all.extend(out.iter().map(|m| m.topic.as_str().to_string()));
        if done {
            break;
        }
    }
    all.sort();
    all
}

#[test]
fn set_replaces_and_empty_payload_deletes_mqtt_3_3_1_5_to_7() {
    let mut s = RetainedStore::new();
    put(&mut s, "a/b", b"1");
    put(&mut s, "a/b", b"2");
    assert_eq!(s.len(), 1);
    assert_eq!(&s.get("a/b").unwrap().publish.payload[..], b"2");
    put(&mut s, "a/b", b"");
    assert_eq!(s.len(), 0);
    assert!(s.get("a/b").is_none());
    assert!(s.root.is_empty(), "nodes pruned");
    put(&mut s, "x", b""); // deleting nothing stores nothing [MQTT-3.3.1-7]
    assert_eq!(s.len(), 0);
    assert!(s.root.is_empty());
}

#[test]
fn replay_matches_filters_and_skips_dollar_topics_mqtt_4_7_2_1() {
    let mut s = RetainedStore::new();
    for t in ["a", "a/b", "a/b/c", "a/c", "b/b", "$SYS/x", "/", "/a"] {
        put(&mut s, t, b"p");
    }
    assert_eq!(
        replay_all(&s, "#", 2),
        ["/", "/a", "a", "a/b", "a/b/c", "a/c", "b/b"]
    );
    assert_eq!(replay_all(&s, "a/#", 1), ["a", "a/b", "a/b/c", "a/c"]);
    assert_eq!(replay_all(&s, "+/b", 3), ["a/b", "b/b"]);
    assert_eq!(replay_all(&s, "a/b", 3), ["a/b"]);
    assert_eq!(replay_all(&s, "+", 3), ["a"]);
    assert_eq!(replay_all(&s, "+/+", 3), ["/", "/a", "a/b", "a/c", "b/b"]);
    assert_eq!(replay_all(&s, "$SYS/#", 3), ["$SYS/x"]);
    assert_eq!(replay_all(&s, "$share/g/#", 3), Vec::<String>::new());
    let mut all = s.list();
    assert_eq!(
        drain(&s, &mut all, 2).len(),
        8,
        "admin listing includes $ topics"
    );
}

#[test]
fn replay_steps_are_bounded_even_when_nothing_matches() {
    let mut s = RetainedStore::new();
    for i in 0..2000 {
        let (t, m) = msg(&format!("d/{i}/x"), b"p");
        s.set(t, m);
    }
    let mut c = s.replay(&TopicFilter::from_static("+/+/nomatch"));
    let mut out = Vec::new();
    let mut steps = 0;
    while !c.next_batch(&s, 10, &mut out) {
        steps += 1;
    }
    assert!(out.is_empty());
    assert!(steps > 20, "work per step is bounded, got {steps} steps");
}

#[test]
fn replay_survives_mutation_between_batches() {
    let mut s = RetainedStore::new();
    for i in 0..100 {
        let (t, m) = msg(&format!("k/{i:03}"), b"p");
        s.set(t, m);
    }
    let mut c = s.replay(&TopicFilter::from_static("k/#"));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut round = 0;
    loop {
        out.clear();
        let done = c.next_batch(&s, 7, &mut out);
        for m in &out {
            assert!(seen.insert(m.topic.as_str().to_string()), "no duplicates");
        }
        if done {
            break;
        }
        // Delete a message around the cursor and one far ahead; add one behind.
        round += 1;
        let last = out.last().unwrap().topic.as_str().to_string();
        s.remove(&last);
        s.remove(&format!("k/{:03}", 99 - round));
        put(&mut s, "k/000a", b"new");
    }
    for i in 0..100 {
        let t = format!("k/{i:03}");
        if s.get(&t).is_some() {
            assert!(
                seen.contains(&t),
                "{t} was present throughout and must be yielded"
            );
        }
    }
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("".to_string()),
        Just("$s".to_string())
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    #[test]
    fn replay_agrees_with_direct_matcher(
        topics in prop::collection::vec(prop::collection::vec(level(), 1..4).prop_map(|v| v.join("/")), 1..30),
        filter in (prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_string())], 1..4), any::<bool>())
            .prop_map(|(mut v, h)| { if h { v.push("#".into()) } v.join("/") }),
        batch in 1usize..5,
    ) {
        let mut s = RetainedStore::new();
        let topics: BTreeSet<String> = topics.into_iter().filter(|t| !t.is_empty()).collect();
        for t in &topics {
            let (tn, mut m) = msg(t, b"p");
            m.topic = tn.clone();
            s.set(tn, m);
        }
        prop_assume!(!filter.is_empty());
        let want: Vec<String> = topics.iter().filter(|t| topic::matches(&filter, t)).cloned().collect();
        prop_assert_eq!(replay_all(&s, &filter, batch), want);
    }
}

#[test]
fn detach_copies_every_byte_field_into_its_own_buffer() {
    let frame = Bytes::from_static(b"xxa/bpayloadrt/1corrctk1v1");
    let (_, m) = msg("a/b", b"payload");
    let mut p = m.publish;
    p.topic = TopicName::try_from(frame.slice(2..5)).unwrap();
    p.payload = frame.slice(5..12);
    p.properties.response_topic = Some(TopicName::try_from(frame.slice(12..16)).unwrap());
    p.properties.correlation_data = Some(frame.slice(16..20));
    p.properties.content_type = Some(MqttString::try_from(frame.slice(20..22)).unwrap());
    let kv = (
        MqttString::try_from(frame.slice(22..24)).unwrap(),
        MqttString::try_from(frame.slice(24..26)).unwrap(),
    );
    p.properties.user_properties = vec![kv];
    let d = detach(&p);
    assert_eq!(d, p);
    let inside = |b: &[u8]| frame.as_ptr_range().contains(&b.as_ptr());
    assert!(!inside(d.topic.as_str().as_bytes()));
    assert!(!inside(&d.payload));
    assert!(!inside(
        d.properties
            .response_topic
            .as_ref()
            .unwrap()
            .as_str()
            .as_bytes()
    ));
    assert!(!inside(d.properties.correlation_data.as_ref().unwrap()));
    assert!(!inside(
        d.properties.content_type.as_ref().unwrap().as_bytes()
    ));
    assert!(!inside(d.properties.user_properties[0].1.as_bytes()));
    let r = RetainedMessage::new(&p, Instant::now());
    assert_eq!(r.topic.as_str(), "a/b");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    /// Mutations between steps: no duplicates, nothing unmatched, and every message present for
    /// the whole replay is yielded.
    #[test]
    fn replay_under_concurrent_mutation(
        initial in prop::collection::btree_set(prop::collection::vec(level(), 1..4).prop_map(|v| v.join("/")), 1..40),
        muts in prop::collection::vec((prop::collection::vec(level(), 1..4).prop_map(|v| v.join("/")), any::<bool>()), 0..40),
        filter in prop_oneof![Just("#"), Just("a/#"), Just("+/+"), Just("+/b/#"), Just("a/+/b")],
        batch in 1usize..4,
    ) {
        let mut s = RetainedStore::new();
        for t in initial.iter().filter(|t| !t.is_empty()) {
            put(&mut s, t, b"p");
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut c = s.replay(&TopicFilter::try_from(filter).unwrap());
        let mut out = Vec::new();
        let mut muts = muts.into_iter().filter(|(t, _)| !t.is_empty());
        loop {
            out.clear();
            let done = c.next_batch(&s, batch, &mut out);
            for m in &out {
                let t = m.topic.as_str().to_string();
                prop_assert!(topic::matches(filter, &t), "{} does not match {}", t, filter);
                prop_assert!(seen.insert(t.clone()), "{} yielded twice", t);
            }
            if done {
                break;
            }
            if let Some((t, add)) = muts.next() {
                touched.insert(t.clone());
                if add {
                    put(&mut s, &t, b"q");
                } else {
                    s.remove(&t);
                }
            }
        }
        for t in initial.iter().filter(|t| !t.is_empty() && !touched.contains(*t)) {
            if topic::matches(filter, t) {
                prop_assert!(seen.contains(t), "{} present throughout but not yielded", t);
            }
        }
    }
}
