//! Outbound buffers kept for reuse, one pool per shard (thread).
//!
//! A connection's outbound buffer is released once everything in it left
//! (`ConnOut::release_idle_buffer`: an idle connection holds none), and on
//! io_uring a plain connection's whole buffer goes to its `SEND`
//! (`Uring::send_from`), which drops it at the completion. Started again
//! from nothing, the next bytes grew a new buffer by doubling at every
//! tick; on io_uring, where bytes wait a tick for the send in flight, past
//! jemalloc's 16 KiB large class (`large_ralloc`: 1.4 % of the broker's
//! CPU on 50 QoS 0 pairs, bench/results/2026-12-05-io-uring-4.md). Here
//! those buffers come back and the next connection to write takes one with
//! its capacity: no allocation, no growth.
//!
//! Bounded: at most [`KEEP_BYTES`] per shard in buffers of
//! [`KEEP_MIN`]..=[`KEEP_MAX`] bytes; connections hold nothing while idle,
//! so the per-connection idle memory does not change.

use bytes::BytesMut;
use std::cell::RefCell;

/// The smallest buffer kept (below it growing is as cheap as reusing).
pub(crate) const KEEP_MIN: usize = 1 << 10;
/// The largest buffer kept.
pub(crate) const KEEP_MAX: usize = 64 << 10;
/// Bytes of capacity the pool holds at most.
pub(crate) const KEEP_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Pool {
    bufs: Vec<BytesMut>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// An empty buffer, with the capacity of one given back if any.
#[inline]
pub(crate) fn take() -> BytesMut {
    POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        let b = p.bufs.pop()?;
        p.bytes -= b.capacity();
        Some(b)
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// A buffer whose bytes all left: kept for [`take`] if within bounds.
#[inline]
pub(crate) fn give(mut b: BytesMut) {
    b.clear();
    // Bytes sent from its front leave an offset: reclaimed (no copy, no
    // allocation) when the buffer is its memory's only owner; else it is
    // kept with the capacity that is its own.
    let _ = b.try_reclaim(b.capacity() + 1);
    if !(KEEP_MIN..=KEEP_MAX).contains(&b.capacity()) {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.bytes + b.capacity() <= KEEP_BYTES {
            p.bytes += b.capacity();
            p.bufs.push(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_their_capacity_within_bounds() {
        // Its own thread: a fresh pool.
        std::thread::spawn(|| {
            assert_eq!(take().capacity(), 0, "empty pool: a new empty buffer");
            let mut b = BytesMut::with_capacity(8 << 10);
            b.extend_from_slice(&[7; 3000]);
            bytes::Buf::advance(&mut b, 3000); // sent
            give(b);
            let b = take();
            assert!(b.is_empty() && b.capacity() >= 8 << 10, "reclaimed whole");
            // Too small or too large: dropped.
            give(BytesMut::with_capacity(100));
            give(BytesMut::with_capacity(KEEP_MAX + 1));
            assert_eq!(take().capacity(), 0);
            // Bounded in bytes.
            for _ in 0..(KEEP_BYTES / KEEP_MAX + 8) {
                give(BytesMut::with_capacity(KEEP_MAX));
            }
            let mut n = 0;
            while take().capacity() > 0 {
                n += 1;
            }
            assert_eq!(n, KEEP_BYTES / KEEP_MAX);
            // A split-off part that shares its memory is kept only for
            // what is its own; writing to it never touches the other part.
            let mut whole = BytesMut::with_capacity(4 << 10);
            whole.extend_from_slice(&[1; 2048]);
            let front = whole.split_to(1024).freeze();
            give(whole);
            let mut again = take();
            again.extend_from_slice(&[2; 4096]);
            assert!(front.iter().all(|&x| x == 1));
        })
        .join()
        .unwrap();
    }
}
