//! Issue 17, case 6, against the `ringmq` binary (2 shards): acknowledged QoS 1 messages that
//! a full session queue drops are never silent. Each subscriber's drops are counted per reason
//! and per session (`ringmq ctl client show`), per shard (`ringmq ctl metrics`), and logged at
//! warn once per 10 s per session (not once per message). Subscribers sit on the publisher's
//! shard and on the other one; 3.1.1 and v5 sessions.
#[macro_use]
mod common;
#[path = "ctl_support/mod.rs"]
mod support;

use std::io::BufRead;
use std::sync::{Arc, Mutex};

use common::raw::{connect_packet, publish_packet, subscribe_packet};
use common::{cross_shard_ids, same_shard_ids, Raw, WAIT};
use ringmq_codec::{Disconnect, Packet, ProtocolVersion, ReasonCode};
use support::OpsBroker;

/// Connects a persistent session, subscribes `filter` at QoS 1, disconnects: it queues offline.
async fn offline_sub(addr: std::net::SocketAddr, v: ProtocolVersion, id: &str, filter: &str) {
    let mut c = connect_packet(v, id, false);
    if v == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    let (mut r, _) = Raw::connect_with(addr, c).await;
    r.send(&Packet::Subscribe(subscribe_packet(1, filter, 1)))
        .await;
    assert!(matches!(r.expect_packet("SUBACK").await, Packet::SubAck(_)));
    r.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Default::default(),
    }))
    .await;
    r.expect_closed(WAIT, "own DISCONNECT").await;
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("ctl JSON ({e}): {out}"))
}

#[tokio::test]
async fn acknowledged_drops_are_counted_shown_and_warned_once_per_session() {
    let mut b = OpsBroker::start(
        "drops",
        &[
            "--log-format",
            "json",
            "--log-level",
            "warn",
            "--max-queued-messages",
            "10",
        ],
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = b.child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(l);
        }
    });
    let (pub_id, far) = cross_shard_ids("drops", 2);
    let (_, near) = same_shard_ids("drops", 2);
    let subs: Vec<(String, ProtocolVersion)> = vec![
        (format!("{near}-v4"), ProtocolVersion::V3_1_1),
        (format!("{far}-v4"), ProtocolVersion::V3_1_1),
        (format!("{near}-v5"), ProtocolVersion::V5),
        (format!("{far}-v5"), ProtocolVersion::V5),
    ];
    let placed: Vec<_> = subs
        .iter()
        .map(|(id, _)| common::broker::home_shard(id, 2))
        .collect();
    assert!(
        placed.contains(&Some(0)) && placed.contains(&Some(1)),
        "{placed:?}"
    );
    for (id, v) in &subs {
        offline_sub(b.addr, *v, id, "drops/t").await;
    }
    // 30 acknowledged QoS 1 messages; each session queues 10 and drops 20.
    let v = ProtocolVersion::V3_1_1;
    let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
    for i in 0..30u16 {
        let p = publish_packet("drops/t", 1, false, i + 1, b"acknowledged");
        publ.send(&Packet::Publish(p)).await;
        assert!(matches!(
            publ.expect_packet("PUBACK").await,
            Packet::PubAck(_)
        ));
    }
    for (id, _) in &subs {
        let mut shown = serde_json::Value::Null;
        let what = format!("client show counts the drops of {id}");
        support::check_for(WAIT, &what, || {
            let (code, out, err) = b.ctl(&["--json", "client", "show", id]);
            assert_eq!(code, 0, "ctl client show: {err}");
            shown = json(&out)["result"].clone();
            shown["dropped_queue_full"] == 20
        });
        assert_eq!(shown["queued"], 10, "{shown}");
        assert_eq!(shown["dropped_total"], 20, "{shown}");
        assert_eq!(shown["held_bytes"], 10 * ("drops/t".len() + 12), "{shown}");
    }
    let (code, out, _) = b.ctl(&["--json", "metrics"]);
    assert_eq!(code, 0);
    let m = json(&out)["result"].clone();
    let total: u64 = m["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["drops"]["queue_full"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 4 * 20, "per-shard drop counters: {m}");
    // One warn line per session (rate limited), naming the client and the reason.
    for (id, _) in &subs {
        support::check_for(WAIT, "a warn line per session", || {
            lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(id.as_str()))
        });
        let mine: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&format!("\"{id}\"")))
            .cloned()
            .collect();
        assert_eq!(mine.len(), 1, "one warning for 20 drops: {mine:?}");
        let w = json(&mine[0]);
        assert_eq!(w["level"], "WARN", "{w}");
        assert_eq!(w["reason"], "queue_full", "{w}");
        assert_eq!(w["dropped"], 1, "the first drop warns at once: {w}");
    }
}
