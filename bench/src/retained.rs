//! `retained`: store N retained messages (one topic each), then let M new subscribers
//! of `PREFIX/#` receive them all. Reports replay deliveries/s, the time from SUBSCRIBE
//! to each delivery (as latency) and to the last one, and loss/duplicates per message.

use crate::cli::RetainedArgs;
use crate::conn::{check_suback, with_timeout, AckKind, Conn, Login, SETUP_TIMEOUT};
use crate::payload::{epoch, now_ns, read_stamp};
use crate::plan::{protocol, Defaults, Load};
use crate::runner::{on_cores, placement, raise_fd_limit};
use crate::stats::{new_histogram, CoreStats, Latency, Summary};
use crate::tracker::Tracker;
use bytes::Bytes;
use futures_lite::future::or;
use ringmq_codec::{Packet, PacketId, Publish, PublishProperties, QoS, TopicName};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Job {
    args: RetainedArgs,
    load: Load,
    target: crate::transport::Target,
    cores: usize,
    tag: String,
}

pub fn run(a: &RetainedArgs) -> Result<Summary, String> {
    epoch();
    raise_fd_limit();
    let d = Defaults {
        qos: 1,
        rate: 0.0,
        duration: 0.0,
        warmup: 0.0,
    };
    let load = Load::resolve(&a.load, &d)?;
    let job = Arc::new(Job {
        args: a.clone(),
        load,
        target: {
            let mut b = a.common.broker.clone();
            b.apply_url();
            crate::transport::Target::from_args(&b)?
        },
        cores: a.common.run.cores.max(1),
        tag: format!("{}-", std::process::id() % 100_000),
    });
    let pinned = placement(&a.common.run)?;
    let one = pinned.as_ref().map(|p| vec![p[0]]);
    let j = job.clone();
    let stored = on_cores(1, one.as_deref(), move |_| store(j.clone(), false))?.remove(0)?;
    let started = Instant::now();
    let j = job.clone();
    let results = on_cores(job.cores, pinned.as_deref(), move |core| {
        replay(j.clone(), core)
    })?;
    let replay_secs = started.elapsed().as_secs_f64();
    if !a.keep {
        let j = job.clone();
        on_cores(1, one.as_deref(), move |_| store(j.clone(), true))?.remove(0)?;
    }
    let mut t = CoreStats::default();
    let mut done = new_histogram();
    for (r, d) in results {
        t.merge(r);
        done.add(&d).expect("same bounds");
    }
    let mut s = summarize(&job, t, stored, replay_secs, pinned.unwrap_or_default());
    let dl = Latency::from_histogram(&done);
    s.notes.push(format!(
        "{stored} retained messages stored; latency = SUBSCRIBE to delivery; full replay per subscriber p50 {:.1} ms, max {:.1} ms",
        dl.p50_us / 1000.0,
        dl.max_us / 1000.0
    ));
    Ok(s)
}

fn summarize(
    job: &Job,
    t: CoreStats,
    stored: usize,
    replay_secs: f64,
    cpus: Vec<usize>,
) -> Summary {
    let a = &job.args;
    let expected = (stored * a.subscribers) as u64;
    Summary {
        scenario: "retained".into(),
        broker: job.target.describe(),
        mqtt: format!("{:?}", a.common.broker.mqtt),
        qos: job.load.qos as u8,
        payload_bytes: job.load.payload,
        publishers: 1,
        subscribers: a.subscribers,
        cores: job.cores,
        cpus,
        publish_secs: replay_secs,
        delivery_secs: replay_secs,
        sent: stored as u64,
        expected,
        received: t.received,
        unique: t.counts.unique,
        lost: expected.saturating_sub(t.counts.unique),
        duplicated: t.counts.duplicated,
        out_of_order: 0,
        unexpected: t.counts.unexpected,
        delivered_per_sec: t.counts.unique as f64 / replay_secs.max(1e-9),
        latency: Latency::from_histogram(&t.latency),
        connections: t.connected,
        connect_failures: t.connect_failures,
        connect_latency: Latency::from_histogram(&t.connect_latency),
        errors: t.errors,
        ..Summary::default()
    }
}

fn login(job: &Job, id: String) -> Login {
    let b = &job.args.common.broker;
    Login {
        version: protocol(b.mqtt),
        client_id: id,
        username: b.username.clone(),
        password: b.password.clone(),
        keep_alive: b.keep_alive,
        clean_start: true,
        will_topic: None,
    }
}

/// Publishes the retained messages (or, with `clear`, empty ones that delete them) and
/// waits until the broker has them: all acknowledged, or a PINGRESP after QoS 0.
async fn store(job: Arc<Job>, clear: bool) -> Result<usize, String> {
    let go = async {
        let l = login(
            &job,
            format!("{}{}r", job.args.common.broker.client_prefix, job.tag),
        );
        let mut c = Conn::open_target(&job.target, l.version).await?;
        c.login(&l).await?;
        let n = job.args.messages;
        let qos = job.load.qos;
        let mut filler = vec![b'r'; job.load.payload];
        let mut acked = 0usize;
        for i in 0..n {
            filler[0..8].copy_from_slice(&(i as u64).to_le_bytes());
            filler[16..20].copy_from_slice(&0u32.to_le_bytes());
            let topic = TopicName::try_from(format!("{}/{i}", job.args.prefix).as_str())
                .map_err(|e| io::Error::other(format!("bad topic: {e:?}")))?;
            let p = Publish {
                dup: false,
                qos,
                retain: true,
                topic,
                packet_id: (qos != QoS::AtMostOnce)
                    .then(|| PacketId::new((i % 65_535) as u16 + 1).expect("non-zero")),
                properties: PublishProperties::default().into(),
                payload: if clear {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(&filler)
                },
            };
            c.queue(&Packet::Publish(p))?;
            if c.wbuf.len() > 64 * 1024 || (qos != QoS::AtMostOnce && i - acked >= 1000) {
                c.drive().await?;
                acked += count_acks(&mut c)?;
            }
        }
        if qos == QoS::AtMostOnce {
            c.queue(&Packet::PingReq)?;
            while !matches!(c.read_packet().await?, Packet::PingResp) {}
        } else {
            while acked < n {
                c.drive().await?;
                acked += count_acks(&mut c)?;
            }
        }
        c.disconnect().await;
        Ok::<usize, io::Error>(n)
    };
    let limit = SETUP_TIMEOUT + job.load.drain + Duration::from_secs(60);
    with_timeout(limit, "storing", go)
        .await
        .map_err(|e| format!("storing retained messages: {e}"))
}

fn count_acks(c: &mut Conn) -> io::Result<usize> {
    let mut n = 0;
    while let Some(p) = c.next_packet()? {
        match p {
            Packet::PubAck(_) | Packet::PubComp(_) => n += 1,
            Packet::PubRec(r) => c.queue_ack(AckKind::PubRel, r.packet_id)?,
            _ => {}
        }
    }
    Ok(n)
}

/// One core's share of the subscribers; returns stats and the per-subscriber
/// full-replay times.
async fn replay(job: Arc<Job>, core: usize) -> (CoreStats, hdrhistogram::Histogram<u64>) {
    let mut st = CoreStats::default();
    let mut done = new_histogram();
    let mine: Vec<usize> = (core..job.args.subscribers).step_by(job.cores).collect();
    let tasks: Vec<_> = mine
        .into_iter()
        .map(|i| glommio::spawn_local(one_subscriber(job.clone(), i)))
        .collect();
    for t in tasks {
        let (s, d) = t.await;
        if let Some(d) = d {
            done.saturating_record(d.max(1));
        }
        st.merge(s);
    }
    (st, done)
}

async fn one_subscriber(job: Arc<Job>, i: usize) -> (CoreStats, Option<u64>) {
    let mut st = CoreStats::default();
    let r = or(subscribe_and_count(&job, i, &mut st), async {
        glommio::timer::sleep(job.load.drain.max(Duration::from_secs(10))).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "replay incomplete"))
    })
    .await;
    match r {
        Ok(d) => (st, Some(d)),
        Err(e) => {
            st.error(format!("subscriber {i}: {e}"));
            (st, None)
        }
    }
}

async fn subscribe_and_count(job: &Job, i: usize, st: &mut CoreStats) -> io::Result<u64> {
    let l = login(
        job,
        format!("{}{}s{i}", job.args.common.broker.client_prefix, job.tag),
    );
    let t = now_ns();
    let mut c = Conn::open_target(&job.target, l.version).await?;
    c.login(&l).await?;
    st.connected += 1;
    st.connect_latency
        .saturating_record(now_ns().saturating_sub(t).max(1));
    let n = job.args.messages as u64;
    let mut tracker = Tracker::new(vec![0], 1);
    let started = now_ns();
    c.queue_subscribe(&format!("{}/#", job.args.prefix), job.load.qos, 1)?;
    while st.counts.unique < n {
        c.drive().await?;
        let now = now_ns();
        while let Some(p) = c.next_packet()? {
            match p {
                Packet::SubAck(a) => check_suback(&a)?,
                Packet::Publish(p) => {
                    st.received += 1;
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => c.queue_ack(AckKind::PubAck, id)?,
                        (QoS::ExactlyOnce, Some(id)) => c.queue_ack(AckKind::PubRec, id)?,
                        _ => {}
                    }
                    match read_stamp(&p.payload) {
                        Some(s) if p.retain => {
                            if tracker.on_message(s.publisher, s.seq, &mut st.counts) {
                                st.latency
                                    .saturating_record(now.saturating_sub(started).max(1));
                            }
                        }
                        _ => st.counts.unexpected += 1,
                    }
                }
                Packet::PubRel(r) => c.queue_ack(AckKind::PubComp, r.packet_id)?,
                _ => {}
            }
        }
    }
    let d = now_ns().saturating_sub(started);
    c.disconnect().await;
    Ok(d)
}
