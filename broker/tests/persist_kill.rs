//! SIGKILL mid-stream with `--durability sync`: nothing acknowledged is lost (issue 5).
//!
//! A persistent subscriber (3.1.1 clean session 0 / v5 session expiry 300 s) subscribes `k/q1`
//! at QoS 1 and `k/q2` at QoS 2 and goes offline. A persistent publisher (our raw codec client,
//! so every acknowledgement read is known exactly) streams numbered messages, even numbers at
//! QoS 1 on `k/q1`, odd ones at QoS 2 on `k/q2`, up to 32 in flight. The broker is SIGKILLed
//! after the first acknowledgement, after half of them and right after the last one, then
//! restarted on the same data dir.
//!
//! Acknowledged means PUBACK (QoS 1) or PUBREC (QoS 2) read by the publisher, including those
//! still in its socket when the broker died (the broker sent them, so they must be durable).
//! The broker starts onward delivery of a QoS 2 message at PUBLISH (3.1.1 Figure 4.3 Method B /
//! v5 4.3.3): in sync mode its PUBREC means the message is queued durably for the subscriber.
//!
//! Checked after restart: session present 1; every acknowledged message delivered; per topic
//! the first deliveries in publish order [MQTT-4.6.0-6]; no QoS 2 message twice
//! [MQTT-4.3.3-10] (v5) / [MQTT-4.3.3-2] (3.1.1). The `resume_*` cases then reconnect the
//! publisher, which resends unacknowledged PUBLISHes with DUP 1 and PUBRELs [MQTT-4.4.0-1],
//! and require every message delivered, QoS 2 exactly once. The `batch_sigterm_*` cases run
//! `--durability batch` (200 ms interval, acknowledged before durable) and stop the broker with
//! SIGTERM right after the last acknowledgement: a graceful stop must flush what it acknowledged.
#[macro_use]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::persist::{
    args, disconnect, persistent_connect, qos, subscribe, text, DataDir, Durable, Inbox,
};
use common::raw::{pid, resp, version, RawEv};
use common::{cross_shard_ids, Proto, Raw, WAIT};
use ringmq_codec::{Packet, ProtocolVersion, Publish, PublishProperties, SubscriptionOptions};

/// Messages in the stream.
const N: u16 = 40;
/// Publishes in flight at once (below the broker's Receive Maximum of 256).
const WINDOW: usize = 32;
/// Silence that ends a delivery phase (duplicates would come within it).
const SETTLE: Duration = Duration::from_millis(500);
/// Bound for a whole delivery phase.
const PHASE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum KillAt {
    FirstAck,
    HalfAcked,
    LastAck,
}

fn qos_of(seq: u16) -> u8 {
    if seq.is_multiple_of(2) {
        1
    } else {
        2
    }
}

fn topic_of(seq: u16) -> &'static str {
    if qos_of(seq) == 1 {
        "k/q1"
    } else {
        "k/q2"
    }
}

/// The publisher's side of the stream, with exactly what it has read.
struct Publisher {
    conn: Raw,
    /// PUBACK (QoS 1) or PUBREC (QoS 2) read.
    acked: Vec<bool>,
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) read.
    completed: Vec<bool>,
    sent: u16,
}

impl Publisher {
    fn new(conn: Raw) -> Publisher {
        Publisher {
            conn,
            acked: vec![false; N as usize],
            completed: vec![false; N as usize],
            sent: 0,
        }
    }

    fn acks(&self) -> usize {
        self.acked.iter().filter(|a| **a).count()
    }

    fn outstanding(&self) -> usize {
        self.completed[..self.sent as usize]
            .iter()
            .filter(|c| !**c)
            .count()
    }

    async fn publish(&mut self, seq: u16, dup: bool) {
        let p = Publish {
            dup,
            qos: qos(qos_of(seq)),
            retain: false,
            topic: common::raw::topic(topic_of(seq)),
            packet_id: Some(pid(seq + 1)),
            properties: PublishProperties::default().into(),
            payload: Bytes::from(seq.to_string()),
        };
        self.conn.send(&Packet::Publish(p)).await;
    }

    /// Records an acknowledgement; answers PUBREC with PUBREL.
    async fn handle(&mut self, p: Packet) {
        match p {
            Packet::PubAck(r) => {
                let s = r.packet_id.get() as usize - 1;
                self.acked[s] = true;
                self.completed[s] = true;
            }
            Packet::PubRec(r) => {
                self.acked[r.packet_id.get() as usize - 1] = true;
                self.conn
                    .send(&Packet::PubRel(resp(r.packet_id.get())))
                    .await;
            }
            Packet::PubComp(r) => self.completed[r.packet_id.get() as usize - 1] = true,
            // v5 graceful stop: DISCONNECT 0x8B Server shutting down.
            Packet::PingResp | Packet::Disconnect(_) => {}
            other => panic!("publisher: unexpected {other:?}"),
        }
    }

    /// Sends the stream (window-bounded) until `done(self)` holds.
    async fn run_until(&mut self, what: &str, done: impl Fn(&Publisher) -> bool) {
        while !done(self) {
            while self.sent < N && self.outstanding() < WINDOW {
                self.publish(self.sent, false).await;
                self.sent += 1;
            }
            match self.conn.recv(WAIT).await {
                RawEv::Packet(p) => self.handle(p).await,
                other => panic!("publisher ({what}): expected an acknowledgement, got {other:?}"),
            }
        }
    }

    /// After SIGKILL: reads the acknowledgements already in our socket, until it closes.
    async fn drain(&mut self) {
        loop {
            match self.conn.recv(WAIT).await {
                RawEv::Packet(p) => self.handle(p).await,
                RawEv::Closed | RawEv::Garbage(_) => return,
                RawEv::Timeout => panic!("publisher: connection still open after SIGKILL"),
            }
        }
    }

    fn acked_seqs(&self) -> Vec<u16> {
        (0..N).filter(|s| self.acked[*s as usize]).collect()
    }
}

/// Checks deliveries: right QoS per topic, first deliveries in order per topic, QoS 2 at most
/// once, every `required` sequence number present.
fn check(
    got: &[Publish],
    required: &[u16],
    phase: &str,
    before_kill: &dyn Fn(u16) -> &'static str,
) {
    let mut seen = vec![0usize; N as usize];
    let mut last: [Option<u16>; 2] = [None, None];
    for p in got {
        let seq: u16 = text(&p.payload)
            .parse()
            .unwrap_or_else(|_| panic!("{phase}: unexpected payload {:?}", p.payload));
        assert!(seq < N, "{phase}: sequence number {seq} out of range");
        assert_eq!(p.topic.as_str(), topic_of(seq), "{phase}: topic of #{seq}");
        assert_eq!(p.qos, qos(qos_of(seq)), "{phase}: delivered QoS of #{seq}");
        seen[seq as usize] += 1;
        if seen[seq as usize] > 1 {
            // [MQTT-4.3.3-10] (v5) / [MQTT-4.3.3-2] (3.1.1): QoS 2 never delivered twice.
            assert_eq!(
                qos_of(seq),
                1,
                "{phase}: QoS 2 message #{seq} delivered twice"
            );
            continue;
        }
        let lane = &mut last[qos_of(seq) as usize - 1];
        if let Some(prev) = *lane {
            assert!(
                seq > prev,
                "{phase}: #{seq} delivered after #{prev} on {} (order lost)",
                topic_of(seq)
            );
        }
        *lane = Some(seq);
    }
    let missing: Vec<String> = required
        .iter()
        .filter(|s| seen[**s as usize] == 0)
        .map(|s| {
            format!(
                "#{s} (QoS {}, before the kill: {})",
                qos_of(*s),
                before_kill(*s)
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{phase}: acknowledged messages lost: {missing:?} (required {} of {N})",
        required.len()
    );
}

fn has_all(got: &[Publish], required: &[u16]) -> bool {
    required.iter().all(|s| {
        got.iter()
            .any(|p| text(&p.payload).parse::<u16>() == Ok(*s))
    })
}

/// How the first broker ends.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// `--durability sync`, SIGKILL at a kill point.
    Kill(KillAt),
    /// `--durability batch` with a 200 ms interval, SIGTERM right after the last acknowledgement:
    /// a graceful stop flushes the pending batch, so nothing acknowledged is lost either.
    GracefulBatch,
}

fn start(dir: &DataDir, shards: usize, stop: Stop) -> Durable {
    match stop {
        Stop::Kill(_) => Durable::start(dir, shards, "sync"),
        Stop::GracefulBatch => Durable::start_args(&args(
            &dir.path,
            shards,
            "batch",
            &["--batch-interval-ms", "200"],
        )),
    }
}

/// The persistent subscriber: subscribes `k/q1` at QoS 1 and `k/q2` at QoS 2, goes offline.
async fn offline_subscriber(broker: &Durable, v: ProtocolVersion, id: &str) {
    let (mut sub, ack) = Raw::connect_with(broker.addr, persistent_connect(v, id, 300)).await;
    assert!(!ack.session_present, "fresh data dir: no session");
    let (q1, q2) = (qos(1), qos(2));
    subscribe(&mut sub, 1, "k/q1", SubscriptionOptions::with_qos(q1), None).await;
    subscribe(&mut sub, 2, "k/q2", SubscriptionOptions::with_qos(q2), None).await;
    disconnect(sub).await;
}

/// Streams until the stop point, stops the broker, reads the acknowledgements left in the socket.
async fn stream_and_stop(broker: &mut Durable, publ: &mut Publisher, stop: Stop) {
    let acks = match stop {
        Stop::Kill(KillAt::FirstAck) => 1,
        Stop::Kill(KillAt::HalfAcked) => N as usize / 2,
        Stop::Kill(KillAt::LastAck) | Stop::GracefulBatch => N as usize,
    };
    publ.run_until("before the stop", |p| p.acks() >= acks)
        .await;
    match stop {
        Stop::Kill(_) => broker.kill9(),
        Stop::GracefulBatch => {
            let status = broker.terminate().expect("ringmq exits on SIGTERM");
            assert!(status.success(), "SIGTERM exit status {status}");
        }
    }
    publ.drain().await;
}

async fn kill_mid_stream(proto: Proto, shards: usize, stop: Stop, resume: bool) {
    let v: ProtocolVersion = version(proto);
    let dir = DataDir::new();
    let mut broker = start(&dir, shards, stop);
    let (p_id, s_id) = cross_shard_ids("kill", shards);
    offline_subscriber(&broker, v, &s_id).await;
    let (conn, _) = Raw::connect_with(broker.addr, persistent_connect(v, &p_id, 300)).await;
    let mut publ = Publisher::new(conn);
    stream_and_stop(&mut broker, &mut publ, stop).await;
    let required = publ.acked_seqs();
    let (acked, completed, sent) = (publ.acked.clone(), publ.completed.clone(), publ.sent);
    let before_kill = move |s: u16| match (acked[s as usize], completed[s as usize]) {
        (_, true) => "completed",
        (true, false) => "PUBREC read, no PUBCOMP",
        _ if s < sent => "sent, not acknowledged",
        _ => "not sent",
    };

    let broker = start(&dir, shards, stop);
    let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(v, &s_id, 300)).await;
    // [MQTT-3.2.2-3] (v5) / [MQTT-3.2.2-2] (3.1.1): the session survived the restart.
    assert!(
        ack.session_present,
        "subscriber session present after restart"
    );
    let mut inbox = Inbox::new(conn);
    // On timeout `check` names the messages lost.
    inbox.wait_for(PHASE, |i| has_all(&i.got, &required)).await;
    inbox.settle(SETTLE).await;
    check(&inbox.got, &required, "after restart", &before_kill);
    if resume {
        let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(v, &p_id, 300)).await;
        assert!(
            ack.session_present,
            "publisher session present after restart"
        );
        publ.conn = conn;
        resume_publisher(&mut publ, &mut inbox, &before_kill).await;
    }
}

/// The publisher back after the restart: [MQTT-4.4.0-1] resends unacknowledged PUBLISH (DUP 1)
/// and PUBREL in the original order, then finishes the stream; every message must arrive.
async fn resume_publisher(
    publ: &mut Publisher,
    inbox: &mut Inbox,
    before_kill: &dyn Fn(u16) -> &'static str,
) {
    for seq in 0..publ.sent {
        if !publ.acked[seq as usize] {
            publ.publish(seq, true).await;
        } else if !publ.completed[seq as usize] {
            publ.conn.send(&Packet::PubRel(resp(seq + 1))).await;
        }
    }
    publ.run_until("after the restart", |p| p.completed.iter().all(|c| *c))
        .await;
    let all: Vec<u16> = (0..N).collect();
    inbox.wait_for(PHASE, |i| has_all(&i.got, &all)).await;
    inbox.settle(SETTLE).await;
    check(&inbox.got, &all, "after the publisher resumed", before_kill);
}

/// One test per (protocol, shard count) for a kill point; `resume` adds the publisher's resume.
macro_rules! cases {
    ($($name:ident: $at:expr, $resume:expr;)*) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn v311_1shard() { kill_mid_stream(Proto::V4, 1, $at, $resume).await }
            #[tokio::test]
            async fn v311_2shards() { kill_mid_stream(Proto::V4, 2, $at, $resume).await }
            #[tokio::test]
            async fn v5_1shard() { kill_mid_stream(Proto::V5, 1, $at, $resume).await }
            #[tokio::test]
            async fn v5_2shards() { kill_mid_stream(Proto::V5, 2, $at, $resume).await }
        }
    )*};
}

cases! {
    kill_after_first_ack: Stop::Kill(KillAt::FirstAck), false;
    kill_after_half_acked: Stop::Kill(KillAt::HalfAcked), false;
    kill_after_last_ack: Stop::Kill(KillAt::LastAck), false;
    batch_sigterm_after_last_ack: Stop::GracefulBatch, false;
    resume_publisher_after_first_ack: Stop::Kill(KillAt::FirstAck), true;
    resume_publisher_after_last_ack: Stop::Kill(KillAt::LastAck), true;
}

/// The publisher resumes after the kill. With 2 shards the subscriber's session lives on the
/// other shard: a QoS 2 message not yet PUBREC'd at the kill may be durable on the subscriber's
/// shard only, or on the publisher's only; the prepared row and origin rows (`confirm.rs`) make
/// the resend neither lost nor delivered twice.
mod resume_publisher_after_kill {
    use super::*;

    const AT: Stop = Stop::Kill(KillAt::HalfAcked);

    #[tokio::test]
    async fn v311_1shard() {
        kill_mid_stream(Proto::V4, 1, AT, true).await
    }
    #[tokio::test]
    async fn v311_2shards() {
        kill_mid_stream(Proto::V4, 2, AT, true).await
    }
    #[tokio::test]
    async fn v5_1shard() {
        kill_mid_stream(Proto::V5, 1, AT, true).await
    }
    #[tokio::test]
    async fn v5_2shards() {
        kill_mid_stream(Proto::V5, 2, AT, true).await
    }
}
