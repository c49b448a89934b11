//! The socket I/O backends (issue 15): each one forced, connections handed to their home
//! shard on both, bad input over the io_uring path as on epoll, and a tiny io_uring buffer
//! ring that runs dry: reading slows (counted), no byte is lost or corrupted.
#[macro_use]
mod common;

use bytes::BytesMut;
use common::raw::{connect_packet, publish_packet, subscribe_packet, version};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion};
use ringmq_shard::config::{IoBackend, ShardConfig};
use ringmq_shard::stats::CloseReason;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BACKENDS: [IoBackend; 2] = [IoBackend::Epoll, IoBackend::IoUring];

fn start(shards: usize, backend: IoBackend, tweak: impl FnOnce(&mut ShardConfig)) -> Broker {
    Broker::start_with(shards, |c| {
        c.io_backend = backend;
        tweak(c);
    })
}

/// Whether the broker's shards serve sockets through io_uring (only that backend submits).
fn on_uring(b: &Broker) -> bool {
    b.stat(|s| s.uring_submits.get()) > 0
}

fn encode(v: ProtocolVersion, p: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).expect("encode");
    out.to_vec()
}

/// A subscriber to `filter` at QoS 1 (raw client: exact bytes checked).
async fn subscriber(addr: std::net::SocketAddr, v: ProtocolVersion, id: &str, filter: &str) -> Raw {
    let (mut r, _) = Raw::connect(addr, v, id, true).await;
    r.send(&Packet::Subscribe(subscribe_packet(1, filter, 1)))
        .await;
    assert!(matches!(r.expect_packet("SUBACK").await, Packet::SubAck(_)));
    r
}

/// Each backend, forced, serves publish/subscribe on 1 and 2 shards and both protocols, with
/// publisher and subscriber on different home shards.
#[tokio::test]
async fn each_backend_forced_serves_and_hands_off() {
    for backend in BACKENDS {
        for shards in [1, 2] {
            for proto in [Proto::V4, Proto::V5] {
                let b = start(shards, backend, |_| {});
                let v = version(proto);
                let (pub_id, sub_id) = cross_shard_ids(&format!("fb-{shards}"), shards);
                let mut sub = subscriber(b.addr, v, &sub_id, "fb/#").await;
                let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
                for i in 0..50u16 {
                    let payload = format!("{backend:?}-{i}");
                    publ.send(&Packet::Publish(publish_packet(
                        "fb/t",
                        1,
                        false,
                        i + 1,
                        payload.as_bytes(),
                    )))
                    .await;
                }
                for i in 0..50u16 {
                    let p = sub.expect_publish("a publish").await;
                    assert_eq!(&p.payload[..], format!("{backend:?}-{i}").as_bytes());
                }
                assert_eq!(
                    on_uring(&b),
                    backend == IoBackend::IoUring,
                    "{backend:?} serves the sockets"
                );
            }
        }
    }
}

/// Bytes that follow CONNECT in the same segment reach the home shard after a handoff (on
/// io_uring they were received by the accepting shard's ring already).
#[tokio::test]
async fn bytes_behind_connect_follow_the_handoff() {
    for backend in BACKENDS {
        let b = start(2, backend, |_| {});
        let v = ProtocolVersion::V3_1_1;
        for n in 0..8 {
            let (pub_id, sub_id) = cross_shard_ids(&format!("behind{n}"), 2);
            let mut sub = subscriber(b.addr, v, &sub_id, "behind/#").await;
            let mut bytes = encode(
                v,
                &Packet::Connect(Box::new(connect_packet(v, &pub_id, true))),
            );
            for i in 0..20u16 {
                let payload = format!("m{i}");
                bytes.extend(encode(
                    v,
                    &Packet::Publish(publish_packet("behind/t", 0, false, 0, payload.as_bytes())),
                ));
            }
            let mut s = TcpStream::connect(b.addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            for i in 0..20u16 {
                let p = sub
                    .expect_publish("a publish sent right behind CONNECT")
                    .await;
                assert_eq!(&p.payload[..], format!("m{i}").as_bytes(), "{backend:?}");
            }
        }
        // 16 connections on 2 shards: the kernel spreads them, so some were accepted away
        // from their home shard and handed over (all 16 at home: odds 2^-16).
        assert!(
            b.stat(|s| s.closes_for(CloseReason::HandedOff)) > 0,
            "{backend:?}: no handoff"
        );
        assert_eq!(on_uring(&b), backend == IoBackend::IoUring);
    }
}

/// A peer that resets its connection in the middle of a packet: counted as a lost
/// connection, others unaffected (both backends).
#[tokio::test]
async fn reset_mid_packet() {
    for backend in BACKENDS {
        let b = start(1, backend, |_| {});
        let v = ProtocolVersion::V3_1_1;
        let mut sub = subscriber(b.addr, v, "rst-sub", "rst/#").await;
        let before = b.stat(|s| {
            s.closes_for(CloseReason::ConnectionLost) + s.closes_for(CloseReason::IoError)
        });
        for i in 0..20 {
            let s = TcpStream::connect(b.addr).await.unwrap();
            let mut bytes = encode(
                v,
                &Packet::Connect(Box::new(connect_packet(v, &format!("rst{i}"), true))),
            );
            let publish = encode(
                v,
                &Packet::Publish(publish_packet("rst/t", 0, false, 0, &[7; 3000])),
            );
            bytes.extend_from_slice(&publish[..1500]);
            let mut s = s;
            s.write_all(&bytes).await.unwrap();
            // SO_LINGER 0: close sends RST.
            s.set_zero_linger().unwrap();
            drop(s);
        }
        check_for(WAIT, "every reset counted", || async {
            let now = b.stat(|s| {
                s.closes_for(CloseReason::ConnectionLost) + s.closes_for(CloseReason::IoError)
            });
            (now - before >= 20).then_some(())
        })
        .await;
        check_for(WAIT, "no connection left but the subscriber", || async {
            (b.stat(|s| s.connections.get()) == 1).then_some(())
        })
        .await;
        // Nothing of the cut packets was delivered; the subscriber still works.
        let (mut p, _) = Raw::connect(b.addr, v, "rst-pub", true).await;
        p.send(&Packet::Publish(publish_packet(
            "rst/ok", 0, false, 0, b"ok",
        )))
        .await;
        let got = sub.expect_publish("the healthy publish").await;
        assert_eq!(&got.payload[..], b"ok", "{backend:?}");
    }
}

/// A peer that half-closes after its last packets: they are handled, then the connection
/// ends (both backends).
#[tokio::test]
async fn half_close_after_packets() {
    for backend in BACKENDS {
        let b = start(1, backend, |_| {});
        let v = ProtocolVersion::V3_1_1;
        let mut sub = subscriber(b.addr, v, "hc-sub", "hc/#").await;
        let mut bytes = encode(
            v,
            &Packet::Connect(Box::new(connect_packet(v, "hc-pub", true))),
        );
        for i in 0..10u16 {
            bytes.extend(encode(
                v,
                &Packet::Publish(publish_packet(
                    "hc/t",
                    0,
                    false,
                    0,
                    format!("h{i}").as_bytes(),
                )),
            ));
        }
        let mut s = TcpStream::connect(b.addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        s.shutdown().await.unwrap();
        for i in 0..10u16 {
            let p = sub
                .expect_publish("a publish sent before the half-close")
                .await;
            assert_eq!(&p.payload[..], format!("h{i}").as_bytes(), "{backend:?}");
        }
        check_for(WAIT, "the half-closed connection ends", || async {
            (b.stat(|s| s.connections.get()) == 1).then_some(())
        })
        .await;
    }
}

/// A flood of valid packets on one connection and garbage on another: the healthy pair keeps
/// getting every QoS 1 message; the garbage is refused with its typed reason (both backends).
#[tokio::test]
async fn flood_and_garbage() {
    for backend in BACKENDS {
        let b = start(1, backend, |_| {});
        let v = ProtocolVersion::V3_1_1;
        let mut sub = subscriber(b.addr, v, "fl-sub", "fl/ok").await;
        let (mut healthy, _) = Raw::connect(b.addr, v, "fl-pub", true).await;
        let addr = b.addr;
        let flooder = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut bytes = encode(
                v,
                &Packet::Connect(Box::new(connect_packet(v, "fl-flood", true))),
            );
            let one = encode(
                v,
                &Packet::Publish(publish_packet("fl/none", 0, false, 0, &[1; 1000])),
            );
            for _ in 0..2000 {
                bytes.extend_from_slice(&one);
            }
            let flood: Vec<u8> = one.repeat(2000);
            for _ in 0..10 {
                if s.write_all(&bytes).await.is_err() {
                    break;
                }
                bytes.clone_from(&flood);
            }
        });
        let mut garbage = TcpStream::connect(b.addr).await.unwrap();
        let mut g = encode(
            v,
            &Packet::Connect(Box::new(connect_packet(v, "fl-garbage", true))),
        );
        g.extend_from_slice(&[0xF0; 4096]);
        let _ = garbage.write_all(&g).await;
        for i in 0..100u16 {
            healthy
                .send(&Packet::Publish(publish_packet(
                    "fl/ok",
                    1,
                    false,
                    i + 1,
                    format!("q{i}").as_bytes(),
                )))
                .await;
        }
        for i in 0..100u16 {
            let p = sub
                .expect_publish("a healthy publish during the flood")
                .await;
            assert_eq!(&p.payload[..], format!("q{i}").as_bytes(), "{backend:?}");
        }
        check_for(WAIT, "the garbage refused as malformed", || async {
            (b.stat(|s| s.closes_for(CloseReason::MalformedPacket)) >= 1).then_some(())
        })
        .await;
        flooder.await.unwrap();
    }
}

/// io_uring with a ring of 2 buffers of 64 bytes: publishers sending packets far larger than a
/// buffer, all at once, run the ring dry again and again (counted); every byte arrives, in
/// order, unchanged, on 1 and 2 shards.
#[tokio::test]
async fn tiny_ring_runs_dry_without_losing_bytes() {
    for shards in [1, 2] {
        let b = start(shards, IoBackend::IoUring, |c| {
            c.io_uring_buffers = 2;
            c.io_uring_buffer_size = 64;
        });
        assert!(on_uring(&b) || b.stat(|s| s.uring_submits.get()) == 0);
        let v = ProtocolVersion::V5;
        let mut sub = subscriber(b.addr, v, "tiny-sub", "tiny/#").await;
        const PUBS: usize = 4;
        const MSGS: usize = 150;
        let mut tasks = Vec::new();
        for p in 0..PUBS {
            let addr = b.addr;
            tasks.push(tokio::spawn(async move {
                let (mut publ, _) = Raw::connect(addr, v, &format!("tiny-pub{p}"), true).await;
                let mut bytes = Vec::new();
                for i in 0..MSGS {
                    bytes.extend(encode(
                        v,
                        &Packet::Publish(publish_packet(
                            &format!("tiny/{p}"),
                            0,
                            false,
                            0,
                            &payload(p, i),
                        )),
                    ));
                }
                // All at once: the broker gets far more than the ring holds.
                publ.send_bytes(&bytes).await;
                publ
            }));
        }
        let mut next = [0usize; PUBS];
        for _ in 0..PUBS * MSGS {
            let m = sub.expect_publish("a publish through the tiny ring").await;
            let p: usize = m.topic.as_str()["tiny/".len()..].parse().unwrap();
            assert_eq!(
                &m.payload[..],
                &payload(p, next[p])[..],
                "publisher {p} message {}",
                next[p]
            );
            next[p] += 1;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(
            b.stat(|s| s.uring_buffers_dry.get()) > 0,
            "the 2-buffer ring ran dry and it was counted"
        );
    }
}

/// Message `i` of publisher `p`: a size from 1 to ~3 KiB and bytes that name both.
fn payload(p: usize, i: usize) -> Vec<u8> {
    let len = 1 + (i * 97 + p * 31) % 3000;
    (0..len).map(|k| (k * 7 + i * 13 + p) as u8).collect()
}

/// `idle_spin` (the shard polls for a while before it sleeps) on each backend, 1 and 2 shards,
/// both protocols: QoS 1 publishes cross shards while the shards spin, are delivered after the
/// spin lapsed and the shards slept (the spin's sends are submitted before it, not at its end),
/// and a timer still fires (a client silent past 1.5 x its keep alive is closed).
#[tokio::test]
async fn idle_spin_serves_sleeps_and_keeps_timers() {
    for backend in BACKENDS {
        for shards in [1, 2] {
            for proto in [Proto::V4, Proto::V5] {
                let b = start(shards, backend, |c| {
                    c.idle_spin = std::time::Duration::from_micros(200);
                });
                let v = version(proto);
                let (pub_id, sub_id) = cross_shard_ids(&format!("spin-{shards}"), shards);
                let mut sub = subscriber(b.addr, v, &sub_id, "spin/#").await;
                let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
                for round in 0..3u16 {
                    if round > 0 {
                        // Idle far longer than the spin: the shards go to sleep.
                        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    }
                    for i in 0..20u16 {
                        let n = round * 20 + i;
                        let payload = format!("{backend:?}-{n}");
                        publ.send(&Packet::Publish(publish_packet(
                            "spin/t",
                            1,
                            false,
                            n + 1,
                            payload.as_bytes(),
                        )))
                        .await;
                    }
                    for i in 0..20u16 {
                        let n = round * 20 + i;
                        let p = sub.expect_publish("a publish while spinning").await;
                        assert_eq!(&p.payload[..], format!("{backend:?}-{n}").as_bytes());
                    }
                }
                assert_eq!(
                    on_uring(&b),
                    backend == IoBackend::IoUring,
                    "{backend:?} serves the sockets"
                );
                let mut c = connect_packet(v, &format!("spin-ka-{shards}"), true);
                c.keep_alive = 1;
                let (mut quiet, _) = Raw::connect_with(b.addr, c).await;
                quiet
                    .expect_closed(std::time::Duration::from_secs(5), "keep alive 1 s, silent")
                    .await;
            }
        }
    }
}

/// io_uring with `SEND_ZC` from 1 KiB (`--io-uring-send-zc 1024`, and off for comparison):
/// large QoS 1 payloads, published all at once so the subscriber's socket fills and sends come
/// back short, arrive in order and unchanged, on 1 and 2 shards; the zero-copy sends were used
/// and each one's notification handled (the connection goes on sending after it).
#[tokio::test]
async fn send_zc_delivers_large_payloads_intact() {
    for (shards, zc) in [(1, 0), (1, 1024), (2, 1024)] {
        let b = start(shards, IoBackend::IoUring, |c| {
            c.io_uring_send_zc = zc;
        });
        let v = ProtocolVersion::V5;
        let (pub_id, sub_id) = cross_shard_ids("zc", shards);
        let mut sub = subscriber(b.addr, v, &sub_id, "zc/#").await;
        let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
        const MSGS: usize = 40;
        let big = |i: usize| -> Vec<u8> {
            let len = 512 + (i * 7919) % (200 << 10);
            (0..len).map(|k| (k * 31 + i) as u8).collect()
        };
        let mut bytes = Vec::new();
        for i in 0..MSGS {
            let p = publish_packet("zc/t", 1, false, i as u16 + 1, &big(i));
            bytes.extend(encode(v, &Packet::Publish(p)));
        }
        publ.send_bytes(&bytes).await;
        for i in 0..MSGS {
            let m = sub
                .expect_publish(&format!("message {i} (SEND_ZC from {zc})"))
                .await;
            assert_eq!(m.payload.len(), big(i).len(), "message {i}");
            assert!(m.payload[..] == big(i)[..], "message {i} bytes");
            let id = m.packet_id.expect("QoS 1");
            sub.send(&Packet::PubAck(ringmq_codec::PubResp::new(id)))
                .await;
        }
        if on_uring(&b) && zc > 0 {
            assert!(
                b.stat(|s| s.uring_sends_zc.get()) > 0,
                "large sends went as SEND_ZC"
            );
        }
    }
}
