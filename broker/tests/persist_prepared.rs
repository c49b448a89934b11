//! Exactly once across shards, crash points placed exactly (`docs/storage.md`, "Exactly once
//! across shards"). The publisher's and the subscriber's sessions live on different shards. The
//! data dir is left as a SIGKILL leaves it at one point of the protocol, written with the store
//! API while no broker runs:
//!
//! - after the publisher's shard committed the prepared row (QoS 2 id 5 with its message) but
//!   before the subscriber's shard stored its copy: the restart must deliver it, once;
//! - after the subscriber's shard also committed (origin row present): the restart must not
//!   deliver it again (the copy itself is left out here, so a wrong re-delivery would show).
//!
//! Either way the publisher, which never got PUBREC, resends id 5 with DUP: it is answered PUBREC
//! from the stored id and not routed again [MQTT-4.3.3-10] (v5) / [MQTT-4.3.3-2] (3.1.1); PUBREL
//! finds the id [MQTT-4.3.3-11]. A third start finds nothing left to complete.
#[macro_use]
mod common;

use bytes::Bytes;
use common::persist::{
    args, disconnect, launch, persistent_connect, qos, subscribe, text, DataDir, Durable, Inbox,
    Launched,
};
use common::raw::{pid, resp, version};
use common::{cross_shard_ids, Proto, Raw, WAIT};
use ringmq_codec::{Packet, ProtocolVersion, Publish, ReasonCode, SubscriptionOptions};
use ringmq_shard::store::{self, Durability, StoreOptions, StoredMessage, Target};
use std::time::Duration;

const SETTLE: Duration = Duration::from_millis(500);
const NONCE: u64 = 1000;

fn message() -> Publish {
    Publish {
        dup: false,
        qos: qos(2),
        retain: false,
        topic: common::raw::topic("k/q2"),
        packet_id: None,
        properties: Default::default(),
        payload: Bytes::from_static(b"5"),
    }
}

fn fives(inbox: &Inbox) -> usize {
    inbox.got.iter().filter(|p| text(&p.payload) == "5").count()
}

/// Writes what the crash left: A's prepared row, and (`b_committed`) B's origin row.
fn leave_crash_state(dir: &DataDir, p_id: &str, a: usize, b: usize, b_committed: bool) {
    let opts = StoreOptions {
        durability: Durability::Sync,
        ..Default::default()
    };
    let rec = store::open(&dir.path, 2, &opts).expect("open the data dir offline");
    let key = rec.shards[a]
        .sessions
        .iter()
        .find(|s| s.record.client_id.as_str() == p_id)
        .expect("publisher session on its home shard")
        .key;
    let mut handles: Vec<_> = rec.shards.into_iter().map(|s| Some(s.handle)).collect();
    let target = Target {
        shard: b as u16,
        group: None,
    };
    handles[a]
        .take()
        .unwrap()
        .run_offline(move |s| {
            let m = StoredMessage {
                publish: message(),
                received_at_ms: store::unix_ms(),
            };
            s.prepare_inbound_qos2(key, pid(5), NONCE, &[target], m.view())
                .detach();
        })
        .expect("prepared row written");
    let hb = handles[b].take().unwrap();
    hb.run_offline(move |s| {
        if b_committed {
            s.put_origin(a as u16, NONCE).detach();
        }
    })
    .expect("origin row written");
}

/// Starts the broker on `dir`. The offline store writes of a test running in parallel in this
/// process may briefly keep its data dir lock alive in a child forked meanwhile (the descriptor
/// lives until that child's exec): retried, within a deadline.
fn start(dir: &DataDir) -> Durable {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match launch(&args(&dir.path, 2, "sync", &[])) {
            Launched::Up(b) => return b,
            Launched::Exited { stderr, .. }
                if stderr.contains("in use") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Launched::Exited { status, stderr } => panic!("ringmq exited ({status}): {stderr}"),
        }
    }
}

async fn crash_point(proto: Proto, b_committed: bool) {
    let v: ProtocolVersion = version(proto);
    let dir = DataDir::new();
    let (p_id, s_id) = cross_shard_ids("prep", 2);
    let a = ringmq_shard::home_shard(p_id.as_bytes(), 2);
    let b = ringmq_shard::home_shard(s_id.as_bytes(), 2);
    assert_ne!(a, b, "sessions on different shards");
    let mut broker = start(&dir);
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(v, &s_id, 300)).await;
    let opts = SubscriptionOptions::with_qos(qos(2));
    subscribe(&mut sub, 1, "k/q2", opts, None).await;
    disconnect(sub).await;
    let (publ, _) = Raw::connect_with(broker.addr, persistent_connect(v, &p_id, 300)).await;
    disconnect(publ).await;
    assert!(broker.terminate().is_some_and(|s| s.success()));
    drop(broker);
    leave_crash_state(&dir, &p_id, a, b, b_committed);

    let mut broker = start(&dir);
    // The recovery log line counts the prepared message it completes.
    let log = broker.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("recovered") && l.contains("prepared_qos2=1")),
        "recovery line with prepared_qos2=1 in:\n{log}"
    );
    let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(v, &s_id, 300)).await;
    assert!(ack.session_present);
    let mut inbox = Inbox::new(conn);
    let want = usize::from(!b_committed);
    if want == 1 {
        inbox.wait_for(WAIT, |i| fives(i) > 0).await;
    }
    inbox.settle(SETTLE).await;
    assert_eq!(
        fives(&inbox),
        want,
        "deliveries of the prepared message at restart"
    );

    let (mut publ, ack) = Raw::connect_with(broker.addr, persistent_connect(v, &p_id, 300)).await;
    assert!(ack.session_present);
    let mut resend = message();
    resend.dup = true;
    resend.packet_id = Some(pid(5));
    publ.send(&Packet::Publish(resend)).await;
    match publ.expect_packet("PUBREC for the resend").await {
        Packet::PubRec(r) => {
            assert_eq!((r.packet_id, r.reason), (pid(5), ReasonCode::Success))
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publ.send(&Packet::PubRel(resp(5))).await;
    match publ.expect_packet("PUBCOMP").await {
        // [MQTT-4.3.3-11] the id was known: PUBCOMP Success, not 0x92.
        Packet::PubComp(r) => assert_eq!(r.reason, ReasonCode::Success),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    inbox.settle(SETTLE).await;
    assert_eq!(fives(&inbox), want, "the resend is not routed again");
    disconnect(inbox.conn).await;
    disconnect(publ).await;
    assert!(broker.terminate().is_some_and(|s| s.success()));
    drop(broker);

    // Nothing left to complete: no prepared row, no origin row.
    let opts = StoreOptions {
        durability: Durability::Sync,
        ..Default::default()
    };
    let rec = store::open(&dir.path, 2, &opts).expect("reopen");
    assert_eq!(rec.stats.prepared_qos2, 0, "prepared row settled");
    assert_eq!(rec.stats.orphan_origins, 0, "origin row forgotten");
}

macro_rules! cases {
    ($($name:ident: $committed:expr;)*) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn v311() { crash_point(Proto::V4, $committed).await }
            #[tokio::test]
            async fn v5() { crash_point(Proto::V5, $committed).await }
        }
    )*};
}

cases! {
    killed_after_prepare_before_remote_commit: false;
    killed_after_remote_commit_before_done_mark: true;
}
