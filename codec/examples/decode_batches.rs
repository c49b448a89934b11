//! PUBLISH decode/encode at 16 B timed per batch of 4096 frames, reporting the best and the
//! median batch: on a shared machine a batch that no other job interrupted shows the codec's
//! own cost, which criterion's mean (every interruption included) does not. Same setup as
//! `benches/codec.rs` (v5, QoS 1, 31-byte topic, a fresh read buffer per batch, packets
//! dropped). `cargo run --release -p ringmq-codec --example decode_batches`.

use std::hint::black_box;
use std::time::Instant;

use ringmq_codec::bytes::{Bytes, BytesMut};
use ringmq_codec::*;

const BATCH: usize = 4096;
const BATCHES: usize = 3000;

/// (best, median) ns per operation over the batches.
fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn filled(frame: &Bytes) -> BytesMut {
    let mut buf = BytesMut::with_capacity(frame.len() * BATCH);
    for _ in 0..BATCH {
        buf.extend_from_slice(frame);
    }
    buf
}

fn main() {
    let mut p = Publish::new(
        TopicName::from_static("sensors/building-1/floor-2/temp"),
        Bytes::from(vec![0xA5u8; 16]),
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(42);
    let p = Packet::Publish(p);
    let mut out = BytesMut::new();
    p.encode(ProtocolVersion::V5, &mut out).unwrap();
    let frame = out.freeze();
    let mut dec = Decoder::new(0);
    dec.set_version(ProtocolVersion::V5);
    let mut eout = BytesMut::with_capacity(256);
    let (mut d, mut f, mut e) = (Vec::new(), Vec::new(), Vec::new());
    let per_op = |t: Instant| t.elapsed().as_nanos() as f64 / BATCH as f64;
    for _ in 0..BATCHES {
        let mut buf = filled(&frame);
        let t = Instant::now();
        for _ in 0..BATCH {
            black_box(dec.decode(&mut buf).unwrap());
        }
        d.push(per_op(t));
        // The reference counting alone: split the frame off, slice the topic, drop both.
        let mut buf = filled(&frame);
        let t = Instant::now();
        for _ in 0..BATCH {
            let body = buf.split_to(frame.len()).freeze();
            let topic = body.slice(4..35);
            black_box((topic, body));
        }
        f.push(per_op(t));
        let t = Instant::now();
        for _ in 0..BATCH {
            eout.clear();
            p.encode(ProtocolVersion::V5, &mut eout).unwrap();
            black_box(eout.len());
        }
        e.push(per_op(t));
    }
    for (name, v) in [
        ("decode PUBLISH 16 B", d),
        ("refcount floor (split, slice, drop)", f),
        ("encode PUBLISH 16 B", e),
    ] {
        let (best, median) = summary(v);
        println!("{name:38} best batch {best:6.1} ns   median batch {median:6.1} ns");
    }
}
