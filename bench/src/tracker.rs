//! Loss, duplicate and reorder detection from payload sequence numbers.
//!
//! One [`Stream`] per (subscriber, publisher): the next expected sequence number and a
//! 64-message window of what arrived just behind it. A number below the window's end is
//! a duplicate if its bit is set, otherwise a late (out-of-order) arrival. Numbers older
//! than the window are counted as late. Lost = expected - unique, computed at the end.

/// What one received sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one expected, or a jump ahead (the gap may arrive later or be lost).
    InOrder,
    /// Below the highest seen and not seen before.
    Late,
    /// Seen before.
    Duplicate,
}

/// Per publisher stream state, 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream {
    next: u64,
    /// Bit i set: `next - 1 - i` received.
    window: u64,
}

impl Stream {
    #[inline]
    pub fn on_seq(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.window = if shift >= 64 {
                1
            } else {
                (self.window << shift) | 1
            };
            self.next = seq + 1;
            return Arrival::InOrder;
        }
        let back = self.next - 1 - seq;
        if back >= 64 {
            return Arrival::Late;
        }
        let bit = 1u64 << back;
        if self.window & bit != 0 {
            Arrival::Duplicate
        } else {
            self.window |= bit;
            Arrival::Late
        }
    }
}

/// Counts for one subscriber (or merged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Messages seen for the first time (in order or late).
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Publishes from a publisher this subscriber was not expected to get (or foreign payloads).
    pub unexpected: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.unique += o.unique;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
    }
}

/// The streams of one subscriber, indexed through the sorted publisher list it matches.
#[derive(Debug)]
pub struct Tracker {
    /// Sorted global publisher indices this subscriber expects; empty + `all` = every one.
    publishers: Vec<u32>,
    all: bool,
    streams: Vec<Stream>,
}

impl Tracker {
    /// `publishers` sorted; `total` publishers overall (used when it matches all of them).
    pub fn new(publishers: Vec<u32>, total: usize) -> Tracker {
        let all = publishers.len() == total;
        let streams = vec![Stream::default(); publishers.len()];
        Tracker {
            publishers: if all { Vec::new() } else { publishers },
            all,
            streams,
        }
    }

    /// Records one arrival into `counts`; returns true if it was a first sighting.
    #[inline]
    pub fn on_message(&mut self, publisher: u32, seq: u64, counts: &mut Counts) -> bool {
        let slot = if self.all {
            Some(publisher as usize).filter(|&i| i < self.streams.len())
        } else {
            self.publishers.binary_search(&publisher).ok()
        };
        let Some(slot) = slot else {
            counts.unexpected += 1;
            return false;
        };
        match self.streams[slot].on_seq(seq) {
            Arrival::InOrder => {
                counts.unique += 1;
                true
            }
            Arrival::Late => {
                counts.unique += 1;
                counts.out_of_order += 1;
                true
            }
            Arrival::Duplicate => {
                counts.duplicated += 1;
                false
            }
        }
    }

    /// Publishers this subscriber expects (global indices).
    pub fn expected_publishers(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        if self.all {
            Box::new(0..self.streams.len() as u32)
        } else {
            Box::new(self.publishers.iter().copied())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_anomalies() {
        let mut t = Tracker::new(vec![0], 1);
        let mut c = Counts::default();
        for s in 0..1000 {
            assert!(t.on_message(0, s, &mut c));
        }
        assert_eq!(c.unique, 1000);
        assert_eq!(c.duplicated + c.out_of_order, 0);
    }

    #[test]
    fn duplicates_and_late_arrivals_are_told_apart() {
        let mut s = Stream::default();
        assert_eq!(s.on_seq(0), Arrival::InOrder);
        assert_eq!(s.on_seq(2), Arrival::InOrder); // 1 missing for now
        assert_eq!(s.on_seq(1), Arrival::Late);
        assert_eq!(s.on_seq(1), Arrival::Duplicate);
        assert_eq!(s.on_seq(2), Arrival::Duplicate);
        assert_eq!(s.on_seq(100), Arrival::InOrder);
        assert_eq!(s.on_seq(3), Arrival::Late); // beyond the window: counted late
    }

    #[test]
    fn foreign_publishers_are_unexpected() {
        let mut t = Tracker::new(vec![3, 7], 10);
        let mut c = Counts::default();
        assert!(t.on_message(7, 0, &mut c));
        assert!(!t.on_message(4, 0, &mut c));
        assert_eq!(c.unexpected, 1);
    }
}
