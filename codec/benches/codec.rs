//! Micro-benchmarks: PUBLISH decode/encode (16 B, 1 KiB, 64 KiB), SUBSCRIBE with 10 filters,
//! and per-subscriber `PublishFrame::write`. Figures and machine: docs/codec.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq_codec::bytes::{Bytes, BytesMut};
use ringmq_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn publish(size: usize) -> Packet {
    let mut p = Publish::new(
        TopicName::from_static("sensors/building-1/floor-2/temp"),
        Bytes::from(vec![0xA5u8; size]),
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(42);
    Packet::Publish(p)
}

fn subscribe10() -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(7).unwrap(),
        filters: (0..10)
            .map(|i| {
                let f = TopicFilter::try_from(format!("sensors/+/floor-{i}/#")).unwrap();
                (f, SubscriptionOptions::with_qos(QoS::AtLeastOnce))
            })
            .collect(),
        properties: SubscribeProperties::default(),
    })
}

fn encoded(p: &Packet) -> Bytes {
    let mut out = BytesMut::new();
    p.encode(V5, &mut out).unwrap();
    out.freeze()
}

/// Decodes frames from a read buffer holding many of them, as a connection does (the buffer is
/// filled outside the timed part; splitting a frame off it is a refcount, no copy).
/// Times `iters` runs of `one` over read buffers of up to `batch` copies of `frame`, each
/// buffer filled outside the timing (as a read would fill it).
fn time_batches(
    iters: u64,
    batch: u64,
    frame: &[u8],
    mut one: impl FnMut(&mut BytesMut),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        let mut buf = BytesMut::with_capacity(frame.len() * n as usize);
        for _ in 0..n {
            buf.extend_from_slice(frame);
        }
        let start = Instant::now();
        for _ in 0..n {
            one(&mut buf);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn decode_bench(c: &mut Criterion, name: &str, p: &Packet) {
    let frame = encoded(p);
    let batch = (1 << 20) / frame.len().max(1);
    let batch = batch.clamp(1, 4096) as u64;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut dec = Decoder::new(0);
            dec.set_version(V5);
            time_batches(iters, batch, &frame, |buf| {
                black_box(dec.decode(buf).unwrap());
            })
        })
    });
}

/// The reference counting any zero-copy PUBLISH decode does, without the decode: split the
/// frame off the read buffer, slice the topic out of it, drop both (2 atomic increments, 2
/// atomic decrements on the read buffer's shared count). A floor for `decode_publish_16B`.
fn refcount_floor_bench(c: &mut Criterion, name: &str, p: &Packet) {
    let frame = encoded(p);
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            time_batches(iters, 4096, &frame, |buf| {
                let body = buf.split_to(frame.len()).freeze();
                let topic = body.slice(4..8);
                black_box((topic, body));
            })
        })
    });
}

fn encode_bench(c: &mut Criterion, name: &str, p: &Packet) {
    let mut out = BytesMut::with_capacity(p.encoded_len(V5));
    c.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            p.encode(V5, &mut out).unwrap();
            black_box(out.len())
        })
    });
}

fn publish_benches(c: &mut Criterion) {
    for (size, label) in [(16, "16B"), (1024, "1KiB"), (65536, "64KiB")] {
        let p = publish(size);
        decode_bench(c, &format!("decode_publish_{label}"), &p);
        if size == 16 {
            refcount_floor_bench(c, "refcount_floor_publish_16B", &p);
        }
        encode_bench(c, &format!("encode_publish_{label}"), &p);
    }
    let s = subscribe10();
    decode_bench(c, "decode_subscribe_10_filters", &s);
    encode_bench(c, "encode_subscribe_10_filters", &s);
}

fn frame_benches(c: &mut Criterion) {
    let Packet::Publish(p) = publish(16) else {
        unreachable!()
    };
    let frame = PublishFrame::new(&p, V5, QoS::AtLeastOnce);
    let mut out = BytesMut::with_capacity(4096);
    let mut id = 1u16;
    let mut g = c.benchmark_group("publish_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("new_16B", |b| {
        b.iter(|| black_box(PublishFrame::new(&p, V5, QoS::AtLeastOnce)))
    });
    g.bench_function("write_patch_16B", |b| {
        b.iter(|| {
            if out.len() > 3000 {
                out.clear();
            }
            id = id.wrapping_add(1).max(1);
            let d = Delivery {
                packet_id: PacketId::new(id),
                retain: id & 1 == 0,
                ..Default::default()
            };
            frame.write(&mut out, black_box(&d));
        })
    });
    let ids = [12u32];
    g.bench_function("write_alias_and_sub_id_16B", |b| {
        b.iter(|| {
            if out.len() > 3000 {
                out.clear();
            }
            let d = Delivery {
                packet_id: PacketId::new(9),
                topic_alias: Some((3, false)),
                subscription_ids: &ids,
                ..Default::default()
            };
            frame.write(&mut out, black_box(&d));
        })
    });
    g.finish();
}

criterion_group!(benches, publish_benches, frame_benches);
criterion_main!(benches);
