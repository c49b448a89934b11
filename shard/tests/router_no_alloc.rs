//! The publish hot path allocates nothing once warm: `match_shards`, `match_local` (with merging)
//! and `match_shared` are run under a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringmq_codec::{QoS, RetainHandling, SubscriptionOptions, TopicFilter};
use ringmq_shard::router::{LocalSub, MatchScratch, PublishInfo, Router, ShardSet};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls in a thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

fn sub(session: u32, id: Option<u32>) -> LocalSub {
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: session.is_multiple_of(2),
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    LocalSub {
        session,
        options,
        subscription_id: id,
        acl_check: false,
    }
}

#[test]
fn matching_allocates_nothing_once_warm() {
    let mut r = Router::new(0, 4);
    for i in 0..2000u32 {
        let f = TopicFilter::try_from(format!("site/{}/dev/{}/temp", i % 50, i)).unwrap();
        r.subscribe_local(&f, sub(i, None));
        r.add_remote(&f, (i % 3 + 1) as u16);
    }
    for s in 0..500u32 {
        r.subscribe_local(
            &TopicFilter::from_static("site/+/dev/#"),
            sub(s, Some(s + 1)),
        );
        r.subscribe_local(&TopicFilter::from_static("site/7/#"), sub(s, Some(9)));
    }
    for s in 0..8u32 {
        r.subscribe_local(
            &TopicFilter::from_static("$share/g/site/#"),
            sub(1000 + s, None),
        );
    }
    let topics: Vec<String> = (0..64)
        .map(|i| format!("site/{}/dev/{}/temp", i % 50, i * 31))
        .collect();
    let mut scratch = MatchScratch::new();
    let mut set = ShardSet::new();
    let mut shared = Vec::with_capacity(8);
    let mut run = |r: &mut Router| {
        let mut n = 0;
        for t in &topics {
            set.clear();
            r.match_shards(t, &mut set);
            let info = PublishInfo {
                publisher: Some(3),
                retain: true,
            };
            n += r.match_local_with(t, info, &mut scratch).len();
            shared.clear();
            r.match_shared(t, &mut shared);
            for target in &shared {
                n += usize::from(r.pick_shared_local(&target.filter).is_some());
            }
        }
        n
    };
    let warm = run(&mut r); // grows the scratch buffers
    let probe = allocs();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    assert_eq!(allocs(), probe + 1, "the counter sees allocations");
    let before = allocs();
    let again = run(&mut r);
    assert_eq!(allocs() - before, 0, "allocations while matching");
    assert_eq!(warm, again);
    assert!(warm > 64 * 500, "the merge path ran: {warm}");
}
