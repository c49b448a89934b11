//! Router and retained-store micro-benchmarks: `cargo bench -p ringmq-shard --bench router`.
//! Figures from the last run are in docs/routing.md.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringmq_codec::{
    Publish, PublishProperties, QoS, RetainHandling, SubscriptionOptions, TopicFilter, TopicName,
};
use ringmq_shard::retained::{RetainedMessage, RetainedStore};
use ringmq_shard::router::{LocalSub, MatchScratch, Router, ShardSet};

fn sub(session: u32) -> LocalSub {
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    LocalSub {
        session,
        options,
        subscription_id: None,
        acl_check: false,
    }
}

/// `n` filters in the shape of an IoT deployment: mostly exact device topics, one in ten with a
/// `+`, one in a hundred with a `#`; spread over 8 shards (global view) and local sessions.
fn router_with(n: u32) -> Router {
    let mut r = Router::new(0, 8);
    for i in 0..n {
        let (site, dev) = (i % 100, i / 100);
        let f = match i % 100 {
            0 => format!("site/{site}/#"),
            1..=10 => format!("site/{site}/dev/+/temp{}", dev % 10),
            _ => format!("site/{site}/dev/{dev}/temp"),
        };
        let f = TopicFilter::try_from(f).unwrap();
        if i % 8 == 0 {
            r.subscribe_local(&f, sub(i / 8));
        } else {
            r.add_remote(&f, (i % 8) as u16);
        }
    }
    r
}

fn bench_match(c: &mut Criterion) {
    for n in [10_000u32, 100_000] {
        // Built inside the closures so a filtered run (`-- match_local`) skips unused setup.
        let topics: Vec<String> = (0..64)
            .map(|i| format!("site/{}/dev/{}/temp", (i * 7) % 100, i * 13 % (n / 100)))
            .collect();
        let mut r: Option<Router> = None;
        c.bench_function(&format!("match_shards/{n}_filters"), |b| {
            let r = r.get_or_insert_with(|| router_with(n));
            let (mut set, mut i) = (ShardSet::new(), 0);
            b.iter(|| {
                i = (i + 1) % topics.len();
                set.clear();
                r.match_shards(black_box(&topics[i]), &mut set);
                black_box(set.len())
            })
        });
        c.bench_function(&format!("match_local/{n}_filters"), |b| {
            let r = r.get_or_insert_with(|| router_with(n));
            let (mut scratch, mut i) = (MatchScratch::new(), 0);
            b.iter(|| {
                i = (i + 1) % topics.len();
                black_box(r.match_local(black_box(&topics[i]), &mut scratch).len())
            })
        });
    }
}

fn bench_fanout(c: &mut Criterion) {
    let mut r = Router::new(0, 1);
    let f = TopicFilter::from_static("fan/out");
    for s in 0..1000 {
        r.subscribe_local(&f, sub(s));
    }
    let mut scratch = MatchScratch::new();
    c.bench_function("match_local/1000_subscribers_one_filter", |b| {
        b.iter(|| black_box(r.match_local(black_box("fan/out"), &mut scratch).len()))
    });
    // Same 1000 sessions, each also on an overlapping wildcard: the merge path.
    let w = TopicFilter::from_static("fan/+");
    for s in 0..1000 {
        r.subscribe_local(&w, sub(s));
    }
    c.bench_function(
        "match_local/1000_subscribers_two_overlapping_filters",
        |b| b.iter(|| black_box(r.match_local(black_box("fan/out"), &mut scratch).len())),
    );
}

fn retained_store(n: u32) -> RetainedStore {
    let mut s = RetainedStore::new();
    let stored_at = Instant::now();
    for i in 0..n {
        let topic =
            TopicName::try_from(format!("site/{}/dev/{}/temp", i % 1000, i / 1000)).unwrap();
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: topic.clone(),
            packet_id: None,
            properties: PublishProperties::default().into(),
            payload: Bytes::from_static(b"21.5"),
        };
        s.set(
            topic.clone(),
            RetainedMessage {
                topic,
                publish,
                stored_at,
            },
        );
    }
    s
}

fn bench_retained(c: &mut Criterion) {
    let n = 1_000_000;
    let mut store: Option<RetainedStore> = None;
    let filter = TopicFilter::from_static("#");
    let mut g = c.benchmark_group("retained_replay_1M");
    g.sample_size(10);
    g.bench_function("whole_replay_batches_of_1000", |b| {
        let store = store.get_or_insert_with(|| {
            let s = retained_store(n);
            slowest_step(&s, &filter);
            s
        });
        let mut out: Vec<Rc<RetainedMessage>> = Vec::with_capacity(1000);
        b.iter(|| {
            let mut cursor = store.replay(&filter);
            let mut total = 0;
            loop {
                out.clear();
                let done = cursor.next_batch(store, 1000, &mut out);
                total += out.len();
                if done {
                    break;
                }
            }
            assert_eq!(total, n as usize);
        })
    });
    g.finish();
}

/// This thread's CPU time (excludes time preempted by other processes).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The figure that matters for stalls: the slowest single steps of a whole replay.
fn slowest_step(store: &RetainedStore, filter: &TopicFilter) {
    let mut out = Vec::with_capacity(1000);
    let (mut times, mut cpu) = (Vec::new(), Vec::new());
    let mut cursor = store.replay(filter);
    loop {
        out.clear();
        let (t, c) = (Instant::now(), thread_cpu());
        let done = cursor.next_batch(store, 1000, &mut out);
        times.push(t.elapsed());
        cpu.push(thread_cpu() - c);
        if done {
            break;
        }
    }
    let worst = times
        .iter()
        .enumerate()
        .max_by_key(|(_, t)| **t)
        .map(|(i, t)| (i, *t));
    let mut sorted = times.clone();
    sorted.sort();
    let pct = |p: usize| sorted[(sorted.len() - 1) * p / 100];
    eprintln!(
        "retained_replay_1M: {} steps of <= 1000: median {:?}, p99 {:?}, slowest {:?} (step {})",
        times.len(),
        pct(50),
        pct(99),
        worst.map_or(Duration::ZERO, |w| w.1),
        worst.map_or(0, |w| w.0),
    );
    cpu.sort();
    eprintln!(
        "retained_replay_1M: on-CPU time per step: median {:?}, p99 {:?}, max {:?}",
        cpu[cpu.len() / 2],
        cpu[(cpu.len() - 1) * 99 / 100],
        cpu[cpu.len() - 1],
    );
}

criterion_group!(benches, bench_match, bench_fanout, bench_retained);
criterion_main!(benches);
