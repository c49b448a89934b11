//! What one idle connection keeps, struct by struct (`docs/connection-memory.md`
//! says where every byte goes). `cargo test -p ringmq-shard per_connection_sizes -- --nocapture`
//! prints the table; the bounds catch a field that grows a struct by surprise.

use std::mem::size_of;

/// The shape of a `slab::Slab` entry (the crate keeps its own private).
#[allow(dead_code)]
enum Entry<T> {
    Vacant(usize),
    Occupied(T),
}

#[test]
fn per_connection_sizes() {
    let rows: [(&str, usize, usize); 11] = [
        (
            "Session (slab entry payload)",
            size_of::<crate::session::Session>(),
            200,
        ),
        (
            "slab::Entry<Session>",
            size_of::<Entry<crate::session::Session>>(),
            200,
        ),
        (
            "ConnOut (in an Rc, +16)",
            size_of::<super::conn_out::ConnOut>(),
            96,
        ),
        (
            "Served (the connection task's future)",
            size_of::<super::connection::Served>(),
            144,
        ),
        ("  Link", size_of::<super::connection::Link>(), 112),
        ("  Stack", size_of::<super::stack::Stack>(), 16),
        ("  Partial", size_of::<super::read_budget::Partial>(), 16),
        ("  Decoder", size_of::<ringmq_codec::Decoder>(), 8),
        ("  Io", size_of::<super::poller::Io>(), 8),
        (
            "poller Slot (slots.rs, untagged)",
            size_of::<super::slots::Slot>(),
            24,
        ),
        ("io_uring Sock", size_of::<super::uring::Sock>(), 16),
    ];
    for (name, n, _) in rows {
        println!("{name:45} {n:4}");
    }
    for (name, n, max) in rows {
        assert!(n <= max, "{name}: {n} bytes, more than {max}");
    }
}
