//! Issue 17, case 3: partial packets. A packet must complete within `packet_timeout` of its
//! first byte (keep alive 0 does not exempt it) or the connection closes with
//! `packet_timeout`; the bytes of packets still being received are bounded per shard
//! (`partial_packet_budget`): a flood of connections trickling unfinished 1 MiB PUBLISHes keeps
//! the broker's RSS within the budget, is closed at the deadline, and normal clients keep
//! flowing meanwhile.
#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::persist::{args, DataDir, Durable};
use common::raw::{connect_packet, publish_packet, subscribe_packet, version, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion};
use ringmq_shard::stats::CloseReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: [(Proto, usize); 4] = [
    (Proto::V4, 1),
    (Proto::V4, 2),
    (Proto::V5, 1),
    (Proto::V5, 2),
];

/// The fixed header and topic of a QoS 0 PUBLISH whose remaining length is `body` bytes.
fn publish_head(body: usize, v: ProtocolVersion) -> Vec<u8> {
    let mut h = vec![0x30];
    h.extend(common::raw::bytes_of::varint(body));
    h.extend([0, 3, b'a', b'/', b'x']);
    if v == ProtocolVersion::V5 {
        h.push(0); // no properties
    }
    h
}

/// A client with keep alive 0 sends the start of a 100 kB PUBLISH and then one byte every
/// 100 ms, forever: each byte would reset a keep-alive clock, but the packet's deadline
/// (600 ms from its first byte) closes it. Counted as `packet_timeout`; others unaffected.
#[tokio::test]
async fn trickled_packet_is_closed_at_its_deadline_with_keep_alive_0() {
    for (proto, shards) in CASES {
        let b = Broker::start_with(shards, |c| c.packet_timeout = Duration::from_millis(600));
        let v = version(proto);
        let mut c = connect_packet(v, "trickler", true);
        c.keep_alive = 0;
        let (mut raw, _) = Raw::connect_with(b.addr, c).await;
        raw.send_bytes(&publish_head(100_000, v)).await;
        raw.send_bytes(&[b'p'; 100]).await;
        let started = Instant::now();
        let closed = loop {
            raw.send_bytes(b"p").await;
            match raw.recv(Duration::from_millis(100)).await {
                RawEv::Closed => break true,
                RawEv::Timeout => {}
                other => panic!("{proto:?}: unexpected {other:?}"),
            }
            if started.elapsed() > WAIT {
                break false;
            }
        };
        assert!(
            closed,
            "{proto:?} {shards} shards: still open after {WAIT:?}"
        );
        check_for(WAIT, "one packet_timeout close", || async {
            (b.stat(|s| s.closes_for(CloseReason::PacketTimeout)) == 1).then_some(())
        })
        .await;
        assert_eq!(
            b.stat(|s| s.partial_bytes.get()),
            0,
            "its bytes left the budget"
        );
        // A normal client is served as before, and a packet sent whole is not timed out.
        let (p, s) = cross_shard_ids("after", shards);
        let mut sub = Client::connect(Opts::new(proto, b.addr, &s)).await;
        sub.subscribe("a/y", 1).await;
        let publ = Client::connect(Opts::new(proto, b.addr, &p)).await;
        publ.publish("a/y", 1, false, vec![1u8; 200_000]).await;
        assert_eq!(sub.recv("the 200 kB publish").await.payload.len(), 200_000);
    }
}

/// Broker RSS in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// 200 connections (bounded; the 1000 at a fifth of the cost) each announce a
/// 1 MiB PUBLISH and push all of it but its last byte, with keep alive 0. Two shards, 8 MiB
/// budget each, 3 s packet deadline. The broker's RSS grows by about the budget, not by
/// 200 MiB; every flooder is closed at its deadline; a QoS 1 pair exchanges messages while
/// the budget is spent; the budget is empty afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_packet_flood_stays_within_the_budget() {
    const FLOODERS: usize = 200;
    const BUDGET: u64 = 8 << 20;
    let dir = DataDir::new();
    let budget = BUDGET.to_string();
    let extra = [
        "--partial-packet-budget",
        budget.as_str(),
        "--packet-timeout-ms",
        "3000",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let b = Durable::start_args(&args(&dir.path, 2, "none", &extra));
    let pid = b.pid();
    // A healthy pair first, so its connections exist before the flood.
    let (p, s) = cross_shard_ids("healthy", 2);
    let v = version(Proto::V5);
    let (mut sub, _) = Raw::connect(b.addr, v, &s, true).await;
    sub.send(&Packet::Subscribe(subscribe_packet(1, "ok/t", 1)))
        .await;
    assert!(matches!(
        sub.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let (mut publ, _) = Raw::connect(b.addr, v, &p, true).await;
    let baseline = rss_kib(pid);

    let body_len = (1 << 20) - 16;
    let body = Arc::new(vec![b'f'; body_len]);
    let closed = Arc::new(AtomicUsize::new(0));
    // Flooders that have their CONNACK: the connection burst is over once all have.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..FLOODERS {
        let proto = if i % 2 == 0 { Proto::V4 } else { Proto::V5 };
        let (addr, body, closed, acked) = (b.addr, body.clone(), closed.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let v = version(proto);
            let mut c = connect_packet(v, &format!("flood-{i}"), true);
            c.keep_alive = 0;
            let mut out = bytes::BytesMut::new();
            Packet::Connect(Box::new(c)).encode(v, &mut out).unwrap();
            // The harness's transport (TCP, TLS, WebSocket or WSS): the flood
            // is MQTT bytes the broker must decrypt/unframe, as a real attacker's.
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut rd, mut wr) = tokio::io::split(common::raw::over_transport(tcp).await);
            wr.write_all(&out).await.unwrap();
            let head = publish_head(body_len, v);
            let rest = body_len - (head.len() - 2) - 1; // all but the last byte
            let writer = tokio::spawn(async move {
                let _ = wr.write_all(&head).await;
                let _ = wr.write_all(&body[..rest]).await;
                let _ = wr.flush().await; // a WebSocket sink sends its frame on flush
                wr // kept open: the broker must close it
            });
            let mut buf = [0u8; 256];
            let end = Instant::now() + Duration::from_secs(60);
            let mut first = true;
            loop {
                match tokio::time::timeout_at(end.into(), rd.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {
                        // CONNACK
                        if std::mem::take(&mut first) {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => panic!("flooder {i} still open after 60 s"),
                }
            }
            closed.fetch_add(1, Ordering::Relaxed);
            writer.abort();
        }));
    }
    // While the flood lasts: RSS sampled, and the healthy pair keeps exchanging QoS 1.
    let mut peak = baseline;
    let mut exchanged = 0u16;
    let mut slowest = Duration::ZERO;
    // Exchanges while flooders still connect (200 handshakes, over TLS in a
    // debug build on a shared machine): reported, not asserted.
    let mut slowest_burst = Duration::ZERO;
    let mut after_burst = 0u16;
    // Until every flooder is closed, or every flooder task ended (one that failed, e.g. its
    // handshake refused on a loaded machine, panics below instead of hanging this loop).
    while closed.load(Ordering::Relaxed) < FLOODERS && !tasks.iter().all(|t| t.is_finished()) {
        peak = peak.max(rss_kib(pid));
        if exchanged < 50 {
            exchanged += 1;
            let burst = acked.load(Ordering::Relaxed) < FLOODERS;
            let t0 = Instant::now();
            publ.send(&Packet::Publish(publish_packet(
                "ok/t", 1, false, exchanged, b"hi",
            )))
            .await;
            assert!(matches!(
                publ.expect_packet("PUBACK").await,
                Packet::PubAck(_)
            ));
            let got = sub.expect_publish("the healthy message").await;
            if let Some(id) = got.packet_id {
                sub.send(&Packet::PubAck(common::raw::resp(id.get()))).await;
            }
            if burst {
                slowest_burst = slowest_burst.max(t0.elapsed());
            } else {
                after_burst += 1;
                slowest = slowest.max(t0.elapsed());
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let paused: f64 = (0..2)
        .filter_map(|s| b.metric(&format!("ringmq_reads_paused_total{{shard=\"{s}\"}}")))
        .sum();
    let timeouts: f64 = (0..2)
        .filter_map(|s| {
            b.metric(&format!(
                "ringmq_connections_closed_total{{shard=\"{s}\",reason=\"packet_timeout\"}}"
            ))
        })
        .sum();
    let held: f64 = (0..2)
        .filter_map(|s| b.metric(&format!("ringmq_partial_packet_bytes{{shard=\"{s}\"}}")))
        .sum();
    let dry: f64 = (0..2)
        .filter_map(|s| {
            b.metric(&format!(
                "ringmq_io_uring_buffers_dry_total{{shard=\"{s}\"}}"
            ))
        })
        .sum();
    let grew_mib = (peak - baseline) as f64 / 1024.0;
    eprintln!(
        "flood: rss {baseline} -> peak {peak} KiB (+{grew_mib:.1} MiB), {paused} reads paused, \
         {timeouts} packet_timeout closes, {exchanged} healthy messages (slowest {slowest:?}, while connecting \
         {slowest_burst:?}), \
         receive ring dry {dry} times"
    );
    assert_eq!(
        timeouts as usize, FLOODERS,
        "every flooder closed at its deadline"
    );
    assert!(paused > 0.0, "the budget was reached and reads paused");
    assert_eq!(held, 0.0, "nothing held after the flood");
    assert!(
        after_burst >= 1,
        "the healthy pair exchanged messages while the flooders held the budget"
    );
    // Not a speed figure: a stall shows as an exchange that waited for the
    // flooders' 3 s deadline (on io_uring, a receive ring the paused
    // flooders had drained once did exactly that).
    assert!(
        slowest < Duration::from_millis(1500),
        "a healthy exchange waited {slowest:?} during the flood"
    );
    // 2 shards x 8 MiB budget, plus up to 4 KiB per connection over budget, plus allocator
    // slack (buffers grow by doubling): far below the 200 MiB the flood would otherwise take.
    assert!(
        grew_mib < 3.0 * (2 * BUDGET) as f64 / (1 << 20) as f64,
        "RSS grew {grew_mib:.1} MiB for a {} MiB budget",
        (2 * BUDGET) >> 20
    );
}
